"""Steps of the TA import batch (features/migration_2_ta_import.feature): MIG-TA1, MIG-TA2, POST-TA.

The registrar's files are generated on ta-files (ccdrill.load.ta_files); the import runs as the crontab of
the TA server says, started the way cron starts it (ccdrill.checks.ta.run_like_cron); what the database
holds is counted against what the registrar sent (record count and row checksum). Every batch a scenario
publishes is withdrawn and purged from the database at its end, whatever happened, so later batches (the
app/DB migration's copies) stay small. POST-TA follows Chaos Toolkit's shape: steady state, fault
(ccdrill.faults.hosts: the server powered off), the operators' response (playbooks/dr/
ta_import_shanghai.yml), hypothesis, and a rollback that always runs (the server powered on, its own
task imports the next batch).
"""

from __future__ import annotations

import concurrent.futures
import time

import pytest
from pytest_bdd import given, parsers, then, when

from ccdrill.checks import ta
from ccdrill.checks.basic import basic_calls
from ccdrill.checks.capacity import CheckFailed
from ccdrill.faults import hosts as host_faults
from ccdrill.lab.database import read_dbconn
from ccdrill.lab.runbook import read_ledger
from ccdrill.load import ta_files

from .common import measure as _measure
from .common import play as _play

BATCH = "migration/02_ta_import.yml"
DR_PLAYBOOK = "dr/ta_import_shanghai.yml"
MB = 1_000_000
MAX_CALL_ROUNDS = 4  # basic call tests during one import, at most


def _v(cc, key: str):
    return cc.lab.inv.vars[key]


def _files_host(cc) -> str:
    return cc.lab.inv.hosts_of("ta_files")[0]


class TaBatches:
    """The batches a scenario published: withdrawn from ta-files and purged from the database at the end."""

    def __init__(self, cc, timeline):
        self.cc, self.timeline = cc, timeline
        self.names: list[str] = []
        self.conns: list[dict] = []

    def publish(self, files: int, total_bytes: int, tag: str, corrupt=None, replace_of: str | None = None) -> dict:
        name = replace_of or ta_files.batch_name(f"{tag}{int(time.time()) % 100000}")
        t0 = time.time()
        exp = ta_files.publish_batch(self.cc.lab, _files_host(self.cc), name, files, total_bytes, corrupt,
                                     replace=replace_of is not None)
        if name not in self.names:
            self.names.append(name)
        self.timeline.event("ta_batch_published", batch=name, files=files, rows=exp["rows"], bytes=exp["bytes"],
                            corrupt=exp["corrupt"], seconds=round(time.time() - t0, 1))
        return exp

    def cleanup(self) -> None:
        problems = []
        for name in self.names:
            try:
                ta_files.withdraw_batch(self.cc.lab, _files_host(self.cc), name)
            except Exception as exc:  # noqa: BLE001 (every batch is tried; reported below)
                problems.append(f"withdraw {name}: {exc}")
            for conn in {c["host"]: c for c in self.conns}.values():
                try:
                    ta.purge_batch(self.cc.lab, conn, name)
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"purge {name} on {conn['host']}: {exc}")
        self.timeline.event("ta_batches_removed", batches=self.names, problems=problems)
        if problems:
            raise CheckFailed("removing the scenario's TA batches: " + "; ".join(problems))


@pytest.fixture
def ta_batches(request, callcenter, timeline) -> TaBatches:
    tb = TaBatches(callcenter, timeline)
    request.addfinalizer(tb.cleanup)
    return tb


def _run_cron(cc, ctx, ta_batches, host: str) -> dict:
    entry = ta.cron_entry(cc.lab, host, _v(cc, "ta_import_cron_name"))
    assert entry is not None and entry.active, f"{host} has no active scheduled TA import task: {entry}"
    conn = ta.job_db(cc.lab, host)
    ta_batches.conns.append(conn)
    run = ta.run_like_cron(cc.lab, entry)
    stats = ta.last_run(cc.lab, host)
    assert stats["started"] >= run["started"] - 5, f"{host} wrote no stats for this run: {run} / {stats}"
    ctx.update(cron_run=run, ta_stats=stats, ta_conn=conn, ta_host=host)
    _measure(ctx, "ta_run", {k: stats[k] for k in ("ok", "host", "database", "files", "rows", "bytes", "seconds",
                                                   "fetch_s", "validate_s", "load_s", "fetch_MBps", "load_MBps",
                                                   "MBps", "error")})
    return stats


