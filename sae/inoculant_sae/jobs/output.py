"""Where a job's progress and result tables go: protocol frames in the server, lists in tests and the bench."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa


class JobOutput(Protocol):
    def progress(self, phase: str, done: int, total: int, unit: str) -> None: ...

    def result(self, name: str, table: pa.Table, final: bool) -> None: ...


@dataclass
class CollectedOutput:
    """Keeps everything a job emits (tests, bench)."""

    tables: dict[str, list[pa.Table]] = field(default_factory=dict)
    finals: dict[str, int] = field(default_factory=dict)
    progress_events: list[tuple[str, int, int, str]] = field(default_factory=list)

    def progress(self, phase: str, done: int, total: int, unit: str) -> None:
        self.progress_events.append((phase, done, total, unit))

    def result(self, name: str, table: pa.Table, final: bool) -> None:
        self.tables.setdefault(name, []).append(table)
        if final:
            self.finals[name] = self.finals.get(name, 0) + 1

    def table(self, name: str) -> pa.Table:
        return pa.concat_tables(self.tables[name])


class Progress:
    """Throttled progress for one phase: at most one message per `interval_s`, plus the last one."""

    def __init__(self, out: JobOutput, phase: str, total: int, unit: str = "rows", interval_s: float = 0.5) -> None:
        self._out = out
        self._phase = phase
        self._total = total
        self._unit = unit
        self._interval = interval_s
        self._last = 0.0
        self._sent = -1

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done == self._total or now - self._last >= self._interval:
            if done != self._sent:
                self._out.progress(self._phase, done, self._total, self._unit)
                self._sent = done
            self._last = now
