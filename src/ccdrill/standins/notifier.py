"""SMS and email senders (plan 2.2.5, 3.4): one stand-in for the call center's sending programs.

Service (``python3 -m ccdrill.standins.notifier --config /etc/ccdrill/notifier.json``):
- ``POST /submit`` on the lab network, ``{"id", "kind": "sms"|"email", "to", "text"[, "subject"]}``:
  the message is written to the outbox (one file per message, written then renamed) and answered.
- A sender loop reads the outbox in order and sends: SMS as ``POST /sms`` to ``sms_gateway``, email
  by SMTP to ``smtp_relay`` (Message-ID ``<id@mail_domain>``). A message leaves the outbox only once
  sent; a failed send is retried (``retry_s``) up to ``max_attempts``, then moved to ``failed/``.
- Control port (127.0.0.1) ``GET /stats``: submitted, sent per kind, emails per relay, pending,
  failed, attempts that failed, the relay and gateway in use.

Client (what the application server runs, ``ccdrill-notify``):
``python3 -m ccdrill.standins.notifier submit --channel /etc/ccdrill/notify-channel.json --kind sms
--to 13800000000 --text ... [--count N] [--tag T]``: submits to the notifier the channel file names
(``{"notifier": "host:port"}``); prints ``{"notifier", "queued": [ids], "errors": [...]}``; exit 0
only when every message was queued, 2 on a bad channel file or bad arguments.
``python3 -m ccdrill.standins.notifier maildir DIR [ID ...]`` (on a mail host): messages in a
Maildir, and which of the ids were delivered. Stdlib only.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import secrets
import smtplib
import socket
import sys
import time
from email.message import EmailMessage

from .common import ConfigError, Service, load_config, parse_hostport, run_service, validate_config
from .smsgw import serve_json

ID_RE = re.compile(r"[A-Za-z0-9._-]{1,80}")
PHONE_RE = re.compile(r"\+?[0-9]{5,20}")
EMAIL_RE = re.compile(r"[A-Za-z0-9._+-]{1,64}@[A-Za-z0-9.-]{1,190}")
MAX_TEXT = 4000
MAX_COUNT = 1000


def check_message(msg: object) -> dict:
    """The fields of one submitted message, or ValueError naming the bad one."""
    if not isinstance(msg, dict):
        raise ValueError("body must be a JSON object")
    if not isinstance(msg.get("id"), str) or not ID_RE.fullmatch(msg["id"]):
        raise ValueError("'id' must be 1-80 letters, digits, '.', '_' or '-'")
    kind = msg.get("kind")
    if kind not in ("sms", "email"):
        raise ValueError("'kind' must be 'sms' or 'email'")
    to = msg.get("to")
    if not isinstance(to, str) or not (PHONE_RE if kind == "sms" else EMAIL_RE).fullmatch(to):
        raise ValueError(f"'to' must be {'a phone number' if kind == 'sms' else 'an email address'}, got {to!r}")
    text = msg.get("text")
    if not isinstance(text, str) or not text or len(text) > MAX_TEXT:
        raise ValueError(f"'text' must be 1-{MAX_TEXT} characters")
    subject = msg.get("subject", "")
    if not isinstance(subject, str) or len(subject) > 200 or "\n" in subject or "\r" in subject:
        raise ValueError("'subject' must be one line of at most 200 characters")
    return {"id": msg["id"], "kind": kind, "to": to, "text": text, "subject": subject}


class Notifier(Service):
    kind = "notifier"

    def __init__(self, cfg: dict) -> None:
        cfg = validate_config(cfg, {"name": str, "listen": str, "ctl_port": int, "sms_gateway": str,
                                    "smtp_relay": str, "mail_from": str, "mail_domain": str},
                              {"spool": "/var/spool/ccdrill-notify", "poll_s": 0.2, "retry_s": 1.0,
                               "max_attempts": 30, "timeout_s": 5.0})
        for key in ("poll_s", "retry_s", "max_attempts", "timeout_s"):
            if cfg[key] <= 0:
                raise ConfigError(f"config <config>: key {key!r} must be > 0, got {cfg[key]!r}")
        if not EMAIL_RE.fullmatch(cfg["mail_from"]):
            raise ConfigError(f"config <config>: key 'mail_from' must be an email address, got {cfg['mail_from']!r}")
        super().__init__(cfg["name"], ctl_port=cfg["ctl_port"])
        self.listen = parse_hostport(cfg["listen"], "listen")
        self.sms_gateway = parse_hostport(cfg["sms_gateway"], "sms_gateway")
        self.smtp_relay = parse_hostport(cfg["smtp_relay"], "smtp_relay")
        self.mail_from, self.mail_domain = cfg["mail_from"], cfg["mail_domain"]
        self.outbox = os.path.join(cfg["spool"], "outbox")
        self.failed_dir = os.path.join(cfg["spool"], "failed")
        self.poll_s, self.retry_s = float(cfg["poll_s"]), float(cfg["retry_s"])
        self.max_attempts, self.timeout_s = int(cfg["max_attempts"]), float(cfg["timeout_s"])
        self.host = socket.gethostname()
        self.submitted = 0
        self.duplicates = 0
        self.rejected = 0
        self.sent = {"sms": 0, "email": 0}
        self.by_relay: dict[str, int] = {}
        self.attempts_failed = 0
        self.moved_to_failed = 0
        self.last_error: str | None = None
        self._attempts: dict[str, tuple[int, float]] = {}  # id -> (attempts, next try)
        self._server: asyncio.base_events.Server | None = None

    # --- the outbox ---------------------------------------------------------------------------------
    def submit(self, body: object, peer: str) -> dict:
        msg = check_message(body)
        path = os.path.join(self.outbox, msg["id"] + ".json")
        if os.path.exists(path):
            self.duplicates += 1
            return {"queued": msg["id"], "duplicate": True, "notifier": self.host}
        tmp = os.path.join(self.outbox, "." + msg["id"] + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({**msg, "submitted": time.time(), "from": peer}, f, ensure_ascii=False)
        os.replace(tmp, path)
        self.submitted += 1
        return {"queued": msg["id"], "duplicate": False, "notifier": self.host}

    def pending(self) -> list[str]:
        return sorted(n for n in os.listdir(self.outbox) if n.endswith(".json") and not n.startswith("."))

    # --- sending ------------------------------------------------------------------------------------
    def send_sms(self, msg: dict) -> None:
        conn = http.client.HTTPConnection(*self.sms_gateway, timeout=self.timeout_s)
        try:
            conn.request("POST", "/sms", body=json.dumps({"id": msg["id"], "to": msg["to"], "text": msg["text"]}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read()[:300]
        finally:
            conn.close()
        if resp.status != 200:
            raise OSError(f"SMS gateway {self.sms_gateway[0]}: HTTP {resp.status} {answer!r}")

    def send_email(self, msg: dict) -> None:
        em = EmailMessage()
        em["From"] = self.mail_from
        em["To"] = msg["to"]
        em["Subject"] = msg["subject"] or "Dacheng Fund notice"
        em["Message-ID"] = f"<{msg['id']}@{self.mail_domain}>"
        em["X-Ccdrill-Notifier"] = self.host
        em.set_content(msg["text"])
        with smtplib.SMTP(*self.smtp_relay, timeout=self.timeout_s, local_hostname=self.host) as smtp:
            smtp.send_message(em)

    def send_one(self, name: str) -> None:
        path = os.path.join(self.outbox, name)
        with open(path, encoding="utf-8") as f:
            msg = json.load(f)
        if msg["kind"] == "sms":
            self.send_sms(msg)
        else:
            self.send_email(msg)
            relay = self.smtp_relay[0]
            self.by_relay[relay] = self.by_relay.get(relay, 0) + 1
        self.sent[msg["kind"]] += 1
        os.unlink(path)

    async def drain_once(self) -> int:
        """Send what is due in the outbox; return how many were sent."""
        done = 0
        for name in self.pending()[:200]:
            attempts, due = self._attempts.get(name, (0, 0.0))
            if due > time.monotonic():
                continue
            try:
                await asyncio.to_thread(self.send_one, name)
                self._attempts.pop(name, None)
                done += 1
            except (OSError, smtplib.SMTPException, ValueError, KeyError) as e:
                self.attempts_failed += 1
                self.last_error = f"{name}: {e}"[:300]
                attempts += 1
                if attempts >= self.max_attempts:
                    os.replace(os.path.join(self.outbox, name), os.path.join(self.failed_dir, name))
                    self.moved_to_failed += 1
                    self._attempts.pop(name, None)
                    self.log("gave_up", message=name, error=str(e)[:200])
                else:
                    self._attempts[name] = (attempts, time.monotonic() + self.retry_s)
        return done

    def stats(self) -> dict:
        s = super().stats()
        s.update({"host": self.host, "listen": f"{self.listen[0]}:{self.listen[1]}",
                  "sms_gateway": f"{self.sms_gateway[0]}:{self.sms_gateway[1]}",
                  "smtp_relay": f"{self.smtp_relay[0]}:{self.smtp_relay[1]}", "submitted": self.submitted,
                  "duplicates": self.duplicates, "rejected": self.rejected, "sent": dict(self.sent),
                  "by_relay": dict(self.by_relay), "pending": len(self.pending()),
                  "failed": len(os.listdir(self.failed_dir)), "attempts_failed": self.attempts_failed,
                  "last_error": self.last_error})
        return s

    async def _serve_api(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_json(self, reader, writer, "/submit", self.submit)

    async def run(self) -> None:
        os.makedirs(self.outbox, exist_ok=True)
        os.makedirs(self.failed_dir, exist_ok=True)
        await self.start_ctl(self.ctl_port)
        self._server = await asyncio.start_server(self._serve_api, *self.listen)
        self.log("listening", address=f"{self.listen[0]}:{self.listen[1]}", relay=self.smtp_relay[0])
        while True:
            await self.drain_once()
            await asyncio.sleep(self.poll_s)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await super().close()


# --- the application server's client ------------------------------------------------------------------
def read_channel(path: str) -> tuple[str, int]:
    cfg = load_config(path, {"notifier": str}, {"site": ""})
    return parse_hostport(cfg["notifier"], "notifier", path)


def submit_all(notifier: tuple[str, int], kind: str, to: str, text: str, subject: str, count: int, tag: str,
               timeout: float = 5.0) -> dict:
    queued, errors = [], []
    for i in range(count):
        mid = f"{tag}-{i:04d}-{secrets.token_hex(4)}"
        body = {"id": mid, "kind": kind, "to": to, "text": f"{text} ({i + 1}/{count})", "subject": subject}
        conn = http.client.HTTPConnection(*notifier, timeout=timeout)
        try:
            conn.request("POST", "/submit", body=json.dumps(body, ensure_ascii=False).encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = json.loads(resp.read().decode() or "{}")
            if resp.status == 200:
                queued.append(mid)
            else:
                errors.append({"id": mid, "error": answer.get("error", f"HTTP {resp.status}")})
        except (OSError, http.client.HTTPException, ValueError) as e:
            errors.append({"id": mid, "error": str(e)[:200]})
        finally:
            conn.close()
    return {"notifier": f"{notifier[0]}:{notifier[1]}", "kind": kind, "queued": queued, "errors": errors}


def client(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ccdrill-notify", description="submit messages to the notifier of the channel")
    p.add_argument("--channel", default="/etc/ccdrill/notify-channel.json")
    p.add_argument("--kind", choices=["sms", "email"], required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--subject", default="")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--tag", default="msg")
    a = p.parse_args(argv)
    if not 1 <= a.count <= MAX_COUNT or not ID_RE.fullmatch(a.tag):
        print(f"ccdrill-notify: --count must be 1-{MAX_COUNT} and --tag letters/digits/._-", file=sys.stderr)
        return 2
    try:
        check_message({"id": "x", "kind": a.kind, "to": a.to, "text": a.text, "subject": a.subject})
        notifier = read_channel(a.channel)
    except (ValueError, ConfigError) as e:
        print(f"ccdrill-notify: {e}", file=sys.stderr)
        return 2
    out = submit_all(notifier, a.kind, a.to, a.text, a.subject, a.count, a.tag)
    print(json.dumps(out, ensure_ascii=False))
    return 0 if not out["errors"] else 1


def maildir_ids(maildir: str) -> list[str]:
    """The Message-IDs (without <>) of every message delivered to a Maildir (new/ and cur/)."""
    ids = []
    for sub in ("new", "cur"):
        folder = os.path.join(maildir, sub)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:
                head = f.read(65536).split(b"\n\n", 1)[0].decode("utf-8", "replace")
            m = re.search(r"(?im)^message-id:\s*<([^>]+)>", head)
            ids.append(m.group(1) if m else "")
    return ids


def maildir_report(argv: list[str]) -> int:
    """``maildir DIR [ID ...]``: how many messages DIR holds, and which of the given ids (the part
    before '@' of the Message-ID) are among them."""
    if not argv:
        print("usage: python3 -m ccdrill.standins.notifier maildir DIR [ID ...]", file=sys.stderr)
        return 2
    delivered = maildir_ids(argv[0])
    local = {i.split("@", 1)[0] for i in delivered}
    print(json.dumps({"maildir": argv[0], "total": len(delivered),
                      "found": [i for i in argv[1:] if i in local]}))
    return 0


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "submit":
        sys.exit(client(args[1:]))
    if args and args[0] == "maildir":
        sys.exit(maildir_report(args[1:]))
    run_service(Notifier, args)


if __name__ == "__main__":
    main()
