"""Voice board stand-in, for real over UDP on 127.0.0.1 (raw sockets and SIPp), plus a simulated
network for the channel-accounting properties.

The board, a real KCXP broker and a real CTI run in an asyncio loop in a background thread of
the test process; SIPp runs as a subprocess (tests.support.sipp: always -nostdin -timeout 30s
-timeout_error, bounded -m) and is killed by PID if a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.sipp import (
    AUDIO,
    HAVE_SIPP,
    Sipp,
    ack,
    ack_refusal,
    answer,
    free_port,
    invite,
    ok_calls,
    recv,
    reply,
    scenario,
    send,
    uac_call,
)
from tests.support.wait import wait_for

from ccdrill.standins import sip
from ccdrill.standins.common import ConfigError, KcxpClient
from ccdrill.standins.cti import Cti
from ccdrill.standins.kcxp import Broker
from ccdrill.standins.sip import make_request, make_response, parse
from ccdrill.standins.voiceboard import VoiceBoard

SRC = str(Path(__file__).resolve().parents[2] / "src")
needs_sipp = pytest.mark.skipif(not HAVE_SIPP, reason="sipp not installed")


# --------------------------------------------------------------------------- harness

class LoopThread:
    """An asyncio loop in a daemon thread; `run(coro)` / `call(fn)` from the test thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 15.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args):
        async def _c():
            return fn(*args)
        return self.run(_c())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Lab:
    """Broker + CTI (module-wide) and the boards of one test."""

    def __init__(self) -> None:
        self.lt = LoopThread()
        self.broker = Broker({"name": "kcxp", "listen": "127.0.0.1", "port": 0, "ctl_port": 0})
        self._broker_task = self.lt.run(self._spawn(self.broker.run()))
        wait_for(lambda: self.broker._server is not None, what="broker")
        self.kcxp = f"127.0.0.1:{self.broker.port}"
        self.cti = Cti({"name": "cti-test", "kcxp": self.kcxp, "ctl_port": 0, "boards": [],
                        "heartbeat_ms": 50})
        self._cti_task = self.lt.run(self._spawn(self.cti.run()))
        self.boards: list[VoiceBoard] = []

    @staticmethod
    async def _spawn(coro):
        return asyncio.get_running_loop().create_task(coro)

    def board(self, controlled: bool = True, **over) -> VoiceBoard:
        name = over.pop("name", f"board{len(self.boards)}")
        cfg = {"name": name, "ipc": "ipc-test", "listen": "127.0.0.1", "sip_port": 0, "ctl_port": 0,
               "channels": 60, "cabled": 30, "span_size": 30, "pools": None,
               "pbx": "127.0.0.1:9", "seat_uri": "sip:seat@127.0.0.1:9", "kcxp": self.kcxp,
               "control_timeout_ms": 300}
        cfg.update(over)
        b = self.lt.call(VoiceBoard, cfg)
        self.lt.run(b.start())
        self.boards.append(b)
        if controlled:
            self.control(b)
        return b

    def control(self, b) -> None:
        if b.name not in self.cti.boards:
            self.cti.boards.append(b.name)
        wait_for(lambda: b.controlled, what=f"{b.name} controlled")

    def uncontrol(self, b) -> None:
        with contextlib.suppress(ValueError):
            self.cti.boards.remove(b.name)
        wait_for(lambda: not b.controlled, what=f"{b.name} not controlled")

    def stats(self, b) -> dict:
        return self.lt.call(b.stats)

    def call_accounting(self, b) -> list:
        return self.lt.call(b.accounting)

    def close_boards(self) -> None:
        for b in self.boards:
            self.lt.run(b.close())
            with contextlib.suppress(ValueError):
                self.cti.boards.remove(b.name)
        self.boards.clear()

    def close(self) -> None:
        self.close_boards()
        self._cti_task.cancel()
        self._broker_task.cancel()
        self.lt.run(self.cti.close())
        self.lt.run(self.broker.close())
        self.lt.stop()


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture
def labb(lab):
    """The lab, with this test's boards closed afterwards."""
    yield lab
    lab.close_boards()


class Phone:
    """A raw SIP peer on a UDP socket of 127.0.0.1 (caller, seat or PBX as a test needs)."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.uri = f"sip:phone@127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()

    def send(self, msg, addr) -> None:
        self.sock.sendto(msg if isinstance(msg, bytes) else msg.to_bytes(), addr)

    def recv(self, timeout: float = 2.0):
        self.sock.settimeout(timeout)
        try:
            data, addr = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        return parse(data)

    def expect(self, pred, timeout: float = 3.0, what: str = "message"):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout}s")
            m = self.recv(left)
            if m is not None and pred(m):
                return m

    def quiet(self, timeout: float = 0.3) -> list:
        got = []
        while (m := self.recv(timeout)) is not None:
            got.append(m)
        return got

    def request(self, method, board, user="ivr-1", call_id=None, cseq=1, from_tag="ph", to_tag=None,
                branch=None, headers=(), body=b"", content_type=None):
        host, port = "127.0.0.1", board.sip_port
        return make_request(method, f"sip:{user}@{host}:{port}", via_host="127.0.0.1", via_port=self.port,
                            from_uri=self.uri, from_tag=from_tag, to_uri=f"sip:{user}@{host}:{port}",
                            to_tag=to_tag, call_id=call_id, cseq=cseq, branch=branch,
                            contact=self.uri, headers=headers, body=body, content_type=content_type)


def addr(board) -> tuple[str, int]:
    return ("127.0.0.1", board.sip_port)


def final(m) -> bool:
    return m.status is not None and m.status >= 200


def call_up(ph: Phone, board, user="ivr-1", headers=()):
    """INVITE -> 200 -> ACK. Returns (invite, 200)."""
    inv = ph.request("INVITE", board, user=user, headers=headers, body=b"v=0\r\n",
                     content_type="application/sdp")
    ph.send(inv, addr(board))
    ok = ph.expect(final, what="final response to INVITE")
    assert ok.status == 200, ok.status
    ph.send(ack_for(ph, board, inv, ok), addr(board))
    return inv, ok


def ack_for(ph, board, inv, resp):
    return ph.request("ACK", board, user=sip.uri_user(inv.uri), call_id=inv.call_id, cseq=1,
                      to_tag=resp.to_tag, branch=None if resp.status < 300 else inv.branch)


def bye_for(ph, board, inv, resp, cseq=2):
    return ph.request("BYE", board, user=sip.uri_user(inv.uri), call_id=inv.call_id, cseq=cseq,
                      to_tag=resp.to_tag)


def pool(lab, b, name="any") -> dict:
    return lab.stats(b)["pools"][name]


def ctl(board, req: dict | None = None):
    """POST /ctl (or GET /stats when req is None) on the board's ctl port."""
    url = f"http://127.0.0.1:{board.ctl_port}/" + ("stats" if req is None else "ctl")
    data = None if req is None else json.dumps(req).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --------------------------------------------------------------------------- SIPp

