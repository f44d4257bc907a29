"""Place SIPp calls and read what happened from SIPp's own statistics.

Load is bounded: every UAC run has a call count (``-m``), a rate (``-r``/``-rp``),
a concurrency limit (``-l``) and a global timeout (``-timeout`` +
``-timeout_error``); ``-users`` is never used. Results come from the
``-trace_stat`` CSV (last complete row, cumulative ``(C)`` columns and the
scenario's own counters), never from SIPp's exit code.

SIPp 3.6 ``-trace_stat`` CSV (``;``-separated, every line ends with ``;``):
``StartTime; LastResetTime; CurrentTime`` (each ``date<TAB>time<TAB>epoch``),
``ElapsedTime(P|C)``, ``TargetRate``, ``CallRate(P|C)``, ``IncomingCall(P|C)``,
``OutgoingCall(P|C)``, ``TotalCallCreated``, ``CurrentCall``,
``SuccessfulCall(P|C)``, ``FailedCall(P|C)``, the ``Failed<Reason>(P|C)`` family
(``FailedMaxUDPRetrans``, ``FailedUnexpectedMessage``, ``FailedTimeoutOnRecv``,
...), ``OutOfCallMsgs``, ``DeadCallMsgs``, ``Retransmissions``, ``AutoAnswered``,
``Warnings``, ``FatalErrors``, ``WatchdogMajor``, ``WatchdogMinor`` (all ``(P|C)``),
``CallLength(P|C)``, ``CallLengthStDev(P|C)``, then optional ``ResponseTime*`` /
``*Repartition*`` columns, then one ``<name>(P)``/``<name>(C)`` pair per
``counter="<name>"`` attribute of the scenario, in scenario order. SIPp has no
column of its own for refused calls: the ccdrill scenarios count them with
``refusedNNN`` counters (one per final response code), answered calls with
``answered``, and lost calls (BYE unanswered) with ``dropped``.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "CallResult",
    "Executor",
    "LocalExecutor",
    "SippError",
    "SippNotFound",
    "TraceStatError",
    "parse_trace_stat",
    "place_calls",
    "read_stat_file",
    "uas_delta",
    "wait_stat_file",
]

DEFAULT_STAT_DIR = "/var/lib/ccdrill/sipp"
MAX_CALLS = 10_000
MAX_RATE = 1_000.0

# Failure reasons that mean "no answer in time" rather than "refused/broken".
_TIMEOUT_FAILURES = ("maxudpretrans", "timeoutonrecv", "timeoutonsend")

# Columns SIPp writes itself (normalised); any other (C) column is a scenario counter.
_STANDARD = {
    "starttime",
    "lastresettime",
    "currenttime",
    "elapsedtime",
    "targetrate",
    "callrate",
    "incomingcall",
    "outgoingcall",
    "totalcallcreated",
    "currentcall",
    "successfulcall",
    "failedcall",
    "outofcallmsgs",
    "deadcallmsgs",
    "retransmissions",
    "autoanswered",
    "warnings",
    "fatalerrors",
    "watchdogmajor",
    "watchdogminor",
    "calllength",
    "calllengthstdev",
}
_STANDARD_PREFIXES = ("failed", "responsetime", "calllengthrepartition", "responsetimerepartition")
_SUFFIX = re.compile(r"^(?P<name>.*?)\s*\((?P<kind>[PC])\)\s*$", re.IGNORECASE)
_REFUSED = re.compile(r"^refused_?(\d{3})$", re.IGNORECASE)


class SippError(RuntimeError):
    """A SIPp run could not be made or read."""


class SippNotFound(SippError):
    """The sipp binary is not installed where the executor runs."""


class TraceStatError(SippError):
    """A -trace_stat CSV is missing, empty or not SIPp's format."""


class Executor(Protocol):
    """Where SIPp runs: this machine (LocalExecutor) or a lab host (docker exec).

    ``run`` returns (exit code, stdout, stderr); a command that cannot be found
    returns 127 like a shell; a run past ``timeout`` seconds is killed and raises
    ``TimeoutError``. ``read`` returns a text file's content (``FileNotFoundError``
    when it is absent).
    """

    def run(self, argv: list[str], timeout: float) -> tuple[int, str, str]: ...

    def read(self, path) -> str: ...


class LocalExecutor:
    """Runs commands on this machine with subprocess (no shell, no stdin)."""

    def run(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            return 127, "", f"{argv[0]}: command not found"
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"{shlex.join(argv)} did not finish within {timeout:g}s") from exc
        return proc.returncode, proc.stdout, proc.stderr

    def read(self, path) -> str:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()


