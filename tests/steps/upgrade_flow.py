"""How the scenarios drive the upgrade weekend: the plan's step names mapped to its playbooks."""

from __future__ import annotations

import json

from ccdrill.cli import PlaybookRun, play
from ccdrill.lab.callcenter import CallCenter
from ccdrill.lab.runbook import read_ledger

STEP_PLAYBOOKS = {
    "approval": "upgrade/01_approval.yml",
    "announcement": "upgrade/02_announcement.yml",
    "friday": "upgrade/03_friday.yml",
    "saturday_am": "upgrade/04_saturday_am.yml",
    "saturday_pm": "upgrade/05_saturday_pm.yml",
    "sunday_drill": "upgrade/06_sunday_drill.yml",
    "monday": "upgrade/07_monday.yml",
}
# The sign-off the lab's operators give (UPG-1); a production run passes the real one with -e.
APPROVALS = {"it": {"by": "IT department (drill)", "on": "2026-11-20"},
             "business": {"by": "Customer service department (drill)", "on": "2026-11-20"}}


def run_step(cc: CallCenter, step: str, approvals: dict | None = None) -> PlaybookRun:
    extra = ["-e", json.dumps({"upgrade_approvals": approvals})] if approvals is not None else []
    run = play(STEP_PLAYBOOKS[step], cc.lab.name, extra)
    cc.refresh()
    return run


def ensure_target(cc: CallCenter, timeline=None) -> None:
    """Bring the lab to the target layout through the plan's own steps, in order, if it is not there yet."""
    done = read_ledger(cc.lab)["steps"]
    for step in ("approval", "announcement", "friday", "saturday_am"):
        if step in done:
            continue
        run = run_step(cc, step, APPROVALS if step == "approval" else None)
        if timeline is not None:
            timeline.event("playbook", name=run.playbook, rc=run.rc, changed=run.changed, seconds=run.seconds)
        assert run.rc == 0, f"{run.playbook} failed bringing the lab to the target layout:\n{run.output[-4000:]}"
