"""WAN stand-in: the pure delay line, ctl ops, config errors, and an end-to-end run in namespaces."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.support.netns import (
    SH_GW,
    SH_HOST,
    SZ_GW,
    SZ_HOST,
    NamespaceError,
    Namespaces,
    addr,
    ping,
    wan_cmd,
    wan_config,
    wan_ctl,
    wan_env,
)
from tests.support.netns import run as sh

from ccdrill.standins import ctl as ctl_client
from ccdrill.standins.common import ConfigError, CtlError
from ccdrill.standins.wan import DelayLine, Wan, WanService, parse_config

SRC = Path(__file__).resolve().parents[2] / "src"

SAMPLE = {
    "name": "wan",
    "sites": {"sh": {"dev": "eth0", "subnet": "10.231.1.0/24"},
              "sz": {"dev": "eth1", "subnet": "10.231.2.0/24"}},
    "delay_ms": 15,
    "jitter_ms": 0,
    "loss": 0.0,
    "ctl_port": 9100,
}


def sample(**changes) -> dict:
    cfg = json.loads(json.dumps(SAMPLE))
    cfg.update(changes)
    return cfg


# --------------------------------------------------------------------------- delay line


def test_due_times_and_order():
    line = DelayLine(delay_ms=10)
    for i in range(5):
        assert line.push(b"p%d" % i, now=i * 0.001)
    assert len(line) == 5
    assert line.next_due() == pytest.approx(0.010)
    assert line.pop_due(0.0099) == []
    assert line.pop_due(0.0100) == [b"p0"]
    assert line.pop_due(0.0125) == [b"p1", b"p2"]
    assert line.pop_due(1.0) == [b"p3", b"p4"]
    assert line.next_due() is None and len(line) == 0
    assert line.forwarded == 5


def test_jitter_never_reorders_and_stays_in_bounds():
    delay, jitter = 0.010, 0.008
    line = DelayLine(delay_ms=10, jitter_ms=8, rng=random.Random(7))
    arrivals = [i * 0.0005 for i in range(2000)]
    dues = []
    for i, t in enumerate(arrivals):
        line.push(i.to_bytes(4, "big"), now=t)
    while len(line):
        due = line.next_due()
        dues.append(due)
        assert len(line.pop_due(due)) >= 1
    line2 = DelayLine(delay_ms=10, jitter_ms=8, rng=random.Random(7))
    for i, t in enumerate(arrivals):
        line2.push(i.to_bytes(4, "big"), now=t)
    out_order = [int.from_bytes(p, "big") for p in line2.pop_due(10.0)]
    assert out_order == list(range(len(arrivals)))
    assert dues == sorted(dues)
    # Every packet leaves within delay +/- jitter of its arrival (holding order can only push a
    # packet up to an earlier packet's due time, which is itself <= arrival + delay + jitter).
    line3 = DelayLine(delay_ms=10, jitter_ms=8, rng=random.Random(7))
    for t in arrivals:
        line3.push(b"x", now=t)
        d = line3._q[-1][0] - t
        assert delay - jitter - 1e-9 <= d <= delay + jitter + 1e-9


def test_lowering_the_delay_does_not_overtake_queued_packets():
    line = DelayLine(delay_ms=50)
    line.push(b"old", now=0.0)
    line.set(delay_ms=0)
    line.push(b"new", now=0.001)
    assert line.pop_due(0.010) == []
    assert line.pop_due(0.050) == [b"old", b"new"]


def test_loss_statistics_with_seeded_rng():
    n, loss = 20000, 0.2
    line = DelayLine(delay_ms=0, loss=loss, rng=random.Random(42))
    kept = sum(line.push(b"x", now=0.0) for _ in range(n))
    sd = (n * loss * (1 - loss)) ** 0.5
    assert abs(line.dropped_loss - n * loss) < 5 * sd
    assert kept + line.dropped_loss == n
    assert len(line.pop_due(0.0)) == kept
    # Same seed, same drops: loss runs are reproducible.
    assert _pushes(loss, 42, 200) == _pushes(loss, 42, 200)
    assert _pushes(loss, 42, 200) != _pushes(loss, 43, 200)


def _pushes(loss: float, seed: int, n: int) -> list[bool]:
    line = DelayLine(delay_ms=0, loss=loss, rng=random.Random(seed))
    return [line.push(b"x", 0.0) for _ in range(n)]


def test_loss_edges():
    assert all(_pushes(0.0, 1, 1000))
    assert not any(_pushes(1.0, 1, 1000))


def test_cut_drops_everything_and_restore_resumes():
    line = DelayLine(delay_ms=10)
    for i in range(3):
        line.push(b"%d" % i, now=0.0)
    assert line.cut_link() == 3
    assert len(line) == 0 and line.dropped_cut == 3
    assert not line.push(b"during", now=0.001)
    assert line.pop_due(1.0) == []
    assert line.dropped_cut == 4
    line.restore()
    assert line.push(b"after", now=2.0)
    assert line.pop_due(2.0) == []
    assert line.pop_due(2.010) == [b"after"]
    assert line.forwarded == 1


def test_queue_limit_drops_and_counts():
    line = DelayLine(delay_ms=10, max_queue=3)
    assert [line.push(b"x", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert line.dropped_full == 2


# --------------------------------------------------------------------------- ctl ops


def test_wan_ctl_ops_and_stats():
    wan = Wan(["sh", "sz"], delay_ms=15, seed=1)
    assert wan.ctl({"op": "set", "delay_ms": 30, "loss": 0.5}) == {"ok": True, "delay_ms": 30.0, "loss": 0.5}
    assert all(line.delay == 0.030 and line.loss == 0.5 for line in wan.lines.values())
    wan.set(loss=0.0)
    wan.lines["sh->sz"].push(b"a", 0.0)
    assert wan.stats()["queued"] == 1
    assert wan.ctl({"op": "cut"})["lost_in_flight"] == 1
    s = wan.stats()
    assert s["cut"] is True and s["queued"] == 0 and s["dropped"]["cut"] == 1
    assert set(s["forwarded"]) == {"sh->sz", "sz->sh"}
    assert wan.ctl({"op": "restore"}) == {"ok": True, "cut": False}
    assert wan.stats()["cut"] is False
    assert wan.lines["sz->sh"].push(b"b", 0.0)


@pytest.mark.parametrize("req", [
    {"op": "nope"},
    {},
    {"op": "set"},
    {"op": "set", "delay_ms": -1},
    {"op": "set", "delay_ms": "15"},
    {"op": "set", "delay_ms": True},
    {"op": "set", "loss": 1.5},
    {"op": "set", "loss": float("nan")},
    {"op": "set", "delay": 10},
])
def test_wan_ctl_rejects(req):
    wan = Wan(["sh", "sz"], delay_ms=15)
    with pytest.raises(CtlError):
        wan.ctl(req)
    assert wan.stats()["delay_ms"] == 15 and wan.stats()["loss"] == 0.0


def test_http_ctl_surface_without_tun():
    """The real ctl server (common.Service) in front of the wan ops; no TUN needed."""
    svc = WanService(parse_config(sample(ctl_port=1)))

    def post_raw(port: int, body: bytes) -> tuple[int, dict]:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            c.request("POST", "/ctl", body=body)
            r = c.getresponse()
            return r.status, json.loads(r.read())
        finally:
            c.close()

    async def scenario() -> None:
        port = await svc.start_ctl(0)
        try:
            s = await asyncio.to_thread(ctl_client.request, port)
            assert s["kind"] == "wan" and s["name"] == "wan" and s["cut"] is False
            assert s["forwarded"] == {"sh->sz": 0, "sz->sh": 0}
            assert set(s["dropped"]) >= {"loss", "cut"} and s["queued"] == 0 and "ts" in s
            for body in (b"{not json", b"[1, 2]", b'{"op": "explode"}', b'{"op": "set", "loss": 2}'):
                status, answer = await asyncio.to_thread(post_raw, port, body)
                assert status == 400 and "error" in answer, body
            await asyncio.to_thread(ctl_client.request, port, {"op": "set", "delay_ms": 40, "loss": 0.1})
            await asyncio.to_thread(ctl_client.request, port, {"op": "cut"})
            s = await asyncio.to_thread(ctl_client.request, port)
            assert (s["delay_ms"], s["loss"], s["cut"]) == (40.0, 0.1, True)
            await asyncio.to_thread(ctl_client.request, port, {"op": "restore"})
            assert (await asyncio.to_thread(ctl_client.request, port))["cut"] is False
        finally:
            await svc.close()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- config


def test_config_sample_is_valid_and_dev_is_optional():
    cfg = parse_config(sample())
    assert cfg["sites"]["sh"]["dev"] == "eth0" and cfg["sites"]["sz"]["tun"] == "tun-sz"
    assert str(cfg["sites"]["sz"]["subnet"]) == "10.231.2.0/24"
    no_dev = sample(sites={"sh": {"subnet": "10.231.1.0/24"}, "sz": {"subnet": "10.231.2.0/24"}})
    assert parse_config(no_dev)["sites"]["sh"]["dev"] is None
    assert parse_config({k: v for k, v in SAMPLE.items() if k not in ("jitter_ms", "loss")})["loss"] == 0.0


@pytest.mark.parametrize("changes, key", [
    ({"sites": None}, "sites"),
    ({"ctl_port": "9100"}, "ctl_port"),
    ({"ctl_port": 70000}, "ctl_port"),
    ({"delay_ms": -5}, "delay_ms"),
    ({"delay_ms": True}, "delay_ms"),
    ({"jitter_ms": "2"}, "jitter_ms"),
    ({"loss": 1.5}, "loss"),
    ({"delay": 15}, "delay"),
    ({"max_queue": 0}, "max_queue"),
    ({"sites": {"sh": {"subnet": "10.231.1.0/24"}}}, "sites"),
    ({"sites": {"sh": {"subnet": "10.231.1.0/24"}, "sz": {"subnet": "nope"}}}, "sites.sz.subnet"),
    ({"sites": {"sh": {"subnet": "10.231.1.0/24"}, "sz": {"dev": "eth1"}}}, "sites.sz.subnet"),
    ({"sites": {"sh": {"subnet": "10.231.1.0/24"}, "sz": {"subnet": "10.231.1.0/25"}}}, "sites.sz.subnet"),
    ({"sites": {"sh": {"subnet": "10.231.1.0/24", "dev": "eth0"},
                "sz": {"subnet": "10.231.2.0/24", "dev": "eth0"}}}, "sites.sz.dev"),
    ({"sites": {"sh": {"subnet": "10.231.1.0/24", "dev": "x" * 16},
                "sz": {"subnet": "10.231.2.0/24"}}}, "sites.sh.dev"),
    ({"sites": {"SH!": {"subnet": "10.231.1.0/24"}, "sz": {"subnet": "10.231.2.0/24"}}}, "sites.SH!"),
    ({"sites": {"sh": {"subnet": "10.231.1.0/24", "mtu": 1500},
                "sz": {"subnet": "10.231.2.0/24"}}}, "sites.sh.mtu"),
])
def test_config_errors_name_the_key(changes, key):
    with pytest.raises(ConfigError) as err:
        parse_config(sample(**changes))
    assert repr(key) in str(err.value)


def test_missing_required_key_is_named():
    cfg = sample()
    del cfg["ctl_port"]
    with pytest.raises(ConfigError, match="'ctl_port'"):
        parse_config(cfg)


def test_cli_config_error_exits_2_naming_file_and_key(tmp_path):
    bad = tmp_path / "wan.json"
    bad.write_text(json.dumps(sample(loss=3)))
    p = subprocess.run([sys.executable, "-m", "ccdrill.standins.wan", "--config", str(bad)],
                       capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert p.returncode == 2, p.stderr
    assert str(bad) in p.stderr and "'loss'" in p.stderr


# --------------------------------------------------------------------------- end to end in namespaces

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
HAVE_TUN = os.path.exists("/dev/net/tun")
needs_netns = pytest.mark.skipif(
    not (IS_ROOT and HAVE_TUN and shutil.which("ip")),
    reason="needs root, /dev/net/tun and iproute2 (network namespaces + TUN)",
)

PREFIX = f"ccdw-{os.getpid()}-"
DELAY_MS = 20
CTL_PORT = 9100


class Lab:
    """Two sites and a router in namespaces, all named PREFIX*; removes exactly what it made."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ns = {k: PREFIX + k for k in ("sh", "sz", "r")}
        self.nss = Namespaces(PREFIX)
        self.wan: subprocess.Popen | None = None
        self.config = tmp / "wan.json"
        self.log = tmp / "wan.log"

    def build(self) -> None:
        existing = sh("ip", "netns", "list").stdout
        for name in self.ns.values():
            assert name not in existing, f"namespace {name} already exists"
        try:
            # Router-side names and creation order differ from eth0/eth1 on purpose: wan.py must find
            # each site's device by subnet, as with Docker's unordered interfaces.
            made = self.nss.two_sites({"sz": "ethz", "sh": "etha"})
        except NamespaceError as e:
            pytest.skip(f"cannot create network namespaces here: {e.stderr}")
        assert made == self.ns
        self.config.write_text(json.dumps(wan_config(DELAY_MS, CTL_PORT)))

    def add_ns(self, short: str) -> str:
        return self.nss.add(short, lo=False)

    def start_wan(self, ro_sysctl: bool = False) -> None:
        self.wan = self.nss.start_wan(self.ns["r"], self.config, self.log, CTL_PORT, ro_sysctl)

    def ctl(self, body: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return wan_ctl(self.ns["r"], CTL_PORT, body, check)

    def stats(self) -> dict:
        return json.loads(self.ctl().stdout)

    def teardown(self) -> None:
        self.nss.cleanup()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("wan-lab"))
    try:
        lab.build()
        lab.start_wan()
        yield lab
    finally:
        lab.teardown()


