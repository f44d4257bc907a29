"""Regenerate the SIPp -trace_stat fixtures of test_sipp_load.py (loopback only).

    /tmp/venvtest/bin/python tests/unit/data/make_sipp_fixtures.py

Needs sipp (Debian sip-tester). uac_ivr_via_pbx.csv is not made here: it is the
first uac_ivr CSV that test_pbx_local.py writes (6 calls through Kamailio to 5
channels), copied from its temporary folder.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "src"))

from ccdrill.load.sipp import LocalExecutor, place_calls  # noqa: E402

UAC_IVR = ROOT / "roles" / "carrier" / "files" / "uac_ivr.xml"
SEAT = ROOT / "roles" / "agent_seats" / "files" / "uas_seat.xml"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uas(scenario: Path, port: int, csv: Path) -> subprocess.Popen:
    argv = ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-bind_local", "-nostdin"]
    argv += ["-trace_stat", "-stf", str(csv), "-fd", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def main() -> None:
    ex = LocalExecutor()
    tmp = Path(tempfile.mkdtemp(prefix="sipp-fixtures-"))
    inf = str(HERE / "accounts.csv")

    def calls(name: str, port: int, count: int, hold_ms: int, **kw) -> None:
        res = place_calls(
            ex,
            str(UAC_IVR),
            f"127.0.0.1:{port}",
            count,
            20,
            hold_ms,
            local_ip="127.0.0.1",
            inf=inf,
            stat_dir=str(tmp),
            **kw,
        )
        shutil.copy(res.stats_file, HERE / name)
        print(name, res)

    seat_port, refuse_port, dead_port = free_port(), free_port(), free_port()
    seat = uas(SEAT, seat_port, HERE / "uas_seat_running.csv")
    refuse = uas(HERE / "uas_refuse503.xml", refuse_port, tmp / "refuse.csv")
    try:
        calls("uac_ivr_answered.csv", seat_port, 3, 1500)
        calls("uac_ivr_refused.csv", refuse_port, 2, 0)
        # nobody listens on dead_port: no answer at all
        calls("uac_ivr_recv_timeout.csv", dead_port, 2, 0, answer_timeout_ms=800)
        calls("uac_ivr_global_timeout.csv", dead_port, 2, 0, timeout=2, answer_timeout_ms=60_000)
        time.sleep(1.5)
    finally:
        for proc in (seat, refuse):
            proc.terminate()
            proc.wait(timeout=5)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
