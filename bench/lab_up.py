"""Lab start times: cold (no lab images: debootstrap + every Dockerfile) and warm (images cached by
recipe hash), each to the point where every host answers (supervisord) and then with the lab's own
playbook (dns, WAN router, routes). Prints seconds and the warm/cold ratio.

Usage: python bench/lab_up.py [--cold]   (--cold removes the ccdrill/* images first: minutes.)
It uses its own lab name and subnet prefix, and tears its lab down at the end."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ccdrill.cli import run_playbook  # noqa: E402
from ccdrill.lab.engine import ensure_engine  # noqa: E402
from ccdrill.lab.inventory import load_inventory  # noqa: E402
from ccdrill.lab.world import Lab  # noqa: E402

LAB, PREFIX = "benchup", "10.237"


def one_start(client) -> tuple[float, float]:
    os.environ["CCDRILL_SUBNET_PREFIX"] = PREFIX
    lab = Lab(LAB, load_inventory(ROOT / "inventory" / "lab", ROOT / "images"), client, ROOT / "images")
    try:
        t0 = time.monotonic()
        lab.create(log=lambda *_: None)
        hosts_up = time.monotonic() - t0
        rc = run_playbook("lab.yml", LAB)
        if rc != 0:
            raise SystemExit(f"lab.yml failed ({rc})")
        return hosts_up, time.monotonic() - t0
    finally:
        lab.down()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="remove the lab images first (a full rebuild)")
    args = ap.parse_args()
    client = ensure_engine()
    rows = []
    if args.cold:
        for img in client.images.list(name="ccdrill/*"):
            for tag in img.tags:
                client.images.remove(tag, force=True)
        rows.append(("cold", *one_start(client)))
    rows.append(("warm", *one_start(client)))
    print(f"{'start':6} {'hosts up (s)':>13} {'lab ready (s)':>14}")
    for name, up, ready in rows:
        print(f"{name:6} {up:13.1f} {ready:14.1f}")
    if len(rows) == 2:
        print(f"warm/cold ratio: hosts up {rows[1][1] / rows[0][1]:.3f}, lab ready {rows[1][2] / rows[0][2]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
