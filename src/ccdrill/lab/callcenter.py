"""The call center as it runs in a lab: which boards sit where (the inventory's layout), and their live stats.

Everything a check reads comes from the running stand-ins (their JSON stats), never from the layout
alone: the layout only says where to look.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .runbook import current_layout
from .world import Lab, LabError

SIPP_DIR = "/opt/ccdrill/sipp"


@dataclass(frozen=True)
class Board:
    name: str
    host: str
    port: int
    ctl_port: int
    channels: int  # cabled, as the PBX trunk sees it
    kind: str  # voice | fax


def telephony_vars(inventory_dir: Path) -> dict:
    """The plain-data telephony settings of the inventory (layouts, ports), without Ansible templating."""
    data = yaml.safe_load((inventory_dir / "group_vars" / "all" / "telephony.yml").read_text())
    return {k: v for k, v in data.items() if not (isinstance(v, str) and "{{" in v)}


class CallCenter:
    def __init__(self, lab: Lab, inventory_dir: Path, layout: str | None = None):
        """`layout` fixes the layout; by default it is read from the runbook ledger on the lab (again after
        `refresh()`, which whoever runs a playbook calls)."""
        self.lab = lab
        self.vars = telephony_vars(inventory_dir)
        self._fixed = layout
        self._layout: str | None = layout
        self.pbx_host = lab.inv.hosts_of("pbx")[0]
        self.carrier_host = lab.inv.hosts_of("carrier_line")[0]

    # where things are -----------------------------------------------------------------------------
    @property
    def layout_name(self) -> str:
        if self._layout is None:
            self._layout = current_layout(self.lab)
        return self._layout

    def refresh(self) -> None:
        self._layout = self._fixed

    @property
    def layout(self) -> dict:
        return self.vars["telephony_layouts"][self.layout_name]

    def boards(self, kind: str = "voice") -> list[Board]:
        key = "voice_boards" if kind == "voice" else "fax_boards"
        return [Board(b["name"], b["host"], b["port"], b["ctl_port"], b["channels"], kind) for b in self.layout[key]]

    @property
    def primary(self) -> str:
        return self.layout["primary"]

    @property
    def secondary(self) -> str | None:
        return self.layout["secondary"]

    @property
    def pbx_target(self) -> str:
        return f"{self.lab.inv.address(self.pbx_host)}:5060"

    def ipc_ports(self) -> dict[str, int]:
        return {k: self.vars[f"{k}_ctl_port"] for k in ("kcxp", "cti", "ivr", "kcbp")}

    # live state -----------------------------------------------------------------------------------
    def board_stats(self, board: Board) -> dict:
        return self.lab.ctl(board.host, board.ctl_port)

    def all_board_stats(self, kind: str = "voice") -> dict[str, dict]:
        return {b.name: self.board_stats(b) for b in self.boards(kind)}

    def reset_peaks(self) -> None:
        """Reset every answering board's peaks (a board whose driver is down has none to reset)."""
        for kind in ("voice", "fax"):
            for b in self.boards(kind):
                try:
                    self.lab.ctl(b.host, b.ctl_port, {"op": "reset_peaks"}, timeout=10)
                except LabError:
                    continue

    def answering_boards(self, kind: str = "voice") -> list[Board]:
        """The boards of the layout whose driver answers now (in the layout's hunting order)."""
        out = []
        for b in self.boards(kind):
            try:
                self.board_stats(b)
                out.append(b)
            except LabError:
                continue
        return out

    def ivr_host(self) -> str:
        """The IPC whose IVR runs now: the primary, or the secondary after a DR-4 switchover."""
        for host in (self.primary, self.secondary):
            if host and self.programs(host).get("ivr") == "RUNNING":
                return host
        return self.primary

    def ivr_stats(self, host: str | None = None) -> dict:
        return self.lab.ctl(host or self.ivr_host(), self.vars["ivr_ctl_port"])

    def programs(self, host: str) -> dict[str, str]:
        """supervisord's view of a host: {program: RUNNING|STOPPED|...}; {} for a host that does not answer."""
        try:
            _rc, out, _err = self.lab.exec(host, ["supervisorctl", "status"], 30)
        except LabError:
            return {}
        states = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                states[parts[0]] = parts[1]
        return states

    def wait_controlled(self, timeout: float = 10.0) -> None:
        """Wait until every board of the layout reports a controller (CTI heartbeats arrived)."""
        import time

        deadline = time.monotonic() + timeout
        pending = self.boards("voice") + self.boards("fax")
        while pending and time.monotonic() < deadline:
            pending = [b for b in pending if not self.board_stats(b).get("controlled")]
            if pending:
                time.sleep(0.2)
        if pending:
            raise AssertionError(f"boards without a controller after {timeout:.0f} s: {[b.name for b in pending]}")
