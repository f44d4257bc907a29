"""Steps of the upgrade weekend and of the target layout: run the plan's playbooks, read the ledger."""

from __future__ import annotations

import json

from pytest_bdd import parsers, then, when

from ccdrill.checks.monitor import service_states
from ccdrill.lab import pbx
from ccdrill.lab.runbook import read_ledger

from .common import measure as _measure
from .upgrade_flow import APPROVALS, run_step


@when(parsers.re(r"the operators run the (?P<step>\w+) step(?P<again> again)?"))
def operators_run_step(callcenter, ctx, step, again):
    ctx["run"] = run_step(callcenter, step)
    _measure(ctx, f"{step}{'_again' if again else ''}", {"rc": ctx["run"].rc, "changed": ctx["run"].changed,
                                                          "seconds": ctx["run"].seconds})


@when("the operators record the approval with only the IT department's sign-off")
def record_approval_it_only(callcenter, ctx):
    ctx["run"] = run_step(callcenter, "approval", approvals={"it": APPROVALS["it"]})


@when("the operators record the approval of the IT and the business department")
def record_approval_both(callcenter, ctx):
    ctx["run"] = run_step(callcenter, "approval", approvals=APPROVALS)


@then(parsers.re(r"the step is refused because (?P<what>.+) is missing"))
def step_refused(ctx, what):
    run = ctx["run"]
    assert run.rc != 0, f"{run.playbook} ran although {what} is missing"
    needle = {"the business department's sign-off": "upgrade_approvals.business"}.get(what, f"needs {what}")
    assert run.mentions(needle), f"{run.playbook} failed without naming {what!r}:\n{run.output[-3000:]}"


@then(parsers.re(r"the runbook ledger (?P<neg>does not record|records) (?P<step>\w+)(?P<both> by both departments)?"))
def ledger_records(callcenter, ctx, neg, step, both):
    steps = read_ledger(callcenter.lab)["steps"]
    if neg == "does not record":
        assert step not in steps, f"the ledger records {step}: {steps.get(step)}"
        return
    run = ctx.get("run")
    said = f"; the playbook said:\n{run.output[-3000:]}" if run else ""
    assert step in steps, f"the ledger does not record {step}{said}"
    if both:
        assert set(steps[step]["detail"]) >= {"it", "business"}, steps[step]
    _measure(ctx, f"ledger_{step}", steps[step])


@then("nothing changes")
def nothing_changes(ctx):
    run = ctx["run"]
    assert run.rc == 0 and run.changed == 0, f"second run of {run.playbook}: rc={run.rc}, changed={run.changed}"


@then(parsers.re(r"the website's home page shows (?P<no>no )?(?:the )?upgrade notice"))
def website_shows_notice(callcenter, ctx, no):
    web = callcenter.lab.inv.hosts_of("website")[0]
    fetch = f"import urllib.request;print(urllib.request.urlopen('http://{web}/', timeout=5).read().decode())"
    # Fetched from the carrier's side, as a customer would: through the lab's DNS and network.
    rc, out, err = callcenter.lab.exec(callcenter.carrier_host, ["python3", "-c", fetch], 20)
    assert rc == 0, f"the website did not answer: {err}"
    shown = 'id="upgrade-notice"' in out
    assert shown != bool(no), f"upgrade notice {'still' if no else 'not'} on http://{web}/:\n{out[:1000]}"


@then(parsers.parse("the IVR played the upgrade-notice prompt first to {count:d} callers"))
def ivr_played_notice(callcenter, ctx, count):
    ivr = callcenter.ivr_stats()
    _measure(ctx, "ivr_prompts", ivr["prompts"])
    assert ivr["last_session"]["prompts"][0] == "upgrade-notice", ivr["last_session"]
    assert ivr["prompts"].get("upgrade-notice", 0) >= count, ivr["prompts"]


@then("the new IPC restored every file of the old IPC's backup intact")
def backup_restored(callcenter, ctx):
    detail = read_ledger(callcenter.lab)["steps"]["friday"]["detail"]
    _measure(ctx, "restored_files", detail["restored_files"])
    assert int(detail["restored_files"]) > 10, detail


