"""Steps of the IPC disaster-recovery features (features/failover.feature), in Chaos Toolkit's shape:
steady state, fault (ccdrill.faults, never a playbook), the operators' response (the plan's failover
playbooks through ccdrill.cli.run_playbook), hypothesis (counted), and a rollback that always runs.

The rollback is armed by the first fault of a scenario (a fixture finalizer): it waits for the calls
still held, undoes the faults, runs failover/dr7_failback.yml and checks the steady state again.
A scenario's last step runs it in the open; the finalizer only acts when a step before it failed.
"""

from __future__ import annotations

import concurrent.futures
import re
import time

import pytest
from pytest_bdd import given, parsers, then, when

from ccdrill import cli, faults
from ccdrill.checks import failover as fo
from ccdrill.checks import parity
from ccdrill.checks.capacity import CheckFailed
from ccdrill.lab.callcenter import CallCenter

from .common import measure as _measure

FAILBACK = "dr7_failback.yml"


def _host(cc: CallCenter, side: str) -> str:
    host = cc.primary if side == "primary" else cc.secondary
    assert host, f"the {cc.layout_name} layout has no {side} IPC"
    return host


def _voice_board(cc: CallCenter, side: str):
    host = _host(cc, side)
    boards = [b for b in cc.boards("voice") if b.host == host]
    assert len(boards) == 1, f"one voice board expected on the {side} ({host}), the layout has {boards}"
    return boards[0]


def _play(cc: CallCenter, timeline, playbook: str) -> float:
    t0 = time.time()
    rc = cli.run_playbook(f"failover/{playbook}", cc.lab.name)
    took = time.time() - t0
    timeline.event("playbook", name=f"failover/{playbook}", rc=rc, started=round(t0, 6), seconds=round(took, 1))
    assert rc == 0, f"playbooks/failover/{playbook} failed (exit {rc}); see its output above"
    return took


# --- the rollback ----------------------------------------------------------------------------------------
class Rollback:
    """Undo the nemesis' faults, fail back with dr7_failback.yml, check the steady state. Runs once."""

    def __init__(self, cc: CallCenter, timeline, ctx: dict):
        self.cc, self.timeline, self.ctx = cc, timeline, ctx
        self.faults: list[tuple[faults.Fault, object]] = []
        self.done = False

    def arm(self, fault: faults.Fault, board=None) -> None:
        self.faults.append((fault, board))

    def finalize(self) -> None:
        """After the scenario: the whole rollback if a fault was injected, else only let held calls end."""
        if self.faults:
            self.run()
        elif self.ctx.get("in_flight") is not None and not self.done:
            self.ctx["in_flight"].wait()

    def run(self) -> dict:
        if self.done:
            return {}
        self.done = True
        t0 = time.time()
        problems, report = [], {}
        fl = self.ctx.get("in_flight")
        if fl is not None:
            try:
                fl.wait()
            except Exception as exc:  # noqa: BLE001  (the rollback goes on; the failure is reported below)
                problems.append(f"calls in flight did not end: {exc}")
        for fault, board in reversed(self.faults):
            try:
                report[f"undo {fault.kind} {fault.target}"] = faults.undo(self.cc.lab, fault, board, self.timeline)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"undo of {fault.kind} {fault.target}: {exc}")
        try:
            report["failback_s"] = round(_play(self.cc, self.timeline, FAILBACK), 1)
            report["steady_state"] = fo.steady_state(self.cc)
        except Exception as exc:  # noqa: BLE001
            problems.append(str(exc))
        report["seconds"] = round(time.time() - t0, 1)
        self.timeline.event("rollback", ok=not problems, problems=problems, **report)
        if problems:
            raise CheckFailed("rollback: " + "; ".join(problems))
        return report


@pytest.fixture
def rollback(request, callcenter, timeline, ctx) -> Rollback:
    rb = Rollback(callcenter, timeline, ctx)
    request.addfinalizer(rb.finalize)
    return rb


def _inject(ctx: dict, rollback: Rollback, fault: faults.Fault, board=None) -> None:
    rollback.arm(fault, board)
    ctx["fault"], ctx["fault_board"] = fault, board
    ctx.setdefault("failed_hosts", set()).add(fault.host)
    _measure(ctx, "fault", {k: v for k, v in fault.as_dict().items() if k != "original"})


# --- Given: the steady state ---------------------------------------------------------------------------------
@given("the steady state holds: every board controlled, basic calls pass")
def steady_state(callcenter, ctx):
    _measure(ctx, "steady_state_before", fo.steady_state(callcenter))
    ctx["probe_tag"] = fo.prepare_probes(callcenter)


