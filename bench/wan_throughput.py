"""RTT and TCP throughput through the WAN stand-in vs a direct veth path, in network namespaces.

    sudo python3 bench/wan_throughput.py [--delay-ms 15] [--seconds 3] [--pings 10]

Builds, in namespaces named ``ccdwb-<pid>-*`` (removed at the end, even on failure):
  direct: two namespaces joined by one veth pair;
  wan:    site sh -- router (runs ``ccdrill.standins.wan``) -- site sz.
Measures ping RTT and one TCP stream (stdlib sockets, bounded to --seconds) on each path, and
the wan path again with delay 0 (the cost of the user-space forwarding alone). All traffic stays
inside these namespaces. Needs root, /dev/net/tun and iproute2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PREFIX = f"ccdwb-{os.getpid()}-"
CTL_PORT = 9100
PORT = 5201

# Used only when iputils ping is not installed: one ICMP echo at a time over a raw socket.
PING_FALLBACK = r"""
import json, os, select, socket, struct, sys, time
dst, count, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident = os.getpid() & 0xFFFF
def csum(b):
    t = sum(struct.unpack(f"!{len(b) // 2}H", b)); t = (t >> 16) + (t & 0xFFFF); t += t >> 16
    return ~t & 0xFFFF
out = []
for seq in range(count):
    body = struct.pack("!HH", ident, seq) + b"ccdrill-ping" * 4
    pkt = struct.pack("!BBH", 8, 0, csum(b"\x08\x00\x00\x00" + body)) + body
    t0 = time.monotonic(); s.sendto(pkt, (dst, 0))
    while (left := t0 + wait - time.monotonic()) > 0 and select.select([s], [], [], left)[0]:
        d = s.recv(4096); h = (d[0] & 15) * 4
        if d[h] == 0 and d[h + 4:h + 8] == body[:4]:
            out.append((time.monotonic() - t0) * 1000); break
    time.sleep(max(0.0, 0.2 - (time.monotonic() - t0)))
print(json.dumps(out))
"""

RECEIVER = r"""
import json, socket, sys, time
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2]))); ls.listen(1); ls.settimeout(10)
print("ready", flush=True)
c, _ = ls.accept(); c.settimeout(10)
n, t0, t1 = 0, None, None
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    t1 = time.monotonic()
    if t0 is None:
        t0 = t1
    n += len(b)
print(json.dumps({"bytes": n, "seconds": (t1 - t0) if t0 else 0.0}))
"""

SENDER = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
buf = b"\0" * (256 * 1024); end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    s.sendall(buf)
s.close()
"""


def run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {p.returncode}: {p.stderr.strip()}")
    return p


