"""Farm-wide admission and fair share: which queued production tasks are published next.

Pure (no SDK, no clock, no I/O): ``francine.services.farm`` observes the store (how many tasks
hold a farm slot, the lowest tags waiting, a user's account) and carries out what is
decided here.

*Admission.* A farm of ``slots`` (the render service's max instances × its concurrency)
has at most that many production tasks published and unfinished, across every
execution: the rest wait in Firestore, and each finished task frees its slot for the
next. A delivery is then never refused for capacity, except by a speculative copy or a
replacement (and such a refusal does not count against the task either: a production
message dead-lettered before its task ever started is queued again).

*Fair share* is start-time fair queuing (Goyal, Vin and Cheng, 1996) over users: when an
execution is planned, its user's account gives its production tasks virtual-time tags

    start  = max(F_user, V)                   F_user: where the user's last work ends
    tag_i  = start + i · cost / weight         V: the farm's virtual time (the lowest
    F_user = start + n · cost / weight            tag waiting, or where the latest
                                                  account ends when none waits)

and dispatch publishes the lowest ranks first, where a task's rank is its tag less what
is left of its user's credit, ``rank_i = tag_i − max(0, credit − i · cost / weight)``:
``credit`` (estimated task-seconds / weight) for a user who was idle (start = V), less
as the user's own work runs ahead of V, none for a backlogged user, and used up as the
execution's tasks are served. A busy user's tags run ahead of V, so each backlogged user
is served in proportion to its weight; a user who was idle gets its first tasks ahead of
everyone's backlog, as Linux's CFS credits a task that slept, so a small render of a
quiet user overtakes a long one, and no user is ever starved (ahead of its share by
half the credit and a task, no more). The credit lowers ranks, never tags: V does not
run backwards. Only the user's account document is written, once per execution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

WAITING = "waiting"
OUT = "out"


def queue_value(farm: str, state: str) -> str:
    """The ``queue`` field of a task that waits in (or holds a slot of) ``farm``."""
    return f"{farm}:{state}"


def parse_weights(spec: str) -> dict[str, float]:
    """``"alice=2,bob=0.5"`` → {"alice": 2.0, "bob": 0.5}; a clear error otherwise."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        user, sep, value = item.partition("=")
        try:
            weight = float(value) if sep and user.strip() else math.nan
        except ValueError:
            weight = math.nan
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"FRANCINE_FAIR_WEIGHTS: {item!r} is not user=weight with a "
                             "weight above 0")
        weights[user.strip()] = weight
    return weights


@dataclass(frozen=True)
class Account:
    """A user's fair-share account in one farm: where its queued work ends in virtual
    time; where the last execution's starts, the credit its ranks got, and that
    execution (a retried planning step reserves once)."""

    finish: float
    start: float
    last: str
    credit: float = 0.0


def virtual_time(lowest_waiting: float | None, latest_finish: float | None) -> float:
    """The farm's virtual time: the lowest tag still waiting; with nothing waiting,
    where the latest account ends (so that it never runs backwards)."""
    if lowest_waiting is not None:
        return lowest_waiting
    return latest_finish if latest_finish is not None else 0.0


def reserve(account: Account | None, eid: str, v: float, credit: float,
            amount: float) -> Account:
    """The account after execution ``eid`` reserves ``amount`` (n · cost / weight)."""
    if account is not None and account.last == eid:
        return account
    previous = account.finish if account is not None else -math.inf
    start = max(previous, v)
    return Account(start + amount, start, eid, max(0.0, credit - (start - v)))


def tags(account: Account, step: float, n: int) -> list[tuple[float, float]]:
    """(tag, rank) of an execution's n production tasks, ``step`` = cost / weight
    apart; the credit is used up as they are served."""
    return [(account.start + i * step,
             account.start + i * step - max(0.0, account.credit - i * step))
            for i in range(n)]


@dataclass(frozen=True)
class Candidate:
    """A waiting production task, as the farm's queue lists it."""

    sid: str
    eid: str
    tid: str
    rank: float


@dataclass(frozen=True)
class Take:
    """Take ``candidate`` (waiting → out, a conditional write) into ``slot`` and, if won,
    publish it (to the shard of ``slot``, where production is sharded)."""

    candidate: Candidate
    slot: int


def decide(slots: int, out: int, waiting: Iterable[Candidate],
           freed: Sequence[int] = (), held: Sequence[int] | None = None) -> list[Take]:
    """The tasks to publish now: the lowest ranks, as many as there are free slots.
    ``freed``: slots just released (their instance is idle), used first; ``held``: the
    slot numbers taken, when known (then only others are given)."""
    free = slots - out
    if free <= 0:
        return []
    chosen = sorted(waiting, key=lambda c: (c.rank, c.sid, c.eid, c.tid))[:free]
    taken = set(held or ())
    numbers = [n for n in freed if n not in taken][:free]
    others = [n for n in ((out + j) % slots for j in range(slots))
              if n not in numbers and n not in taken]
    numbers += others[:len(chosen) - len(numbers)]
    numbers += [(out + j) % slots for j in range(len(chosen) - len(numbers))]
    return [Take(c, s) for c, s in zip(chosen, numbers, strict=False)]
