"""ccdrill.standins.sip: parser/serializer, helpers, and the parser's totality on garbage."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccdrill.standins import sip
from ccdrill.standins.sip import SipMessage, SipParseError, make_request, make_response, parse

INVITE = (
    b"INVITE sip:ivr-1@10.0.0.2:5061 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-proxy;rport\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-uac\r\n"
    b"Max-Forwards: 69\r\n"
    b'From: "Caller" <sip:caller@10.0.0.1>;tag=abc\r\n'
    b"To: <sip:ivr-1@10.0.0.2>\r\n"
    b"Call-ID: 42@10.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Record-Route: <sip:10.0.0.9;lr>\r\n"
    b"Contact: <sip:caller@10.0.0.1:5060>\r\n"
    b"X-Fund-Account: 880001\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 10\r\n"
    b"\r\n"
    b"v=0\r\ns=-\r\n"
)


def test_parse_request_headers_and_body():
    m = parse(INVITE)
    assert m.is_request and m.method == "INVITE" and m.uri == "sip:ivr-1@10.0.0.2:5061"
    assert m.get_all("Via") == ["SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-proxy;rport",
                                "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-uac"]
    assert m.branch == "z9hG4bK-proxy"
    assert m.from_tag == "abc" and m.to_tag is None
    assert m.call_id == "42@10.0.0.1"
    assert m.cseq() == (1, "INVITE")
    assert m.get("x-fund-account") == "880001"
    assert m.body == b"v=0\r\ns=-\r\n"


def test_compact_forms_and_multiple_via_on_one_line():
    raw = (b"BYE sip:b@h SIP/2.0\r\n"
           b"v: SIP/2.0/UDP a:1;branch=z9hG4bK1, SIP/2.0/UDP b:2;branch=z9hG4bK2\r\n"
           b"f: <sip:a@h>;tag=1\r\nt: <sip:b@h>;tag=2\r\ni: cid\r\nCSeq: 2 BYE\r\nl: 0\r\n\r\n")
    m = parse(raw)
    assert [h[0] for h in m.headers][:2] == ["Via", "Via"]
    assert m.get_all("via") == ["SIP/2.0/UDP a:1;branch=z9hG4bK1", "SIP/2.0/UDP b:2;branch=z9hG4bK2"]
    assert m.get("Call-ID") == "cid" and m.get("i") == "cid"
    assert m.to_tag == "2"
    assert m.get("Content-Length") == "0"


def test_response_parse_and_folding_and_bare_lf():
    raw = (b"SIP/2.0 503 Service Unavailable\n"
           b"Via: SIP/2.0/UDP a:1;branch=z9hG4bKx\nFrom: <sip:a@h>;tag=1\nTo: <sip:b@h>;tag=2\n"
           b"Call-ID: c\nCSeq: 1 INVITE\nWarning: 399 board0\n \"all channels busy\"\n\n")
    m = parse(raw)
    assert not m.is_request and m.status == 503 and m.reason == "Service Unavailable"
    assert m.get("Warning") == '399 board0 "all channels busy"'


def test_content_length_truncates_and_short_body_is_error_with_partial():
    m = parse(INVITE + b"trailing garbage")
    assert m.body == b"v=0\r\ns=-\r\n"
    with pytest.raises(SipParseError) as e:
        parse(INVITE[:-3])
    assert e.value.partial is not None and sip.can_answer(e.value.partial)
    # Without Content-Length on UDP, the body is the rest of the datagram.
    m = parse(INVITE.replace(b"Content-Length: 10\r\n", b""))
    assert m.body == b"v=0\r\ns=-\r\n"


@pytest.mark.parametrize("raw", [
    b"", b"\r\n\r\n", b"hello", b"INVITE sip:a@b SIP/2.0\r\n\r\n",
    b"INVITE sip:a@b SIP/3.0\r\nVia: x\r\n\r\n", b"SIP/2.0 99 Odd\r\n\r\n",
    INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"),
    INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),
    INVITE.replace(b"Content-Length: 10", b"Content-Length: -1"),
    INVITE.replace(b"Call-ID: 42@10.0.0.1\r\n", b""),
    INVITE.replace(b"Max-Forwards: 69", b"Max Forwards 69"),
    INVITE.replace(b"Content-Length: 10\r\n", b"Content-Length: 10\r\nContent-Length: 11\r\n"),
])
def test_invalid_messages_raise_sipparseerror(raw):
    with pytest.raises(SipParseError):
        parse(raw)


def test_serialize_round_trip_and_content_length_is_recomputed():
    m = parse(INVITE)
    m.body = b"longer body"
    out = m.to_bytes()
    assert b"Content-Length: 11\r\n" in out and out.count(b"Content-Length") == 1
    again = parse(out)
    assert again.headers[:-1] == m.headers[:-1] and again.body == b"longer body"
    assert bytes(again) == out


def test_make_response_copies_dialog_headers_and_adds_to_tag():
    req = parse(INVITE)
    r = make_response(req, 200, to_tag="t1", headers=[("Contact", "<sip:b@h>")])
    assert r.status == 200 and r.reason == "OK"
    assert r.get_all("Via") == req.get_all("Via")
    assert r.get("From") == req.get("From") and r.get("Call-ID") == req.call_id
    assert r.get("CSeq") == "1 INVITE" and r.to_tag == "t1"
    assert r.get_all("Record-Route") == ["<sip:10.0.0.9;lr>"]
    assert make_response(req, 100, to_tag="t1").to_tag is None  # no tag on 100 Trying
    assert make_response(req, 503, to_tag="t2").get_all("Record-Route") == []
    # An existing To-tag is kept, never doubled.
    bye = parse(INVITE.replace(b"To: <sip:ivr-1@10.0.0.2>", b"To: <sip:ivr-1@10.0.0.2>;tag=mine"))
    assert make_response(bye, 200, to_tag="other").get("To") == "<sip:ivr-1@10.0.0.2>;tag=mine"
    parse(r.to_bytes())


def test_make_request_new_branch_call_id_cseq():
    a = make_request("INVITE", "sip:seat@pbx", via_host="10.0.0.2", via_port=5061, from_uri="sip:b@10.0.0.2",
                     from_tag="ft", to_uri="sip:seat@pbx", cseq=7, headers=[("X-Agent-For", "42")],
                     body=b"v=0\r\n", content_type="application/sdp")
    b = make_request("INVITE", "sip:seat@pbx", via_host="10.0.0.2", via_port=5061, from_uri="sip:b@10.0.0.2",
                     from_tag="ft", to_uri="sip:seat@pbx")
    pa = parse(a.to_bytes())
    assert pa.branch.startswith("z9hG4bK") and pa.branch != b.branch
    assert pa.call_id and pa.call_id != b.call_id
    assert pa.cseq() == (7, "INVITE") and pa.get("X-Agent-For") == "42"
    assert pa.from_tag == "ft" and pa.body == b"v=0\r\n"


def test_retransmission_timers():
    assert sip.T1 == 0.5 and sip.T2 == 4.0 and sip.TIMER_B == 32.0
    iv = list(sip.retransmit_intervals())
    assert iv[:5] == [0.5, 1.0, 2.0, 4.0, 4.0] and max(iv) == 4.0
    assert sum(iv) < 32.0


def test_uri_helpers():
    assert sip.uri_user("sip:ivr-1@h:5060;transport=udp") == "ivr-1"
    assert sip.uri_user("sip:h") == ""
    assert sip.uri_hostport("sip:u@h:5080;lr") == ("h", 5080)
    assert sip.uri_hostport("sip:[::1]:5070") == ("::1", 5070)
    assert sip.header_uri('"A" <sip:a@h;x=1>;tag=9') == "sip:a@h;x=1"
    assert sip.param('"A" <sip:a@h;tag=no>;tag=9', "tag") == "9"
    assert sip.param("SIP/2.0/UDP h:1;rport;branch=z9hG4bKq", "branch") == "z9hG4bKq"


# -- totality: garbage never escapes as another exception

def _total(data: bytes) -> None:
    try:
        m = parse(data)
    except SipParseError:
        return
    assert isinstance(m, SipMessage)
    parse(m.to_bytes())  # what we parsed, we can write and read back


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=600))
def test_parser_total_on_random_bytes(data):
    _total(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(INVITE)), st.binary(max_size=8),
       st.integers(min_value=0, max_value=len(INVITE)))
def test_parser_total_on_truncated_and_spliced(cut, junk, at):
    _total(INVITE[:cut])
    _total(INVITE[:at] + junk + INVITE[at:])


_hval = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters=",;<>\"\\"),
                min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["INVITE", "BYE", "OPTIONS", "CANCEL"]), _hval, _hval,
       st.lists(st.tuples(st.sampled_from(["X-A", "Subject", "User-Agent"]), _hval), max_size=4),
       st.binary(max_size=50))
def test_round_trip_property(method, user, cid, extra, body):
    m = make_request(method, f"sip:{user}@h", via_host="127.0.0.1", via_port=5060, from_uri="sip:a@h",
                     from_tag="t", to_uri=f"sip:{user}@h", call_id=cid, headers=extra, body=body)
    p = parse(m.to_bytes())
    assert p.method == method and p.call_id == cid and p.body == body
    assert [h for h in p.headers if h[0] != "Content-Length"] == m.headers


def test_header_edits_keep_lookups_right():
    m = parse(INVITE)
    m.set("x-fund-account", "1")
    m.add("v", "SIP/2.0/UDP c:3;branch=z9hG4bK3")
    m.remove("Record-Route")
    assert m.get("X-Fund-Account") == "1" and len(m.get_all("x-FUND-account")) == 1
    assert m.get_all("Via")[-1] == "SIP/2.0/UDP c:3;branch=z9hG4bK3"
    assert m.get("Record-Route") is None
    assert parse(m.to_bytes()).get("x-fund-account") == "1"
