"""TA import throughput on site vs across the WAN (plan 2.2.2: the batch "serves as the test of bulk file
access and database read/write between Shenzhen and Shanghai").

The registrar publishes one batch of --mb MB on ta-files (Shanghai); the import job imports it from
Shanghai's TA server (files and database on its own site), then, after the batch is taken out of the
database again, from Shenzhen's (files read and rows written across the WAN). Printed: MB/s per phase
(fetch, validate, load) and overall for each, and the WAN/on-site ratio.

Usage: python bench/ta_import.py --lab NAME [--mb 100] [--repeat 1]
Needs a running lab after the TA import batch (both TA servers hold the program, e.g.
`ccdrill play migration/02_ta_import.yml`); the job is started by hand (/usr/local/bin/ta-import), not
through cron. The batch is withdrawn and purged from the database at the end. Bounded: each run has a
timeout of 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ccdrill.checks import ta  # noqa: E402
from ccdrill.lab.engine import ensure_engine  # noqa: E402
from ccdrill.lab.inventory import load_inventory  # noqa: E402
from ccdrill.lab.world import Lab  # noqa: E402
from ccdrill.load import ta_files  # noqa: E402

PHASES = ("fetch_MBps", "load_MBps", "MBps")


def run_on(lab: Lab, host: str, batch: str) -> dict:
    rc, out, err = lab.exec(host, ["/usr/local/bin/ta-import", "--batch", batch], 900)
    stats = json.loads(out) if out.strip().startswith("{") else {}
    if rc != 0 or not stats.get("ok"):
        raise SystemExit(f"{host}: the import failed (rc {rc}): {stats.get('error') or err.strip()[-500:]}")
    b = stats["batches"][0]
    return {"host": host, "rows": b["rows"], "MB": round(b["bytes"] / 1e6, 1), "seconds": b["seconds"],
            "fetch_s": b["fetch_s"], "validate_s": b["validate_s"], "load_s": b["load_s"],
            **{k: b[k] for k in PHASES}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lab", required=True)
    p.add_argument("--mb", type=int, default=100)
    p.add_argument("--repeat", type=int, default=1)
    a = p.parse_args()
    inv = load_inventory(ROOT / "inventory" / "lab", ROOT / "images")
    lab = Lab(a.lab, inv, ensure_engine(), ROOT / "images")
    sites = inv.vars["ta_import_sites"]
    files_host = inv.hosts_of("ta_files")[0]
    for host in sites.values():
        if not ta.program_manifest(lab, host):
            raise SystemExit(f"{host} has no TA import program: run the TA import batch first")
    conn = ta.job_db(lab, sites["shanghai"])
    results: dict[str, list[dict]] = {"on site": [], "across the WAN": []}
    for i in range(max(1, min(a.repeat, 5))):
        batch = ta_files.batch_name(f"bench{int(time.time()) % 100000}{i}")
        exp = ta_files.publish_batch(lab, files_host, batch, 8, a.mb * 1_000_000 + 1)
        try:
            for label, host in (("on site", sites["shanghai"]), ("across the WAN", sites["shenzhen"])):
                r = run_on(lab, host, batch)
                verdict = ta.verify_batch(lab, conn, exp)
                if not verdict["ok"]:
                    raise SystemExit(f"{host}: {verdict['problems']}")
                results[label].append(r)
                print(json.dumps({"run": i + 1, "where": label, **r}), flush=True)
                ta.purge_batch(lab, conn, batch)
        finally:
            ta_files.withdraw_batch(lab, files_host, batch)
            ta.purge_batch(lab, conn, batch)
    best = {k: {ph: max(r[ph] for r in v) for ph in PHASES} for k, v in results.items()}
    ratio = {ph: round(best["across the WAN"][ph] / best["on site"][ph], 2) for ph in PHASES}
    print(f"TA import of {a.mb} MB, best of {len(results['on site'])}: on site {best['on site']['MBps']} MB/s "
          f"(fetch {best['on site']['fetch_MBps']}, load {best['on site']['load_MBps']}); across the WAN "
          f"{best['across the WAN']['MBps']} MB/s (fetch {best['across the WAN']['fetch_MBps']}, load "
          f"{best['across the WAN']['load_MBps']}); WAN/on-site ratio {ratio['MBps']} (fetch {ratio['fetch_MBps']}, "
          f"load {ratio['load_MBps']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