@dataclass(frozen=True)
class CallResult:
    """What a bounded UAC run did, counted from its -trace_stat CSV.

    ``answered`` = INVITEs answered 200; ``refused`` = final codes received
    instead (by code); ``timeouts`` = calls that got no answer in time
    (retransmissions exhausted, receive timeout, or still open when the global
    timeout stopped SIPp); ``failed`` = other SIPp failures (unexpected message,
    ...); ``dropped`` = answered calls whose BYE found no far end.
    """

    scenario: str
    attempted: int
    answered: int
    refused: dict[int, int]
    failed: int
    timeouts: int
    dropped: int = 0
    completed: int = 0
    rc: int = 0
    stats_file: str = ""
    elapsed_s: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _split_col(col: str) -> tuple[str, str | None]:
    m = _SUFFIX.match(col.strip())
    if m:
        return m.group("name").strip(), m.group("kind").upper()
    return col.strip(), None


def _is_standard(norm: str) -> bool:
    return norm in _STANDARD or norm.startswith(_STANDARD_PREFIXES)


def _number(value: str) -> int | float | None:
    value = value.strip()
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    try:
        return float(value)
    except ValueError:
        return None


def _epoch(value: str) -> float | None:
    # "2026-11-27<TAB>13:05:00.133557<TAB>1795784700.133557": the epoch is last
    last = value.strip().split("\t")[-1].strip()
    try:
        return float(last)
    except ValueError:
        return None


def _delimiter(header: str) -> str:
    # Tabs occur inside the time columns, so only ; and , are candidates.
    return ";" if header.count(";") >= header.count(",") else ","


def parse_trace_stat(text: str, source: str = "<trace_stat>") -> dict[str, Any]:
    """Parse a SIPp -trace_stat CSV; the last complete row is the state.

    Column names are matched case- and punctuation-insensitively, with or
    without the (P)/(C) suffix, so older SIPp spellings parse too. Returns::

        {"source", "rows", "start", "now", "elapsed_s",
         "calls": {"created", "incoming", "outgoing", "current", "successful", "failed"},
         "failures": {"MaxUDPRetrans": n, ...},   # cumulative, by reason
         "retransmissions", "fatal_errors",
         "counters": {"answered": n, "refused503": n, ...},  # scenario counters (C)
         "raw": {column: text}}                   # the row itself

    Raises TraceStatError (naming ``source``) when the text is not such a CSV.
    """
    lines = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise TraceStatError(f"{source}: empty SIPp statistics file (no header)")
    delim = _delimiter(lines[0])
    # SIPp ends every line with the delimiter: a row without it is still being written.
    terminated = lines[0].rstrip().endswith(delim)

    def fields_of(line: str) -> list[str] | None:
        line = line.rstrip()
        if terminated:
            if not line.endswith(delim):
                return None
            line = line[: -len(delim)]
        return line.split(delim)

    header = fields_of(lines[0]) or []
    names = {_norm(_split_col(c)[0]) for c in header}
    if not {"currentcall", "totalcallcreated"} <= names or "starttime" not in names:
        raise TraceStatError(
            f"{source}: not a SIPp -trace_stat CSV (header lacks StartTime/TotalCallCreated/"
            f"CurrentCall): {lines[0][:120]!r}"
        )
    total_at = _header_index(header, "TotalCallCreated")
    row = None
    complete = 0
    for ln in lines[1:]:
        fields = fields_of(ln)
        # A half-written row is shorter: skip it, keep the last whole one.
        if fields is not None and len(fields) == len(header) and _number(fields[total_at]) is not None:
            row = fields
            complete += 1
    if row is None:
        raise TraceStatError(f"{source}: SIPp statistics file has a header but no complete data row")

    raw = {col.strip(): val.strip() for col, val in zip(header, row, strict=True)}
    cumulative: dict[str, int | float] = {}
    counters: dict[str, int] = {}
    for col, val in raw.items():
        base, kind = _split_col(col)
        norm = _norm(base)
        num = _number(val)
        if num is None or kind == "P":
            continue
        if _is_standard(norm):
            cumulative[norm] = num
        elif kind == "C":
            counters[base] = int(num)

    def get(name: str) -> int:
        return int(cumulative.get(_norm(name), 0))

    failures = {}
    for col in raw:
        base, kind = _split_col(col)
        norm = _norm(base)
        if norm.startswith("failed") and norm != "failedcall" and kind != "P":
            failures[base[len("Failed") :] if base.lower().startswith("failed") else base] = get(base)

    start = _epoch(raw.get(_find(raw, "StartTime"), ""))
    now = _epoch(raw.get(_find(raw, "CurrentTime"), ""))
    return {
        "source": source,
        "rows": complete,
        "start": start,
        "now": now,
        "elapsed_s": (now - start) if start is not None and now is not None else None,
        "calls": {
            "created": get("TotalCallCreated"),
            "incoming": get("IncomingCall"),
            "outgoing": get("OutgoingCall"),
            "current": get("CurrentCall"),
            "successful": get("SuccessfulCall"),
            "failed": get("FailedCall"),
        },
        "failures": failures,
        "retransmissions": get("Retransmissions"),
        "fatal_errors": get("FatalErrors"),
        "counters": counters,
        "raw": raw,
    }


