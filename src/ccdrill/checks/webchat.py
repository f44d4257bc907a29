"""Web chat checks (MIG-CS1, MIG-CS2, POST-CS): what customers get through the website's entry, and
what each server's database holds, counted on the lab.

A customer is a script run on a lab host (the carrier's, as in the notice check): it reads the
website's home page through the lab's DNS, follows the web-chat entry, posts a message and reads the
conversation back. The databases are read with `mysql` on each server (row counts, highest id and a
checksum of every message in id order, the same as the migration tool computes).
"""

from __future__ import annotations

import json
import threading
import time

from ..lab.world import Lab, LabError

DB = "webchat"
STOP_FILE = "/tmp/ccdrill-webchat-writer.stop"

# Run on a lab host with its own python3: one customer session through the website's entry.
CUSTOMER = r"""
import json, re, sys, time, urllib.parse, urllib.request
website, conv, body, count, interval, max_s, stop = sys.argv[1:8]
count, interval, max_s = int(count), float(interval), float(max_s)
def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()
def entry():
    page = get(f"http://{website}/")
    m = re.search(r'id="webchat-entry" href="([^"]+)"', page)
    if not m:
        raise RuntimeError("no web-chat entry on the home page")
    return m.group(1)
out, t0, i = [], time.monotonic(), 0
while i < count and time.monotonic() - t0 < max_s:
    if stop != "-" and __import__("os").path.exists(stop):
        break
    i += 1
    rec = {"n": i}
    try:
        url = entry()
        rec["entry"] = url
        page = get(url)
        m = re.search(r'id="webchat" data-version="([^"]+)" data-site="([^"]+)"', page)
        rec["page"] = {"version": m.group(1), "site": m.group(2)} if m else None
        data = urllib.parse.urlencode({"op": "post", "conversation": conv, "author": "customer",
                                       "body": f"{body} #{i}"}).encode()
        with urllib.request.urlopen(url + "api.php", data, timeout=5) as r:
            rec["posted"] = json.loads(r.read().decode())
    except Exception as e:
        rec["error"] = str(e)[:300]
    out.append(rec)
    if i < count:
        time.sleep(interval)
if count == 1 and out and "posted" in out[0]:
    q = urllib.parse.urlencode({"op": "messages", "conversation": conv})
    out[0]["read_back"] = json.loads(get(out[0]["entry"] + "api.php?" + q))["messages"]
print(json.dumps(out, ensure_ascii=False))
"""


def _customer(lab: Lab, from_host: str, website: str, conv: str, body: str, count: int, interval: float,
              max_s: float, stop: str = "-") -> list[dict]:
    rc, out, err = lab.exec(from_host, ["python3", "-c", CUSTOMER, website, conv, body, str(count), str(interval),
                                        str(max_s), stop], max_s + 30)
    if rc != 0:
        raise LabError(f"{from_host}: the customer's script failed (rc {rc}): {(err or out).strip()[-800:]}")
    return json.loads(out)


def chat_once(lab: Lab, from_host: str, website: str, conv: str, body: str) -> dict:
    """One customer: home page -> entry -> the chat page -> post -> read the conversation back."""
    return _customer(lab, from_host, website, conv, body, 1, 0, 30)[0]


class Writer:
    """Customers chatting through the website's entry in the background (bounded in count and time)
    until `stop()`: every post is kept with the server that acknowledged it."""

    def __init__(self, lab: Lab, from_host: str, website: str, conv: str, interval: float = 0.5,
                 max_posts: int = 400, max_s: float = 300):
        self.lab, self.host = lab, from_host
        self.posts: list[dict] = []
        self.error: Exception | None = None
        lab.exec(from_host, ["rm", "-f", STOP_FILE], 10)

        def run():
            try:
                self.posts = _customer(lab, from_host, website, conv, "chatting during the migration", max_posts,
                                       interval, max_s, STOP_FILE)
            except Exception as exc:  # noqa: BLE001 (reported by stop())
                self.error = exc

        self.thread = threading.Thread(target=run, name="webchat-writer", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 60) -> list[dict]:
        self.lab.exec(self.host, ["touch", STOP_FILE], 10)
        self.thread.join(timeout)
        self.lab.exec(self.host, ["rm", "-f", STOP_FILE], 10)
        if self.thread.is_alive():
            raise LabError("the customers' writer did not stop")
        if self.error is not None:
            raise self.error
        return self.posts


