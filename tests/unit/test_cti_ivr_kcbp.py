"""CTI, IVR and KCBP as real processes around real KCXP brokers and a real PostgreSQL.

- CTI heartbeats published on the primary's KCXP reach a subscriber on the bridged secondary
  KCXP (the primary's CTI controls the secondary's boards), and survive a KCXP restart.
- IVR + KCBP: an ``ivr.session`` plays the prompts (announcement first) and runs the balance
  query through KCBP -> psql -> PostgreSQL; switching the DB-connection INI moves the next query
  to the other database without a restart; an unreachable database or a hostile account is an
  ``ok: false`` answer, never a crash.

PostgreSQL is a throwaway cluster in a temp dir on a random port (run as ``nobody`` when we are
root, since postgres refuses root), stopped by its PID at teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ccdrill.standins import ctl
from ccdrill.standins.common import ConfigError, KcxpClient
from ccdrill.standins.cti import Cti
from ccdrill.standins.ivr import Ivr
from ccdrill.standins.kcbp import Kcbp, conninfo, valid_account

SRC = str(Path(__file__).resolve().parents[2] / "src")
PASSWORD = "s3cret 'quoted' pass"  # exercises PGPASSWORD with awkward characters


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.03)


class Proc:
    """A stand-in process started from a JSON config; restartable; stopped by its PID."""

    def __init__(self, tmp: Path, module: str, cfg: dict) -> None:
        self.module = module
        self.cfg = cfg
        self.ctl_port = cfg["ctl_port"]
        self.path = tmp / f"{cfg['name']}.json"
        self.path.write_text(json.dumps(cfg))
        self.proc: subprocess.Popen | None = None
        self.log = tmp / f"{cfg['name']}.log"

    def start(self) -> Proc:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"ccdrill.standins.{self.module}", "--config", str(self.path)],
                env={**os.environ, "PYTHONPATH": SRC}, stdout=subprocess.DEVNULL, stderr=log)

        def up() -> bool:
            assert self.proc.poll() is None, f"{self.module} died: {self.log.read_text()[-2000:]}"
            try:
                return ctl.request(self.ctl_port, timeout=1)["pid"] == self.proc.pid
            except RuntimeError:
                return False

        wait_for(up, 10, f"{self.module} up")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stats(self) -> dict:
        return ctl.request(self.ctl_port, timeout=5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def procs(tmp_path):
    started: list[Proc] = []

    def make(module: str, **cfg) -> Proc:
        cfg.setdefault("ctl_port", free_port())
        p = Proc(tmp_path, module, cfg)
        started.append(p)
        return p.start()

    yield make
    for p in reversed(started):
        p.stop()


def broker(procs, name: str, upstream: int | None = None) -> Proc:
    port = free_port()
    b = procs("kcxp", name=name, listen="127.0.0.1", port=port,
              upstream=f"127.0.0.1:{upstream}" if upstream else None)
    b.port = port
    return b


def publish(port: int, topic: str, msg: dict) -> None:
    """A one-shot KCXP publisher, the way a board publishes ivr.session."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(json.dumps({"op": "pub", "topic": topic, "msg": msg}).encode() + b"\n")


# --------------------------------------------------------------------------- config checks


@pytest.mark.parametrize(
    ("cls", "cfg", "key"),
    [
        (Cti, {"name": "c", "kcxp": "h:1", "ctl_port": 1, "boards": "board0"}, "'boards'"),
        (Cti, {"name": "c", "kcxp": "h:1", "ctl_port": 1, "boards": [], "heartbeat_ms": 0}, "'heartbeat_ms'"),
        (Cti, {"name": "c", "kcxp": "nohost", "ctl_port": 1, "boards": []}, "'kcxp'"),
        (Ivr, {"name": "i", "kcxp": "h:1", "ctl_port": 1, "announcement": 7}, "'announcement'"),
        (Ivr, {"name": "i", "kcxp": "h:1", "ctl_port": 1, "prompts": [""]}, "'prompts'"),
        (Kcbp, {"name": "k", "kcxp": "h:1"}, "'ctl_port'"),
        (Kcbp, {"name": "k", "kcxp": "h:1", "ctl_port": 1, "dbconn": 5}, "'dbconn'"),
    ],
)
def test_config_errors_name_the_key(cls, cfg, key):
    with pytest.raises(ConfigError, match=key):
        cls(cfg)


