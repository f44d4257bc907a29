"""DR-1: both IPCs run the same versions and the same configuration of the board driver, CTI, IVR,
KCXP and KCBP (plan 1.1, DR principle: "both IPCs keep the same versions and the same configuration
parameters of all system software"). Names every difference.

What is compared, read from each IPC itself (one `docker exec` each):
- **versions**: the sha256 of every deployed stand-in file under /opt/ccdrill/ccdrill/standins, the
  python3 that runs them, and each supervisord program definition (/etc/supervisor/conf.d/*.conf:
  its command, environment, restart policy ...; the program's own name is replaced by `<program>`
  before comparing, so board0's and board1's definitions compare equal when they run the same way);
- **configuration**: /etc/ccdrill/<program>.json of every driver (voice and fax board), CTI, IVR,
  KCXP and KCBP program, and the DB-connection config /etc/ccdrill/dbconn.ini that KCBP reads.

The rule for keys that must differ per IPC (they are checked against what they must be, never
skipped): a value that names the IPC itself or its own boards must be that IPC's own value; a value
that expresses the DR arrangement must be what DR-2 says for that IPC's part. Precisely:

| program          | key                  | must be                                                            |
|------------------|----------------------|--------------------------------------------------------------------|
| voice/fax board  | name                 | a board the layout puts on this IPC (and the program's name)       |
|                  | ipc                  | this IPC's name                                                    |
|                  | advertise            | this IPC's own address                                             |
|                  | sip_port, ctl_port   | the layout's port / ctl_port of that board                         |
|                  | cabled (voice)       | the layout's cabled channels of that board (its share of the E1s), |
|                  |                      | a multiple of span_size, at most `channels`                        |
| kcxp             | upstream             | primary: null; secondary: "<primary's address>:<kcxp port>"        |
| kcbp             | kcxp                 | primary: "127.0.0.1:<port>"; secondary: "<primary's address>:<port>" |
| kcxp-copy        | (secondary only)     | compared with the primary's kcxp; name = kcxp-copy; upstream null; |
|                  |                      | listen = the secondary's own address or 0.0.0.0                    |
| kcbp-copy        | (secondary only)     | compared with the primary's kcbp; name = kcbp-copy; kcxp = the     |
|                  |                      | secondary's own "<address>:<port>" or "127.0.0.1:<port>"           |
| supervisord      | autostart            | not compared here: it is who runs what (DR-2's check)              |

Every other key (channels, span_size, pools, pbx, seat_uri, kcxp of the boards, CTI's board list,
heartbeat, IVR prompts and announcement, ports, timeouts, the database named in dbconn.ini) must be
equal on both IPCs. A program installed on one IPC only is a difference, except the secondary's
copies. `python -m ccdrill.checks.parity --lab NAME` prints the differences and exits 1 if any.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

COMPONENTS = {"voiceboard": "driver", "faxboard": "fax driver", "cti": "cti", "ivr": "ivr", "kcxp": "kcxp",
              "kcbp": "kcbp"}
COPIES = {"kcxp-copy": "kcxp", "kcbp-copy": "kcbp"}
BOARD_OWN_KEYS = ("name", "ipc", "advertise", "sip_port", "ctl_port")
NOT_COMPARED_PROGRAM_KEYS = frozenset({"autostart"})

# Run on each IPC with its python3 (stdlib only): everything the comparison needs, as JSON.
SNAPSHOT_SCRIPT = r"""
import configparser, glob, hashlib, json, os, sys
out = {"python": sys.version.split()[0], "code": {}, "programs": {}, "configs": {}, "dbconn": None, "errors": []}
root = "/opt/ccdrill/ccdrill/standins"
for p in sorted(glob.glob(root + "/**/*", recursive=True)):
    if os.path.isfile(p) and "__pycache__" not in p:
        with open(p, "rb") as f:
            out["code"][os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
for conf in sorted(glob.glob("/etc/supervisor/conf.d/*.conf")):
    cp = configparser.RawConfigParser()
    try:
        cp.read(conf)
    except configparser.Error as e:
        out["errors"].append(f"{conf}: {e}")
        continue
    for sec in cp.sections():
        if sec.startswith("program:"):
            out["programs"][sec.split(":", 1)[1]] = dict(cp[sec])
for cfg in sorted(glob.glob("/etc/ccdrill/*.json")):
    try:
        with open(cfg) as f:
            out["configs"][os.path.basename(cfg)[:-5]] = json.load(f)
    except (OSError, ValueError) as e:
        out["errors"].append(f"{cfg}: {e}")
if os.path.exists("/etc/ccdrill/dbconn.ini"):
    cp = configparser.RawConfigParser()
    cp.read("/etc/ccdrill/dbconn.ini")
    out["dbconn"] = dict(cp["database"]) if cp.has_section("database") else {}
print(json.dumps(out))
"""


@dataclass(frozen=True)
class BoardPlace:
    host: str
    port: int
    ctl_port: int
    channels: int  # cabled


@dataclass
class Context:
    """What the rules need to know: the DR roles of the IPCs, their addresses, where the boards sit."""

    primary: str
    secondary: str
    addresses: dict[str, str]
    boards: dict[str, BoardPlace]
    kcxp_port: int = 7100


@dataclass(frozen=True)
class Difference:
    what: str  # component / item, e.g. "driver board1", "kcxp", "code"
    key: str
    primary: Any
    secondary: Any
    why: str

    def __str__(self) -> str:
        return (f"{self.what}: {self.key}: {self.why} "
                f"(primary {_short(self.primary)}, secondary {_short(self.secondary)})")


@dataclass
class Report:
    primary: str
    secondary: str
    differences: list[Difference] = field(default_factory=list)
    compared: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"primary": self.primary, "secondary": self.secondary, "compared": self.compared,
                "differences": [asdict(d) | {"text": str(d)} for d in self.differences]}


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 80 else s[:77] + "..."


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


# --- the pure comparison -------------------------------------------------------------------------------
def module_of(program_def: dict[str, str]) -> str | None:
    m = re.search(r"ccdrill\.standins\.(\w+)", program_def.get("command", ""))
    return m.group(1) if m else None


def _normalise_program(name: str, definition: dict[str, str]) -> dict[str, str]:
    # Only where the program names its own files (config, log), never inside a module name.
    own = re.compile(rf"(?<![\w.-]){re.escape(name)}(?=\.(?:json|log|conf)\b)")
    return {k: own.sub("<program>", v) for k, v in definition.items() if k not in NOT_COMPARED_PROGRAM_KEYS}


def _component_programs(snap: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, d in snap.get("programs", {}).items():
        comp = COMPONENTS.get(module_of(d) or "")
        if comp:
            out.setdefault(comp, []).append(name)
    return {k: sorted(v) for k, v in out.items()}


def _compare_dicts(what: str, a: dict, b: dict, skip: set[str], diffs: list[Difference], count: list[int],
                   why: str = "differs") -> None:
    for key in sorted(set(a) | set(b)):
        if key in skip:
            continue
        count[0] += 1
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if va != vb:
            diffs.append(Difference(what, key, va, vb, why))


def _own_rule(host: str, name: str, cfg: dict, ctx: Context) -> list[tuple[str, Any, str]]:
    """Per-IPC keys of a board's config: [(key, value, problem)] for every key not what it must be."""
    place = ctx.boards.get(name)
    bad = []
    if place is None or place.host != host:
        bad.append(("name", cfg.get("name"), f"the layout puts no board {name} on {host}"))
        return bad
    expect = {"name": name, "ipc": host, "advertise": ctx.addresses.get(host), "sip_port": place.port,
              "ctl_port": place.ctl_port}
    for key, want in expect.items():
        if cfg.get(key) != want:
            bad.append((key, cfg.get(key), f"must be {want!r} on {host} (its own), is {cfg.get(key)!r}"))
    if "cabled" in cfg:
        cabled, span, chans = cfg.get("cabled"), cfg.get("span_size", 30), cfg.get("channels")
        if cabled != place.channels:
            bad.append(("cabled", cabled, f"must be {place.channels} (the layout's cabled channels of {name})"))
        elif not isinstance(cabled, int) or cabled % span or (isinstance(chans, int) and cabled > chans):
            bad.append(("cabled", cabled, f"must be a multiple of span_size {span} and at most channels {chans}"))
    return bad


def _board_diffs(comp: str, pa: list[str], pb: list[str], sa: dict, sb: dict, ctx: Context,
                 diffs: list[Difference], count: list[int]) -> None:
    hosts = {ctx.primary: (pa, sa), ctx.secondary: (pb, sb)}
    for host, (names, snap) in hosts.items():
        for n in names:
            for key, val, why in _own_rule(host, n, snap["configs"].get(n, {}), ctx):
                diffs.append(Difference(f"{comp} {n}", key, val if host == ctx.primary else None,
                                        val if host == ctx.secondary else None, why))
            count[0] += len(BOARD_OWN_KEYS) + 1
    if not pa or not pb:
        diffs.append(Difference(comp, "installed", pa, pb, "a driver runs on one IPC only"))
        return
    ref = pa[0]
    ref_cfg = sa["configs"].get(ref, {})
    for n in pb:
        _compare_dicts(f"{comp} {ref}/{n}", ref_cfg, sb["configs"].get(n, {}), {*BOARD_OWN_KEYS, "cabled"},
                       diffs, count, "must be the same on both IPCs")
    for n in pa[1:]:
        _compare_dicts(f"{comp} {ref}/{n}", ref_cfg, sa["configs"].get(n, {}), {*BOARD_OWN_KEYS, "cabled"},
                       diffs, count, "must be the same on both IPCs")


def _middleware_rules(sa: dict, sb: dict, ctx: Context, diffs: list[Difference], count: list[int]) -> None:
    pa, sa_ = ctx.addresses[ctx.primary], ctx.addresses[ctx.secondary]
    port = ctx.kcxp_port
    ka, kb = sa["configs"].get("kcxp", {}), sb["configs"].get("kcxp", {})
    rules = [
        ("kcxp", "upstream", ka.get("upstream"), None, kb.get("upstream"), f"{pa}:{port}"),
        ("kcbp", "kcxp", sa["configs"].get("kcbp", {}).get("kcxp"), f"127.0.0.1:{port}",
         sb["configs"].get("kcbp", {}).get("kcxp"), f"{pa}:{port}"),
    ]
    for what, key, va, want_a, vb, want_b in rules:
        count[0] += 2
        if va != want_a:
            diffs.append(Difference(what, key, va, vb, f"the primary's must be {want_a!r} (DR-2)"))
        if vb != want_b:
            diffs.append(Difference(what, key, va, vb, f"the secondary's must be {want_b!r} (DR-2: works with the "
                                                       f"primary's KCXP)"))
    # The copies: the secondary's own KCXP/KCBP, otherwise the same as the primary's originals.
    for copy, orig in COPIES.items():
        for host, snap in ((ctx.primary, sa), (ctx.secondary, sb)):
            if copy in snap["configs"] and host == ctx.primary:
                diffs.append(Difference(copy, "installed", True, copy in sb["configs"],
                                        "the copy belongs on the secondary only (DR-2)"))
        c = sb["configs"].get(copy)
        if c is None:
            diffs.append(Difference(copy, "installed", None, None, "the secondary has no copy (DR-2)"))
            continue
        o = sa["configs"].get(orig, {})
        if orig == "kcxp":
            skip = {"name", "upstream", "listen"}
            count[0] += 3
            if c.get("upstream") is not None:
                diffs.append(Difference(copy, "upstream", None, c.get("upstream"), "must be null: the copy "
                                        "points at the secondary itself"))
            if c.get("listen") not in (sa_, "0.0.0.0"):
                diffs.append(Difference(copy, "listen", o.get("listen"), c.get("listen"),
                                        f"must be the secondary's own address {sa_} (or 0.0.0.0)"))
        else:
            skip = {"name", "kcxp"}
            count[0] += 2
            if c.get("kcxp") not in (f"{sa_}:{port}", f"127.0.0.1:{port}"):
                diffs.append(Difference(copy, "kcxp", o.get("kcxp"), c.get("kcxp"),
                                        f"must be the secondary's own KCXP {sa_}:{port} (or 127.0.0.1:{port})"))
        if c.get("name") != copy:
            diffs.append(Difference(copy, "name", None, c.get("name"), f"must be {copy}"))
        _compare_dicts(f"{copy} vs the primary's {orig}", o, c, skip, diffs, count, "must be the same as the original")


def compare(sa: dict, sb: dict, ctx: Context) -> Report:
    """Every difference between the primary's snapshot `sa` and the secondary's `sb`, rules applied."""
    rep = Report(ctx.primary, ctx.secondary)
    diffs = rep.differences
    n_code, n_prog, n_cfg = [0], [0], [0]
    for snap, host in ((sa, ctx.primary), (sb, ctx.secondary)):
        for err in snap.get("errors", []):
            diffs.append(Difference("snapshot", host, err if host == ctx.primary else None,
                                    err if host == ctx.secondary else None, "unreadable"))
    # versions: code and interpreter
    n_code[0] += 1
    if sa.get("python") != sb.get("python"):
        diffs.append(Difference("runtime", "python3", sa.get("python"), sb.get("python"), "different interpreter"))
    ca, cb = sa.get("code", {}), sb.get("code", {})
    if not ca and not cb:
        diffs.append(Difference("code", "standins", None, None, "no stand-in code deployed on either IPC"))
    for f in sorted(set(ca) | set(cb)):
        n_code[0] += 1
        if ca.get(f) != cb.get(f):
            diffs.append(Difference("code", f, (ca.get(f) or "<absent>")[:12], (cb.get(f) or "<absent>")[:12],
                                    "different file (sha256)"))
    # versions: program definitions, per component
    comps_a, comps_b = _component_programs(sa), _component_programs(sb)
    for comp in sorted(set(COMPONENTS.values())):
        pa, pb = comps_a.get(comp, []), comps_b.get(comp, [])
        if comp in ("driver", "fax driver"):
            pairs = [(pa[0], n) for n in pb] if pa else []
            _board_diffs(comp, pa, pb, sa, sb, ctx, diffs, n_cfg)
        else:
            orig = comp
            copies_b = [n for n in pb if COPIES.get(n) == comp]
            for host, names in ((ctx.primary, pa), (ctx.secondary, pb)):
                for n in names:
                    if n != orig and COPIES.get(n) != comp:
                        diffs.append(Difference(comp, f"program {n}", n in pa, n in pb,
                                                f"unexpected program on {host}"))
            if orig not in pa or orig not in pb:
                diffs.append(Difference(comp, "installed", orig in pa, orig in pb, "installed on one IPC only"))
                pairs = []
            else:
                pairs = [(orig, orig)] + [(orig, n) for n in copies_b]
                skip = {"kcxp": {"upstream"}, "kcbp": {"kcxp"}}.get(comp, set())
                _compare_dicts(comp, sa["configs"].get(orig, {}), sb["configs"].get(orig, {}), skip, diffs,
                               n_cfg, "must be the same on both IPCs")
        for na, nb in pairs:
            da = _normalise_program(na, sa["programs"][na])
            db = _normalise_program(nb, sb["programs"][nb])
            _compare_dicts(f"{comp} program {na}/{nb}" if na != nb else f"{comp} program", da, db, set(), diffs,
                           n_prog, "different program definition (version)")
    _middleware_rules(sa, sb, ctx, diffs, n_cfg)
    # the database KCBP reads
    n_cfg[0] += 1
    if sa.get("dbconn") is None or sb.get("dbconn") is None:
        diffs.append(Difference("kcbp dbconn.ini", "present", sa.get("dbconn") is not None,
                                sb.get("dbconn") is not None, "missing"))
    else:
        _compare_dicts("kcbp dbconn.ini", sa["dbconn"], sb["dbconn"], set(), diffs, n_cfg,
                       "must name the same database on both IPCs")
    rep.compared = {"code_files": n_code[0], "program_keys": n_prog[0], "config_keys": n_cfg[0]}
    return rep


# --- reading the lab -------------------------------------------------------------------------------------
def snapshot(lab, host: str) -> dict:
    """What an IPC runs, read on the IPC itself (code hashes, program definitions, configs)."""
    rc, out, err = lab.exec(host, ["python3", "-c", SNAPSHOT_SCRIPT], 60)
    if rc != 0:
        raise RuntimeError(f"{host}: cannot read its programs and configuration: {err.strip()[-300:]}")
    return json.loads(out)


def context(cc) -> Context:
    if not cc.secondary:
        raise ValueError(f"the {cc.layout_name} layout has no secondary IPC: nothing to compare")
    boards = {b.name: BoardPlace(b.host, b.port, b.ctl_port, b.channels) for b in cc.boards("voice") + cc.boards("fax")}
    return Context(cc.primary, cc.secondary, {h: cc.lab.inv.address(h) for h in (cc.primary, cc.secondary)}, boards,
                   int(cc.vars.get("kcxp_port", 7100)))


def check(cc) -> Report:
    ctx = context(cc)
    return compare(snapshot(cc.lab, ctx.primary), snapshot(cc.lab, ctx.secondary), ctx)


def main(argv: list[str] | None = None) -> int:
    from ..cli import project_root
    from ..lab.callcenter import CallCenter
    from ..lab.engine import ensure_engine
    from ..lab.inventory import load_inventory
    from ..lab.world import Lab

    p = argparse.ArgumentParser(prog="python -m ccdrill.checks.parity", description=__doc__.split("\n\n")[0])
    p.add_argument("--lab", required=True, help="lab name")
    p.add_argument("--layout", help="layout whose primary and secondary are compared (default: the one the "
                                    "lab's runbook ledger implies)")
    p.add_argument("--inventory", type=Path, help="inventory folder (default: inventory/lab)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    root = project_root()
    inv_dir = args.inventory or Path(os.environ.get("CCDRILL_INVENTORY") or root / "inventory" / "lab")
    lab = Lab(args.lab, load_inventory(inv_dir, root / "images"), ensure_engine(), root / "images")
    try:
        rep = check(CallCenter(lab, inv_dir, args.layout))
    except ValueError as exc:
        print(f"parity: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rep.as_dict(), indent=2, default=str))
    else:
        c = rep.compared
        print(f"parity {rep.primary} (primary) / {rep.secondary} (secondary): compared {c['code_files']} code "
              f"files, {c['program_keys']} program-definition keys, {c['config_keys']} configuration keys")
        for d in rep.differences:
            print(f"  DIFF {d}")
        print(f"{len(rep.differences)} difference(s)")
    return 1 if rep.differences else 0


if __name__ == "__main__":
    sys.exit(main())