def _mysql(lab: Lab, host: str, sql: str) -> list[list[str]]:
    rc, out, err = lab.exec(host, ["mysql", "-N", "-B", DB, "-e", sql], 60)
    if rc != 0:
        raise LabError(f"{host}/{DB}: {err.strip() or out.strip()}")
    return [line.split("\t") for line in out.splitlines()]


def summary(lab: Lab, host: str, where: str = "1=1") -> dict:
    """Rows, highest id and checksum of the messages on `host` (optionally of a subset)."""
    row = _mysql(lab, host, "SET SESSION group_concat_max_len = 1073741824; SELECT COUNT(*), COALESCE(MAX(id), 0), "
                 "COALESCE(SHA2(GROUP_CONCAT(CONCAT_WS('|', id, uid, conversation, author, body, "
                 "DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s.%f')) ORDER BY id SEPARATOR '\\n'), 256), '') "
                 f"FROM messages WHERE {where}")[0]
    return {"messages": int(row[0]), "max_id": int(row[1]), "checksum": row[2]}


def uids(lab: Lab, host: str, wanted: list[str]) -> set[str]:
    """Which of the `wanted` message uids the server on `host` holds."""
    if not wanted:
        return set()
    if not all(len(u) == 32 and u.isalnum() for u in wanted):
        raise ValueError(f"not message uids: {wanted[:5]}")
    rows = _mysql(lab, host, "SELECT uid FROM messages WHERE uid IN (" + ",".join(f"'{u}'" for u in wanted) + ")")
    return {r[0] for r in rows}


def schema_version(lab: Lab, host: str) -> int:
    return int(_mysql(lab, host, "SELECT v FROM schema_meta WHERE k = 'schema_version'")[0][0])


def resolve(lab: Lab, from_host: str, name: str) -> str:
    rc, out, err = lab.exec(from_host, ["python3", "-c", "import socket,sys;print(socket.gethostbyname(sys.argv[1]))",
                                        name], 15)
    if rc != 0:
        raise LabError(f"{from_host}: {name} does not resolve: {err.strip()[-300:]}")
    return out.strip()


def entry_url(lab: Lab, from_host: str, website: str) -> str | None:
    """The href of the website home page's web-chat entry, as a customer on `from_host` reads it."""
    script = ("import re,sys,urllib.request\npage=urllib.request.urlopen(f'http://{sys.argv[1]}/', timeout=5)"
              ".read().decode()\nm=re.search(r'id=\"webchat-entry\" href=\"([^\"]+)\"', page)\n"
              "print(m.group(1) if m else '')")
    rc, out, err = lab.exec(from_host, ["python3", "-c", script, website], 20)
    if rc != 0:
        raise LabError(f"{from_host}: the website {website} did not answer: {err.strip()[-300:]}")
    return out.strip() or None


def api(lab: Lab, from_host: str, url: str) -> dict:
    """GET a web chat's JSON API from a lab host; {'error': ...} when it does not answer."""
    script = ("import json,sys,urllib.request\ntry:\n    print(urllib.request.urlopen(sys.argv[1], timeout=5)"
              ".read().decode())\nexcept Exception as e:\n    print(json.dumps({'error': str(e)[:300]}))")
    rc, out, err = lab.exec(from_host, ["python3", "-c", script, url], 20)
    if rc != 0:
        raise LabError(f"{from_host}: {url}: {err.strip()[-300:]}")
    return json.loads(out)


def wait_until(fn, timeout: float = 20, every: float = 0.5):
    """Poll `fn()` until it returns something true (bounded); return the last value."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(every)
        value = fn()
    return value
