"""Network namespaces for the WAN stand-in: site sh -- router r (runs ``ccdrill.standins.wan``) -- site sz.

Needs root, /dev/net/tun and iproute2. `Namespaces` removes exactly the namespaces it made and
stops, by PID, the processes it started, even on failure.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
SH_NET, SH_HOST, SH_GW = "10.231.1.0/24", "10.231.1.10", "10.231.1.254"
SZ_NET, SZ_HOST, SZ_GW = "10.231.2.0/24", "10.231.2.10", "10.231.2.254"

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

# As in a Docker container: /proc/sys read-only (own mount namespace, so nothing else sees it).
RO_SYSCTL = 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"'


class CommandError(RuntimeError):
    def __init__(self, cmd: list[str], p: subprocess.CompletedProcess) -> None:
        self.stderr = p.stderr.strip()
        super().__init__(f"{' '.join(cmd)} -> {p.returncode}: {self.stderr}")


class NamespaceError(CommandError):
    """``ip netns add`` refused: no network namespaces here (or the name is taken)."""


def run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise CommandError(list(cmd), p)
    return p


def nsx(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def wan_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC)}


def ping(ns: str, dst: str, count: int = 3, wait: float = 1.0) -> list[float]:
    """RTTs (ms) of the echo replies received; bounded by count and wait."""
    if shutil.which("ping"):
        w = str(max(1, math.ceil(wait)))  # older iputils takes only whole seconds for -W
        p = run(*nsx(ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", w, dst),
                check=False, timeout=count * (wait + 0.2) + 10)
        return [float(x) for x in re.findall(r"time=([\d.]+) ms", p.stdout)]
    p = run(*nsx(ns, sys.executable, "-c", PING_FALLBACK, dst, str(count), str(wait)),
            timeout=count * (wait + 0.2) + 10)
    return json.loads(p.stdout)


def addr(ns: str, dev: str, cidr: str) -> None:
    run("ip", "-n", ns, "addr", "add", cidr, "dev", dev)
    run("ip", "-n", ns, "link", "set", dev, "up")


def veth(ns: str, dev: str, peer_ns: str, peer_dev: str) -> None:
    run("ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", peer_dev, "netns", peer_ns)


def wan_cmd(ns: str, config: Path, ro_sysctl: bool = False) -> list[str]:
    """The wan stand-in in ``ns``; with ``ro_sysctl``, behind a read-only /proc/sys."""
    cmd = [sys.executable, "-m", "ccdrill.standins.wan", "--config", str(config)]
    if ro_sysctl:
        cmd = ["unshare", "-m", "sh", "-c", RO_SYSCTL, "sh", *cmd]
    return nsx(ns, *cmd)


def wan_config(delay_ms: float, ctl_port: int, devs: dict[str, str] | None = None) -> dict:
    """A wan config for the two sites; ``devs`` names the router's device of each site (else found by subnet)."""
    sites = {"sh": {"subnet": SH_NET}, "sz": {"subnet": SZ_NET}}
    for site, dev in (devs or {}).items():
        sites[site] = {"dev": dev, **sites[site]}
    return {"name": "wan", "ctl_port": ctl_port, "delay_ms": delay_ms, "jitter_ms": 0, "loss": 0.0, "sites": sites}


def wan_ctl(ns: str, ctl_port: int, body: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """GET the wan's stats (or POST ``body`` to /ctl) from inside ``ns``."""
    cmd = nsx(ns, sys.executable, "-m", "ccdrill.standins.ctl", str(ctl_port))
    if body is not None:
        cmd.append(json.dumps(body))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=wan_env())
    if check and p.returncode != 0:
        raise RuntimeError(f"ctl {body}: {p.stderr.strip()}")
    return p


class Namespaces:
    """Namespaces named ``prefix`` + a short name, and the processes run in them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.created: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def add(self, short: str, lo: bool = True) -> str:
        name = self.prefix + short
        cmd = ["ip", "netns", "add", name]
        p = run(*cmd, check=False)
        if p.returncode != 0:
            raise NamespaceError(cmd, p)
        self.created.append(name)
        if lo:
            run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def two_sites(self, router_devs: dict[str, str]) -> dict[str, str]:
        """Namespaces sh, sz and r (by short name); each site's eth0 is joined to the router's device
        ``router_devs[site]`` (created in that dict's order), the router forwards, the sites route
        through it."""
        ns = {short: self.add(short) for short in ("sh", "sz", "r")}
        r, s, z = ns["r"], ns["sh"], ns["sz"]
        for site, dev in router_devs.items():
            veth(r, dev, ns[site], "eth0")
        addr(r, router_devs["sh"], f"{SH_GW}/24")
        addr(r, router_devs["sz"], f"{SZ_GW}/24")
        addr(s, "eth0", f"{SH_HOST}/24")
        addr(z, "eth0", f"{SZ_HOST}/24")
        run("ip", "-n", s, "route", "add", "default", "via", SH_GW)
        run("ip", "-n", z, "route", "add", "default", "via", SZ_GW)
        run(*nsx(r, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
        return ns

    def start_wan(self, ns: str, config: Path, log: Path, ctl_port: int, ro_sysctl: bool = False,
                  timeout: float = 15) -> subprocess.Popen:
        """The wan stand-in in ``ns`` (output appended to ``log``), once its ctl port answers."""
        with open(log, "a") as logf:
            wan = subprocess.Popen(wan_cmd(ns, config, ro_sysctl), stdout=logf, stderr=subprocess.STDOUT,
                                   env=wan_env())
        self.procs.append(wan)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if wan.poll() is not None:
                raise RuntimeError(f"wan exited {wan.returncode}: {log.read_text()}")
            if wan_ctl(ns, ctl_port, check=False).returncode == 0:
                return wan
            time.sleep(0.2)
        raise RuntimeError(f"wan ctl not up: {log.read_text()}")

    def cleanup(self) -> None:
        """Stop the processes (SIGTERM, then SIGKILL after 5 s), then delete the namespaces made."""
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