@given(parsers.parse("callers in flight: {on_primary:d} on the primary's board and {on_secondary:d} on the "
                     "secondary's, held for {hold:d} s"))
def callers_in_flight(callcenter, ctx, rollback, on_primary, on_secondary, hold):
    ctx["in_flight"] = fl = fo.hold_in_flight(callcenter, on_primary, on_secondary, hold)
    _measure(ctx, "in_flight_placed", fl.placed)


# --- When: the nemesis ------------------------------------------------------------------------------------------
@when(parsers.re(r"the nemesis (?P<what>cuts the line of|crashes the driver of) the (?P<side>primary|secondary)'s "
                 r"voice board"))
def nemesis_board(callcenter, ctx, rollback, timeline, what, side):
    board = _voice_board(callcenter, side)
    if what.startswith("cuts"):
        fault = faults.line_down(callcenter.lab, board, timeline)
    else:
        fault = faults.crash_driver(callcenter.lab, board, timeline)
    _inject(ctx, rollback, fault, board)


@when(parsers.re(r"the nemesis crashes the (?P<side>primary|secondary)'s (?P<program>CTI|IVR)"))
def nemesis_program(callcenter, ctx, rollback, timeline, side, program):
    fault = faults.crash(callcenter.lab, _host(callcenter, side), program.lower(), timeline)
    _inject(ctx, rollback, fault)


@when(parsers.re(r"the nemesis takes the whole (?P<side>primary|secondary) IPC down"))
def nemesis_ipc_down(callcenter, ctx, rollback, timeline, side):
    _inject(ctx, rollback, faults.ipc_down(callcenter.lab, _host(callcenter, side), timeline))


@when(parsers.re(r"the nemesis sets (?P<key>\w+) of the (?P<program>[\w-]+) configuration on the "
                 r"(?P<side>primary|secondary) to (?P<value>\S+)"))
def nemesis_config(callcenter, ctx, rollback, timeline, key, program, side, value):
    fault = faults.config_drift(callcenter.lab, _host(callcenter, side), program, key, int(value)
                                if value.isdigit() else value, timeline)
    _inject(ctx, rollback, fault)


# --- When: the operators ------------------------------------------------------------------------------------------
@when("the operators see the fault")
def operators_see(callcenter, ctx):
    _measure(ctx, "detection", fo.detect(callcenter, ctx["fault"], ctx.get("fault_board")))


def _start_probes(callcenter, ctx) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rto-probes")
    ctx["probes"] = pool.submit(fo.probe_rto, callcenter, ctx["fault"].at, served=True, prepared=ctx.get("probe_tag"))
    pool.shutdown(wait=False)


@when("new calls are probed from the fault on")
def probe_from_fault(callcenter, ctx):
    _start_probes(callcenter, ctx)


@when(parsers.re(r"the operators run (?P<playbook>\w+\.yml)(?P<probing> while new calls are probed)?$"))
def operators_run(callcenter, ctx, timeline, playbook, probing):
    if probing:
        _start_probes(callcenter, ctx)
    _measure(ctx, f"playbook_{playbook}_s", round(_play(callcenter, timeline, playbook), 1))


@when("the fault is repaired and the operators fail back with dr7_failback.yml")
def repair_and_fail_back(callcenter, ctx, rollback, timeline):
    for fault, board in reversed(rollback.faults):
        _measure(ctx, f"repaired_{fault.kind}_{fault.target}", faults.undo(callcenter.lab, fault, board, timeline))
    _measure(ctx, "failback_s", round(_play(callcenter, timeline, FAILBACK), 1))


@when(parsers.re(r"the carrier offers (?P<count>\d+) (?P<kind>IVR|fax) calls at once to what is left of the call "
                 r"center"))
def offer_to_survivors(callcenter, ctx, count, kind):
    ctx["degraded"] = fo.hold_on_survivors(callcenter, kind.lower(), int(count))


# --- Then: the hypothesis -------------------------------------------------------------------------------------------
@then(parsers.re(r"a new call is answered and served again within (?P<limit>[\d.]+) s of the fault"))
def answered_again_within(ctx, limit):
    rto = ctx["probes"].result(timeout=180)
    _measure(ctx, "rto", rto.summary())
    fo.rto_verdict(rto, float(limit), "RTO")