def _header_index(header: Sequence[str], name: str) -> int:
    want = _norm(name)
    for i, col in enumerate(header):
        if _norm(_split_col(col)[0]) == want:
            return i
    raise TraceStatError(f"column {name} not found")


def _find(raw: dict[str, str], name: str) -> str:
    want = _norm(name)
    for col in raw:
        if _norm(_split_col(col)[0]) == want:
            return col
    return ""


def _refused(counters: dict[str, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for name, value in counters.items():
        m = _REFUSED.match(name)
        if m and value:
            out[int(m.group(1))] = out.get(int(m.group(1)), 0) + value
    return out


def _result_from_stats(scenario: str, stats: dict[str, Any], rc: int, path: str, elapsed: float) -> CallResult:
    calls, counters, failures = stats["calls"], stats["counters"], stats["failures"]
    timeouts_failed = sum(v for k, v in failures.items() if _norm(k) in _TIMEOUT_FAILURES)
    # Calls still open when the global -timeout stopped SIPp never finished either.
    timeouts = timeouts_failed + calls["current"]
    # Scenarios without an "answered" counter: a completed call is an answered one.
    answered = counters.get("answered", calls["successful"])
    return CallResult(
        scenario=scenario,
        attempted=calls["outgoing"] or calls["created"],
        answered=answered,
        refused=_refused(counters),
        failed=max(calls["failed"] - timeouts_failed, 0),
        timeouts=timeouts,
        dropped=counters.get("dropped", 0),
        completed=calls["successful"],
        rc=rc,
        stats_file=path,
        elapsed_s=elapsed,
        stats=stats,
    )


def _not_found(rc: int, err: str) -> bool:
    # 127: a shell's "not found"; docker exec says "executable file not found"
    low = err.lower()
    return rc == 127 or "command not found" in low or "executable file not found" in low


def place_calls(
    ex: Executor,
    scenario: str,
    target: str,
    count: int,
    rate: float,
    hold_ms: int,
    *,
    rate_period_ms: int = 1000,
    limit: int | None = None,
    timeout: float | None = None,
    answer_timeout_ms: int = 10_000,
    local_ip: str | None = None,
    local_port: int | None = None,
    service: str | None = None,
    inf: str | None = None,
    stat_dir: str = DEFAULT_STAT_DIR,
    sipp: str = "sipp",
    extra_args: Sequence[str] = (),
) -> CallResult:
    """Place ``count`` calls of ``scenario`` (a path on the executor) to ``target``.

    Calls start at ``rate`` per ``rate_period_ms``, at most ``limit`` at once
    (default: all of them), each held ``hold_ms`` after the answer (the
    scenario's ``<pause/>``, SIPp ``-d``). ``timeout`` (seconds) bounds the whole
    run; by default the ramp-up plus the hold plus ``answer_timeout_ms`` plus
    10 s. ``uac_ivr.xml`` needs an injection file (``-inf``) for its
    X-Fund-Account header: by default ``accounts.csv`` beside the scenario.
    """
    if not isinstance(count, int) or not 1 <= count <= MAX_CALLS:
        raise ValueError(f"count must be an integer in 1..{MAX_CALLS}, got {count!r}")
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate must be in (0, {MAX_RATE:g}], got {rate!r}")
    if hold_ms < 0 or rate_period_ms <= 0 or answer_timeout_ms <= 0:
        raise ValueError("hold_ms must be >= 0, rate_period_ms and answer_timeout_ms > 0")
    limit = count if limit is None else limit
    if not 1 <= limit <= count:
        raise ValueError(f"limit must be in 1..count ({count}), got {limit!r}")
    ramp_s = count / rate * rate_period_ms / 1000.0
    if timeout is None:
        timeout = ramp_s + hold_ms / 1000.0 + answer_timeout_ms / 1000.0 + 10.0
    timeout_s = max(1, math.ceil(timeout))
    if inf is None and posixpath.basename(scenario) == "uac_ivr.xml":
        inf = posixpath.join(posixpath.dirname(scenario), "accounts.csv")

    stem = posixpath.splitext(posixpath.basename(scenario))[0]
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    stat_file = posixpath.join(stat_dir, f"{stem}-{stamp}.csv")
    rc, _out, err = ex.run(["mkdir", "-p", stat_dir], timeout=30)
    if rc != 0:
        raise SippError(f"cannot create the statistics directory {stat_dir}: {err.strip()}")

    argv = [
        sipp,
        "-sf",
        scenario,
        target,
        "-nostdin",
        "-m",
        str(count),
        "-l",
        str(limit),
        "-r",
        f"{rate:g}",
        "-rp",
        str(int(rate_period_ms)),
        "-d",
        str(int(hold_ms)),
        "-timeout",
        f"{timeout_s}s",
        "-timeout_error",
        "-recv_timeout",
        str(int(answer_timeout_ms)),
        "-trace_stat",
        "-stf",
        stat_file,
        "-fd",
        "1",
    ]
    if local_ip:
        argv += ["-i", local_ip]
    if local_port is not None:
        argv += ["-p", str(local_port)]
    if service:
        argv += ["-s", service]
    if inf:
        argv += ["-inf", inf]
    argv += list(extra_args)

    started = time.monotonic()
    # The executor's own timeout is only a backstop behind SIPp's -timeout.
    rc, _out, err = ex.run(argv, timeout=timeout_s + 30)
    elapsed = time.monotonic() - started
    if _not_found(rc, err):
        raise SippNotFound(f"{sipp} is not installed where the calls are placed: {err.strip()[:300]}")
    try:
        text = ex.read(stat_file)
    except FileNotFoundError as exc:
        raise TraceStatError(f"SIPp wrote no statistics file {stat_file} (exit {rc}): {err.strip()[-500:]}") from exc
    stats = parse_trace_stat(text, source=stat_file)
    return _result_from_stats(scenario, stats, rc, stat_file, elapsed)


def read_stat_file(ex: Executor, path: str, wait_s: float = 5.0) -> dict[str, Any]:
    """Current state of a long-running SIPp (a UAS under supervisord) from its CSV.

    Reads only the header and the last two lines (the file grows by one row per
    second; the very last one may be half written). A SIPp that supervisord has
    just restarted truncates its file and writes the header and first row within
    a second or two: an empty or partial file is read again for up to ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    while True:
        rc, out, err = ex.run(["sh", "-c", 'head -n 1 "$1" && tail -n 2 "$1"', "sh", path], timeout=30)
        if rc != 0:
            raise TraceStatError(f"cannot read SIPp statistics file {path}: {err.strip() or f'exit {rc}'}")
        try:
            return parse_trace_stat(out, source=path)
        except TraceStatError as exc:
            if time.monotonic() >= deadline:
                raise TraceStatError(f"{exc} (still so after {wait_s:g}s; is the SIPp process restarting?)") from exc
        time.sleep(0.2)


def wait_stat_file(ex: Executor, path: str, newer_than: float, wait_s: float = 5.0) -> dict[str, Any]:
    """read_stat_file, waiting until its row was written after ``newer_than`` (epoch).

    A UAS writes its row every second, so a read right after a load would miss
    the last calls.
    """
    deadline = time.monotonic() + wait_s
    while True:
        stats = read_stat_file(ex, path, wait_s=max(0.0, deadline - time.monotonic()))
        if stats["now"] is not None and stats["now"] > newer_than:
            return stats
        if time.monotonic() >= deadline:
            raise TraceStatError(
                f"{path}: no statistics row newer than {newer_than:.3f} within {wait_s:g}s "
                f"(last row at {stats['now']}); is the SIPp process running?"
            )
        time.sleep(0.2)


def uas_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What a long-running UAS did between two reads of its CSV.

    Counters (answered, hungup, probes, ...) and call totals are differences;
    ``current`` is the state at the second read. If SIPp was restarted in
    between (StartTime changed), the second read's totals are the delta and
    ``restarted`` is True.
    """
    restarted = before.get("start") != after.get("start")
    base_counters = {} if restarted else before["counters"]
    base_calls = {} if restarted else before["calls"]
    counters = {k: v - base_counters.get(k, 0) for k, v in after["counters"].items()}
    calls = {k: v - base_calls.get(k, 0) for k, v in after["calls"].items() if k != "current"}
    return {
        "counters": counters,
        "calls": calls,
        "answered": counters.get("answered", calls.get("successful", 0)),
        "current": after["calls"]["current"],
        "restarted": restarted,
        "since": before.get("now"),
        "until": after.get("now"),
    }
