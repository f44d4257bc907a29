"""Steps of the application-server and database batches and their DR (features/migration_3_app_db.feature).

Agents write work orders through the login entries while the plan's playbooks run (ccdrill.load.writes);
the checks (ccdrill.checks.data) count what the databases hold against what was acknowledged. DR
scenarios follow the Chaos Toolkit shape of steps_failover.py: steady state, fault (ccdrill.faults.data),
the operators' playbook, hypothesis, and a rollback (failback playbook) that always runs.
"""

from __future__ import annotations

import time

import pytest
from pytest_bdd import given, parsers, then, when

from ccdrill.checks import data as checks
from ccdrill.checks.basic import basic_calls
from ccdrill.faults import data as data_faults
from ccdrill.lab import data as labdata
from ccdrill.lab.database import read_dbconn
from ccdrill.lab.runbook import read_ledger
from ccdrill.load.writes import Writer

from .common import measure as _measure
from .common import play as _play

BATCHES = {"app and database migration test": "migration/03_app_db_test.yml",
           "final app and database migration": "migration/04_app_db_migration.yml"}
EARLIER = ("mig_webchat", "mig_ta_import")
EIGHT_STEPS = [f"Step {n} -" for n in range(1, 9)]
LOGIN = {"Shanghai": "login-sh", "Shenzhen": "login-sz"}


def _agent_host(cc) -> str:
    return cc.lab.inv.hosts_of("agent_seats")[0]


def _ipc_db_hosts(cc) -> dict[str, str]:
    return {ipc: read_dbconn(cc.lab, ipc)["host"] for ipc in cc.lab.inv.hosts_of("ipc")}


@given("the ledger records the migration batches before the application server and database")
def earlier_batches(callcenter):
    steps = read_ledger(callcenter.lab)["steps"]
    missing = [s for s in EARLIER if s not in steps]
    assert not missing, (f"the ledger does not record {', '.join(missing)}: the plan runs those batches first "
                         "(features/migration_1_*, migration_2_*)")


@when(parsers.re(r"the operators run the (?P<batch>app and database migration test|final app and database "
                 r"migration)(?P<again> again)?"))
def operators_run_batch(callcenter, ctx, timeline, batch, again):
    run = _play(callcenter, timeline, BATCHES[batch], ctx=ctx)
    _measure(ctx, f"{batch}{' again' if again else ''}", {"rc": run.rc, "changed": run.changed,
                                                         "seconds": run.seconds})


@then(parsers.parse("the data tier is untouched: the IPCs and the Shanghai application server on {db}, "
                    "DDS from {src} to {dst}"))
def data_tier_untouched(callcenter, ctx, db, src, dst):
    lab = callcenter.lab
    ipcs = _ipc_db_hosts(callcenter)
    login = labdata.login(lab, _agent_host(callcenter), LOGIN["Shanghai"])
    app_db = labdata.app_login_db(lab, "sh-app")
    dds = labdata.dds_stats(lab, dst)
    _measure(ctx, "data_tier", {"ipc_db": ipcs, "sh_app_login": login, "dds": {k: dds.get(k) for k in
                                                                                ("state", "source", "destination")}})
    assert set(ipcs.values()) == {db}, f"the IPCs' DB-connection configs name {ipcs}, expected {db}"
    assert login.get("ok") and login.get("db") == db, f"an agent's login through login-sh: {login}"
    assert app_db == db, f"the Shanghai application server uses {app_db}"
    assert (dds.get("source"), dds.get("destination"), dds.get("state")) == (src, dst, "running"), dds


@then(parsers.parse("the Shenzhen test of {step} recorded basic calls whose IVR query read {db} through KCBP"))
def test_basic_calls(callcenter, ctx, step, db):
    detail = read_ledger(callcenter.lab)["steps"][step]["detail"]
    basic = detail["basic_calls"]
    _measure(ctx, "basic_calls", basic)
    assert basic.get("ok") is True and basic.get("ivr_db") == db, basic


@then(parsers.parse("the Shenzhen test of {step} recorded an agent's login and work order on the Shenzhen "
                    "application server over {db}"))
