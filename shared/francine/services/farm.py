"""The farm's queue, carried out: tags at planning, publication as slots free.

``francine.domain.fair_share`` decides which tasks go next and the scheduler
(``francine.domain.scheduler``) when: planning queues an execution's tasks
(``WriteTasks(queued=True)``), ``Admit`` dispatches, a finished production task
``Release``-s its slot, a task refused for capacity is ``Requeue``-d, and a copy of a
straggler (``Speculate(queued=True)``) waits in the queue for slots as any task does.
This module observes the store (the slots held, the lowest tags waiting, a user's
account) and carries those out (conditional takes, releases, publications). Every
step is safe to repeat: a take is a conditional write (a task is published by dispatch
at most once), a release frees a slot at most once, and a dispatch that finds no free
slot does nothing. Off (everything published at once, as before) unless
``FRANCINE_FARM_SLOTS`` is set. The end of an execution takes its tasks and copies out
of the queue and frees their slots (``ended``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from francine.base.config import Settings
from francine.domain import fair_share as dispatch
from francine.domain import planning
from francine.domain.records import Execution, Kind, Task
from francine.ports import Adapters

#: Tasks taken between two counts of the slots held: concurrent dispatches (many tasks
#: finishing at once) then overshoot the farm's size by at most this each.
CHUNK = 16
#: Separates a task's id from the copy's part in the id of a copy's queue entry.
COPY = "~"


def enabled(settings: Settings) -> bool:
    return settings.farm_slots > 0


def name(settings: Settings) -> str:
    """The farm: the render service that the production topic feeds."""
    return settings.produce_topic


def enqueue(ad: Adapters, ex: Execution, tasks: list[Task]) -> dispatch.Account:
    """Give the execution's production tasks their fair-share tags and a place in the
    farm's queue (before they are written); reserves their share in the user's
    account (once per execution)."""
    productions = [t for t in tasks if t.kind == Kind.PRODUCE]
    step = task_cost(ad, ex)
    if getattr(ex, "share_start", None) is not None:  # a frame: reserved by its animation
        account = dispatch.Account(ex.share_start + step * len(productions),
                                   ex.share_start, ex.id, ex.share_credit or 0.0)
    else:
        account = reserve(ad, ex.user, ex.id, step * len(productions),
                          ad.settings.fair_credit_s)
    waiting = dispatch.queue_value(name(ad.settings), dispatch.WAITING)
    for task, (tag, rank) in zip(productions, dispatch.tags(account, step, len(productions)),
                                 strict=True):
        task.queue, task.tag, task.rank = waiting, tag, rank
    return account


def task_cost(ad: Adapters, ex: Execution) -> float:
    """One production task of ``ex`` in its user's virtual time: its estimated seconds
    over the user's weight."""
    weight = dispatch.parse_weights(ad.settings.fair_weights).get(ex.user, 1.0)
    return float(ex.task_seconds or 1.0) / weight


def reserve(ad: Adapters, user: str, key: str, amount: float,
            credit: float) -> dispatch.Account:
    """Reserve ``amount`` of virtual time in ``user``'s account for ``key`` (an
    execution, or a copy), once; returns the account."""
    farm = name(ad.settings)
    lowest = ad.store.waiting_tasks(farm, 1, order="tag")
    v = dispatch.virtual_time(lowest[0][2].tag if lowest else None,
                              ad.store.latest_finish(farm))

    def update(previous: dict | None) -> dict:
        account = None if previous is None else account_of(previous)
        return dataclasses.asdict(dispatch.reserve(account, key, v, credit, amount))

    return account_of(ad.store.reserve_share(farm, user, update))


def account_of(stored: dict) -> dispatch.Account:
    """A user's fair-share account as its document holds it."""
    return dispatch.Account(stored["finish"], stored["start"], stored["last"],
                            stored.get("credit", 0.0))


