"""The history of a run: one JSON object per line, each with a timestamp, from which reports are drawn."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class Timeline:
    """Append-only event log (JSON lines). Safe to share between threads; every write is flushed,
    so a killed run still leaves its history up to the last event."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = self.path.open("a", encoding="utf-8")

    def event(self, name: str, /, **fields: Any) -> dict:
        rec = {"ts": round(time.time(), 6), "event": name, **fields}
        line = json.dumps(rec, default=str, ensure_ascii=False)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()
        return rec

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def read_timeline(path: str | Path) -> list[dict]:
    """Events of a timeline file; a half-written last line (killed run) is skipped, not fatal."""
    events = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            if n != len(lines):
                raise ValueError(f"{path}:{n}: not a JSON event") from None
    return events
