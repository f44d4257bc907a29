"""The Sunday-morning drill (UPG-6): for each failure mode, the nemesis injects the fault, the
operators' response playbook runs, the basic call tests run, the fault is repaired, the failback
playbook runs and the basic call tests run again. Used by playbooks/upgrade/06_sunday_drill.yml
through `ccdrill failover-drill`; prints what happened as JSON."""

from __future__ import annotations

import json
import time

from . import faults
from .checks.basic import basic_calls
from .lab.callcenter import CallCenter

RESPONSES = {
    "dr3": "failover/dr3_primary_board_fault.yml",
    "dr4": "failover/dr4_primary_software_fault.yml",
    "dr5": "failover/dr5_secondary_fault.yml",
}
FAILBACK = "failover/dr7_failback.yml"


def inject(cc: CallCenter, mode: str) -> tuple[faults.Fault, object]:
    """The faults the plan names, one per drill: a line fault on the primary's board, a software fault
    (CTI crash) on the primary, a board driver crash on the secondary."""
    if mode == "dr3":
        board = next(b for b in cc.boards("voice") if b.host == cc.primary)
        return faults.line_down(cc.lab, board), board
    if mode == "dr4":
        return faults.crash_cti(cc.lab, cc.primary), None
    if mode == "dr5":
        board = next(b for b in cc.boards("voice") if b.host == cc.secondary)
        return faults.crash_driver(cc.lab, board), board
    raise ValueError(f"unknown drill {mode!r} (known: {', '.join(RESPONSES)})")


def run_drill(cc: CallCenter, mode: str) -> dict:
    from .cli import play

    t0 = time.time()
    fault, board = inject(cc, mode)
    response = play(RESPONSES[mode], cc.lab.name)
    cc.refresh()
    after_response = basic_calls(cc)
    repaired = faults.undo(cc.lab, fault, board)
    failback = play(FAILBACK, cc.lab.name)
    cc.refresh()
    after_failback = basic_calls(cc)
    ok = response.rc == 0 and failback.rc == 0 and after_response["ok"] and after_failback["ok"]
    return {"ok": ok, "fault": fault.as_dict(), "response": RESPONSES[mode], "response_rc": response.rc,
            "response_s": response.seconds, "basic_after_response": after_response, "repaired": repaired,
            "failback_rc": failback.rc, "failback_s": failback.seconds, "basic_after_failback": after_failback,
            "seconds": round(time.time() - t0, 1),
            "output_tail": "" if ok else (response.output[-1500:] + failback.output[-1500:])}


def run_drills(cc: CallCenter, modes: list[str]) -> dict:
    drills = {}
    for mode in modes:
        try:
            drills[mode] = run_drill(cc, mode)
        except Exception as exc:  # the report must still say which drill broke and how
            drills[mode] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if not drills[mode]["ok"]:
            break  # the lab is not back to normal: later drills would measure the wrong thing
    return {"ok": all(d["ok"] for d in drills.values()) and len(drills) == len(modes), "drills": drills}


def cmd_failover_drill(args) -> int:
    from .cli import _callcenter

    report = run_drills(_callcenter(args), args.modes)
    print(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1


def add_parser(sub) -> None:
    s = sub.add_parser("failover-drill", help="inject, respond, test, repair, fail back (Sunday's drill)")
    s.add_argument("modes", nargs="+", choices=sorted(RESPONSES))
    s.set_defaults(func=cmd_failover_drill)
