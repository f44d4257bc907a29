"""Fixtures of the Gherkin scenarios: one lab for the run (created, built with site.yml, torn down),
the call center on it, a timeline of every step. Step definitions live in steps_*.py, imported here."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pytest_bdd.scenario import scenario_wrapper_template_registry

from ccdrill.cli import run_playbook
from ccdrill.evidence.timeline import Timeline
from ccdrill.lab.callcenter import CallCenter
from ccdrill.lab.engine import ensure_engine
from ccdrill.lab.inventory import load_inventory
from ccdrill.lab.world import Lab

from .steps_failover import *  # noqa: F401,F403
from .steps_migration_app_db import *  # noqa: F401,F403
from .steps_migration_notify import *  # noqa: F401,F403
from .steps_migration_ta_import import *  # noqa: F401,F403
from .steps_migration_webchat import *  # noqa: F401,F403
from .steps_telephony import *  # noqa: F401,F403  (pytest-bdd finds steps through conftest)
from .steps_upgrade import *  # noqa: F401,F403

ROOT = Path(__file__).resolve().parents[2]
# The embedded lab's inventory, or another one with the same groups (CCDRILL_INVENTORY).
INVENTORY = Path(os.environ.get("CCDRILL_INVENTORY") or ROOT / "inventory" / "lab")


@pytest.fixture(scope="session")
def timeline():
    reports = Path(os.environ.get("CCDRILL_REPORTS", ROOT / "reports"))
    # One file per lab and run: labs that run side by side (make test) never share a timeline.
    lab = os.environ.get("CCDRILL_LAB", "features")
    tl = Timeline(reports / f"timeline-{lab}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.jsonl")
    yield tl
    tl.close()


@pytest.fixture(scope="session")
def lab(timeline):
    """The lab of this run. CCDRILL_REUSE_LAB=1 uses a running lab as it is (and leaves it running)."""
    name = os.environ.get("CCDRILL_LAB", "features")
    world = Lab(name, load_inventory(INVENTORY, ROOT / "images"), ensure_engine(), ROOT / "images")
    reuse = os.environ.get("CCDRILL_REUSE_LAB") == "1" and any(h.status == "running" for h in world.status())
    if not reuse:
        timeline.event("lab_create", lab=name)
        took = world.create()
        timeline.event("lab_created", lab=name, seconds=round(took, 1))
        t0 = time.monotonic()
        rc = run_playbook("site.yml", name)
        timeline.event("playbook", name="site.yml", rc=rc, seconds=round(time.monotonic() - t0, 1))
        if rc != 0:
            world.down()
            pytest.exit(f"playbooks/site.yml failed on lab {name} (exit {rc}); see the output above", 3)
    yield world
    if not reuse and os.environ.get("CCDRILL_KEEP_LAB") != "1":
        removed = world.down()
        timeline.event("lab_down", lab=name, **removed)


@pytest.fixture
def ctx() -> dict:
    """What one scenario measured, shared between its steps."""
    return {}


@pytest.fixture(scope="session")
def callcenter(lab) -> CallCenter:
    return CallCenter(lab, INVENTORY)


def _criteria(scenario) -> list[str]:
    return sorted(t for t in scenario.tags if "-" in t)


def _text(step) -> str:
    return f"{step.keyword} {step.name}"


def pytest_bdd_before_scenario(request, feature, scenario):
    tl = request.getfixturevalue("timeline")
    tl.event("scenario_start", feature=feature.name, scenario=scenario.name, criteria=_criteria(scenario))


def pytest_bdd_after_scenario(request, feature, scenario):
    tl = request.getfixturevalue("timeline")
    measured = request.getfixturevalue("ctx").get("measured", {})
    tl.event("scenario_end", scenario=scenario.name, criteria=_criteria(scenario), measured=measured)


def pytest_bdd_after_step(request, feature, scenario, step, step_func, step_func_args):
    request.getfixturevalue("timeline").event("step", scenario=scenario.name, step=_text(step), ok=True)


def pytest_bdd_step_error(request, feature, scenario, step, step_func, step_func_args, exception):
    request.getfixturevalue("timeline").event("step", scenario=scenario.name, step=_text(step), ok=False,
                                              error=str(exception)[:2000])


# Baseline scenarios first, then the upgrade weekend in file order, then the target layout's, then
# the migration batches in file order (features/migration_<n>_*.feature), then DR after migration.
PHASES = {"baseline": 0, "upgrade": 1, "target": 2, "migration": 4, "post_migration": 5}


def pytest_collection_modifyitems(config, items):
    def phase(item):
        # The latest phase a scenario is tagged with (a DR scenario in a batch's file runs after every batch).
        return max([PHASES[m.name] for m in item.iter_markers() if m.name in PHASES] or [3])

    def feature_file(item) -> str:
        sc = scenario_wrapper_template_registry.get(getattr(item, "function", None))
        return os.path.basename(sc.feature.filename) if sc is not None else ""

    # Within the migration phases the batches follow their files' numbers (migration_<n>_*.feature).
    items.sort(key=lambda i: (phase(i), feature_file(i) if phase(i) >= PHASES["migration"] else ""))
    # CI (CCDRILL_SUITE=ci) runs one example of each fault outline; the drill runs every example.
    if os.environ.get("CCDRILL_SUITE") == "ci":
        skipped = [i for i in items if i.get_closest_marker("full")]
        if skipped:
            config.hook.pytest_deselected(items=skipped)
            items[:] = [i for i in items if not i.get_closest_marker("full")]
