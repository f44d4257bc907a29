"""Voice board stand-in: a Dialogic E1 board + its driver as one SIP endpoint (docs/telephony.md).

One asyncio process per board, stdlib only. `BoardBase` is the SIP user agent shared with the
fax board: UDP socket, server/client transactions (RFC 3261 17, UDP timers), dialogs, control
through KCXP `cti.control` heartbeats, the `line` op. `VoiceBoard` adds pools, IVR and agent
calls, outbound dialling.

Channel accounting: every leg that holds a channel has `chan` set; `_release()` is the only
place that gives a channel back and it clears `chan` first, so a channel is freed exactly once
whatever the order of BYE / CANCEL / timeouts / line loss.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import socket
import time
from typing import Any

from .common import ConfigError, CtlError, KcxpClient, Service, parse_hostport, run_service, validate_config
from .sip import (
    BRANCH_MAGIC,
    T1,
    T2,
    TIMER_B,
    SipMessage,
    SipParseError,
    can_answer,
    header_uri,
    local_ip_for,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse,
    uri_hostport,
    uri_user,
)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE"
_IN_DIALOG_OK = frozenset(("INFO", "UPDATE", "NOTIFY", "PRACK", "MESSAGE"))
_DNS_TTL = 10.0
_DRAIN = 64


class Pool:
    __slots__ = ("name", "size", "in_use", "peak")

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.in_use = 0
        self.peak = 0

    def take(self, n: int = 1) -> bool:
        if self.in_use + n > self.size:
            return False
        self.in_use += n
        if self.in_use > self.peak:
            self.peak = self.in_use
        return True

    def stats(self) -> dict:
        return {"size": self.size, "in_use": self.in_use, "peak": self.peak}


class Leg:
    """One SIP dialog of the board (UAS: a call to it; UAC: a leg it places)."""

    __slots__ = ("kind", "uas", "call_id", "local_tag", "remote_tag", "local_hdr", "remote_hdr",
                 "remote_target", "route", "peer", "cseq", "state", "pool", "chan", "partner",
                 "timer", "resp200", "invite", "stx", "ctx", "ack", "user", "cancel_pending",
                 "hold_ms", "registered")

    def __init__(self, kind: str, uas: bool) -> None:
        self.kind = kind
        self.uas = uas
        self.call_id = ""
        self.local_tag = new_tag()
        self.remote_tag: str | None = None
        self.local_hdr = ""   # our From/To value, with our tag
        self.remote_hdr = ""  # theirs
        self.remote_target = ""
        self.route: list[str] = []
        self.peer: tuple | None = None  # where the dialog-creating request came from / went to
        self.cseq = 0
        # uas: ringing -> answered (200 sent) -> confirmed (ACK) -> ended
        # uac: pending -> calling -> proceeding (1xx) -> confirmed (2xx, ACK sent) -> ended
        self.state = "pending"
        self.pool: Pool | None = None
        self.chan = False
        self.partner: Leg | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.resp200: bytes | None = None
        self.invite: SipMessage | None = None
        self.stx: ServerTxn | None = None
        self.ctx: ClientTxn | None = None
        self.ack: bytes | None = None
        self.user = ""
        self.cancel_pending = False
        self.hold_ms = 0
        self.registered = False


class ServerTxn:
    __slots__ = ("resp", "addr", "leg", "timer")

    def __init__(self, addr: tuple, leg: Leg | None = None) -> None:
        self.resp: bytes | None = None
        self.addr = addr
        self.leg = leg
        self.timer: asyncio.TimerHandle | None = None


class ClientTxn:
    __slots__ = ("key", "method", "data", "host", "port", "addr", "leg", "timer", "final", "ack",
                 "invite_msg")

    def __init__(self, key: str, method: str, data: bytes, host: str, port: int, leg: Leg | None) -> None:
        self.key = key
        self.method = method
        self.data = data
        self.host = host
        self.port = port
        self.addr: tuple | None = None
        self.leg = leg
        self.timer: asyncio.TimerHandle | None = None
        self.final = False
        self.ack: bytes | None = None  # ACK for a non-2xx final, re-sent on retransmissions
        self.invite_msg: SipMessage | None = None


def _cfg_error(key: str, why: str, value: Any) -> ConfigError:
    return ConfigError(f"config <config>: key {key!r} {why}, got {value!r}")


def _nonneg_int(cfg: dict, key: str, positive: bool = False) -> int:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < (1 if positive else 0):
        raise _cfg_error(key, "must be a positive integer" if positive else "must be an integer >= 0", v)
    return v


class BoardBase(Service, asyncio.DatagramProtocol):
    """SIP UA core shared by the voice and fax boards."""

    def __init__(self, cfg: dict, kind: str) -> None:
        super().__init__(cfg["name"], kind=kind, ctl_port=cfg["ctl_port"])
        self.ipc: str = cfg.get("ipc") or ""
        self.listen: str = cfg["listen"]
        self.sip_port: int = _nonneg_int(cfg, "sip_port")
        _nonneg_int(cfg, "ctl_port")
        self.kcxp_addr = parse_hostport(cfg["kcxp"], "kcxp")
        self.control_timeout = _nonneg_int(cfg, "control_timeout_ms", positive=True) / 1000.0
        self.answer_delay = _nonneg_int(cfg, "answer_delay_ms") / 1000.0
        adv = cfg.get("advertise")
        if adv is not None and not isinstance(adv, str):
            raise _cfg_error("advertise", "must be a host name or address", adv)
        wildcard = self.listen in ("0.0.0.0", "::", "")
        self.advertise: str | None = adv or (None if wildcard else self.listen)
        # Timers as attributes so that tests can shrink them.
        self.t1, self.t2, self.timer_b = T1, T2, TIMER_B
        self.kcxp = KcxpClient(*self.kcxp_addr, name=f"{self.name}-kcxp")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task] = set()
        self.line_up = True
        self._last_control: float | None = None
        self._controller: str | None = None
        self._was_controlled = False
        self.dialogs: dict[tuple[str, str], Leg] = {}
        self.stx: dict[str, ServerTxn] = {}
        self.ctx: dict[str, ClientTxn] = {}
        # (deadline, table, key): transactions linger 64*T1 to absorb retransmissions; all
        # lingers have the same length, so the deque stays sorted and one sweep expires them.
        self._expiry: collections.deque = collections.deque()
        self._dns: dict[str, tuple[str | None, float]] = {}
        self._local_ip: dict[str, str] = {}
        self.malformed = 0
        self.bad_answered = 0
        self.dropped_line = 0
        self.dropped_calls_line = 0
        self.retransmissions = 0
        self.retrans_absorbed = 0
        self.ack_timeouts = 0
        self.cancelled = 0
        self.stray = 0
        self.internal_errors = 0
        self.send_errors = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind SIP, ctl, connect KCXP. `run()` = start() then serve forever."""
        self.loop = asyncio.get_running_loop()
        fam = socket.AF_INET6 if ":" in self.listen else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.listen, self.sip_port))
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.transport, _ = await self.loop.create_datagram_endpoint(lambda: self, sock=sock)
        self.sip_port = sock.getsockname()[1]
        try:
            await self.start_ctl(self.ctl_port)
        except BaseException:
            self.transport.close()
            raise
        self.kcxp.subscribe("cti.control", self._on_control)
        await self.kcxp.start()
        self._spawn(self._housekeeping())
        self.log("sip_listening", listen=self.listen, port=self.sip_port)

    async def run(self) -> None:
        await self.start()
        await asyncio.Event().wait()

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        self._drop_all()
        self._sock = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        await self.kcxp.close()
        await super().close()

    def _spawn(self, coro) -> asyncio.Task:
        t = self.loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self._sweep()
            c = self.controlled
            if c != self._was_controlled:
                self._was_controlled = c
                self.log("controlled" if c else "not_controlled", controller=self._controller)

    def _sweep(self) -> None:
        now = time.monotonic()
        exp = self._expiry
        while exp and exp[0][0] <= now:
            _t, table, key = exp.popleft()
            tx = table.pop(key, None)
            if tx is not None and tx.timer is not None:
                tx.timer.cancel()

    def _linger(self, table: dict, key: str) -> None:
        self._expiry.append((time.monotonic() + self.timer_b, table, key))

    # ------------------------------------------------------------------ control (KCXP)
    def _on_control(self, _topic: str, msg: dict) -> None:
        boards = msg.get("boards")
        if isinstance(boards, list) and self.name in boards:
            self._last_control = time.monotonic()
            cti = msg.get("cti")
            self._controller = cti if isinstance(cti, str) else str(cti)

    @property
    def controlled(self) -> bool:
        t = self._last_control
        return t is not None and time.monotonic() - t < self.control_timeout

    # ------------------------------------------------------------------ ctl + stats
    def base_stats(self) -> dict:
        s = super().stats()
        controlled = self.controlled
        s.update({
            "ipc": self.ipc, "sip_port": self.sip_port,
            "controlled": controlled, "controller": self._controller if controlled else None,
            "last_controller": self._controller,
            "line": "up" if self.line_up else "down",
            "malformed": self.malformed,
            "sip": {"bad_request_sent": self.bad_answered, "retransmissions": self.retransmissions,
                    "retrans_absorbed": self.retrans_absorbed, "ack_timeouts": self.ack_timeouts,
                    "cancelled": self.cancelled, "stray": self.stray,
                    "dropped_line_down": self.dropped_line, "calls_lost_line_down": self.dropped_calls_line,
                    "internal_errors": self.internal_errors, "send_errors": self.send_errors,
                    "dialogs": len(self.dialogs), "server_txns": len(self.stx),
                    "client_txns": len(self.ctx)},
            "kcxp": self.kcxp.stats(),
        })
        return s

    async def handle_ctl(self, req: dict) -> dict:
        op = req.get("op")
        if op == "line":
            state = req.get("state")
            if state not in ("up", "down"):
                raise CtlError("line: state must be 'up' or 'down'")
            if state == "down" and self.line_up:
                self.line_up = False
                lost = self._drop_all()
                self.log("line_down", calls_lost=lost)
            elif state == "up" and not self.line_up:
                self.line_up = True
                self.log("line_up")
            return {"ok": True, "line": state}
        if op == "reset_peaks":
            for p in self.all_pools():
                p.peak = p.in_use
            return {"ok": True}
        return await super().handle_ctl(req)

    def all_pools(self) -> list[Pool]:
        raise NotImplementedError

    # ------------------------------------------------------------------ accounting
    def _release(self, leg: Leg) -> None:
        if leg.chan:
            leg.chan = False
            leg.pool.in_use -= 1

    def accounting(self) -> list[str]:
        """Problems in channel accounting (empty = exact). Used by tests and `/stats` checks."""
        held: dict[str, int] = {}
        seen: set[int] = set()
        legs = list(self.dialogs.values())
        legs += [t.leg for t in self.stx.values() if t.leg is not None]
        legs += [t.leg for t in self.ctx.values() if t.leg is not None]
        legs += [leg.partner for leg in legs if leg.partner is not None]
        for leg in legs:
            if id(leg) in seen:
                continue
            seen.add(id(leg))
            if leg.chan:
                held[leg.pool.name] = held.get(leg.pool.name, 0) + 1
        problems = []
        for p in self.all_pools():
            if not 0 <= p.in_use <= p.size:
                problems.append(f"pool {p.name}: in_use {p.in_use} outside 0..{p.size}")
            if held.get(p.name, 0) != p.in_use:
                problems.append(f"pool {p.name}: in_use {p.in_use} but legs hold {held.get(p.name, 0)}")
        return problems

    def _drop_all(self) -> int:
        """Forget every call and transaction without sending anything (line cut / unload)."""
        lost = 0
        legs = {id(leg): leg for leg in self.dialogs.values()}
        for table in (self.stx, self.ctx):
            for tx in table.values():
                if tx.timer is not None:
                    tx.timer.cancel()
                if tx.leg is not None:
                    legs[id(tx.leg)] = tx.leg
        for leg in list(legs.values()):
            if leg.partner is not None:
                legs[id(leg.partner)] = leg.partner
        for leg in legs.values():
            if leg.state != "ended":
                lost += 1
            leg.state = "ended"
            if leg.timer is not None:
                leg.timer.cancel()
            self._release(leg)
        self.dialogs.clear()
        self.stx.clear()
        self.ctx.clear()
        self._expiry.clear()
        self.dropped_calls_line += lost
        return lost

    # ------------------------------------------------------------------ transport
    def connection_made(self, transport) -> None:
        self.transport = transport

    def error_received(self, exc) -> None:
        self.send_errors += 1

    def _send(self, data: bytes, addr) -> None:
        if self.transport is None or not self.line_up:
            return
        try:
            self.transport.sendto(data, addr)
        except (OSError, TypeError, ValueError):
            self.send_errors += 1

    def _my_ip(self, peer_ip: str) -> str:
        if self.advertise:
            return self.advertise
        ip = self._local_ip.get(peer_ip)
        if ip is None:
            ip = self._local_ip[peer_ip] = local_ip_for(peer_ip)
        return ip

    def _resolve_then(self, host: str, port: int, fn) -> None:
        """Call fn((ip, port)) or fn(None), at once for literals and cached names."""
        hit = self._dns.get(host)
        if hit is not None and (hit[1] == 0 or hit[1] > time.monotonic()):
            fn((hit[0], port) if hit[0] else None)
            return
        try:
            ipaddress.ip_address(host)
            self._dns[host] = (host, 0)
            fn((host, port))
            return
        except ValueError:
            pass
        self._spawn(self._resolve_task(host, port, fn))

    async def _resolve_task(self, host: str, port: int, fn) -> None:
        try:
            infos = await self.loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
            ip = infos[0][4][0]
        except (OSError, IndexError, UnicodeError):
            ip = None
        self._dns[host] = (ip, time.monotonic() + _DNS_TTL)
        fn((ip, port) if ip else None)

    # ------------------------------------------------------------------ inbound datagrams
    def datagram_received(self, data: bytes, addr) -> None:
        self._handle(data, addr)
        # asyncio hands over one datagram per loop iteration; under load, drain what is already
        # queued on the socket (bounded) to save a poll + loop turn per message.
        sock = self._sock
        if sock is None:
            return
        for _ in range(_DRAIN):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.error_received(e)
                return
            self._handle(data, addr)

    def _handle(self, data: bytes, addr) -> None:
        if not self.line_up:
            self.dropped_line += 1
            return
        msg = None
        try:
            try:
                msg = parse(data)
            except SipParseError as e:
                self._malformed(data, e, addr)
                return
            if msg.method is not None:
                self._on_request(msg, addr)
            else:
                self._on_response(msg, addr)
        except SipParseError as e:
            self._malformed(data, e, addr)
        except Exception as e:  # a bug on one message must not take the board down
            self.internal_errors += 1
            self.log("internal_error", error=repr(e))
            with contextlib.suppress(Exception):
                if msg is not None and can_answer(msg):
                    self._send(make_response(msg, 500).to_bytes(), addr)

    def _malformed(self, data: bytes, e: SipParseError, addr) -> None:
        if not data.strip(b"\r\n\t "):
            return  # CRLF keep-alive
        self.malformed += 1
        part = e.partial
        if can_answer(part):
            self.bad_answered += 1
            self._send(make_response(part, 400, f"Bad Request ({e.reason})").to_bytes(), addr)

    @staticmethod
    def _txn_key(msg: SipMessage, method: str) -> str:
        b = msg.branch
        if b and b.startswith(BRANCH_MAGIC):
            return f"{b} {method}"
        # RFC 2543 peers: no usable branch.
        num, _m = msg.cseq()
        return f"{msg.call_id} {num} {msg.from_tag} {method}"

    def _on_request(self, msg: SipMessage, addr) -> None:
        method = msg.method
        if method == "ACK":
            self._on_ack(msg)
            return
        if method == "OPTIONS":
            self._send(make_response(msg, 200, headers=(("Allow", ALLOW), ("Accept", "application/sdp")))
                       .to_bytes(), addr)
            return
        key = self._txn_key(msg, method)
        tx = self.stx.get(key)
        if tx is not None:
            self.retrans_absorbed += 1
            if tx.resp is not None:
                self._send(tx.resp, addr)
            return
        tx = ServerTxn(addr)
        self.stx[key] = tx
        self._linger(self.stx, key)
        if method == "INVITE":
            if msg.to_tag:
                self._on_reinvite(msg, tx)
            else:
                self._on_invite(msg, tx)
        elif method == "BYE":
            self._on_bye(msg, tx)
        elif method == "CANCEL":
            self._on_cancel(msg, tx)
        elif method in _IN_DIALOG_OK:
            leg = self.dialogs.get((msg.call_id, msg.to_tag or ""))
            self._respond(tx, msg, 200 if leg is not None else 481)
        elif method in ("REGISTER", "SUBSCRIBE", "PUBLISH", "REFER"):
            self._respond(tx, msg, 405, headers=(("Allow", ALLOW),))
        else:
            self._respond(tx, msg, 501)

    def _respond(self, tx: ServerTxn, msg: SipMessage, status: int, reason: str | None = None,
                 headers=(), to_tag: str | None = None) -> None:
        data = make_response(msg, status, reason, to_tag=to_tag, headers=headers).to_bytes()
        tx.resp = data
        self._send(data, tx.addr)

    def _refuse_invite(self, tx: ServerTxn, msg: SipMessage, status: int, warning: str | None = None) -> None:
        hs = (("Warning", f'399 {self.name} "{warning}"'),) if warning else ()
        self._respond(tx, msg, status, headers=hs, to_tag=new_tag())
        self._start_timer_g(tx)

    def _start_timer_g(self, tx: ServerTxn) -> None:
        # Non-2xx finals to INVITE are retransmitted until the ACK (RFC 3261 17.2.1).
        tx.timer = self.loop.call_later(self.t1, self._timer_g, tx, self.t1, self.t1)

    def _timer_g(self, tx: ServerTxn, interval: float, elapsed: float) -> None:
        tx.timer = None
        if elapsed >= self.timer_b or tx.resp is None:
            return
        self.retransmissions += 1
        self._send(tx.resp, tx.addr)
        interval = min(interval * 2, self.t2)
        tx.timer = self.loop.call_later(interval, self._timer_g, tx, interval, elapsed + interval)

    # -- INVITE (new call): subclasses decide, then call _accept
    def _on_invite(self, msg: SipMessage, tx: ServerTxn) -> None:
        raise NotImplementedError

    def _new_uas_leg(self, kind: str, msg: SipMessage, tx: ServerTxn, pool: Pool) -> Leg:
        """A UAS leg holding one channel of `pool` (the caller has checked the pool)."""
        leg = Leg(kind, uas=True)
        leg.call_id = msg.call_id
        leg.remote_tag = msg.from_tag
        leg.remote_hdr = msg.get("From")
        leg.local_hdr = f"{msg.get('To')};tag={leg.local_tag}"
        contact = msg.get("Contact")
        leg.remote_target = header_uri(contact) if contact else header_uri(leg.remote_hdr)
        leg.route = msg.get_all("Record-Route")
        leg.peer = tx.addr
        leg.cseq = 0
        leg.user = uri_user(msg.uri)
        leg.invite = msg
        leg.stx = tx
        leg.pool = pool
        pool.take(1)
        leg.chan = True
        tx.leg = leg
        self.dialogs[(leg.call_id, leg.local_tag)] = leg
        leg.registered = True
        return leg

    def _accept(self, leg: Leg) -> None:
        """Ring (if answer_delay) or answer at once."""
        if self.answer_delay > 0:
            leg.state = "ringing"
            self._respond(leg.stx, leg.invite, 180, to_tag=leg.local_tag)
            leg.timer = self.loop.call_later(self.answer_delay, self._answer, leg)
        else:
            self._answer(leg)

    def _answer(self, leg: Leg) -> None:
        leg.timer = None
        if leg.state not in ("pending", "ringing"):
            return
        msg, tx = leg.invite, leg.stx
        my_ip = self._my_ip(tx.addr[0])
        data = make_response(msg, 200, to_tag=leg.local_tag, headers=(
            ("Contact", f"<sip:{self.name}@{my_ip}:{self.sip_port}>"),
            ("Allow", ALLOW), ("Content-Type", "application/sdp")), body=self._sdp(my_ip)).to_bytes()
        tx.resp = data
        leg.resp200 = data
        leg.invite = None  # only needed until the final response
        leg.state = "answered"
        self._send(data, tx.addr)
        leg.timer = self.loop.call_later(self.t1, self._retx_200, leg, self.t1, self.t1)
        self._answered(leg, msg)

    def _answered(self, leg: Leg, msg: SipMessage) -> None:
        """Hook: the board answered `leg` (counters, IVR session, agent leg)."""

    def _sdp(self, ip: str) -> bytes:
        raise NotImplementedError

    def _retx_200(self, leg: Leg, interval: float, elapsed: float) -> None:
        # 2xx retransmission by the UAS core (RFC 3261 13.3.1.4) until the ACK; none in 64*T1
        # -> the call is released and counted.
        leg.timer = None
        if leg.state != "answered":
            return
        if elapsed >= self.timer_b:
            self.ack_timeouts += 1
            self.log("ack_timeout", call_id=leg.call_id)
            self._end(leg, notify=True)
            return
        self.retransmissions += 1
        self._send(leg.resp200, leg.stx.addr)
        interval = min(interval * 2, self.t2)
        step = min(interval, self.timer_b - elapsed)
        leg.timer = self.loop.call_later(step, self._retx_200, leg, interval, elapsed + step)

    def _on_reinvite(self, msg: SipMessage, tx: ServerTxn) -> None:
        leg = self.dialogs.get((msg.call_id, msg.to_tag))
        if leg is None or leg.state not in ("confirmed", "answered"):
            self._refuse_invite(tx, msg, 481)
            return
        # Session refresh: same answer again, retransmitted until its ACK like the first one.
        my_ip = self._my_ip(tx.addr[0])
        data = make_response(msg, 200, headers=(
            ("Contact", f"<sip:{self.name}@{my_ip}:{self.sip_port}>"),
            ("Content-Type", "application/sdp")), body=self._sdp(my_ip)).to_bytes()
        tx.resp = data
        if leg.uas:
            if leg.timer is not None:
                leg.timer.cancel()
            leg.resp200 = data
            leg.stx = tx
            leg.state = "answered"
            leg.timer = self.loop.call_later(self.t1, self._retx_200, leg, self.t1, self.t1)
        self._send(data, tx.addr)

    def _on_ack(self, msg: SipMessage) -> None:
        leg = self.dialogs.get((msg.call_id, msg.to_tag or ""))
        if leg is not None and leg.state == "answered":
            leg.state = "confirmed"
            if leg.timer is not None:
                leg.timer.cancel()
                leg.timer = None
            return
        # ACK of a non-2xx final: same branch as the INVITE; stops Timer G.
        tx = self.stx.get(self._txn_key(msg, "INVITE"))
        if tx is not None and tx.timer is not None and (tx.leg is None or tx.leg.state == "ended"):
            tx.timer.cancel()
            tx.timer = None

    def _on_bye(self, msg: SipMessage, tx: ServerTxn) -> None:
        leg = self.dialogs.get((msg.call_id, msg.to_tag or ""))
        if leg is None or leg.state == "ended":
            self._respond(tx, msg, 481)
            return
        self._respond(tx, msg, 200)
        self._end(leg, notify=False)

    def _on_cancel(self, msg: SipMessage, tx: ServerTxn) -> None:
        itx = self.stx.get(self._txn_key(msg, "INVITE"))
        if itx is None:
            self._respond(tx, msg, 481)
            return
        self._respond(tx, msg, 200)
        leg = itx.leg
        if leg is not None and leg.invite is not None and leg.state != "ended":
            self.cancelled += 1
            self._end(leg, notify=False)  # sends the 487

    # -- ending legs
    def _end(self, leg: Leg, notify: bool) -> None:
        """End `leg` and its partner. notify: tell the peer of `leg` (BYE, or CANCEL if unanswered)."""
        if leg.state == "ended":
            return
        prev = leg.state
        leg.state = "ended"
        if leg.timer is not None:
            leg.timer.cancel()
            leg.timer = None
        self._release(leg)
        if leg.registered:
            self.dialogs.pop((leg.call_id, leg.local_tag), None)
            leg.registered = False
        if leg.uas and leg.invite is not None:
            # Still ringing: the INVITE transaction gets its final answer (RFC 3261 9.2).
            tx, inv = leg.stx, leg.invite
            leg.invite = None
            tx.resp = make_response(inv, 487, to_tag=leg.local_tag).to_bytes()
            self._send(tx.resp, tx.addr)
            self._start_timer_g(tx)
        elif notify:
            if prev in ("answered", "confirmed"):
                self._send_in_dialog(leg, "BYE")
            elif prev == "proceeding":
                self._send_cancel(leg)
            elif prev == "calling":
                leg.cancel_pending = True  # CANCEL only after a provisional (RFC 3261 9.1)
        if leg.stx is not None:
            leg.stx.leg = None  # the lingering transaction needs no call behind it
        partner = leg.partner
        if partner is not None:
            leg.partner = None
            partner.partner = None
            self._leg_ended(leg, partner)
            self._end(partner, notify=True)

    def _leg_ended(self, leg: Leg, partner: Leg) -> None:
        """Hook: `leg` ended while `partner` was still linked to it."""

    # ------------------------------------------------------------------ requests we send
    def _via(self, ip: str, branch: str) -> str:
        return f"SIP/2.0/UDP {ip}:{self.sip_port};branch={branch};rport"

    def _send_in_dialog(self, leg: Leg, method: str) -> None:
        leg.cseq += 1
        hop = header_uri(leg.route[0]) if leg.route else leg.remote_target
        try:
            host, port = uri_hostport(hop)
        except ValueError:
            host, port = leg.peer
        branch = new_branch()
        key = f"{branch} {method}"

        def build(addr):
            if addr is None:
                addr = leg.peer  # unresolvable target: the previous hop still knows the dialog
            ip = self._my_ip(addr[0])
            hs = [["Via", self._via(ip, branch)], ["Max-Forwards", "70"], ["From", leg.local_hdr],
                  ["To", leg.remote_hdr], ["Call-ID", leg.call_id], ["CSeq", f"{leg.cseq} {method}"]]
            hs.extend(["Route", r] for r in leg.route)
            data = SipMessage(method=method, uri=leg.remote_target, headers=hs).to_bytes()
            tx = ClientTxn(key, method, data, host, port, None)
            tx.addr = addr
            self._start_client_txn(tx)

        self._resolve_then(host, port, build)

    def _start_client_txn(self, tx: ClientTxn) -> None:
        self.ctx[tx.key] = tx
        self._send(tx.data, tx.addr)
        tx.timer = self.loop.call_later(self.t1, self._client_retx, tx, self.t1, self.t1)

    def _client_retx(self, tx: ClientTxn, interval: float, elapsed: float) -> None:
        # Timer A (INVITE, doubling) / E (non-INVITE, capped at T2) until a response;
        # Timer B / F at 64*T1.
        tx.timer = None
        if tx.final:
            return
        if elapsed >= self.timer_b:
            self._client_timeout(tx)
            return
        leg = tx.leg
        if not (tx.method == "INVITE" and leg is not None and leg.state != "calling"):
            self.retransmissions += 1
            self._send(tx.data, tx.addr)
        interval = interval * 2 if tx.method == "INVITE" else min(interval * 2, self.t2)
        step = min(interval, self.timer_b - elapsed)
        tx.timer = self.loop.call_later(step, self._client_retx, tx, interval, elapsed + step)

    def _client_timeout(self, tx: ClientTxn) -> None:
        tx.final = True
        self.ctx.pop(tx.key, None)
        leg = tx.leg
        if tx.method == "INVITE" and leg is not None:
            if leg.state != "ended":
                self._uac_failed(leg, 408)
                self._end(leg, notify=True)
            elif leg.state == "ended" and leg.cancel_pending:
                leg.cancel_pending = False

    def _send_cancel(self, leg: Leg) -> None:
        itx = leg.ctx
        if itx is None or itx.invite_msg is None or itx.addr is None:
            return
        inv = itx.invite_msg
        hs = [["Via", inv.get("Via")], ["Max-Forwards", "70"], ["From", inv.get("From")],
              ["To", inv.get("To")], ["Call-ID", inv.call_id], ["CSeq", f"{inv.cseq()[0]} CANCEL"]]
        hs.extend(["Route", r] for r in inv.get_all("Route"))
        data = SipMessage(method="CANCEL", uri=inv.uri, headers=hs).to_bytes()
        tx = ClientTxn(f"{inv.branch} CANCEL", "CANCEL", data, itx.host, itx.port, None)
        tx.addr = itx.addr
        self._start_client_txn(tx)

    def _send_invite(self, leg: Leg, ruri: str, to_uri: str, host: str, port: int, headers=()) -> None:
        """Place the INVITE of a UAC leg through (host, port)."""
        leg.state = "calling"
        leg.call_id = new_call_id(self.name)
        leg.cseq = 1
        leg.remote_hdr = f"<{to_uri}>"
        leg.remote_target = ruri
        # Registered before the PBX name is resolved, so that the leg is always reachable.
        self.dialogs[(leg.call_id, leg.local_tag)] = leg
        leg.registered = True

        def go(addr):
            if leg.state != "calling":
                return  # ended meanwhile
            if addr is None:
                self._uac_failed(leg, 0)
                self._end(leg, notify=False)
                return
            ip = self._my_ip(addr[0])
            leg.local_hdr = f"<sip:{self.name}@{ip}>;tag={leg.local_tag}"
            leg.peer = addr
            branch = new_branch()
            hs = [["Via", self._via(ip, branch)], ["Max-Forwards", "70"], ["From", leg.local_hdr],
                  ["To", leg.remote_hdr], ["Call-ID", leg.call_id], ["CSeq", "1 INVITE"],
                  ["Contact", f"<sip:{self.name}@{ip}:{self.sip_port}>"], ["Allow", ALLOW]]
            hs.extend([n, v] for n, v in headers)
            hs.append(["Content-Type", "application/sdp"])
            msg = SipMessage(method="INVITE", uri=ruri, headers=hs, body=self._sdp(ip))
            tx = ClientTxn(f"{branch} INVITE", "INVITE", msg.to_bytes(), host, port, leg)
            tx.addr = addr
            tx.invite_msg = msg
            leg.ctx = tx
            self._start_client_txn(tx)

        self._resolve_then(host, port, go)

    # ------------------------------------------------------------------ responses
    def _on_response(self, msg: SipMessage, addr) -> None:
        _num, cmethod = msg.cseq()
        tx = self.ctx.get(f"{msg.branch} {cmethod}")
        status = msg.status
        if tx is None:
            self._stray_response(msg, cmethod)
            return
        if tx.method != "INVITE":
            if status >= 200 and not tx.final:
                tx.final = True
                if tx.timer is not None:
                    tx.timer.cancel()
                    tx.timer = None
                self._linger(self.ctx, tx.key)
            return
        leg = tx.leg
        if status < 200:
            if leg.state == "calling":
                leg.state = "proceeding"
            if leg.state == "ended" and leg.cancel_pending:
                leg.cancel_pending = False
                self._send_cancel(leg)
            return
        if tx.final:
            # Retransmitted final: re-ACK (non-2xx: same ACK; 2xx: the dialog's ACK).
            data = tx.ack if status >= 300 else leg.ack
            if data is not None:
                self._send(data, tx.addr)
            return
        tx.final = True
        if tx.timer is not None:
            tx.timer.cancel()
            tx.timer = None
        self._linger(self.ctx, tx.key)
        if status >= 300:
            tx.ack = self._ack_non2xx(tx, msg)
            self._send(tx.ack, tx.addr)
            if leg.state != "ended":
                self._uac_failed(leg, status)
                self._end(leg, notify=False)
            return
        self._uac_2xx(leg, tx, msg)

    def _stray_response(self, msg: SipMessage, cmethod: str) -> None:
        self.stray += 1

    def _ack_non2xx(self, tx: ClientTxn, resp: SipMessage) -> bytes:
        inv = tx.invite_msg
        hs = [["Via", inv.get("Via")], ["Max-Forwards", "70"], ["From", inv.get("From")],
              ["To", resp.get("To")], ["Call-ID", inv.call_id], ["CSeq", f"{inv.cseq()[0]} ACK"]]
        hs.extend(["Route", r] for r in inv.get_all("Route"))
        return SipMessage(method="ACK", uri=inv.uri, headers=hs).to_bytes()

    def _uac_2xx(self, leg: Leg, tx: ClientTxn, msg: SipMessage) -> None:
        leg.remote_tag = msg.to_tag
        leg.remote_hdr = msg.get("To")
        contact = msg.get("Contact")
        if contact:
            leg.remote_target = header_uri(contact)
        leg.route = list(reversed(msg.get_all("Record-Route")))
        hop = header_uri(leg.route[0]) if leg.route else leg.remote_target
        try:
            host, port = uri_hostport(hop)
        except ValueError:
            host, port = tx.addr
        abandoned = leg.state == "ended"

        def go(addr):
            addr = addr or tx.addr
            ip = self._my_ip(addr[0])
            hs = [["Via", self._via(ip, new_branch())], ["Max-Forwards", "70"], ["From", leg.local_hdr],
                  ["To", leg.remote_hdr], ["Call-ID", leg.call_id], ["CSeq", "1 ACK"]]
            hs.extend(["Route", r] for r in leg.route)
            leg.ack = SipMessage(method="ACK", uri=leg.remote_target, headers=hs).to_bytes()
            self._send(leg.ack, addr)
            if abandoned:
                # Answered after we gave up (CANCEL race): ACK then BYE (RFC 3261 15).
                self._send_in_dialog(leg, "BYE")
            elif leg.state != "ended":
                leg.state = "confirmed"
                self._uac_answered(leg)

        self._resolve_then(host, port, go)

    def _uac_answered(self, leg: Leg) -> None:
        """Hook: a UAC leg got its 2xx and was ACKed."""

    def _uac_failed(self, leg: Leg, status: int) -> None:
        """Hook: a UAC leg got a non-2xx final (or 408 on timeout, 0 when unresolvable)."""


