"""The TA import job (plan 2.2.2): reads the fund registrar's daily files from the remote file service
and bulk-writes them into the call center's database. Run by cron (outside agent hours), or by hand.

    python3 -m ccdrill.standins.ta_import --config /etc/ccdrill/ta_import.ini [--batch B]

Config (INI, like the IPCs' DB-connection file)::

    [source]    url = http://ta-files:8080/      timeout_s = 60
    [database]  host port dbname user password
    [job]       spool = ...  stats = ...  history = ...  lock = ...

A run imports every batch the source lists that the database does not hold yet (table ta_batch), in
batch order, or only --batch. Per batch, three phases, each timed:
  fetch     every file of the batch into the spool (sizes checked against the listing);
  validate  every file: header (batch, file n of N), field formats of every record, the trailer's record
            count and checksum; the first problem stops the batch with an error naming file and line;
  load      one psql session, one transaction: the batch's ta_batch row, then COPY of every record;
            COMMIT only at the end, so a failure anywhere leaves nothing of the batch written (and a
            concurrent run of the same batch fails on ta_batch's key instead of importing it twice).
The first failed batch ends the run (later batches wait for it). Stats go to [job] stats as JSON
(files, rows, bytes, seconds and MB/s per phase and per batch, error) and one line per run to
[job] history; the same JSON is printed on stdout. Exit 0 ok, 1 a batch failed, 2 bad config,
3 another run holds the lock. Stdlib only; needs Debian's postgresql-client.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from .tafiles import BATCH_RE, FILE_RE, TaFileError, read_file

COLUMNS = ("batch", "file", "line_no", "confirm_no", "account", "fund_code", "business", "trade_date", "amount",
           "shares", "nav", "fee", "status", "memo")
DEFAULTS = {"spool": "/var/lib/ccdrill/ta_import/spool", "stats": "/var/lib/ccdrill/ta_import/last_run.json",
            "history": "/var/lib/ccdrill/ta_import/runs.jsonl", "lock": "/run/ccdrill/ta_import.lock"}
MB = 1e6


class ConfigError(Exception):
    """The job's config is unusable; names the file, the section and the key."""