# --- MIG-TA1: the batch ----------------------------------------------------------------------------------
@given("the TA import task is scheduled on sh-ta only and sz-ta has no import program")
def scheduled_on_shanghai_only(callcenter, ctx):
    lab = callcenter.lab
    assert "mig_ta_import" not in read_ledger(lab)["steps"], "the ledger already records mig_ta_import"
    sh = ta.cron_entry(lab, "sh-ta", _v(callcenter, "ta_import_cron_name"))
    sz = ta.cron_entry(lab, "sz-ta", _v(callcenter, "ta_import_cron_name"))
    ctx["sh_program"] = ta.program_manifest(lab, "sh-ta")
    _measure(ctx, "before", {"sh_task": sh and sh.active, "sz_task": sz and sz.active,
                             "sh_program_files": len(ctx["sh_program"])})
    assert sh is not None and sh.active, f"sh-ta has no active scheduled task: {sh}"
    assert sz is None, f"sz-ta already has a scheduled task: {sz}"
    assert ctx["sh_program"], "sh-ta has no import program"
    assert not ta.program_manifest(lab, "sz-ta"), "sz-ta already has the import program"


@given("the TA import batch has run")
def ta_batch_has_run(callcenter, ctx, timeline):
    if "mig_ta_import" not in read_ledger(callcenter.lab)["steps"]:
        run = _play(callcenter, timeline, BATCH)
        assert run.rc == 0, f"{BATCH} failed:\n{run.output[-4000:]}"


@when(parsers.re(r"the operators run the TA import batch(?P<again> again)?"))
def operators_run_batch(callcenter, ctx, timeline, again):
    ctx["run"] = _play(callcenter, timeline, BATCH)
    _measure(ctx, "batch_again" if again else "batch", {"rc": ctx["run"].rc, "changed": ctx["run"].changed,
                                                        "seconds": ctx["run"].seconds})


@then("sz-ta holds the import program with the same bytes as sh-ta")
def same_program(callcenter, ctx):
    sh = ta.program_manifest(callcenter.lab, "sh-ta")
    sz = ta.program_manifest(callcenter.lab, "sz-ta")
    differ = sorted(p for p in set(sh) | set(sz) if sh.get(p) != sz.get(p))
    _measure(ctx, "program_files", {"sh-ta": len(sh), "sz-ta": len(sz), "differ": differ[:20]})
    assert sh and not differ, f"the program on sz-ta differs from sh-ta's in {len(differ)} files: {differ[:10]}"
    assert "/usr/local/bin/ta-import" in sz and "/etc/ccdrill/ta_import.ini" in sz, sorted(sz)[:20]


@then(parsers.parse("the scheduled task of {host} is stopped while cron keeps running there"))
def task_stopped(callcenter, ctx, host):
    entry = ta.cron_entry(callcenter.lab, host, _v(callcenter, "ta_import_cron_name"))
    _measure(ctx, f"{host}_task", entry and {"active": entry.active, "command": entry.command})
    assert entry is not None, f"{host} lost its TA import entry (the plan stops it; the program stays as fallback)"
    assert not entry.active, f"{host}'s scheduled task still runs: {entry}"
    assert ta.cron_running(callcenter.lab, host), f"cron is not running on {host}"


@then(parsers.parse("the scheduled task of {host} runs the import outside agent hours"))
def task_active(callcenter, ctx, host):
    entry = ta.cron_entry(callcenter.lab, host, _v(callcenter, "ta_import_cron_name"))
    hours = _v(callcenter, "ta_import_agent_hours")
    _measure(ctx, f"{host}_task", entry and {"active": entry.active, "schedule": entry.schedule,
                                             "command": entry.command})
    assert entry is not None and entry.active, f"{host} has no active scheduled TA import task: {entry}"
    assert ta.cron_running(callcenter.lab, host), f"cron is not running on {host}"
    assert entry.schedule[2:] == ["*", "*", "*"], f"{host}'s task does not run every night: {entry.schedule}"
    assert not hours["start"] <= entry.hour < hours["end"], (
        f"{host}'s task starts at {entry.hour:02d}:{entry.minute:02d}, inside agent hours "
        f"{hours['start']:02d}:00-{hours['end']:02d}:00")
    assert "/usr/local/bin/ta-import" in entry.command, entry.command


