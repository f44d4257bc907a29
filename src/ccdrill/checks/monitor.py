"""The monitoring check (UPG-7) and the steady state of every fault scenario: every service the DR
principle expects is up (or stopped) on each IPC, every board is controlled, and calls do not fail."""

from __future__ import annotations

from ..lab.callcenter import CallCenter
from ..load.calls import hold_calls


def expected_programs(cc: CallCenter) -> dict[str, dict[str, str]]:
    """DR-2: {ipc: {program: RUNNING|STOPPED}} for the layout the lab is in."""
    layout = cc.layout
    out: dict[str, dict[str, str]] = {}
    for role, host in (("primary", layout["primary"]), ("secondary", layout["secondary"])):
        if not host:
            continue
        progs = {b["name"]: "RUNNING" for b in layout["voice_boards"] + layout["fax_boards"] if b["host"] == host}
        progs.update(kcxp="RUNNING", kcbp="RUNNING")
        if role == "primary":
            progs.update(cti="RUNNING", ivr="RUNNING")
        else:
            progs.update({"cti": "STOPPED", "ivr": "STOPPED", "kcxp-copy": "STOPPED", "kcbp-copy": "STOPPED"})
        out[host] = progs
    return out


def service_states(cc: CallCenter) -> list[str]:
    """Differences between what supervisord runs on each IPC and what DR-2 expects."""
    problems = []
    for host, progs in expected_programs(cc).items():
        running = cc.programs(host)
        for prog, state in progs.items():
            got = running.get(prog, "ABSENT")
            if got != state:
                problems.append(f"{host}: {prog} is {got}, DR-2 expects {state}")
    return problems


def monitor(cc: CallCenter, calls: int = 20) -> dict:
    problems = service_states(cc)
    try:
        cc.wait_controlled(timeout=5)
    except AssertionError as exc:
        problems.append(str(exc))
    res = hold_calls(cc, "ivr", calls, hold_ms=1000)
    if res.answered != calls or res.refused_total or res.failed or res.timeouts or res.dropped:
        problems.append(f"{calls} IVR calls: {res.answered} answered, refused {res.refused}, {res.failed} failed, "
                        f"{res.timeouts} timed out, {res.dropped} dropped")
    return {"ok": not problems, "problems": problems, "calls": calls, "answered": res.answered,
            "layout": cc.layout_name}