def test_agent(callcenter, ctx, step, db):
    detail = read_ledger(callcenter.lab)["steps"][step]["detail"]
    _measure(ctx, "agent", {"login": detail["agent_login"], "order": detail["agent_order"]})
    login, order = detail["agent_login"], detail["agent_order"]
    assert login.get("ok") and login.get("app") == "sz-app" and login.get("db") == db, login
    assert order.get("ok") and order.get("db") == db, order
    # The order is really there, on the database the test used.
    assert labdata.has_id(callcenter.lab, db, order["id"]), f"order {order['id']} is not on {db}"


@then(parsers.parse("the Shenzhen test of {step} recorded every service monitored and no failed calls"))
def test_monitored(callcenter, ctx, step):
    mon = read_ledger(callcenter.lab)["steps"][step]["detail"]["monitor"]
    _measure(ctx, "monitor", mon)
    assert mon.get("ok") and not mon.get("problems"), mon
    assert mon.get("answered") == mon.get("calls") and mon.get("calls", 0) > 0, mon


@then(parsers.parse("the IPCs' DB-connection config names {db} again, the replaced one kept as {backup}"))
def ipc_back(callcenter, ctx, db, backup):
    ipcs = _ipc_db_hosts(callcenter)
    kept = {ipc: callcenter.lab.exec(ipc, ["cat", backup], 10)[1] for ipc in ipcs}
    _measure(ctx, "ipc_db", ipcs)
    assert set(ipcs.values()) == {db}, ipcs
    assert all(f"host = {db}" in k for k in kept.values()), f"backups {backup}: {kept}"


# --- the writer ---------------------------------------------------------------------------------------------
@pytest.fixture
def writer_box(request):
    box: dict = {}

    def _stop():
        w = box.get("writer")
        if w is not None and "history" not in box:
            box["history"] = w.stop()

    request.addfinalizer(_stop)
    return box


@given(parsers.re(r"agents recording work orders through the (?P<site>Shanghai|Shenzhen) login entry"
                  r"(?P<fallback>, falling back to Shenzhen's)?"))
def agents_writing(callcenter, ctx, writer_box, site, fallback):
    entries = [LOGIN[site]] + ([LOGIN["Shenzhen"]] if fallback else [])
    tag = f"w{int(time.time())}"
    w = Writer(callcenter.lab, _agent_host(callcenter), entries, labdata.APP_PORT, tag, max_s=300.0).start()
    writer_box["writer"], ctx["writer_tag"] = w, tag
    ctx["writer_started"] = time.time()
    time.sleep(2.0)  # some orders acknowledged before the procedure starts


@when(parsers.parse("the agents go on recording work orders for {seconds:d} s"))
def agents_go_on(ctx, writer_box, seconds):
    time.sleep(seconds)
    writer_box["history"] = hist = writer_box["writer"].stop()
    ctx["history"] = hist
    _measure(ctx, "writes", hist.summary())
    _measure(ctx, "write_gap", checks.downtime(hist))
    assert hist.error is None, hist.error


@then(parsers.parse("every work order the application acknowledged is on {db}"))
def acked_present(callcenter, ctx, db):
    verdict = checks.writes_durable(callcenter.lab, ctx["history"], db)
    _measure(ctx, f"durable_{db}", verdict)
    assert verdict["acked"] > 0, f"the agents' writer got no acknowledgement at all: {verdict}"
    assert verdict["ok"], f"acknowledged work orders missing on {db}: {verdict['lost_sample']} ({verdict})"


@then(parsers.parse("the agents' writes resumed on {db} through the Shenzhen application server and the downtime "
                    "is measured"))
def downtime_measured(callcenter, ctx, db):
    hist = ctx["history"]
    dt = checks.downtime(hist)
    _measure(ctx, "downtime", dt)
    after = [r for r in hist.records if r["outcome"] == "ok" and r["t1"] > dt.get("gap_end", 0) - 0.001]
    assert dt["acked_before"] > 0 and dt["acked_after"] > 0, f"no writes on one side of the downtime: {dt}"
    assert all(r.get("db") == db and r.get("app") == "sz-app" for r in after), after[:3]


