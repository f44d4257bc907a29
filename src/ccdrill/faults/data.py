"""The nemesis on the data tier: a database server or an application server stops, the way a failed
service does (supervisord's program stopped, the process gone), and stays down until undone.

`program_down` returns a `Fault` (from ccdrill.faults) whose undo, `program_up`, starts the program
again and nothing else: switching configurations back is the operators' failback playbook.
"""

from __future__ import annotations

import time

from ..lab.world import Lab
from . import Fault, FaultError, _record, _status

__all__ = ["program_down", "program_up"]


def _state(lab: Lab, host: str, program: str) -> str:
    return _status(lab, host, program) or "UNKNOWN"


def program_down(lab: Lab, host: str, program: str, timeline=None) -> Fault:
    """Stop `program` on `host` (e.g. postgresql on the primary database) and confirm it is down."""
    before = _state(lab, host, program)
    if before != "RUNNING":
        raise FaultError(f"{host}: {program} is {before}, not running: nothing to fail")
    t0 = time.time()
    lab.supervisor(host, "stop", program)
    state = _state(lab, host, program)
    if state == "RUNNING":
        raise FaultError(f"{host}: {program} still running after the stop")
    return _record(timeline, "fault", Fault("program_down", host, program, t0, time.time(), {"state": state}))


def program_up(lab: Lab, fault: Fault, timeline=None) -> Fault:
    """Undo `program_down`: start the program again and confirm it runs."""
    t0 = time.time()
    lab.supervisor(fault.host, "start", fault.target)
    state = _state(lab, fault.host, fault.target)
    if state != "RUNNING":
        raise FaultError(f"{fault.host}: {fault.target} is {state} after the start")
    return _record(timeline, "fault_undone", Fault("program_up", fault.host, fault.target, t0, time.time(),
                                                   {"state": state}))