UAC_HOLD = uac_call("hold", headers=["X-Fund-Account: 88000[call_number]"], record_route=True)

UAC_REFUSED = scenario(
    "refused", invite(), recv(response=100, optional=True),
    """  <recv response="%(code)s">
    <action>
      <ereg regexp="%(warning)s" search_in="hdr" header="Warning:" check_it="true" assign_to="1"/>
    </action>
  </recv>
""", ack_refusal(), '  <Reference variables="1"/>\n')

# The caller stays on the line until the board hangs up (agent BYE relayed by the board).
UAC_WAIT_BYE = scenario("wait-bye", invite(), recv(response=100, optional=True), recv(response=180, optional=True),
                        recv(response=200), ack(), recv(request="BYE"), reply())

# A seat: checks X-Agent-For, answers, and either waits for the BYE or hangs up itself.
UAS_SEAT = scenario(
    "seat",
    """  <recv request="INVITE">
    <action>
      <ereg regexp="%(check)s" search_in="%(where)s" %(header)s check_it="true" assign_to="1"/>
      <ereg regexp=".+" search_in="hdr" header="From:" check_it="true" assign_to="rf"/>
    </action>
  </recv>
""", reply("180 Ringing", tag=True), answer(AUDIO), recv(request="ACK"), "%(ending)s\n",
    '  <Reference variables="1,rf"/>\n')
SEAT = {"check": ".+", "where": "hdr", "header": 'header="X-Agent-For:"'}
CARRIER = {"check": "^INVITE sip:out-[0-9]+@", "where": "msg", "header": ""}
SEAT_WAITS = (recv(request="BYE") + reply()).rstrip("\n")
SEAT_HANGS_UP = ('  <pause milliseconds="%(ms)d"/>\n'
                 + send("BYE sip:board@[remote_ip]:[remote_port] SIP/2.0",
                        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
                        "From: <sip:seat@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]", "To: [$rf]",
                        "[last_Call-ID:]", "CSeq: 2 BYE", "Max-Forwards: 70", "Content-Length: 0", retrans=True)
                 + '  <recv response="200"/>')


@pytest.fixture(autouse=True)
def _no_stray_sipp():
    """SIPp runs are killed (by PID) after each test, whatever happened."""
    yield
    Sipp.stop_all()


# --------------------------------------------------------------------------- config

BASE = {"name": "b", "ipc": "i", "sip_port": 5061, "ctl_port": 9061, "channels": 60, "cabled": 60,
        "pbx": "pbx:5060", "seat_uri": "sip:seat@pbx", "kcxp": "127.0.0.1:7100"}


@pytest.mark.parametrize("over,key", [
    ({"cabled": 45}, "cabled"),
    ({"cabled": 90}, "cabled"),
    ({"pools": {"inbound": 30, "outbound": 0}}, "pools"),
    ({"pools": {"inbound": 60, "sideways": 0}}, "pools"),
    ({"pools": {"inbound": -30, "outbound": 90}}, "pools.inbound"),
    ({"pbx": "nohost"}, "pbx"),
    ({"seat_uri": "seat@pbx"}, "seat_uri"),
    ({"channels": "60"}, "channels"),
    ({"span_size": 0}, "span_size"),
])
def test_config_errors_name_the_key(over, key):
    with pytest.raises(ConfigError) as e:
        VoiceBoard({**BASE, **over})
    assert repr(key) in str(e.value)


def test_config_pools():
    b = VoiceBoard({**BASE, "pools": {"inbound": 60}})
    assert {k: p.size for k, p in b.pools.items()} == {"inbound": 60, "outbound": 0}
    b = VoiceBoard({**BASE, "cabled": 30, "pools": None})
    assert {k: p.size for k, p in b.pools.items()} == {"any": 30}


def test_process_exits_2_on_bad_config(tmp_path):
    cfg = tmp_path / "board.json"
    cfg.write_text(json.dumps({**BASE, "cabled": 45}))
    r = subprocess.run([sys.executable, "-m", "ccdrill.standins.voiceboard", "--config", str(cfg)],
                       env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=20)
    assert r.returncode == 2
    assert str(cfg) in r.stderr and "'cabled'" in r.stderr


# --------------------------------------------------------------------------- SIPp: capacity

