"""The application-server stand-in against a real PostgreSQL on loopback: orders are acknowledged only
once committed, ids are the client's, bad input is refused with the reason, and switching the
DB-connection INI moves the next request to the other database without a restart."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from tests.unit.test_cti_ivr_kcbp import free_port, pg, procs, write_ini  # noqa: F401  (fixtures)

from ccdrill.standins.appserver import AppServer
from ccdrill.standins.common import ConfigError

SCHEMA = ("CREATE TABLE work_order (id text PRIMARY KEY, agent text NOT NULL, note text NOT NULL, "
          "site text NOT NULL, created timestamptz NOT NULL DEFAULT now())")


def http(port: int, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(("cfg", "key"), [
    ({"name": "a", "site": "sz"}, "'listen'"),
    ({"name": "a", "site": "sz", "listen": "0.0.0.0"}, "'listen'"),
    ({"name": "a", "site": "sz", "listen": "0.0.0.0:8080", "max_parallel": 0}, "max_parallel"),
])
def test_bad_config_names_the_key(cfg, key):
    with pytest.raises(ConfigError, match=key):
        AppServer(cfg)


@pytest.fixture
def app(procs, pg, tmp_path):  # noqa: F811
    for db in ("ccdrill1", "ccdrill2"):
        r = pg["admin"]("DROP TABLE IF EXISTS work_order", db)
        assert r.returncode == 0, r.stderr
        r = pg["admin"](SCHEMA, db)
        assert r.returncode == 0, r.stderr
    ini = tmp_path / "app-dbconn.ini"
    write_ini(ini, "127.0.0.1", pg["port"], "ccdrill1")
    port = free_port()
    proc = procs("appserver", name="sz-app", site="sz", listen=f"127.0.0.1:{port}", dbconn=str(ini), ctl_port=port)
    return {"port": port, "ini": ini, "pg": pg, "proc": proc}


def rows(pg, db: str) -> list[str]:  # noqa: F811
    r = pg["admin"]("COPY (SELECT id || ':' || site FROM work_order ORDER BY id) TO STDOUT", db)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_orders_are_acknowledged_once_committed_and_follow_the_ini(app):
    status, login = http(app["port"], "/login")
    assert status == 200 and login["ok"] and login["site"] == "sz" and login["db"] == "127.0.0.1"
    assert http(app["port"], "/orders", {"id": "w-000001", "agent": "agent01", "note": "hello"})[0] == 200
    status, dup = http(app["port"], "/orders", {"id": "w-000001", "agent": "agent01", "note": "again"})
    assert status == 409 and "already recorded" in dup["error"]
    assert rows(app["pg"], "ccdrill1") == ["w-000001:sz"]

    # the DR switch of plan 3.6: the config changes, the next order goes to the other database
    write_ini(app["ini"], "localhost", app["pg"]["port"], "ccdrill2")
    status, ans = http(app["port"], "/orders", {"id": "w-000002", "agent": "agent02", "note": "after"})
    assert status == 200 and ans["db"] == "localhost"
    assert rows(app["pg"], "ccdrill2") == ["w-000002:sz"]
    assert rows(app["pg"], "ccdrill1") == ["w-000001:sz"]
    status, got = http(app["port"], "/orders/w-000002")
    assert status == 200 and got["order"]["agent"] == "agent02"
    stats = app["proc"].stats()
    assert stats["counts"]["committed"] == 2 and stats["counts"]["duplicate"] == 1


def test_bad_orders_and_a_dead_database_are_refused_not_acknowledged(app):
    for bad in ({"id": "x'; DROP TABLE work_order; --", "agent": "a", "note": "n"},
                {"id": "ok-1", "agent": "", "note": "n"}, {"id": "ok-2", "agent": "a"}):
        status, ans = http(app["port"], "/orders", bad)
        assert status == 400 and not ans["ok"] and "an order needs id" in ans["error"]
    write_ini(app["ini"], "127.0.0.1", free_port(), "ccdrill1")  # nothing listens there
    status, ans = http(app["port"], "/orders", {"id": "w-000003", "agent": "a", "note": "n"})
    assert status == 503 and not ans["ok"] and ans["error"]
    status, login = http(app["port"], "/login")
    assert status == 503 and not login["ok"]
    assert rows(app["pg"], "ccdrill1") == []


def test_downtime_is_the_longest_stretch_without_an_acknowledged_write():
    from ccdrill.checks.data import downtime
    from ccdrill.load.writes import WriteHistory

    def rec(i, t, outcome, app="sh-app"):
        return {"i": i, "id": f"w-{i:06d}", "t0": t - 0.01, "t1": t, "outcome": outcome, "app": app, "db": "x"}

    hist = WriteHistory("w", [rec(1, 10.0, "ok"), rec(2, 10.1, "ok"), rec(3, 10.2, "fail"), rec(4, 11.0, "unknown"),
                              rec(5, 14.6, "ok", "sz-app"), rec(6, 14.7, "ok", "sz-app")])
    dt = downtime(hist)
    assert dt["seconds"] == 4.5 and dt["acked_before"] == 2 and dt["acked_after"] == 2
    assert dt["failed_attempts_in_gap"] == 2 and dt["from_first_failure_s"] == 4.41
    assert dt["first_after"]["app"] == "sz-app"
    assert hist.summary() == {"attempted": 6, "ok": 4, "fail": 1, "unknown": 1}