def test_account_validation_and_conninfo_quoting():
    assert valid_account("A1001") and valid_account("0" * 64)
    for bad in ["", "A 1", "A1001'; DROP TABLE fund_account;--", "a" * 65, "é1", 1001, None, "1\n2"]:
        assert not valid_account(bad)
    info = conninfo({"host": "h", "port": "5432", "dbname": "d b", "user": "o'neil"}, 2)
    assert info == "host='h' port='5432' dbname='d b' user='o\\'neil' connect_timeout='2'"


# --------------------------------------------------------------------------- CTI


def test_cti_heartbeats_reach_bridged_secondary_and_survive_kcxp_restart(procs):
    primary = broker(procs, "kcxp-primary")
    secondary = broker(procs, "kcxp-secondary", upstream=primary.port)
    cti = procs("cti", name="cti-primary", kcxp=f"127.0.0.1:{primary.port}",
                boards=["board0", "board1", "fax0"], heartbeat_ms=100)

    async def scenario():
        board_side = KcxpClient("127.0.0.1", secondary.port, name="board-on-secondary")
        got: list = []
        board_side.subscribe("cti.control", lambda t, m: got.append((time.time(), m)))
        await board_side.start()
        try:
            await asyncio.to_thread(wait_for, lambda: len(got) >= 3, 5, "3 heartbeats on the secondary")
            _, hb = got[-1]
            assert hb["cti"] == "cti-primary" and hb["host"] == socket.gethostname()
            assert hb["boards"] == ["board0", "board1", "fax0"] and isinstance(hb["ts"], float)
            s = cti.stats()
            assert s["kind"] == "cti" and s["kcxp_connected"] is True and s["heartbeats_sent"] >= 3

            primary.stop()  # the CTI's KCXP restarts
            await asyncio.to_thread(wait_for, lambda: cti.stats()["heartbeats_dropped"] >= 2, 5,
                                    "heartbeats dropped while KCXP is down")
            assert cti.stats()["kcxp_connected"] is False and cti.alive()
            primary.start()
            n = len(got)
            await asyncio.to_thread(wait_for, lambda: len(got) >= n + 3, 5, "heartbeats again")
            assert cti.stats()["kcxp_connected"] is True
        finally:
            await board_side.close()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- PostgreSQL


def _pg_tools() -> str | None:
    missing = [t for t in ("initdb", "postgres", "psql") if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else None


@pytest.fixture(scope="module")
def pg():
    why = _pg_tools()
    if why:
        pytest.skip(f"PostgreSQL cannot start: {why}")
    root = os.geteuid() == 0
    user = "nobody" if root else None  # postgres refuses to run as root
    base = Path(tempfile.mkdtemp(prefix="ccdrill-pg-"))
    proc = None
    try:
        pwfile = base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if root:
            shutil.chown(base, user)
            shutil.chown(pwfile, user)
        r = subprocess.run(["initdb", "-D", str(base / "data"), "-U", "postgres", "-E", "UTF8",
                            "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile", str(pwfile),
                            "--no-sync"], user=user, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            pytest.skip(f"PostgreSQL cannot start: initdb failed: {r.stderr.strip()[-300:]}")
        port = free_port()
        log = open(base / "postgres.log", "wb")  # noqa: SIM115 - kept open for the server's life
        proc = subprocess.Popen(["postgres", "-D", str(base / "data"), "-p", str(port), "-k", str(base),
                                 "-c", "listen_addresses=localhost", "-c", "fsync=off"],
                                user=user, stdout=log, stderr=subprocess.STDOUT)

        def admin(sql: str, db: str = "postgres") -> subprocess.CompletedProcess:
            return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(base),
                                   "-p", str(port), "-U", "postgres", "-d", db, "-c", sql],
                                  capture_output=True, text=True, timeout=30)

        deadline = time.monotonic() + 15
        while admin("SELECT 1").returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip("PostgreSQL cannot start: " + (base / "postgres.log").read_text()[-300:])
            time.sleep(0.1)
        for db, balance in (("ccdrill1", "1234.50"), ("ccdrill2", "99.00")):
            for sql, target in ((f"CREATE DATABASE {db}", "postgres"),
                                ("CREATE TABLE fund_account(account text primary key, balance numeric)", db),
                                (f"INSERT INTO fund_account VALUES ('A1001', {balance}), ('B2002', 7)", db)):
                r = admin(sql, target)
                assert r.returncode == 0, r.stderr
        yield {"port": port, "admin": admin}
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown of the postmaster we started, by PID
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def write_ini(path: Path, host: str, port: int, dbname: str) -> None:
    # Rewritten in place (not renamed) like an operator editing the file; KCBP re-reads it per query.
    path.write_text(f"[database]\nhost = {host}\nport = {port}\ndbname = {dbname}\n"
                    f"user = postgres\npassword = {PASSWORD}\n")


