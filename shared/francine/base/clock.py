"""The wall clock, in UTC: the one ``now`` that records and documents are stamped with
(the handlers take theirs from ``Adapters.clock``, which the simulator replaces)."""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
