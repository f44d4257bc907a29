"""The data tier as the checks see it: table digests read on each database host, DDS's and the
application servers' own statistics, an agent's login through a site's login entry."""

from __future__ import annotations

import json
import time

from .database import psql
from .world import Lab, LabError

TABLES = ("fund_account", "work_order")
DDS_CTL_PORT = 9600
APP_PORT = 8080
APP_STATS = "/stats"


def db_conn(lab: Lab, host: str) -> dict[str, str]:
    """The application's connection to a database host (checks run psql on that host itself)."""
    v = lab.inv.vars
    return {"host": host, "port": "5432", "dbname": v.get("db_name", "callcenter"), "user": v.get("db_user", "ccdrill"),
            "password": v.get("db_password", "")}


def digest(lab: Lab, host: str, tables=TABLES) -> dict[str, dict]:
    """Rows and an md5 of the ordered rows of each table, as the database on `host` holds them."""
    sql = " UNION ALL ".join(
        f"SELECT '{t}', count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} AS x"
        for t in tables)
    rows = psql(lab, db_conn(lab, host), sql)
    return {r[0]: {"rows": int(r[1]), "md5": r[2]} for r in rows}


def present_ids(lab: Lab, host: str, tag: str) -> set[str]:
    """Work-order ids of one writer (``<tag>-...``) present on a database."""
    rows = psql(lab, db_conn(lab, host), "SELECT id FROM work_order WHERE id LIKE :'p1' || '-%'", tag)
    return {r[0] for r in rows}


def has_id(lab: Lab, host: str, oid: str) -> bool:
    """Whether one work order is on a database."""
    return bool(psql(lab, db_conn(lab, host), "SELECT 1 FROM work_order WHERE id = :'p1'", oid))


def dds_stats(lab: Lab, host: str) -> dict:
    """DDS's own statistics on the destination host (state, rows and md5 per side, lag)."""
    return lab.ctl(host, DDS_CTL_PORT, timeout=15)


def app_stats(lab: Lab, host: str) -> dict:
    return _http(lab, host, f"http://127.0.0.1:{APP_PORT}{APP_STATS}")


def app_login_db(lab: Lab, app_host: str) -> str | None:
    """The database an application server uses now (a login on the server itself reads it)."""
    return _http(lab, app_host, f"http://127.0.0.1:{APP_PORT}/login").get("db")


def login(lab: Lab, from_host: str, entry: str) -> dict:
    """An agent on `from_host` logs in through a login entry (a name the lab's DNS serves)."""
    return _http(lab, from_host, f"http://{entry}:{APP_PORT}/login")


def _http(lab: Lab, host: str, url: str) -> dict:
    script = ("import json,sys,urllib.request,urllib.error\n"
              "try:\n r=urllib.request.urlopen(sys.argv[1],timeout=5);print(r.read().decode())\n"
              "except urllib.error.HTTPError as e:\n print(e.read().decode())\n"
              "except OSError as e:\n print(json.dumps({'ok':False,'error':str(e)}))\n")
    rc, out, err = lab.exec(host, ["python3", "-c", script, url], 20)
    if rc != 0:
        raise LabError(f"{host}: GET {url}: {err.strip()}")
    try:
        return json.loads(out)
    except json.JSONDecodeError as exc:
        raise LabError(f"{host}: GET {url}: not JSON: {out[:200]}") from exc


def wait_in_sync(lab: Lab, a: str, b: str, timeout: float = 30.0, tables=TABLES) -> dict:
    """Wait (bounded) until both databases hold the same rows; returns both digests and the wait."""
    t0 = time.monotonic()
    while True:
        da, db_ = digest(lab, a, tables), digest(lab, b, tables)
        if da == db_ or time.monotonic() - t0 > timeout:
            return {a: da, b: db_, "in_sync": da == db_, "waited_s": round(time.monotonic() - t0, 1)}
        time.sleep(0.5)