@needs_sipp
def test_sipp_n_ivr_answered_and_next_refused_503(labb, tmp_path):
    lab = labb
    b = lab.board(cabled=30, pools={"inbound": 30, "outbound": 0})
    holders = Sipp(tmp_path, UAC_HOLD, ["-s", "ivr", "-r", "200", "-l", "30", "-d", "2500",
                                        f"127.0.0.1:{b.sip_port}"], m=30)
    wait_for(lambda: pool(lab, b, "inbound")["in_use"] == 30, timeout=10, what="30 channels in use")
    extra = Sipp(tmp_path, UAC_REFUSED % {"code": 503, "warning": f'399 {b.name} "all channels busy"'},
                 ["-s", "ivr", f"127.0.0.1:{b.sip_port}"], m=1)
    rc, c = extra.result()
    assert rc == 0 and ok_calls(c) == (1, 0), extra.stderr
    rc, c = holders.result()
    assert rc == 0 and ok_calls(c) == (30, 0), holders.stderr
    s = lab.stats(b)
    assert s["calls"]["ivr"] == 30 and s["refused"]["full"] == 1
    assert s["pools"]["inbound"] == {"size": 30, "in_use": 0, "peak": 30}
    assert s["active"] == 0 and lab.call_accounting(b) == []


@needs_sipp
def test_sipp_agent_calls_take_two_channels_and_mix_is_x_plus_2y(labb, tmp_path):
    """3 agent calls + 24 IVR calls fill 30 channels (X + 2Y); one more IVR call is refused."""
    lab = labb
    seat_port = free_port()
    b = lab.board(cabled=30, pbx=f"127.0.0.1:{seat_port}", seat_uri=f"sip:seat@127.0.0.1:{seat_port}")
    seats = Sipp(tmp_path, UAS_SEAT % {**SEAT, "ending": SEAT_WAITS}, [], m=3, port=seat_port)
    agents = Sipp(tmp_path, UAC_HOLD, ["-s", "agent", "-r", "100", "-d", "3000", f"127.0.0.1:{b.sip_port}"],
                  m=3)
    wait_for(lambda: lab.stats(b)["calls"]["agent_legs_answered"] == 3, timeout=10, what="3 agent legs")
    assert pool(lab, b)["in_use"] == 6
    ivr = Sipp(tmp_path, UAC_HOLD, ["-s", "ivr", "-r", "200", "-d", "2000", f"127.0.0.1:{b.sip_port}"], m=24)
    wait_for(lambda: pool(lab, b)["in_use"] == 30, timeout=10, what="30 channels in use")
    extra = Sipp(tmp_path, UAC_REFUSED % {"code": 503, "warning": "all channels busy"},
                 ["-s", "ivr", f"127.0.0.1:{b.sip_port}"], m=1)
    for p, n in ((extra, 1), (ivr, 24), (agents, 3), (seats, 3)):
        rc, c = p.result()
        assert rc == 0 and ok_calls(c) == (n, 0), p.stderr
    s = lab.stats(b)
    assert s["calls"]["agent"] == 3 and s["calls"]["agent_legs_answered"] == 3 and s["calls"]["ivr"] == 24
    assert s["pools"]["any"]["peak"] == 30 and s["pools"]["any"]["in_use"] == 0
    assert s["refused"]["full"] == 1 and lab.call_accounting(b) == []


@needs_sipp
def test_sipp_agent_hangs_up_first_board_ends_caller(labb, tmp_path):
    lab = labb
    seat_port = free_port()
    b = lab.board(pbx=f"127.0.0.1:{seat_port}", seat_uri=f"sip:seat@127.0.0.1:{seat_port}")
    seat = Sipp(tmp_path, UAS_SEAT % {**SEAT, "ending": SEAT_HANGS_UP % {"ms": 500}}, [], m=1, port=seat_port)
    caller = Sipp(tmp_path, UAC_WAIT_BYE, ["-s", "agent-7", f"127.0.0.1:{b.sip_port}"], m=1)
    for p in (seat, caller):
        rc, c = p.result()
        assert rc == 0 and ok_calls(c) == (1, 0), p.stderr
    wait_for(lambda: pool(lab, b)["in_use"] == 0, what="channels freed")
    s = lab.stats(b)
    assert s["pools"]["any"]["peak"] == 2 and s["calls"]["agent_legs_answered"] == 1
    assert lab.call_accounting(b) == []


@needs_sipp
def test_sipp_outbound_dial_answered_and_pool_limit(labb, tmp_path):
    lab = labb
    carrier_port = free_port()
    b = lab.board(cabled=60, pools={"inbound": 30, "outbound": 30}, pbx=f"127.0.0.1:{carrier_port}")
    carrier = Sipp(tmp_path, UAS_SEAT % {**CARRIER, "ending": SEAT_WAITS}, [], m=30, port=carrier_port)
    status, ans = ctl(b, {"op": "dial", "count": 32, "to_user": "out", "hold_ms": 1500, "rate": 200})
    assert status == 200 and ans["ok"] and ans["count"] == 32
    wait_for(lambda: (lambda s: s["calls"]["outbound_answered"] == 30 and s["dialing"] == 0)(lab.stats(b)),
             timeout=10, what="30 answered")
    s = lab.stats(b)
    assert s["pools"]["outbound"]["in_use"] == 30 and s["pools"]["inbound"]["in_use"] == 0
    assert s["calls"]["outbound_no_channel"] == 2
    rc, c = carrier.result()
    assert rc == 0 and ok_calls(c) == (30, 0), carrier.stderr
    wait_for(lambda: pool(lab, b, "outbound")["in_use"] == 0, what="outbound channels freed")
    s = lab.stats(b)
    assert s["calls"]["outbound_failed"] == 0 and s["pools"]["outbound"]["peak"] == 30
    assert lab.call_accounting(b) == []