_PROGRAMS = {"CTI": ["cti"], "IVR": ["ivr"], "KCXP": ["kcxp"], "KCBP": ["kcbp"], "KCXP copy": ["kcxp-copy"],
             "KCBP copy": ["kcbp-copy"]}


def _program_list(cc: CallCenter, host: str, text: str | None) -> list[str]:
    if not text or text.strip() == "nothing":
        return []
    out = []
    for item in re.split(r", | and ", text.strip()):
        item = item.strip()
        if item in ("driver", "the driver"):
            out += [b.name for b in cc.boards("voice") if b.host == host]
        elif item in ("fax driver", "the fax driver"):
            out += [b.name for b in cc.boards("fax") if b.host == host]
        elif item in _PROGRAMS:
            out += _PROGRAMS[item]
        else:
            raise ValueError(f"unknown service {item!r} in {text!r}")
    return out


@then(parsers.re(r"on the (?P<side>primary|secondary) supervisord shows (?P<running>.+?) running"
                 r"(?: and (?P<stopped>.+) stopped)?$"))
def supervisord_shows(callcenter, ctx, side, running, stopped):
    host = _host(callcenter, side)
    states = fo.programs_or_none(callcenter, host)
    assert states is not None, f"{host} does not answer: supervisord cannot be read"
    _measure(ctx, f"programs_{side}", states)
    fo.expect_states(states, host, _program_list(callcenter, host, running), _program_list(callcenter, host, stopped))


@then(parsers.re(r"(?P<count>\d+) IVR calls at once are all answered by the (?P<board_side>primary|secondary)'s board "
                 r"and served by the (?P<ivr_side>primary|secondary)'s IVR"))
def answered_by(callcenter, ctx, count, board_side, ivr_side):
    count = int(count)
    board, ivr_host = _voice_board(callcenter, board_side), _host(callcenter, ivr_side)
    boards = callcenter.boards("voice")
    before = {b.name: fo.board_stats_or_none(callcenter, b) for b in boards}
    ivr_before = fo.ivr_stats_or_none(callcenter, ivr_host)
    assert ivr_before is not None, f"the IVR on {ivr_host} does not answer"
    result = fo.hold_on_survivors(callcenter, "ivr", count)
    time.sleep(0.5)  # the last sessions' queries
    after = {b.name: fo.board_stats_or_none(callcenter, b) for b in boards}
    ivr_after = fo.ivr_stats_or_none(callcenter, ivr_host) or {}
    per_board = {n: (after[n]["calls"]["ivr"] - before[n]["calls"]["ivr"]) if before[n] and after[n] else None
                 for n in before}
    sessions = ivr_after.get("sessions", 0) - ivr_before["sessions"]
    queries_ok = ivr_after.get("queries", {}).get("ok", 0) - ivr_before["queries"].get("ok", 0)
    _measure(ctx, "answered_by", {"offered": count, "answered": result.answered, "per_board": per_board,
                                  "ivr_host": ivr_host, "ivr_sessions": sessions, "ivr_queries_ok": queries_ok})
    problems = []
    if result.answered != count or result.refused_total or result.timeouts:
        problems.append(f"{result.answered} of {count} calls answered ({result.refused}, {result.timeouts} timed out)")
    if per_board.get(board.name) != count:
        problems.append(f"{board.name} ({board.host}) answered {per_board.get(board.name)} of them: {per_board}")
    if sessions != count or queries_ok != count:
        problems.append(f"the IVR on {ivr_host} ran {sessions} sessions and {queries_ok} self-service queries "
                        f"for them, not {count}")
    if problems:
        raise CheckFailed("; ".join(problems))


@then(parsers.re(r"the calls in flight on the surviving IPC were not dropped, those on the "
                 r"(?P<side>primary|secondary)'s board are counted"))
def in_flight_kept(callcenter, ctx, side):
    fl = ctx["in_flight"]
    failed = {_host(callcenter, side)}
    # Counted before they hang up: the survivors' calls lasted through the fault and the response.
    held = fo.in_flight_still_held(callcenter, fl, failed)
    _measure(ctx, "in_flight_held_at_check", held)
    results = fl.wait()
    verdict = fo.in_flight_verdict(results, fl.groups, failed)
    _measure(ctx, "in_flight", verdict)


@then(parsers.re(r"(?P<answered>\d+) (?P<kind>IVR|fax) calls are answered at once and the other (?P<refused>\d+) "
                 r"refused"))