@pytest.fixture
def ipc(procs, pg, tmp_path):
    """One IPC's KCXP + KCBP + IVR (with the upgrade announcement) against the test cluster."""
    ini = tmp_path / "dbconn.ini"
    write_ini(ini, "127.0.0.1", pg["port"], "ccdrill1")
    k = broker(procs, "kcxp")
    kcbp = procs("kcbp", name="kcbp", kcxp=f"127.0.0.1:{k.port}", dbconn=str(ini))
    ivr = procs("ivr", name="ivr", kcxp=f"127.0.0.1:{k.port}", prompts=["welcome", "menu"],
                announcement="upgrade-notice")
    wait_for(lambda: k.stats()["subscriptions"] >= 3, 5, "IVR and KCBP subscribed")
    return {"kcxp": k, "kcbp": kcbp, "ivr": ivr, "ini": ini, "pg": pg}


def session(ipc, n: int, account: str | None = "A1001") -> dict:
    """Publish one ivr.session and wait until the IVR has finished it; returns IVR stats."""
    msg = {"call_id": f"call-{n}", "board": "board0", "ipc": "sh-ipc-new", "user": "ivr"}
    if account is not None:
        msg["account"] = account
    done = sum(ipc["ivr"].stats()["queries"][k] for k in ("ok", "failed", "skipped"))
    publish(ipc["kcxp"].port, "ivr.session", msg)
    return wait_for(lambda: (s := ipc["ivr"].stats()) and
                    sum(s["queries"][k] for k in ("ok", "failed", "skipped")) > done and s, 6, "session")


def test_ivr_plays_prompts_and_queries_through_kcbp_then_follows_the_ini(ipc):
    s = session(ipc, 1)
    assert s["last_session"]["prompts"] == ["upgrade-notice", "welcome", "menu"]
    assert s["prompts"] == {"upgrade-notice": 1, "welcome": 1, "menu": 1}
    assert s["queries"]["ok"] == 1
    q = s["last_query"]
    assert q["ok"] is True and q["account"] == "A1001" and q["db"] == "127.0.0.1"
    assert q["rows"] == [{"account": "A1001", "balance": "1234.50"}]

    # migration step: point the DB-connection config at the other database, no restart
    write_ini(ipc["ini"], "localhost", ipc["pg"]["port"], "ccdrill2")
    s = session(ipc, 2)
    q = s["last_query"]
    assert q["ok"] is True and q["db"] == "localhost"
    assert q["rows"] == [{"account": "A1001", "balance": "99.00"}]
    assert ipc["kcbp"].stats()["queries"]["ok"] == 2

    # unknown account: an answer with no rows, not a failure
    s = session(ipc, 3, account="Z9999")
    assert s["last_query"]["ok"] is True and s["last_query"]["rows"] == []


