"""The nemesis: faults injected straight into the lab, never through a playbook.

Each fault returns a `Fault` (what was done, to what, when) and writes a `fault` event to the
timeline when one is given. `undo()` repairs what the nemesis itself broke and nothing else
(a cut line is plugged back, a hung IPC is resumed, a planted configuration is restored); crashed
programs are left to the operators' procedures (dr7_failback.yml restarts them).

| fault              | how                                                                  |
|--------------------|----------------------------------------------------------------------|
| line_down/line_up  | `{"op":"line","state":"down"|"up"}` on the board's ctl port          |
| crash              | SIGKILL of the one PID `supervisorctl pid <program>` names            |
|   driver/cti/ivr   |   crash of a board program, of `cti`, of `ivr`                       |
| ipc_down/ipc_up    | `docker pause` / `docker unpause` of the IPC's container             |
| config_drift       | one key of /etc/ccdrill/<program>.json changed on one IPC (DR-1)      |
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from docker.errors import APIError, NotFound

from ..lab.callcenter import Board
from ..lab.world import Lab, LabError

__all__ = [
    "Fault",
    "FaultError",
    "config_drift",
    "crash",
    "crash_cti",
    "crash_driver",
    "crash_ivr",
    "crashed_state",
    "ipc_down",
    "ipc_up",
    "line_down",
    "line_up",
    "undo",
]

CRASH_WAIT_S = 5.0


class FaultError(RuntimeError):
    """The nemesis could not do what it was asked; the message names the host and the target."""


@dataclass
class Fault:
    kind: str  # line_down | line_up | crash | ipc_down | ipc_up | config_drift
    host: str
    target: str  # board, program or container
    started: float  # epoch just before the action
    done: float  # epoch once the action was confirmed
    detail: dict[str, Any] = field(default_factory=dict)
    undone: float | None = None

    @property
    def at(self) -> float:
        """The moment the fault is counted from (the start of the action: RTOs err on the long side)."""
        return self.started

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "host": self.host, "target": self.target, "started": round(self.started, 6),
                "done": round(self.done, 6), "took_s": round(self.done - self.started, 3), **self.detail}


def _record(timeline, event: str, fault: Fault) -> Fault:
    if timeline is not None:
        timeline.event(event, **fault.as_dict())
    return fault


# --- board line ------------------------------------------------------------------------------------
def _line(lab: Lab, board: Board, state: str, timeline=None) -> Fault:
    t0 = time.time()
    answer = lab.ctl(board.host, board.ctl_port, {"op": "line", "state": state}, timeout=15)
    if answer.get("line") != state:
        raise FaultError(f"{board.host}:{board.name}: line {state} answered {answer}")
    return _record(timeline, "fault", Fault(f"line_{state}", board.host, board.name, t0, time.time(),
                                            {"ctl_port": board.ctl_port}))


def line_down(lab: Lab, board: Board, timeline=None) -> Fault:
    """Cut the board's E1 link: it drops every SIP message (OPTIONS too) and forgets its calls."""
    return _line(lab, board, "down", timeline)


def line_up(lab: Lab, board: Board, timeline=None) -> Fault:
    return _line(lab, board, "up", timeline)


# --- program crash ---------------------------------------------------------------------------------
def _status(lab: Lab, host: str, program: str) -> str:
    _rc, out, _err = lab.exec(host, ["supervisorctl", "status", program], 15)
    parts = out.split()
    return parts[1] if len(parts) > 1 else out.strip()


def crash(lab: Lab, host: str, program: str, timeline=None) -> Fault:
    """SIGKILL the process supervisord runs as `program` on `host` (only that PID, checked to be the
    program's own). Returns as soon as the kill is done, so that whatever is timed from the fault starts
    at once; the programs run with autorestart=false (the crash stays a crash): `crashed_state` tells
    what supervisord made of it."""
    t0 = time.time()
    rc, out, err = lab.exec(host, ["supervisorctl", "pid", program], 15)
    pid_text = out.strip()
    if not pid_text.isdigit() or int(pid_text) <= 0:
        raise FaultError(f"{host}: {program} has no running process to crash (supervisorctl pid: "
                         f"{(pid_text or err).strip()!r}, rc {rc})")
    pid = int(pid_text)
    # The PID must be the program's own process, not whatever reused the number.
    rc, cmdline, _ = lab.exec(host, ["cat", f"/proc/{pid}/cmdline"], 10)
    cmdline = cmdline.replace("\0", " ").strip()
    if rc != 0 or f"/etc/ccdrill/{program}.json" not in cmdline:
        raise FaultError(f"{host}: PID {pid} of {program} runs {cmdline!r}, not {program}: not killing it")
    t_kill = time.time()
    rc, _out, err = lab.exec(host, ["kill", "-KILL", str(pid)], 10)
    if rc != 0:
        raise FaultError(f"{host}: kill -KILL {pid} ({program}): {err.strip()}")
    return _record(timeline, "fault", Fault("crash", host, program, t_kill, time.time(),
                                            {"pid": pid, "signal": "KILL", "looked_up_at": round(t0, 6)}))