# --- MIG-TA1/TA2: the bulk run ----------------------------------------------------------------------------
@given(parsers.re(r"the registrar publishes a batch of (?P<files>\d+) TA files holding more than (?P<mb>\d+) MB "
                  r"of text"))
def publish_big(callcenter, ctx, ta_batches, files, mb):
    total = int(mb) * MB + MB  # "more than": one MB over
    ctx["expected"] = exp = ta_batches.publish(int(files), total, "bulk")
    _measure(ctx, "published", {"batch": exp["batch"], "files": len(exp["files"]), "rows": exp["rows"],
                                "bytes": exp["bytes"], "checksum": exp["checksum"]})
    assert exp["bytes"] > int(mb) * MB, exp["bytes"]


@given(parsers.re(r"the registrar publishes a batch of (?P<files>\d+) TA files whose file (?P<seq>\d+) has a "
                  r"malformed amount on line (?P<line>\d+)"))
def publish_corrupt(callcenter, ctx, ta_batches, files, seq, line):
    ctx["expected"] = exp = ta_batches.publish(int(files), 60_000, "bad", corrupt=(int(seq), int(line), "field"))
    ctx["corrupt_file"] = exp["files"][int(seq) - 1]["name"]
    _measure(ctx, "published", {"batch": exp["batch"], "rows": exp["rows"], "corrupt": exp["corrupt"]})


@given(parsers.re(r"the registrar publishes a batch of (?P<files>\d+) TA files$"))
def publish_small(callcenter, ctx, ta_batches, files):
    ctx["expected"] = exp = ta_batches.publish(int(files), 90_000, "night")
    _measure(ctx, "published", {"batch": exp["batch"], "rows": exp["rows"], "bytes": exp["bytes"]})


@when("the registrar sends the batch again, intact")
def resend_intact(callcenter, ctx, ta_batches):
    bad = ctx["expected"]
    ctx["expected"] = ta_batches.publish(len(bad["files"]), 60_000, "bad", replace_of=bad["batch"])


@when(parsers.parse("the scheduled task of {host} runs the way cron starts it, while basic call tests run"))
def cron_run_with_calls(callcenter, ctx, ta_batches, timeline, host):
    rounds = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        t0 = time.time()
        job = pool.submit(_run_cron, callcenter, ctx, ta_batches, host)
        while not job.done() and len(rounds) < MAX_CALL_ROUNDS:
            started = time.time()
            rounds.append({"started": started, **basic_calls(callcenter), "seconds": round(time.time() - started, 1)})
        stats = job.result()
        finished = time.time()
    ctx["call_rounds"], ctx["import_window"] = rounds, (t0, finished)
    timeline.event("ta_import_run", host=host, rows=stats["rows"], bytes=stats["bytes"], seconds=stats["seconds"],
                   MBps=stats["MBps"], call_rounds=len(rounds))
    _measure(ctx, "basic_calls", [{k: r.get(k) for k in ("ok", "problems", "seconds")} for r in rounds])


@when(parsers.parse("the scheduled task of {host} runs the way cron starts it"))
def cron_run(callcenter, ctx, ta_batches, host):
    _run_cron(callcenter, ctx, ta_batches, host)


@then("every record the registrar sent is in the database, with the same record count and checksum")
def every_record(callcenter, ctx):
    stats = ctx.get("ta_stats") or {}
    verdict = ta.verify_batch(callcenter.lab, ctx["ta_conn"], ctx["expected"])
    _measure(ctx, "database", {k: verdict[k] for k in ("ok", "db", "rows", "expected_rows", "checksum",
                                                       "expected_checksum", "entry", "problems")})
    assert stats.get("ok"), f"the import run failed: {stats.get('error')}"
    assert verdict["ok"], "; ".join(verdict["problems"])


@then("the run read the files and wrote the records across the WAN, measured in MB/s per phase")
def across_the_wan(callcenter, ctx):
    stats, inv = ctx["ta_stats"], callcenter.lab.inv
    files_site = inv.hosts[_files_host(callcenter)].sites[0]
    db_site = inv.hosts[ctx["ta_conn"]["host"]].sites[0]
    job_site = inv.hosts[stats["host"]].sites[0]
    _measure(ctx, "cross_site", {"job": f"{stats['host']} ({job_site})", "files": f"ta-files ({files_site})",
                                 "database": f"{ctx['ta_conn']['host']} ({db_site})",
                                 "MB": round(stats["bytes"] / MB, 1), "seconds": stats["seconds"],
                                 "fetch_MBps": stats["fetch_MBps"], "load_MBps": stats["load_MBps"],
                                 "MBps": stats["MBps"]})
    assert job_site != files_site, f"the job on {stats['host']} read files on its own site ({files_site})"
    assert job_site != db_site, f"the job on {stats['host']} wrote a database on its own site ({db_site})"
    assert stats["bytes"] == ctx["expected"]["bytes"], (stats["bytes"], ctx["expected"]["bytes"])
    for key in ("fetch_MBps", "load_MBps", "MBps", "seconds", "fetch_s", "load_s"):
        assert stats[key] > 0, f"{key} not measured: {stats}"