@then("the playbook ran the plan's eight steps in order")
def eight_steps(ctx):
    out = ctx["run"].output
    pos = [out.find(f"PLAY [{s}") for s in EIGHT_STEPS]
    _measure(ctx, "step_positions", pos)
    missing = [s for s, p in zip(EIGHT_STEPS, pos, strict=True) if p < 0]
    assert not missing, f"steps missing from the run: {missing}"
    assert pos == sorted(pos), f"the steps ran out of the plan's order: {pos}"


@then(parsers.parse("DDS runs from {src} to {dst} and both databases hold the same rows and checksums"))
def dds_reversed(callcenter, ctx, src, dst):
    dds = labdata.dds_stats(callcenter.lab, dst)
    sync = labdata.wait_in_sync(callcenter.lab, src, dst)
    _measure(ctx, "dds", {k: dds.get(k) for k in ("state", "source", "destination", "lag_bytes", "initial_loads")})
    _measure(ctx, "digests", sync)
    assert (dds.get("source"), dds.get("destination"), dds.get("state")) == (src, dst, "running"), dds
    assert sync["in_sync"], f"{src} and {dst} differ: {sync}"
    assert sync[src]["work_order"]["rows"] > 0, sync
    # DDS is live, not a one-off copy: a row written on the source now reaches the destination.
    probe = checks.replication_probe(callcenter.lab, src, dst)
    _measure(ctx, "replication_probe", probe)
    assert probe["arrived"], probe


@then(parsers.parse("the IPCs' DB-connection config was backed up and names {db}"))
def ipc_dbconn_switched(callcenter, ctx, db):
    ipcs = _ipc_db_hosts(callcenter)
    backups = {}
    for ipc in ipcs:
        rc, out, _ = callcenter.lab.exec(ipc, ["cat", "/var/backups/ccdrill/dbconn.ini.before-mig_app_db"], 10)
        backups[ipc] = out if rc == 0 else None
    _measure(ctx, "ipc_db", ipcs)
    assert set(ipcs.values()) == {db}, ipcs
    assert all(b and "host = sh-db" in b for b in backups.values()), f"backups of dbconn.ini: {backups}"


@then(parsers.re(r"the basic call tests recorded by (?P<step>[a-z][a-z_]*) passed"))
def basic_recorded(callcenter, ctx, step):
    basic = read_ledger(callcenter.lab)["steps"][step]["detail"]["basic_calls"]
    _measure(ctx, "basic_calls", basic)
    assert basic.get("ok") is True, basic


# --- DR after the migration -----------------------------------------------------------------------------------
class DataRollback:
    """Undo the nemesis' faults, then run the failback playbook and check the steady state. Runs once."""

    def __init__(self, cc, timeline, ctx):
        self.cc, self.timeline, self.ctx = cc, timeline, ctx
        self.faults: list = []
        self.playbook: str | None = None
        self.done = False
        self.report: dict = {}
        self.calls = True

    def run(self) -> dict:
        if self.done:
            return self.report
        self.done = True
        problems = []
        for fault in reversed(self.faults):
            if fault.undone is None:
                try:
                    data_faults.program_up(self.cc.lab, fault, self.timeline)
                    fault.undone = time.time()
                except Exception as exc:  # noqa: BLE001  (the rollback goes on; reported below)
                    problems.append(f"undo {fault.target} on {fault.host}: {exc}")
        if self.playbook:
            run = _play(self.cc, self.timeline, self.playbook)
            self.report["failback"] = {"playbook": self.playbook, "rc": run.rc, "seconds": run.seconds}
            if run.rc != 0:
                problems.append(f"{self.playbook} failed:\n{run.output[-3000:]}")
        try:
            self.report["steady_state"] = checks.steady_state(self.cc, calls=self.calls)
        except AssertionError as exc:
            problems.append(str(exc))
        self.timeline.event("rollback", ok=not problems, problems=problems, **self.report)
        assert not problems, "rollback: " + "; ".join(problems)
        return self.report


@pytest.fixture
def data_rollback(request, callcenter, timeline, ctx):
    rb = DataRollback(callcenter, timeline, ctx)

    def _fin():
        if rb.faults and not rb.done:
            rb.run()

    request.addfinalizer(_fin)
    return rb


@given(parsers.re(r"the data tier's steady state holds: sz-db primary, DDS keeps sh-db equal, (?P<what>basic calls "
                  r"pass|the Shenzhen application server alone serves)"))
