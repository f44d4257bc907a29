"""RTO of each IPC failure mode: fault injected -> first new call answered (and served by an IVR) again,
split into detection, the operators' playbook and recovery, on a lab of its own.

Each mode: the steady state is checked, the nemesis injects the fault, single probe calls (SIPp, one
after the other, at least 0.2 s apart) run until one is answered and its self-service query served.
Faults the PBX routes around by itself (board line cut, driver crash, secondary down; target 1 s) are
probed from the fault on and their playbook runs afterwards; faults that need the operators (primary
CTI/IVR crash, primary down; target 30 s) are probed from the moment they are visible, while the
playbook runs. Then the fault is undone and dr7_failback.yml restores the normal arrangement.

Usage: python bench/failover.py [--modes primary-line,...] [--repeat N] [--extra-vars FILE] [--keep] [--reuse]
  --repeat N      repetitions of the modes the PBX routes around (the others run once: each needs a
                  failback of about a minute)
  --extra-vars F  passed to every playbook run (-e @F), e.g. a candidate role fix
The lab (name benchfo, subnets 10.236.x) is brought up, forced to the target layout with site.yml, and
torn down at the end (--keep leaves it). The failover playbooks' ledger gate is lifted for this lab
only (-e runbook_requires=[]): the bench times switchovers, not the upgrade weekend. Bounded: every
probe run, playbook and wait has a limit; the whole bench takes 15-25 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ccdrill import faults  # noqa: E402
from ccdrill.checks import failover as fo  # noqa: E402
from ccdrill.cli import play  # noqa: E402
from ccdrill.lab.callcenter import CallCenter  # noqa: E402
from ccdrill.lab.engine import ensure_engine  # noqa: E402
from ccdrill.lab.inventory import load_inventory  # noqa: E402
from ccdrill.lab.world import Lab  # noqa: E402

LAB, PREFIX = "benchfo", "10.236"
TARGET = ["-e", "telephony_layout=target"]
NO_GATE = ["-e", json.dumps({"runbook_requires": []})]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, extra_vars: str | None):
        os.environ["CCDRILL_SUBNET_PREFIX"] = PREFIX
        inv = ROOT / "inventory" / "lab"
        self.lab = Lab(LAB, load_inventory(inv, ROOT / "images"), ensure_engine(), ROOT / "images")
        self.cc = CallCenter(self.lab, inv, "target")
        self.extra = ["-e", f"@{extra_vars}"] if extra_vars else []
        self.playbook_log = ROOT / "reports" / f"bench-failover-{time.strftime('%Y%m%dT%H%M%S')}.log"
        self.playbook_log.parent.mkdir(parents=True, exist_ok=True)

    def play(self, playbook: str, extra: list[str] | None = None) -> int:
        """Run a playbook; its output goes to the bench's log (the table stays readable)."""
        run = play(playbook, LAB, [*TARGET, *(extra or []), *self.extra])
        with open(self.playbook_log, "a") as fh:
            fh.write(f"\n===== {playbook}: exit {run.rc}, changed {run.changed}, {run.seconds} s\n{run.output}")
        return run.rc

    def failover_play(self, playbook: str) -> int:
        return self.play(f"failover/{playbook}", NO_GATE)

    def up(self) -> None:
        log(f"creating lab {LAB} ({PREFIX}.x)")
        self.lab.create(log=lambda *_: None)
        log("site.yml (target layout)")
        rc = self.play("site.yml")
        if rc != 0:
            raise SystemExit(f"site.yml failed ({rc}); see {self.playbook_log}")

    def pbx_settings(self) -> dict[str, str]:
        _rc, out, _ = self.lab.exec(self.cc.pbx_host, ["cat", "/etc/kamailio/kamailio.cfg"], 10)
        found = dict(re.findall(r'modparam\("(?:tm|dispatcher)", "(fr_timer|ds_ping_interval|fr_inv_timer)", (\d+)\)',
                                out))
        return found

    def restore(self, result: dict, full: bool) -> None:
        """Undo the fault; a full restore fails back with dr7_failback.yml, a quick one (faults the
        PBX routes around) restarts only what the nemesis broke, as an operator would."""
        fault, board = result["fault"], result["board"]
        faults.undo(self.lab, fault, board)
        if full:
            rc = self.failover_play("dr7_failback.yml")
            if rc != 0:
                raise SystemExit(f"dr7_failback.yml failed ({rc}); see {self.playbook_log}")
        elif fault.kind == "crash":
            self.lab.supervisor(fault.host, "start", fault.target)
        fo.steady_state(self.cc, timeout=30)