@then("the run fits in the night between its start and the agents' first shift")
def fits_the_night(callcenter, ctx):
    entry = ta.cron_entry(callcenter.lab, ctx["ta_host"], _v(callcenter, "ta_import_cron_name"))
    start = _v(callcenter, "ta_import_agent_hours")["start"]
    window_s = ((start - entry.hour) % 24) * 3600 - entry.minute * 60
    took = ctx["ta_stats"]["seconds"]
    _measure(ctx, "night_window", {"cron": f"{entry.hour:02d}:{entry.minute:02d}", "agents_from": f"{start:02d}:00",
                                   "window_s": window_s, "run_s": took})
    assert took < window_s, f"the import took {took} s, the night leaves {window_s} s before agents start"


@then("the basic call tests kept passing while the import ran")
def calls_passed(ctx):
    rounds = ctx["call_rounds"]
    t0, t1 = ctx["import_window"]
    during = [r for r in rounds if t0 <= r["started"] < t1]
    failed = [r for r in rounds if not r["ok"]]
    assert during, f"no basic call test ran while the import ran ({t1 - t0:.1f} s)"
    assert not failed, "basic call tests failed: " + "; ".join("; ".join(r["problems"]) for r in failed)


@then(parsers.re(r"the import failed naming file (?P<seq>\d+) of the batch and line (?P<line>\d+)"))
def import_failed_naming(ctx, seq, line):
    stats, run = ctx["ta_stats"], ctx["cron_run"]
    err = stats.get("error") or {}
    _measure(ctx, "error", err)
    assert not stats["ok"] and run["rc"] != 0, f"the import of a corrupt batch did not fail: {stats}"
    assert err.get("file") == ctx["corrupt_file"] and err.get("line") == int(line), err
    assert ctx["corrupt_file"] in err["message"] and f"line {line}" in err["message"], err["message"]
    assert "amount" in err["message"], f"the error does not say which field: {err['message']}"


@then("nothing of the batch is in the database")
def nothing_written(callcenter, ctx):
    got = ta.table_batch(callcenter.lab, ctx["ta_conn"], ctx["expected"]["batch"])
    _measure(ctx, "database_after_failure", got)
    assert got["rows"] == 0 and got["entry"] is None, f"half a batch written: {got}"


# --- POST-TA: steady state, fault, response, hypothesis, rollback --------------------------------------------
class TaRollback:
    """Power Shenzhen's TA server back on, then its own scheduled task must import the next batch. Runs once."""

    def __init__(self, cc, timeline, ctx, batches: TaBatches):
        self.cc, self.timeline, self.ctx, self.batches = cc, timeline, ctx, batches
        self.faults: list = []
        self.done = False

    def run(self) -> dict:
        if self.done:
            return {}
        self.done = True
        problems, report = [], {}
        for fault in reversed(self.faults):
            try:
                report[f"undo {fault.kind} {fault.host}"] = host_faults.undo_host_down(self.cc.lab, fault,
                                                                                        self.timeline)
            except Exception as exc:  # noqa: BLE001 (the rollback goes on; reported below)
                problems.append(f"undo {fault.kind} {fault.host}: {exc}")
        try:
            host = self.cc.lab.inv.vars["ta_import_sites"]["shenzhen"]
            exp = self.batches.publish(2, 40_000, "next")
            stats = _run_cron(self.cc, self.ctx, self.batches, host)
            verdict = ta.verify_batch(self.cc.lab, self.ctx["ta_conn"], exp)
            report["steady_state"] = {"host": stats["host"], "ok": stats["ok"], "rows": verdict["rows"],
                                      "expected_rows": verdict["expected_rows"]}
            if not (stats["ok"] and verdict["ok"] and stats["host"] == host):
                problems.append(f"{host}'s task after the rollback: {stats.get('error')} {verdict['problems']}")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"steady state after the rollback: {exc}")
        self.timeline.event("rollback", ok=not problems, problems=problems, **report)
        _measure(self.ctx, "rollback", report)
        if problems:
            raise CheckFailed("rollback: " + "; ".join(problems))
        return report