def nsx(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def ping(ns: str, dst: str, count: int, wait: float = 1.0) -> list[float]:
    if shutil.which("ping"):
        w = str(max(1, math.ceil(wait)))  # older iputils takes only whole seconds
        p = run(*nsx(ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", w, dst),
                check=False, timeout=count * (wait + 0.2) + 10)
        return [float(x) for x in re.findall(r"time=([\d.]+) ms", p.stdout)]
    p = run(*nsx(ns, sys.executable, "-c", PING_FALLBACK, dst, str(count), str(wait)),
            timeout=count * (wait + 0.2) + 10)
    return json.loads(p.stdout)


def tcp_mbps(src_ns: str, dst_ns: str, dst: str, seconds: float) -> float:
    """One TCP stream src -> dst for ``seconds``; MB/s (1e6 bytes) as seen by the receiver."""
    recv = subprocess.Popen(nsx(dst_ns, sys.executable, "-c", RECEIVER, dst, str(PORT)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if recv.stdout.readline().strip() != "ready":
            raise RuntimeError(f"receiver failed: {recv.stderr.read()}")
        run(*nsx(src_ns, sys.executable, "-c", SENDER, dst, str(PORT), str(seconds)), timeout=seconds + 30)
        out, err = recv.communicate(timeout=30)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait(5)
    res = json.loads(out)
    return res["bytes"] / res["seconds"] / 1e6 if res["seconds"] else 0.0


class Namespaces:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def add(self, short: str) -> str:
        name = PREFIX + short
        run("ip", "netns", "add", name)
        self.created.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        for name in reversed(self.created):
            run("ip", "netns", "del", name, check=False)


def addr(ns: str, dev: str, cidr: str) -> None:
    run("ip", "-n", ns, "addr", "add", cidr, "dev", dev)
    run("ip", "-n", ns, "link", "set", dev, "up")


def ctl(ns: str, body: dict | None = None) -> dict:
    cmd = nsx(ns, sys.executable, "-m", "ccdrill.standins.ctl", str(CTL_PORT))
    if body is not None:
        cmd.append(json.dumps(body))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=20,
                       env={**os.environ, "PYTHONPATH": str(SRC)})
    if p.returncode != 0:
        raise RuntimeError(f"ctl {body}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def measure(label: str, src_ns: str, dst_ns: str, dst: str, pings: int, seconds: float) -> dict:
    rtts = ping(src_ns, dst, pings)
    if not rtts:
        raise RuntimeError(f"{label}: no ping reply from {dst}")
    mbps = tcp_mbps(src_ns, dst_ns, dst, seconds)
    res = {"path": label, "rtt_ms": round(statistics.median(rtts), 3), "rtt_min_ms": round(min(rtts), 3),
           "pings": f"{len(rtts)}/{pings}", "tcp_MBps": round(mbps, 1)}
    print(f"{label:<14} rtt median {res['rtt_ms']:8.3f} ms (min {res['rtt_min_ms']:.3f}, {res['pings']})"
          f"   tcp {res['tcp_MBps']:7.1f} MB/s", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay-ms", type=float, default=15.0, help="one-way delay of the wan (default 15)")
    ap.add_argument("--seconds", type=float, default=3.0, help="TCP send time per run (default 3)")
    ap.add_argument("--pings", type=int, default=10)
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or not shutil.which("ip"):
        print("needs root, /dev/net/tun and iproute2", file=sys.stderr)
        return 2
    args.seconds = min(max(args.seconds, 0.5), 20.0)
    args.pings = min(max(args.pings, 1), 100)

    nss = Namespaces()
    tmp = Path(tempfile.mkdtemp(prefix="ccdw-bench-"))
    log = tmp / "wan.log"
    try:
        # direct veth path
        da, db = nss.add("da"), nss.add("db")
        run("ip", "-n", da, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", db)
        addr(da, "eth0", "10.231.9.1/24")
        addr(db, "eth0", "10.231.9.2/24")

        # sh -- router(wan) -- sz
        s, z, r = nss.add("sh"), nss.add("sz"), nss.add("r")
        run("ip", "-n", r, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", s)
        run("ip", "-n", r, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", z)
        addr(r, "eth0", "10.231.1.254/24")
        addr(r, "eth1", "10.231.2.254/24")
        addr(s, "eth0", "10.231.1.10/24")
        addr(z, "eth0", "10.231.2.10/24")
        run("ip", "-n", s, "route", "add", "default", "via", "10.231.1.254")
        run("ip", "-n", z, "route", "add", "default", "via", "10.231.2.254")
        run(*nsx(r, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
        cfg = tmp / "wan.json"
        cfg.write_text(json.dumps({
            "name": "wan", "ctl_port": CTL_PORT, "delay_ms": args.delay_ms, "jitter_ms": 0, "loss": 0.0,
            "sites": {"sh": {"dev": "eth0", "subnet": "10.231.1.0/24"},
                      "sz": {"dev": "eth1", "subnet": "10.231.2.0/24"}}}))
        with open(log, "w") as logf:
            wan = subprocess.Popen(nsx(r, sys.executable, "-m", "ccdrill.standins.wan", "--config", str(cfg)),
                                   stdout=logf, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": str(SRC)})
        nss.procs.append(wan)
        deadline = time.monotonic() + 15
        while True:
            if wan.poll() is not None:
                raise RuntimeError(f"wan exited {wan.returncode}: {log.read_text()}")
            try:
                ctl(r)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

        print(f"one-way delay {args.delay_ms:g} ms (expected RTT >= {2 * args.delay_ms:g} ms), "
              f"TCP {args.seconds:g} s per run, {args.pings} pings", flush=True)
        direct = measure("direct veth", da, db, "10.231.9.2", args.pings, args.seconds)
        delayed = measure(f"wan {args.delay_ms:g}ms", s, z, "10.231.2.10", args.pings, args.seconds)
        ctl(r, {"op": "set", "delay_ms": 0})
        zero = measure("wan 0ms", s, z, "10.231.2.10", args.pings, args.seconds)
        stats = ctl(r)

        summary = {
            "delay_ms": args.delay_ms,
            "direct": direct, "wan": delayed, "wan_0ms": zero,
            "ratio_rtt_wan_vs_direct": round(delayed["rtt_ms"] / direct["rtt_ms"], 1),
            "ratio_tcp_wan_vs_direct": round(delayed["tcp_MBps"] / direct["tcp_MBps"], 4),
            "ratio_tcp_wan0_vs_direct": round(zero["tcp_MBps"] / direct["tcp_MBps"], 4),
            "wan_added_rtt_ms": round(delayed["rtt_ms"] - 2 * args.delay_ms, 3),
            "wan_dropped": stats["dropped"],
        }
        print(f"ratios: rtt wan/direct {summary['ratio_rtt_wan_vs_direct']}x, "
              f"tcp wan/direct {summary['ratio_tcp_wan_vs_direct']:.2%}, "
              f"tcp wan0/direct {summary['ratio_tcp_wan0_vs_direct']:.2%}; "
              f"wan RTT beyond 2*delay {summary['wan_added_rtt_ms']} ms; drops {stats['dropped']}")
        print(json.dumps(summary))
        return 0
    finally:
        nss.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