def data_steady(callcenter, ctx, data_rollback, what):
    data_rollback.calls = what.startswith("basic")
    _measure(ctx, "steady_state_before", checks.steady_state(callcenter, calls=data_rollback.calls))


@when(parsers.re(r"the nemesis stops the (?P<what>database server on sz-db|Shenzhen application server)"))
def nemesis_stops(callcenter, ctx, data_rollback, timeline, what):
    host, program, failback = (("sz-db", "postgresql", "dr/db_failback.yml") if what.startswith("database")
                               else ("sz-app", "appserver", "dr/app_server_failback.yml"))
    data_rollback.playbook = failback
    fault = data_faults.program_down(callcenter.lab, host, program, timeline)
    data_rollback.faults.append(fault)
    _measure(ctx, "fault", fault.as_dict())


@when(parsers.re(r"the operators run (?P<playbook>dr/(?:db_to_shanghai|app_server_shanghai)\.yml)"))
def operators_run_dr(callcenter, ctx, timeline, playbook):
    run = _play(callcenter, timeline, playbook, ctx=ctx)
    _measure(ctx, playbook, {"rc": run.rc, "changed": run.changed, "seconds": run.seconds})
    assert run.rc == 0, f"{playbook} failed:\n{run.output[-4000:]}"


@then(parsers.parse("the IPCs and the Shenzhen application server use {db}"))
def configs_use(callcenter, ctx, db):
    ipcs = _ipc_db_hosts(callcenter)
    login = labdata.login(callcenter.lab, _agent_host(callcenter), LOGIN["Shenzhen"])
    _measure(ctx, "after_switch", {"ipc_db": ipcs, "sz_app_login": login})
    assert set(ipcs.values()) == {db}, ipcs
    assert login.get("ok") and login.get("db") == db, login


@then(parsers.parse("the basic call tests pass on {db}"))
def basic_pass_on(callcenter, ctx, db):
    res = basic_calls(callcenter)
    _measure(ctx, "basic_calls", res)
    assert res["ok"] and res["ivr_db"] == db, res


@then(parsers.re(r"after the data tier's rollback (?P<rows>every acknowledged work order is on both databases and )?"
                 r"the steady state holds again"))
def after_data_rollback(callcenter, ctx, data_rollback, rows):
    report = data_rollback.run()
    _measure(ctx, "rollback", report)
    if rows:
        for db in ("sz-db", "sh-db"):
            verdict = checks.writes_durable(callcenter.lab, ctx["history"], db)
            _measure(ctx, f"durable_after_rollback_{db}", verdict)
            assert verdict["ok"], f"after the rollback acknowledged work orders missing on {db}: {verdict}"


@then("an agent logs in through the Shanghai login entry and records a work order that lands on sz-db")
def agent_on_shanghai(callcenter, ctx):
    res = checks.agent_session(callcenter.lab, _agent_host(callcenter), LOGIN["Shanghai"], f"pa{int(time.time())}")
    _measure(ctx, "agent_shanghai", res)
    assert res["login"].get("ok") and res["login"].get("app") == "sh-app", res
    assert res["order"].get("ok") and res["order"].get("db") == "sz-db", res
    assert res["present_on"] == ["sh-db", "sz-db"], f"the order did not reach the primary and its replica: {res}"


@when("the Shenzhen application server is started again")
def sz_app_back(callcenter, ctx, data_rollback, timeline):
    for fault in data_rollback.faults:
        if fault.undone is None:
            data_faults.program_up(callcenter.lab, fault, timeline)
            fault.undone = time.time()


@then("agents log in through each site's login entry and both answer")
def both_entries(callcenter, ctx):
    agent = _agent_host(callcenter)
    got = {site: checks.agent_session(callcenter.lab, agent, entry, f"pb{site[:2].lower()}{int(time.time())}")
           for site, entry in LOGIN.items()}
    _measure(ctx, "both_entries", got)
    for site, app in (("Shanghai", "sh-app"), ("Shenzhen", "sz-app")):
        res = got[site]
        assert res["login"].get("ok") and res["login"].get("app") == app, f"{site}: {res}"
        assert res["order"].get("ok") and res["order"].get("db") == "sz-db", f"{site}: {res}"
