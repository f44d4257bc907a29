"""Verdicts on IPC switchovers (DR-3..DR-7, CAP-D1, FAX-D1), from what was recorded while they ran.

Measuring (real SIP calls through the PBX, the stand-ins' own stats, supervisord) and judging are
kept apart: `hold_in_flight`, `probe_rto`, `hold_on_survivors`, `steady_state` place calls and read
the lab; `in_flight_verdict`, `rto_verdict`, `degraded_verdict`, `expect_states` only compare.

- **Calls in flight** (DR-6): three caller groups are placed so that each sits on a known board:
  `primary` (held long, on the primary's board), a short `filler` that takes the rest of that
  board so that the next group hunts to the secondary's board, and `secondary` (held long). When
  the filler has hung up, the lab holds N calls on each IPC. After the fault and the operators'
  response, each long group's SIPp counters (`dropped`: BYE found no far end, `timeouts`, `failed`)
  say what was lost: zero for the survivor's group, the failed board's calls reported apart.
- **RTO** (DR-6): from the fault to the first new call answered again, measured by single probe
  calls placed one after the other, at least `interval_s` apart, from just after the fault until
  one is answered (bounded in count and time). A probe's answer time is the last row SIPp wrote
  for it (an upper bound, within a few ms: the probe hangs up at once). When the fault leaves calls
  answered but unserved (IVR crash) `served=True` also needs the running IVR's self-service query
  for the probe's own account.
- **Degraded capacity** (CAP-D1, FAX-D1): calls are offered until refusals and the answered ones
  counted, with a view of the call center that leaves the failed boards alone.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import re
import shlex
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from docker.errors import APIError

from ..lab.callcenter import SIPP_DIR, Board, CallCenter
from ..lab.world import LabError
from ..load.calls import SCENARIOS, SEATS_STAT, hold_calls, outbound_campaign
from ..load.sipp import (
    CallResult,
    SippError,
    parse_trace_stat,
    place_calls,
    read_stat_file,
    uas_delta,
    wait_stat_file,
)
from .capacity import CheckFailed

RUNNING_STATES = frozenset({"RUNNING", "STARTING", "BACKOFF", "STOPPING"})

PROBE_INF_DIR = "/tmp/ccdrill-probes"
PROBE_STAT_DIR = "/tmp/ccdrill-probes/stat"
RATE = 30.0
FILLER_HOLD_MS = 20_000


def _fail(problems: list[str]) -> None:
    if problems:
        raise CheckFailed("; ".join(problems))


# --- reading the lab, tolerant of failed parts -------------------------------------------------------
def board_stats_or_none(cc: CallCenter, board: Board) -> dict | None:
    """A board's stats, or None when it does not answer (driver stopped, IPC hung)."""
    try:
        return cc.board_stats(board)
    except (LabError, APIError):
        return None


def ivr_stats_or_none(cc: CallCenter, host: str) -> dict | None:
    try:
        return cc.ivr_stats(host)
    except (LabError, APIError):
        return None


def programs_or_none(cc: CallCenter, host: str) -> dict[str, str] | None:
    try:
        return cc.programs(host)
    except APIError:
        return None


class Survivors(CallCenter):
    """The call center as seen while part of it is down: peaks are reset (and stats read) only on
    the boards that answer. Same lab, same layout; used to load a degraded call center."""

    def __init__(self, cc: CallCenter):  # a view of `cc`, not a new call center
        self.__dict__.update(cc.__dict__)


    def all_board_stats(self, kind: str = "voice") -> dict[str, dict]:
        out = {}
        for b in self.boards(kind):
            st = board_stats_or_none(self, b)
            if st is not None:
                out[b.name] = st
        return out


def pbx_trunks(cc: CallCenter) -> dict[str, str]:
    """The PBX dispatcher's view: {destination URI: flags} (A... = active, I... = inactive)."""
    rc, out, err = cc.lab.exec(cc.pbx_host, ["kamcmd", "dispatcher.list"], 15)
    if rc != 0:
        raise LabError(f"{cc.pbx_host}: kamcmd dispatcher.list: {err.strip()}")
    return dict(re.findall(r"URI:\s*(\S+)\s+FLAGS:\s*(\S+)", out))


def trunk_uri(board: Board) -> str:
    return f"sip:{board.host}:{board.port}"


