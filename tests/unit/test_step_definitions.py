"""Every step line of features/ matches exactly one step definition.

QA extend the feature files; a new definition whose pattern also matches an older step's text would
take over that step silently (pytest-bdd picks one), so two matching definitions are an error here."""

from __future__ import annotations

import gc
import importlib
from pathlib import Path

import pytest
from pytest_bdd.steps import StepFunctionContext

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = ("Given ", "When ", "Then ", "And ", "But ")


def _definitions() -> list[StepFunctionContext]:
    for path in sorted((ROOT / "tests" / "steps").glob("steps_*.py")):
        importlib.import_module(f"tests.steps.{path.stem}")
    return [o for o in gc.get_objects() if isinstance(o, StepFunctionContext)
            and o.step_func.__module__.startswith("tests.steps.")]


def _step_lines() -> list[tuple[str, str]]:
    out = []
    for f in sorted((ROOT / "features").glob("*.feature")):
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            s = line.strip()
            for kw in KEYWORDS:
                # Outline steps (<placeholders> filled from Examples) are matched when their examples run.
                if s.startswith(kw) and "<" not in s:
                    out.append((f"{f.name}:{n}", s[len(kw):]))
    return out


DEFS = _definitions()
LINES = _step_lines()


def test_the_feature_files_have_steps():
    assert len(LINES) > 100 and len(DEFS) > 50, (len(LINES), len(DEFS))


@pytest.mark.parametrize("where,text", LINES, ids=[w for w, _ in LINES])
def test_one_definition_per_step(where, text):
    hits = sorted({f"{d.step_func.__module__}.{d.step_func.__name__}" for d in DEFS if d.parser.is_matching(text)})
    assert len(hits) == 1, f"{where}: {text!r} matches {hits or 'no step definition'}"