@needs_sipp
def test_sipp_no_controller_503(labb, tmp_path):
    lab = labb
    b = lab.board(controlled=False)
    p = Sipp(tmp_path, UAC_REFUSED % {"code": 503, "warning": f'399 {b.name} "no controller"'},
             ["-s", "ivr", f"127.0.0.1:{b.sip_port}"], m=1)
    rc, c = p.result()
    assert rc == 0 and ok_calls(c) == (1, 0), p.stderr
    s = lab.stats(b)
    assert s["controlled"] is False and s["refused"]["no_controller"] == 1 and s["calls"]["ivr"] == 0


# --------------------------------------------------------------------------- raw UDP protocol

def test_control_follows_cti_heartbeats(labb):
    lab = labb
    b = lab.board(controlled=False)
    ph = Phone()
    try:
        ph.send(ph.request("INVITE", b), addr(b))
        r = ph.expect(final)
        assert r.status == 503 and "no controller" in r.get("Warning") and r.to_tag
        lab.control(b)
        assert lab.stats(b)["controller"] == "cti-test"
        inv, ok = call_up(ph, b)
        lab.uncontrol(b)  # heartbeats stop: new calls refused, the call in progress stays
        ph.send(ph.request("INVITE", b, user="ivr-2"), addr(b))
        assert ph.expect(final).status == 503
        assert pool(lab, b)["in_use"] == 1
        ph.send(bye_for(ph, b, inv, ok), addr(b))
        assert ph.expect(final).status == 200
        assert pool(lab, b)["in_use"] == 0
    finally:
        ph.close()


def test_ivr_session_published_with_account(labb):
    lab = labb
    b = lab.board()
    got = []
    cli = KcxpClient("127.0.0.1", lab.broker.port, name="test-sub")
    cli.subscribe("ivr.session", lambda _t, m: got.append(m))
    lab.lt.run(cli.start())
    wait_for(lambda: cli.connected, what="subscriber")
    time.sleep(0.1)
    ph = Phone()
    try:
        inv, ok = call_up(ph, b, user="ivr-55", headers=[("X-Fund-Account", "880123")])
        wait_for(lambda: got, what="ivr.session")
        assert got[0] == {"call_id": inv.call_id, "board": b.name, "ipc": "ipc-test", "user": "ivr-55",
                          "account": "880123"}
        ph.send(bye_for(ph, b, inv, ok), addr(b))
        ph.expect(final)
    finally:
        ph.close()
        lab.lt.run(cli.close())


def test_invite_retransmission_answered_from_transaction_and_200_until_ack(labb):
    lab = labb
    b = lab.board()
    lab.lt.call(lambda: setattr(b, "t1", 0.05))
    ph = Phone()
    try:
        inv = ph.request("INVITE", b)
        ph.send(inv, addr(b))
        first = ph.expect(final)
        ph.send(inv, addr(b))  # retransmission: same answer, no second call
        again = ph.expect(final)
        assert again.status == 200 and again.to_tag == first.to_tag
        time.sleep(0.4)  # no ACK yet: the 200 keeps coming (T1 doubling)
        retx = [m for m in ph.quiet(0.1) if m.status == 200]
        assert len(retx) >= 2
        s = lab.stats(b)
        assert s["calls"]["ivr"] == 1 and s["pools"]["any"]["in_use"] == 1
        assert s["sip"]["retrans_absorbed"] == 1
        ph.send(ack_for(ph, b, inv, first), addr(b))
        time.sleep(0.05)
        ph.quiet(0.05)
        assert ph.quiet(0.5) == []  # ACKed: silence
        bye = bye_for(ph, b, inv, first)
        ph.send(bye, addr(b))
        assert ph.expect(final).status == 200
        ph.send(bye, addr(b))  # retransmitted BYE: 200 again, not 481
        assert ph.expect(final).status == 200
        assert pool(lab, b)["in_use"] == 0
        ph.send(bye_for(ph, b, inv, first, cseq=3), addr(b))  # new BYE, dialog gone
        assert ph.expect(final).status == 481
    finally:
        ph.close()


def test_answered_call_without_ack_released_after_timer_and_counted(labb):
    lab = labb
    b = lab.board()
    lab.lt.call(lambda: (setattr(b, "t1", 0.05), setattr(b, "timer_b", 0.6)))
    ph = Phone()
    try:
        inv = ph.request("INVITE", b)
        ph.send(inv, addr(b))
        ph.expect(final)
        assert pool(lab, b)["in_use"] == 1
        bye = ph.expect(lambda m: m.method == "BYE", timeout=3, what="BYE after ACK timeout")
        assert bye.call_id == inv.call_id and bye.from_tag and bye.to_tag == "ph"
        ph.send(make_response(bye, 200), addr(b))
        s = lab.stats(b)
        assert s["sip"]["ack_timeouts"] == 1 and s["pools"]["any"]["in_use"] == 0
        ph.send(ph.request("BYE", b, call_id=inv.call_id, cseq=2, to_tag=bye.from_tag), addr(b))
        assert ph.expect(final).status == 481  # late BYE: nothing freed twice
        assert pool(lab, b)["in_use"] == 0 and lab.call_accounting(b) == []
    finally:
        ph.close()