# --- states read from supervisord ---------------------------------------------------------------------
def expect_states(states: dict[str, str], host: str, running: list[str], not_running: list[str]) -> dict:
    """Compare supervisord's view of `host` with what the plan says runs there; name every mismatch."""
    problems = []
    for p in running:
        if states.get(p) != "RUNNING":
            problems.append(f"{host}: {p} should run, supervisord says {states.get(p, 'not installed')}")
    for p in not_running:
        if p not in states:
            problems.append(f"{host}: {p} should be installed (and stopped), supervisord does not know it")
        elif states[p] in RUNNING_STATES:
            problems.append(f"{host}: {p} should be stopped, supervisord says {states[p]}")
    _fail(problems)
    return {p: states.get(p) for p in running + not_running}


# --- the steady state ----------------------------------------------------------------------------------
def steady_state(cc: CallCenter, timeout: float = 20.0) -> dict[str, Any]:
    """Chaos Toolkit's steady state of the call center: every board controlled, every trunk routed by
    the PBX, and the basic calls pass (an IVR call whose self-service query reads the database, an
    outbound call, an agent call answered by a seat). Returns what was measured; raises CheckFailed."""
    t0 = time.monotonic()
    cc.wait_controlled(timeout)
    boards = cc.boards("voice") + cc.boards("fax")
    deadline = time.monotonic() + timeout
    trunks = pbx_trunks(cc)
    while not all(trunks.get(trunk_uri(b), "").startswith("A") for b in boards) and time.monotonic() < deadline:
        time.sleep(0.3)
        trunks = pbx_trunks(cc)
    problems = [f"the PBX does not route to {b.name} ({trunk_uri(b)}: {trunks.get(trunk_uri(b), 'absent')})"
                for b in boards if not trunks.get(trunk_uri(b), "").startswith("A")]
    _fail(problems)
    ex = cc.lab.executor(cc.pbx_host)
    seats_before = read_stat_file(ex, SEATS_STAT)
    ivr = hold_calls(cc, "ivr", 1, hold_ms=1000)
    ivr_host = cc.primary
    last = (ivr_stats_or_none(cc, ivr_host) or {}).get("last_query") or {}
    outbound = outbound_campaign(cc, 1, hold_ms=1000)
    agent = hold_calls(cc, "agent", 1, hold_ms=1000)
    seats = uas_delta(seats_before, wait_stat_file(ex, SEATS_STAT, time.time()))
    if ivr.answered != 1:
        problems.append(f"the basic IVR call was not answered ({ivr.refused or ivr.timeouts})")
    if not (last.get("ok") and last.get("rows") and last.get("ts", 0) > time.time() - 60):
        problems.append(f"the IVR on {ivr_host} did not read the database for the basic call: {last}")
    if outbound.carrier_answered != 1:
        problems.append(f"the basic outbound call was not answered by the carrier ({outbound})")
    if agent.answered != 1 or seats["answered"] < 1:
        problems.append(f"the basic agent call: {agent.answered} answered, {seats['answered']} seat legs")
    _fail(problems)
    return {"ivr_answered": ivr.answered, "ivr_db": last.get("db"), "outbound_answered": outbound.carrier_answered,
            "agent_answered": agent.answered, "seat_legs": seats["answered"],
            "seconds": round(time.monotonic() - t0, 1)}


# --- detection: what the operators' monitoring sees ------------------------------------------------------
def detect(cc: CallCenter, fault, board: Board | None = None, limit_s: float = 15.0) -> dict[str, Any]:
    """Wait (bounded) until the fault shows where the operators would see it; return how and when.

    line cut / driver crash: the PBX marks the board's trunk inactive (its OPTIONS probe failed);
    CTI crash: every board reports no controller; IVR crash: supervisord shows the IVR not running;
    whole IPC down: the PBX marks every trunk of that IPC inactive.
    """
    kind, host = fault.kind, fault.host
    if kind == "line_down" or (kind == "crash" and board is not None):
        how = f"the PBX marks {board.name}'s trunk inactive"

        def seen() -> bool:
            return pbx_trunks(cc).get(trunk_uri(board), "").startswith("I")
    elif kind == "crash" and fault.target == "cti":
        how = "every board reports no controller"

        def seen() -> bool:
            stats = [board_stats_or_none(cc, b) for b in cc.boards("voice") + cc.boards("fax")]
            return all(st is None or not st.get("controlled") for st in stats)
    elif kind == "crash":
        how = f"supervisord shows {fault.target} on {host} not running"

        def seen() -> bool:
            return (programs_or_none(cc, host) or {}).get(fault.target) not in RUNNING_STATES
    elif kind == "ipc_down":
        mine = [trunk_uri(b) for b in cc.boards("voice") + cc.boards("fax") if b.host == host]
        how = f"the PBX marks every trunk of {host} inactive"

        def seen() -> bool:
            t = pbx_trunks(cc)
            return all(t.get(u, "").startswith("I") for u in mine)
    else:
        raise ValueError(f"no detection for a {kind} fault")
    deadline = time.monotonic() + limit_s
    while not seen():
        if time.monotonic() >= deadline:
            raise CheckFailed(f"{fault.kind} of {fault.target} on {host}: not visible after {limit_s:g} s ({how})")
        time.sleep(0.1)
    t = time.time()
    return {"how": how, "detected_at": round(t, 6), "detected_after_s": round(t - fault.at, 3)}


