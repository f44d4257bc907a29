#!/usr/bin/env python3
"""Voice board stand-in vs SIPp's own UAS: call setup rate and concurrent dialogs, on one core.

Everything runs on 127.0.0.1, bounded in count and time. The same SIPp UAC scenario drives,
in turn, the board (a real `python3 -m ccdrill.standins.voiceboard` process controlled by a
real KCXP broker + CTI) and a SIPp UAS doing the same SIP work (200 with SDP, ACK, BYE/200).
The UAS under test (board or SIPp) is pinned to one CPU, the UAC, KCXP and CTI to the other.

  python3 bench/sip_standin.py            # 20,000 setups, 20,000 concurrent dialogs
  python3 bench/sip_standin.py --quick    # small run (a few seconds)

Figures: setup rate = successful calls / SIPp elapsed time with at most --inflight calls open
(closed loop: the UAS's capacity, not a configured rate); concurrent = dialogs held at once
with every call successful (board: its pool peak; SIPp UAS: its CurrentCall peak).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(ROOT))  # for tests.support

from tests.support.sipp import (  # noqa: E402
    AUDIO_PCMA,
    Sipp,
    answer,
    free_port,
    read_stat,
    recv,
    reply,
    scenario,
    uac_call,
)

# SIPp options of every run here (as well as -nostdin -timeout 30s -timeout_error, a bounded -m).
SIPP_OPTIONS = ("-buff_size", "8388608", "-max_recv_loops", "10000", "-max_sched_loops", "10000")

UAC = uac_call("bench-uac", headers=["X-Fund-Account: 88[call_number]"], media=AUDIO_PCMA)

# SIPp's own UAS doing what the board does on the wire (no 180, no 4 s timewait).
UAS = scenario("bench-uas", recv(request="INVITE", crlf=True), answer(AUDIO_PCMA), recv(request="ACK", crlf=True),
               recv(request="BYE"), reply())


def pinned(cpu: int | None):
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def http(port: int, req: dict | None = None) -> dict:
    url = f"http://127.0.0.1:{port}/" + ("stats" if req is None else "ctl")
    data = None if req is None else json.dumps(req).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as r:
        return json.loads(r.read())


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="ccdrill-bench-"))
        self.procs: list[subprocess.Popen] = []
        ncpu = len(os.sched_getaffinity(0))
        self.uas_cpu, self.uac_cpu = (1, 0) if ncpu >= 2 else (None, None)
        self.env = {**os.environ, "PYTHONPATH": str(SRC)}

    # -- processes (each stopped by its own PID at the end; SIPp runs by tests.support.sipp.Sipp)
    def spawn(self, cmd: list[str], cpu: int | None, log: str) -> subprocess.Popen:
        f = open(self.tmp / log, "wb")  # noqa: SIM115 (closed with the process)
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=self.env, preexec_fn=pinned(cpu))
        p._logfile = f  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    def standin(self, module: str, cfg: dict, cpu: int | None) -> subprocess.Popen:
        path = self.tmp / f"{cfg['name']}.json"
        path.write_text(json.dumps(cfg))
        return self.spawn([sys.executable, "-m", f"ccdrill.standins.{module}", "--config", str(path)],
                          cpu, f"{cfg['name']}.log")

    def stop_all(self) -> None:
        Sipp.stop_all(grace=5)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            p._logfile.close()  # type: ignore[attr-defined]

    def sipp_uac(self, tag: str, target_port: int, m: int, rate: int, limit: int, hold_ms: int) -> dict:
        uac = Sipp(self.tmp, UAC, ["-s", "ivr", "-r", str(rate), "-l", str(limit), "-d", str(hold_ms),
                                   f"127.0.0.1:{target_port}"], m, tag=tag, options=SIPP_OPTIONS, log=True,
                   preexec_fn=pinned(self.uac_cpu), wait_bound=False)
        uac.proc.wait(45)
        res = read_stat(uac.stf)
        res["rc"] = uac.proc.returncode
        return res

    def start_lab(self, channels: int) -> None:
        kport, self.sip_port = free_port(socket.SOCK_STREAM), free_port()
        self.board_ctl = free_port(socket.SOCK_STREAM)
        self.standin("kcxp", {"name": "bench-kcxp", "listen": "127.0.0.1", "port": kport,
                              "ctl_port": free_port(socket.SOCK_STREAM)}, self.uac_cpu)
        time.sleep(0.3)
        self.standin("cti", {"name": "bench-cti", "kcxp": f"127.0.0.1:{kport}",
                             "ctl_port": free_port(socket.SOCK_STREAM), "boards": ["bench0"],
                             "heartbeat_ms": 200}, self.uac_cpu)
        self.board = self.standin("voiceboard", {
            "name": "bench0", "ipc": "bench", "listen": "127.0.0.1", "sip_port": self.sip_port,
            "ctl_port": self.board_ctl, "channels": channels, "cabled": channels, "span_size": 30,
            "pools": None, "pbx": "127.0.0.1:9", "seat_uri": "sip:seat@127.0.0.1:9",
            "kcxp": f"127.0.0.1:{kport}", "control_timeout_ms": 1000}, self.uas_cpu)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if http(self.board_ctl)["controlled"]:
                    return
            time.sleep(0.1)
        raise SystemExit(f"board not controlled in 10 s; logs in {self.tmp}")

    def run_board(self, tag: str, m: int, rate: int, limit: int, hold_ms: int) -> dict:
        http(self.board_ctl, {"op": "reset_peaks"})
        before = http(self.board_ctl)
        c0 = cpu_seconds(self.board.pid)
        res = self.sipp_uac(tag, self.sip_port, m, rate, limit, hold_ms)
        res["uas_cpu_s"] = cpu_seconds(self.board.pid) - c0
        after = http(self.board_ctl)
        res["uas_peak"] = after["pools"]["any"]["peak"]
        res["uas_rss_mb"] = rss_mb(self.board.pid)
        res["board_ivr"] = after["calls"]["ivr"] - before["calls"]["ivr"]
        res["board_in_use_after"] = after["pools"]["any"]["in_use"]
        res["board_malformed"] = after["malformed"]
        return res

    def run_sipp_uas(self, tag: str, m: int, rate: int, limit: int, hold_ms: int) -> dict:
        uas = Sipp(self.tmp, UAS, [], m, tag=f"{tag}-uas", options=SIPP_OPTIONS, trace_err=False, log=True,
                   preexec_fn=pinned(self.uas_cpu), wait_bound=False)
        time.sleep(0.3)
        peak_rss = 0.0
        res = self.sipp_uac(tag, uas.port, m, rate, limit, hold_ms)
        with contextlib.suppress(OSError):
            peak_rss = rss_mb(uas.pid)
        _pid, _status, ru = os.wait4(uas.pid, 0)
        uas.proc.returncode = os.waitstatus_to_exitcode(_status)
        res["uas_cpu_s"] = ru.ru_utime + ru.ru_stime
        res["uas_peak"] = read_stat(uas.stf)["peak_current"]
        res["uas_rss_mb"] = max(peak_rss, ru.ru_maxrss / 1024)
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", type=int, default=20000, help="calls for the setup-rate run")
    ap.add_argument("--inflight", type=int, default=1000, help="max calls open during the setup-rate run")
    ap.add_argument("--concurrent", type=int, default=20000, help="dialogs to hold at once")
    ap.add_argument("--ramp", type=int, default=4000, help="calls/s while building up the concurrent dialogs")
    ap.add_argument("--quick", action="store_true", help="2,000 setups and 2,000 concurrent dialogs")
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs, CSV)")
    args = ap.parse_args()
    if args.quick:
        args.setups, args.concurrent, args.ramp = 2000, 2000, 2000
    if shutil.which("sipp") is None:
        raise SystemExit("sipp is not installed")
    hold_ms = int(args.concurrent / args.ramp * 1000) + 3000  # everyone is up for ~3 s
    b = Bench(args)
    channels = -(-int(args.concurrent * 1.05) // 30) * 30
    out: dict = {}
    try:
        b.start_lab(channels)
        out["board_setup"] = b.run_board("setup-board", args.setups, 100000, args.inflight, 0)
        out["sipp_setup"] = b.run_sipp_uas("setup-sipp", args.setups, 100000, args.inflight, 0)
        out["board_conc"] = b.run_board("conc-board", args.concurrent, args.ramp, args.concurrent, hold_ms)
        out["sipp_conc"] = b.run_sipp_uas("conc-sipp", args.concurrent, args.ramp, args.concurrent, hold_ms)
    finally:
        b.stop_all()
    report(out, args, b)
    if args.json:
        print(json.dumps(out, indent=1))
    if args.keep:
        print(f"logs and SIPp statistics kept in {b.tmp}")
    else:
        shutil.rmtree(b.tmp, ignore_errors=True)


def report(out: dict, args, b: Bench) -> None:
    def rate(r):
        return r["ok"] / r["elapsed"] if r["elapsed"] > 0 else 0.0

    def held(r):
        return r["uas_peak"]

    bs, ss, bc, sc = out["board_setup"], out["sipp_setup"], out["board_conc"], out["sipp_conc"]
    cpus = "UAS pinned to CPU 1, UAC+KCXP+CTI to CPU 0" if b.uas_cpu is not None else "unpinned (1 CPU)"
    print(f"SIP stand-in bench (loopback, {cpus}; python {sys.version.split()[0]}, asyncio)")
    print(f"{'':34}{'board':>14}{'SIPp UAS':>14}{'board/SIPp':>12}")
    r1, r2 = rate(bs), rate(ss)
    label = f"call setups/s (<= {args.inflight} in flight)"
    print(f"{label:34}{r1:>14,.0f}{r2:>14,.0f}{r1 / r2 if r2 else 0:>12.2f}")
    for key, label in (("ok", "  calls ok"), ("failed", "  calls failed"), ("uas_cpu_s", "  UAS CPU s")):
        print(f"{label:34}{bs[key]:>14,.1f}{ss[key]:>14,.1f}")
    us1, us2 = (r["uas_cpu_s"] / max(r["ok"], 1) * 1e6 for r in (bs, ss))
    print(f"{'  UAS CPU us per call':34}{us1:>14,.0f}{us2:>14,.0f}")
    # What one fully available core sustains; the wall-clock rate above also shows how much CPU
    # the UAS actually got on a shared machine.
    c1, c2 = (1e6 / u if u else 0.0 for u in (us1, us2))
    print(f"{'  setups per CPU-second':34}{c1:>14,.0f}{c2:>14,.0f}{c1 / c2 if c2 else 0:>12.2f}")
    h1, h2 = held(bc), held(sc)
    label = f"concurrent dialogs held (target {args.concurrent})"
    print(f"{label:34}{h1:>14,}{h2:>14,}"
          f"{h1 / h2 if h2 else 0:>12.2f}")
    for key, label in (("ok", "  calls ok"), ("failed", "  calls failed"), ("uas_rss_mb", "  UAS RSS MB")):
        print(f"{label:34}{bc[key]:>14,.1f}{sc[key]:>14,.1f}")
    rcs = [r["rc"] for r in (bs, ss, bc, sc)]
    if any(rcs):
        print(f"WARNING: SIPp UAC exit codes {rcs} (non-zero: failed calls or the 30 s cap reached)")
    ok_conc = h1 >= 20000 and bc["failed"] == 0
    print(f"targets: >= 5,000 setups/s -> {'met' if r1 >= 5000 else 'NOT met'} (wall clock), "
          f"{'met' if c1 >= 5000 else 'NOT met'} (per CPU-second); "
          f">= 20,000 concurrent with no failed call -> {'met' if ok_conc else 'NOT met'}")
    if bs["board_in_use_after"] or bc["board_in_use_after"]:
        print(f"WARNING: board channels still in use after the runs: {bc['board_in_use_after']}")


if __name__ == "__main__":
    main()
