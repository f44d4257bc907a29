"""The PBX role's Kamailio config, rendered and run on loopback against SIPp "boards".

Layout (all 127.0.0.1, free ports):
  set 1: refuser (prio 30, answers OPTIONS, 503 to INVITE = a board without controller),
         board_a (prio 20, channels 2), board_b (prio 10, channels 3)
  set 2: fax (channels 1); set 3: carrier (e1 = 7, hangs up itself after the hold)
  seats (tie trunk of 1 channel)
Everything is counted from SIPp's statistics and kamcmd, never from exit codes.
"""

from __future__ import annotations

import concurrent.futures
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ccdrill.load.sipp import LocalExecutor, place_calls, read_stat_file, uas_delta, wait_stat_file

jinja2 = pytest.importorskip("jinja2")

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
PBX_TEMPLATES = ROOT / "roles" / "pbx" / "templates"
CARRIER_FILES = ROOT / "roles" / "carrier" / "files"
SEAT_SCENARIO = ROOT / "roles" / "agent_seats" / "files" / "uas_seat.xml"

KAMAILIO = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")
KAMCMD = shutil.which("kamcmd") or shutil.which("kamcmd", path="/usr/sbin:/sbin")
SIPP = shutil.which("sipp")

pytestmark = pytest.mark.skipif(
    not (KAMAILIO and KAMCMD and SIPP),
    reason="needs kamailio, kamcmd (Debian package kamailio) and sipp (sip-tester) on this machine",
)

LOOP = "127.0.0.1"
EX = LocalExecutor()


