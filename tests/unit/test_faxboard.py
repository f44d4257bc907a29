"""Fax board stand-in over real UDP on 127.0.0.1 (raw sockets and SIPp), with KCXP control."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the harness lives in test_voiceboard

from test_voiceboard import (  # noqa: E402
    SRC,
    Phone,
    _no_stray_sipp,  # noqa: F401  (autouse: SIPp killed after each test)
    addr,
    ctl,
    final,
    lab,  # noqa: F401  (module-scoped fixture)
    needs_sipp,
)
from tests.support.sipp import (  # noqa: E402
    T38,
    Sipp,
    ack_refusal,
    invite,
    ok_calls,
    recv,
    scenario,
    uac_call,
)
from tests.support.wait import wait_for  # noqa: E402

from ccdrill.standins.common import ConfigError  # noqa: E402
from ccdrill.standins.faxboard import FaxBoard, offers_t38  # noqa: E402
from ccdrill.standins.sip import make_request, parse  # noqa: E402

T38_SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           b"m=image 7000 udptl t38\r\na=T38FaxVersion:0\r\n")
AUDIO_SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             b"m=audio 7000 RTP/AVP 8\r\n")

BASE = {"name": "fax0", "ipc": "i", "sip_port": 5070, "ctl_port": 9070, "kcxp": "127.0.0.1:7100"}


@pytest.fixture
def faxlab(lab):  # noqa: F811
    boards = []

    def make(controlled=True, **over):
        cfg = {**BASE, "name": f"fax{len(boards)}", "listen": "127.0.0.1", "sip_port": 0, "ctl_port": 0,
               "kcxp": lab.kcxp, "control_timeout_ms": 300, **over}
        b = lab.lt.call(FaxBoard, cfg)
        lab.lt.run(b.start())
        boards.append(b)
        if controlled:
            lab.control(b)
        return b

    yield lab, make
    for b in boards:
        lab.lt.run(b.close())
        if b.name in lab.cti.boards:
            lab.cti.boards.remove(b.name)


def fax_invite(ph: Phone, b, sdp=T38_SDP, user="fax-1"):
    return make_request("INVITE", f"sip:{user}@127.0.0.1:{b.sip_port}", via_host="127.0.0.1",
                        via_port=ph.port, from_uri=ph.uri, from_tag="fx", to_uri=f"sip:{user}@127.0.0.1",
                        contact=ph.uri, body=sdp, content_type="application/sdp")


def test_offers_t38():
    def m(body, ctype="application/sdp"):
        return parse(make_request("INVITE", "sip:f@h", via_host="h", via_port=1, from_uri="sip:a@h",
                                  from_tag="t", to_uri="sip:f@h", body=body, content_type=ctype).to_bytes())
    assert offers_t38(m(T38_SDP))
    assert offers_t38(m(T38_SDP.replace(b"m=image 7000 udptl t38", b"M=IMAGE 0 UDPTL T38")))
    assert not offers_t38(m(AUDIO_SDP))
    assert not offers_t38(m(T38_SDP, ctype="text/plain"))
    assert not offers_t38(m(b"m=image 7000 tcp t38\r\n"))
    assert not offers_t38(m(b""))


@pytest.mark.parametrize("over,key", [
    ({"ports": 0}, "ports"), ({"ports": "4"}, "ports"), ({"kcxp": "nope"}, "kcxp"),
    ({"control_timeout_ms": 0}, "control_timeout_ms")])
def test_config_errors(over, key):
    with pytest.raises(ConfigError) as e:
        FaxBoard({**BASE, **over})
    assert repr(key) in str(e.value)


def test_process_exits_2_on_missing_key(tmp_path):
    cfg = tmp_path / "fax.json"
    cfg.write_text(json.dumps({k: v for k, v in BASE.items() if k != "kcxp"}))
    r = subprocess.run([sys.executable, "-m", "ccdrill.standins.faxboard", "--config", str(cfg)],
                       env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and str(cfg) in r.stderr and "'kcxp'" in r.stderr


def test_fax_answer_488_503_and_stats(faxlab):
    lb, make = faxlab
    b = make(ports=1)
    ph = Phone()
    try:
        ph.send(fax_invite(ph, b, sdp=AUDIO_SDP), addr(b))
        r = ph.expect(final)
        assert r.status == 488 and "t38" in r.get("Warning")
        inv = fax_invite(ph, b)
        ph.send(inv, addr(b))
        ok = ph.expect(final)
        assert ok.status == 200 and b"m=image 10000 udptl t38" in ok.body
        ph.send(make_request("ACK", inv.uri, via_host="127.0.0.1", via_port=ph.port, from_uri=ph.uri,
                             from_tag="fx", to_uri=inv.uri, to_tag=ok.to_tag, call_id=inv.call_id), addr(b))
        ph.send(fax_invite(ph, b, user="fax-2"), addr(b))
        busy = ph.expect(final)
        assert busy.status == 503 and "busy" in busy.get("Warning")
        s = lb.lt.call(b.stats)
        assert s["kind"] == "fax_board" and s["ports"] == 1 and s["in_use"] == 1 and s["faxes"] == 1
        assert s["refused"] == {"busy": 1, "no_controller": 0, "not_t38": 1}
        ph.send(make_request("BYE", inv.uri, via_host="127.0.0.1", via_port=ph.port, from_uri=ph.uri,
                             from_tag="fx", to_uri=inv.uri, to_tag=ok.to_tag, call_id=inv.call_id, cseq=2),
                addr(b))
        assert ph.expect(final).status == 200
        status, s = ctl(b)
        assert status == 200 and s["in_use"] == 0 and s["peak"] == 1
        assert lb.lt.call(b.accounting) == []
    finally:
        ph.close()


def test_fax_no_controller(faxlab):
    lb, make = faxlab
    b = make(controlled=False)
    ph = Phone()
    try:
        ph.send(fax_invite(ph, b), addr(b))
        r = ph.expect(final)
        assert r.status == 503 and f'399 {b.name} "no controller"' == r.get("Warning")
        lb.control(b)
        ph.send(fax_invite(ph, b), addr(b))
        assert ph.expect(final).status == 200
    finally:
        ph.close()


UAC_FAX = uac_call("fax", media=T38, ringing=False)
UAC_FAX_BUSY = scenario("fax", invite(media=T38), recv(response=100, optional=True), recv(response=503),
                        ack_refusal())


@needs_sipp
def test_sipp_four_faxes_answered_fifth_refused(faxlab, tmp_path):
    lb, make = faxlab
    b = make()
    holders = Sipp(tmp_path, UAC_FAX, ["-s", "fax", "-r", "50", "-d", "1500", f"127.0.0.1:{b.sip_port}"], m=4)
    wait_for(lambda: lb.lt.call(b.stats)["in_use"] == 4, timeout=10, what="4 fax ports in use")
    extra = Sipp(tmp_path, UAC_FAX_BUSY, ["-s", "fax", f"127.0.0.1:{b.sip_port}"], m=1)
    for p, n in ((extra, 1), (holders, 4)):
        rc, c = p.result()
        assert rc == 0 and ok_calls(c) == (n, 0), p.stderr
    s = lb.lt.call(b.stats)
    assert s["faxes"] == 4 and s["refused"]["busy"] == 1 and s["peak"] == 4 and s["in_use"] == 0
