"""ccdrill.load.sipp: real SIPp 3.6 -trace_stat CSVs (tests/unit/data, made on loopback by
make_sipp_fixtures.py and test_pbx_local.py) and a live loopback run."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ccdrill.load.sipp import (
    LocalExecutor,
    SippNotFound,
    TraceStatError,
    parse_trace_stat,
    place_calls,
    read_stat_file,
    uas_delta,
    wait_stat_file,
)

DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parents[2]
UAC_IVR = ROOT / "roles" / "carrier" / "files" / "uac_ivr.xml"
SEAT = ROOT / "roles" / "agent_seats" / "files" / "uas_seat.xml"


def fixture_text(name: str) -> str:
    return (DATA / name).read_text()


class FakeExecutor:
    """Plays back a fixture as the CSV of whatever SIPp run it is asked for."""

    def __init__(self, csv_name: str | None, rc: int = 0, err: str = ""):
        self.csv_name, self.rc, self.err = csv_name, rc, err
        self.argvs: list[list[str]] = []

    def run(self, argv, timeout):
        self.argvs.append(argv)
        if argv[0] == "mkdir":
            return 0, "", ""
        return self.rc, "", self.err

    def read(self, path):
        if self.csv_name is None:
            raise FileNotFoundError(path)
        return fixture_text(self.csv_name)


def _place(ex, **kw):
    args = dict(scenario="/opt/ccdrill/sipp/uac_ivr.xml", target="sh-pbx:5060", count=6, rate=10, hold_ms=3000)
    args.update(kw)
    return place_calls(ex, stat_dir="/var/lib/ccdrill/sipp", **args)


# -- parse_trace_stat on real files --------------------------------------------


def test_parse_answered_calls():
    st = parse_trace_stat(fixture_text("uac_ivr_answered.csv"), source="answered.csv")
    assert st["calls"] == {
        "created": 3,
        "incoming": 0,
        "outgoing": 3,
        "current": 0,
        "successful": 3,
        "failed": 0,
    }
    assert st["counters"]["answered"] == 3
    assert st["counters"]["refused503"] == 0
    assert set(st["failures"]) >= {"MaxUDPRetrans", "UnexpectedMessage", "TimeoutOnRecv"}
    assert st["start"] < st["now"] and 1.0 < st["elapsed_s"] < 10.0
    assert st["raw"]["TargetRate"] == "20"


def test_parse_uas_counters_are_separate_from_sipp_columns():
    st = parse_trace_stat(fixture_text("uas_seat_running.csv"))
    assert st["counters"] == {"answered": 3, "hungup": 3, "probes": 0, "abandoned": 0}
    assert st["calls"]["incoming"] == 3
    assert st["rows"] == 9


def test_column_names_matched_loosely():
    text = fixture_text("uac_ivr_via_pbx.csv")
    header, rest = text.split("\n", 1)
    # other delimiter, other case, a space before the (C)/(P) suffix
    header = header.replace("(C)", " (c)").replace("(P)", " (p)").lower()
    st = parse_trace_stat((header + "\n" + rest).replace(";", ","))
    assert st["calls"]["outgoing"] == 6 and st["calls"]["successful"] == 6
    assert st["counters"]["answered"] == 5 and st["counters"]["refused503"] == 1


@pytest.mark.parametrize("cut", [200, 2, 3])
def test_half_written_last_row_is_ignored(cut):
    text = fixture_text("uas_seat_running.csv")
    st = parse_trace_stat(text[: len(text) - cut])
    assert st["rows"] == 8
    assert st["counters"]["answered"] == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("hello;world;\n1;2;\n", "not a SIPp -trace_stat CSV"),
        (fixture_text("uac_ivr_refused.csv").split("\n", 1)[0] + "\n", "no complete data row"),
    ],
)
def test_corrupt_files_are_named(text, message):
    with pytest.raises(TraceStatError, match=message) as exc:
        parse_trace_stat(text, source="/var/lib/ccdrill/sipp/x.csv")
    assert "/var/lib/ccdrill/sipp/x.csv" in str(exc.value)


# -- place_calls: counting from the CSV, never the exit code -------------------


def test_refused_calls_counted_by_code():
    res = _place(FakeExecutor("uac_ivr_refused.csv"), count=2)
    assert (res.attempted, res.answered, res.refused, res.failed, res.timeouts) == (2, 0, {503: 2}, 0, 0)
    assert res.refused_total == 2
    # SIPp ends a refused call "successfully": the counters tell the difference
    assert res.completed == 2


def test_answered_and_refused_through_the_pbx():
    res = _place(FakeExecutor("uac_ivr_via_pbx.csv", rc=0))
    assert (res.attempted, res.answered, res.refused, res.failed, res.timeouts) == (6, 5, {503: 1}, 0, 0)


def test_no_answer_is_a_timeout_not_a_failure():
    res = _place(FakeExecutor("uac_ivr_recv_timeout.csv", rc=1), count=2)
    assert (res.attempted, res.answered, res.refused, res.failed, res.timeouts) == (2, 0, {}, 0, 2)
    assert res.stats["failures"]["TimeoutOnRecv"] == 2


def test_calls_open_at_the_global_timeout_are_timeouts():
    # SIPp exits 255 (-timeout_error); the calls it left open are counted from CurrentCall
    res = _place(FakeExecutor("uac_ivr_global_timeout.csv", rc=255), count=2)
    assert (res.attempted, res.answered, res.timeouts) == (2, 0, 2)
    assert res.rc == 255


def test_exit_code_does_not_decide_the_counts():
    assert _place(FakeExecutor("uac_ivr_answered.csv", rc=1), count=3).answered == 3


def test_argv_is_bounded():
    ex = FakeExecutor("uac_ivr_answered.csv")
    _place(ex, count=61, rate=30, hold_ms=20_000, limit=61, local_ip="10.0.0.2")
    argv = ex.argvs[-1]
    opts = dict(zip(argv, argv[1:], strict=False))
    assert argv[:4] == ["sipp", "-sf", "/opt/ccdrill/sipp/uac_ivr.xml", "sh-pbx:5060"]
    assert opts["-m"] == "61" and opts["-l"] == "61" and opts["-r"] == "30" and opts["-rp"] == "1000"
    assert opts["-d"] == "20000" and opts["-i"] == "10.0.0.2"
    # ramp (61/30 s) + hold 20 s + answer timeout 10 s + 10 s margin
    assert opts["-timeout"] == "43s"
    assert "-timeout_error" in argv and "-nostdin" in argv and "-trace_stat" in argv
    assert opts["-stf"].startswith("/var/lib/ccdrill/sipp/uac_ivr-") and opts["-stf"].endswith(".csv")
    assert opts["-inf"] == "/opt/ccdrill/sipp/accounts.csv"
    assert "-users" not in argv
    assert ex.argvs[0] == ["mkdir", "-p", "/var/lib/ccdrill/sipp"]


@pytest.mark.parametrize(
    "kw",
    [dict(count=0), dict(count=10_001), dict(count=2.5), dict(rate=0), dict(limit=7), dict(hold_ms=-1)],
)
def test_unbounded_runs_are_refused(kw):
    with pytest.raises(ValueError):
        _place(FakeExecutor("uac_ivr_answered.csv"), **kw)


def test_missing_csv_names_the_file():
    with pytest.raises(TraceStatError, match=r"no statistics file /var/lib/ccdrill/sipp/uac_ivr-.*\.csv"):
        _place(FakeExecutor(None, rc=255, err="Unable to open scenario"))


def test_missing_sipp_is_reported():
    with pytest.raises(SippNotFound, match="not installed"):
        _place(FakeExecutor(None, rc=127, err="sipp: command not found"))


def test_missing_sipp_locally(tmp_path):
    with pytest.raises(SippNotFound):
        place_calls(
            LocalExecutor(),
            str(UAC_IVR),
            "127.0.0.1:9",
            1,
            1,
            0,
            sipp=str(tmp_path / "no-sipp"),
            stat_dir=str(tmp_path),
        )


# -- long-running UAS: deltas between two reads --------------------------------


def _rows(name: str, n: int) -> str:
    """The file as it was when it had n data rows."""
    return "\n".join(fixture_text(name).splitlines()[: n + 1]) + "\n"


def test_uas_delta_between_two_reads():
    before = parse_trace_stat(_rows("uas_seat_running.csv", 2))
    during = parse_trace_stat(_rows("uas_seat_running.csv", 3))
    after = parse_trace_stat(fixture_text("uas_seat_running.csv"))
    mid = uas_delta(before, during)
    assert mid["answered"] == 3 and mid["current"] == 3 and mid["counters"]["hungup"] == 0
    done = uas_delta(before, after)
    assert done["answered"] == 3 and done["counters"]["hungup"] == 3 and done["current"] == 0
    assert done["calls"]["incoming"] == 3 and not done["restarted"]
    assert done["since"] < done["until"]
    assert uas_delta(after, after)["answered"] == 0


def test_uas_delta_after_a_restart():
    after = parse_trace_stat(fixture_text("uas_seat_running.csv"))
    before = dict(after, start=after["start"] - 3600, counters={"answered": 50, "hungup": 50})
    d = uas_delta(before, after)
    assert d["restarted"] and d["answered"] == 3


def test_read_stat_file_reads_head_and_tail(tmp_path):
    path = tmp_path / "agent-seats.csv"
    shutil.copy(DATA / "uas_seat_running.csv", path)
    st = read_stat_file(LocalExecutor(), str(path))
    assert st["counters"]["answered"] == 3 and st["source"] == str(path)
    with pytest.raises(TraceStatError, match="missing.csv"):
        read_stat_file(LocalExecutor(), str(tmp_path / "missing.csv"))


def test_read_stat_file_waits_out_a_restarted_uas(tmp_path):
    # supervisord restarted the UAS: its CSV is truncated, then the header and a row appear.
    path = tmp_path / "agent-seats.csv"
    path.write_text("")
    timer = threading.Timer(0.5, shutil.copy, (DATA / "uas_seat_running.csv", path))
    timer.start()
    try:
        st = read_stat_file(LocalExecutor(), str(path), wait_s=5)
    finally:
        timer.cancel()
    assert st["counters"]["answered"] == 3


def test_read_stat_file_names_a_file_that_stays_empty(tmp_path):
    path = tmp_path / "agent-seats.csv"
    path.write_text("")
    with pytest.raises(TraceStatError, match=r"agent-seats.csv: empty .*still so after 0.3s"):
        read_stat_file(LocalExecutor(), str(path), wait_s=0.3)


def test_wait_stat_file_gives_up_with_a_clear_error(tmp_path):
    path = tmp_path / "carrier-answer.csv"
    shutil.copy(DATA / "uas_seat_running.csv", path)
    with pytest.raises(TraceStatError, match="no statistics row newer"):
        wait_stat_file(LocalExecutor(), str(path), newer_than=time.time() + 3600, wait_s=0.3)


# -- live, on loopback ----------------------------------------------------------


@pytest.mark.skipif(shutil.which("sipp") is None, reason="needs sipp (Debian sip-tester)")
def test_live_calls_on_loopback(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    csv = tmp_path / "seat.csv"
    argv = [
        "sipp",
        "-sf",
        str(SEAT),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-bind_local",
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(csv),
        "-fd",
        "1",
    ]
    uas = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ex = LocalExecutor()
    try:
        deadline = time.monotonic() + 5
        while not csv.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        before = read_stat_file(ex, str(csv))
        res = place_calls(
            ex,
            str(UAC_IVR),
            f"127.0.0.1:{port}",
            3,
            30,
            500,
            local_ip="127.0.0.1",
            inf=str(DATA / "accounts.csv"),
            stat_dir=str(tmp_path / "uac"),
        )
        assert (res.attempted, res.answered, res.refused, res.failed, res.timeouts) == (3, 3, {}, 0, 0)
        assert Path(res.stats_file).parent == tmp_path / "uac"
        delta = uas_delta(before, wait_stat_file(ex, str(csv), newer_than=time.time()))
        assert delta["answered"] == 3 and delta["counters"]["hungup"] == 3 and delta["current"] == 0
    finally:
        uas.terminate()
        uas.wait(timeout=5)
