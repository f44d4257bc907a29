"""SMS and email checks (MIG-NT1, MIG-NT2, POST-NT): messages sent the way the application sends
them (`ccdrill-notify` on an application server, through the sender its channel file names) and
counted where they arrive: the SMS gateway's count per sender address, and the Message-IDs delivered
into each mail host's Maildir.
"""

from __future__ import annotations

import json
import time

from ..lab.world import Lab, LabError

CHANNEL = "/etc/ccdrill/notify-channel.json"
PY = ["env", "PYTHONPATH=/opt/ccdrill", "python3", "-m"]


def send(lab: Lab, app_host: str, kind: str, count: int, tag: str) -> dict:
    """Submit `count` messages of `kind` from the application server; {"notifier", "queued", "errors"}."""
    to = "13800000000" if kind == "sms" else f"customer-{tag}@{lab.inv.vars.get('lab_domain', 'lab.ccdrill')}"
    rc, out, err = lab.exec(app_host, ["ccdrill-notify", "--kind", kind, "--to", to, "--count", str(count),
                                       "--tag", tag, "--text", "Dacheng Fund notice", "--subject", "Notice"], 60)
    if rc not in (0, 1) or not out.strip():
        raise LabError(f"{app_host}: ccdrill-notify failed (rc {rc}): {(err or out).strip()[-500:]}")
    return json.loads(out)


def channel(lab: Lab, app_host: str) -> dict:
    rc, out, err = lab.exec(app_host, ["cat", CHANNEL], 10)
    if rc != 0:
        raise LabError(f"{app_host}:{CHANNEL}: {err.strip()}")
    return json.loads(out)


def sms_senders(lab: Lab, gateway: str, ctl_port: int, ids: list[str]) -> dict[str, str | None]:
    """The sender address the SMS gateway counted for each id (None: not received)."""
    return lab.ctl(gateway, ctl_port, {"op": "lookup", "ids": ids})["senders"]


def delivered(lab: Lab, mail_host: str, maildir: str, ids: list[str]) -> dict:
    """{"total": messages in the Maildir, "found": which of `ids` were delivered there}."""
    rc, out, err = lab.exec(mail_host, PY + ["ccdrill.standins.notifier", "maildir", maildir, *ids], 30)
    if rc != 0:
        raise LabError(f"{mail_host}:{maildir}: {(err or out).strip()[-300:]}")
    return json.loads(out)


def stats(lab: Lab, host: str, ctl_port: int) -> dict:
    return lab.ctl(host, ctl_port, timeout=15)


def wait_arrived(lab: Lab, gateway: str, ctl_port: int, sms: list[str], mail_host: str | None, maildir: str,
                 emails: list[str], timeout: float = 30) -> tuple[dict, dict]:
    """Poll (bounded) until every SMS id is counted and every email delivered; return what was seen."""
    deadline = time.monotonic() + timeout
    while True:
        senders = sms_senders(lab, gateway, ctl_port, sms) if sms else {}
        mail = delivered(lab, mail_host, maildir, emails) if mail_host else {"found": [], "total": 0}
        if (all(senders.values()) and len(mail["found"]) == len(emails)) or time.monotonic() > deadline:
            return senders, mail
        time.sleep(0.5)


def same_files(lab: Lab, a: str, b: str, paths: list[str]) -> dict[str, bool]:
    """For each path, whether hosts `a` and `b` hold the same bytes (sha256)."""
    def sums(host: str) -> dict[str, str]:
        rc, out, err = lab.exec(host, ["sha256sum", *paths], 20)
        if rc not in (0, 1):
            raise LabError(f"{host}: sha256sum: {err.strip()}")
        return {line.split()[1]: line.split()[0] for line in out.splitlines() if line.strip()}

    sa, sb = sums(a), sums(b)
    return {p: p in sa and sa.get(p) == sb.get(p) for p in paths}


def read_json(lab: Lab, host: str, path: str) -> dict:
    rc, out, err = lab.exec(host, ["cat", path], 10)
    if rc != 0:
        raise LabError(f"{host}:{path}: {err.strip()}")
    return json.loads(out)