# --- calls in flight ------------------------------------------------------------------------------------
@dataclass
class InFlight:
    """Caller groups held across a fault, each on a known board."""

    groups: dict[str, dict[str, Any]]  # name -> {"board", "count", "host"}
    placed: dict[str, int]  # board -> calls in use once the filler hung up
    hold_s: float
    started: float
    futures: dict[str, concurrent.futures.Future] = field(repr=False, default_factory=dict)
    pool: concurrent.futures.ThreadPoolExecutor | None = field(repr=False, default=None)
    results: dict[str, CallResult] = field(default_factory=dict)

    def wait(self, extra_s: float = 60.0) -> dict[str, CallResult]:
        """The groups' results, once they have hung up (bounded: hold + extra_s)."""
        deadline = self.started + self.hold_s + extra_s
        for name, fut in self.futures.items():
            if name not in self.results:
                self.results[name] = fut.result(timeout=max(1.0, deadline - time.time()))
        if self.pool is not None:
            self.pool.shutdown(wait=False)
        return self.results

    def done(self) -> bool:
        return all(f.done() for f in self.futures.values())


def _in_use(cc: CallCenter, board: Board) -> int:
    st = board_stats_or_none(cc, board)
    return -1 if st is None else sum(p["in_use"] for p in st["pools"].values())


def _wait_in_use(cc: CallCenter, board: Board, want: int, limit_s: float, at_least: bool = False) -> int:
    deadline = time.monotonic() + limit_s
    n = _in_use(cc, board)
    while (n < want if at_least else n != want) and time.monotonic() < deadline:
        time.sleep(0.2)
        n = _in_use(cc, board)
    return n