@then(parsers.parse("the dial test answered {a:d} calls on {b1} in {h1} and {c:d} calls on {b2} in {h2}"))
def dial_test_answered(callcenter, ctx, a, b1, h1, c, b2, h2):
    report = read_ledger(callcenter.lab)["steps"]["saturday_am"]["detail"]["dialtest"]
    _measure(ctx, "dialtest", report)
    for board, host, n in ((b1, h1, a), (b2, h2, c)):
        got = report["boards"][board]
        assert (got["ipc"], got["answered"], got["peak"]) == (host, n, n), (
            f"the plan says {n} channels of {board} in {host} dial-tested, the test answered {got}")


@then("the services of both IPCs run as the DR principle says")
def services_per_dr2(callcenter):
    problems = service_states(callcenter)
    assert not problems, "; ".join(problems)


@then("the basic call tests recorded by the step passed")
def basic_calls_recorded(callcenter, ctx):
    basic = read_ledger(callcenter.lab)["steps"]["saturday_am"]["detail"]["basic_calls"]
    _measure(ctx, "basic_calls", basic)
    assert basic.get("ok") is True, json.dumps(basic)


@then(parsers.parse("board {b1} held at most {n1:d} channels and board {b2} at most {n2:d}"))
def per_board_peak(callcenter, ctx, b1, n1, b2, n2):
    stats = callcenter.all_board_stats("voice")
    peaks = {b: sum(p["peak"] for p in stats[b]["pools"].values()) for b in (b1, b2)}
    _measure(ctx, "board_peaks", peaks)
    assert peaks[b1] <= n1 and peaks[b2] <= n2, f"per-IPC limits {b1}<={n1}, {b2}<={n2}; measured {peaks}"


@then(parsers.parse("the PBX has a tie trunk of {count:d} channels"))
def pbx_tie_trunk(callcenter, ctx, count):
    got = pbx.tie_trunk_channels(callcenter.lab, callcenter.pbx_host)
    _measure(ctx, "tie_trunk_channels", got)
    assert got == count, f"the plan says a {count}-channel tie trunk, the PBX enforces {got}"
    ctx["tie_before"] = pbx.counter(callcenter.lab, callcenter.pbx_host, "tie_legs")


@then(parsers.parse("the tie trunk carried {count:d} agent legs"))
def tie_carried(callcenter, ctx, count):
    got = pbx.counter(callcenter.lab, callcenter.pbx_host, "tie_legs") - ctx["tie_before"]
    _measure(ctx, "tie_legs", got)
    assert got == count, f"the plan routes agent legs over the tie trunk: expected {count}, the PBX counted {got}"


@then(parsers.parse("the PBX trunk of {board} now reaches {host} with its {channels:d} channels"))
def pbx_trunk_reaches(callcenter, ctx, board, host, channels):
    dests = pbx.dispatcher_destinations(callcenter.lab, callcenter.pbx_host)
    addr = callcenter.lab.inv.address(host)
    port = next(b.port for b in callcenter.boards("voice") if b.name == board)
    mine = [d for d in dests if d["set"] == 1 and (f"{host}:{port}" in d["uri"] or f"{addr}:{port}" in d["uri"])]
    _measure(ctx, "dispatcher", dests)
    assert mine, f"no voice trunk of the PBX reaches {host}:{port}: {dests}"
    assert "A" in mine[0]["flags"], f"the trunk to {host}:{port} is not active: {mine[0]}"
    attrs = mine[0].get("attrs", "")
    assert f"name={board}" in attrs and f"chan={channels}" in attrs, (
        f"the E1 link of {board} ({channels} channels) is not the trunk to {host}:{port}: {attrs}")


@then("the drill recorded dr3, dr4 and dr5 each with its response, passing basic calls and the failback")
def drill_recorded(callcenter, ctx):
    detail = read_ledger(callcenter.lab)["steps"]["sunday_drill"]["detail"]
    _measure(ctx, "sunday_drill", detail)
    for mode in ("dr3", "dr4", "dr5"):
        d = detail["drills"][mode]
        assert d["response_rc"] == 0 and d["failback_rc"] == 0, f"{mode}: {d}"
        assert d["basic_after_response"]["ok"] and d["basic_after_failback"]["ok"], f"{mode}: {d}"


@then("the monitoring check recorded every service up and no failed calls")
def monitoring_recorded(callcenter, ctx):
    detail = read_ledger(callcenter.lab)["steps"]["monday"]["detail"]
    _measure(ctx, "monday", detail)
    assert detail["monitor"]["ok"] and not detail["monitor"]["problems"], detail["monitor"]
    assert detail["monitor"]["answered"] == detail["monitor"]["calls"], detail["monitor"]
    assert detail["basic_calls"]["ok"], detail["basic_calls"]
