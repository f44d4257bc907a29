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
