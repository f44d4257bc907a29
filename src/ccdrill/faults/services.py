"""The nemesis for the migrated services: a service on a lab host stops (its program stopped the way
an operator or a crash leaves it: supervisord no longer runs it), and the repair that starts it again.

| fault        | how                                                    |
|--------------|--------------------------------------------------------|
| service_stop | `supervisorctl stop <program>` on the host, checked STOPPED |
| undo         | `supervisorctl start <program>`, checked RUNNING        |
"""

from __future__ import annotations

import time

from ..lab.world import Lab
from . import Fault, FaultError, _record
from . import _status as _state

__all__ = ["service_stop", "undo_service_stop"]


def service_stop(lab: Lab, host: str, program: str, timeline=None) -> Fault:
    """Stop `program` on `host`; FaultError unless supervisord then shows it STOPPED."""
    before = _state(lab, host, program)
    if before != "RUNNING":
        raise FaultError(f"{host}: {program} is {before or 'unknown'}, not RUNNING: nothing to stop")
    t0 = time.time()
    lab.supervisor(host, "stop", program)
    after = _state(lab, host, program)
    if after != "STOPPED":
        raise FaultError(f"{host}: {program} is {after} after supervisorctl stop")
    return _record(timeline, "fault", Fault("service_stop", host, program, t0, time.time(), {"was": before}))


def undo_service_stop(lab: Lab, fault: Fault, timeline=None) -> str:
    """Start the stopped program again if it is still down; return what was done."""
    if fault.undone is not None:
        return "already undone"
    state = _state(lab, fault.host, fault.target)
    if state == "RUNNING":
        what = f"{fault.host}: {fault.target} already running"
    else:
        lab.supervisor(fault.host, "start", fault.target)
        state = _state(lab, fault.host, fault.target)
        if state != "RUNNING":
            raise FaultError(f"{fault.host}: {fault.target} is {state} after supervisorctl start")
        what = f"{fault.host}: {fault.target} started"
    fault.undone = time.time()
    if timeline is not None:
        timeline.event("fault_undone", kind=fault.kind, host=fault.host, target=fault.target, what=what)
    return what
