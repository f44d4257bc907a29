"""What the agents do to the data tier: record work orders through the application servers.

`Writer` runs a bounded loop on the agents' side of the lab (the seats' host, in Shanghai): it posts
work orders with ids of its own (``<tag>-000001`` ...) to the application server behind a login entry
and records every attempt with its outcome. When an entry fails, the agent logs in through the other
site's entry (plan 3.5), so writes resume wherever an application server answers. An order is
*acknowledged* only when the server answered ``ok`` (the database committed it); a timed-out attempt
is indeterminate, and a refused one failed. The loop stops after `count` attempts, after `max_s`
seconds, or when the control side asks (a stop file), whichever comes first.

The history (one JSON object per attempt) is what ccdrill.checks.data turns into verdicts.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
from dataclasses import dataclass, field

from ..lab.world import Lab, LabError

MAX_WRITES = 20000
MAX_SECONDS = 600.0
TAG_RE = re.compile(r"[A-Za-z0-9]{1,20}")

# Runs inside the lab (stdlib only). argv[1]: JSON {entries, port, tag, count, max_s, pause_s, stop_file}.
_SCRIPT = r"""
import json, os, sys, time, urllib.error, urllib.request
cfg = json.loads(sys.argv[1])
entries, port, tag = cfg["entries"], cfg["port"], cfg["tag"]
deadline = time.time() + cfg["max_s"]
at = 0
for i in range(1, cfg["count"] + 1):
    if time.time() > deadline or os.path.exists(cfg["stop_file"]):
        break
    entry = entries[at % len(entries)]
    oid = "%s-%06d" % (tag, i)
    body = json.dumps({"id": oid, "agent": "agent%02d" % (i % 30 + 1), "note": "call note %d" % i}).encode()
    rec = {"i": i, "id": oid, "entry": entry, "t0": time.time()}
    req = urllib.request.Request("http://%s:%d/orders" % (entry, port), data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=cfg["timeout_s"]) as r:
            ans = json.loads(r.read().decode())
        rec.update(outcome="ok" if ans.get("ok") else "fail", db=ans.get("db"), app=ans.get("app"))
    except urllib.error.HTTPError as e:
        try:
            ans = json.loads(e.read().decode())
        except Exception:
            ans = {}
        rec.update(outcome="fail", error="HTTP %d %s" % (e.code, ans.get("error", ""))[:200])
    except (TimeoutError, OSError) as e:
        timed_out = "timed out" in str(e)
        rec.update(outcome="unknown" if timed_out else "fail", error=str(e)[:200])
    rec["t1"] = time.time()
    print(json.dumps(rec), flush=True)
    if rec["outcome"] != "ok":
        at += 1  # the agent logs in through the other site's entry
        time.sleep(cfg["retry_s"])
    else:
        time.sleep(cfg["pause_s"])
"""


@dataclass
class WriteHistory:
    tag: str
    records: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def acked(self) -> list[str]:
        return [r["id"] for r in self.records if r["outcome"] == "ok"]

    def summary(self) -> dict:
        out: dict[str, int] = {"attempted": len(self.records)}
        for r in self.records:
            out[r["outcome"]] = out.get(r["outcome"], 0) + 1
        return out


class Writer:
    """A bounded writer in the background; `stop()` ends it and returns the history."""

    def __init__(self, lab: Lab, host: str, entries: list[str], port: int, tag: str, *, count: int = 5000,
                 max_s: float = 240.0, pause_s: float = 0.05, retry_s: float = 0.2, timeout_s: float = 3.0):
        if not TAG_RE.fullmatch(tag):
            raise ValueError(f"writer tag must be 1-20 letters/digits, got {tag!r}")
        if not entries:
            raise ValueError("the writer needs at least one login entry")
        if not 0 < count <= MAX_WRITES or not 0 < max_s <= MAX_SECONDS:
            raise ValueError(f"writer bounds: 1..{MAX_WRITES} writes and up to {MAX_SECONDS:g} s, "
                             f"got {count} and {max_s:g}")
        self.lab, self.host, self.tag = lab, host, tag
        self.stop_file = f"/tmp/ccdrill-writer-{tag}.stop"
        self.cfg = {"entries": entries, "port": port, "tag": tag, "count": count, "max_s": max_s,
                    "pause_s": pause_s, "retry_s": retry_s, "timeout_s": timeout_s, "stop_file": self.stop_file}
        self.max_s = max_s
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"writer-{tag}")
        self._future: concurrent.futures.Future | None = None

    def start(self) -> Writer:
        self.lab.exec(self.host, ["rm", "-f", self.stop_file], 10)
        self._future = self._pool.submit(self.lab.exec, self.host, ["python3", "-c", _SCRIPT, json.dumps(self.cfg)],
                                         self.max_s + 30)
        return self

    def stop(self) -> WriteHistory:
        if self._future is None:
            raise RuntimeError("the writer was never started")
        hist = WriteHistory(self.tag)
        try:
            self.lab.exec(self.host, ["touch", self.stop_file], 10)
        except LabError as exc:
            hist.error = f"could not ask the writer to stop: {exc}"
        try:
            rc, out, err = self._future.result(timeout=self.max_s + 60)
        except Exception as exc:  # noqa: BLE001  (reported in the history, the check fails on it)
            hist.error = f"writer on {self.host} failed: {exc}"
            return hist
        finally:
            self._pool.shutdown(wait=False)
        for line in out.splitlines():
            try:
                hist.records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        if rc != 0:
            hist.error = f"writer on {self.host} exited {rc}: {err.strip()[-500:]}"
        return hist
