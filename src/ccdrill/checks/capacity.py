"""Verdicts on what was counted: each compares the plan's number with the lab's, and names both."""

from __future__ import annotations

from ..load.calls import OutboundResult
from ..load.sipp import CallResult


class CheckFailed(AssertionError):
    """A plan's figure was not met; the message names the plan's number and the measured one."""


def _fail(problems: list[str]) -> None:
    if problems:
        raise CheckFailed("; ".join(problems))


def answered(result: CallResult, expected: int, what: str) -> None:
    problems = []
    if result.answered != expected:
        problems.append(f"the plan says {expected} {what} calls answered at once, the lab answered {result.answered}")
    if result.timeouts or result.failed or result.dropped:
        problems.append(f"{what} calls lost: {result.timeouts} timed out, {result.failed} failed, "
                        f"{result.dropped} dropped while held (SIPp {result.stats_file})")
    _fail(problems)


def refused(result: CallResult, expected: int, what: str, code: int = 503) -> None:
    got = result.refused.get(code, 0)
    others = {c: n for c, n in result.refused.items() if c != code}
    problems = []
    if got != expected:
        problems.append(f"the plan says {expected} {what} call(s) refused with {code}, the lab refused {got}")
    if others:
        problems.append(f"{what} calls refused with other codes: {others}")
    _fail(problems)


def channel_peak(stats: dict[str, dict], expected: int, pools: tuple[str, ...] | None = None) -> int:
    """Sum over boards of each pool's peak in use (peaks were reset before the load)."""
    total = 0
    for st in stats.values():
        for name, pool in st["pools"].items():
            if pools is None or name in pools:
                total += pool["peak"]
    if total != expected:
        detail = {b: {p: v["peak"] for p, v in st["pools"].items()} for b, st in stats.items()}
        raise CheckFailed(f"the plan says {expected} channels in use at the peak, the boards counted {total} {detail}")
    return total


def fax_peak(stats: dict[str, dict], expected: int) -> int:
    total = sum(st["peak"] for st in stats.values())
    if total != expected:
        raise CheckFailed(f"the plan says {expected} fax ports in use at the peak, the fax boards counted {total}")
    return total


def outbound(result: OutboundResult, answered_: int, no_channel: int | None = None) -> None:
    problems = []
    if result.carrier_answered != answered_:
        problems.append(f"the plan says {answered_} outbound calls answered, the carrier answered "
                        f"{result.carrier_answered}")
    if result.answered != result.carrier_answered:
        problems.append(f"the boards counted {result.answered} outbound calls answered, the carrier "
                        f"{result.carrier_answered}")
    if no_channel is not None and result.no_channel != no_channel:
        problems.append(f"the plan says {no_channel} outbound call(s) without a channel, "
                        f"the boards had {result.no_channel}")
    if result.failed:
        problems.append(f"{result.failed} outbound calls failed")
    _fail(problems)
