"""The TA import: the registrar's file format and generator, the file service and the import job as real
processes against a real PostgreSQL (a throwaway cluster on a random port, stopped by its PID).

- The generator is deterministic and the validator counts what it wrote (rows, checksum).
- A spoiled file (a field, the trailer's count, the trailer's checksum, a header) is refused with the
  file and the line named.
- The job fetches a batch from the file service and loads it in one transaction: the database then holds
  the generator's record count and row checksum (checks.ta.TABLE_SQL); a corrupt batch leaves nothing
  written and holds back the batches after it; a second run finds nothing to do; a database that refuses
  the load leaves nothing half-written; a bad config is named.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ccdrill.checks.ta import TABLE_SQL
from ccdrill.load.ta_files import batch_name, expectation
from ccdrill.standins import ctl
from ccdrill.standins.ta_import import ConfigError, read_config
from ccdrill.standins.tafiles import TaFileError, file_name, generate, read_file

SRC = str(Path(__file__).resolve().parents[2] / "src")
SCHEMA = Path(__file__).resolve().parents[2] / "roles" / "ta_import" / "files" / "ta_schema.sql"
PASSWORD = "ta 'import' pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_batch(root: Path, batch: str) -> dict:
    names = sorted(os.listdir(root / batch))
    rows = checksum = 0
    for seq, name in enumerate(names, 1):
        got = read_file(str(root / batch / name), name, batch, seq, len(names))
        rows += got["rows"]
        checksum += got["checksum"]
    return {"rows": rows, "checksum": str(checksum)}


# --------------------------------------------------------------------------- format and generator


def test_generator_is_deterministic_and_the_validator_counts_what_it_wrote(tmp_path):
    a = generate(str(tmp_path / "a"), "20261130", 3, 50_000)
    b = expectation("20261130", 3, 50_000)
    assert a == b
    assert a["bytes"] >= 50_000 and a["rows"] > 100 and len(a["files"]) == 3
    assert read_batch(tmp_path / "a", "20261130") == {"rows": a["rows"], "checksum": a["checksum"]}
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")], "temporary folder left behind"
    with pytest.raises(FileExistsError):
        generate(str(tmp_path / "a"), "20261130", 3, 50_000)


@pytest.mark.parametrize(("kind", "line", "words"), [
    ("field", 17, ["line 17", "field amount", "decimal(16,2)"]),
    ("checksum", 9, ["trailer checksum"]),
    ("count", 0, ["trailer counts"]),
])
def test_a_spoiled_file_is_refused_naming_file_and_line(tmp_path, kind, line, words):
    exp = generate(str(tmp_path), "20261130-x", 2, 20_000, corrupt=(2, line, kind))
    bad = file_name("20261130-x", 2)
    assert exp["corrupt"]["file"] == bad
    read_file(str(tmp_path / "20261130-x" / file_name("20261130-x", 1)), file_name("20261130-x", 1),
              "20261130-x", 1, 2)
    with pytest.raises(TaFileError) as e:
        read_file(str(tmp_path / "20261130-x" / bad), bad, "20261130-x", 2, 2)
    assert e.value.file == bad and e.value.line == exp["corrupt"]["line"]
    for w in [bad, *words]:
        assert w in str(e.value)


def test_a_file_listed_out_of_its_batch_or_truncated_is_refused(tmp_path):
    generate(str(tmp_path), "20261130", 2, 10_000)
    p = tmp_path / "20261130" / file_name("20261130", 1)
    with pytest.raises(TaFileError, match="line 1: header says batch 20261130 file 001 of 002"):
        read_file(str(p), p.name, "20261130", 2, 2)
    data = p.read_bytes()
    p.write_bytes(data[: data.rindex(b"\nT|") + 1])
    with pytest.raises(TaFileError, match="no trailer"):
        read_file(str(p), p.name, "20261130", 1, 2)


def test_batch_names():
    assert batch_name("bulk1").endswith("-bulk1")
    with pytest.raises(ValueError):
        batch_name("no spaces")


@pytest.mark.parametrize(("text", "needle"), [
    ("[source]\nurl = http://f:8080/\n", "no [database] section"),
    ("[source]\nurl = ftp://f/\n[database]\nhost=h\ndbname=d\nuser=u\n", "[source] url"),
    ("[source]\nurl = http://f:8080/\n[database]\nhost=h\ndbname=d\n", "[database] user missing"),
    ("[source]\nurl = http://f:8080/\n[database]\nhost=h\ndbname=d\nuser=u\nport=x\n", "[database] port"),
])
def test_config_errors_name_the_file_and_key(tmp_path, text, needle):
    p = tmp_path / "ta.ini"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        read_config(str(p))
    assert str(p) in str(e.value) and needle in str(e.value)


# --------------------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def pg():
    missing = [t for t in ("initdb", "postgres", "psql") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"PostgreSQL cannot start: missing {', '.join(missing)}")
    root = os.geteuid() == 0
    user = "nobody" if root else None
    base = Path(tempfile.mkdtemp(prefix="ccdrill-ta-pg-"))
    proc = None
    try:
        pwfile = base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if root:
            shutil.chown(base, user)
            shutil.chown(pwfile, user)
        r = subprocess.run(["initdb", "-D", str(base / "data"), "-U", "postgres", "-E", "UTF8", "--auth-local=trust",
                            "--auth-host=scram-sha-256", "--pwfile", str(pwfile), "--no-sync"],
                           user=user, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            pytest.skip(f"PostgreSQL cannot start: initdb failed: {r.stderr.strip()[-300:]}")
        port = free_port()
        log = open(base / "postgres.log", "wb")  # noqa: SIM115 - kept open for the server's life
        proc = subprocess.Popen(["postgres", "-D", str(base / "data"), "-p", str(port), "-k", str(base),
                                 "-c", "listen_addresses=localhost", "-c", "fsync=off"],
                                user=user, stdout=log, stderr=subprocess.STDOUT)

        def sql(text: str, *params: str) -> list[list[str]]:
            argv = ["psql", "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-h", str(base), "-p", str(port),
                    "-U", "postgres", "-d", "postgres"]
            for i, p in enumerate(params, 1):
                argv += ["-v", f"p{i}={p}"]
            r = subprocess.run(argv, input=text + ";\n", capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            return [line.split("|") for line in r.stdout.splitlines() if line]

        deadline = time.monotonic() + 15
        while subprocess.run(["psql", "-X", "-h", str(base), "-p", str(port), "-U", "postgres", "-c", "SELECT 1"],
                             capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip("PostgreSQL cannot start: " + (base / "postgres.log").read_text()[-300:])
            time.sleep(0.1)
        sql(SCHEMA.read_text())
        yield {"port": port, "sql": sql}
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def files_service(tmp_path):
    root = tmp_path / "ta-files"
    cfg = {"name": "ta-files", "root": str(root), "listen": "127.0.0.1", "port": free_port(),
           "ctl_port": free_port()}
    path = tmp_path / "ta-files.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "ccdrill.standins.tafiles", "--config", str(path)],
                            env={**os.environ, "PYTHONPATH": SRC}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            ctl.request(cfg["ctl_port"], timeout=1)
            break
        except RuntimeError:
            assert proc.poll() is None and time.monotonic() < deadline, "the file service did not start"
            time.sleep(0.05)
    yield {**cfg, "root": root}
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def job(tmp_path, pg, service, dbport: int | None = None) -> tuple[int, dict, str]:
    ini = tmp_path / "ta_import.ini"
    ini.write_text(f"[source]\nurl = http://127.0.0.1:{service['port']}/\ntimeout_s = 10\n"
                   f"[database]\nhost = 127.0.0.1\nport = {dbport or pg['port']}\ndbname = postgres\n"
                   f"user = postgres\npassword = {PASSWORD}\n"
                   f"[job]\nspool = {tmp_path}/spool\nstats = {tmp_path}/last.json\nhistory = {tmp_path}/runs.jsonl\n"
                   f"lock = {tmp_path}/lock\n")
    r = subprocess.run([sys.executable, "-m", "ccdrill.standins.ta_import", "--config", str(ini)],
                       env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=120)
    stats = json.loads((tmp_path / "last.json").read_text())
    assert json.loads(r.stdout) == stats
    return r.returncode, stats, r.stderr


def in_db(pg, batch: str) -> tuple[int, str, int]:
    rows, checksum = pg["sql"](TABLE_SQL, batch)[0]
    entries = pg["sql"]("SELECT count(*) FROM ta_batch WHERE batch = :'p1'", batch)[0][0]
    return int(rows), checksum, int(entries)


def test_the_job_imports_every_row_and_a_corrupt_batch_writes_nothing(tmp_path, pg, files_service):
    root = str(files_service["root"])
    good = generate(root, "20261201", 3, 120_000)
    bad = generate(root, "20261202", 2, 30_000, corrupt=(2, 25, "field"))
    later = generate(root, "20261203", 1, 10_000)

    rc, stats, err = job(tmp_path, pg, files_service)
    assert rc == 1 and not stats["ok"]
    assert [b["batch"] for b in stats["batches"]] == ["20261201"]
    assert stats["error"]["file"] == bad["corrupt"]["file"] and stats["error"]["line"] == 25
    assert f"{bad['corrupt']['file']} line 25: field amount" in err
    assert in_db(pg, "20261201") == (good["rows"], good["checksum"], 1)
    assert in_db(pg, "20261202") == (0, "0", 0), "half a corrupt batch written"
    assert in_db(pg, "20261203") == (0, "0", 0), "a batch after the corrupt one was imported"
    served = ctl.request(files_service["ctl_port"])
    assert served["files_served"] >= 5 and served["bytes_served"] >= good["bytes"]

    generate(root, "20261202", 2, 30_000, replace=True)  # the registrar sends it again
    rc, stats, _ = job(tmp_path, pg, files_service)
    assert rc == 0 and stats["ok"] and [b["batch"] for b in stats["batches"]] == ["20261202", "20261203"]
    assert in_db(pg, "20261203") == (later["rows"], later["checksum"], 1)
    assert stats["fetch_MBps"] > 0 and stats["load_s"] > 0 and stats["rows"] == stats["batches"][0]["rows"] + \
        later["rows"]

    rc, stats, _ = job(tmp_path, pg, files_service)
    assert rc == 0 and stats["batches"] == [] and stats["rows"] == 0


def test_a_load_the_database_refuses_leaves_nothing_half_written(tmp_path, pg, files_service):
    exp = generate(str(files_service["root"]), "20261210", 2, 40_000)
    # A row already holding the batch's key: the load fails at COMMIT time order, after the COPY.
    pg["sql"]("CREATE UNIQUE INDEX IF NOT EXISTS ta_confirm_key ON ta_confirm (batch, file, line_no)")
    pg["sql"]("INSERT INTO ta_confirm SELECT '20261210', :'p1', 40, 'x', 'x', 'x', 'x', '2026-12-10', 0, 0, 0, 0, "
              "'0', 'planted'", file_name("20261210", 2))
    try:
        rc, stats, err = job(tmp_path, pg, files_service)
        assert rc == 1 and "nothing of the batch was written" in stats["error"]["message"]
        assert "ta_confirm_key" in err or "duplicate" in err
        rows, _ck, entries = in_db(pg, "20261210")
        assert (rows, entries) == (1, 0), "only the planted row may be there"
    finally:
        pg["sql"]("DELETE FROM ta_confirm WHERE batch = '20261210'")
        pg["sql"]("DROP INDEX ta_confirm_key")
    rc, stats, _ = job(tmp_path, pg, files_service)
    assert rc == 0 and in_db(pg, "20261210") == (exp["rows"], exp["checksum"], 1)


def test_an_unreachable_database_is_named(tmp_path, pg, files_service):
    generate(str(files_service["root"]), "20261220", 1, 5_000)
    rc, stats, err = job(tmp_path, pg, files_service, dbport=free_port())
    assert rc == 1 and "database 127.0.0.1/postgres" in stats["error"]["message"]
    pg["sql"]("DELETE FROM ta_batch WHERE batch >= '20261220'")
