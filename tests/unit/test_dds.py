"""The DDS stand-in: its configuration is checked, and against two real PostgreSQL clusters on loopback
it instantiates the destination from the source, keeps it following, counts both sides, disables the
subscription when stopped, and when redeployed reversed replicates the other way only."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from tests.unit.test_cti_ivr_kcbp import PASSWORD, free_port, procs, wait_for  # noqa: F401  (fixture)

from ccdrill.standins.common import ConfigError
from ccdrill.standins.dds import Dds, subscription_name

SCHEMA = ("CREATE TABLE fund_account (account text PRIMARY KEY, balance numeric(14,2) NOT NULL);"
          "CREATE TABLE work_order (id text PRIMARY KEY, agent text NOT NULL, note text NOT NULL, site text NOT NULL)")
EP = {"host": "h1", "dbname": "callcenter", "user": "dds"}


@pytest.mark.parametrize(("cfg", "needle"), [
    ({"source": EP, "destination": EP, "tables": ["t"]}, "the same database"),
    ({"source": EP, "destination": {**EP, "host": "h2"}, "tables": []}, "at least one table"),
    ({"source": EP, "destination": {**EP, "host": "h2"}, "tables": ["t; DROP"]}, "tables"),
    ({"source": {**EP, "host": "a b"}, "destination": {**EP, "host": "h2"}, "tables": ["t"]}, "source.host"),
    ({"source": EP, "destination": {"host": "h2"}, "tables": ["t"]}, "'dbname'"),
])
def test_bad_config_names_the_problem(cfg, needle):
    with pytest.raises(ConfigError, match=needle):
        Dds({"name": "dds", "ctl_port": 1, **cfg})


def test_subscription_is_named_after_its_source():
    assert subscription_name("sh-db") == "dds_from_sh_db"


class Cluster:
    def __init__(self, base: Path, user: str | None):
        self.base, self.user, self.port = base, user, free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Cluster:
        pw = self.base / "pw"
        pw.write_text(PASSWORD + "\n")
        if self.user:
            shutil.chown(self.base, self.user)
            shutil.chown(pw, self.user)
        r = subprocess.run(["initdb", "-D", str(self.base / "data"), "-U", "dds", "--auth-local=trust",
                            "--auth-host=scram-sha-256", "--pwfile", str(pw), "--no-sync"],
                           user=self.user, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            pytest.skip(f"PostgreSQL cannot start: {r.stderr[-300:]}")
        log = open(self.base / "log", "wb")  # noqa: SIM115 - kept open for the server's life
        self.proc = subprocess.Popen(["postgres", "-D", str(self.base / "data"), "-p", str(self.port), "-k",
                                      str(self.base), "-c", "listen_addresses=localhost", "-c", "fsync=off",
                                      "-c", "wal_level=logical"], user=self.user, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.sql("SELECT 1", "postgres").returncode == 0, 15, "postgres up")
        assert self.sql("CREATE DATABASE callcenter", "postgres").returncode == 0
        assert self.sql(SCHEMA).returncode == 0
        return self

    def sql(self, sql: str, db: str = "callcenter") -> subprocess.CompletedProcess:
        return subprocess.run(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.base), "-p",
                               str(self.port), "-U", "dds", "-d", db, "-c", sql], capture_output=True, text=True,
                              timeout=30)

    def value(self, sql: str) -> str:
        r = self.sql(sql)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the postmaster we started, by PID
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def pair():
    if any(shutil.which(t) is None for t in ("initdb", "postgres", "psql")):
        pytest.skip("PostgreSQL tools missing")
    user = "nobody" if os.geteuid() == 0 else None
    bases = [Path(tempfile.mkdtemp(prefix="ccdrill-dds-")) for _ in range(2)]
    clusters = [Cluster(b, user) for b in bases]
    try:
        yield [c.start() for c in clusters]
    finally:
        for c in clusters:
            c.stop()
        for b in bases:
            shutil.rmtree(b, ignore_errors=True)


def endpoint(c: Cluster) -> dict:
    return {"host": "localhost" if c.port % 2 else "127.0.0.1", "port": c.port, "dbname": "callcenter",
            "user": "dds", "password": PASSWORD}


def test_replicates_counts_stops_and_reverses(pair, procs, tmp_path):  # noqa: F811
    a, b = pair
    a.value("INSERT INTO fund_account SELECT 'A' || g, g FROM generate_series(1, 50) g")
    b.value("INSERT INTO work_order VALUES ('stale', 'x', 'destination only', 'sz')")  # replaced by the load
    src, dst = endpoint(a), {**endpoint(b), "host": "127.0.0.1" if endpoint(a)["host"] == "localhost" else "localhost"}
    tables = ["fund_account", "work_order"]
    dds = procs("dds", name="dds", source=src, destination=dst, tables=tables, interval_s=0.2,
                stats_file=str(tmp_path / "dds.json"))
    s = wait_for(lambda: (st := dds.stats())["state"] == "running" and st["in_sync"] and st, 30, "initial load")
    assert s["destination_tables"]["fund_account"]["rows"] == 50 and s["destination_tables"]["work_order"]["rows"] == 0
    a.value("INSERT INTO work_order VALUES ('w-1', 'agent01', 'note', 'sh')")
    s = wait_for(lambda: (st := dds.stats())["in_sync"] and st["destination_tables"]["work_order"]["rows"] == 1
                 and st, 15, "row replicated")
    assert s["source_tables"] == s["destination_tables"] and s["lag_bytes"] >= 0

    dds.stop()  # supervisorctl stop dds: nothing applied any more
    assert b.value(f"SELECT subenabled FROM pg_subscription WHERE subname = '{subscription_name(src['host'])}'") == "f"
    a.value("INSERT INTO work_order VALUES ('w-2', 'agent01', 'while stopped', 'sh')")
    time.sleep(1.0)
    assert b.value("SELECT count(*) FROM work_order") == "1"

    # redeployed reversed: b is the source now; a gets b's rows (initial load), and nothing flows a -> b
    b.value("INSERT INTO work_order VALUES ('w-3', 'agent02', 'on the new primary', 'sz')")
    rev = procs("dds", name="dds-rev", source=dst, destination=src, tables=tables, interval_s=0.2,
                stats_file=str(tmp_path / "dds-rev.json"))
    wait_for(lambda: (st := rev.stats())["state"] == "running" and st["in_sync"], 30, "reversed initial load")
    assert b.value("SELECT count(*) FROM pg_subscription") == "0"
    assert a.value("SELECT string_agg(id, ',' ORDER BY id) FROM work_order") == "w-1,w-3"
    b.value("INSERT INTO work_order VALUES ('w-4', 'agent02', 'follows', 'sz')")
    wait_for(lambda: a.value("SELECT count(*) FROM work_order") == "3", 15, "reversed replication")
