"""WAN router stand-in: joins the two sites' networks through a user-space delay line.

``python3 -m ccdrill.standins.wan --config /etc/ccdrill/wan.json``

The kernel here has no ``netem`` qdisc, so latency, loss and cuts are done in this process:

    site sh --eth0--> [ip rule iif eth0 -> table 100: default dev tun-sh] --> tun-sh --read-->
        DelayLine("sh->sz") --write--> tun-sz --> kernel routes (main table) --eth1--> site sz

and the same the other way (eth1 -> table 101 -> tun-sz -> ... -> tun-sh -> eth0).

Config (JSON)::

    {"name": "wan", "ctl_port": 9100,
     "sites": {"sh": {"dev": "eth0", "subnet": "10.231.1.0/24"},
               "sz": {"dev": "eth1", "subnet": "10.231.2.0/24"}},
     "delay_ms": 15, "jitter_ms": 0, "loss": 0.0}

``dev`` is optional (Docker does not guarantee interface order): without it the device holding
an address in ``subnet`` is used, waiting up to ``wait_dev_s`` for it to appear. Optional keys:
``tun`` per site (default ``tun-<site>``), ``table_base`` (100), ``rule_pref`` (1000),
``max_queue`` (packets held per direction), ``seed`` (RNG seed), ``wait_dev_s``.

Set-up is idempotent (supervisord restarts): the TUN devices die with the process, which takes
their routes with it; rules are checked and replaced in place. Each table also holds a blackhole
default route of the worst metric, so while this process is down the link is down too: traffic
never silently bypasses the emulated delay.

The container needs ``--cap-add NET_ADMIN --device /dev/net/tun --sysctl net.ipv4.ip_forward=1``.
rp_filter is set to 0 best effort (/proc/sys is read-only in a container); even strict mode
passes, since the reverse-path lookup for a packet from tun-sz is made with iif = its output
device (eth1), whose rule points back at tun-sz.

Ctl (``POST /ctl``): ``{"op":"set","delay_ms":..,"jitter_ms":..,"loss":..}``, ``{"op":"cut"}``,
``{"op":"restore"}``. ``GET /stats`` adds ``delay_ms``, ``jitter_ms``, ``loss``, ``cut``,
``forwarded`` per direction, ``dropped`` (loss, cut, queue_full, error, not_ipv4) and ``queued``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import os
import random
import re
import select
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ccdrill.standins.common import ConfigError, CtlError, Service, log, run_service, validate_config

KIND = "wan"

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
READ_SIZE = 65536
# Packets read per readiness event before the queue is serviced again: bounds added latency.
READ_BURST = 128
IDLE_WAIT = 1.0
TUN_TXQUEUELEN = 2000

SITE_NAME_RE = re.compile(r"^[a-z0-9]{1,11}$")  # "tun-" + name must fit IFNAMSIZ-1 (15)
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")

REQUIRED: dict[str, Any] = {"name": str, "sites": dict, "ctl_port": int}
OPTIONAL: dict[str, object] = {
    "delay_ms": 0.0,
    "jitter_ms": 0.0,
    "loss": 0.0,
    "table_base": 100,
    "rule_pref": 1000,
    "max_queue": 20000,
    "seed": None,
    "wait_dev_s": 30.0,
}


class SetupError(RuntimeError):
    """The network could not be set up (no device for a subnet, TUN or ip failure): exit 1."""


# --------------------------------------------------------------------------- pure delay line


class DelayLine:
    """One direction of the link: holds packets for ``delay`` (+/- ``jitter``), drops some.

    Pure (no I/O, caller passes the monotonic ``now``), so it is unit-tested without TUN.
    Due times never decrease, so packets leave in the order they came in even when jitter or a
    lowered delay would give a later packet an earlier due time: a deque is enough.
    """

    __slots__ = ("delay", "jitter", "loss", "rng", "max_queue", "cut", "_q", "_last_due",
                 "forwarded", "dropped_loss", "dropped_cut", "dropped_full")

    def __init__(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss: float = 0.0,
                 rng: random.Random | None = None, max_queue: int = 20000) -> None:
        self.delay = delay_ms / 1000.0
        self.jitter = jitter_ms / 1000.0
        self.loss = loss
        self.rng = rng if rng is not None else random.Random()
        self.max_queue = max_queue
        self.cut = False
        self._q: deque[tuple[float, bytes]] = deque()
        self._last_due = float("-inf")
        self.forwarded = 0
        self.dropped_loss = 0
        self.dropped_cut = 0
        self.dropped_full = 0

    def __len__(self) -> int:
        return len(self._q)

    def set(self, delay_ms: float | None = None, jitter_ms: float | None = None,
            loss: float | None = None) -> None:
        if delay_ms is not None:
            self.delay = delay_ms / 1000.0
        if jitter_ms is not None:
            self.jitter = jitter_ms / 1000.0
        if loss is not None:
            self.loss = loss

    def push(self, pkt: bytes, now: float) -> bool:
        """Queue one packet that arrived at ``now``; False if it was dropped."""
        if self.cut:
            self.dropped_cut += 1
            return False
        if self.loss > 0.0 and self.rng.random() < self.loss:
            self.dropped_loss += 1
            return False
        if len(self._q) >= self.max_queue:
            self.dropped_full += 1
            return False
        d = self.delay
        if self.jitter > 0.0:
            d = max(0.0, d + self.rng.uniform(-self.jitter, self.jitter))
        due = now + d
        if due < self._last_due:
            due = self._last_due
        self._last_due = due
        self._q.append((due, pkt))
        return True

    def next_due(self) -> float | None:
        return self._q[0][0] if self._q else None

    def pop_due(self, now: float) -> list[bytes]:
        """Remove and return, in order, every packet whose due time is <= now."""
        q = self._q
        out = []
        while q and q[0][0] <= now:
            out.append(q.popleft()[1])
        self.forwarded += len(out)
        return out

    def cut_link(self) -> int:
        """Cut: what is in flight is lost, and everything pushed until restore() is dropped."""
        self.cut = True
        n = len(self._q)
        self._q.clear()
        self.dropped_cut += n
        return n

    def restore(self) -> None:
        self.cut = False


# --------------------------------------------------------------------------- config


def _in_range(v: Any, lo: float, hi: float) -> bool:
    # JSON true/false are ints in Python; NaN compares false to everything.
    return not isinstance(v, bool) and isinstance(v, int | float) and lo <= v <= hi


def parse_config(data: Any, source: str = "<config>") -> dict:
    """Validate a parsed wan config; ConfigError names the key (e.g. 'sites.sz.subnet')."""
    cfg = validate_config(data, REQUIRED, OPTIONAL, source=source)

    def bad(key: str, what: str) -> ConfigError:
        return ConfigError(f"config {source}: key {key!r} {what}")

    # A typo such as "delay" for "delay_ms" would silently mean no delay: refuse unknown keys.
    for key in cfg:
        if key not in REQUIRED and key not in OPTIONAL:
            raise bad(key, f"is not a wan setting (known: {', '.join(sorted([*REQUIRED, *OPTIONAL]))})")
    if not cfg["name"]:
        raise bad("name", "must not be empty")
    if not 0 < cfg["ctl_port"] < 65536:
        raise bad("ctl_port", f"must be a TCP port 1..65535, got {cfg['ctl_port']!r}")
    for key, lo, hi in (("delay_ms", 0, 60000), ("jitter_ms", 0, 60000), ("loss", 0, 1),
                        ("wait_dev_s", 0, 3600)):
        if not _in_range(cfg[key], lo, hi):
            raise bad(key, f"must be a number between {lo} and {hi}, got {cfg[key]!r}")
        cfg[key] = float(cfg[key])
    for key, lo, hi in (("table_base", 1, 2**31 - 2), ("rule_pref", 1, 32000), ("max_queue", 1, 10**7)):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise bad(key, f"must be an integer {lo}..{hi}, got {v!r}")
    if cfg["seed"] is not None and (isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int)):
        raise bad("seed", f"must be an integer or null, got {cfg['seed']!r}")

    sites = cfg["sites"]
    if len(sites) != 2:
        raise bad("sites", f"must name exactly two sites, got {sorted(sites)!r}")
    out_sites: dict[str, dict] = {}
    for site, spec in sites.items():
        key = f"sites.{site}"
        if not SITE_NAME_RE.match(site):
            raise bad(key, "site name must be 1-11 lowercase letters/digits")
        if not isinstance(spec, dict):
            raise bad(key, f"must be an object, got {type(spec).__name__}")
        for k in spec:
            if k not in ("dev", "subnet", "tun"):
                raise bad(f"{key}.{k}", "is not a site setting (known: dev, subnet, tun)")
        if "subnet" not in spec:
            raise bad(f"{key}.subnet", "is missing")
        try:
            subnet = ipaddress.IPv4Network(spec["subnet"], strict=False)
        except (ValueError, TypeError):
            msg = f"must be an IPv4 network like 10.231.1.0/24, got {spec['subnet']!r}"
            raise bad(f"{key}.subnet", msg) from None
        for k in ("dev", "tun"):
            v = spec.get(k)
            if v is not None and (not isinstance(v, str) or not IFNAME_RE.match(v)):
                raise bad(f"{key}.{k}", f"must be an interface name (<= 15 chars), got {v!r}")
        out_sites[site] = {"dev": spec.get("dev"), "subnet": subnet, "tun": spec.get("tun") or f"tun-{site}"}
    (a, sa), (b, sb) = out_sites.items()
    if sa["subnet"].overlaps(sb["subnet"]):
        raise bad(f"sites.{b}.subnet", f"overlaps sites.{a}.subnet")
    for k in ("dev", "tun"):
        if sa[k] is not None and sa[k] == sb[k]:
            raise bad(f"sites.{b}.{k}", f"is the same as sites.{a}.{k} ({sa[k]!r})")
    devs = {sa["dev"], sb["dev"]} - {None}
    for site, spec in out_sites.items():
        if spec["tun"] in devs:
            raise bad(f"sites.{site}.tun", f"is also a site device ({spec['tun']!r})")
    cfg["sites"] = out_sites
    return cfg


# --------------------------------------------------------------------------- link state + ctl


class Wan:
    """Both directions and the shared settings; no I/O. Locked: ctl and pump are two threads."""

    def __init__(self, sites: Iterable[str], delay_ms: float = 0.0, jitter_ms: float = 0.0,
                 loss: float = 0.0, seed: int | None = None, max_queue: int = 20000) -> None:
        a, b = list(sites)
        self.lock = threading.Lock()
        self.delay_ms = delay_ms
        self.jitter_ms = jitter_ms
        self.loss = loss
        self.cut = False
        self.write_errors = 0
        self.not_ipv4 = 0
        rng = random.Random(seed)
        self.lines = {
            f"{a}->{b}": DelayLine(delay_ms, jitter_ms, loss, random.Random(rng.random()), max_queue),
            f"{b}->{a}": DelayLine(delay_ms, jitter_ms, loss, random.Random(rng.random()), max_queue),
        }

    def set(self, delay_ms: float | None = None, jitter_ms: float | None = None,
            loss: float | None = None) -> None:
        with self.lock:
            if delay_ms is not None:
                self.delay_ms = delay_ms
            if jitter_ms is not None:
                self.jitter_ms = jitter_ms
            if loss is not None:
                self.loss = loss
            for line in self.lines.values():
                line.set(delay_ms, jitter_ms, loss)

    def cut_link(self) -> int:
        with self.lock:
            self.cut = True
            return sum(line.cut_link() for line in self.lines.values())

    def restore(self) -> None:
        with self.lock:
            self.cut = False
            for line in self.lines.values():
                line.restore()

    def stats(self) -> dict:
        with self.lock:
            lines = self.lines.values()
            return {
                "delay_ms": self.delay_ms,
                "jitter_ms": self.jitter_ms,
                "loss": self.loss,
                "cut": self.cut,
                "forwarded": {d: line.forwarded for d, line in self.lines.items()},
                "dropped": {
                    "loss": sum(x.dropped_loss for x in lines),
                    "cut": sum(x.dropped_cut for x in lines),
                    "queue_full": sum(x.dropped_full for x in lines),
                    "error": self.write_errors,
                    "not_ipv4": self.not_ipv4,
                },
                "queued": sum(len(x) for x in lines),
            }

    def ctl(self, req: dict) -> dict:
        """Apply one ctl request (already a dict); CtlError -> HTTP 400."""
        op = req.get("op")
        if op == "set":
            extra = sorted(set(req) - {"op", "delay_ms", "jitter_ms", "loss"})
            if extra:
                raise CtlError(f"set: unknown field(s) {extra} (known: delay_ms, jitter_ms, loss)")
            vals: dict[str, float] = {}
            for key, hi in (("delay_ms", 60000), ("jitter_ms", 60000), ("loss", 1)):
                if key not in req:
                    continue
                v = req[key]
                if not _in_range(v, 0, hi):
                    raise CtlError(f"set: {key} must be a number between 0 and {hi}, got {v!r}")
                vals[key] = float(v)
            if not vals:
                raise CtlError("set: give at least one of delay_ms, jitter_ms, loss")
            self.set(**vals)
            return {"ok": True, **vals}
        if op == "cut":
            return {"ok": True, "cut": True, "lost_in_flight": self.cut_link()}
        if op == "restore":
            self.restore()
            return {"ok": True, "cut": False}
        raise CtlError(f"unknown op {op!r} (known: set, cut, restore)")


# --------------------------------------------------------------------------- system set-up


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and p.returncode != 0:
        raise SetupError(f"ip {' '.join(args)}: {p.stderr.strip() or p.returncode}")
    return p


def ip_json(*args: str) -> list:
    out = run_ip("-j", *args).stdout.strip()
    return json.loads(out) if out else []


def find_dev(subnet: ipaddress.IPv4Network, exclude: Iterable[str] = ()) -> str | None:
    """The device holding an IPv4 address inside ``subnet`` (Docker's eth order is not fixed)."""
    for link in ip_json("-4", "addr", "show"):
        if link.get("ifname") in exclude:
            continue
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and ipaddress.IPv4Address(a["local"]) in subnet:
                return link["ifname"]
    return None


def dev_mtu(dev: str) -> int | None:
    links = ip_json("link", "show", "dev", dev)
    return links[0].get("mtu") if links else None


def open_tun(name: str) -> int:
    """Create (or attach to) TUN device ``name``; it disappears when the fd is closed."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    os.set_blocking(fd, False)
    return fd


def read_sysctl(path: str) -> str:
    try:
        with open("/proc/sys/" + path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def write_sysctl(path: str, value: str, name: str, quiet: bool = False) -> None:
    """Best effort (/proc/sys is read-only in a container): log when the value stays different."""
    try:
        with open("/proc/sys/" + path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        if not quiet:
            log(name, "sysctl_missing", path=path)
    except OSError as e:
        cur = read_sysctl(path)
        if cur != value and not quiet:
            log(name, "sysctl_not_set", path=path, want=value, have=cur, error=str(e))


def setup_routing(name: str, sites: dict, table_base: int, rule_pref: int) -> None:
    """Policy routing: whatever enters from site i (not for a local address) goes to tun i.

    The local table (pref 0) is looked up first, so each site still reaches the router itself.
    """
    for i, (site, s) in enumerate(sites.items()):
        table, pref = str(table_base + i), rule_pref + i
        run_ip("route", "replace", "default", "dev", s["tun"], "table", table)
        # Fail closed: with the TUN gone (process down) the rule still matches, and drops.
        run_ip("route", "replace", "blackhole", "default", "metric", "4294967295", "table", table)
        rules = ip_json("rule", "show", "pref", str(pref))
        ok = (len(rules) == 1 and rules[0].get("iif") == s["dev"] and str(rules[0].get("table")) == table
              and set(rules[0]) <= {"priority", "src", "iif", "table"} and rules[0].get("src") == "all")
        if not ok:
            for _ in range(100):  # delete exactly what sits at our preference, however many
                if run_ip("rule", "del", "pref", str(pref), check=False).returncode != 0:
                    break
            run_ip("rule", "add", "pref", str(pref), "iif", s["dev"], "lookup", table)
        log(name, "route", site=site, iif=s["dev"], table=table, via=s["tun"], pref=pref)


# --------------------------------------------------------------------------- I/O loop


class Pump:
    """The packet loop: epoll on both TUN fds, delay lines serviced in between. Own thread."""

    def __init__(self, wan: Wan, fds: dict[str, tuple[int, int]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        # fds: direction -> (fd read from, fd written to)
        self.wan = wan
        self.fds = fds
        self.clock = clock
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop = False
        self.done = threading.Event()

    def stop(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def run(self) -> None:
        wan = self.wan
        ep = select.epoll()
        by_fd: dict[int, tuple[DelayLine, int]] = {}
        outs: list[tuple[DelayLine, int]] = []
        for d, (rfd, wfd) in self.fds.items():
            ep.register(rfd, select.EPOLLIN)
            by_fd[rfd] = (wan.lines[d], wfd)
            outs.append((wan.lines[d], wfd))
        ep.register(self._wake_r, select.EPOLLIN)
        read, write, clock, lock = os.read, os.write, self.clock, wan.lock
        try:
            while not self._stop:
                with lock:
                    dues = [line.next_due() for line, _ in outs]
                dues = [x for x in dues if x is not None]
                timeout = max(0.0, min(dues) - clock()) if dues else IDLE_WAIT
                events = ep.poll(timeout)
                now = clock()
                with lock:
                    for fd, _ev in events:
                        if fd == self._wake_r:
                            with contextlib.suppress(OSError):
                                read(fd, 64)
                            continue
                        line = by_fd[fd][0]
                        for _ in range(READ_BURST):
                            try:
                                pkt = read(fd, READ_SIZE)
                            except BlockingIOError:
                                break
                            # Only IPv4 is routed into the TUNs; anything else is the TUN's own
                            # IPv6 chatter (RS, MLD) where disable_ipv6 could not be set.
                            if pkt and pkt[0] >> 4 == 4:
                                line.push(pkt, now)
                            else:
                                wan.not_ipv4 += 1
                    ready = [(wfd, line.pop_due(now)) for line, wfd in outs]
                errors = 0
                for wfd, pkts in ready:
                    for pkt in pkts:
                        try:
                            write(wfd, pkt)
                        except OSError:  # e.g. a malformed packet the kernel refuses
                            errors += 1
                if errors:
                    with lock:
                        wan.write_errors += errors
        finally:
            ep.close()
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.done.set()


# --------------------------------------------------------------------------- service


class WanService(Service):
    kind = KIND

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg["name"], KIND, cfg["ctl_port"])
        self.cfg = cfg
        self.sites: dict[str, dict] = {k: dict(v) for k, v in cfg["sites"].items()}
        self.wan = Wan(self.sites, cfg["delay_ms"], cfg["jitter_ms"], cfg["loss"], cfg["seed"],
                       cfg["max_queue"])
        self.tun_fds: list[int] = []
        self.pump: Pump | None = None

    @classmethod
    def from_config(cls, data: dict) -> WanService:
        return cls(parse_config(data))

    def stats(self) -> dict:
        s = super().stats()
        s.update(self.wan.stats())
        s["sites"] = {k: {"dev": v["dev"], "tun": v["tun"], "subnet": str(v["subnet"])}
                      for k, v in self.sites.items()}
        return s

    async def handle_ctl(self, req: dict) -> dict:
        if req.get("op") in ("set", "cut", "restore"):
            answer = self.wan.ctl(req)
            self.log("ctl", req=req)
            return answer
        return await super().handle_ctl(req)

    async def _resolve_devs(self) -> None:
        """Fill in each site's ``dev``, waiting for Docker to attach late networks."""
        deadline = time.monotonic() + self.cfg["wait_dev_s"]
        tuns = {s["tun"] for s in self.sites.values()}
        while True:
            present = {link.get("ifname") for link in ip_json("link", "show")}
            missing = []
            for site, s in self.sites.items():
                if s["dev"] is None:
                    taken = {x["dev"] for x in self.sites.values() if x["dev"]}
                    s["dev"] = find_dev(s["subnet"], exclude=taken | tuns)
                    if s["dev"] is None:
                        missing.append(f"{site}: no device with an address in {s['subnet']}")
                elif s["dev"] not in present:
                    missing.append(f"{site}: no device {s['dev']!r}")
            if not missing:
                return
            if time.monotonic() >= deadline:
                raise SetupError(f"{self.name}: site device not found after "
                                 f"{self.cfg['wait_dev_s']:g}s: {'; '.join(missing)}")
            await asyncio.sleep(0.5)

    def _setup(self) -> dict[str, tuple[int, int]]:
        name = self.name
        (a, sa), (b, sb) = self.sites.items()
        if sa["dev"] == sb["dev"]:
            raise SetupError(f"{name}: both sites resolve to device {sa['dev']!r}")
        mtu = max(m for m in (dev_mtu(sa["dev"]), dev_mtu(sb["dev"]), 1500) if m)
        fds = {}
        for site, s in self.sites.items():
            try:
                fds[site] = open_tun(s["tun"])
            except OSError as e:
                raise SetupError(f"{name}: cannot create TUN {s['tun']!r} via /dev/net/tun: {e} "
                                 "(needs --cap-add NET_ADMIN --device /dev/net/tun)") from e
            self.tun_fds.append(fds[site])
        # Packets written to tun-sz carry sh sources. Strict rp_filter passes them too (see the
        # module doc), but loose/off costs nothing and does not depend on that kernel detail.
        for dev in ("all", "default", sa["dev"], sb["dev"], sa["tun"], sb["tun"]):
            write_sysctl(f"net/ipv4/conf/{dev}/rp_filter", "0", name)
        for dev in (sa["tun"], sb["tun"]):  # before "up": no IPv6 chatter (the pump drops it anyway)
            write_sysctl(f"net/ipv6/conf/{dev}/disable_ipv6", "1", name, quiet=True)
        for s in self.sites.values():
            run_ip("link", "set", "dev", s["tun"], "mtu", str(mtu), "txqueuelen", str(TUN_TXQUEUELEN), "up")
        if read_sysctl("net/ipv4/ip_forward") != "1":
            write_sysctl("net/ipv4/ip_forward", "1", name)
            # Without forwarding nothing crosses: fail loudly rather than run as a black hole.
            if read_sysctl("net/ipv4/ip_forward") != "1":
                raise SetupError(f"{name}: net.ipv4.ip_forward is off and cannot be set here "
                                 "(run the container with --sysctl net.ipv4.ip_forward=1)")
        setup_routing(name, self.sites, self.cfg["table_base"], self.cfg["rule_pref"])
        return {f"{a}->{b}": (fds[a], fds[b]), f"{b}->{a}": (fds[b], fds[a])}

    async def run(self) -> None:
        await self._resolve_devs()
        fds = self._setup()
        await self.start_ctl(self.cfg["ctl_port"])
        (a, sa), (b, sb) = self.sites.items()
        self.log("up", devs=f"{a}={sa['dev']} {b}={sb['dev']}", delay_ms=self.wan.delay_ms,
                 jitter_ms=self.wan.jitter_ms, loss=self.wan.loss)
        self.pump = Pump(self.wan, fds)
        await asyncio.to_thread(self.pump.run)
        raise SetupError(f"{self.name}: packet loop ended")  # only close() stops it

    async def close(self) -> None:
        if self.pump is not None:
            self.pump.stop()
            # The pump thread may be inside epoll on the TUN fds: let it leave before closing them.
            for _ in range(200):
                if self.pump.done.is_set():
                    break
                await asyncio.sleep(0.01)
        for fd in self.tun_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.tun_fds.clear()
        await super().close()


def main(argv: list[str] | None = None) -> None:
    try:
        run_service(WanService.from_config, argv)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
