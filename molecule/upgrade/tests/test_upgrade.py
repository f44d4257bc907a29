"""After the weekend: every step recorded in order, the target layout running as DR-2 says, the
notice taken down, and every cabled channel dial-tested."""

import json

from tests.infra.lab import host, inventory

INV = inventory()
STEPS = ["approval", "announcement", "friday", "board_move", "saturday_am", "saturday_pm", "sunday_drill", "monday"]


def ledger() -> dict:
    return json.loads(host(INV.hosts_of("pbx")[0]).file("/var/lib/ccdrill/runbook.json").content_string)


def test_every_step_recorded_in_the_plan_order():
    steps = ledger()["steps"]
    assert [s for s in STEPS if s in steps] == STEPS, f"ledger: {list(steps)}"
    times = [steps[s]["at"] for s in STEPS]
    assert times == sorted(times), f"steps recorded out of order: {times}"


def test_dial_test_covered_every_cabled_channel():
    boards = ledger()["steps"]["saturday_am"]["detail"]["dialtest"]["boards"]
    assert {b: (v["ipc"], v["answered"]) for b, v in boards.items()} == {
        "board0": ("sh-ipc-new", 60), "board1": ("sh-ipc-old", 30)}


def _states(name: str) -> dict:
    out = host(name).run("supervisorctl status").stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def test_primary_runs_everything_secondary_runs_driver_and_middleware():
    new, old = _states("sh-ipc-new"), _states("sh-ipc-old")
    assert {k: new.get(k) for k in ("board0", "fax1", "kcxp", "kcbp", "cti", "ivr")} == dict.fromkeys(
        ("board0", "fax1", "kcxp", "kcbp", "cti", "ivr"), "RUNNING"), new
    assert {k: old.get(k) for k in ("board1", "fax0", "kcxp", "kcbp")} == dict.fromkeys(
        ("board1", "fax0", "kcxp", "kcbp"), "RUNNING"), old
    assert {k: old.get(k) for k in ("cti", "ivr", "kcxp-copy", "kcbp-copy")} == dict.fromkeys(
        ("cti", "ivr", "kcxp-copy", "kcbp-copy"), "STOPPED"), old
    assert "board0" not in old, "the moved board still has a driver service on the old IPC"


def test_upgrade_notice_taken_down_after_monday():
    page = host("sh-web").file("/var/www/html/index.html").content_string
    assert "upgrade-notice" not in page
    ivr = json.loads(host("sh-ipc-old").file("/etc/ccdrill/ivr.json").content_string)
    assert ivr["announcement"] is None


def test_files_holding_database_passwords_are_readable_by_root_only():
    # DDS on the replica (sz-db before the migration), KCBP's DB connection on both IPCs.
    files = {"sz-db": "/etc/ccdrill/dds.json", "sh-ipc-new": "/etc/ccdrill/dbconn.ini",
             "sh-ipc-old": "/etc/ccdrill/dbconn.ini"}
    modes = {f"{h}:{p}": oct(host(h).file(p).mode) for h, p in files.items()}
    assert modes == dict.fromkeys(modes, "0o600"), modes
