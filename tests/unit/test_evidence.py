"""Timeline, drill report and the stand-ins' bundle: the evidence a drill leaves behind."""

import json
import tarfile

import pytest

from ccdrill.evidence.report import build_report
from ccdrill.evidence.timeline import Timeline, read_timeline
from ccdrill.lab.bundle import bundle


def test_timeline_round_trip_and_killed_run(tmp_path):
    tl = Timeline(tmp_path / "t.jsonl")
    tl.event("fault", kind="cti_crash", host="sh-ipc-new")
    tl.event("answered", call=1)
    tl.close()
    with open(tmp_path / "t.jsonl", "a") as fh:
        fh.write('{"ts": 1, "event": "half')  # a run killed mid-write
    events = read_timeline(tmp_path / "t.jsonl")
    assert [e["event"] for e in events] == ["fault", "answered"]
    assert events[0]["ts"] <= events[1]["ts"]


def test_timeline_corrupt_line_inside_is_an_error(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"event": "a", "ts": 1}\nnot json\n{"event": "b", "ts": 2}\n')
    with pytest.raises(ValueError, match="t.jsonl:2: not a JSON event"):
        read_timeline(tmp_path / "t.jsonl")


def _cucumber(tmp_path, status_by_tag):
    elements = []
    for tag, status in status_by_tag.items():
        elements.append({"name": f"scenario {tag}", "tags": [{"name": f"@{tag}"}, {"name": "@lab"}],
                         "steps": [{"result": {"status": "passed"}},
                                   {"result": {"status": status, "error_message": "E the plan says 60, lab 59"}}]})
    path = tmp_path / "cucumber.json"
    path.write_text(json.dumps([{"name": "f", "uri": "features/x.feature", "elements": elements}]))
    return path


def test_report_lists_every_criterion_with_verdict_and_measurements(tmp_path):
    cuc = _cucumber(tmp_path, {"CAP-B1": "passed", "CAP-B2": "failed"})
    tl = Timeline(tmp_path / "t.jsonl")
    tl.event("scenario_end", scenario="scenario CAP-B1", measured={"ivr_answered": 60})
    tl.close()
    summary = build_report(cuc, tmp_path / "t.jsonl", ["CAP-B1", "CAP-B2", "MIG-0"], tmp_path / "report.md")
    assert summary == {"passed": 1, "failed": 1, "not run": 0, "not covered": 1}
    text = (tmp_path / "report.md").read_text()
    assert '| CAP-B1 | passed | scenario CAP-B1 | `{"ivr_answered": 60}` |' in text
    assert "| CAP-B2 | failed (E the plan says 60, lab 59) |" in text
    assert "| MIG-0 | not covered | - |" in text
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["summary"]["failed"] == 1


def test_bundle_is_deterministic_and_rewritten_only_on_change(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("A = 1\n")
    (src / "b.py").write_text("B = 2\n")
    (src / "notes.txt").write_text("not shipped")
    out = bundle(src, tmp_path / "out" / "s.tar")
    first, mtime = out.read_bytes(), out.stat().st_mtime_ns
    assert bundle(src, out).read_bytes() == first and out.stat().st_mtime_ns == mtime
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["a.py", "b.py"]
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    (src / "a.py").write_text("A = 3\n")
    assert bundle(src, out).read_bytes() != first
