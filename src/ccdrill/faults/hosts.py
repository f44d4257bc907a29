"""The nemesis for a whole server: a system-level fault (hardware, OS) takes every process of a lab host
down at once, and the repair that brings the server back as it was built.

| fault          | how                                                                               |
|----------------|-----------------------------------------------------------------------------------|
| host_down      | `docker kill` of the host's container (power lost: supervisord and all it runs die) |
| undo/host_up   | `docker start`, wait for supervisord, then the lab's routes again (lab_network role) |
"""

from __future__ import annotations

import time

from ..lab.world import Lab
from . import Fault, FaultError, _record

__all__ = ["host_down", "host_up", "undo_host_down"]


def host_down(lab: Lab, host: str, timeline=None) -> Fault:
    """Power the server off: its container is killed; FaultError unless it is then stopped."""
    c = lab.container(host)
    c.reload()
    if c.status != "running":
        raise FaultError(f"{host}: container {c.name} is {c.status}, not running: nothing to fail")
    t0 = time.time()
    c.kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        c.reload()
        if c.status == "exited":
            break
        time.sleep(0.2)
    if c.status != "exited":
        raise FaultError(f"{host}: container {c.name} is {c.status} after kill")
    return _record(timeline, "fault", Fault("host_down", host, c.name, t0, time.time()))


def _restore_routes(lab: Lab, host: str) -> list[str]:
    """What lab_network set on the host and a restart lost: each other site via the WAN router, no default."""
    h = lab.inv.hosts[host]
    done = []
    if len(h.sites) == 1:
        site = h.sites[0]
        via = lab.inv.address(lab.inv.router.name, site)
        for other in lab.inv.sites.values():
            if other.name == site:
                continue
            rc, _out, err = lab.exec(host, ["ip", "route", "replace", str(other.subnet), "via", via], 10)
            if rc != 0:
                raise FaultError(f"{host}: route to {other.subnet} via {via}: {err.strip()}")
            done.append(f"{other.subnet} via {via}")
    _rc, out, _err = lab.exec(host, ["ip", "-4", "route", "show", "default"], 10)
    if out.strip():
        lab.exec(host, ["ip", "route", "del", "default"], 10)
        done.append("default route removed")
    return done


def host_up(lab: Lab, host: str, timeline=None) -> Fault:
    """Power the server on again: supervisord starts what is set to autostart; the lab's routes are restored."""
    c = lab.container(host)
    t0 = time.time()
    c.reload()
    if c.status != "running":
        c.start()
    deadline = time.monotonic() + 30
    while True:
        rc, _out, _err = lab.exec(host, ["supervisorctl", "pid"], 10)
        if rc == 0:
            break
        if time.monotonic() > deadline:
            raise FaultError(f"{host}: supervisord does not answer 30 s after the start")
        time.sleep(0.3)
    routes = _restore_routes(lab, host)
    return _record(timeline, "fault", Fault("host_up", host, c.name, t0, time.time(), {"routes": routes}))


def undo_host_down(lab: Lab, fault: Fault, timeline=None) -> str:
    """Bring a failed server back if it is still down; return what was done."""
    if fault.undone is not None:
        return "already undone"
    c = lab.container(fault.host)
    c.reload()
    was = c.status
    up = host_up(lab, fault.host, timeline)
    fault.undone = time.time()
    what = f"{fault.host}: {'powered on' if was != 'running' else 'already running'}; routes {up.detail['routes']}"
    if timeline is not None:
        timeline.event("fault_undone", kind=fault.kind, host=fault.host, target=fault.target, what=what)
    return what
