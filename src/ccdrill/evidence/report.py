"""The drill report the operations team files: one row per acceptance criterion, with its scenario,
its verdict and what was measured, drawn from the cucumber JSON and the timeline of the run."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .timeline import read_timeline

CRITERION = re.compile(r"^@?([A-Z]+(?:-[A-Z0-9]+)+)$")


def _scenarios(cucumber: list[dict]) -> list[dict]:
    out = []
    for feature in cucumber:
        for el in feature.get("elements", []):
            tags = [t["name"].lstrip("@") for t in el.get("tags", [])]
            steps = el.get("steps", [])
            statuses = [s.get("result", {}).get("status", "skipped") for s in steps]
            status = "failed" if "failed" in statuses else ("passed" if statuses and all(
                s == "passed" for s in statuses) else "skipped")
            error = next((s["result"].get("error_message", "") for s in steps
                          if s.get("result", {}).get("status") == "failed"), "")
            out.append({"feature": feature.get("name", ""), "uri": feature.get("uri", ""), "name": el.get("name", ""),
                        "criteria": [t for t in tags if CRITERION.match(t)], "status": status,
                        "error": error.strip().splitlines()[-1][:300] if error else ""})
    return out


def build_report(cucumber_json: Path, timeline: Path | None, criteria_ids: list[str], out: Path) -> dict:
    cucumber = json.loads(cucumber_json.read_text()) if cucumber_json.exists() else []
    scenarios = _scenarios(cucumber)
    measured = {}
    events = read_timeline(timeline) if timeline and timeline.exists() else []
    for ev in events:
        if ev.get("event") == "scenario_end":
            measured[ev["scenario"]] = ev.get("measured", {})
    rows = []
    for cid in criteria_ids:
        mine = [s for s in scenarios if cid in s["criteria"]]
        status = ("not covered" if not mine else "failed" if any(s["status"] == "failed" for s in mine)
                  else "passed" if all(s["status"] == "passed" for s in mine) else "not run")
        rows.append({"id": cid, "status": status, "scenarios": mine,
                     "measured": {s["name"]: measured.get(s["name"], {}) for s in mine}})
    summary = {k: sum(1 for r in rows if r["status"] == k) for k in ("passed", "failed", "not run", "not covered")}
    lines = ["# Drill report", "", f"Criteria: {len(rows)}; " + ", ".join(f"{k}: {v}" for k, v in summary.items()), "",
             "| criterion | verdict | scenario | measured |", "|---|---|---|---|"]
    for r in rows:
        for s in r["scenarios"] or [{"name": "-", "error": ""}]:
            m = json.dumps(r["measured"].get(s["name"], {}), default=str, ensure_ascii=False)
            m = m if len(m) < 300 else m[:297] + "..."
            verdict = r["status"] + (f" ({s['error']})" if s.get("error") else "")
            lines.append(f"| {r['id']} | {verdict} | {s['name']} | `{m}` |")
    plays = [e for e in events if e.get("event") == "playbook"]
    if plays:
        lines += ["", "## Playbooks run", "", "| playbook | rc | changed | seconds |", "|---|---|---|---|"]
        lines += [f"| {e['name']} | {e.get('rc')} | {e.get('changed', '')} | {e.get('seconds')} |" for e in plays]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out.with_suffix(".json")).write_text(json.dumps({"summary": summary, "criteria": rows}, indent=2, default=str))
    return summary