@needs_netns
def test_e2e_delay_is_applied_both_ways(lab):
    s = lab.stats()
    assert s["kind"] == "wan" and s["delay_ms"] == DELAY_MS
    assert s["sites"]["sh"]["dev"] == "etha" and s["sites"]["sz"]["dev"] == "ethz"
    rtts = ping(lab.ns["sh"], SZ_HOST, count=5)
    assert len(rtts) == 5, rtts
    assert min(rtts) >= 2 * DELAY_MS, rtts
    assert sorted(rtts)[2] < 2 * DELAY_MS + 40, rtts  # sanity: no gross extra latency
    s = lab.stats()
    assert s["forwarded"]["sh->sz"] >= 5 and s["forwarded"]["sz->sh"] >= 5
    # Each site reaches its own router address directly (local table first): no WAN delay.
    assert max(ping(lab.ns["sz"], SZ_GW, count=2)) < DELAY_MS


@needs_netns
def test_e2e_cut_and_restore(lab):
    lab.ctl({"op": "cut"})
    try:
        assert ping(lab.ns["sh"], SZ_HOST, count=3, wait=1) == []
        assert ping(lab.ns["sz"], SH_HOST, count=2, wait=1) == []
        assert len(ping(lab.ns["sh"], SH_GW, count=2)) == 2
        assert len(ping(lab.ns["sz"], SZ_GW, count=2)) == 2
        s = lab.stats()
        assert s["cut"] is True and s["dropped"]["cut"] >= 5
    finally:
        lab.ctl({"op": "restore"})
    assert lab.stats()["cut"] is False
    rtts = ping(lab.ns["sh"], SZ_HOST, count=3)
    assert len(rtts) == 3 and min(rtts) >= 2 * DELAY_MS, rtts


