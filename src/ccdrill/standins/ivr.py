"""IVR stand-in (docs/telephony.md, "IVR").

For each ``ivr.session`` from KCXP it "plays" the prompts (the announcement first when set),
then runs the self-service query through KCBP: pub ``kcbp.req {"id","account"}`` and wait up to
2 s for the ``kcbp.rep`` with the same id. Sessions run concurrently (one task each), so a slow
database never delays the prompts of the next caller.
A session without an account (no X-Fund-Account header) plays its prompts and skips the query
(counted ``queries.skipped``): there is nothing to look up.
Stdlib only (runs in the lab hosts).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter

from .common import ConfigError, CtlError, KcxpClient, Service, parse_hostport, run_service, validate_config

REPLY_TIMEOUT_S = 2.0
MAX_PENDING = 10000


class Ivr(Service):
    kind = "ivr"

    def __init__(self, cfg: dict) -> None:
        cfg = validate_config(cfg, {"name": str, "kcxp": str, "ctl_port": int},
                              {"prompts": ["welcome", "menu"], "announcement": None,
                               "reply_timeout_ms": 2000})
        if not all(isinstance(p, str) and p for p in cfg["prompts"]):
            raise ConfigError(f"config <config>: key 'prompts' must be a list of names, "
                              f"got {cfg['prompts']!r}")
        if cfg["announcement"] is not None and not (isinstance(cfg["announcement"], str)
                                                    and cfg["announcement"]):
            raise ConfigError(f"config <config>: key 'announcement' must be a name or null, "
                              f"got {cfg['announcement']!r}")
        super().__init__(cfg["name"], ctl_port=cfg["ctl_port"])
        self.kcxp_addr = parse_hostport(cfg["kcxp"], "kcxp")
        self.prompts: list[str] = list(cfg["prompts"])
        self.announcement: str | None = cfg["announcement"]
        self.reply_timeout_s = cfg["reply_timeout_ms"] / 1000.0
        self.kcxp = KcxpClient(*self.kcxp_addr, name=f"{self.name}-kcxp")
        self.sessions = 0
        self.played: Counter[str] = Counter()
        self.queries = {"ok": 0, "failed": 0, "timeout": 0, "skipped": 0, "not_sent": 0}
        self.last_query: dict | None = None
        self.last_session: dict | None = None
        self.malformed = 0
        self.stray_replies = 0
        self._pending: dict[str, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()

    def stats(self) -> dict:
        s = super().stats()
        s.update({
            "prompts_configured": self.prompts,
            "announcement": self.announcement,
            "sessions": self.sessions,
            "active_sessions": len(self._tasks),
            "prompts": dict(self.played),
            "queries": dict(self.queries),
            "last_query": self.last_query,
            "last_session": self.last_session,
            "malformed": self.malformed,
            "stray_replies": self.stray_replies,
            "kcxp_connected": self.kcxp.connected,
            "kcxp": self.kcxp.stats(),
        })
        return s

    async def handle_ctl(self, req: dict) -> dict:
        if req.get("op") == "announcement":
            name = req.get("name")
            if name is not None and not (isinstance(name, str) and name):
                raise CtlError("announcement: 'name' must be a prompt name or null")
            self.announcement = name
            return {"announcement": self.announcement}
        return await super().handle_ctl(req)

    # -- KCXP callbacks (sync, from the client's read loop)

    def _on_session(self, _topic: str, msg: dict) -> None:
        if len(self._tasks) >= MAX_PENDING:
            self.malformed += 1  # a flood; a real IVR would not pick up either
            return
        task = asyncio.get_running_loop().create_task(self._session(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_reply(self, _topic: str, msg: dict) -> None:
        fut = self._pending.get(str(msg.get("id")))
        if fut is None or fut.done():
            self.stray_replies += 1  # another IVR's query, or one we stopped waiting for
            return
        fut.set_result(msg)

    # -- one caller

    async def _session(self, msg: dict) -> None:
        self.sessions += 1
        order = ([self.announcement] if self.announcement else []) + self.prompts
        for prompt in order:
            self.played[prompt] += 1
        account = msg.get("account")
        self.last_session = {"call_id": msg.get("call_id"), "board": msg.get("board"),
                             "ipc": msg.get("ipc"), "user": msg.get("user"), "account": account,
                             "prompts": order, "ts": time.time()}
        self.log("session", call_id=msg.get("call_id"), prompts=order, account=account)
        if account is None or account == "":
            self.queries["skipped"] += 1
            return
        await self._query(str(account))

    async def _query(self, account: str) -> None:
        qid = uuid.uuid4().hex
        fut = asyncio.get_running_loop().create_future()
        self._pending[qid] = fut
        try:
            if not self.kcxp.publish("kcbp.req", {"id": qid, "account": account}):
                self.queries["not_sent"] += 1
                self.queries["failed"] += 1
                self._record(account, False, [], None, "kcxp not connected")
                return
            try:
                rep = await asyncio.wait_for(fut, self.reply_timeout_s)
            except TimeoutError:
                self.queries["timeout"] += 1
                self.queries["failed"] += 1
                self._record(account, False, [], None, f"no kcbp.rep within {self.reply_timeout_s:g} s")
                return
        finally:
            self._pending.pop(qid, None)
        ok = rep.get("ok") is True
        rows = rep.get("rows") if isinstance(rep.get("rows"), list) else []
        self.queries["ok" if ok else "failed"] += 1
        self._record(account, ok, rows, rep.get("db"), None if ok else rep.get("error"))

    def _record(self, account: str, ok: bool, rows: list, db: object, error: object) -> None:
        self.last_query = {"account": account, "ok": ok, "rows": rows, "db": db, "ts": time.time()}
        if error is not None:
            self.last_query["error"] = error
        self.log("query", account=account, ok=ok, db=db, rows=len(rows), error=error)

    async def run(self) -> None:
        await self.start_ctl(self.ctl_port)
        self.kcxp.subscribe("kcbp.rep", self._on_reply)
        self.kcxp.subscribe("ivr.session", self._on_session)
        await self.kcxp.start()
        await asyncio.Event().wait()

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        await self.kcxp.close()
        await super().close()


def main(argv: list[str] | None = None) -> None:
    run_service(Ivr, argv)


if __name__ == "__main__":
    main()
