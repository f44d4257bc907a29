"""testinfra helpers in one place: reach a lab host by its inventory name, read the inventory."""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path

import testinfra

from ccdrill.lab.inventory import Inventory, load_inventory

ROOT = Path(__file__).resolve().parents[2]


def lab_name() -> str:
    return os.environ.get("CCDRILL_LAB", "main")


@cache
def inventory() -> Inventory:
    return load_inventory(ROOT / "inventory" / "lab", ROOT / "images")


@cache
def host(name: str):
    """The testinfra host of a lab host (Docker backend; the container name carries the lab name)."""
    return testinfra.get_host(f"docker://ccdrill-{lab_name()}-{name}")


def ctl(name: str, port: int, request: dict | None = None) -> dict:
    """Ask a stand-in's control endpoint (GET /stats, or POST /ctl with `request`)."""
    cmd = f"python3 -m ccdrill.standins.ctl {port}"
    if request is not None:
        cmd += " '" + json.dumps(request) + "'"
    out = host(name).run(f"PYTHONPATH=/opt/ccdrill {cmd}")
    assert out.rc == 0, f"{name}:{port} ctl {request}: {out.stderr or out.stdout}"
    return json.loads(out.stdout)


def ping(src: str, dst: str, count: int = 5, wait_s: int = 1) -> dict:
    """Ping from one lab host to another; return sent, received and the min/avg RTT in ms."""
    out = host(src).run(f"ping -n -q -i 0.2 -c {count} -W {wait_s} {dst}").stdout
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", out).groups())
    m = re.search(r"= ([\d.]+)/([\d.]+)/", out)
    return {"sent": sent, "received": received,
            "min_ms": float(m.group(1)) if m else None, "avg_ms": float(m.group(2)) if m else None}