@needs_netns
def test_e2e_set_changes_delay_live(lab):
    lab.ctl({"op": "set", "delay_ms": 60})
    try:
        rtts = ping(lab.ns["sh"], SZ_HOST, count=3)
        assert len(rtts) == 3 and min(rtts) >= 120, rtts
    finally:
        lab.ctl({"op": "set", "delay_ms": DELAY_MS})
    rtts = ping(lab.ns["sh"], SZ_HOST, count=3)
    assert len(rtts) == 3 and 2 * DELAY_MS <= min(rtts) < 120, rtts


@needs_netns
def test_e2e_restart_is_idempotent_and_fails_closed(lab):
    # A crash (as supervisord sees it): the link must go down, not bypass the delay.
    old = lab.wan
    old.kill()
    old.wait(5)
    assert ping(lab.ns["sh"], SZ_HOST, count=2, wait=0.5) == []
    # A stale, wrong rule at our preference (say, from an older config) is replaced, not added to.
    sh("ip", "-n", lab.ns["r"], "rule", "add", "pref", "1000", "iif", "ethz", "lookup", "100")
    lab.start_wan(ro_sysctl=bool(shutil.which("unshare")))  # forwarding preset, as Docker's --sysctl
    rules = sh("ip", "-n", lab.ns["r"], "rule", "show").stdout
    assert rules.count("lookup 100") == 1 and rules.count("lookup 101") == 1, rules
    assert "iif etha lookup 100" in rules and "iif ethz lookup 101" in rules, rules
    rtts = ping(lab.ns["sh"], SZ_HOST, count=3)
    assert len(rtts) == 3 and min(rtts) >= 2 * DELAY_MS, rtts
    # And a clean stop exits 0 promptly.
    t0 = time.monotonic()
    lab.wan.send_signal(signal.SIGTERM)
    assert lab.wan.wait(10) == 0
    assert time.monotonic() - t0 < 5
    lab.start_wan()
    assert len(ping(lab.ns["sh"], SZ_HOST, count=2)) == 2