class ImportError_(Exception):  # noqa: N801  (not the builtin)
    """A batch could not be imported; nothing of it was written."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.file, self.line = file, line


def read_config(path: str) -> dict:
    cp = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            cp.read_file(f)
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise ConfigError(f"config {path}: {e}") from e
    cfg: dict = {}
    for section, keys in (("source", ("url",)), ("database", ("host", "dbname", "user"))):
        if not cp.has_section(section):
            raise ConfigError(f"config {path}: no [{section}] section")
        for k in keys:
            if not cp[section].get(k, "").strip():
                raise ConfigError(f"config {path}: [{section}] {k} missing")
    url = cp["source"]["url"].strip()
    if not url.startswith("http://"):
        raise ConfigError(f"config {path}: [source] url must be http://host:port/, got {url!r}")
    cfg["url"] = url.rstrip("/") + "/"
    db = cp["database"]
    port = db.get("port", "5432").strip()
    if not port.isdigit():
        raise ConfigError(f"config {path}: [database] port must be a number, got {port!r}")
    cfg["db"] = {"host": db["host"].strip(), "port": port, "dbname": db["dbname"].strip(),
                 "user": db["user"].strip(), "password": db.get("password", "")}
    for k, default in (("timeout_s", "60"),):
        v = cp["source"].get(k, default).strip()
        try:
            cfg[k] = float(v)
        except ValueError:
            raise ConfigError(f"config {path}: [source] {k} must be a number, got {v!r}") from None
    job = cp["job"] if cp.has_section("job") else {}
    for k, default in DEFAULTS.items():
        cfg[k] = (job.get(k) or default).strip()
    return cfg


def _conninfo(db: dict) -> str:
    def q(v: str) -> str:
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={q(db[k])}" for k in ("host", "port", "dbname", "user")) + " connect_timeout=5"


def _psql_env(db: dict) -> dict:
    env = dict(os.environ, PGPASSWORD=db["password"])
    env.pop("PGSERVICE", None)
    return env


def psql_query(db: dict, sql: str, timeout: float = 60) -> list[list[str]]:
    r = subprocess.run(["psql", "-X", "-A", "-t", "-q", "-w", "-F", "|", "-v", "ON_ERROR_STOP=1", _conninfo(db)],
                       input=sql, capture_output=True, text=True, env=_psql_env(db), timeout=timeout)
    if r.returncode != 0:
        last = r.stderr.strip().splitlines()[-1:] or [f"psql exit {r.returncode}"]
        raise ImportError_(f"database {db['host']}/{db['dbname']}: {last[0]}")
    return [line.split("|") for line in r.stdout.splitlines() if line]


class Job:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.host = socket.gethostname()

    # -- source
    def _get(self, path: str):
        try:
            return urllib.request.urlopen(self.cfg["url"] + path, timeout=self.cfg["timeout_s"])
        except (urllib.error.URLError, OSError) as e:
            raise ImportError_(f"file source {self.cfg['url']}{path}: {e}") from e

    def _get_json(self, path: str) -> dict:
        with self._get(path) as r:
            return json.loads(r.read().decode())

    def pending(self, only: str | None) -> list[str]:
        listed = [b["batch"] for b in self._get_json("batches")["batches"]]
        done = {row[0] for row in psql_query(self.cfg["db"], "SELECT batch FROM ta_batch;\n")}
        if only is not None:
            if only not in listed:
                raise ImportError_(f"batch {only}: the file source {self.cfg['url']} does not list it")
            if only in done:
                raise ImportError_(f"batch {only}: already imported (ta_batch)")
            return [only]
        return sorted(b for b in listed if b not in done)

    # -- one batch
    def import_batch(self, batch: str) -> dict:
        if not BATCH_RE.fullmatch(batch):
            raise ImportError_(f"batch {batch!r}: not a batch name")
        spool = os.path.join(self.cfg["spool"], batch)
        shutil.rmtree(spool, ignore_errors=True)
        os.makedirs(spool)
        res = {"batch": batch, "files": 0, "rows": 0, "bytes": 0, "copy_bytes": 0}
        try:
            t0 = time.monotonic()
            listing = self._get_json(f"batches/{batch}/")["files"]
            if not listing:
                raise ImportError_(f"batch {batch}: the file source lists no files")
            for f in listing:
                if not FILE_RE.fullmatch(f["name"]):
                    raise ImportError_(f"batch {batch}: unexpected file name {f['name']!r}", f["name"])
                self._fetch(batch, f, os.path.join(spool, f["name"]))
                res["bytes"] += f["size"]
            res["files"] = len(listing)
            t1 = time.monotonic()
            copy_path = os.path.join(spool, "copy.tsv")
            checksum = 0
            with open(copy_path, "w", encoding="ascii", newline="\n") as out:
                for seq, f in enumerate(listing, 1):
                    name = f["name"]
                    prefix = f"{batch}\t{name}\t"

                    def emit(lineno: int, fields: tuple, _p=prefix, _w=out.write) -> None:
                        d = fields[4]
                        _w(f"{_p}{lineno}\t{fields[0]}\t{fields[1]}\t{fields[2]}\t{fields[3]}\t"
                           f"{d[:4]}-{d[4:6]}-{d[6:]}\t" + "\t".join(fields[5:]) + "\n")

                    try:
                        got = read_file(os.path.join(spool, name), name, batch, seq, len(listing), emit)
                    except TaFileError as e:
                        raise ImportError_(f"batch {batch}: {e}", e.file, e.line) from None
                    res["rows"] += got["rows"]
                    checksum += got["checksum"]
            res["checksum"] = str(checksum)
            res["copy_bytes"] = os.path.getsize(copy_path)
            t2 = time.monotonic()
            self._load(batch, res, copy_path)
            t3 = time.monotonic()
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        res.update(fetch_s=round(t1 - t0, 3), validate_s=round(t2 - t1, 3), load_s=round(t3 - t2, 3),
                   seconds=round(t3 - t0, 3))
        res["fetch_MBps"] = round(res["bytes"] / MB / max(t1 - t0, 1e-6), 2)
        res["load_MBps"] = round(res["copy_bytes"] / MB / max(t3 - t2, 1e-6), 2)
        res["MBps"] = round(res["bytes"] / MB / max(t3 - t0, 1e-6), 2)
        return res

    def _fetch(self, batch: str, f: dict, path: str) -> None:
        got = 0
        with self._get(f"batches/{batch}/{f['name']}") as r, open(path, "wb") as out:
            while chunk := r.read(1 << 20):
                out.write(chunk)
                got += len(chunk)
        if got != f["size"]:
            raise ImportError_(f"batch {batch}: {f['name']}: fetched {got} bytes, the source lists {f['size']}",
                               f["name"])

    def _load(self, batch: str, res: dict, copy_path: str) -> None:
        db = self.cfg["db"]
        head = (f"BEGIN;\nINSERT INTO ta_batch (batch, files, rows, bytes, checksum, host) VALUES "
                f"('{batch}', {res['files']}, {res['rows']}, {res['bytes']}, {res['checksum']}, "
                f"'{self.host}');\nCOPY ta_confirm ({', '.join(COLUMNS)}) FROM STDIN;\n")
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(["psql", "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", _conninfo(db)],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                    env=_psql_env(db))
            try:
                proc.stdin.write(head.encode())
                with open(copy_path, "rb") as src:
                    shutil.copyfileobj(src, proc.stdin, 1 << 20)
                proc.stdin.write(b"\\.\nCOMMIT;\n")
                proc.stdin.close()
            except BrokenPipeError:
                pass  # psql stopped on an error: its message follows
            finally:
                rc = proc.wait()
            err.seek(0)
            msg = err.read().decode("utf-8", "replace").strip()
        if rc != 0:
            said = " ".join(m.strip() for m in msg.splitlines() if m.strip())[-600:]
            raise ImportError_(f"batch {batch}: database {db['host']}/{db['dbname']} refused the load, nothing "
                               f"of the batch was written: {said or f'psql exit {rc}'}")

    # -- a run
    def run(self, only: str | None = None) -> dict:
        t0, started = time.monotonic(), time.time()
        stats: dict = {"ok": True, "host": self.host, "started": started, "source": self.cfg["url"],
                       "database": f"{self.cfg['db']['host']}/{self.cfg['db']['dbname']}", "batches": [],
                       "pending": [], "error": None}
        try:
            stats["pending"] = self.pending(only)
            for b in stats["pending"]:
                stats["batches"].append(self.import_batch(b))
        except ImportError_ as e:
            stats["ok"] = False
            stats["error"] = {"message": str(e), "file": e.file, "line": e.line}
        done = stats["batches"]
        stats.update(files=sum(b["files"] for b in done), rows=sum(b["rows"] for b in done),
                     bytes=sum(b["bytes"] for b in done), finished=time.time(),
                     seconds=round(time.monotonic() - t0, 3))
        for phase in ("fetch", "validate", "load"):
            stats[f"{phase}_s"] = round(sum(b[f"{phase}_s"] for b in done), 3)
        stats["fetch_MBps"] = round(stats["bytes"] / MB / max(stats["fetch_s"], 1e-6), 2) if done else 0.0
        stats["load_MBps"] = round(sum(b["copy_bytes"] for b in done) / MB / max(stats["load_s"], 1e-6), 2) \
            if done else 0.0
        stats["MBps"] = round(stats["bytes"] / MB / max(stats["seconds"], 1e-6), 2) if done else 0.0
        return stats


def write_stats(cfg: dict, stats: dict) -> None:
    for key in ("stats", "history"):
        os.makedirs(os.path.dirname(cfg[key]) or ".", exist_ok=True)
    tmp = cfg["stats"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
        f.write("\n")
    os.replace(tmp, cfg["stats"])
    with open(cfg["history"], "a", encoding="utf-8") as f:
        f.write(json.dumps(stats) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ta_import", description="import the registrar's TA files")
    p.add_argument("--config", required=True)
    p.add_argument("--batch", help="import only this batch")
    a = p.parse_args(argv)
    try:
        cfg = read_config(a.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    os.makedirs(os.path.dirname(cfg["lock"]) or ".", exist_ok=True)
    with open(cfg["lock"], "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"error: another TA import run holds {cfg['lock']}", file=sys.stderr, flush=True)
            return 3
        stats = Job(cfg).run(a.batch)
        with contextlib.suppress(OSError):
            write_stats(cfg, stats)
    print(json.dumps(stats), flush=True)
    if not stats["ok"]:
        print(f"error: {stats['error']['message']}", file=sys.stderr, flush=True)
    return 0 if stats["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
