"""KCXP stand-in: a topic message broker (docs/telephony.md, "KCXP").

TCP, JSON lines. Clients send ``{"op":"sub","topic":T}`` (T may end with ``*``: prefix match)
and ``{"op":"pub","topic":T,"msg":{...}}``; the broker delivers ``{"topic":T,"msg":{...},
"via":[...]}`` to every matching subscriber, once per client.

With ``upstream`` the broker bridges both ways: it subscribes ``*`` upstream and forwards its
local publications there. Every broker appends its id to the envelope's ``via`` list; a broker
drops any message already carrying its id, and never sends a message to a bridge whose broker id
is in ``via``. Each message also carries a ``mid``; a broker drops a ``mid`` it has already
routed, so even a mis-configured pair of mutual upstreams neither loops nor duplicates.

Stdlib only (runs in the lab hosts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections import Counter, OrderedDict
from typing import Any

from .common import (
    MAX_LINE,
    ConfigError,
    KcxpClient,
    Service,
    parse_hostport,
    run_service,
    topic_matches,
    validate_config,
)

# A subscriber that stops reading is cut off rather than buffered without bound.
MAX_CLIENT_BUFFER = 16 * MAX_LINE
# Message ids remembered for duplicate suppression (bridged copies arrive within milliseconds).
SEEN_MAX = 20000


class _Conn:
    __slots__ = ("writer", "peer", "patterns", "broker_id")

    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self.writer = writer
        self.peer = peer
        self.patterns: set[str] = set()
        self.broker_id: str | None = None  # set when the peer is a bridging broker

    def matches(self, topic: str) -> bool:
        return any(topic_matches(p, topic) for p in self.patterns)


class _UpstreamLink(KcxpClient):
    """The bridge to the upstream broker: subscribes '*', hands deliveries to the broker."""

    def __init__(self, broker: Broker, host: str, port: int) -> None:
        super().__init__(host, port, name=f"{broker.name}-upstream")
        self.broker = broker
        self._subs = [("*", lambda _t, _m: None)]

    def _on_connect(self) -> None:
        # Tell the upstream who we are, so it does not echo our own messages back.
        self._send({"op": "hello", "broker": self.broker.id})

    def _deliver(self, env: dict) -> None:
        via = env.get("via", [])
        if not (isinstance(via, list) and all(isinstance(v, str) for v in via)):
            self.malformed += 1
            return
        mid = env.get("mid")
        self.broker.route(env["topic"], env["msg"], via, from_upstream=True,
                          mid=mid if isinstance(mid, str) else None)


class Broker(Service):
    kind = "kcxp"

    def __init__(self, cfg: dict) -> None:
        cfg = validate_config(
            cfg,
            {"name": str, "port": int, "ctl_port": int},
            {"listen": "0.0.0.0", "upstream": None},
        )
        super().__init__(cfg["name"], ctl_port=cfg["ctl_port"])
        self.listen = cfg["listen"]
        self.port = cfg["port"]
        upstream = cfg["upstream"]
        if upstream is not None and not isinstance(upstream, str):
            raise ConfigError(f"config <config>: key 'upstream' must be 'host:port' or null, "
                              f"got {upstream!r}")
        self.upstream_addr = parse_hostport(upstream, "upstream") if upstream else None
        # Unique per process: both IPCs run identically configured brokers (DR-1 parity).
        self.id = f"{self.name}@{socket.gethostname()}/{uuid.uuid4().hex[:12]}"
        self.conns: set[_Conn] = set()
        self.pubs: Counter[str] = Counter()
        self.from_upstream: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.malformed = 0
        self.loops_dropped = 0
        self.dups_dropped = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.slow_dropped = 0
        self.upstream_dropped = 0
        self._server: asyncio.base_events.Server | None = None
        self.up: _UpstreamLink | None = None

    def stats(self) -> dict:
        s = super().stats()
        s.update({
            "broker_id": self.id,
            "port": self.port,
            "clients": sum(1 for c in self.conns if c.broker_id is None),
            "bridges": sum(1 for c in self.conns if c.broker_id is not None),
            "subscriptions": sum(len(c.patterns) for c in self.conns),
            "pubs": dict(self.pubs),
            "from_upstream": dict(self.from_upstream),
            "delivered": dict(self.delivered),
            "malformed": self.malformed,
            "loops_dropped": self.loops_dropped,
            "dups_dropped": self.dups_dropped,
            "slow_dropped": self.slow_dropped,
            "upstream": (None if self.up is None
                         else dict(self.up.stats(), not_forwarded=self.upstream_dropped)),
            "upstream_connected": None if self.up is None else self.up.connected,
        })
        return s

    async def run(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.listen, self.port, limit=MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]
        self.log("listening", listen=self.listen, port=self.port, broker_id=self.id)
        await self.start_ctl(self.ctl_port)
        if self.upstream_addr is not None:
            self.up = _UpstreamLink(self, *self.upstream_addr)
            await self.up.start()
        await asyncio.Event().wait()

    async def close(self) -> None:
        if self.up is not None:
            await self.up.close()
        if self._server is not None:
            self._server.close()
        for c in list(self.conns):
            c.writer.close()
        await super().close()

    # -- routing

    def route(self, topic: str, msg: dict, via: list[str], from_upstream: bool,
              mid: str | None = None) -> None:
        if self.id in via:
            self.loops_dropped += 1
            return
        if mid is None:
            mid = uuid.uuid4().hex
        elif mid in self._seen:
            self.dups_dropped += 1
            return
        self._seen[mid] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        via = [*via, self.id]
        (self.from_upstream if from_upstream else self.pubs)[topic] += 1
        env = {"topic": topic, "msg": msg, "via": via, "mid": mid}
        line = json.dumps(env, separators=(",", ":")).encode() + b"\n"
        for c in list(self.conns):
            if c.broker_id is not None and c.broker_id in via:
                continue
            if c.matches(topic):
                self._write(c, line)
                self.delivered[topic] += 1
        # What came from upstream is already there; everything else goes up.
        if self.up is not None and not from_upstream and not self.up.publish(topic, msg, via=via, mid=mid):
            self.upstream_dropped += 1

    def _write(self, c: _Conn, line: bytes) -> None:
        if c.writer.is_closing():
            return
        if c.writer.transport.get_write_buffer_size() > MAX_CLIENT_BUFFER:
            self.slow_dropped += 1
            self.log("client_too_slow", peer=c.peer)
            c.writer.close()
            self.conns.discard(c)
            return
        c.writer.write(line)

    # -- clients

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = _Conn(writer, f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer))
        self.conns.add(conn)
        self.log("client_connected", peer=conn.peer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    self.malformed += 1  # overlong line: the stream is no longer trustworthy
                    break
                if not line or not line.endswith(b"\n"):
                    break
                if line.strip():
                    self._handle_line(conn, line)
        except (ConnectionError, OSError):
            pass
        finally:
            self.conns.discard(conn)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.log("client_disconnected", peer=conn.peer, broker=conn.broker_id)

    def _handle_line(self, conn: _Conn, line: bytes) -> None:
        try:
            req: Any = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self.malformed += 1
            return
        if not isinstance(req, dict):
            self.malformed += 1
            return
        op, topic = req.get("op"), req.get("topic")
        if op == "sub" and isinstance(topic, str) and topic:
            conn.patterns.add(topic)
        elif op == "unsub" and isinstance(topic, str):
            conn.patterns.discard(topic)
        elif op == "pub" and isinstance(topic, str) and topic and isinstance(req.get("msg"), dict):
            via = req.get("via", [])
            if not (isinstance(via, list) and all(isinstance(v, str) for v in via)):
                self.malformed += 1
                return
            mid = req.get("mid")
            self.route(topic, req["msg"], via, from_upstream=False, mid=mid if isinstance(mid, str) else None)
        elif op == "hello" and isinstance(req.get("broker"), str):
            conn.broker_id = req["broker"]
            self.log("bridge_connected", peer=conn.peer, broker=conn.broker_id)
        else:
            self.malformed += 1


def main(argv: list[str] | None = None) -> None:
    run_service(Broker, argv)


if __name__ == "__main__":
    main()