def test_cancel_before_200_gets_200_and_487(labb):
    lab = labb
    b = lab.board(answer_delay_ms=800)
    ph = Phone()
    try:
        inv = ph.request("INVITE", b)
        ph.send(inv, addr(b))
        ring = ph.expect(lambda m: m.status == 180)
        assert ring.to_tag and pool(lab, b)["in_use"] == 1
        cancel = ph.request("CANCEL", b, call_id=inv.call_id, cseq=1, branch=inv.branch)
        ph.send(cancel, addr(b))
        got = {}
        for _ in range(2):
            m = ph.expect(final)
            got[m.cseq()[1]] = m.status
        assert got == {"CANCEL": 200, "INVITE": 487}
        ph.send(ph.request("ACK", b, call_id=inv.call_id, to_tag=ring.to_tag, branch=inv.branch), addr(b))
        time.sleep(1.0)  # past the answer delay: nothing may be answered
        assert [m for m in ph.quiet(0.2) if m.status == 200] == []
        s = lab.stats(b)
        assert s["pools"]["any"]["in_use"] == 0 and s["sip"]["cancelled"] == 1 and s["calls"]["ivr"] == 0
        ph.send(cancel, addr(b))  # retransmitted CANCEL: answered from its transaction
        assert ph.expect(final).status == 200
        ph.send(ph.request("CANCEL", b, call_id="nope", branch="z9hG4bKnope"), addr(b))
        assert ph.expect(final).status == 481
    finally:
        ph.close()


def test_refusals_direction_unknown_user_and_non2xx_retransmitted_until_ack(labb):
    lab = labb
    b = lab.board()
    lab.lt.call(lambda: setattr(b, "t1", 0.05))
    ph = Phone()
    try:
        inv = ph.request("INVITE", b, user="out-3")
        ph.send(inv, addr(b))
        r = ph.expect(final)
        assert r.status == 403
        time.sleep(0.3)
        assert len([m for m in ph.quiet(0.05) if m.status == 403]) >= 2  # Timer G
        ph.send(ack_for(ph, b, inv, r), addr(b))
        time.sleep(0.1)
        ph.quiet(0.05)
        assert ph.quiet(0.4) == []
        ph.send(ph.request("INVITE", b, user="bogus"), addr(b))
        assert ph.expect(final).status == 404
        s = lab.stats(b)
        assert s["refused"]["direction"] == 1 and s["refused"]["not_found"] == 1
        assert s["pools"]["any"]["in_use"] == 0
    finally:
        ph.close()


def test_options_malformed_line_and_ctl(labb):
    lab = labb
    b = lab.board()
    ph = Phone()
    try:
        ph.send(ph.request("OPTIONS", b), addr(b))
        assert ph.expect(final).status == 200
        ph.send(b"\x00\xffgarbage", addr(b))
        bad = ph.request("INVITE", b).to_bytes().replace(b"Content-Length: 0", b"Content-Length: 99")
        ph.send(bad, addr(b))
        r = ph.expect(final)
        assert r.status == 400
        ph.send(b"\r\n\r\n", addr(b))  # keep-alive: neither answered nor counted
        assert ph.quiet(0.2) == []
        assert lab.stats(b)["malformed"] == 2

        assert ctl(b, {"op": "line", "state": "down"}) == (200, {"ok": True, "line": "down"})
        ph.send(ph.request("OPTIONS", b), addr(b))
        ph.send(ph.request("INVITE", b), addr(b))
        assert ph.quiet(0.3) == []
        status, s = ctl(b)
        assert status == 200 and s["line"] == "down" and s["kind"] == "voice_board"
        assert ctl(b, {"op": "line", "state": "up"})[0] == 200
        ph.send(ph.request("OPTIONS", b), addr(b))
        assert ph.expect(final).status == 200

        assert ctl(b, {"op": "nope"})[0] == 400
        assert ctl(b, {"op": "line", "state": "sideways"})[0] == 400
        assert ctl(b, {"op": "dial", "count": -1})[0] == 400
        status, s = ctl(b)
        for k in ("name", "kind", "pid", "started", "ts", "controlled", "controller", "line", "pools",
                  "calls", "refused", "active", "malformed"):
            assert k in s
        for k in ("ivr", "agent", "agent_legs_answered", "agent_legs_failed", "outbound_answered",
                  "outbound_failed", "outbound_no_channel"):
            assert s["calls"][k] == 0
        assert set(s["refused"]) >= {"full", "no_controller", "direction"}
    finally:
        ph.close()


def test_line_down_drops_calls_and_frees_channels(labb):
    lab = labb
    b = lab.board()
    ph = Phone()
    try:
        inv, ok = call_up(ph, b)
        call_up(ph, b, user="ivr-2")
        assert pool(lab, b)["in_use"] == 2
        ctl(b, {"op": "line", "state": "down"})
        s = lab.stats(b)
        assert s["pools"]["any"]["in_use"] == 0 and s["sip"]["calls_lost_line_down"] == 2
        ctl(b, {"op": "line", "state": "up"})
        ph.send(bye_for(ph, b, inv, ok), addr(b))
        assert ph.expect(final).status == 481
        assert pool(lab, b)["in_use"] == 0 and lab.call_accounting(b) == []
    finally:
        ph.close()


def test_reset_peaks(labb):
    lab = labb
    b = lab.board()
    ph = Phone()
    try:
        calls = [call_up(ph, b, user=f"ivr-{i}") for i in range(3)]
        inv, ok = calls[0]
        ph.send(bye_for(ph, b, inv, ok), addr(b))
        ph.expect(final)
        assert pool(lab, b) == {"size": 30, "in_use": 2, "peak": 3}
        assert ctl(b, {"op": "reset_peaks"})[0] == 200
        assert pool(lab, b) == {"size": 30, "in_use": 2, "peak": 2}
    finally:
        ph.close()


