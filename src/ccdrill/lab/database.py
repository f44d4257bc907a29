"""The lab's databases as the application sees them: through the IPC's DB-connection config and psql."""

from __future__ import annotations

import configparser

from .world import Lab, LabError

DBCONN = "/etc/ccdrill/dbconn.ini"


def read_dbconn(lab: Lab, ipc: str) -> dict[str, str]:
    """The [database] section of an IPC's DB-connection config (what KCBP reads for every query)."""
    rc, out, err = lab.exec(ipc, ["cat", DBCONN], 10)
    if rc != 0:
        raise LabError(f"{ipc}:{DBCONN}: {err.strip()}")
    cp = configparser.ConfigParser()
    cp.read_string(out, source=f"{ipc}:{DBCONN}")
    return dict(cp["database"])


def psql(lab: Lab, conn: dict[str, str], sql: str, *params: str) -> list[list[str]]:
    """Run SQL on the database `conn` names (a dbconn dict), from that database's own host.

    Parameters are passed as psql variables (:'p1', :'p2', ...), never pasted into the SQL.
    """
    argv = ["env", f"PGPASSWORD={conn['password']}", "psql", "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(conn.get("port", 5432)), "-U", conn["user"], "-d", conn["dbname"]]
    for i, p in enumerate(params, 1):
        argv += ["-v", f"p{i}={p}"]
    # psql substitutes variables only in SQL read from stdin or -f, so feed it through sh's stdin.
    script = sql.replace("'", "'\\''")
    rc, out, err = lab.exec(conn["host"], ["sh", "-c", f"printf '%s\\n' '{script}' | " + " ".join(
        "'" + a.replace("'", "'\\''") + "'" for a in argv)], 60)
    if rc != 0:
        raise LabError(f"{conn['host']}/{conn['dbname']}: {err.strip() or out.strip()}")
    return [line.split("|") for line in out.splitlines() if line]