@pytest.fixture
def ta_rollback(request, callcenter, timeline, ctx, ta_batches) -> TaRollback:
    rb = TaRollback(callcenter, timeline, ctx, ta_batches)
    # Registered after ta_batches' finalizer, so it runs first (finalizers run in reverse).
    request.addfinalizer(lambda: rb.faults and rb.run())
    return rb


@given("the steady state: the scheduled task of sz-ta imports the registrar's batch of the night")
def steady_state(callcenter, ctx, timeline, ta_batches, ta_rollback):
    # The job writes where the call center's data is (after the app/DB batch: the Shenzhen database). If the
    # job's config still names another database than the IPCs' DB-connection config, the inventory's
    # configuration (playbooks/ta_import.yml) is applied first, and the steady state says so.
    ipc_db = read_dbconn(callcenter.lab, callcenter.ivr_host())["host"]
    converged = None
    if ta.job_db(callcenter.lab, "sz-ta")["host"] != ipc_db:
        run = _play(callcenter, timeline, "ta_import.yml")
        assert run.rc == 0, f"playbooks/ta_import.yml failed:\n{run.output[-4000:]}"
        converged = run.changed
    exp = ta_batches.publish(2, 40_000, "steady")
    stats = _run_cron(callcenter, ctx, ta_batches, "sz-ta")
    verdict = ta.verify_batch(callcenter.lab, ctx["ta_conn"], exp)
    _measure(ctx, "steady_state_before", {"host": stats["host"], "rows": verdict["rows"], "ok": verdict["ok"],
                                          "ipc_db": ipc_db, "converge_changed": converged})
    assert stats["ok"] and verdict["ok"], f"sz-ta's task does not import: {stats.get('error')} {verdict['problems']}"
    assert ctx["ta_conn"]["host"] == ipc_db, (
        f"sz-ta's job writes {ctx['ta_conn']['host']}, the call center uses {ipc_db}")


@when(parsers.parse("the nemesis powers off {host}"))
def nemesis_power_off(callcenter, ctx, timeline, ta_rollback, host):
    fault = host_faults.host_down(callcenter.lab, host, timeline)
    ta_rollback.faults.append(fault)
    _measure(ctx, "fault", fault.as_dict())


@then(parsers.parse("the scheduled task of {host} cannot run"))
def task_cannot_run(callcenter, ctx, host):
    try:
        rc, _out, err = callcenter.lab.exec(host, ["crontab", "-l"], 10)
    except Exception as exc:  # noqa: BLE001 (a stopped container refuses exec: what we expect)
        _measure(ctx, "sz_task_during_fault", str(exc)[:200])
        return
    raise AssertionError(f"{host} still answers (crontab -l rc {rc}): the fault did not take it down")


@when("the operators run dr/ta_import_shanghai.yml")
def operators_run_dr(callcenter, ctx, timeline, ta_batches):
    ctx["run"] = run = _play(callcenter, timeline, DR_PLAYBOOK)
    _measure(ctx, "dr_playbook", {"rc": run.rc, "changed": run.changed, "seconds": run.seconds})
    assert run.rc == 0, f"{DR_PLAYBOOK} failed:\n{run.output[-4000:]}"
    host = _v(callcenter, "ta_import_sites")["shanghai"]
    ctx["ta_stats"] = ta.last_run(callcenter.lab, host)
    ctx["ta_conn"] = ta.job_db(callcenter.lab, host)
    ta_batches.conns.append(ctx["ta_conn"])


@then(parsers.parse("{host} imported the batch and its scheduled task stays stopped"))
def shanghai_imported(callcenter, ctx, host):
    got = ta.table_batch(callcenter.lab, ctx["ta_conn"], ctx["expected"]["batch"])
    entry = ta.cron_entry(callcenter.lab, host, _v(callcenter, "ta_import_cron_name"))
    _measure(ctx, "imported_by", got["entry"])
    assert got["entry"] and got["entry"]["host"] == host, f"the batch was not imported by {host}: {got}"
    assert entry is not None and not entry.active, f"{host}'s scheduled task is active again: {entry}"


@then("after the rollback the scheduled task of sz-ta imports the registrar's next batch")
def after_rollback(ta_rollback):
    ta_rollback.run()