def hold_in_flight(cc: CallCenter, on_primary: int, on_secondary: int, hold_s: float) -> InFlight:
    """Hold `on_primary` IVR calls on the primary's voice board and `on_secondary` on the secondary's,
    for `hold_s` seconds, through the PBX as callers do: the PBX hunts the primary's board first, so
    a short filler group takes the rest of it while the secondary's group arrives."""
    primary = [b for b in cc.boards("voice") if b.host == cc.primary]
    secondary = [b for b in cc.boards("voice") if b.host == cc.secondary]
    if len(primary) != 1 or len(secondary) != 1:
        raise ValueError(f"one voice board per IPC expected, the layout has {primary} / {secondary}")
    pb, sb = primary[0], secondary[0]
    filler = pb.channels - on_primary
    if not (1 <= on_primary < pb.channels and 1 <= on_secondary < sb.channels and filler >= 1):
        raise ValueError(f"in-flight calls {on_primary}/{on_secondary} do not fit {pb.channels}/{sb.channels}")
    for b in (pb, sb):
        if _in_use(cc, b) != 0:
            raise CheckFailed(f"{b.name} already holds {_in_use(cc, b)} calls before the in-flight groups")
    ex = cc.lab.executor(cc.carrier_host)
    scenario = f"{SIPP_DIR}/{SCENARIOS['ivr']}"
    hold_ms = int(hold_s * 1000)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=3, thread_name_prefix="in-flight")
    fl = InFlight({"primary": {"board": pb.name, "host": pb.host, "count": on_primary},
                   "secondary": {"board": sb.name, "host": sb.host, "count": on_secondary}},
                  {}, hold_s, time.time(), pool=pool)

    def group(count: int, hold: int) -> CallResult:
        return place_calls(ex, scenario, cc.pbx_target, count, RATE, hold, answer_timeout_ms=5000)

    try:
        fl.futures["primary"] = pool.submit(group, on_primary, hold_ms)
        got = _wait_in_use(cc, pb, on_primary, 15)
        if got != on_primary:
            raise CheckFailed(f"{pb.name} holds {got} calls, not the {on_primary} placed on it")
        # The filler hangs up once the secondary's group is up (it only has to be there meanwhile; the
        # lab's stats are read through docker exec, slow on a loaded machine: leave it a wide margin).
        fl.futures["filler"] = pool.submit(group, filler, FILLER_HOLD_MS)
        got = _wait_in_use(cc, pb, pb.channels, FILLER_HOLD_MS / 2000, at_least=True)
        if got != pb.channels:
            raise CheckFailed(f"{pb.name} holds {got} calls, not full ({pb.channels}) with the filler")
        fl.futures["secondary"] = pool.submit(group, on_secondary, hold_ms)
        got = _wait_in_use(cc, sb, on_secondary, FILLER_HOLD_MS / 2000, at_least=True)
        if got != on_secondary:
            raise CheckFailed(f"{sb.name} holds {got} calls, not the {on_secondary} that found {pb.name} full")
        fl.futures["filler"].result(timeout=FILLER_HOLD_MS / 1000 + 60)
        got = _wait_in_use(cc, pb, on_primary, 10)
        fl.placed = {pb.name: got, sb.name: _in_use(cc, sb)}
        if fl.placed != {pb.name: on_primary, sb.name: on_secondary}:
            raise CheckFailed(f"calls in flight placed {fl.placed}, wanted {pb.name}={on_primary}, "
                              f"{sb.name}={on_secondary}")
    except BaseException:
        # Leave no call behind for the next scenario: let the groups already placed hang up (bounded).
        for fut in fl.futures.values():
            with contextlib.suppress(Exception):
                fut.result(timeout=hold_s + 60)
        pool.shutdown(wait=False)
        raise
    return fl


def in_flight_still_held(cc: CallCenter, fl: InFlight, failed_hosts: set[str]) -> dict[str, dict[str, int]]:
    """Read before the groups hang up: the calls each surviving board still holds now, after the fault and
    the operators' response. Each group must still be up in full, else the calls were not in flight
    through the response (dropped, or the scenario's hold was too short for this machine)."""
    boards = {b.name: b for b in cc.boards("voice")}
    out = {}
    for name, g in fl.groups.items():
        if g["host"] in failed_hosts:
            continue
        running = name in fl.futures and not fl.futures[name].done()
        out[g["board"]] = {"group": name, "calls": g["count"], "in_use": _in_use(cc, boards[g["board"]]),
                           "group_running": running}
    problems = [f"{v['in_use']} of the {v['calls']} calls in flight on {b} still up when the response was "
                f"checked" + ("" if v["group_running"] else f" (their {fl.hold_s:g} s hold had already ended)")
                for b, v in out.items() if v["in_use"] < v["calls"] or not v["group_running"]]
    _fail(problems)
    return out


def in_flight_verdict(results: dict[str, CallResult], groups: dict[str, dict], failed_hosts: set[str]) -> dict:
    """Calls in flight on the IPCs that did not fail must all have ended normally (answered, held,
    hung up with a 200 to their BYE); those on a failed IPC are expected lost and only reported."""
    out: dict[str, Any] = {}
    problems = []
    for name, g in groups.items():
        r = results[name]
        lost = r.dropped + r.timeouts + r.failed
        side = "failed" if g["host"] in failed_hosts else "survivor"
        out[name] = {"board": g["board"], "host": g["host"], "side": side, "calls": g["count"],
                     "answered": r.answered, "completed": r.completed, "dropped": r.dropped,
                     "timeouts": r.timeouts, "failed": r.failed}
        if side == "survivor" and (lost or r.answered != g["count"]):
            problems.append(f"{r.answered} of {g['count']} calls in flight on the surviving {g['board']} "
                            f"({g['host']}) were answered and {lost} of them lost: {r.dropped} dropped, "
                            f"{r.timeouts} timed out, {r.failed} failed (SIPp {r.stats_file})")
    _fail(problems)
    return out


# --- RTO -------------------------------------------------------------------------------------------------
@dataclass
class Probe:
    n: int
    launched: float
    answered: bool
    answered_at: float | None  # SIPp's last row of the probe (upper bound of the 200's arrival)
    refused: dict[int, int]
    timeouts: int
    served: bool | None = None  # with served=True: the IVR ran the probe's self-service query
    served_by: str | None = None


