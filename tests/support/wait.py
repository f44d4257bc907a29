"""Polling with a deadline."""

from __future__ import annotations

import time


def wait_for(pred, timeout: float = 5.0, what: str = "condition"):
    """The first truthy value of ``pred()``, polled every 20 ms; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
