"""What the step modules share: a scenario's measurements, a playbook run with its timeline event, and the
rollback of a DR scenario whose nemesis stopped services (undo, failback playbook, steady state again)."""

from __future__ import annotations

from collections.abc import Callable

from ccdrill import cli
from ccdrill.checks.capacity import CheckFailed
from ccdrill.faults import services


def measure(ctx: dict, key: str, value) -> None:
    ctx.setdefault("measured", {})[key] = value


def play(cc, timeline, playbook: str, extra: list[str] | None = None, ctx: dict | None = None):
    """Run one of the plan's playbooks against the lab, record it in the timeline (and in ctx["run"])."""
    run = cli.play(playbook, cc.lab.name, extra)
    cc.refresh()  # the playbook may have moved the layout the call center reads
    timeline.event("playbook", name=playbook, rc=run.rc, changed=run.changed, seconds=run.seconds)
    if ctx is not None:
        ctx["run"] = run
    return run


class ServiceRollback:
    """Undo the nemesis' stopped services, fail back with `playbook --limit limit`, check the steady state
    again (`steady_state()` raises AssertionError when it does not hold). Runs once."""

    def __init__(self, cc, timeline, ctx, playbook: str, limit: str, steady_state: Callable[[], dict]):
        self.cc, self.timeline, self.ctx = cc, timeline, ctx
        self.playbook, self.limit, self.steady_state = playbook, limit, steady_state
        self.faults: list = []
        self.done = False

    def run(self) -> dict:
        if self.done:
            return {}
        self.done = True
        problems, report = [], {}
        for fault in reversed(self.faults):
            try:
                report[f"undo {fault.target}"] = services.undo_service_stop(self.cc.lab, fault, self.timeline)
            except Exception as exc:  # noqa: BLE001 (the rollback goes on; reported below)
                problems.append(f"undo of {fault.kind} {fault.target}: {exc}")
        run = play(self.cc, self.timeline, self.playbook, ["--limit", self.limit])
        report["failback"] = {"rc": run.rc, "changed": run.changed, "seconds": run.seconds}
        if run.rc != 0:
            problems.append(f"playbooks/{self.playbook} failed:\n{run.output[-3000:]}")
        else:
            try:
                report["steady_state"] = self.steady_state()
            except AssertionError as exc:
                problems.append(f"steady state: {exc}")
        self.timeline.event("rollback", ok=not problems, problems=problems, **report)
        measure(self.ctx, "rollback", report)
        if problems:
            raise CheckFailed("rollback: " + "; ".join(problems))
        return report
