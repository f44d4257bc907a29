"""Small SIP library for the stand-ins (stdlib only, UDP only).

Parsing is strict about structure but total: `parse()` of any bytes returns a `SipMessage`
or raises `SipParseError`, never anything else. When the start line and the headers could
be read but the message is still invalid (bad CSeq, short body...), the error carries the
partial message in `.partial`, so that a UAS can still answer 400.

Header names are stored in their canonical long form (compact forms expanded); several Via
values in one header line are split into one Via entry each, in order.
"""

from __future__ import annotations

import random
import socket
import time

T1 = 0.5  # RFC 3261 17.1.1.1: RTT estimate
T2 = 4.0  # cap for non-INVITE / 2xx retransmission intervals
T4 = 5.0  # max time a message stays in the network
TIMER_B = 64 * T1  # INVITE client transaction timeout (also H, F, J, L)

BRANCH_MAGIC = "z9hG4bK"

# RFC 3261 7.3.3 plus the later compact forms.
_COMPACT = {
    "i": "Call-ID", "f": "From", "t": "To", "v": "Via", "m": "Contact", "l": "Content-Length",
    "c": "Content-Type", "k": "Supported", "s": "Subject", "e": "Content-Encoding",
    "o": "Event", "r": "Refer-To", "b": "Referred-By", "u": "Allow-Events",
    "x": "Session-Expires", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition", "y": "Identity", "n": "Identity-Info",
}
_KNOWN = [
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Content-Length",
    "Content-Type", "Record-Route", "Route", "Allow", "Supported", "Require", "User-Agent",
    "Server", "Warning", "Subject", "Expires", "Accept", "Event", "Session-Expires",
    "Content-Encoding", "Refer-To", "Referred-By", "Allow-Events", "Accept-Contact",
    "Reject-Contact", "Request-Disposition", "Identity", "Identity-Info", "Retry-After",
    "Unsupported", "Proxy-Require", "WWW-Authenticate", "Authorization",
]
# lower-case name -> canonical name; unknown names keep the spelling they came with.
_CANON: dict[str, str] = {n.lower(): n for n in _KNOWN}
_CANON.update(_COMPACT)
# Exact spellings seen on the wire -> canonical; a hit also proves the name is a valid token.
_FAST: dict[str, str] = {}
for _n, _c in list(_CANON.items()):
    for _v in (_n, _c, _c.lower(), _c.upper(), _n.upper()):
        _FAST[_v] = _c
_FAST["Call-Id"] = "Call-ID"
_CANONICAL = frozenset(_CANON.values())
_FAST["Cseq"] = "CSeq"

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")

REASONS = {
    100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK",
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 481: "Call/Transaction Does Not Exist", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable",
}


class SipParseError(Exception):
    """The one exception `parse()` raises. `partial` is the message read so far, if any."""

    def __init__(self, reason: str, partial: SipMessage | None = None):
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


def canon(name: str) -> str:
    return _CANON.get(name.lower(), name)


def _key(name: str) -> str:
    """Index key: the canonical name if known, else the lower-case name (names are case-blind)."""
    low = name.lower()
    return _CANON.get(low, low)


