"""Verdicts on the data tier, from what the agents were promised and what the databases hold.

- `writes_durable`: Jepsen's lost-write check: every work order the application acknowledged is on the
  database afterwards (unacknowledged or timed-out attempts may or may not be there).
- `downtime`: the longest stretch without an acknowledged write (the agents' view of the outage),
  with the first failure and the first success after it.
- `replication_probe`: a row written on the source now appears on the destination (DDS is live).
- `steady_state`: after the migration: Shenzhen primary, DDS running into Shanghai with both sides
  equal, the IPCs on Shenzhen, the basic call tests pass.
- `agent_session`: an agent logs in through a login entry and records one work order.
"""

from __future__ import annotations

import json
import time

from ..lab import data as labdata
from ..lab.callcenter import CallCenter
from ..lab.database import psql, read_dbconn
from ..lab.world import Lab
from ..load.writes import WriteHistory
from .basic import basic_calls


def writes_durable(lab: Lab, hist: WriteHistory, db_host: str) -> dict:
    present = labdata.present_ids(lab, db_host, hist.tag)
    acked = hist.acked
    lost = [i for i in acked if i not in present]
    unknown = [r["id"] for r in hist.records if r["outcome"] == "unknown"]
    return {"ok": not lost and hist.error is None, "db": db_host, "attempted": len(hist.records),
            "acked": len(acked), "present": len(present), "lost": len(lost), "lost_sample": lost[:10],
            "indeterminate": len(unknown), "indeterminate_present": len([i for i in unknown if i in present]),
            "writer_error": hist.error}


def downtime(hist: WriteHistory) -> dict:
    """Longest gap between two acknowledged writes (seconds), and where it lies in the history."""
    ok = [r for r in hist.records if r["outcome"] == "ok"]
    if len(ok) < 2:
        return {"seconds": None, "acked_before": len(ok), "acked_after": 0}
    gap, i = max((ok[k + 1]["t1"] - ok[k]["t1"], k) for k in range(len(ok) - 1))
    start, end = ok[i]["t1"], ok[i + 1]["t1"]
    failed = [r for r in hist.records if r["outcome"] != "ok" and start <= r["t0"] <= end]
    return {"seconds": round(gap, 2), "gap_start": start, "gap_end": end,
            "first_failure": failed[0]["t0"] if failed else None, "failed_attempts_in_gap": len(failed),
            "from_first_failure_s": round(end - failed[0]["t0"], 2) if failed else None,
            "acked_before": i + 1, "acked_after": len(ok) - i - 1,
            "last_before": {k: ok[i].get(k) for k in ("id", "app", "db")},
            "first_after": {k: ok[i + 1].get(k) for k in ("id", "app", "db")}}


def replication_probe(lab: Lab, src: str, dst: str, timeout: float = 15.0) -> dict:
    """Write one row on the source (as the operators, on its host) and time its arrival on the destination."""
    oid = f"ddsprobe-{int(time.time() * 1000)}"
    psql(lab, labdata.db_conn(lab, src),
         "INSERT INTO work_order (id, agent, note, site) VALUES (:'p1', 'probe', 'DDS probe', 'ops')", oid)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if psql(lab, labdata.db_conn(lab, dst), "SELECT 1 FROM work_order WHERE id = :'p1'", oid):
            return {"id": oid, "arrived": True, "seconds": round(time.monotonic() - t0, 2)}
        time.sleep(0.2)
    return {"id": oid, "arrived": False, "seconds": timeout}


def steady_state(cc: CallCenter, primary: str = "sz-db", replica: str = "sh-db", calls: bool = True) -> dict:
    """The data tier as the migration left it (and, with `calls`, the basic call tests on the primary);
    AssertionError naming what is off."""
    lab = cc.lab
    dds = labdata.dds_stats(lab, replica)
    sync = labdata.wait_in_sync(lab, primary, replica)
    ipcs = {ipc: read_dbconn(lab, ipc)["host"] for ipc in lab.inv.hosts_of("ipc")}
    basic = basic_calls(cc) if calls else None
    running = {app: labdata.app_login_db(lab, app) for app in lab.inv.hosts_of("app_server")
               if "RUNNING" in lab.exec(app, ["supervisorctl", "status", "appserver"], 15)[1]}
    report = {"dds": {k: dds.get(k) for k in ("state", "source", "destination", "lag_bytes")},
              "in_sync": sync["in_sync"], "rows": sync[primary], "ipc_db": ipcs, "app_servers": running,
              "basic_calls": {k: basic[k] for k in ("ok", "problems", "ivr_db")} if basic else None}
    problems = []
    if (dds.get("source"), dds.get("destination"), dds.get("state")) != (primary, replica, "running"):
        problems.append(f"DDS is {dds.get('state')} from {dds.get('source')} to {dds.get('destination')}")
    if not sync["in_sync"]:
        problems.append(f"{primary} and {replica} differ: {json.dumps(sync)[:500]}")
    if set(ipcs.values()) != {primary}:
        problems.append(f"the IPCs' DB-connection configs name {ipcs}")
    if running != {"sz-app": primary}:
        problems.append(f"application servers running (and their database): {running}, expected sz-app only")
    if basic is not None and (not basic["ok"] or basic["ivr_db"] != primary):
        problems.append(f"basic calls: {basic['problems']} (IVR read {basic['ivr_db']})")
    assert not problems, "data tier steady state: " + "; ".join(problems)
    return report


def agent_session(lab: Lab, agent_host: str, entry: str, order_id: str) -> dict:
    """An agent logs in through `entry` and records one work order; where the order landed."""
    login = labdata.login(lab, agent_host, entry)
    script = ("import json,sys,urllib.request,urllib.error\n"
              "req=urllib.request.Request(sys.argv[1],data=sys.argv[2].encode(),method='POST',"
              "headers={'Content-Type':'application/json'})\n"
              "try:\n print(urllib.request.urlopen(req,timeout=5).read().decode())\n"
              "except urllib.error.HTTPError as e:\n print(e.read().decode())\n"
              "except OSError as e:\n print(json.dumps({'ok':False,'error':str(e)}))\n")
    body = json.dumps({"id": order_id, "agent": "agent07", "note": f"logged in through {entry}"})
    _rc, out, _err = lab.exec(agent_host, ["python3", "-c", script, f"http://{entry}:{labdata.APP_PORT}/orders", body],
                              20)
    try:
        order = json.loads(out)
    except json.JSONDecodeError:
        order = {"ok": False, "error": out[:200]}
    present = []
    if order.get("ok"):
        deadline = time.monotonic() + 10
        for db in ("sh-db", "sz-db"):
            while not labdata.has_id(lab, db, order_id) and time.monotonic() < deadline:
                time.sleep(0.3)
            if labdata.has_id(lab, db, order_id):
                present.append(db)
    return {"entry": entry, "login": login, "order": order, "present_on": present}
