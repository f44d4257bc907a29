"""What boards a host really runs, discovered from the host itself: its supervisord programs, their
configuration files and their live stats (HW-B1/HW-T1 read this, not the inventory)."""

from __future__ import annotations

import json

from .world import Lab


def running_boards(lab: Lab, host: str) -> list[dict]:
    """Live stats of every voice or fax board program RUNNING on `host`."""
    _rc, out, _err = lab.exec(host, ["supervisorctl", "status"], 30)
    boards = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[1] != "RUNNING":
            continue
        rc, cfg_text, _ = lab.exec(host, ["cat", f"/etc/ccdrill/{parts[0]}.json"], 10)
        if rc != 0:
            continue
        cfg = json.loads(cfg_text)
        if "sip_port" not in cfg or "ctl_port" not in cfg:
            continue
        stats = lab.ctl(host, cfg["ctl_port"])
        if stats.get("kind") in ("voice_board", "fax_board"):
            boards.append(stats)
    return boards
