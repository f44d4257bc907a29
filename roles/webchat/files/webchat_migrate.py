#!/usr/bin/python3
"""The web chat's data migration on the new (Shenzhen) server (plan 2.2.1), stdlib only.

    ccdrill-webchat-migrate copy [--final]     copy every message from the source server, then migrate
                                               the schema to this release (--final: new ids from the floor)
    ccdrill-webchat-migrate catch-up           copy the source's messages written since the last copy
    ccdrill-webchat-migrate compare            every source message here, with the same content?
    ccdrill-webchat-migrate upgrade-test VER   the application answers as release VER with every row

Every command prints one JSON object. The source is read with the account of
/etc/mysql/webchat-source.cnf (read-only); the local database is written as root over its socket.
A copy refuses to run once this server has taken messages of its own (ids from the floor on): it
would erase them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request

DB = "webchat"
SOURCE_CNF = "/etc/mysql/webchat-source.cnf"
APP = "/var/www/webchat"
ID_FLOOR = 1000000
ROW = ("CONCAT_WS('|', id, uid, conversation, author, body, "
       "DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s.%f'))")


class MigrationError(RuntimeError):
    pass


def _mysql(sql: str, source: bool) -> list[list[str]]:
    argv = ["mysql"] + ([f"--defaults-extra-file={SOURCE_CNF}"] if source else []) + ["-N", "-B", DB, "-e", sql]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise MigrationError(f"{'source' if source else 'local'} database: {r.stderr.strip()}")
    return [line.split("\t") for line in r.stdout.splitlines()]


def summary(source: bool, where: str = "1=1") -> dict:
    row = _mysql("SET SESSION group_concat_max_len = 1073741824; "
                 f"SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(SHA2(GROUP_CONCAT({ROW} ORDER BY id "
                 f"SEPARATOR '\\n'), 256), '') FROM messages WHERE {where}", source)[0]
    return {"messages": int(row[0]), "max_id": int(row[1]), "checksum": row[2]}


def _pipe(dump_args: list[str]) -> None:
    """mysqldump from the source | mysql here; both must succeed."""
    dump = subprocess.Popen(["mysqldump", f"--defaults-extra-file={SOURCE_CNF}", "--single-transaction",
                             "--skip-add-locks", "--skip-triggers", *dump_args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    load = subprocess.run(["mysql", DB], stdin=dump.stdout, capture_output=True, timeout=600)
    dump.stdout.close()
    dump_err = dump.stderr.read().decode(errors="replace")
    if dump.wait(timeout=60) != 0:
        raise MigrationError(f"mysqldump from the source: {dump_err.strip()}")
    if load.returncode != 0:
        raise MigrationError(f"loading into the local database: {load.stderr.decode(errors='replace').strip()}")


def own_messages() -> int:
    return int(_mysql(f"SELECT COUNT(*) FROM messages WHERE id >= {ID_FLOOR}", False)[0][0])


def schema_migration() -> dict:
    r = subprocess.run(["php", f"{APP}/migrate.php"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise MigrationError(f"schema migration: {r.stderr.strip()}")
    return json.loads(r.stdout)


def cmd_copy(final: bool) -> dict:
    own = own_messages()
    if own:
        raise MigrationError(f"this server already holds {own} messages of its own customers (ids from "
                             f"{ID_FLOOR}): a new copy would erase them; use catch-up")
    before = summary(True)
    _pipe([DB, "messages", "schema_meta"])
    migrated = schema_migration()
    upto = f"id <= {before['max_id']}"
    source, local = summary(True, upto), summary(False, upto)
    copied = summary(False)
    if final:
        _mysql(f"ALTER TABLE messages AUTO_INCREMENT = {ID_FLOOR}", False)
    return {"source": source, "local": local, "equal": source == local, "copied_messages": copied["messages"],
            "copied_max_id": copied["max_id"], "schema": migrated, "final": final}


def cmd_catch_up(passes: int, pause: float) -> dict:
    synced = []
    for i in range(passes):
        last = summary(False, f"id < {ID_FLOOR}")["max_id"]
        before = summary(False)["messages"]
        _pipe(["--no-create-info", "--insert-ignore", "--complete-insert", f"--where=id > {last}", DB, "messages"])
        synced.append(summary(False)["messages"] - before)
        if i + 1 < passes:
            time.sleep(pause)
    return {"synced": synced, "total": sum(synced)}


def cmd_compare() -> dict:
    source = summary(True)
    local = summary(False, f"id <= {source['max_id']} AND id < {ID_FLOOR}")
    src_ids = {int(r[0]) for r in _mysql("SELECT id FROM messages", True)}
    loc_ids = {int(r[0]) for r in _mysql(f"SELECT id FROM messages WHERE id < {ID_FLOOR}", False)}
    missing = sorted(src_ids - loc_ids)
    return {"source": source, "local": local, "equal": source == local, "missing": len(missing),
            "missing_ids": missing[:20], "own_messages": own_messages()}


def _http(path: str, data: dict | None = None) -> dict:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    with urllib.request.urlopen(f"http://127.0.0.1/{path}", body, timeout=10) as r:
        return json.loads(r.read().decode())


def cmd_upgrade_test(version: str) -> dict:
    """The new release on the copied data: its version, every row, and a message posted and read back."""
    got = _http("api.php?op=version")
    counts = _http("api.php?op=counts")
    local = summary(False)
    conv = f"upgrade-test-{int(time.time() * 1000)}"
    posted = _http("api.php", {"op": "post", "conversation": conv, "author": "tester",
                               "body": "版本升级测试 / version upgrade test", "channel": "app"})
    read = _http(f"api.php?op=messages&conversation={conv}")["messages"]
    ok = (got.get("version") == version and counts["messages"] == local["messages"]
          and counts["checksum"] == local["checksum"] and len(read) == 1 and read[0]["uid"] == posted["uid"]
          and read[0].get("channel") == "app")
    return {"ok": ok, "version": got, "counts": counts, "posted": posted, "read_back": read}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ccdrill-webchat-migrate", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("copy")
    c.add_argument("--final", action="store_true")
    u = sub.add_parser("catch-up")
    u.add_argument("--passes", type=int, default=2, choices=range(1, 6))
    u.add_argument("--pause", type=float, default=2.0)
    sub.add_parser("compare")
    t = sub.add_parser("upgrade-test")
    t.add_argument("version")
    a = p.parse_args(argv)
    try:
        if a.cmd == "copy":
            out = cmd_copy(a.final)
        elif a.cmd == "catch-up":
            out = cmd_catch_up(a.passes, min(max(a.pause, 0.0), 10.0))
        elif a.cmd == "compare":
            out = cmd_compare()
        else:
            out = cmd_upgrade_test(a.version)
    except (MigrationError, OSError, ValueError, subprocess.TimeoutExpired) as e:
        print(f"ccdrill-webchat-migrate {a.cmd}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, ensure_ascii=False, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