@dataclass
class Rto:
    fault_at: float
    probes: list[Probe]
    first: Probe | None
    rto_s: float | None
    limit_hit: str | None = None

    def summary(self) -> dict[str, Any]:
        return {"rto_s": None if self.rto_s is None else round(self.rto_s, 3), "probes": len(self.probes),
                "probes_refused": sum(1 for p in self.probes if p.refused),
                "probes_timed_out": sum(1 for p in self.probes if p.timeouts),
                "probes_unserved": sum(1 for p in self.probes if p.answered and p.served is False),
                "first_probe_launched_s": round(self.probes[0].launched - self.fault_at, 3) if self.probes else None,
                "answered_probe_launched_s": None if self.first is None
                else round(self.first.launched - self.fault_at, 3),
                "served_by": None if self.first is None else self.first.served_by, "limit_hit": self.limit_hit}


def _served(cc: CallCenter, account: str, since: float, wait_s: float = 2.5) -> str | None:
    """The IPC whose IVR ran the self-service query of `account` (through KCBP) after `since`, or None."""
    deadline = time.monotonic() + wait_s
    while True:
        for host in (cc.primary, cc.secondary):
            if host is None:
                continue
            last = (ivr_stats_or_none(cc, host) or {}).get("last_query") or {}
            if last.get("account") == account and last.get("ok") and last.get("ts", 0) >= since:
                return host
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def _probe_call(ex, target: str, answer_timeout_ms: int, inf: str | None) -> tuple[bool, float | None, dict, int]:
    """One IVR call, held 0 ms, in a single exec on the carrier (SIPp, then its -trace_stat CSV):
    (answered, SIPp's last row time, refused by code, timed out). Lean on purpose: every exec before
    the INVITE leaves would count in the RTO."""
    stat = f"{PROBE_STAT_DIR}/probe-{uuid.uuid4().hex[:12]}.csv"
    timeout_s = max(1, math.ceil(answer_timeout_ms / 1000.0 + 2))
    argv = ["sipp", "-sf", f"{SIPP_DIR}/{SCENARIOS['ivr']}", target, "-nostdin", "-m", "1", "-l", "1", "-r", "10",
            "-d", "0", "-timeout", f"{timeout_s}s", "-timeout_error", "-recv_timeout", str(answer_timeout_ms),
            "-trace_stat", "-stf", stat, "-fd", "1", "-inf", inf or f"{SIPP_DIR}/accounts.csv"]
    script = f"mkdir -p {PROBE_STAT_DIR}; {shlex.join(argv)} >/dev/null 2>&1; cat {stat}; rm -f {stat}"
    rc, out, err = ex.run(["sh", "-c", script], timeout_s + 20)
    try:
        st = parse_trace_stat(out, source=stat)
    except SippError as exc:
        raise SippError(f"probe call: {exc} (exit {rc}: {err.strip()[-300:]})") from exc
    counters, failures = st["counters"], st["failures"]
    answered = counters.get("answered", 0) >= 1
    refused = {int(m.group(1)): v for k, v in counters.items() if (m := re.match(r"refused_?(\d{3})$", k)) and v}
    timed_out = st["calls"]["current"] + sum(v for k, v in failures.items()
                                            if k.lower() in ("maxudpretrans", "timeoutonrecv", "timeoutonsend"))
    return answered, st["now"] if answered else None, refused, timed_out


def prepare_probes(cc: CallCenter, max_probes: int = 300) -> str:
    """Write the probes' injection files on the carrier (one per probe, each with its own account of
    letters and digits, as KCBP accepts them: the IVR's last query names it). Done before the fault,
    so that the first probe leaves at once. Returns the tag that `probe_rto(prepared=...)` takes."""
    tag = f"{int(time.time() * 1000) % 10**9:09d}"
    rc, _o, err = cc.lab.executor(cc.carrier_host).run(
        ["sh", "-c", f"mkdir -p {PROBE_INF_DIR} && i=1; while [ $i -le {max_probes} ]; do "
                     f"printf 'SEQUENTIAL\\nP{tag}%04d;\\n' $i > {PROBE_INF_DIR}/{tag}-$i.csv; i=$((i+1)); done"], 60)
    if rc != 0:
        raise LabError(f"cannot write the probes' injection files: {err.strip()}")
    return f"{tag}:{max_probes}"


