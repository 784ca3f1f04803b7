"""The twins' meter: every operation of a twin goes through it (see ``francine.twins``)."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from francine.base.clock import now


@dataclass
class Meter:
    """Counts operations; ``delay(kind)`` is called before each (the simulator sleeps
    there in simulated time)."""

    clock: Callable[[], dt.datetime] = now
    delay: Callable[[str], None] | None = None
    ops: Counter = field(default_factory=Counter)
    #: writes per document path / object name, as a list of times
    writes: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    record_writes: bool = True

    def op(self, kind: str, written: str | None = None) -> None:
        if self.delay is not None:
            self.delay(kind)
        self.ops[kind] += 1
        if written is not None and self.record_writes:
            self.writes[written].append(self.clock().timestamp())
