"""Steps of the telephony features: thin calls into ccdrill's load, lab and checks layers."""

from __future__ import annotations

import random

from pytest_bdd import given, parsers, then, when

from ccdrill.checks import capacity as check
from ccdrill.lab.database import psql, read_dbconn
from ccdrill.lab.hardware import running_boards
from ccdrill.load.calls import SEATS_STAT, CallSpec, hold_calls, hold_groups, outbound_campaign
from ccdrill.load.sipp import read_stat_file, uas_delta, wait_stat_file

from .common import measure as _measure

KINDS = {"IVR": "ivr", "agent": "agent", "fax": "fax"}


def _seats(callcenter):
    return read_stat_file(callcenter.lab.executor(callcenter.pbx_host), SEATS_STAT)


# --- Given --------------------------------------------------------------------------------------------
@given(parsers.parse("the call center in its {layout} layout"))
def call_center_in_layout(callcenter, ctx, timeline, layout):
    if layout == "target":  # a fresh lab gets there through the plan's own steps, recorded in the timeline
        from .upgrade_flow import ensure_target

        ensure_target(callcenter, timeline)
        callcenter.refresh()
    assert callcenter.layout_name == layout, f"the lab runs the {callcenter.layout_name} layout, not {layout}"
    callcenter.wait_controlled()
    callcenter.reset_peaks()
    ctx["seats_before"] = _seats(callcenter)


@given("a fund account with a fresh balance in the database the IPC's DB-connection config names")
def fresh_account(callcenter, ctx):
    conn = read_dbconn(callcenter.lab, callcenter.primary)
    account = f"T{random.randrange(10**8):08d}"
    balance = f"{random.randrange(10**6) / 100:.2f}"
    psql(callcenter.lab, conn, "INSERT INTO fund_account (account, balance) VALUES (:'p1', :'p2')", account, balance)
    ctx.update(account=account, balance=balance, db_host=conn["host"])


# --- When ---------------------------------------------------------------------------------------------
@when(parsers.re(r"the carrier offers (?P<count>\d+) (?P<kind>IVR|agent|fax) calls? at once"))
def carrier_offers(callcenter, ctx, count, kind):
    ctx[KINDS[kind]] = hold_calls(callcenter, KINDS[kind], int(count))


@when(parsers.parse("the carrier holds {agents:d} agent calls while {ivr:d} IVR calls arrive"))
def carrier_holds_mix(callcenter, ctx, agents, ivr):
    # Agents first, so that the IVR callers arrive on boards already holding agent calls.
    ctx["agent"], ctx["ivr"] = hold_groups(
        callcenter, [CallSpec("agent", agents), CallSpec("ivr", ivr, start_after_s=agents / 30.0 + 1.0)])


@when(parsers.re(r"the IPCs dial (?P<count>\d+) outbound calls? at once"))
def ipcs_dial(callcenter, ctx, count):
    ctx["outbound"] = outbound_campaign(callcenter, int(count))
    _measure(ctx, "outbound", ctx["outbound"].__dict__)


@when("a caller dials the IVR and asks for that account")
def caller_asks_for_account(callcenter, ctx):
    ctx["ivr"] = hold_calls(callcenter, "ivr", 1, hold_ms=1500, account=ctx["account"])


# --- Then ---------------------------------------------------------------------------------------------
@then(parsers.re(r"(?P<count>\d+) (?P<kind>IVR|agent|fax) calls? (?:is|are) answered and held together"))
def answered_together(ctx, count, kind):
    result = ctx[KINDS[kind]]
    _measure(ctx, f"{KINDS[kind]}_answered", result.answered)
    check.answered(result, int(count), kind)


@then(parsers.re(r"(?P<count>\d+) (?P<kind>IVR|agent|fax) calls? (?:is|are) refused with (?P<code>\d{3})"))
def refused_with(ctx, count, kind, code):
    result = ctx[KINDS[kind]]
    _measure(ctx, f"{KINDS[kind]}_refused", result.refused)
    check.refused(result, int(count), kind, int(code))


@then(parsers.parse("the boards held {count:d} channels at the peak"))
def boards_peak(callcenter, ctx, count):
    _measure(ctx, "channel_peak", check.channel_peak(callcenter.all_board_stats("voice"), count))


