"""The farm's queue, carried out: tags at planning, publication as slots free.

``francine.domain.fair_share`` decides; this module observes the store (the slots held, the
lowest tags waiting, a user's account) and carries out (conditional takes, releases,
publications). Every step is safe to repeat: a take is a conditional write (a task is
published by dispatch at most once), a release frees a slot at most once, and a
dispatch that finds no free slot does nothing. Off (everything published at once, as
before) unless ``FRANCINE_FARM_SLOTS`` is set.

Who dispatches: the api when an execution is planned, the reducer when a production
task's event arrives (its slot is released first), the end of an execution (its
waiting tasks leave the queue, its slots are freed), a dead-lettered production task
that never started (queued again), and the watchdog on every sweep (a dispatch lost
with a dead instance is made up for).
"""

from __future__ import annotations

import dataclasses
import logging

from francine.base.config import Settings
from francine.domain import fair_share as dispatch
from francine.domain import planning
from francine.domain.records import Execution, Kind, Task
from francine.ports import Adapters

log = logging.getLogger("francine.farm")

#: Tasks taken between two counts of the slots held: concurrent dispatches (many tasks
#: finishing at once) then overshoot the farm's size by at most this each.
CHUNK = 16


def enabled(settings: Settings) -> bool:
    return settings.farm_slots > 0


def name(settings: Settings) -> str:
    """The farm: the render service that the production topic feeds."""
    return settings.produce_topic


def enqueue(ad: Adapters, ex: Execution, tasks: list[Task]) -> dispatch.Account:
    """Give the execution's production tasks their fair-share tags and a place in the
    farm's queue (before they are written); reserves their share in the user's
    account (once per execution)."""
    farm, user = name(ad.settings), ex.user
    productions = [t for t in tasks if t.kind == Kind.PRODUCE]
    weight = dispatch.parse_weights(ad.settings.fair_weights).get(user, 1.0)
    step = float(ex.task_seconds or 1.0) / weight
    lowest = ad.store.waiting_tasks(farm, 1, order="tag")
    v = dispatch.virtual_time(lowest[0][2].tag if lowest else None,
                              ad.store.latest_finish(farm))

    def update(previous: dict | None) -> dict:
        account = None if previous is None else dispatch.Account(
            previous["finish"], previous["start"], previous["last"],
            previous.get("credit", 0.0))
        return dataclasses.asdict(dispatch.reserve(
            account, ex.id, v, ad.settings.fair_credit_s, step * len(productions)))

    written = ad.store.reserve_share(farm, user, update)
    account = dispatch.Account(written["finish"], written["start"], written["last"],
                               written.get("credit", 0.0))
    waiting = dispatch.queue_value(farm, dispatch.WAITING)
    for task, (tag, rank) in zip(productions, dispatch.tags(account, step, len(productions)),
                                 strict=True):
        task.queue, task.tag, task.rank = waiting, tag, rank
    return account


def dispatch_now(ad: Adapters, freed: tuple[int, ...] = ()) -> int:
    """Publish the lowest-tagged waiting tasks into the free slots; returns how many."""
    if not enabled(ad.settings):
        return 0
    farm, slots = name(ad.settings), ad.settings.farm_slots
    published = 0
    while (out := ad.store.count_out(farm)) < slots:
        waiting = [dispatch.Candidate(sid, eid, t.id, t.rank or 0.0) for sid, eid, t in
                   ad.store.waiting_tasks(farm, min(slots - out, CHUNK))]
        # Where production is sharded over one topic per worker (the local stack), a
        # slot's number picks the worker: give only slots that no task holds.
        held = ad.store.held_slots(farm) if ad.settings.produce_shards > 1 else None
        takes = dispatch.decide(slots, out, waiting, freed, held)
        freed = ()
        for take in takes:
            c = take.candidate
            if not ad.store.take_waiting(c.sid, c.eid, c.tid, farm, take.slot):
                # Another dispatch is at work on the same queue: it fills what it
                # counted free, and going on here would publish past the farm's size.
                return published
            # The slot's number picks the shard (the local stack's one topic per
            # worker): a freed slot's worker is the one that just became idle.
            ad.bus.publish_tasks(c.sid, c.eid, [(take.slot, c.tid)])
            published += 1
        if len(takes) < CHUNK:
            return published
    return published


def finished(ad: Adapters, ex: Execution, node: str) -> int:
    """A production task's event arrived: free its slot, publish the next."""
    if not enabled(ad.settings):
        return 0
    slot = ad.store.release_task(ex.session_id, ex.id, planning.task_id(ex.id, node),
                                 name(ad.settings))
    return dispatch_now(ad, () if slot is None else (slot,))


def requeue(ad: Adapters, ex: Execution, node: str) -> bool:
    """A production task whose message ran out of deliveries before any reached a
    render (refused for capacity): queued again at its place, or (without farm
    admission) published again. Never counted against the task."""
    if not enabled(ad.settings):
        ad.bus.publish_tasks(ex.session_id, ex.id, [
            (planning.parse_node(node)[1], planning.task_id(ex.id, node))])
        return True
    again = ad.store.requeue_task(ex.session_id, ex.id, planning.task_id(ex.id, node),
                                  name(ad.settings))
    dispatch_now(ad)
    return again


def ended(ad: Adapters, ex: Execution) -> int:
    """The execution ended: its tasks leave the queue and free their slots."""
    if not enabled(ad.settings):
        return 0
    if ad.store.release_execution(ex.session_id, ex.id, name(ad.settings)):
        return dispatch_now(ad)
    return 0