def degraded_capacity(ctx, answered, kind, refused):
    result = ctx["degraded"]
    assert result.attempted == int(answered) + int(refused), f"{result.attempted} calls offered"
    _measure(ctx, f"degraded_{kind.lower()}", fo.degraded_verdict(result, int(answered), f"degraded {kind}"))


@then(parsers.re(r"the (?P<side>primary|secondary)'s fax board held (?P<count>\d+) ports at the peak"))
def fax_board_peak(callcenter, ctx, side, count):
    host = _host(callcenter, side)
    stats = fo.Survivors(callcenter).all_board_stats("fax")
    mine = {n: st["peak"] for n, st in stats.items() if st.get("ipc") == host}
    _measure(ctx, "fax_peak", mine)
    assert sum(mine.values()) == int(count), f"the fax board(s) of {host} held {mine} ports at the peak, not {count}"


# --- DR-1 and DR-2 --------------------------------------------------------------------------------------------
@then("the parity check finds no difference in the versions and configuration of driver, CTI, IVR, KCXP and KCBP")
def parity_clean(callcenter, ctx):
    rep = parity.check(callcenter)
    ctx["parity"] = rep
    _measure(ctx, "parity", rep.as_dict())
    assert not rep.differences, "the IPCs differ:\n  " + "\n  ".join(str(d) for d in rep.differences)


@then(parsers.re(r"the parity check names (?P<key>\w+) of the (?P<program>[\w-]+) configuration as the only "
                 r"difference"))
def parity_names(callcenter, ctx, key, program):
    rep = parity.check(callcenter)
    _measure(ctx, "parity", rep.as_dict())
    named = [(d.what, d.key) for d in rep.differences]
    assert len(rep.differences) == 1 and rep.differences[0].key == key and program in rep.differences[0].what, (
        f"the parity check should name {program}.{key} alone, it named {named}")


@then("the secondary's KCXP copy and KCBP copy point at the secondary itself")
def copies_point_at_secondary(callcenter, ctx):
    host = callcenter.secondary
    snap = parity.snapshot(callcenter.lab, host)
    own = callcenter.lab.inv.address(host)
    port = int(callcenter.vars.get("kcxp_port", 7100))
    kx, kb = snap["configs"].get("kcxp-copy"), snap["configs"].get("kcbp-copy")
    _measure(ctx, "copies", {"kcxp-copy": kx, "kcbp-copy": kb})
    assert kx and kb, f"{host} has no KCXP/KCBP copy configured: {sorted(snap['configs'])}"
    assert kx.get("upstream") is None and kx.get("listen") in (own, "0.0.0.0"), (
        f"the KCXP copy on {host} must stand alone on its own address ({own}): {kx}")
    assert kb.get("kcxp") in (f"{own}:{port}", f"127.0.0.1:{port}"), (
        f"the KCBP copy on {host} must use the secondary's own KCXP ({own}:{port}): {kb}")


@then("the secondary's KCXP bridges to the primary's, so the primary's CTI controls every board")
def bridge_and_control(callcenter, ctx):
    kcxp = callcenter.lab.ctl(callcenter.secondary, int(callcenter.vars["kcxp_ctl_port"]))
    cti = callcenter.lab.ctl(callcenter.primary, int(callcenter.vars["cti_ctl_port"]))
    time.sleep(0.5)
    cti2 = callcenter.lab.ctl(callcenter.primary, int(callcenter.vars["cti_ctl_port"]))
    boards = {b.name: fo.board_stats_or_none(callcenter, b) for b in callcenter.boards("voice") +
              callcenter.boards("fax")}
    _measure(ctx, "control", {"secondary_kcxp_upstream_connected": kcxp.get("upstream_connected"),
                              "primary_cti_heartbeats_in_0.5s": cti2["heartbeats_sent"] - cti["heartbeats_sent"],
                              "controlled": {n: bool(st and st.get("controlled")) for n, st in boards.items()}})
    assert kcxp.get("upstream_connected") is True, f"the secondary's KCXP is not bridged to the primary's: {kcxp}"
    assert cti2["heartbeats_sent"] > cti["heartbeats_sent"], "the primary's CTI sends no heartbeats"
    assert set(cti["boards"]) >= set(boards), f"the primary's CTI controls {cti['boards']}, not all of {list(boards)}"
    assert all(st and st.get("controlled") for st in boards.values()), f"boards without a controller: {boards}"


# --- the rollback, in the open --------------------------------------------------------------------------------
@then("after the rollback the steady state holds again")
def after_rollback(ctx, rollback):
    _measure(ctx, "rollback", rollback.run())