def summarise(name: str, runs: list[dict]) -> dict:
    rtos = [r["rto"].rto_s for r in runs if r["rto"].rto_s is not None]
    first = runs[0]
    splits = [r.get("split") for r in runs if r.get("split")]

    def med(key):
        vals = [s[key] for s in splits if key in s]
        return statistics.median(vals) if vals else None

    return {"mode": name, "needs": "PBX" if first["pbx_routes"] else "playbook",
            "n": len(runs), "answered": len(rtos), "rto_median": statistics.median(rtos) if rtos else None,
            "rto_max": max(rtos) if rtos else None, "detection": med("detection_s"), "playbook": med("playbook_s"),
            "recovery": med("recovery_s"), "target": first["target_s"],
            "playbook_after_s": next((r["playbook_s"] for r in runs if first["pbx_routes"] and r["playbook_rc"] == 0),
                                     None),
            "playbook_rc": [r["playbook_rc"] for r in runs]}


def fmt(v, w=9) -> str:
    return f"{'-':>{w}}" if v is None else f"{v:>{w}.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default=",".join(fo.MODES), help=f"comma-separated, of: {', '.join(fo.MODES)}")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of the PBX-routed modes (1..10)")
    ap.add_argument("--extra-vars", help="a vars file passed to every playbook (-e @FILE)")
    ap.add_argument("--keep", action="store_true", help="leave the lab running at the end")
    ap.add_argument("--reuse", action="store_true", help="use a running benchfo lab as it is (target layout)")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in fo.MODES]
    if unknown or not 1 <= args.repeat <= 10:
        ap.error(f"unknown modes {unknown} (known: {', '.join(fo.MODES)}) or --repeat outside 1..10")
    # A kill (timeout, CI) still tears the lab down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args.extra_vars)
    t_start = time.monotonic()
    rows, notes, pbx, overhead, broken = [], [], {}, float("nan"), False
    try:
        if not (args.reuse and any(h.status == "running" for h in bench.lab.status())):
            bench.up()
        fo.steady_state(bench.cc, timeout=30)
        healthy = [fo.probe_rto(bench.cc, time.time()) for _ in range(5)]
        overhead = statistics.median(p.rto_s for p in healthy if p.rto_s is not None)
        log(f"probe on the healthy call center (launch -> answered): median {overhead:.3f} s")
        for key in modes:
            mode = fo.MODES[key]
            runs = []
            for i in range(args.repeat if mode.pbx_routes else 1):
                log(f"{mode.name} #{i + 1}")
                last = i == (args.repeat if mode.pbx_routes else 1) - 1
                try:
                    # The PBX-routed modes: the playbook (which unloads the driver or stops the IPC) only
                    # on the last repetition; before it, the nemesis' damage is simply repaired.
                    r = fo.switchover(bench.cc, mode, bench.failover_play, respond=last)
                except Exception as exc:  # noqa: BLE001  (a failed mode is reported, the others still run)
                    notes.append(f"{mode.name}: {exc}")
                    log(f"  FAILED: {str(exc)[:300]}")
                    fault = faults.Fault("?", "", "", time.time(), time.time())
                    r = {"fault": fault, "board": None, "pbx_routes": mode.pbx_routes, "target_s": mode.target_s,
                         "rto": fo.Rto(fault.at, [], None, None, "error"), "playbook_rc": None, "playbook_s": 0}
                else:
                    s = r["rto"].summary()
                    log(f"  detected +{r['detection']['detected_after_s']:.2f} s ({r['detection']['how']}); "
                        f"playbook rc {r['playbook_rc']} {r['playbook_s']:.1f} s; RTO {s['rto_s']} s "
                        f"after {s['probes']} probes ({s['probes_refused']} refused, {s['probes_unserved']} "
                        f"unserved), served by {s['served_by']}")
                    if r["playbook_rc"] not in (0, None):
                        notes.append(f"{mode.name}: {mode.playbook} exit {r['playbook_rc']} (see {bench.playbook_log})")
                runs.append(r)
                try:
                    if r["fault"].kind == "?":
                        bench.failover_play("dr7_failback.yml")
                    else:
                        bench.restore(r, full=last)
                except Exception as exc:  # noqa: BLE001
                    notes.append(f"{mode.name}: restore failed: {exc}")
                    log(f"  restore FAILED: {exc}; failing back")
                    try:
                        for h in (bench.cc.primary, bench.cc.secondary):
                            if faults.is_paused(bench.lab, h):
                                faults.ipc_up(bench.lab, h)
                        if bench.failover_play("dr7_failback.yml") != 0:
                            raise RuntimeError(f"dr7_failback.yml failed; see {bench.playbook_log}")
                        fo.steady_state(bench.cc, timeout=30)
                    except Exception as exc2:  # noqa: BLE001  (the lab is not usable: stop, keep what was measured)
                        notes.append(f"the lab could not be brought back ({exc2}); the remaining modes were skipped")
                        log(f"  the lab could not be brought back: {exc2}")
                        broken = True
                        break
            rows.append(summarise(mode.name, runs))
            if broken:
                break
        pbx = bench.pbx_settings() if not broken else {}
    finally:
        if not args.keep:
            log(f"tearing down lab {LAB}")
            try:
                bench.lab.down()
            except Exception as exc:  # noqa: BLE001  (report the figures anyway)
                log(f"  teardown: {exc}; run `ccdrill --lab {LAB} lab down`")
    print()
    print(f"Failover RTO bench, lab {LAB}: PBX fr_timer {pbx.get('fr_timer')} ms, OPTIONS probe every "
          f"{pbx.get('ds_ping_interval')} s; probe calls every >= 0.2 s (one probe takes {overhead:.2f} s on the "
          f"healthy call center: included in every RTO); {time.monotonic() - t_start:.0f} s in all")
    print(f"{'mode':30} {'needs':8} {'n':>2} {'detect s':>9} {'playbook s':>10} {'recover s':>9} "
          f"{'RTO med s':>9} {'RTO max s':>9} {'target s':>8}  verdict")
    for r in rows:
        ok = r["rto_max"] is not None and r["answered"] == r["n"] and r["rto_max"] <= r["target"]
        extra = f"  (playbook after, {r['playbook_after_s']:.1f} s)" if r["playbook_after_s"] is not None else ""
        print(f"{r['mode']:30} {r['needs']:8} {r['n']:>2} {fmt(r['detection'])} {fmt(r['playbook'], 10)} "
              f"{fmt(r['recovery'])} {fmt(r['rto_median'])} {fmt(r['rto_max'])} {r['target']:>8.0f}  "
              f"{'ok' if ok else 'MISSED'}{extra}")
    print("RTO = detection + playbook (only where the recovery needs the operators) + recovery; detection is when "
          "the monitoring sees the fault (PBX marks the trunk inactive, boards report no controller, supervisord "
          "shows the program down); a negative recovery means callers were served before that point (the first "
          "call's own hunt beat the PBX's OPTIONS probe; the secondary served before the playbook's last check).")
    slow = [r for r in rows if r["needs"] == "PBX" and (r["rto_max"] or 99) > r["target"]]
    if slow:
        print(f"PBX-routed modes above {slow[0]['target']:g} s: lower pbx_fr_timer_ms (now {pbx.get('fr_timer')}) in "
              f"inventory/lab/group_vars/all/pbx.yml: the first call after a silent board waits fr_timer before "
              f"the PBX hunts to the other IPC.")
    for n in notes:
        print(f"note: {n}")
    print(f"playbook output: {bench.playbook_log}")
    return 0 if all(r["rto_max"] is not None and r["rto_max"] <= r["target"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