def _seat_setup(lab):
    seat = Phone()
    b = lab.board(pbx=f"127.0.0.1:{seat.port}", seat_uri=f"sip:seat@127.0.0.1:{seat.port}")
    return seat, b


def test_agent_leg_refused_ends_caller_and_frees_both(labb):
    lab = labb
    seat, b = _seat_setup(lab)
    ph = Phone()
    try:
        inv, ok = call_up(ph, b, user="agent-1")
        leg = seat.expect(lambda m: m.method == "INVITE")
        assert leg.get("X-Agent-For") == inv.call_id and leg.uri == f"sip:seat@127.0.0.1:{seat.port}"
        seat.send(make_response(leg, 486, to_tag="seat1"), addr(b))
        ack = seat.expect(lambda m: m.method == "ACK")
        assert ack.branch == leg.branch and ack.to_tag == "seat1"
        bye = ph.expect(lambda m: m.method == "BYE", what="BYE to caller")
        ph.send(make_response(bye, 200), addr(b))
        s = lab.stats(b)
        assert s["calls"]["agent_legs_failed"] == 1 and s["pools"]["any"]["in_use"] == 0
        seat.send(make_response(leg, 486, to_tag="seat1"), addr(b))  # retransmitted final: re-ACKed
        assert seat.expect(lambda m: m.method == "ACK").branch == leg.branch
        assert lab.call_accounting(b) == []
    finally:
        ph.close()
        seat.close()


def test_caller_hangs_up_while_agent_rings_board_cancels(labb):
    lab = labb
    seat, b = _seat_setup(lab)
    ph = Phone()
    try:
        inv, ok = call_up(ph, b, user="agent-1")
        leg = seat.expect(lambda m: m.method == "INVITE")
        seat.send(make_response(leg, 180, to_tag="seat2"), addr(b))
        time.sleep(0.05)
        assert pool(lab, b)["in_use"] == 2
        ph.send(bye_for(ph, b, inv, ok), addr(b))
        assert ph.expect(final).status == 200
        cancel = seat.expect(lambda m: m.method == "CANCEL")
        assert cancel.branch == leg.branch and cancel.cseq() == (1, "CANCEL")
        seat.send(make_response(cancel, 200), addr(b))
        seat.send(make_response(leg, 487, to_tag="seat2"), addr(b))
        assert seat.expect(lambda m: m.method == "ACK").branch == leg.branch
        s = lab.stats(b)
        assert s["pools"]["any"]["in_use"] == 0 and s["calls"]["agent_legs_abandoned"] == 1
        assert s["calls"]["agent_legs_failed"] == 0 and lab.call_accounting(b) == []
    finally:
        ph.close()
        seat.close()


def test_agent_answers_after_caller_left_gets_ack_and_bye(labb):
    lab = labb
    seat, b = _seat_setup(lab)
    ph = Phone()
    try:
        inv, ok = call_up(ph, b, user="agent-1")
        leg = seat.expect(lambda m: m.method == "INVITE")
        ph.send(bye_for(ph, b, inv, ok), addr(b))  # before any answer from the seat
        assert ph.expect(final).status == 200
        assert pool(lab, b)["in_use"] == 0
        seat.send(make_response(leg, 200, to_tag="seat3", headers=[("Contact", seat.uri)]), addr(b))
        ack = seat.expect(lambda m: m.method == "ACK")
        bye = seat.expect(lambda m: m.method == "BYE")
        assert ack.to_tag == bye.to_tag == "seat3" and bye.call_id == leg.call_id
        seat.send(make_response(bye, 200), addr(b))
        assert pool(lab, b)["in_use"] == 0 and lab.call_accounting(b) == []
    finally:
        ph.close()
        seat.close()


def test_reinvite_refreshes_and_needs_ack(labb):
    lab = labb
    b = lab.board()
    ph = Phone()
    try:
        inv, ok = call_up(ph, b)
        re = ph.request("INVITE", b, call_id=inv.call_id, cseq=2, to_tag=ok.to_tag, body=b"v=0\r\n",
                        content_type="application/sdp")
        ph.send(re, addr(b))
        r = ph.expect(final)
        assert r.status == 200 and r.to_tag == ok.to_tag and b"m=audio" in r.body
        ph.send(ph.request("ACK", b, call_id=inv.call_id, cseq=2, to_tag=ok.to_tag), addr(b))
        ph.send(ph.request("INVITE", b, call_id="other", to_tag="zz"), addr(b))
        assert ph.expect(final).status == 481  # re-INVITE outside any dialog
        assert pool(lab, b)["in_use"] == 1 and lab.stats(b)["calls"]["ivr"] == 1
        ph.send(bye_for(ph, b, inv, ok, cseq=3), addr(b))
        assert ph.expect(final).status == 200
        assert pool(lab, b)["in_use"] == 0
    finally:
        ph.close()


