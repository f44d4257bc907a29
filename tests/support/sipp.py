"""SIPp on 127.0.0.1: scenario texts, free ports, -trace_stat counters, and bounded SIPp processes.

Every SIPp run started here has -nostdin -timeout 30s -timeout_error and a bounded -m, and is
stopped by its own PID (`Sipp.stop`, or `Sipp.stop_all` for every run still live).
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from tests.support.wait import wait_for

HAVE_SIPP = shutil.which("sipp") is not None
LIMITS = ("-nostdin", "-timeout", "30s", "-timeout_error")

# --------------------------------------------------------------------------- scenario texts

SERVICE_URI = "sip:[service]@[remote_ip]:[remote_port]"
VIA = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"
FROM = "From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]"
TO = "To: <sip:[service]@[remote_ip]:[remote_port]>"
UAS_TAG = ";tag=[pid]SIPpTag01[call_number]"
PAUSE = "  <pause/>\n"

# SDP media lines (the session lines before them are the same for every offer and answer).
AUDIO = ("m=audio [media_port] RTP/AVP 8",)
AUDIO_PCMA = (*AUDIO, "a=rtpmap:8 PCMA/8000")
T38 = ("m=image [media_port] udptl t38", "a=T38FaxVersion:0")


def scenario(name: str, *steps: str) -> str:
    return f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{name}">\n{"".join(steps)}</scenario>\n'


def send(*lines: str, retrans: bool = False) -> str:
    """A <send> of one SIP message, retransmitted every 500 ms (UDP) when ``retrans``."""
    attrs = ' retrans="500"' if retrans else ""
    return f"  <send{attrs}><![CDATA[\n" + "".join(f"{line}\n" for line in lines) + "]]></send>\n"


def recv(**attrs: str | int | bool) -> str:
    """``recv(response=100, optional=True)`` -> ``<recv response="100" optional="true"/>``."""
    body = " ".join(f'{k}="{str(v).lower() if isinstance(v, bool) else v}"' for k, v in attrs.items())
    return f"  <recv {body}/>\n"


def body(media: Sequence[str] | None) -> tuple[str, ...]:
    """Content headers and, with ``media``, an SDP body with those m=/a= lines."""
    if media is None:
        return ("Content-Length: 0",)
    return ("Content-Type: application/sdp", "Content-Length: [len]", "", "v=0",
            "o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]", "s=-",
            "c=IN IP[media_ip_type] [media_ip]", "t=0 0", *media)


def invite(headers: Sequence[str] = (), media: Sequence[str] | None = None) -> str:
    return send(f"INVITE {SERVICE_URI} SIP/2.0", VIA, FROM, TO, "Call-ID: [call_id]", "CSeq: 1 INVITE",
                "Contact: sip:sipp@[local_ip]:[local_port]", "Max-Forwards: 70", *headers, *body(media),
                retrans=True)


def _in_dialog(method: str, cseq: int, uri: str) -> tuple[str, ...]:
    return (f"{method} {uri} SIP/2.0", VIA, FROM, f"{TO}[peer_tag_param]", "Call-ID: [call_id]",
            f"CSeq: {cseq} {method}", "Max-Forwards: 70", "Content-Length: 0")


def ack(uri: str = SERVICE_URI) -> str:
    """ACK of a 2xx (a new transaction, in the dialog)."""
    return send(*_in_dialog("ACK", 1, uri))


def ack_refusal() -> str:
    """ACK of a non-2xx final answer (the INVITE's own transaction)."""
    return send(f"ACK {SERVICE_URI} SIP/2.0", "[last_Via:]", "[last_From:]", "[last_To:]", "[last_Call-ID:]",
                "CSeq: 1 ACK", "Max-Forwards: 70", "Content-Length: 0")


def bye(uri: str = SERVICE_URI) -> str:
    return send(*_in_dialog("BYE", 2, uri), retrans=True)


def reply(status: str = "200 OK", tag: bool = False, media: Sequence[str] | None = None,
          retrans: bool = False) -> str:
    """A response to the last request; ``tag`` adds the UAS's To tag, ``media`` a Contact and SDP."""
    contact = () if media is None else ("Contact: <sip:[local_ip]:[local_port];transport=[transport]>",)
    return send(f"SIP/2.0 {status}", "[last_Via:]", "[last_From:]", "[last_To:]" + (UAS_TAG if tag else ""),
                "[last_Call-ID:]", "[last_CSeq:]", *contact, *body(media), retrans=retrans)


def answer(media: Sequence[str] = AUDIO) -> str:
    """200 OK with SDP to an INVITE, retransmitted until the ACK."""
    return reply("200 OK", tag=True, media=media, retrans=True)


def uac_call(name: str, headers: Sequence[str] = (), media: Sequence[str] = AUDIO, ringing: bool = True,
             record_route: bool = False) -> str:
    """INVITE with SDP, 200, ACK, the -d pause, BYE, 200; ``record_route`` sends ACK/BYE to [next_url]."""
    uri = "[next_url]" if record_route else SERVICE_URI
    return scenario(name, invite(headers, media), recv(response=100, optional=True),
                    *([recv(response=180, optional=True)] if ringing else []),
                    recv(response=200, rrs=True) if record_route else recv(response=200),
                    ack(uri), PAUSE, bye(uri), recv(response=200, crlf=True))


# --------------------------------------------------------------------------- ports and statistics

def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_counters(path: Path) -> dict:
    """The last row of a -trace_stat file by column name; {} when there is no such file or row yet."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) >= 2 else {}


def ok_calls(counters: dict) -> tuple[int, int]:
    """(successful, failed) calls of `last_counters`; -1 for a missing counter."""
    return int(counters.get("SuccessfulCall(C)", -1)), int(counters.get("FailedCall(C)", -1))


def read_stat(path: Path) -> dict:
    """Counters of a -trace_stat file: last row, elapsed from its epochs, peak CurrentCall."""
    rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    head, data = rows[0], rows[1:]
    last = dict(zip(head, data[-1], strict=False))

    def epoch(v: str) -> float:
        return float(v.split("\t")[-1])

    return {
        "ok": int(last["SuccessfulCall(C)"]),
        "failed": int(last["FailedCall(C)"]),
        "elapsed": epoch(last["CurrentTime"]) - epoch(last["StartTime"]),
        "peak_current": max(int(dict(zip(head, r, strict=False))["CurrentCall"]) for r in data),
        "retransmissions": int(last.get("Retransmissions(C)", 0) or 0),
    }


# --------------------------------------------------------------------------- processes

class Sipp:
    """One bounded SIPp run on 127.0.0.1; `result()` waits and returns (rc, `last_counters`).

    Files in ``tmp`` are named after ``tag`` (default ``sipp<port>``): the scenario (.xml), the
    -trace_stat file (.csv), the -trace_err file (.err) and, with ``log``, SIPp's output (.log;
    otherwise stderr is kept in ``self.stderr`` by `result()`). ``args`` end the command line
    (``-s``, ``-r``, ``-d``, the remote host...).
    """

    live: ClassVar[list[Sipp]] = []  # every run not yet stopped, for `stop_all`

    def __init__(self, tmp: Path, scenario: str | None, args: Sequence[str], m: int, port: int | None = None,
                 sn: str | None = None, *, tag: str | None = None,
                 options: Sequence[str] = ("-buff_size", "1048576"), trace_err: bool = True, log: bool = False,
                 preexec_fn: Callable[[], object] | None = None, wait_bound: bool = True) -> None:
        self.port = port or free_port()
        self.tag = tag or f"sipp{self.port}"
        self.stf = tmp / f"{self.tag}.csv"
        self.stderr = ""
        cmd = ["sipp", *LIMITS, "-m", str(m), "-i", "127.0.0.1", "-p", str(self.port), *options,
               "-trace_stat", "-stf", str(self.stf), "-fd", "1"]
        if trace_err:
            cmd += ["-trace_err", "-error_file", str(tmp / f"{self.tag}.err")]
        if scenario is not None:
            path = tmp / f"{self.tag}.xml"
            path.write_text(scenario)
            cmd += ["-sf", str(path)]
        elif sn:
            cmd += ["-sn", sn]
        self._log = open(tmp / f"{self.tag}.log", "wb") if log else None  # noqa: SIM115 (closed by stop)
        out = self._log or subprocess.DEVNULL
        err = subprocess.STDOUT if log else subprocess.PIPE
        self.proc = subprocess.Popen([*cmd, *args], stdout=out, stderr=err, preexec_fn=preexec_fn)
        Sipp.live.append(self)
        self.tmp = tmp
        if wait_bound:  # a UAS must be listening before anything is sent to it
            wait_for(lambda: self._bound() or self.proc.poll() is not None, what="sipp bound")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _bound(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", self.port))
            except OSError:
                return True
        return False

    def result(self, timeout: float = 40.0) -> tuple[int, dict]:
        try:
            _out, err = self.proc.communicate(timeout=timeout)
        finally:
            self.stop()
        self.stderr = err.decode(errors="replace") if err else ""
        return self.proc.returncode, last_counters(self.stf)

    def stop(self, grace: float = 0.0) -> None:
        """Stop this run by its PID: SIGTERM and up to ``grace`` s to exit first, then SIGKILL."""
        with contextlib.suppress(ValueError):
            Sipp.live.remove(self)
        if self.proc.poll() is None and grace > 0:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stderr is not None and not self.proc.stderr.closed and self.proc.returncode is not None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stderr.close()
        if self._log is not None:
            self._log.close()

    @classmethod
    def stop_all(cls, grace: float = 0.0) -> None:
        """Stop every run not stopped yet, newest first."""
        while cls.live:
            cls.live[-1].stop(grace)
