"""The runbook ledger as Python sees it (written by the playbooks, role `runbook`, on the ledger host)."""

from __future__ import annotations

import json

from .world import Lab

LEDGER_FILE = "/var/lib/ccdrill/runbook.json"
TARGET_AFTER = "board_move"  # recorded by Saturday morning once the board has moved


def read_ledger(lab: Lab) -> dict:
    host = lab.inv.hosts_of("pbx")[0]
    rc, out, _err = lab.exec(host, ["cat", LEDGER_FILE], 10)
    if rc != 0 or not out.strip():
        return {"steps": {}}
    return json.loads(out)


def current_layout(lab: Lab) -> str:
    return "target" if TARGET_AFTER in read_ledger(lab).get("steps", {}) else "baseline"


class RunbookError(RuntimeError):
    """A step recorded out of the plan's order, or one the plan does not have."""


def plan_order(root) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """The plan's steps as the runbook role knows them: (order, optional, needs of each migration batch)."""
    from pathlib import Path

    import yaml

    d = yaml.safe_load((Path(root) / "roles" / "runbook" / "defaults" / "main.yml").read_text())
    return list(d["runbook_order"]), list(d.get("runbook_optional") or []), dict(d.get("runbook_needs") or {})


def needed_before(step: str, root) -> list[str]:
    """The steps the plan puts before `step` (the same rule as roles/runbook/tasks/gate.yml)."""
    order, optional, needs = plan_order(root)
    if step not in order:
        raise RunbookError(f"unknown step {step!r}; the plan's steps: {', '.join(order)}")
    if step in needs:
        return list(needs[step])
    return [s for s in order[: order.index(step)] if s not in optional and s not in needs]


def record_by_hand(lab: Lab, step: str, by: str, reason: str, root) -> bool:
    """Record a step done outside the playbooks (an operator's sign-off), in the plan's order.

    Returns False when the ledger already records it. The entry says who and why, so a report never
    mistakes it for a playbook's run."""
    import datetime

    if not by.strip() or not reason.strip():
        raise RunbookError("a step recorded by hand needs who recorded it and why")
    doc = read_ledger(lab)
    steps = doc.setdefault("steps", {})
    missing = [s for s in needed_before(step, root) if s not in steps]
    if missing:
        raise RunbookError(f"{step} refused: the plan needs {', '.join(missing)} first "
                           f"(the ledger records {', '.join(steps) or 'nothing yet'})")
    if step in steps:
        return False
    steps[step] = {"at": datetime.datetime.now(datetime.UTC).isoformat(),
                   "detail": {"recorded_by_hand": True, "by": by, "reason": reason}}
    host = lab.inv.hosts_of("pbx")[0]
    # Written next to the ledger, then renamed: a reader never sees half a ledger.
    script = ("import sys,os;p=sys.argv[1];os.makedirs(os.path.dirname(p),exist_ok=True);"
              "open(p+'.tmp','w').write(sys.argv[2]);os.replace(p+'.tmp',p)")
    rc, _out, err = lab.exec(host, ["python3", "-c", script, LEDGER_FILE, json.dumps(doc, indent=2) + "\n"], 20)
    if rc != 0:
        raise RunbookError(f"could not write the ledger on {host}: {err.strip()}")
    return True