def _free_udp_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((LOOP, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _wait(predicate, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


class Lab:
    """Kamailio + SIPp UAS processes on loopback; every process is stopped by its PID."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}
        (
            self.pbx_port,
            self.refuser_port,
            self.a_port,
            self.b_port,
            self.fax_port,
            self.carrier_port,
            self.seats_port,
        ) = _free_udp_ports(7)
        self.ctl = f"unix:{tmp / 'kamailio.ctl'}"
        self.e1 = 7
        self.tie = 1
        self.vars = {
            "pbx_listen_ip": LOOP,
            "pbx_port": self.pbx_port,
            "pbx_ctl_socket": self.ctl,
            "pbx_dispatcher_list": str(tmp / "dispatcher.list"),
            "pbx_probe_interval": 1,
            "pbx_fr_timer_ms": 1000,
            "pbx_fr_inv_timer_ms": 2000,
            "pbx_log_level": 2,
            "pbx_children": 4,
            "pbx_voice_trunks": [
                {"name": "refuser", "host": LOOP, "port": self.refuser_port, "priority": 30, "channels": 10},
                {"name": "board_a", "host": LOOP, "port": self.a_port, "priority": 20, "channels": 2},
                {"name": "board_b", "host": LOOP, "port": self.b_port, "priority": 10, "channels": 3},
            ],
            "pbx_fax_trunks": [
                {"name": "fax0", "host": LOOP, "port": self.fax_port, "priority": 10, "channels": 1},
            ],
            "pbx_carrier": {"host": LOOP, "port": self.carrier_port, "channels": self.e1},
            "pbx_seats": {"host": LOOP, "port": self.seats_port},
            "pbx_tie_trunk_channels": self.tie,
        }

    # -- processes ---------------------------------------------------------
    def render(self) -> Path:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(PBX_TEMPLATES)),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            keep_trailing_newline=True,
        )
        cfg = self.tmp / "kamailio.cfg"
        cfg.write_text(env.get_template("kamailio.cfg.j2").render(**self.vars))
        Path(self.vars["pbx_dispatcher_list"]).write_text(
            env.get_template("dispatcher.list.j2").render(**self.vars)
        )
        return cfg

    def start_uas(self, name: str, scenario: Path, port: int, *extra: str) -> Path:
        csv = self.tmp / f"{name}.csv"
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the process
        argv = [SIPP, "-sf", str(scenario), "-i", LOOP, "-p", str(port), "-bind_local", "-nostdin"]
        argv += ["-trace_stat", "-stf", str(csv), "-fd", "1", *extra]
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        assert _wait(csv.exists, 5), f"SIPp {name} wrote no {csv}; see {self.tmp / (name + '.log')}"
        return csv

    def start_kamailio(self) -> None:
        cfg = self.render()
        run_dir = self.tmp / "run"
        run_dir.mkdir(exist_ok=True)
        log = open(self.tmp / "kamailio.log", "w")  # noqa: SIM115 - lives as long as the process
        argv = [KAMAILIO, "-DD", "-E", "-f", str(cfg), "-Y", str(run_dir), "-m", "64", "-M", "8"]
        self.procs["kamailio"] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def up() -> bool:
            if self.procs["kamailio"].poll() is not None:
                raise AssertionError(f"kamailio exited: {self.log_tail()}")
            return self.kamcmd_rc("core.uptime") == 0

        assert _wait(up, 10), f"kamailio did not answer kamcmd: {self.log_tail()}"

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def log_tail(self, n: int = 30) -> str:
        path = self.tmp / "kamailio.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    # -- kamcmd --------------------------------------------------------------
    def kamcmd_rc(self, *args: str) -> int:
        return subprocess.run([KAMCMD, "-s", self.ctl, *args], capture_output=True, timeout=5).returncode

    def kamcmd(self, *args: str) -> str:
        proc = subprocess.run([KAMCMD, "-s", self.ctl, *args], capture_output=True, text=True, timeout=5)
        assert proc.returncode == 0, f"kamcmd {' '.join(args)}: {proc.stderr}"
        return proc.stdout.strip()

    def profile(self, name: str, value: str | None = None) -> int:
        return int(self.kamcmd("dlg.profile_get_size", name, *([value] if value else [])))

    def counter(self, name: str) -> int:
        return int(self.kamcmd("cnt.get", "ccdrill", name))

    def counters(self) -> dict[str, int]:
        return {k: int(v) for k, v in re.findall(r"(\w+): (\d+)", self.kamcmd("cnt.get_vars", "ccdrill"))}

    def ds_flags(self) -> dict[str, str]:
        out = self.kamcmd("dispatcher.list")
        return {uri: flags for uri, flags in re.findall(r"URI: (\S+)\s+FLAGS: (\S+)", out)}

    def active_dialogs(self) -> int:
        return int(re.search(r"all: (\d+)", self.kamcmd("dlg.stats_active")).group(1))

    def wait_idle(self) -> None:
        assert _wait(lambda: self.active_dialogs() == 0, 8), "dialogs left open: " + self.kamcmd("dlg.list")

    # -- calls ---------------------------------------------------------------
    def call(self, scenario: Path, count: int, hold_ms: int, service: str | None = None, **kw):
        return place_calls(
            EX,
            str(scenario),
            f"{LOOP}:{self.pbx_port}",
            count,
            kw.pop("rate", 20),
            hold_ms,
            local_ip=LOOP,
            service=service,
            inf=str(DATA / "accounts.csv") if scenario.name == "uac_ivr.xml" else None,
            stat_dir=str(self.tmp / "uac"),
            **kw,
        )


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("pbx"))
    try:
        # Boards first, so that the first probes find them up.
        lab.csv = {
            "refuser": lab.start_uas("refuser", DATA / "uas_refuse503.xml", lab.refuser_port),
            "board_a": lab.start_uas("board_a", SEAT_SCENARIO, lab.a_port),
            "board_b": lab.start_uas("board_b", SEAT_SCENARIO, lab.b_port),
            "fax0": lab.start_uas("fax0", SEAT_SCENARIO, lab.fax_port),
            "carrier": lab.start_uas("carrier", DATA / "uas_hangup.xml", lab.carrier_port, "-d", "1500"),
            "seats": lab.start_uas("seats", SEAT_SCENARIO, lab.seats_port),
        }
        lab.start_kamailio()
        uris = {f"sip:{LOOP}:{p}" for p in (lab.refuser_port, lab.a_port, lab.b_port, lab.fax_port)}
        assert _wait(lambda: all(lab.ds_flags().get(u, "").startswith("A") for u in uris), 5), lab.ds_flags()
        yield lab
    finally:
        lab.stop_all()


def _snapshot(lab: Lab, *names: str) -> dict:
    return {n: read_stat_file(EX, str(lab.csv[n])) for n in names}


def _deltas(lab: Lab, before: dict) -> dict:
    now = time.time()
    return {n: uas_delta(b, wait_stat_file(EX, str(lab.csv[n]), newer_than=now)) for n, b in before.items()}


def test_hunting_past_refusing_and_full_boards_then_503(lab):
    """5 trunk channels (2 + 3) behind a board that refuses: 6 calls -> 5 answered, the 6th 503."""
    lab.wait_idle()
    before = _snapshot(lab, "refuser", "board_a", "board_b")
    k0 = lab.counters()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(lab.call, CARRIER_FILES / "uac_ivr.xml", 6, 3000)
        held: dict[str, int] = {}

        def settled() -> bool:
            # channels in use once every call is answered or refused (calls hunt meanwhile)
            held.update({t: lab.profile("trunk", t) for t in ("refuser", "board_a", "board_b")})
            held["all trunks"] = lab.profile("trunk")
            held["e1_in"] = lab.profile("e1_in")
            return held == {"refuser": 0, "board_a": 2, "board_b": 3, "all trunks": 5, "e1_in": 5}

        assert _wait(settled, 2.5), f"channels in use: {held}"
        res = fut.result()
    assert (res.attempted, res.answered, res.refused, res.failed, res.timeouts) == (6, 5, {503: 1}, 0, 0)
    d = _deltas(lab, before)
    assert d["board_a"]["answered"] == 2
    assert d["board_b"]["answered"] == 3
    # every call tried the refusing board first (priority 30) and hunted on its 503
    assert d["refuser"]["counters"]["refused"] == 6
    k1 = lab.counters()
    assert k1["hunts"] - k0["hunts"] == 6
    assert k1["no_trunk"] - k0["no_trunk"] == 1
    assert k1["inbound_calls"] - k0["inbound_calls"] == 6
    lab.wait_idle()
    assert lab.profile("trunk", "board_a") == lab.profile("trunk", "board_b") == lab.profile("e1") == 0


def test_agent_legs_take_the_tie_trunk_while_it_has_room(lab):
    lab.wait_idle()
    before = _snapshot(lab, "seats")
    k0 = lab.counters()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(lab.call, DATA / "uac_service.xml", 2, 2000, service="seat")
        assert _wait(lambda: lab.active_dialogs() == 2, 4)
        tie_held = lab.profile("tie")
        res = fut.result()
    assert (res.answered, res.refused, res.failed) == (2, {}, 0)
    assert tie_held == lab.tie == 1
    k1 = lab.counters()
    assert k1["seat_legs"] - k0["seat_legs"] == 2
    assert k1["tie_legs"] - k0["tie_legs"] == 1
    assert k1["tie_overflow"] - k0["tie_overflow"] == 1
    # agent legs are not carrier calls
    assert k1["inbound_calls"] == k0["inbound_calls"]
    assert _deltas(lab, before)["seats"]["answered"] == 2
    lab.wait_idle()
    assert lab.profile("tie") == 0


def test_outbound_calls_capped_by_e1_and_callee_bye_goes_through(lab):
    """e1 = 7: 8 out-* calls -> 7 answered, 1 refused; the carrier hangs up, the PBX relays its BYE."""
    lab.wait_idle()
    before = _snapshot(lab, "carrier")
    k0 = lab.counters()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(lab.call, DATA / "uac_wait_bye.xml", 8, 0, service="out-1")
        assert _wait(lambda: lab.profile("e1_out") == lab.e1, 4)
        res = fut.result()
    assert (res.answered, res.refused, res.failed, res.timeouts) == (7, {503: 1}, 0, 0)
    # the callers saw the carrier's BYE: it went through the PBX (record-route)
    assert res.stats["counters"]["hungup_by_far_end"] == 7
    k1 = lab.counters()
    assert k1["e1_full"] - k0["e1_full"] == 1
    assert k1["outbound_calls"] - k0["outbound_calls"] == 7
    d = _deltas(lab, before)["carrier"]
    assert d["counters"]["answered"] == 7
    assert d["counters"]["hungup_by_us"] == 7
    # the dialogs ended with the callee's BYE: no channel left counted
    lab.wait_idle()
    assert lab.profile("e1") == 0


def test_fax_calls_go_to_the_fax_set(lab):
    lab.wait_idle()
    before = _snapshot(lab, "fax0", "board_a", "board_b")
    res = lab.call(CARRIER_FILES / "uac_fax.xml", 2, 1500)
    assert (res.answered, res.refused) == (1, {503: 1})
    d = _deltas(lab, before)
    assert d["fax0"]["answered"] == 1
    assert d["board_a"]["answered"] == d["board_b"]["answered"] == 0


def test_dead_board_is_skipped_within_two_seconds_and_comes_back(lab):
    lab.wait_idle()
    uri_a = f"sip:{LOOP}:{lab.a_port}"
    k0 = lab.counters()
    before = _snapshot(lab, "board_b")
    lab.stop("board_a", signal.SIGKILL)
    killed = time.monotonic()

    # A call placed right away is not lost: the PBX either already skips the
    # board or hunts after its fr_timer (1 s).
    first = lab.call(CARRIER_FILES / "uac_ivr.xml", 1, 200)
    assert first.answered == 1

    assert _wait(lambda: lab.ds_flags()[uri_a].startswith("I"), 3, step=0.05), lab.ds_flags()
    went_inactive = time.monotonic() - killed
    assert went_inactive <= 2.5, f"dead board still active after {went_inactive:.2f}s"

    # Once inactive it costs nothing: no more timeouts, calls set up at once.
    timeouts_before = lab.counter("dst_timeouts")
    res = lab.call(CARRIER_FILES / "uac_ivr.xml", 3, 300)
    assert (res.answered, res.refused, res.timeouts) == (3, {}, 0)
    assert res.elapsed_s < 2.5
    assert lab.counter("dst_timeouts") == timeouts_before
    assert _deltas(lab, before)["board_b"]["answered"] == 4
    assert lab.counter("dst_down") > k0["dst_down"]

    # The board comes back: active again after one answered probe.
    lab.csv["board_a"] = lab.start_uas("board_a", SEAT_SCENARIO, lab.a_port)
    assert _wait(lambda: lab.ds_flags()[uri_a].startswith("A"), 3, step=0.05), lab.ds_flags()
    assert lab.counter("dst_up") > k0["dst_up"]