@needs_netns
def test_e2e_missing_site_device_exits_1(lab, tmp_path):
    # Resolution comes before any TUN or rule is touched, so the running wan is not disturbed.
    cfg = tmp_path / "wan-missing.json"
    cfg.write_text(json.dumps({
        "name": "wan2", "ctl_port": CTL_PORT + 1, "wait_dev_s": 0.5,
        "sites": {"sh": {"subnet": "10.231.77.0/24"}, "sz": {"subnet": "10.231.2.0/24"}},
    }))
    p = subprocess.run(wan_cmd(lab.ns["r"], cfg), capture_output=True, text=True, timeout=30, env=wan_env())
    assert p.returncode == 1, p.stderr
    assert "10.231.77.0/24" in p.stderr
    assert len(ping(lab.ns["sh"], SZ_HOST, count=1)) == 1


@needs_netns
@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare (util-linux)")
def test_e2e_forwarding_off_and_unsettable_exits_1(lab, tmp_path):
    x = lab.add_ns("x")
    sh("ip", "-n", x, "link", "add", "va", "type", "veth", "peer", "name", "vb")
    for dev, cidr in (("va", "10.231.1.1/24"), ("vb", "10.231.2.1/24")):
        addr(x, dev, cidr)
    sh("ip", "netns", "exec", x, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    cfg = tmp_path / "wan-nofwd.json"
    cfg.write_text(json.dumps({
        "name": "wan3", "ctl_port": CTL_PORT, "wait_dev_s": 1,
        "sites": {"sh": {"subnet": "10.231.1.0/24"}, "sz": {"subnet": "10.231.2.0/24"}},
    }))
    p = subprocess.run(wan_cmd(x, cfg, ro_sysctl=True), capture_output=True, text=True, timeout=30, env=wan_env())
    assert p.returncode == 1, p.stderr
    assert "ip_forward" in p.stderr and "--sysctl net.ipv4.ip_forward=1" in p.stderr