def dispatch_now(ad: Adapters, freed: Iterable[int] = ()) -> int:
    """Publish the lowest-ranked waiting tasks (and copies) into the free slots;
    returns how many. The tasks taken from one chunk are published together, one
    request per execution."""
    if not enabled(ad.settings):
        return 0
    farm, slots = name(ad.settings), ad.settings.farm_slots
    freed = tuple(freed)
    published = 0
    while (out := ad.store.count_out(farm)) < slots:
        waiting = [dispatch.Candidate(sid, eid, t.id, t.rank or 0.0) for sid, eid, t in
                   ad.store.waiting_tasks(farm, min(slots - out, CHUNK))]
        # Where production is sharded over one topic per worker (the local stack), a
        # slot's number picks the worker: give only slots that no task holds.
        held = ad.store.held_slots(farm) if ad.settings.produce_shards > 1 else None
        takes = dispatch.decide(slots, out, waiting, freed, held)
        freed = ()
        # One transaction takes the chunk, up to the first task that another dispatch
        # took: that one is at work on the same queue, it fills what it counted free,
        # and going on here would publish past the farm's size.
        count = ad.store.take_waiting_many(farm, [
            (t.candidate.sid, t.candidate.eid, t.candidate.tid, t.slot) for t in takes])
        lost = count < len(takes)
        taken: dict[tuple[str, str], list] = {}
        for take in takes[:count]:
            c = take.candidate
            # The slot's number picks the shard (the local stack's one topic per
            # worker): a freed slot's worker is the one that just became idle.
            taken.setdefault((c.sid, c.eid), []).append(message(take.slot, c.tid))
        for (sid, eid), messages in taken.items():
            ad.bus.publish_tasks(sid, eid, messages)
            published += len(messages)
        if lost or len(takes) < CHUNK:
            return published
    return published


def copy_entries(tid: str, pieces: int) -> list[str]:
    """The queue entries of a copy of task ``tid``: one, or one per piece."""
    if pieces <= 1:
        return [f"{tid}{COPY}copy"]
    return [f"{tid}{COPY}{j}of{pieces}" for j in range(pieces)]


def message(slot: int, entry: str) -> tuple[int, str] | tuple[int, str, str]:
    """What dispatch publishes for a queue entry taken into ``slot``: a task, a whole
    copy of it (the task's own message: its claim takes the task over), or a piece of
    a copy ("piece/pieces")."""
    tid, copy, which = entry.partition(COPY)
    if not copy or which == "copy":
        return slot, tid
    piece, _, pieces = which.partition("of")
    return slot, tid, f"{piece}/{pieces}"


def enqueue_copy(ad: Adapters, ex: Execution, task: Task, pieces: int) -> int:
    """A copy of ``task`` (in ``pieces``) waits in the farm's queue for free slots,
    charged to its user's fair share as any work (its pieces share one task's
    estimate; no credit: a copy is extra work); dispatched at once if slots are free.
    Returns how many tasks and copies were published now."""
    entries = copy_entries(task.id, pieces)
    if getattr(ex, "share_start", None) is not None:
        # A frame of an animation: its copy takes the task's own place (the animation
        # reserved its share once; a transaction per copy would make its user's
        # account a hot document).
        places = [(task.tag or 0.0, task.rank or 0.0)] * len(entries)
    else:
        cost = task_cost(ad, ex)
        account = reserve(ad, ex.user, entries[0], cost, 0.0)
        places = dispatch.tags(account, cost / len(entries), len(entries))
    ad.store.queue_copies(ex.session_id, ex.id, task, name(ad.settings), [
        (entry, tag, rank) for entry, (tag, rank) in zip(entries, places, strict=True)])
    return dispatch_now(ad)


def finished(ad: Adapters, ex: Execution, node: str, copied: bool = False) -> int:
    """A production task finished: free its slot and, if it was ``copied``, those of
    its copy (a copy still rendering ends soon and is dropped), and publish the next."""
    tid = planning.task_id(ex.id, node)
    slot = ad.store.release_task(ex.session_id, ex.id, tid, name(ad.settings))
    freed = [] if slot is None else [slot]
    if copied:
        freed += ad.store.release_copies(ex.session_id, ex.id, tid, name(ad.settings))
    return dispatch_now(ad, freed)


def piece_ended(ad: Adapters, ex: Execution, node: str, piece: int, pieces: int) -> int:
    """A piece of a copy of ``node`` ended (stored, or found its task done): free its
    slot, and publish the next."""
    entry = copy_entries(planning.task_id(ex.id, node), pieces)[piece]
    slot = ad.store.release_task(ex.session_id, ex.id, entry, name(ad.settings))
    return dispatch_now(ad, () if slot is None else (slot,))


def requeue(ad: Adapters, ex: Execution, node: str) -> bool:
    """A production task whose message ran out of deliveries before any reached a
    render (refused for capacity), or whose output is to be produced again, is queued
    again at its place (its tag: the head of the queue). Never counted against the
    task."""
    again = ad.store.requeue_task(ex.session_id, ex.id, planning.task_id(ex.id, node),
                                  name(ad.settings))
    dispatch_now(ad)
    return again


def ended(ad: Adapters, ex: Execution) -> int:
    """The execution ended: its tasks and copies leave the queue and free their
    slots."""
    if not enabled(ad.settings):
        return 0
    if ad.store.release_execution(ex.session_id, ex.id, name(ad.settings)):
        return dispatch_now(ad)
    return 0
