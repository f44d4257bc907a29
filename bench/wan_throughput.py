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
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from tests.support.netns import (  # noqa: E402
    SZ_HOST,
    Namespaces,
    addr,
    nsx,
    ping,
    run,
    veth,
    wan_config,
    wan_ctl,
)

PREFIX = f"ccdwb-{os.getpid()}-"
CTL_PORT = 9100
PORT = 5201

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


def ctl(ns: str, body: dict | None = None) -> dict:
    return json.loads(wan_ctl(ns, CTL_PORT, body).stdout)


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

    nss = Namespaces(PREFIX)
    tmp = Path(tempfile.mkdtemp(prefix="ccdw-bench-"))
    try:
        # direct veth path
        da, db = nss.add("da"), nss.add("db")
        veth(da, "eth0", db, "eth0")
        addr(da, "eth0", "10.231.9.1/24")
        addr(db, "eth0", "10.231.9.2/24")

        # sh -- router(wan) -- sz
        ns = nss.two_sites({"sh": "eth0", "sz": "eth1"})
        s, z, r = ns["sh"], ns["sz"], ns["r"]
        cfg = tmp / "wan.json"
        cfg.write_text(json.dumps(wan_config(args.delay_ms, CTL_PORT, {"sh": "eth0", "sz": "eth1"})))
        nss.start_wan(r, cfg, tmp / "wan.log", CTL_PORT)

        print(f"one-way delay {args.delay_ms:g} ms (expected RTT >= {2 * args.delay_ms:g} ms), "
              f"TCP {args.seconds:g} s per run, {args.pings} pings", flush=True)
        direct = measure("direct veth", da, db, "10.231.9.2", args.pings, args.seconds)
        delayed = measure(f"wan {args.delay_ms:g}ms", s, z, SZ_HOST, args.pings, args.seconds)
        ctl(r, {"op": "set", "delay_ms": 0})
        zero = measure("wan 0ms", s, z, SZ_HOST, args.pings, args.seconds)
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
