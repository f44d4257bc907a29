"""`ccdrill`: the operator's entry point to the lab, the plan's playbooks and the drill."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .lab.inventory import InventoryError, load_inventory


def project_root() -> Path:
    """The checkout holding inventory/, playbooks/ and images/ (CCDRILL_ROOT, else upwards from cwd)."""
    env = os.environ.get("CCDRILL_ROOT")
    if env:
        return Path(env).resolve()
    for p in [Path.cwd(), *Path.cwd().parents]:
        if (p / "playbooks").is_dir() and (p / "inventory").is_dir():
            return p
    return Path(__file__).resolve().parents[2]


def inventory_dir(explicit: Path | None = None) -> Path:
    """The inventory in use: --inventory, else $CCDRILL_INVENTORY, else the embedded lab's."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("CCDRILL_INVENTORY")
    return Path(env) if env else project_root() / "inventory" / "lab"


def lab_name(args) -> str:
    return args.lab or os.environ.get("CCDRILL_LAB") or "main"


def _lab(args):
    from .lab.engine import ensure_engine
    from .lab.world import Lab

    root = project_root()
    inv = load_inventory(inventory_dir(args.inventory), root / "images")
    return Lab(lab_name(args), inv, ensure_engine(), root / "images")


def _playbook_cmd(playbook: str, lab: str, inventory: Path | None, extra: list[str] | None):
    root = project_root()
    inv_dir = inventory_dir(inventory)
    inv = load_inventory(inv_dir, root / "images")
    extra = list(extra or [])
    if inv.without:
        # A lab built without some groups: their hosts do not exist, so no play may reach them.
        if any(a in ("--limit", "-l") for a in extra):
            i = max(i for i, a in enumerate(extra) if a in ("--limit", "-l")) + 1
            extra[i] = inv.limit(extra[i])
        else:
            extra += ["--limit", inv.limit()]
    # Absolute paths: a run started from molecule inherits its relative ANSIBLE_ROLES_PATH.
    env = dict(os.environ, CCDRILL_LAB=lab, ANSIBLE_CONFIG=str(root / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_ROLES_PATH=str(root / "roles"))
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    cmd = ["ansible-playbook", "-i", str(inv_dir), str(root / "playbooks" / playbook), *extra]
    return cmd, env, root


def run_playbook(playbook: str, lab: str, inventory: Path | None = None, extra: list[str] | None = None) -> int:
    """Validate the inventory, then run one of the plan's playbooks against the lab (output to the terminal)."""
    cmd, env, root = _playbook_cmd(playbook, lab, inventory, extra)
    return subprocess.run(cmd, env=env, cwd=root).returncode


@dataclass
class PlaybookRun:
    playbook: str
    rc: int
    changed: int
    failed: int
    output: str
    seconds: float

    def mentions(self, text: str) -> bool:
        return text in self.output


def play(playbook: str, lab: str, extra: list[str] | None = None, inventory: Path | None = None) -> PlaybookRun:
    """Run a playbook and keep what it said: exit code, the PLAY RECAP's changed/failed totals, output."""
    cmd, env, root = _playbook_cmd(playbook, lab, inventory, extra)
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
    out = r.stdout + r.stderr
    recap = out[out.rfind("PLAY RECAP"):] if "PLAY RECAP" in out else ""
    changed = sum(int(n) for n in re.findall(r"changed=(\d+)", recap))
    failed = sum(int(n) for n in re.findall(r"failed=(\d+)", recap))
    return PlaybookRun(playbook, r.returncode, changed, failed, out, round(time.monotonic() - t0, 1))


def cmd_inventory(args) -> int:
    root = project_root()
    inv = load_inventory(args.path or inventory_dir(args.inventory), root / "images")
    print(f"{inv.path}: ok: {len(inv.sites)} sites, {len(inv.hosts)} hosts, {len(inv.groups)} groups")
    return 0


def cmd_engine(args) -> int:
    from .lab.engine import ensure_engine

    info = ensure_engine().info()
    print(f"docker engine {info.get('ServerVersion')} ({info.get('Driver')}, {info.get('CgroupDriver')})")
    return 0


def cmd_images(args) -> int:
    from .lab.engine import ensure_engine
    from .lab.images import ensure_images

    root = project_root()
    inv = load_inventory(inventory_dir(args.inventory), root / "images")
    tags = ensure_images(ensure_engine(), root / "images", {h.image for h in inv.hosts.values()})
    for kind, tag in sorted(tags.items()):
        print(f"{kind:8} {tag}")
    return 0


def cmd_lab(args) -> int:
    lab = _lab(args)
    if args.action == "down":
        removed = lab.down()
        print(f"lab {lab.name}: removed {removed['containers']} containers, {removed['networks']} networks, "
              f"{removed['volumes']} volumes")
        return 0
    if args.action == "status":
        states = lab.status()
        if not states:
            print(f"lab {lab.name}: not running")
            return 1
        for h in states:
            addrs = ", ".join(f"{n.rsplit('-', 1)[-1]}={a}" for n, a in sorted(h.addresses.items()))
            print(f"{h.name:12} {h.status:8} {addrs}")
        return 0
    t0 = time.monotonic()
    took = lab.create()
    print(f"lab {lab.name}: {len(lab.inv.hosts)} hosts on {len(lab.inv.sites)} sites created in {took:.1f} s")
    if args.action == "create":
        return 0
    rc = run_playbook("lab.yml", lab.name, args.inventory)
    if rc == 0:
        print(f"lab {lab.name}: up in {time.monotonic() - t0:.1f} s (dns, wan {lab.inv.vars.get('wan_delay_ms')} ms)")
    return rc


def _callcenter(args):
    from .lab.callcenter import CallCenter

    lab = _lab(args)
    return CallCenter(lab, inventory_dir(args.inventory))


def _verdict(report: dict) -> int:
    print(json.dumps(report, indent=2, default=str))
    return 0 if report.get("ok") else 1


def cmd_basic_calls(args) -> int:
    from .checks.basic import basic_calls

    return _verdict(basic_calls(_callcenter(args)))


def cmd_dialtest(args) -> int:
    from .checks.basic import dial_test

    return _verdict(dial_test(_callcenter(args)))


def cmd_monitor(args) -> int:
    from .checks.monitor import monitor

    return _verdict(monitor(_callcenter(args), args.calls))


def cmd_runbook(args) -> int:
    from .lab.runbook import RunbookError, read_ledger, record_by_hand

    lab = _lab(args)
    if args.action == "show":
        print(json.dumps(read_ledger(lab), indent=2))
        return 0
    try:
        added = record_by_hand(lab, args.step, args.by or "", args.reason or "", project_root())
    except RunbookError as exc:
        print(f"ccdrill: {exc}", file=sys.stderr)
        return 2
    print(f"runbook: {args.step} {'recorded by hand' if added else 'already recorded'}")
    return 0


def cmd_play(args) -> int:
    return run_playbook(args.playbook, lab_name(args), args.inventory, args.extra)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ccdrill", description=__doc__)
    p.add_argument("--lab", help="lab name (default: $CCDRILL_LAB or 'main')")
    p.add_argument("--inventory", type=Path, help="inventory folder (default: inventory/lab)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("inventory", help="validate an inventory against the plan's schema")
    s.add_argument("path", nargs="?", type=Path)
    s.set_defaults(func=cmd_inventory)
    sub.add_parser("engine", help="make sure a Docker engine answers").set_defaults(func=cmd_engine)
    sub.add_parser("images", help="build the lab images (cached by recipe hash)").set_defaults(func=cmd_images)
    s = sub.add_parser("lab", help="bring the two-site lab up, show it, or tear it down")
    s.add_argument("action", choices=["up", "create", "status", "down"])
    s.set_defaults(func=cmd_lab)
    s = sub.add_parser("runbook", help="show the runbook ledger, or record by hand a step done outside the playbooks")
    s.add_argument("action", choices=["show", "record"])
    s.add_argument("step", nargs="?", default="")
    s.add_argument("--by", help="who records the step (required with record)")
    s.add_argument("--reason", help="why it is recorded by hand (required with record)")
    s.set_defaults(func=cmd_runbook)
    s = sub.add_parser("play", help="run one of the plan's playbooks against the lab")
    s.add_argument("playbook")
    s.add_argument("extra", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_play)
    sub.add_parser("basic-calls", help="basic call tests: IVR query, outbound, agent (BASIC-1)").set_defaults(
        func=cmd_basic_calls)
    sub.add_parser("dialtest", help="dial-test every cabled channel of every board").set_defaults(func=cmd_dialtest)
    s = sub.add_parser("monitor", help="every service as DR-2 expects, boards controlled, no failed calls")
    s.add_argument("--calls", type=int, default=20)
    s.set_defaults(func=cmd_monitor)
    from .drill import add_drill_parser
    from .failover_drill import add_parser as add_failover_drill_parser

    add_failover_drill_parser(sub)

    add_drill_parser(sub)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except InventoryError as exc:
        print(f"ccdrill: invalid inventory: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # EngineError, ImageError, LabError: each names what is wrong
        print(f"ccdrill: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
