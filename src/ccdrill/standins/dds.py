"""DDS stand-in: the vendor's replication service, with its start/stop/config surface, around
PostgreSQL's own logical replication (the lab's databases stand in for Oracle).

One program ``dds`` runs under supervisord on the *destination* database host; its configuration
(``/etc/ccdrill/dds.json``) names the source and the destination database and the replicated tables::

    {"name": "dds", "ctl_port": 9600,
     "source": {"host": "sh-db", "port": 5432, "dbname": "callcenter", "user": "dds", "password": "..."},
     "destination": {"host": "sz-db", ...}, "tables": ["fund_account", "work_order"]}

Started, it makes the pair what the configuration says: the publication ``dds`` on the source; on the
destination one subscription ``dds_from_<source>`` kept enabled. A destination that has no such
subscription yet (first start, or DDS redeployed in the other direction) is instantiated from the
source: its tables are emptied and the subscription copies them (initial load). A database that is
no longer a destination loses its old subscription, and a database that is no longer a source its old
replication slots, so a reversed pair never replicates both ways. Stopped (SIGTERM, ``supervisorctl
stop dds``), it disables the subscription: nothing is applied until it starts again.

Every ``interval_s`` it counts what both sides hold, per table: rows and an md5 of the ordered rows,
plus the source's WAL position, what the destination confirmed, the lag in bytes and the state
(``running``, ``initial_load``, ``source_unreachable``, ``destination_unreachable``, ``stopped``).
The stats are served on ``GET /stats`` (127.0.0.1:ctl_port) and written to ``stats_file``.

Stdlib only; the SQL runs through Debian's ``psql``. Names that reach SQL text (tables, host names in
object names) are checked against a strict pattern; values go through psql variables.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

from .common import ConfigError, Service, run_psql, run_service, validate_config

IDENT_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
PUBLICATION = "dds"
SUB_PREFIX = "dds_from_"


def _ident(value: object, key: str) -> str:
    if not isinstance(value, str) or not IDENT_RE.fullmatch(value):
        raise ConfigError(f"config <config>: {key} must be a lower-case SQL name, got {value!r}")
    return value


def _endpoint(value: object, key: str) -> dict:
    ep = validate_config(value, {"host": str, "dbname": str, "user": str},
                         {"port": 5432, "password": ""}, source=f"<config> key {key!r}")
    if not ep["host"] or not re.fullmatch(r"[A-Za-z0-9_.-]+", ep["host"]):
        raise ConfigError(f"config <config>: {key}.host must be a host name, got {ep['host']!r}")
    _ident(ep["dbname"], f"{key}.dbname")
    _ident(ep["user"], f"{key}.user")
    return ep


def subscription_name(source_host: str) -> str:
    """``dds_from_<source host>`` as an SQL name (sh-db -> dds_from_sh_db)."""
    return SUB_PREFIX + re.sub(r"[^a-z0-9_]", "_", source_host.lower())[:40]


def conninfo(ep: dict, timeout: int = 3) -> str:
    parts = {"host": ep["host"], "port": str(ep["port"]), "dbname": ep["dbname"], "user": ep["user"],
             "password": ep["password"], "connect_timeout": str(timeout)}
    return " ".join(f"{k}='" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for k, v in parts.items())


class SqlError(RuntimeError):
    """psql failed; the message names the database."""


class Dds(Service):
    kind = "dds"

    def __init__(self, cfg: dict) -> None:
        cfg = validate_config(cfg, {"name": str, "ctl_port": int, "source": dict, "destination": dict,
                                    "tables": list},
                              {"interval_s": 1.0, "stats_file": "/var/lib/ccdrill/dds-stats.json",
                               "psql": "psql", "timeout_s": 10.0})
        super().__init__(cfg["name"], ctl_port=cfg["ctl_port"])
        self.source = _endpoint(cfg["source"], "source")
        self.destination = _endpoint(cfg["destination"], "destination")
        if (self.source["host"], self.source["port"]) == (self.destination["host"], self.destination["port"]):
            raise ConfigError("config <config>: source and destination are the same database "
                              f"{self.source['host']}:{self.source['port']}")
        if not cfg["tables"]:
            raise ConfigError("config <config>: tables must name at least one table")
        self.tables = [_ident(t, "tables[]") for t in cfg["tables"]]
        if cfg["interval_s"] <= 0 or cfg["timeout_s"] <= 0:
            raise ConfigError("config <config>: interval_s and timeout_s must be > 0")
        self.interval = float(cfg["interval_s"])
        self.timeout = float(cfg["timeout_s"])
        self.stats_file = cfg["stats_file"]
        self.psql = cfg["psql"]
        self.subscription = subscription_name(self.source["host"])
        self.state = "starting"
        self.error: str | None = None
        self.initial_loads = 0
        self.snapshot: dict = {}
        self.rounds = 0

    # -- SQL

    async def sql(self, ep: dict, text: str, **params: str) -> list[list[str]]:
        try:
            rc, lines, last = await run_psql(self.psql, conninfo(ep), ep["password"], text, params, self.timeout)
        except TimeoutError:
            raise SqlError(f"{ep['host']}/{ep['dbname']}: psql timed out after {self.timeout:g} s") from None
        if rc != 0:
            raise SqlError(f"{ep['host']}/{ep['dbname']}: {last or f'psql exit {rc}'}")
        return [ln.split("|") for ln in lines if ln]

    # -- making the pair what the configuration says

    async def ensure(self) -> None:
        src, dst, sub = self.source, self.destination, self.subscription
        tables = ", ".join(self.tables)
        # The source is a source only: a subscription left from when it was a destination goes.
        await self._drop_subscriptions(src, keep=None)
        have = await self.sql(src, "SELECT count(*) FROM pg_publication WHERE pubname = :'p';\n", p=PUBLICATION)
        if have[0][0] == "0":
            await self.sql(src, f"CREATE PUBLICATION {PUBLICATION} FOR TABLE {tables};\n")
        else:
            await self.sql(src, f"ALTER PUBLICATION {PUBLICATION} SET TABLE {tables};\n")
        # The destination is a destination only: its slots from when it was a source go (inactive ones).
        await self.sql(dst, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                            "WHERE slot_name LIKE 'dds\\_%' AND NOT active;\n")
        await self._drop_subscriptions(dst, keep=sub)
        exists = await self.sql(dst, "SELECT subenabled FROM pg_subscription WHERE subname = :'s';\n", s=sub)
        if not exists:
            # Initial load: the destination is instantiated from the source. A slot of the same name
            # left on the source by an earlier deployment would be reused with a stale position.
            self.state = "initial_load"
            self.initial_loads += 1
            await self.sql(src, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                "WHERE slot_name = :'s' AND NOT active;\n", s=sub)
            await self.sql(dst, f"TRUNCATE {tables};\n")
            await self.sql(dst, f"CREATE SUBSCRIPTION {sub} CONNECTION :'c' PUBLICATION {PUBLICATION} "
                                "WITH (copy_data = true);\n", c=conninfo(src))
            self.log("initial_load", source=src["host"], destination=dst["host"], tables=self.tables)
        elif exists[0][0] != "t":
            await self.sql(dst, f"ALTER SUBSCRIPTION {sub} ENABLE;\n")
            self.log("enabled", subscription=sub)

    async def _drop_subscriptions(self, ep: dict, keep: str | None) -> None:
        rows = await self.sql(ep, "SELECT subname FROM pg_subscription WHERE subname LIKE 'dds\\_%';\n")
        for (name,) in rows:
            if name == keep or not IDENT_RE.fullmatch(name):
                continue
            # Detached from its slot first: the old source may be down, and its slot is dropped there.
            await self.sql(ep, f"ALTER SUBSCRIPTION {name} DISABLE;\n")
            await self.sql(ep, f"ALTER SUBSCRIPTION {name} SET (slot_name = NONE);\n")
            await self.sql(ep, f"DROP SUBSCRIPTION {name};\n")
            self.log("dropped_subscription", host=ep["host"], subscription=name)

    async def disable(self) -> None:
        await self.sql(self.destination, f"ALTER SUBSCRIPTION {self.subscription} DISABLE;\n")
        self.log("disabled", subscription=self.subscription)

    # -- counting

    def _count_sql(self) -> str:
        parts = [f"SELECT '{t}', count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') "
                 f"FROM {t} AS x" for t in self.tables]
        return " UNION ALL ".join(parts) + ";\n"

    async def _side(self, ep: dict) -> dict:
        rows = await self.sql(ep, self._count_sql())
        return {r[0]: {"rows": int(r[1]), "md5": r[2]} for r in rows}

    async def measure(self) -> dict:
        snap: dict = {"source": self.source["host"], "destination": self.destination["host"],
                      "subscription": self.subscription, "ts": time.time()}
        try:
            snap["source_tables"] = await self._side(self.source)
            pos = await self.sql(self.source,
                                 "SELECT pg_current_wal_lsn(), coalesce(confirmed_flush_lsn::text, ''), "
                                 "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, -1), "
                                 "coalesce(active::text, '') FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots "
                                 "ON slot_name = :'s';\n", s=self.subscription)
            snap.update(source_lsn=pos[0][0], confirmed_lsn=pos[0][1] or None, lag_bytes=int(pos[0][2]),
                        slot_active=pos[0][3] == "true")
        except SqlError as e:
            snap["source_error"] = str(e)
        try:
            snap["destination_tables"] = await self._side(self.destination)
            sub = await self.sql(self.destination,
                                 "SELECT s.subenabled, (SELECT count(*) FROM pg_subscription_rel r "
                                 "WHERE r.srsubid = s.oid AND r.srsubstate <> 'r') FROM pg_subscription s "
                                 "WHERE s.subname = :'s';\n", s=self.subscription)
            snap["enabled"] = bool(sub) and sub[0][0] == "t"
            snap["tables_syncing"] = int(sub[0][1]) if sub else None
        except SqlError as e:
            snap["destination_error"] = str(e)
        st, dt = snap.get("source_tables"), snap.get("destination_tables")
        snap["in_sync"] = bool(st) and st == dt
        return snap

    def _state(self, snap: dict) -> str:
        if self.state in ("stopping", "stopped"):
            return self.state
        if "source_error" in snap:
            return "source_unreachable"
        if "destination_error" in snap:
            return "destination_unreachable"
        if snap.get("tables_syncing"):
            return "initial_load"
        return "running" if snap.get("enabled") else "disabled"

    def stats(self) -> dict:
        s = super().stats()
        s.update({"state": self.state, "error": self.error, "initial_loads": self.initial_loads,
                  "rounds": self.rounds, "tables": self.tables, **self.snapshot})
        return s

    def _write_stats(self) -> None:
        tmp = self.stats_file + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.stats(), f, default=str)
            os.replace(tmp, self.stats_file)
        except OSError as e:
            self.log("stats_write_failed", error=repr(e))

    async def run(self) -> None:
        await self.start_ctl(self.ctl_port)
        ensured = False
        while True:
            if not ensured:
                try:
                    await self.ensure()
                    ensured, self.error = True, None
                except SqlError as e:  # a side is down: retry, the stats say why
                    self.error = str(e)
            self.snapshot = await self.measure()
            self.rounds += 1
            self.state = self._state(self.snapshot) if ensured else (
                "source_unreachable" if self.source["host"] in (self.error or "") else "destination_unreachable")
            self._write_stats()
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        self.state = "stopping"
        try:
            await self.disable()
            self.state = "stopped"
        except SqlError as e:
            self.error = f"could not disable the subscription: {e}"
            self.state = "stopped"
        self._write_stats()
        await super().close()


def main(argv: list[str] | None = None) -> None:
    run_service(Dds, argv)


if __name__ == "__main__":
    main()
