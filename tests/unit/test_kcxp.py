"""KCXP broker and client: delivery, bridging through an upstream, loop stop, reconnects.

Brokers are real processes (``python -m ccdrill.standins.kcxp``) on 127.0.0.1 random ports;
subscribers and publishers are ``KcxpClient`` instances in the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ccdrill.standins import ctl
from ccdrill.standins.common import KcxpClient

SRC = str(Path(__file__).resolve().parents[2] / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One broker process; restartable on the same ports."""

    def __init__(self, tmp: Path, name: str, upstream: int | None = None, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.ctl_port = free_port()
        self.cfg = tmp / f"{name}.json"
        self.cfg.write_text(json.dumps({
            "name": name, "listen": "127.0.0.1", "port": self.port, "ctl_port": self.ctl_port,
            "upstream": f"127.0.0.1:{upstream}" if upstream else None}))
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ccdrill.standins.kcxp", "--config", str(self.cfg)],
            env={**os.environ, "PYTHONPATH": SRC}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                if ctl.request(self.ctl_port, timeout=1)["pid"] == self.proc.pid:
                    return self
            except RuntimeError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker {self.name} died: {self.proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker {self.name} did not come up")
            time.sleep(0.03)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # our own child, by PID
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()

    def stats(self) -> dict:
        return ctl.request(self.ctl_port, timeout=5)


@pytest.fixture
def brokers(tmp_path):
    started: list[Broker] = []

    def make(name: str, upstream: int | None = None, port: int | None = None) -> Broker:
        b = Broker(tmp_path, name, upstream, port)
        started.append(b)
        return b.start()

    yield make
    for b in started:
        b.stop()


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def collector(client: KcxpClient, pattern: str) -> list:
    got: list = []
    client.subscribe(pattern, lambda t, m: got.append((t, m)))
    return got


async def connected(port: int, name: str) -> KcxpClient:
    c = KcxpClient("127.0.0.1", port, name=name)
    await c.start()
    assert await c.wait_connected(5)
    return c


async def settle(brokers_: list[Broker], subs: int) -> None:
    """Wait until the brokers saw `subs` subscriptions in total (subscribe is asynchronous)."""
    await until(lambda: sum(b.stats()["subscriptions"] for b in brokers_) >= subs)


def test_broker_delivers_by_topic_and_prefix(brokers):
    a = brokers("kcxp-a")

    async def scenario():
        sub, pub = await connected(a.port, "sub"), await connected(a.port, "pub")
        exact, prefix, other = collector(sub, "cti.control"), collector(sub, "cti.*"), collector(sub, "ivr.x")
        await settle([a], 3)
        pub.publish("cti.control", {"n": 1})
        pub.publish("cti.other", {"n": 2})
        pub.publish("kcbp.req", {"n": 3})
        await until(lambda: len(prefix) == 2)
        await asyncio.sleep(0.1)
        assert exact == [("cti.control", {"n": 1})]
        assert prefix == [("cti.control", {"n": 1}), ("cti.other", {"n": 2})]
        assert other == []
        s = a.stats()
        # one delivery per client even when two of its patterns match
        assert s["pubs"] == {"cti.control": 1, "cti.other": 1, "kcbp.req": 1}
        assert s["delivered"] == {"cti.control": 1, "cti.other": 1}
        assert s["clients"] == 2 and s["upstream_connected"] is None
        await sub.close()
        await pub.close()

    asyncio.run(scenario())


def test_broker_survives_garbage(brokers):
    a = brokers("kcxp-g")

    async def scenario():
        r, w = await asyncio.open_connection("127.0.0.1", a.port)
        for junk in [b"not json\n", b"[1,2]\n", b'{"op":"pub","topic":"t"}\n',
                     b'{"op":"pub","topic":5,"msg":{}}\n', b'{"op":"fly"}\n',
                     b'{"op":"pub","topic":"t","msg":{},"via":"x"}\n', b"\xff\xfe\n"]:
            w.write(junk)
        await w.drain()
        await until(lambda: a.stats()["malformed"] >= 7)
        w.write(b"x" * (2 << 20) + b"\n")  # overlong line: the broker drops this client only
        try:
            await w.drain()
            rest = await asyncio.wait_for(r.read(), 5)
        except ConnectionError:
            rest = b""
        assert rest == b""
        w.close()
        c = await connected(a.port, "after")
        got = collector(c, "t")
        await settle([a], 1)
        c.publish("t", {"ok": True})
        await until(lambda: got == [("t", {"ok": True})])
        assert a.proc.poll() is None
        await c.close()

    asyncio.run(scenario())


def test_bridge_both_ways_through_upstream(brokers):
    primary = brokers("kcxp-primary")
    secondary = brokers("kcxp-secondary", upstream=primary.port)

    async def scenario():
        await until(lambda: secondary.stats()["upstream_connected"] is True)
        on_p, on_s = await connected(primary.port, "on-p"), await connected(secondary.port, "on-s")
        got_p, got_s = collector(on_p, "t.*"), collector(on_s, "t.*")
        await settle([primary, secondary], 3)  # two clients + the bridge's '*'
        on_p.publish("t.down", {"from": "primary"})
        on_s.publish("t.up", {"from": "secondary"})
        await until(lambda: len(got_p) == 2 and len(got_s) == 2)
        await asyncio.sleep(0.3)  # anything extra would be a loop or a duplicate
        assert sorted(m["from"] for _, m in got_p) == ["primary", "secondary"]
        assert sorted(m["from"] for _, m in got_s) == ["primary", "secondary"]
        ps, ss = primary.stats(), secondary.stats()
        assert ps["bridges"] == 1 and ss["upstream"]["connected"] is True
        assert ps["pubs"] == {"t.down": 1, "t.up": 1}  # the secondary's pub arrived once
        assert ss["from_upstream"] == {"t.down": 1}
        await on_p.close()
        await on_s.close()

    asyncio.run(scenario())


def test_mutual_upstreams_do_not_loop(brokers):
    p1, p2 = free_port(), free_port()
    x = brokers("kcxp-x", upstream=p2, port=p1)
    y = brokers("kcxp-y", upstream=p1, port=p2)

    async def scenario():
        await until(lambda: x.stats()["upstream_connected"] and y.stats()["upstream_connected"])
        on_x, on_y = await connected(x.port, "on-x"), await connected(y.port, "on-y")
        got_x, got_y = collector(on_x, "loop"), collector(on_y, "loop")
        await settle([x, y], 4)
        on_x.publish("loop", {"n": 1})
        await until(lambda: got_x and got_y)
        await asyncio.sleep(0.5)
        assert got_x == [("loop", {"n": 1})] and got_y == [("loop", {"n": 1})]
        sx, sy = x.stats(), y.stats()
        routed = sum(sx["pubs"].values()) + sum(sx["from_upstream"].values()) \
            + sum(sy["pubs"].values()) + sum(sy["from_upstream"].values())
        assert routed == 2  # once on each broker, then it stopped
        assert sx["loops_dropped"] + sx["dups_dropped"] + sy["loops_dropped"] + sy["dups_dropped"] >= 1
        await on_x.close()
        await on_y.close()

    asyncio.run(scenario())


def test_client_and_bridge_reconnect_after_broker_restart(brokers):
    primary = brokers("kcxp-r1")
    secondary = brokers("kcxp-r2", upstream=primary.port)

    async def scenario():
        sub = await connected(primary.port, "sub")
        got = collector(sub, "hb")
        pub_s = await connected(secondary.port, "pub-s")
        await until(lambda: secondary.stats()["upstream_connected"] is True)
        await settle([primary], 2)
        pub_s.publish("hb", {"n": 1})
        await until(lambda: len(got) == 1)

        primary.stop()
        await until(lambda: not sub.connected)
        await until(lambda: secondary.stats()["upstream_connected"] is False)
        assert sub.publish("hb", {"n": "lost"}) is False and sub.dropped == 1

        t0 = time.monotonic()
        primary.start()
        await until(lambda: sub.connected)
        await until(lambda: secondary.stats()["upstream_connected"] is True)
        assert time.monotonic() - t0 < 3  # retried every 0.5 s, not backed off
        await settle([primary], 2)  # the subscription was re-sent, and so was the bridge's
        pub_s.publish("hb", {"n": 2})
        await until(lambda: len(got) == 2)
        assert got[-1] == ("hb", {"n": 2}) and sub.connects == 2
        await sub.close()
        await pub_s.close()

    asyncio.run(scenario())


def test_client_starts_before_broker(tmp_path):
    port = free_port()

    async def scenario():
        c = KcxpClient("127.0.0.1", port, name="early")
        got = collector(c, "x")
        await c.start()  # returns although nobody listens
        assert not c.connected and c.publish("x", {}) is False
        b = Broker(tmp_path, "kcxp-late", port=port)
        try:
            await asyncio.to_thread(b.start)
            assert await c.wait_connected(3)
            await until(lambda: b.stats()["subscriptions"] == 1)
            c.publish("x", {"hello": 1})
            await until(lambda: got == [("x", {"hello": 1})])
        finally:
            await c.close()
            b.stop()

    asyncio.run(scenario())