def probe_rto(cc: CallCenter, fault_at: float, *, served: bool = False, prepared: str | None = None,
              interval_s: float = 0.2, limit_s: float = 60.0, max_probes: int = 300,
              answer_timeout_ms: int = 3000) -> Rto:
    """Place single IVR calls, one after the other and at least `interval_s` apart, until one is
    answered (and, with `served`, its self-service query ran); bounded by `limit_s` and `max_probes`."""
    ex = cc.lab.executor(cc.carrier_host)
    if served:
        tag, n_files = (prepared or prepare_probes(cc, max_probes)).split(":")
        max_probes = min(max_probes, int(n_files))
    probes: list[Probe] = []
    deadline = time.monotonic() + limit_s
    limit_hit = None
    while True:
        if len(probes) >= max_probes:
            limit_hit = f"{max_probes} probes"
            break
        if time.monotonic() >= deadline:
            limit_hit = f"{limit_s:g} s"
            break
        n = len(probes) + 1
        launched = time.time()
        inf = f"{PROBE_INF_DIR}/{tag}-{n}.csv" if served else None
        answered, answered_at, refused, timed_out = _probe_call(ex, cc.pbx_target, answer_timeout_ms, inf)
        p = Probe(n, launched, answered, answered_at, refused, timed_out)
        if p.answered and served:
            p.served_by = _served(cc, f"P{tag}{n:04d}", launched)
            p.served = p.served_by is not None
        probes.append(p)
        if p.answered and (p.served or not served):
            break
        time.sleep(max(0.0, launched + interval_s - time.time()))
    first = probes[-1] if probes and probes[-1].answered and (probes[-1].served or not served) else None
    rto = None if first is None or first.answered_at is None else first.answered_at - fault_at
    return Rto(fault_at, probes, first, rto, limit_hit)


def rto_verdict(rto: Rto, limit_s: float, what: str) -> dict[str, Any]:
    s = rto.summary()
    if rto.rto_s is None:
        served = " and served by an IVR" if any(p.served is not None for p in rto.probes) else ""
        raise CheckFailed(f"{what}: no new call was answered{served} within the probing limit ({rto.limit_hit}); {s}")
    if rto.rto_s > limit_s:
        raise CheckFailed(f"{what}: the first new call was answered {rto.rto_s:.2f} s after the fault, "
                          f"the target is {limit_s:g} s; {s}")
    return s


# --- degraded capacity ------------------------------------------------------------------------------------
def hold_on_survivors(cc: CallCenter, kind: str, count: int) -> CallResult:
    """Offer `count` calls at once to what is left of the call center, held until all overlap."""
    return hold_calls(Survivors(cc), kind, count)


def degraded_verdict(result: CallResult, expected: int, what: str) -> dict[str, Any]:
    """CAP-D1/FAX-D1: exactly `expected` answered and held, every other call refused (503), none lost."""
    problems = []
    offered = result.attempted
    refused = result.refused_total
    if result.answered != expected:
        problems.append(f"{what}: {expected} calls should be answered at once, the lab answered {result.answered}")
    if refused != offered - expected:
        problems.append(f"{what}: {offered - expected} calls should be refused, {refused} were ({result.refused})")
    if result.timeouts or result.failed or result.dropped:
        problems.append(f"{what}: calls lost: {result.timeouts} timed out, {result.failed} failed, "
                        f"{result.dropped} dropped (SIPp {result.stats_file})")
    _fail(problems)
    return {"offered": offered, "answered": result.answered, "refused": result.refused}


def as_measured(obj: Any) -> Any:
    """Dataclasses (Rto, Probe, ...) as plain data for ctx['measured'] and the timeline."""
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj


# --- one switchover, end to end (the bench and the Sunday drill) ---------------------------------------------
@dataclass(frozen=True)
class Mode:
    """A failure mode of the DR principle: which fault on which IPC, and the plan's response."""

    name: str
    side: str  # primary | secondary
    fault: str  # line | driver | cti | ivr | down
    playbook: str  # playbooks/failover/<playbook>
    pbx_routes: bool  # the PBX routes around it by itself (the playbook only tidies up)
    target_s: float  # RTO target


