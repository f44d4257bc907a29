"""Basic call tests (BASIC-1) and the per-board dial test of Saturday morning, as verdicts."""

from __future__ import annotations

import random
import time

from ..lab.callcenter import CallCenter
from ..lab.database import psql, read_dbconn
from ..load.calls import SEATS_STAT, hold_calls, outbound_campaign, place_board_dial
from ..load.sipp import read_stat_file, uas_delta, wait_stat_file


def basic_calls(cc: CallCenter) -> dict:
    """One IVR call whose self-service query reads the current database through KCBP, one outbound call,
    one inbound call transferred to an agent who answers. Returns what was counted and the problems."""
    problems: list[str] = []
    ivr_host = cc.ivr_host()  # the primary, or the secondary after a DR-4 switchover
    conn = read_dbconn(cc.lab, ivr_host)
    account, balance = f"T{random.randrange(10**8):08d}", f"{random.randrange(10**6) / 100:.2f}"
    psql(cc.lab, conn, "INSERT INTO fund_account (account, balance) VALUES (:'p1', :'p2')", account, balance)
    ivr = hold_calls(cc, "ivr", 1, hold_ms=1500, account=account)
    last = cc.ivr_stats(ivr_host).get("last_query") or {}
    if ivr.answered != 1:
        problems.append(f"IVR call not answered ({ivr.refused or 'no answer'})")
    rows = last.get("rows") or []
    if last.get("account") != account or not rows or rows[0].get("balance") != balance:
        problems.append(f"IVR query did not read account {account} balance {balance}: {last}")
    elif last.get("db") != conn["host"]:
        problems.append(f"IVR read database {last.get('db')}, the DB-connection config names {conn['host']}")
    out = outbound_campaign(cc, 1, hold_ms=1000)
    if out.carrier_answered != 1:
        problems.append(f"outbound call not answered by the carrier ({out})")
    seats_ex = cc.lab.executor(cc.pbx_host)
    before = read_stat_file(seats_ex, SEATS_STAT)
    agent = hold_calls(cc, "agent", 1, hold_ms=1500)
    seats = uas_delta(before, wait_stat_file(seats_ex, SEATS_STAT, time.time()))
    if agent.answered != 1 or seats["answered"] != 1:
        problems.append(f"agent call: caller answered {agent.answered}, seats answered {seats['answered']}")
    return {"ok": not problems, "problems": problems, "ivr_host": ivr_host, "ivr_db": conn["host"], "account": account,
            "ivr_answered": ivr.answered, "outbound_answered": out.carrier_answered,
            "agent_answered": agent.answered, "seat_legs": seats["answered"]}


def dial_test(cc: CallCenter) -> dict:
    """Saturday morning: every cabled channel of every board carries a call. Each board dials as many
    outbound calls as it has cabled channels, all held at once, so every channel is seized once."""
    report = {"ok": True, "boards": {}}
    for board in cc.boards("voice"):
        res = place_board_dial(cc, board, board.channels)
        spans = board.channels // 30
        ok = res["answered"] == board.channels and res["peak"] == board.channels
        report["boards"][board.name] = {
            "ipc": board.host, "cabled": board.channels, "answered": res["answered"], "peak": res["peak"],
            "no_channel": res["no_channel"], "failed": res["failed"],
            "channels": [{"span": s + 1, "timeslots": "1-30", "tested": ok} for s in range(spans)],
        }
        report["ok"] = report["ok"] and ok
    return report