def test_agent_leg_unanswered_times_out_with_retransmissions(labb):
    """The seat never answers: Timer A retransmits, Timer B fails the leg; the board's BYE to a
    silent caller is retransmitted (Timer E); both channels come back once."""
    lab = labb
    seat = Phone()
    b = lab.board(pbx=f"localhost:{seat.port}", seat_uri="sip:seat@localhost")  # a name: resolved
    lab.lt.call(lambda: (setattr(b, "t1", 0.05), setattr(b, "timer_b", 0.8)))
    ph = Phone()
    try:
        inv, ok = call_up(ph, b, user="agent-9")
        first = seat.expect(lambda m: m.method == "INVITE")
        again = seat.expect(lambda m: m.method == "INVITE")
        assert again.branch == first.branch and again.uri == "sip:seat@localhost"
        bye = ph.expect(lambda m: m.method == "BYE", timeout=3)
        bye2 = ph.expect(lambda m: m.method == "BYE", timeout=2)  # not answered: retransmitted
        assert bye2.branch == bye.branch
        ph.send(make_response(bye, 200), addr(b))
        s = lab.stats(b)
        assert s["calls"]["agent_legs_failed"] == 1 and s["pools"]["any"]["in_use"] == 0
        assert s["sip"]["retransmissions"] >= 2
        time.sleep(0.3)
        assert lab.call_accounting(b) == []
    finally:
        ph.close()
        seat.close()


def test_outbound_failed_and_answered_then_board_hangs_up(labb):
    lab = labb
    carrier = Phone()
    b = lab.board(cabled=60, pools={"inbound": 30, "outbound": 30}, pbx=f"127.0.0.1:{carrier.port}")
    try:
        assert ctl(b, {"op": "dial", "count": 2, "to_user": "out", "hold_ms": 200, "rate": 50})[0] == 200
        one = carrier.expect(lambda m: m.method == "INVITE")
        assert one.uri == f"sip:out-1@127.0.0.1:{carrier.port}"
        carrier.send(make_response(one, 486, to_tag="busy"), addr(b))
        assert carrier.expect(lambda m: m.method == "ACK").branch == one.branch
        two = carrier.expect(lambda m: m.method == "INVITE" and m.uri.startswith("sip:out-2@"))
        carrier.send(make_response(two, 200, to_tag="up", headers=[("Contact", carrier.uri)]), addr(b))
        ack = carrier.expect(lambda m: m.method == "ACK")
        assert ack.to_tag == "up" and ack.branch != two.branch
        assert pool(lab, b, "outbound")["in_use"] == 1
        carrier.send(make_response(two, 200, to_tag="up", headers=[("Contact", carrier.uri)]), addr(b))
        assert carrier.expect(lambda m: m.method == "ACK").to_tag == "up"  # 2xx retransmission re-ACKed
        bye = carrier.expect(lambda m: m.method == "BYE", timeout=2)
        assert bye.to_tag == "up" and bye.uri == carrier.uri
        carrier.send(make_response(bye, 200), addr(b))
        s = lab.stats(b)
        assert s["calls"]["outbound_failed"] == 1 and s["calls"]["outbound_answered"] == 1
        assert s["pools"]["outbound"] == {"size": 30, "in_use": 0, "peak": 1}
        ctl(b, {"op": "line", "state": "down"})
        ctl(b, {"op": "dial", "count": 1, "rate": 50})
        wait_for(lambda: lab.stats(b)["calls"]["outbound_failed"] == 2, what="dial while line down fails")
    finally:
        carrier.close()


# --------------------------------------------------------------------------- fuzz the running board

def _sample_invite(b) -> bytes:
    return make_request("INVITE", f"sip:ivr-1@127.0.0.1:{b.sip_port}", via_host="127.0.0.1", via_port=9,
                        from_uri="sip:f@127.0.0.1", from_tag="fz", to_uri="sip:ivr-1@127.0.0.1",
                        call_id="fuzz", body=b"v=0\r\n", content_type="application/sdp").to_bytes()


@pytest.fixture(scope="module")
def fuzz_board(lab):
    b = lab.board(name="fuzz0")
    sink = Phone()  # answers to fuzz traffic land here and are ignored
    yield b, sink
    sink.close()
    lab.lt.run(b.close())
    lab.boards.remove(b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.one_of(
    st.binary(max_size=400),
    st.tuples(st.integers(0, 400), st.binary(max_size=6), st.integers(0, 400)),
    st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "FOO"]),
))
def test_fuzz_running_board_handler(fuzz_board, lab, data):
    b, sink = fuzz_board
    inv = _sample_invite(b)
    if isinstance(data, tuple):
        cut, junk, at = data
        blobs = [inv[:cut], inv[:at] + junk + inv[at:]]
    elif isinstance(data, str):
        blobs = [inv.replace(b"INVITE", data.encode())]
    else:
        blobs = [data]
    for blob in blobs:
        lab.lt.call(b.datagram_received, blob, ("127.0.0.1", sink.port))
    assert lab.call_accounting(b) == []


def test_fuzzed_board_still_answers(fuzz_board, lab):
    b, sink = fuzz_board
    for blob in (b"\xff" * 300, _sample_invite(b)[:57], b"SIP/2.0 200 OK\r\n\r\n"):
        lab.lt.call(b.datagram_received, blob, ("127.0.0.1", sink.port))
    ph = Phone()
    try:
        ph.send(ph.request("OPTIONS", b), addr(b))
        assert ph.expect(final).status == 200
        s = lab.stats(b)
        assert s["sip"]["internal_errors"] == 0 and s["malformed"] >= 1
    finally:
        ph.close()


# --------------------------------------------------------------------------- accounting (simulated net)

class SimBoard:
    """A VoiceBoard driven synchronously: datagrams in, captured datagrams out, timers fired by hand."""

    CALLER = ("127.0.0.1", 40000)
    PBX = ("127.0.0.1", 40001)

    def __init__(self, answer_delay_ms: int = 0) -> None:
        self.loop = asyncio.new_event_loop()
        self.b = VoiceBoard({**BASE, "cabled": 30, "channels": 30, "pbx": "127.0.0.1:40001",
                             "seat_uri": "sip:seat@127.0.0.1:40001", "answer_delay_ms": answer_delay_ms})
        self.b.loop = self.loop
        self.b.sip_port = 5061
        self.b.advertise = "127.0.0.1"
        self.b._last_control = time.monotonic() + 3600  # controlled (control is tested over KCXP above)
        self.out: list[tuple] = []
        self.b._send = lambda data, a: self.out.append((parse(data), a))

    def feed(self, msg, src=CALLER) -> list:
        self.out.clear()
        self.b.datagram_received(msg if isinstance(msg, bytes) else msg.to_bytes(), src)
        return [m for m, _a in self.out]

    def close(self) -> None:
        self.loop.close()