class SipMessage:
    """A request (`method`, `uri`) or a response (`status`, `reason`) with ordered headers.

    `headers` is a list of [name, value]; change it through add/set/remove (or call
    `reindex()` after editing it by hand), since `get()` reads a first-value index.
    """

    __slots__ = ("method", "uri", "status", "reason", "headers", "body", "_idx")

    def __init__(self, method=None, uri=None, status=None, reason=None, headers=None, body=b""):
        self.method: str | None = method
        self.uri: str | None = uri
        self.status: int | None = status
        self.reason: str | None = reason
        self.headers: list[list[str]] = headers if headers is not None else []
        self.body: bytes = body
        self._idx: dict[str, str] | None = None

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def reindex(self) -> None:
        idx: dict[str, str] = {}
        for h in self.headers:
            k = _key(h[0])
            if k not in idx:
                idx[k] = h[1]
        self._idx = idx

    # Header access; names may be given in any case or compact form.
    def get(self, name: str, default: str | None = None) -> str | None:
        idx = self._idx
        if idx is None:
            self.reindex()
            idx = self._idx
        v = idx.get(name)
        if v is None:
            v = idx.get(_key(name))
        return default if v is None else v

    def get_all(self, name: str) -> list[str]:
        k = _key(name)
        if k in _CANONICAL:  # known names are always stored canonical
            return [h[1] for h in self.headers if h[0] == k]
        return [h[1] for h in self.headers if _key(h[0]) == k]

    def add(self, name: str, value: str) -> None:
        self.headers.append([canon(name), value])
        self._idx = None

    def set(self, name: str, value: str) -> None:
        """Replace every occurrence of `name` with one header (placed where the first was)."""
        name = canon(name)
        k = _key(name)
        out, done = [], False
        for h in self.headers:
            if _key(h[0]) == k:
                if not done:
                    out.append([name, value])
                    done = True
            else:
                out.append(h)
        if not done:
            out.append([name, value])
        self.headers = out
        self._idx = None

    def remove(self, name: str) -> None:
        k = _key(name)
        self.headers = [h for h in self.headers if _key(h[0]) != k]
        self._idx = None

    # Convenience accessors used on every message.
    @property
    def call_id(self) -> str | None:
        return self.get("Call-ID")

    def cseq(self) -> tuple[int, str]:
        """(number, method) of CSeq; raises SipParseError if absent or invalid."""
        v = self.get("CSeq")
        if v is None:
            raise SipParseError("missing CSeq", self)
        parts = v.split()
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10:
            raise SipParseError("bad CSeq", self)
        return int(parts[0]), parts[1]

    @property
    def branch(self) -> str | None:
        v = self.get("Via")
        return None if v is None else param(v, "branch")

    @property
    def from_tag(self) -> str | None:
        v = self.get("From")
        return None if v is None else param(v, "tag")

    @property
    def to_tag(self) -> str | None:
        v = self.get("To")
        return None if v is None else param(v, "tag")

    def to_bytes(self) -> bytes:
        if self.method is not None:
            start = f"{self.method} {self.uri} SIP/2.0"
        else:
            start = f"SIP/2.0 {self.status} {self.reason}"
        body = self.body or b""
        lines = [start]
        lines.extend(f"{h[0]}: {h[1]}" for h in self.headers if h[0] != "Content-Length")
        lines.append(f"Content-Length: {len(body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + body

    __bytes__ = to_bytes

    def __repr__(self) -> str:
        if self.method is not None:
            return f"<SipMessage {self.method} {self.uri}>"
        return f"<SipMessage {self.status} {self.reason}>"


def _split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and <...>."""
    if '"' not in value and "<" not in value:
        return [p.strip() for p in value.split(",") if p.strip()]
    out, cur, quote, angle, esc = [], [], False, False, False
    for ch in value:
        if esc:
            esc = False
        elif quote and ch == "\\":
            esc = True
        elif ch == '"':
            quote = not quote
        elif not quote and ch == "<":
            angle = True
        elif not quote and ch == ">":
            angle = False
        elif ch == "," and not quote and not angle:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return [p for p in out if p]


def parse(data: bytes) -> SipMessage:
    """Parse one datagram. Returns a SipMessage or raises SipParseError, whatever `data` is."""
    try:
        return _parse(data)
    except SipParseError:
        raise
    except Exception as e:  # total by design: garbage must never escape as another type
        raise SipParseError(f"unparseable: {type(e).__name__}") from None


def _parse(data: bytes) -> SipMessage:
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SipParseError("not bytes")
        data = bytes(data)
    if data[:1] in (b"\r", b"\n"):
        # RFC 3261 7.5: ignore CRLFs before the start line (keep-alives).
        data = data.lstrip(b"\r\n")
        if not data:
            raise SipParseError("empty")
    sep = 4
    end = data.find(b"\r\n\r\n")
    if end < 0:
        # Tolerate bare-LF senders.
        end = data.find(b"\n\n")
        sep = 2
        if end < 0:
            raise SipParseError("no end of headers")
    head = data[:end].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n") if sep == 4 else head.split("\n")
    msg = SipMessage()
    parts = lines[0].split(" ", 2)
    if len(parts) != 3:
        raise SipParseError("bad start line")
    if parts[0] == "SIP/2.0" or parts[0].upper() == "SIP/2.0":
        code = parts[1]
        if len(code) != 3 or not code.isdigit() or not code.isascii() or not ("1" <= code[0] <= "6"):
            raise SipParseError("bad status code")
        msg.status = int(code)
        msg.reason = parts[2]
    else:
        method, uri, version = parts
        if version != "SIP/2.0" and version.upper() != "SIP/2.0":
            raise SipParseError("bad SIP version")
        if not method or not _TOKEN_CHARS.issuperset(method):
            raise SipParseError("bad method")
        if ":" not in uri or " " in uri:
            raise SipParseError("bad Request-URI")
        msg.method = method
        msg.uri = uri
    headers = msg.headers
    idx: dict[str, str] = {}
    cls = None
    rebuild = False
    fast = _FAST
    for i in range(1, len(lines)):
        line = lines[i]
        name, colon, value = line.partition(":")
        cname = fast.get(name)
        if cname is None:
            # Slow path: folding, odd spelling, spaces before the colon, unknown names.
            if not line:
                raise SipParseError("empty header line", msg)
            if line[0] in " \t":
                # RFC 3261 7.3.1 line folding.
                if not headers:
                    raise SipParseError("continuation without header")
                last = headers[-1]
                last[1] = last[1] + " " + line.strip(" \t")
                rebuild = True
                continue
            if not colon:
                raise SipParseError("header without colon", msg)
            name = name.rstrip()
            if not name or not _TOKEN_CHARS.issuperset(name):
                raise SipParseError("bad header name", msg)
            cname = _CANON.get(name.lower(), name)
            key = _key(cname)
        else:
            key = cname
        value = value.strip(" \t")
        if cname == "Via" and "," in value:
            for v in _split_commas(value):
                headers.append(["Via", v])
            rebuild = True
            continue
        if cname == "Content-Length":
            if cls is None:
                cls = []
            cls.append(value)
        headers.append([cname, value])
        if key not in idx:
            idx[key] = value
    if rebuild:
        msg.reindex()
        idx = msg._idx
    else:
        msg._idx = idx
    # Structural checks that make the message unusable; `partial` allows a 400.
    body = data[end + sep:]
    if cls is not None:
        n = None
        for v in cls:
            if not v.isdigit() or not v.isascii() or len(v) > 9:
                raise SipParseError("bad Content-Length", msg)
            if n is not None and int(v) != n:
                raise SipParseError("conflicting Content-Length", msg)
            n = int(v)
        if n > len(body):
            raise SipParseError("body shorter than Content-Length", msg)
        if n < len(body):
            body = body[:n]
    msg.body = body
    if "Via" not in idx or "From" not in idx or "To" not in idx or "Call-ID" not in idx:
        for name in ("Via", "From", "To", "Call-ID"):
            if name not in idx:
                raise SipParseError(f"missing {name}", msg)
    _num, cmethod = msg.cseq()
    if msg.method is not None and cmethod != msg.method:
        raise SipParseError("CSeq method differs from request method", msg)
    return msg


def can_answer(msg: SipMessage | None) -> bool:
    """True if `msg` is a request (other than ACK) with what a response must copy."""
    if msg is None or msg.method is None or msg.method == "ACK":
        return False
    return all(msg.get(n) is not None for n in ("Via", "From", "To", "Call-ID", "CSeq"))


def param(value: str, name: str) -> str | None:
    """Header parameter `name` of a From/To/Via/Contact value (not a URI parameter inside <>)."""
    gt = value.rfind(">")
    # Fast path: the usual lower-case `;name=value`.
    key = f";{name}="
    i = value.find(key, gt + 1)
    if i >= 0:
        start = i + len(key)
        end = value.find(";", start)
        return value[start:end].strip(" \t") if end >= 0 else value[start:].strip(" \t")
    if name not in value.lower():
        return None
    # Slow path: odd case, spaces around '=', flag parameters.
    pieces = value[gt + 1:].split(";") if gt >= 0 else value.split(";")[1:]
    for p in pieces:
        k, eq, v = p.partition("=")
        if k.strip(" \t").lower() == name:
            return v.strip(" \t") if eq else ""
    return None


def header_uri(value: str) -> str:
    """The URI of a name-addr or addr-spec header value (From, To, Contact, Route)."""
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        return value[lt + 1:gt if gt >= 0 else None].strip()
    return value.split(";", 1)[0].strip()


def uri_user(uri: str) -> str:
    """'sip:ivr-1@host:5060;x=y' -> 'ivr-1'; '' when the URI has no user part."""
    _scheme, _, rest = uri.partition(":")
    at = rest.find("@")
    if at < 0:
        return ""
    return rest[:at].split(";", 1)[0].split(":", 1)[0]


def uri_hostport(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """'sip:u@h:5080;lr' -> ('h', 5080). Raises ValueError on a bad port."""
    _scheme, _, rest = uri.partition(":")
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    hostport = rest.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    return host, int(port) if port else default_port


def split_hostport(text: str, default_port: int = 5060) -> tuple[str, int]:
    """'host:5060' -> ('host', 5060)."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    return host, int(port) if port else default_port


_rng = random.Random()
_counter = 0


def _unique() -> str:
    global _counter
    _counter += 1
    return f"{_rng.getrandbits(48):012x}{_counter:x}"


def new_branch() -> str:
    return BRANCH_MAGIC + _unique()


def new_tag() -> str:
    return _unique()


def new_call_id(host: str = "ccdrill") -> str:
    return f"{_unique()}@{host}"


def make_response(req: SipMessage, status: int, reason: str | None = None, to_tag: str | None = None,
                  headers=(), body: bytes = b"") -> SipMessage:
    """A response to `req`: Via (all, in order), From, To (+ To-tag if it has none), Call-ID, CSeq.

    Record-Route is copied into 1xx/2xx answers to dialog-creating requests (RFC 3261 12.1.1).
    `headers` is an iterable of (name, value) added after those.
    """
    out: list[list[str]] = []
    rr: list[list[str]] = []
    for h in req.headers:
        n = h[0]
        if n == "Via" or n == "From" or n == "Call-ID" or n == "CSeq":
            out.append([n, h[1]])
        elif n == "To":
            v = h[1]
            if to_tag and status > 100 and param(v, "tag") is None:
                v = f"{v};tag={to_tag}"
            out.append(["To", v])
        elif n == "Record-Route" and status < 300 and req.method == "INVITE":
            rr.append([n, h[1]])
    out.extend(rr)
    for n, v in headers:
        out.append([canon(n), v])
    return SipMessage(status=status, reason=reason or REASONS.get(status, "Unknown"), headers=out,
                      body=body)


def make_request(method: str, uri: str, *, via_host: str, via_port: int, from_uri: str, from_tag: str,
                 to_uri: str, to_tag: str | None = None, call_id: str | None = None, cseq: int = 1,
                 branch: str | None = None, contact: str | None = None, route=(), headers=(),
                 body: bytes = b"", content_type: str | None = None) -> SipMessage:
    """A new request with a fresh `z9hG4bK` branch (unless given) and Call-ID (unless given)."""
    to = f"<{to_uri}>" + (f";tag={to_tag}" if to_tag else "")
    hs = [
        ["Via", f"SIP/2.0/UDP {via_host}:{via_port};branch={branch or new_branch()};rport"],
        ["Max-Forwards", "70"],
        ["From", f"<{from_uri}>;tag={from_tag}"],
        ["To", to],
        ["Call-ID", call_id or new_call_id(via_host)],
        ["CSeq", f"{cseq} {method}"],
    ]
    for r in route:
        hs.append(["Route", r])
    if contact:
        hs.append(["Contact", f"<{contact}>"])
    for n, v in headers:
        hs.append([canon(n), v])
    if body and content_type:
        hs.append(["Content-Type", content_type])
    return SipMessage(method=method, uri=uri, headers=hs, body=body)


def retransmit_intervals(cap: float = T2, total: float = TIMER_B):
    """Retransmission delays T1, 2T1, 4T1... capped at `cap`, while the sum stays below `total`."""
    t, interval = 0.0, T1
    while t + interval < total:
        yield interval
        t += interval
        interval = min(interval * 2, cap)


def local_ip_for(dest_ip: str) -> str:
    """The local address the kernel would use to reach `dest_ip` (no packet is sent)."""
    fam = socket.AF_INET6 if ":" in dest_ip else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.connect((dest_ip, 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def now() -> float:
    return time.monotonic()
