"""Application-server stand-in: the agents' application (call notes / work orders) on one site.

Serves HTTP on ``listen`` (the site's login entry points at it) and reads and writes the database
named in its own DB-connection INI (``dbconn``, the same ``[database] host port dbname user
password`` format as the IPCs' dbconn.ini). The INI is re-read for every request, so switching it
(plan 3.6: "changing the configuration files of ... the application server switches the data
source") takes effect without a restart.

- ``GET /login``: an agent logs in: the database answers ``SELECT 1``; returns the site, the app
  host and the database in use (``ok`` false with the error when the database does not answer).
- ``POST /orders`` ``{"id", "agent", "note"}``: records a work order; ``ok`` true only once the
  database committed the row (the acknowledgement the load's writer counts). The id comes from the
  client (letters, digits, ``-``/``_``, up to 64), so a row is never written twice under two ids,
  and the same id twice is refused as a duplicate.
- ``GET /orders/<id>``: reads one back.
- ``GET /stats``: logins, orders committed/failed, the database in use, the last error.

Stdlib only; SQL through Debian's ``psql``, values as psql variables.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from .common import ConfigError, Service, parse_hostport, run_psql, run_service, validate_config
from .kcbp import DbConnError, conninfo, read_dbconn

ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
INSERT = ("INSERT INTO work_order (id, agent, note, site) VALUES (:'id', :'agent', :'note', :'site') "
          "ON CONFLICT (id) DO NOTHING RETURNING id;\n")
SELECT = "SELECT id, agent, note, site FROM work_order WHERE id = :'id';\n"


class AppServer(Service):
    kind = "appserver"

    def __init__(self, cfg: dict) -> None:
        cfg = validate_config(cfg, {"name": str, "site": str, "listen": str},
                              {"dbconn": "/etc/ccdrill/app-dbconn.ini", "psql": "psql",
                               "query_timeout_s": 5.0, "max_parallel": 8})
        if cfg["query_timeout_s"] <= 0 or cfg["max_parallel"] <= 0:
            raise ConfigError("config <config>: query_timeout_s and max_parallel must be > 0")
        host, port = parse_hostport(cfg["listen"], "listen")
        super().__init__(cfg["name"], ctl_port=port)
        self.listen_host = host
        self.site = cfg["site"]
        self.dbconn = cfg["dbconn"]
        self.psql = cfg["psql"]
        self.timeout = float(cfg["query_timeout_s"])
        self._limit = asyncio.Semaphore(cfg["max_parallel"])
        self.counts = {"logins": 0, "login_failed": 0, "committed": 0, "failed": 0, "duplicate": 0,
                       "rejected": 0, "reads": 0}
        self.db_in_use: str | None = None
        self.last_error: str | None = None

    def stats(self) -> dict:
        s = super().stats()
        s.update({"site": self.site, "dbconn": self.dbconn, "db": self.db_in_use, "counts": dict(self.counts),
                  "last_error": self.last_error})
        return s

    async def _psql(self, sql: str, **params: str) -> tuple[str, list[list[str]]]:
        db = read_dbconn(self.dbconn)  # re-read each time: a switched INI applies at once
        self.db_in_use = db["host"]
        async with self._limit:
            try:
                rc, lines, last = await run_psql(self.psql, conninfo(db, 2), db["password"], sql, params,
                                                 self.timeout)
            except TimeoutError:
                raise RuntimeError(f"{db['host']}: psql timed out after {self.timeout:g} s") from None
        if rc != 0:
            raise RuntimeError(f"{db['host']}: {last or f'psql exit {rc}'}")
        return db["host"], [ln.split("|") for ln in lines if ln]

    def _failed(self, key: str, e: Exception) -> dict:
        self.counts[key] += 1
        self.last_error = str(e)
        return {"ok": False, "site": self.site, "app": self.name, "db": self.db_in_use, "error": str(e)}

    async def login(self) -> dict:
        try:
            db, _rows = await self._psql("SELECT 1;\n")
        except (DbConnError, RuntimeError) as e:
            return self._failed("login_failed", e)
        self.counts["logins"] += 1
        return {"ok": True, "site": self.site, "app": self.name, "db": db}

    async def record(self, req: object) -> dict:
        if not (isinstance(req, dict) and isinstance(req.get("id"), str) and ID_RE.fullmatch(req["id"])
                and isinstance(req.get("agent"), str) and 0 < len(req["agent"]) <= 64
                and isinstance(req.get("note"), str) and len(req["note"]) <= 1000):
            self.counts["rejected"] += 1
            return {"ok": False, "error": "an order needs id (letters, digits, - or _, up to 64), "
                                          "agent (1-64 characters) and note (up to 1000 characters)"}
        try:
            db, rows = await self._psql(INSERT, id=req["id"], agent=req["agent"], note=req["note"], site=self.site)
        except (DbConnError, RuntimeError) as e:
            return self._failed("failed", e)
        if not rows:
            self.counts["duplicate"] += 1
            return {"ok": False, "id": req["id"], "db": db, "duplicate": True,
                    "error": f"order {req['id']} already recorded"}
        self.counts["committed"] += 1
        return {"ok": True, "id": req["id"], "site": self.site, "app": self.name, "db": db}

    async def read(self, oid: str) -> dict:
        if not ID_RE.fullmatch(oid):
            return {"ok": False, "error": "bad order id"}
        try:
            db, rows = await self._psql(SELECT, id=oid)
        except (DbConnError, RuntimeError) as e:
            return self._failed("failed", e)
        self.counts["reads"] += 1
        if not rows:
            return {"ok": False, "db": db, "error": f"no order {oid}"}
        r = rows[0]
        return {"ok": True, "db": db, "order": {"id": r[0], "agent": r[1], "note": r[2], "site": r[3]}}

    async def _dispatch(self, method: str, path: str, raw: bytes) -> tuple[int, dict]:
        if path == "/login" and method == "GET":
            res = await self.login()
            return (200 if res["ok"] else 503), res
        if path == "/orders" and method == "POST":
            try:
                req = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                return 400, {"ok": False, "error": f"invalid JSON: {e}"}
            res = await self.record(req)
            status = 200 if res["ok"] else 409 if res.get("duplicate") else 400 if "db" not in res else 503
            return status, res
        if path.startswith("/orders/") and method == "GET":
            res = await self.read(path[len("/orders/"):])
            return (200 if res["ok"] else 404), res
        return await super()._dispatch(method, path, raw)

    async def run(self) -> None:
        self._ctl_server = await asyncio.start_server(self._serve_http, self.listen_host, self.ctl_port)
        self.log("listening", address=f"{self.listen_host}:{self.ctl_port}", dbconn=self.dbconn, at=time.time())
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    run_service(AppServer, argv)


if __name__ == "__main__":
    main()
