"""What the clients do: callers held concurrently on the carrier's lines, and outbound campaigns from the boards.

Every function here is bounded in count and time and returns what was counted (SIPp's -trace_stat
counters, the boards' own stats), never an exit code.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass

from ..lab.callcenter import SIPP_DIR, CallCenter
from .sipp import CallResult, place_calls, read_stat_file, uas_delta, wait_stat_file

SCENARIOS = {"ivr": "uac_ivr.xml", "agent": "uac_agent.xml", "fax": "uac_fax.xml"}
RATE = 30.0  # calls set up per second: fast enough to hold 90 calls within a few seconds
MAX_CALLS_PER_RUN = 500


@dataclass(frozen=True)
class CallSpec:
    kind: str  # ivr | agent | fax
    count: int
    rate: float = RATE
    hold_ms: int | None = None  # default: long enough for every call of the run to overlap
    start_after_s: float = 0.0  # to start after an earlier group is up
    account: str | None = None  # X-Fund-Account of IVR calls (default: the carrier's list)


def _hold_for(spec: CallSpec, extra_s: float) -> int:
    ramp_s = spec.count / spec.rate
    return int((ramp_s + extra_s + 3.0) * 1000)


def hold_calls(cc: CallCenter, kind: str, count: int, *, rate: float = RATE, hold_ms: int | None = None,
               account: str | None = None) -> CallResult:
    """Place `count` calls of one kind from the carrier and hold them until all overlap; count the outcome."""
    return hold_groups(cc, [CallSpec(kind, count, rate, hold_ms, 0.0, account)])[0]


def hold_groups(cc: CallCenter, specs: list[CallSpec]) -> list[CallResult]:
    """Run several caller groups at once (e.g. 10 agent calls held while 41 IVR calls arrive)."""
    for s in specs:
        if s.kind not in SCENARIOS:
            raise ValueError(f"unknown call kind {s.kind!r} (known: {', '.join(SCENARIOS)})")
        if not 1 <= s.count <= MAX_CALLS_PER_RUN:
            raise ValueError(f"{s.kind}: count {s.count} outside 1..{MAX_CALLS_PER_RUN}")
    # Peaks are measured per load: what the boards held for these calls only.
    cc.reset_peaks()
    # Every group holds until the last group has ramped up, so all calls overlap at one moment.
    last_up = max(s.start_after_s + s.count / s.rate for s in specs)
    ex = cc.lab.executor(cc.carrier_host)

    def run(spec: CallSpec) -> CallResult:
        if spec.start_after_s:
            time.sleep(spec.start_after_s)
        hold = spec.hold_ms if spec.hold_ms is not None else _hold_for(spec, last_up - spec.start_after_s)
        inf = None
        if spec.account:
            inf = f"/tmp/ccdrill-account-{spec.account}.csv"
            rc, _o, err = ex.run(["sh", "-c", f"printf 'SEQUENTIAL\\n%s;\\n' '{spec.account}' > {inf}"], 10)
            if rc != 0:
                raise RuntimeError(f"cannot write the injection file {inf}: {err}")
        return place_calls(ex, f"{SIPP_DIR}/{SCENARIOS[spec.kind]}", cc.pbx_target, spec.count, spec.rate, hold,
                           inf=inf)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(specs)) as pool:
        return list(pool.map(run, specs))


@dataclass(frozen=True)
class OutboundResult:
    requested: int
    answered: int  # by the boards' count (200 received on outbound legs)
    no_channel: int  # requested calls no board had a channel for
    failed: int
    carrier_answered: int  # by the carrier's answering SIPp (its -trace_stat delta)
    peak_outbound: int  # the highest number of outbound channels in use at once, summed over boards


CARRIER_ANSWER_STAT = "/var/lib/ccdrill/sipp/carrier-answer.csv"
SEATS_STAT = "/var/lib/ccdrill/sipp/agent-seats.csv"


def outbound_campaign(cc: CallCenter, count: int, *, rate: float = RATE, hold_ms: int | None = None,
                      timeout: float = 60.0) -> OutboundResult:
    """Dial `count` outbound calls through the PBX the way the dialer hunts: each board in the layout's
    order dials what is left over from the boards before it. Bounded by `timeout`."""
    if not 1 <= count <= MAX_CALLS_PER_RUN:
        raise ValueError(f"outbound count {count} outside 1..{MAX_CALLS_PER_RUN}")
    hold = hold_ms if hold_ms is not None else int((2 * count / rate + 4.0) * 1000)
    ex = cc.lab.executor(cc.carrier_host)
    before_uas = read_stat_file(ex, CARRIER_ANSWER_STAT)
    boards = cc.answering_boards("voice")  # a board whose driver is down dials nothing
    before = {b.name: cc.board_stats(b)["calls"] for b in boards}
    cc.reset_peaks()
    remaining = count
    deadline = time.monotonic() + timeout
    for b in boards:
        if remaining == 0:
            break
        no_chan0 = cc.board_stats(b)["calls"]["outbound_no_channel"]
        cc.lab.ctl(b.host, b.ctl_port, {"op": "dial", "count": remaining, "to_user": "out", "hold_ms": hold,
                                        "rate": rate})
        while time.monotonic() < deadline:
            st = cc.board_stats(b)
            if not st.get("dialing"):
                break
            time.sleep(0.2)
        remaining = st["calls"]["outbound_no_channel"] - no_chan0
    # Let every call be answered and then hang up, so the counters are final.
    time.sleep(hold / 1000.0 + 1.5)
    peaks = 0
    answered = failed = 0
    for b in boards:
        st = cc.board_stats(b)
        calls = st["calls"]
        answered += calls["outbound_answered"] - before[b.name]["outbound_answered"]
        failed += calls["outbound_failed"] - before[b.name]["outbound_failed"]
        peaks += sum(p["peak"] for p in st["pools"].values())
    # The carrier's SIPp writes its CSV once a second: read a row written after the campaign ended.
    delta = uas_delta(before_uas, wait_stat_file(ex, CARRIER_ANSWER_STAT, time.time()))
    return OutboundResult(count, answered, remaining, failed, int(delta["answered"]), peaks)


def place_board_dial(cc: CallCenter, board, count: int, *, rate: float = RATE, timeout: float = 60.0) -> dict:
    """One board dials `count` outbound calls held together; count what it answered and its peak."""
    hold = int((count / rate + 3.0) * 1000)
    before = cc.board_stats(board)
    cc.lab.ctl(board.host, board.ctl_port, {"op": "reset_peaks"})
    cc.lab.ctl(board.host, board.ctl_port, {"op": "dial", "count": count, "to_user": "out", "hold_ms": hold,
                                            "rate": rate})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and cc.board_stats(board).get("dialing"):
        time.sleep(0.2)
    time.sleep(hold / 1000.0 + 1.5)
    after = cc.board_stats(board)
    delta = {k: after["calls"][k] - before["calls"][k] for k in ("outbound_answered", "outbound_failed",
                                                                 "outbound_no_channel")}
    return {"answered": delta["outbound_answered"], "failed": delta["outbound_failed"],
            "no_channel": delta["outbound_no_channel"], "peak": sum(p["peak"] for p in after["pools"].values())}
