"""KCBP stand-in (docs/telephony.md, "KCBP").

Subscribes ``kcbp.req {"id","account"}`` on KCXP and answers ``kcbp.rep {"id","ok","rows","db"}``
(plus ``error`` when not ok). Every query re-reads the DB-connection INI (``[database] host port
dbname user password``), so switching it takes effect without a restart, and runs
``SELECT account, balance FROM fund_account WHERE account = <account>`` with ``psql``.

The account never reaches SQL text: it must be 1-64 ASCII letters/digits (else the request is
refused) and is handed to psql as a variable quoted by psql itself (``:'account'``). The SQL is
fed on stdin because psql does not interpolate variables in ``-c``. Any database failure
(unreachable, bad credentials, missing table, psql missing) becomes ``ok: false`` with the error.
Stdlib only; needs Debian's ``postgresql-client``.
"""

from __future__ import annotations

import asyncio
import configparser
import re
import time

from .common import ConfigError, CtlError, KcxpClient, Service, parse_hostport, run_psql, run_service, validate_config

ACCOUNT_RE = re.compile(r"[A-Za-z0-9]{1,64}")
SQL = "SELECT account, balance FROM fund_account WHERE account = :'account';\n"
COLUMNS = ("account", "balance")


class DbConnError(Exception):
    """The DB-connection INI is unreadable or incomplete."""