MODES = {
    "primary-line": Mode("primary board line cut", "primary", "line", "dr3_primary_board_fault.yml", True, 1.0),
    "primary-driver": Mode("primary board driver crash", "primary", "driver", "dr3_primary_board_fault.yml", True,
                           1.0),
    "primary-cti": Mode("primary CTI crash", "primary", "cti", "dr4_primary_software_fault.yml", False, 30.0),
    "primary-ivr": Mode("primary IVR crash", "primary", "ivr", "dr4_primary_software_fault.yml", False, 30.0),
    "primary-down": Mode("whole primary IPC down", "primary", "down", "dr4_primary_software_fault.yml", False, 30.0),
    "secondary-line": Mode("secondary board line cut", "secondary", "line", "dr5_secondary_fault.yml", True, 1.0),
    "secondary-driver": Mode("secondary board driver crash", "secondary", "driver", "dr5_secondary_fault.yml", True,
                             1.0),
    "secondary-down": Mode("whole secondary IPC down", "secondary", "down", "dr5_secondary_fault.yml", True, 1.0),
}


def inject(cc: CallCenter, mode: Mode, timeline=None):
    """The mode's fault, injected by the nemesis; returns (fault, board or None)."""
    from .. import faults

    host = cc.primary if mode.side == "primary" else cc.secondary
    board = next((b for b in cc.boards("voice") if b.host == host), None)
    if mode.fault == "line":
        return faults.line_down(cc.lab, board, timeline), board
    if mode.fault == "driver":
        return faults.crash_driver(cc.lab, board, timeline), board
    if mode.fault in ("cti", "ivr"):
        return faults.crash(cc.lab, host, mode.fault, timeline), None
    if mode.fault == "down":
        return faults.ipc_down(cc.lab, host, timeline), None
    raise ValueError(f"unknown fault {mode.fault!r}")


def switchover(cc: CallCenter, mode: Mode, play, timeline=None, respond: bool = True) -> dict[str, Any]:
    """Inject `mode`'s fault, let the operators respond (`play(playbook) -> exit code` runs one of
    playbooks/failover), and time it: fault -> detected -> playbook -> first new call answered and
    served by an IVR. Faults the PBX routes around are probed from the fault on and the playbook runs
    after (not at all with respond=False: the PBX alone is timed); the others are probed from
    detection on, while the playbook runs. The fault is left in place (the caller undoes it and fails
    back). Returns the timings (seconds after the fault)."""
    if not respond and not mode.pbx_routes:
        raise ValueError(f"{mode.name} needs the operators' playbook")
    out: dict[str, Any] = {"mode": mode.name, "pbx_routes": mode.pbx_routes, "target_s": mode.target_s}
    prepared = prepare_probes(cc)
    fault, board = inject(cc, mode, timeline)
    out.update(fault=fault, board=board)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="switchover")
    try:
        if mode.pbx_routes:
            probes = pool.submit(probe_rto, cc, fault.at, served=True, prepared=prepared)
            detected = pool.submit(detect, cc, fault, board)
            rto = probes.result(timeout=120)
            out["detection"] = detected.result(timeout=60)
            t0 = time.time()
            rc = play(mode.playbook) if respond else None
        else:
            out["detection"] = detect(cc, fault, board)
            probes = pool.submit(probe_rto, cc, fault.at, served=True, prepared=prepared)
            t0 = time.time()
            rc = play(mode.playbook)
            t_end = time.time()
            rto = probes.result(timeout=180)
        t_end = time.time() if mode.pbx_routes else t_end
    finally:
        pool.shutdown(wait=False)
    out.update(rto=rto, playbook_rc=rc, playbook_start_s=round(t0 - fault.at, 3),
               playbook_s=round(t_end - t0, 3))
    det = out["detection"]["detected_after_s"]
    if rto.rto_s is not None:
        # RTO = detection + (operators' gap + playbook, when the recovery needs them) + recovery. A
        # negative recovery: callers were served again before that point (for the faults the PBX routes
        # around, the first call's own hunt found the other IPC before the PBX's OPTIONS probe marked
        # the silent board; after a playbook, the secondary served before the playbook's last check).
        if mode.pbx_routes:
            out["split"] = {"detection_s": round(det, 3), "playbook_s": 0.0, "recovery_s": round(rto.rto_s - det, 3)}
        else:
            out["split"] = {"detection_s": round(det, 3), "operator_gap_s": round(t0 - fault.at - det, 3),
                            "playbook_s": round(t_end - t0, 3), "recovery_s": round(rto.rto_s - (t_end - fault.at), 3)}
    return out