class VoiceBoard(BoardBase):
    kind = "voice_board"

    REQUIRED = {"name": str, "ipc": str, "sip_port": int, "ctl_port": int, "channels": int,
                "cabled": int, "pbx": str, "seat_uri": str, "kcxp": str}
    OPTIONAL = {"listen": "0.0.0.0", "span_size": 30, "pools": None, "control_timeout_ms": 1000,
                "answer_delay_ms": 0, "advertise": None}

    def __init__(self, cfg: dict) -> None:
        cfg = validate_config(cfg, self.REQUIRED, self.OPTIONAL)
        channels = _nonneg_int(cfg, "channels")
        cabled = _nonneg_int(cfg, "cabled")
        span = _nonneg_int(cfg, "span_size", positive=True)
        if cabled % span:
            raise _cfg_error("cabled", f"must be a multiple of span_size ({span})", cabled)
        if cabled > channels:
            raise _cfg_error("cabled", f"must be <= channels ({channels})", cabled)
        pools = cfg["pools"]
        if pools is None:
            self.pools = {"any": Pool("any", cabled)}
        else:
            if not isinstance(pools, dict) or not pools:
                raise _cfg_error("pools", "must be null or an object of pool sizes", pools)
            names = set(pools)
            if not (names <= {"inbound", "outbound"} or names == {"any"}):
                raise _cfg_error("pools", "keys must be 'inbound'/'outbound', or only 'any'", pools)
            for k, v in pools.items():
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise _cfg_error(f"pools.{k}", "must be an integer >= 0", v)
            if sum(pools.values()) != cabled:
                raise _cfg_error("pools", f"sizes must add up to cabled ({cabled})", pools)
            if names == {"any"}:
                self.pools = {"any": Pool("any", cabled)}
            else:
                self.pools = {k: Pool(k, pools.get(k, 0)) for k in ("inbound", "outbound")}
        self.pbx = parse_hostport(cfg["pbx"], "pbx")
        if not cfg["seat_uri"].startswith(("sip:", "sips:")):
            raise _cfg_error("seat_uri", "must be a sip: URI", cfg["seat_uri"])
        super().__init__(cfg, self.kind)
        self.channels, self.cabled, self.span_size = channels, cabled, span
        self.seat_uri = cfg["seat_uri"]
        self.in_pool = self.pools.get("inbound") or self.pools["any"]
        self.out_pool = self.pools.get("outbound") or self.pools["any"]
        self.calls = dict.fromkeys(("ivr", "agent", "agent_legs_answered", "agent_legs_failed",
                                    "agent_legs_abandoned", "outbound_answered", "outbound_failed",
                                    "outbound_no_channel"), 0)
        self.refused = dict.fromkeys(("full", "no_controller", "direction", "not_found"), 0)
        self.dials = 0
        self._dialing = 0
        self._sdp_cache: dict[str, bytes] = {}

    def all_pools(self) -> list[Pool]:
        return list(self.pools.values())

    def stats(self) -> dict:
        s = self.base_stats()
        active = sum(1 for leg in self.dialogs.values() if leg.partner is None or leg.kind != "seat")
        s.update({
            "channels": self.channels, "cabled": self.cabled, "span_size": self.span_size,
            "spans": self.cabled // self.span_size,
            "pools": {k: p.stats() for k, p in self.pools.items()},
            "calls": dict(self.calls), "refused": dict(self.refused),
            "active": active, "dialing": self._dialing,
        })
        return s

    def _sdp(self, ip: str) -> bytes:
        b = self._sdp_cache.get(ip)
        if b is None:
            b = self._sdp_cache[ip] = (
                f"v=0\r\no={self.name} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
                "m=audio 10000 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n").encode()
        return b

    # -- inbound calls
    def _on_invite(self, msg: SipMessage, tx: ServerTxn) -> None:
        if not self.controlled:
            self.refused["no_controller"] += 1
            self._refuse_invite(tx, msg, 503, "no controller")
            return
        user = uri_user(msg.uri).lower()
        if user.startswith("ivr"):
            need, kind = 1, "ivr"
        elif user.startswith("agent"):
            need, kind = 2, "agent"
        elif user.startswith("out"):
            self.refused["direction"] += 1
            self._refuse_invite(tx, msg, 403, "outbound only, not accepted inbound")
            return
        else:
            self.refused["not_found"] += 1
            self._refuse_invite(tx, msg, 404)
            return
        pool = self.in_pool
        if pool.size - pool.in_use < need:
            self.refused["full"] += 1
            self._refuse_invite(tx, msg, 503, "all channels busy")
            return
        leg = self._new_uas_leg(kind, msg, tx, pool)
        if kind == "agent":
            # The agent leg's channel is taken now, with the caller's (X + 2Y on one board).
            seat = Leg("seat", uas=False)
            seat.pool = pool
            pool.take(1)
            seat.chan = True
            seat.partner = leg
            leg.partner = seat
        self._accept(leg)

    def _answered(self, leg: Leg, msg: SipMessage) -> None:
        if leg.kind == "ivr":
            self.calls["ivr"] += 1
            self.kcxp.publish("ivr.session", {"call_id": leg.call_id, "board": self.name, "ipc": self.ipc,
                                              "user": leg.user, "account": msg.get("X-Fund-Account")})
        elif leg.kind == "agent":
            self.calls["agent"] += 1
            seat = leg.partner
            if seat is not None and seat.state == "pending":
                host, port = self.pbx
                self._send_invite(seat, self.seat_uri, self.seat_uri, host, port,
                                  headers=(("X-Agent-For", leg.call_id),))

    def _uac_answered(self, leg: Leg) -> None:
        if leg.kind == "seat":
            self.calls["agent_legs_answered"] += 1
        elif leg.kind == "out":
            self.calls["outbound_answered"] += 1
            leg.timer = self.loop.call_later(leg.hold_ms / 1000.0, self._hangup, leg)

    def _uac_failed(self, leg: Leg, status: int) -> None:
        if leg.kind == "seat":
            self.calls["agent_legs_failed"] += 1
            self.log("agent_leg_failed", call_id=leg.call_id, status=status)
        elif leg.kind == "out":
            self.calls["outbound_failed"] += 1

    def _leg_ended(self, leg: Leg, partner: Leg) -> None:
        if partner.kind == "seat" and partner.state in ("pending", "calling", "proceeding"):
            self.calls["agent_legs_abandoned"] += 1

    def _hangup(self, leg: Leg) -> None:
        leg.timer = None
        self._end(leg, notify=True)

    # -- ctl
    async def handle_ctl(self, req: dict) -> dict:
        if req.get("op") == "dial":
            count = req.get("count", 1)
            to_user = req.get("to_user", "out")
            hold_ms = req.get("hold_ms", 1000)
            rate = req.get("rate", 10)
            for k, v in (("count", count), ("hold_ms", hold_ms)):
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise CtlError(f"dial: {k} must be an integer >= 0")
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
                raise CtlError("dial: rate must be a number > 0 (calls per second)")
            if not isinstance(to_user, str) or not to_user or any(c in to_user for c in "@:;<> \r\n"):
                raise CtlError("dial: to_user must be a plain SIP user name")
            self.dials += 1
            self._spawn(self._dial(count, to_user, hold_ms, float(rate)))
            return {"ok": True, "dial": self.dials, "count": count, "to_user": to_user,
                    "hold_ms": hold_ms, "rate": rate}
        return await super().handle_ctl(req)

    async def _dial(self, count: int, to_user: str, hold_ms: int, rate: float) -> None:
        host, port = self.pbx
        self._dialing += 1
        try:
            start = self.loop.time()
            for i in range(1, count + 1):
                if i > 1:
                    delay = start + (i - 1) / rate - self.loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if not self.line_up:
                    self.calls["outbound_failed"] += 1
                    continue
                if not self.out_pool.take(1):
                    self.calls["outbound_no_channel"] += 1
                    continue
                leg = Leg("out", uas=False)
                leg.pool = self.out_pool
                leg.chan = True
                leg.hold_ms = hold_ms
                uri = f"sip:{to_user}-{i}@{host}:{port}"
                self._send_invite(leg, uri, uri, host, port)
        finally:
            self._dialing -= 1


def main(argv: list[str] | None = None) -> None:
    run_service(VoiceBoard, argv)


if __name__ == "__main__":
    main()