def test_announcement_off_and_no_account(ipc):
    assert ctl.request(ipc["ivr"].ctl_port, {"op": "announcement", "name": None}) == {"announcement": None}
    s = session(ipc, 1, account=None)
    assert s["last_session"]["prompts"] == ["welcome", "menu"]
    assert "upgrade-notice" not in s["prompts"]
    assert s["queries"]["skipped"] == 1 and s["last_query"] is None


def test_unreachable_database_is_an_answer_not_a_crash(ipc, tmp_path):
    write_ini(ipc["ini"], "127.0.0.1", free_port(), "ccdrill1")  # nobody listens there
    s = session(ipc, 1)
    q = s["last_query"]
    assert q["ok"] is False and q["rows"] == [] and q["db"] == "127.0.0.1" and "psql" in q["error"]
    assert s["queries"]["failed"] == 1
    ipc["ini"].unlink()  # no DB-connection file at all
    q = session(ipc, 2)["last_query"]
    assert q["ok"] is False and q["db"] is None and "dbconn" in q["error"]
    ipc["ini"].write_text("not an ini\n")
    assert session(ipc, 3)["last_query"]["ok"] is False
    assert ipc["kcbp"].alive() and ipc["ivr"].alive()
    write_ini(ipc["ini"], "127.0.0.1", ipc["pg"]["port"], "ccdrill1")
    assert session(ipc, 4)["last_query"]["ok"] is True  # recovers on the next query


def test_kcbp_rejects_hostile_accounts(ipc):
    hostile = "A1001' OR '1'='1"
    s = session(ipc, 1, account=hostile)
    assert s["last_query"]["ok"] is False and "invalid account" in s["last_query"]["error"]

    async def raw_request():
        c = KcxpClient("127.0.0.1", ipc["kcxp"].port, name="probe")
        reps: list = []
        c.subscribe("kcbp.rep", lambda t, m: reps.append(m))
        await c.start()
        await asyncio.to_thread(wait_for, lambda: ipc["kcxp"].stats()["subscriptions"] >= 4, 5)
        c.publish("kcbp.req", {"id": "inj", "account": "x'; DROP TABLE fund_account;--"})
        c.publish("kcbp.req", {"account": "A1001"})  # no id: dropped and counted
        await asyncio.to_thread(wait_for, lambda: any(r.get("id") == "inj" for r in reps), 5)
        await c.close()
        return next(r for r in reps if r.get("id") == "inj")

    rep = asyncio.run(raw_request())
    assert rep["ok"] is False and rep["rows"] == []
    k = wait_for(lambda: (st := ipc["kcbp"].stats())["malformed"] >= 1 and st, 5)
    assert k["queries"]["rejected"] >= 2
    with pytest.raises(RuntimeError, match="400"):
        ctl.request(ipc["kcbp"].ctl_port, {"op": "query", "account": hostile})
    # the table is still there, and the ctl query path runs the same query
    ans = ctl.request(ipc["kcbp"].ctl_port, {"op": "query", "account": "A1001"})
    assert ans == {"ok": True, "rows": [{"account": "A1001", "balance": "1234.50"}], "db": "127.0.0.1"}


def test_ivr_gives_up_after_two_seconds_without_kcbp(procs):
    k = broker(procs, "kcxp-lonely")
    ivr = procs("ivr", name="ivr-lonely", kcxp=f"127.0.0.1:{k.port}")
    wait_for(lambda: k.stats()["subscriptions"] >= 2, 5)
    t0 = time.monotonic()
    publish(k.port, "ivr.session", {"call_id": "c1", "board": "board0", "ipc": "x", "user": "ivr",
                                    "account": "A1001"})
    s = wait_for(lambda: (st := ivr.stats())["queries"]["failed"] == 1 and st, 5, "query timeout")
    elapsed = time.monotonic() - t0
    assert 1.9 <= elapsed < 3.5
    assert s["queries"]["timeout"] == 1 and s["last_query"]["ok"] is False
    assert s["prompts"] == {"welcome": 1, "menu": 1}