@then(parsers.parse("the boards held {count:d} outbound channels at the peak"))
def boards_outbound_peak(callcenter, ctx, count):
    stats = callcenter.all_board_stats("voice")
    _measure(ctx, "outbound_peak", check.channel_peak(stats, count, pools=("outbound", "any")))


@then(parsers.parse("the fax boards held {count:d} ports at the peak"))
def fax_peak(callcenter, ctx, count):
    _measure(ctx, "fax_peak", check.fax_peak(callcenter.all_board_stats("fax"), count))


@then(parsers.re(r"the seats answered (?P<count>\d+) agent legs?"))
def seats_answered(callcenter, ctx, count):
    ex = callcenter.lab.executor(callcenter.pbx_host)
    import time

    delta = uas_delta(ctx["seats_before"], wait_stat_file(ex, SEATS_STAT, time.time()))
    _measure(ctx, "seat_legs_answered", delta["answered"])
    assert delta["answered"] == int(count), (
        f"the plan says {count} agent legs answered by the seats, the seats answered {delta['answered']}")


@then(parsers.re(r"the carrier answers (?P<count>\d+) outbound calls?"))
def carrier_answers_outbound(ctx, count):
    check.outbound(ctx["outbound"], int(count))


@then(parsers.re(r"(?P<count>\d+) outbound calls? finds? no outbound channel"))
def outbound_no_channel(ctx, count):
    assert ctx["outbound"].no_channel == int(count), (
        f"the plan says {count} outbound call(s) without a channel, the boards had {ctx['outbound'].no_channel}")


@then(parsers.parse(
    'IPC "{host}" runs {count:d} voice boards with {channels:d} channels of which {cabled:d} are cabled'))
def ipc_runs_voice_boards(callcenter, ctx, host, count, channels, cabled):
    boards = [b for b in running_boards(callcenter.lab, host) if b["kind"] == "voice_board"]
    got = (len(boards), sum(b["channels"] for b in boards), sum(b["cabled"] for b in boards))
    _measure(ctx, f"{host}_voice", dict(zip(("boards", "channels", "cabled"), got, strict=True)))
    assert got == (count, channels, cabled), (
        f"the plan says {host} holds {count} voice boards, {channels} channels, {cabled} cabled; "
        f"the running boards report {got[0]} boards, {got[1]} channels, {got[2]} cabled")
    assert all(b["ipc"] == host for b in boards)


@then(parsers.parse('IPC "{host}" runs {count:d} fax board with {ports:d} ports'))
def ipc_runs_fax_boards(callcenter, ctx, host, count, ports):
    boards = [b for b in running_boards(callcenter.lab, host) if b["kind"] == "fax_board"]
    got = (len(boards), sum(b["ports"] for b in boards))
    _measure(ctx, f"{host}_fax", {"boards": got[0], "ports": got[1]})
    assert got == (count, ports), (
        f"the plan says {host} holds {count} fax board(s) with {ports} ports; running: {got[0]} with {got[1]}")


@then(parsers.parse('IPC "{host}" runs no board'))
def ipc_runs_no_board(callcenter, host):
    boards = running_boards(callcenter.lab, host)
    assert not boards, f"{host} should hold no board yet, it runs {[b['name'] for b in boards]}"


@then("the call is answered and the IVR read that balance from that database through KCBP")
def ivr_read_balance(callcenter, ctx):
    check.answered(ctx["ivr"], 1, "IVR")
    last = callcenter.ivr_stats()["last_query"]
    _measure(ctx, "ivr_last_query", last)
    assert last and last["account"] == ctx["account"], f"the IVR's last query was {last}, not {ctx['account']}"
    assert last["ok"] and last["rows"], f"the IVR's query for {ctx['account']} found nothing: {last}"
    assert last["rows"][0]["balance"] == ctx["balance"], (
        f"the IVR read balance {last['rows'][0]['balance']}, the database holds {ctx['balance']}")
    assert last["db"] == ctx["db_host"], f"the IVR read {last['db']}, the DB-connection config names {ctx['db_host']}"