def crashed_state(lab: Lab, fault: Fault, wait_s: float = CRASH_WAIT_S) -> str:
    """supervisord's state of a crashed program once it noticed (EXITED with autorestart=false);
    FaultError if supervisord started it again (autorestart on: the crash would not stay a crash)."""
    deadline = time.monotonic() + wait_s
    state = _status(lab, fault.host, fault.target)
    while state in ("RUNNING", "STOPPING") and time.monotonic() < deadline:
        pid = lab.exec(fault.host, ["supervisorctl", "pid", fault.target], 10)[1].strip()
        if pid.isdigit() and int(pid) != fault.detail["pid"]:
            break
        time.sleep(0.05)
        state = _status(lab, fault.host, fault.target)
    if state in ("RUNNING", "STARTING", "BACKOFF"):
        raise FaultError(f"{fault.host}: {fault.target} is {state} again after SIGKILL of {fault.detail['pid']}: "
                         f"is autorestart on?")
    return state


def crash_driver(lab: Lab, board: Board, timeline=None) -> Fault:
    """The board's driver service dies (its program is the driver: the board stops answering)."""
    return crash(lab, board.host, board.name, timeline)


def crash_cti(lab: Lab, host: str, timeline=None) -> Fault:
    return crash(lab, host, "cti", timeline)


def crash_ivr(lab: Lab, host: str, timeline=None) -> Fault:
    return crash(lab, host, "ivr", timeline)


# --- whole IPC --------------------------------------------------------------------------------------
def ipc_down(lab: Lab, host: str, timeline=None) -> Fault:
    """The whole IPC hangs: every process of its container is frozen (docker pause)."""
    c = lab.container(host)
    t0 = time.time()
    c.pause()
    c.reload()
    if c.status != "paused":
        raise FaultError(f"{host}: container {c.name} is {c.status} after pause")
    return _record(timeline, "fault", Fault("ipc_down", host, c.name, t0, time.time()))


def ipc_up(lab: Lab, host: str, timeline=None) -> Fault:
    c = lab.container(host)
    t0 = time.time()
    c.reload()
    if c.status == "paused":
        c.unpause()
        c.reload()
    if c.status != "running":
        raise FaultError(f"{host}: container {c.name} is {c.status} after unpause")
    return _record(timeline, "fault", Fault("ipc_up", host, c.name, t0, time.time()))


def is_paused(lab: Lab, host: str) -> bool:
    c = lab.container(host)
    c.reload()
    return c.status == "paused"


# --- configuration drift (DR-1's negative control) ---------------------------------------------------
def config_drift(lab: Lab, host: str, program: str, key: str, value: Any, timeline=None) -> Fault:
    """Change one key of /etc/ccdrill/<program>.json on `host` (the running program is not restarted)."""
    path = f"/etc/ccdrill/{program}.json"
    t0 = time.time()
    rc, text, err = lab.exec(host, ["cat", path], 10)
    if rc != 0:
        raise FaultError(f"{host}:{path}: {err.strip()}")
    cfg = json.loads(text)
    new = json.dumps({**cfg, key: value}, indent=4, sort_keys=True) + "\n"
    _write(lab, host, path, new)
    return _record(timeline, "fault", Fault("config_drift", host, program, t0, time.time(),
                                            {"path": path, "key": key, "was": cfg.get(key), "now": value,
                                             "original": text}))


def _write(lab: Lab, host: str, path: str, content: str) -> None:
    rc, _out, err = lab.exec(host, ["sh", "-c", f"printf '%s' {shlex.quote(content)} > {shlex.quote(path)}"], 10)
    if rc != 0:
        raise FaultError(f"{host}:{path}: cannot write: {err.strip()}")


# --- undo -------------------------------------------------------------------------------------------
def undo(lab: Lab, fault: Fault, board: Board | None = None, timeline=None) -> str:
    """Repair what `fault` broke, if it is still broken; return what was done (for the timeline).

    Idempotent: a line whose board program was restarted since is up already (a new process starts
    with its line up), a resumed IPC is left alone, a crash is the operators' business (failback).
    """
    if fault.undone is not None:
        return "already undone"
    what: str
    if fault.kind == "line_down":
        if board is None:
            raise ValueError("undo of a line cut needs the board")
        try:
            stats = lab.ctl(board.host, board.ctl_port, timeout=10)
        except (LabError, APIError) as exc:
            what = f"{board.name} does not answer ({str(exc)[:120]}): its next start has the line up"
        else:
            if stats.get("line") == "down":
                line_up(lab, board, timeline)
                what = f"{board.name}: line plugged back"
            else:
                what = f"{board.name}: line already up (pid {stats.get('pid')})"
    elif fault.kind == "ipc_down":
        try:
            if is_paused(lab, fault.host):
                ipc_up(lab, fault.host, timeline)
                what = f"{fault.host}: resumed"
            else:
                what = f"{fault.host}: already running"
        except NotFound:
            what = f"{fault.host}: container gone"
    elif fault.kind == "config_drift":
        _write(lab, fault.host, fault.detail["path"], fault.detail["original"])
        what = f"{fault.host}:{fault.detail['path']}: restored"
    elif fault.kind == "crash":
        what = f"{fault.host}: {fault.target} stays crashed until the failback restarts it"
    else:
        what = "nothing to undo"
    fault.undone = time.time()
    if timeline is not None:
        timeline.event("fault_undone", kind=fault.kind, host=fault.host, target=fault.target, what=what)
    return what