def read_dbconn(path: str) -> dict[str, str]:
    """Parse the IPC's DB-connection INI; returns host/port/dbname/user/password."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise DbConnError(f"dbconn {path}: {e}") from e
    if not parser.has_section("database"):
        raise DbConnError(f"dbconn {path}: no [database] section")
    sec = parser["database"]
    out = {}
    for key in ("host", "dbname", "user"):
        value = sec.get(key, "").strip()
        if not value:
            raise DbConnError(f"dbconn {path}: [database] {key} missing")
        out[key] = value
    port = sec.get("port", "5432").strip()
    if not port.isdigit():
        raise DbConnError(f"dbconn {path}: [database] port must be a number, got {port!r}")
    out["port"] = port
    out["password"] = sec.get("password", "")
    return out


def _conninfo_value(value: str) -> str:
    # libpq conninfo quoting: single quotes, backslash-escape ' and \.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo(db: dict[str, str], connect_timeout: int) -> str:
    parts = {k: db[k] for k in ("host", "port", "dbname", "user")}
    parts["connect_timeout"] = str(connect_timeout)
    return " ".join(f"{k}={_conninfo_value(v)}" for k, v in parts.items())


def valid_account(account: object) -> bool:
    return isinstance(account, str) and ACCOUNT_RE.fullmatch(account) is not None


class Kcbp(Service):
    kind = "kcbp"

    def __init__(self, cfg: dict) -> None:
        cfg = validate_config(cfg, {"name": str, "kcxp": str, "ctl_port": int},
                              {"dbconn": "/etc/ccdrill/dbconn.ini", "psql": "psql",
                               "connect_timeout_s": 2, "query_timeout_s": 5.0, "max_parallel": 8})
        for key in ("connect_timeout_s", "query_timeout_s", "max_parallel"):
            if cfg[key] <= 0:
                raise ConfigError(f"config <config>: key {key!r} must be > 0, got {cfg[key]!r}")
        super().__init__(cfg["name"], ctl_port=cfg["ctl_port"])
        self.kcxp_addr = parse_hostport(cfg["kcxp"], "kcxp")
        self.dbconn = cfg["dbconn"]
        self.psql = cfg["psql"]
        self.connect_timeout = max(2, int(cfg["connect_timeout_s"]))  # libpq's floor is 2 s
        self.query_timeout = float(cfg["query_timeout_s"])
        self._limit = asyncio.Semaphore(cfg["max_parallel"])  # bounds psql forks under load
        self.kcxp = KcxpClient(*self.kcxp_addr, name=f"{self.name}-kcxp")
        self.counts = {"ok": 0, "failed": 0, "rejected": 0}
        self.malformed = 0
        self.replies_dropped = 0
        self.last: dict | None = None
        self._tasks: set[asyncio.Task] = set()

    def stats(self) -> dict:
        s = super().stats()
        s.update({
            "dbconn": self.dbconn,
            "queries": dict(self.counts),
            "in_flight": len(self._tasks),
            "last": self.last,
            "malformed": self.malformed,
            "replies_dropped": self.replies_dropped,
            "kcxp_connected": self.kcxp.connected,
            "kcxp": self.kcxp.stats(),
        })
        return s

    async def handle_ctl(self, req: dict) -> dict:
        # Lets a check run the same query KCBP would run for the IVR, without a call.
        if req.get("op") == "query":
            if not valid_account(req.get("account")):
                raise CtlError("query: 'account' must be 1-64 letters/digits")
            return await self.query(req["account"])
        return await super().handle_ctl(req)

    async def query(self, account: str) -> dict:
        """Run the balance query; always returns {"ok","rows","db"[,"error"]}, never raises."""
        t0 = time.monotonic()
        if not valid_account(account):
            self.counts["rejected"] += 1
            return self._done(account, {"ok": False, "rows": [], "db": None,
                                        "error": "invalid account (letters/digits only)"}, t0)
        try:
            db = read_dbconn(self.dbconn)  # re-read each time: a switched INI applies at once
        except DbConnError as e:
            self.counts["failed"] += 1
            return self._done(account, {"ok": False, "rows": [], "db": None, "error": str(e)}, t0)
        result: dict = {"ok": False, "rows": [], "db": db["host"]}
        try:
            async with self._limit:
                rows = await self._psql(db, account)
        except Exception as e:
            result["error"] = str(e) or repr(e)
            self.counts["failed"] += 1
        else:
            result.update(ok=True, rows=rows)
            self.counts["ok"] += 1
        return self._done(account, result, t0)

    def _done(self, account: str, result: dict, t0: float) -> dict:
        ms = round((time.monotonic() - t0) * 1000, 1)
        self.last = {"account": account, "ok": result["ok"], "db": result["db"],
                     "rows": len(result["rows"]), "error": result.get("error"), "ms": ms, "ts": time.time()}
        self.log("query", account=account, ok=result["ok"], db=result["db"], rows=len(result["rows"]),
                 ms=ms, error=result.get("error"))
        return result

    async def _psql(self, db: dict[str, str], account: str) -> list[dict]:
        try:
            rc, lines, last = await run_psql(self.psql, conninfo(db, self.connect_timeout), db["password"], SQL,
                                             {"account": account}, self.query_timeout)
        except TimeoutError:
            raise RuntimeError(f"psql timed out after {self.query_timeout:g} s") from None
        if rc != 0:
            raise RuntimeError(f"psql exit {rc}: {last or 'no message'}")
        rows = []
        for line in lines:
            if line.strip():
                rows.append(dict(zip(COLUMNS, line.split("|", len(COLUMNS) - 1), strict=False)))
        return rows

    # -- KCXP

    def _on_request(self, _topic: str, msg: dict) -> None:
        qid = msg.get("id")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool):
            self.malformed += 1  # no id: nobody could match the reply
            return
        task = asyncio.get_running_loop().create_task(self._serve_request(qid, msg.get("account")))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_request(self, qid: str | int, account: object) -> None:
        if valid_account(account):
            result = await self.query(account)  # type: ignore[arg-type]
        else:
            self.counts["rejected"] += 1
            result = self._done(str(account)[:80], {"ok": False, "rows": [], "db": None,
                                                    "error": "invalid account (letters/digits only)"},
                                time.monotonic())
        if not self.kcxp.publish("kcbp.rep", {"id": qid, **result}):
            self.replies_dropped += 1

    async def run(self) -> None:
        await self.start_ctl(self.ctl_port)
        self.kcxp.subscribe("kcbp.req", self._on_request)
        await self.kcxp.start()
        await asyncio.Event().wait()

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await self.kcxp.close()
        await super().close()


def main(argv: list[str] | None = None) -> None:
    run_service(Kcbp, argv)


if __name__ == "__main__":
    main()
