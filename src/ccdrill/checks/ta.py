"""Verdicts on the TA import (MIG-TA1, MIG-TA2, POST-TA): what the database holds against what the
registrar's generator sent, the scheduled tasks as cron sees them, the program's bytes on each server,
and a run of the job exactly as cron would start it.
"""

from __future__ import annotations

import configparser
import json
import shlex
import time
from dataclasses import dataclass

from ..lab.database import psql
from ..lab.world import Lab, LabError

CONFIG = "/etc/ccdrill/ta_import.ini"
CRON_NAME = "ccdrill TA import"  # the `#Ansible: <name>` marker of the entry in root's crontab
PROGRAM_PATHS = ("/opt/ccdrill", "/usr/local/bin/ta-import", CONFIG)
# The row checksum of ccdrill.standins.tafiles, computed by the database over what it holds.
TABLE_SQL = (
    "SELECT count(*), coalesce(sum(('x' || substr(md5(concat_ws('|', batch, file, line_no, confirm_no, account, "
    "fund_code, business, to_char(trade_date, 'YYYY-MM-DD'), amount, shares, nav, fee, status, memo)), 1, 15))"
    "::bit(60)::bigint), 0) FROM ta_confirm WHERE batch = :'p1'"
)
BATCH_SQL = "SELECT files, rows, bytes, checksum, host FROM ta_batch WHERE batch = :'p1'"


def job_db(lab: Lab, host: str) -> dict[str, str]:
    """The [database] of the TA job's config on `host` (where its rows go)."""
    rc, out, err = lab.exec(host, ["cat", CONFIG], 10)
    if rc != 0:
        raise LabError(f"{host}:{CONFIG}: {err.strip()}")
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(out, source=f"{host}:{CONFIG}")
    return dict(cp["database"])


def table_batch(lab: Lab, conn: dict, batch: str) -> dict:
    """What the database holds of `batch`: record count and row checksum, and its ta_batch row."""
    rows, checksum = psql(lab, conn, TABLE_SQL, batch)[0]
    entry = psql(lab, conn, BATCH_SQL, batch)
    e = None
    if entry:
        files, n, size, ck, host = entry[0]
        e = {"files": int(files), "rows": int(n), "bytes": int(size), "checksum": ck, "host": host}
    return {"db": conn["host"], "rows": int(rows), "checksum": checksum, "entry": e}


def verify_batch(lab: Lab, conn: dict, expected: dict) -> dict:
    """Every row the generator sent is in the database, and nothing else of the batch."""
    got = table_batch(lab, conn, expected["batch"])
    problems = []
    if got["rows"] != expected["rows"]:
        problems.append(f"{expected['batch']}: the database holds {got['rows']} records, the registrar sent "
                        f"{expected['rows']}")
    if got["checksum"] != str(expected["checksum"]):
        problems.append(f"{expected['batch']}: row checksum {got['checksum']} in the database, "
                        f"{expected['checksum']} sent")
    if got["entry"] is None:
        problems.append(f"{expected['batch']}: no ta_batch row")
    elif got["entry"]["files"] != len(expected["files"]) or got["entry"]["bytes"] != expected["bytes"]:
        problems.append(f"{expected['batch']}: ta_batch says {got['entry']}, the registrar sent "
                        f"{len(expected['files'])} files of {expected['bytes']} bytes")
    return {"ok": not problems, "problems": problems, "expected_rows": expected["rows"],
            "expected_checksum": str(expected["checksum"]), **got}


def purge_batch(lab: Lab, conn: dict, batch: str) -> None:
    """Drop a test batch from the database and give its space back (keeps later batches' copies small)."""
    psql(lab, conn, "DELETE FROM ta_confirm WHERE batch = :'p1'", batch)
    psql(lab, conn, "DELETE FROM ta_batch WHERE batch = :'p1'", batch)
    psql(lab, conn, "VACUUM ta_confirm")


# --- the scheduled task ------------------------------------------------------------------------------------
@dataclass
class CronEntry:
    host: str
    schedule: list[str]  # minute hour day month weekday
    command: str
    active: bool
    env: dict[str, str]

    @property
    def hour(self) -> int:
        return int(self.schedule[1])

    @property
    def minute(self) -> int:
        return int(self.schedule[0])


def cron_entry(lab: Lab, host: str, name: str = CRON_NAME) -> CronEntry | None:
    """The TA import entry of root's crontab on `host` (None if there is none); a commented entry is inactive."""
    rc, out, err = lab.exec(host, ["crontab", "-l", "-u", "root"], 10)
    if rc != 0:
        if "no crontab" in err:
            return None
        raise LabError(f"{host}: crontab -l: {err.strip()}")
    env: dict[str, str] = {}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if s and not s.startswith("#") and "=" in s.split()[0]:
            k, _, v = s.partition("=")
            env[k.strip()] = v.strip().strip('"')
        if s == f"#Ansible: {name}" and i + 1 < len(lines):
            entry = lines[i + 1].strip()
            active = not entry.startswith("#")
            fields = entry.lstrip("#").split(None, 5)
            if len(fields) < 6:
                raise LabError(f"{host}: crontab entry {name!r} is not '<m> <h> <dom> <mon> <dow> <command>': {entry}")
            return CronEntry(host, fields[:5], fields[5], active, env)
    return None


def cron_running(lab: Lab, host: str) -> bool:
    rc, out, _err = lab.exec(host, ["supervisorctl", "status", "cron"], 10)
    return "RUNNING" in out and rc == 0


def run_like_cron(lab: Lab, entry: CronEntry, timeout: float = 600) -> dict:
    """Run the entry's command the way cron does: /bin/sh -c <command>, in root's home, with cron's minimal
    environment plus the crontab's variables. Returns the exit code, the time taken and what it wrote."""
    if "%" in entry.command.replace("\\%", ""):
        raise LabError(f"{entry.host}: the cron command has '%' (cron would feed what follows as stdin): "
                       f"{entry.command}")
    env = {"SHELL": "/bin/sh", "HOME": "/root", "LOGNAME": "root", "PATH": "/usr/bin:/bin", **entry.env}
    argv = ["env", "-i", "-C", env["HOME"], *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c",
            entry.command.replace("\\%", "%")]
    t0 = time.time()
    rc, out, err = lab.exec(entry.host, argv, timeout)
    return {"rc": rc, "started": t0, "seconds": round(time.time() - t0, 2), "command": entry.command,
            "stdout": out[-2000:], "stderr": err[-2000:], "argv": " ".join(map(shlex.quote, argv))}


def last_run(lab: Lab, host: str, path: str = "/var/lib/ccdrill/ta_import/last_run.json") -> dict:
    """The job's own stats of its last run on `host`."""
    rc, out, err = lab.exec(host, ["cat", path], 10)
    if rc != 0:
        raise LabError(f"{host}:{path}: {err.strip()}")
    return json.loads(out)


def program_manifest(lab: Lab, host: str, paths: tuple[str, ...] = PROGRAM_PATHS) -> dict[str, str]:
    """sha256 of every file of the import program's environment on `host` ({} when it is not installed)."""
    script = ("for p in \"$@\"; do [ -e \"$p\" ] && find \"$p\" -name __pycache__ -prune -o -type f -print; "
              "done | LC_ALL=C sort | "
              "xargs -r -d '\\n' sha256sum")
    rc, out, err = lab.exec(host, ["sh", "-c", script, "manifest", *paths], 60)
    if rc != 0:
        raise LabError(f"{host}: checksums of the TA program: {err.strip()}")
    return {line[66:]: line[:64] for line in out.splitlines() if len(line) > 66}