class SimCall:
    def __init__(self, sim: SimBoard, i: int, agent: bool) -> None:
        self.sim, self.i = sim, i
        self.user = f"agent-{i}" if agent else f"ivr-{i}"
        self.inv = make_request("INVITE", f"sip:{self.user}@127.0.0.1:5061", via_host="127.0.0.1",
                                via_port=40000, from_uri="sip:c@127.0.0.1", from_tag=f"c{i}",
                                to_uri=f"sip:{self.user}@127.0.0.1", call_id=f"call-{i}",
                                contact="sip:c@127.0.0.1:40000", body=b"v=0\r\n",
                                content_type="application/sdp")
        self.to_tag = None
        self.cseq = 1
        self.seat_inv = None
        self.seat_tag = f"s{i}"

    def _req(self, method, branch=None):
        if method not in ("ACK", "CANCEL"):
            self.cseq += 1
        return make_request(method, self.inv.uri, via_host="127.0.0.1", via_port=40000,
                            from_uri="sip:c@127.0.0.1", from_tag=f"c{self.i}", to_uri=self.inv.uri,
                            to_tag=self.to_tag if method != "CANCEL" else None, call_id=self.inv.call_id,
                            cseq=1 if method in ("ACK", "CANCEL") else self.cseq, branch=branch)

    def _note(self, msgs):
        for m in msgs:
            if (m.status is not None and m.call_id == self.inv.call_id and m.to_tag
                    and m.cseq()[1] == "INVITE"):
                self.to_tag = m.to_tag
            if m.method == "INVITE" and m.get("X-Agent-For") == self.inv.call_id:
                self.seat_inv = m

    def do(self, op: str) -> None:
        sim = self.sim
        if op == "invite":
            self._note(sim.feed(self.inv))
        elif op == "ack" and self.to_tag:
            sim.feed(self._req("ACK"))
        elif op == "bye" and self.to_tag:
            sim.feed(self._req("BYE"))
        elif op == "cancel":
            self._note(sim.feed(self._req("CANCEL", branch=self.inv.branch)))
        elif op == "ack_timeout":
            leg = sim.b.dialogs.get((self.inv.call_id, self.to_tag or ""))
            if leg is not None and leg.state == "answered":
                sim.b._retx_200(leg, sim.b.t1, sim.b.timer_b)
        elif op == "answer_now":
            for leg in list(sim.b.dialogs.values()):
                if leg.call_id == self.inv.call_id and leg.state == "ringing":
                    sim.b._answer(leg)
                    self._note([m for m, _a in sim.out])
        elif self.seat_inv is not None and op.startswith("seat_"):
            code = {"seat_180": 180, "seat_200": 200, "seat_486": 486, "seat_487": 487}.get(op)
            if code:
                r = make_response(self.seat_inv, code, to_tag=self.seat_tag,
                                  headers=[("Contact", "<sip:seat@127.0.0.1:40001>")])
                self._note(sim.feed(r, SimBoard.PBX))
            elif op == "seat_bye":
                bye = make_request("BYE", "sip:b@127.0.0.1:5061", via_host="127.0.0.1", via_port=40001,
                                   from_uri="sip:seat@x", from_tag=self.seat_tag, to_uri="sip:b@x",
                                   to_tag=self.seat_inv.from_tag, call_id=self.seat_inv.call_id, cseq=5)
                sim.feed(bye, SimBoard.PBX)
            elif op == "seat_timeout":
                tx = sim.b.ctx.get(f"{self.seat_inv.branch} INVITE")
                if tx is not None and not tx.final:
                    sim.b._client_timeout(tx)

    def hang_up_everything(self) -> None:
        self.do("ack")
        self.do("bye")
        self.do("seat_bye")
        self.do("cancel")


OPS = ["invite", "ack", "bye", "cancel", "ack_timeout", "answer_now",
       "seat_180", "seat_200", "seat_486", "seat_487", "seat_bye", "seat_timeout"]


@settings(max_examples=400, deadline=None)
@given(agents=st.lists(st.booleans(), min_size=1, max_size=4), delay=st.booleans(),
       ops=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(OPS)), max_size=40))
def test_channels_freed_exactly_once_whatever_the_order(agents, delay, ops):
    sim = SimBoard(answer_delay_ms=500 if delay else 0)
    try:
        calls = [SimCall(sim, i, a) for i, a in enumerate(agents)]
        pool_ = sim.b.pools["any"]
        for c in calls:
            c.do("invite")
        for idx, op in ops:
            calls[idx % len(calls)].do(op)
            assert sim.b.accounting() == [], (idx, op)
            assert 0 <= pool_.in_use <= pool_.size
        # Whatever happened, every call can be ended and then nothing is held.
        for c in calls:
            c.do("answer_now")
            c.hang_up_everything()
        for c in calls:
            c.do("seat_timeout")
            c.do("ack_timeout")
        assert sim.b.accounting() == []
        assert pool_.in_use == 0, [(k, v.kind, v.state) for k, v in sim.b.dialogs.items()]
    finally:
        sim.close()
