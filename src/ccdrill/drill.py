"""`ccdrill drill`: the operations team's rehearsal on the embedded two-site lab.

Brings up its own lab, runs every scenario of features/ in the plan's order (baseline, the upgrade
weekend, the target layout and its fault drills), tears the lab down, and writes the report they
file: reports/drill-<time>/report.md (+ report.json, cucumber.json, timeline.jsonl).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path


def criteria_ids(spec: Path) -> list[str]:
    ids = re.findall(r"^\|\s*([A-Z]+(?:-[A-Z0-9]+)+)\s*\|", spec.read_text(encoding="utf-8"), re.M)
    return list(dict.fromkeys(ids))


def find_spec(root: Path) -> Path | None:
    for p in (root / "docs" / "acceptance.md", root.parent / "shared" / "spec" / "acceptance.md"):
        if p.is_file():
            return p
    return None


def run_drill(args) -> int:
    from .cli import project_root

    root = project_root()
    out = root / "reports" / f"drill-{time.strftime('%Y%m%dT%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CCDRILL_LAB=args.lab or os.environ.get("CCDRILL_LAB") or "drill",
               CCDRILL_REPORTS=str(out), CCDRILL_ROOT=str(root))
    cmd = [sys.executable, "-m", "pytest", "tests/steps", "-p", "no:cacheprovider", "-q", "-rfE",
           f"--cucumberjson={out / 'cucumber.json'}", *(["-m", args.mark] if args.mark else []), *args.pytest_args]
    print(f"drill: lab {env['CCDRILL_LAB']}, report in {out}", flush=True)
    rc = subprocess.run(cmd, cwd=root, env=env).returncode
    from .evidence.report import build_report

    spec = find_spec(root)
    timelines = sorted(out.glob("timeline-*.jsonl"))
    summary = build_report(out / "cucumber.json", timelines[-1] if timelines else None,
                           criteria_ids(spec) if spec else [], out / "report.md")
    print(f"drill: {summary} -> {out / 'report.md'}")
    return rc


def add_drill_parser(sub) -> None:
    s = sub.add_parser("drill", help="rehearse on a lab of its own and write the report (make drill)")
    s.add_argument("-m", "--mark", help="only scenarios with this tag expression (e.g. 'baseline')")
    s.add_argument("pytest_args", nargs="*", help="passed to pytest (e.g. -k CAP-T1)")
    s.set_defaults(func=run_drill)
