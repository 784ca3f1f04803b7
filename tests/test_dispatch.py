"""Farm-wide admission and fair share (francine.domain.fair_share, carried out by
francine.services.farm over the store twin, whose queue the conformance suite checks
against Firestore).

Properties, over random farms, users, weights and interleavings of finished tasks
(duplicated events, extra dispatches, requeues): dispatch never publishes a task twice
nor more tasks than the farm has slots, every queued task is published in the end, and
each backlogged user is served in proportion to its weight (within one task and the
credit of a user who was idle).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from francine.base.config import Settings
from francine.domain import fair_share as dispatch
from francine.domain import planning
from francine.domain.records import Kind, Task
from francine.services import farm
from francine.twins import twin_adapters

COST = 2.0  # estimated seconds of every task here


class Recorder:
    """The bus port's publish_tasks, recording what was published."""

    def __init__(self):
        self.published: list[tuple[str, str]] = []

    def publish_tasks(self, sid, eid, tasks):
        self.published += [(eid, tid) for _, tid in tasks]


def farm_of(slots: int, weights: dict[str, float], credit: float = 0.0):
    spec = ",".join(f"{u}={w}" for u, w in weights.items())
    ad = twin_adapters(dataclasses.replace(Settings(), farm_slots=slots, fair_weights=spec,
                                           fair_credit_s=credit))
    ad.bus = Recorder()
    return ad


def submit(ad, user: str, eid: str, n: int) -> dispatch.Account:
    """What planning does with farm admission: tag, write, dispatch."""
    tasks = [Task(planning.task_id(eid, f"p{i}"), f"p{i}", Kind.PRODUCE, None,
                  tile=(0, 0, 1, 1), pass_index=i, seed=i) for i in range(n)]
    account = farm.enqueue(ad, SimpleNamespace(id=eid, user=user, task_seconds=COST), tasks)
    ad.store.write_tasks(user, eid, tasks)
    farm.dispatch_now(ad)
    return account


def finish(ad, eid: str, tid: str) -> None:
    sid = eid.split("-")[0]
    farm.finished(ad, SimpleNamespace(session_id=sid, id=eid), tid.partition("-")[2])


def owner(eid: str) -> str:
    return eid.split("-")[0]


# --- the pure rules ----------------------------------------------------------------------

def test_weights_parse_and_bad_ones_are_named():
    assert dispatch.parse_weights("") == {}
    assert dispatch.parse_weights("alice=2, bob=0.5,") == {"alice": 2.0, "bob": 0.5}
    for bad in ("alice", "alice=0", "alice=-1", "=2", "alice=x", "alice=inf"):
        with pytest.raises(ValueError, match="FRANCINE_FAIR_WEIGHTS"):
            dispatch.parse_weights(bad)


def test_a_reservation_is_made_once_per_execution_and_credit_is_bounded():
    first = dispatch.reserve(None, "e1", v=100.0, credit=10.0, amount=8.0)
    assert (first.start, first.finish, first.credit) == (100.0, 108.0, 10.0)  # was idle
    assert dispatch.tags(first, 4.0, 4) == [(100.0, 90.0), (104.0, 98.0), (108.0, 106.0),
                                            (112.0, 112.0)]  # the credit is used up
    assert dispatch.reserve(first, "e1", 500.0, 10.0, 8.0) == first  # a retried plan
    second = dispatch.reserve(first, "e2", v=105.0, credit=10.0, amount=4.0)
    assert (second.start, second.finish, second.credit) == (108.0, 112.0, 7.0)
    third = dispatch.reserve(second, "e3", v=100.0, credit=10.0, amount=4.0)
    assert (third.start, third.credit) == (112.0, 0.0)  # backlogged: no credit
    later = dispatch.reserve(third, "e4", v=1000.0, credit=10.0, amount=1.0)
    assert (later.start, later.credit) == (1000.0, 10.0)  # idleness earns the credit only
    assert dispatch.virtual_time(3.0, 50.0) == 3.0
    assert dispatch.virtual_time(None, 50.0) == 50.0
    assert dispatch.virtual_time(None, None) == 0.0


def test_decide_fills_free_slots_lowest_ranks_first_freed_slots_first():
    waiting = [dispatch.Candidate("s", "e", f"t{i}", tag) for i, tag in
               enumerate([5.0, 1.0, 3.0, 2.0])]
    takes = dispatch.decide(4, 1, waiting, freed=(2,))
    assert [t.candidate.rank for t in takes] == [1.0, 2.0, 3.0]
    assert [t.slot for t in takes] == [2, 1, 3]  # the freed one first
    # slots held known (a sharded farm): never one of them
    takes = dispatch.decide(4, 2, waiting, freed=(1,), held=(0, 3))
    assert [t.slot for t in takes] == [1, 2]
    assert dispatch.decide(2, 2, waiting) == []
    assert dispatch.decide(2, 3, waiting) == []


# --- carried out over the twin -------------------------------------------------------------

def test_a_small_render_of_a_quiet_user_overtakes_a_backlog():
    ad = farm_of(2, {}, credit=60.0)
    submit(ad, "a", "a-e1", 256)
    assert len(ad.bus.published) == 2
    for _ in range(10):  # a's render runs
        finish(ad, *ad.bus.published[-1])
    submit(ad, "b", "b-e1", 4)
    assert len(ad.bus.published) == 12  # no slot free: b waits for the next one
    for _ in range(6):
        finish(ad, *ad.bus.published[-1])
    assert [owner(e) for e, _ in ad.bus.published[12:]] == ["b"] * 4 + ["a"] * 2


def test_without_credit_a_newcomer_shares_the_farm_evenly():
    ad = farm_of(1, {}, credit=0.0)
    submit(ad, "a", "a-e1", 20)
    finish(ad, *ad.bus.published[-1])
    submit(ad, "b", "b-e1", 5)
    while len(ad.bus.published) < 11:
        finish(ad, *ad.bus.published[-1])
    after = [owner(e) for e, _ in ad.bus.published[2:11]]
    assert after == ["a", "b"] * 4 + ["a"]  # alternating from then on


def test_an_ended_execution_frees_its_slots_and_leaves_the_queue():
    ad = farm_of(2, {})
    submit(ad, "a", "a-e1", 5)
    submit(ad, "b", "b-e1", 3)
    assert {owner(e) for e, _ in ad.bus.published} == {"a"}
    farm.ended(ad, SimpleNamespace(session_id="a", id="a-e1"))  # cancelled
    assert [owner(e) for e, _ in ad.bus.published[2:]] == ["b", "b"]
    assert len(ad.store.waiting_tasks(farm.name(ad.settings), 10)) == 1


def test_a_task_refused_for_capacity_is_queued_again_at_its_place():
    ad = farm_of(1, {})
    submit(ad, "a", "a-e1", 3)
    (first,) = ad.bus.published
    # Its deliveries were all refused: dead-lettered before it ever started.
    farm.requeue(ad, SimpleNamespace(session_id="a", id="a-e1"), first[1].partition("-")[2])
    assert ad.bus.published == [first, first]  # the head of the queue, published again
    assert ad.store.count_out(farm.name(ad.settings)) == 1


users_st = st.dictionaries(st.sampled_from("abcd"), st.sampled_from([0.5, 1.0, 2.0, 3.0]),
                           min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(slots=st.integers(1, 4), weights=users_st, credit=st.sampled_from([0.0, 4.0, 20.0]),
       sizes=st.lists(st.integers(1, 12), min_size=1, max_size=5),
       choices=st.lists(st.integers(0, 1000), min_size=200, max_size=200))
def test_dispatch_publishes_each_task_once_within_the_slots_and_all_in_the_end(
        slots, weights, credit, sizes, choices):
    ad = farm_of(slots, weights, credit)
    users = sorted(weights)
    submitted = {}
    pending = list(enumerate(sizes))
    running: list[tuple[str, str]] = []
    done: set[tuple[str, str]] = set()
    finished_once = set()
    picks = iter(choices)
    for _ in range(10_000):
        for pair in ad.bus.published[len(done) + len(running):]:
            running.append(pair)
        assert len(running) <= slots  # dispatch alone never exceeds the farm
        if not running and not pending:
            break
        c = next(picks, 0)
        if pending and (c % 3 == 0 or not running):  # a user submits
            i, n = pending.pop(0)
            eid = f"{users[i % len(users)]}-e{i}"
            submit(ad, owner(eid), eid, n)
            submitted[eid] = n
            continue
        pair = running.pop(c % len(running))
        finish(ad, *pair)
        if c % 5 == 0:
            finish(ad, *pair)  # the event delivered twice
        if c % 7 == 0:
            farm.dispatch_now(ad)  # the watchdog's sweep at the same moment
        done.add(pair)
        finished_once.add(pair)
    published = ad.bus.published
    assert len(published) == len(set(published)), "a task was published twice"
    assert len(published) == sum(submitted.values()), "a queued task was never published"
    assert ad.store.count_out(farm.name(ad.settings)) == 0


@settings(max_examples=60, deadline=None)
@given(slots=st.integers(1, 4), weights=users_st, credit=st.sampled_from([0.0, 4.0, 20.0]),
       arrivals=st.lists(st.integers(0, 3), min_size=4, max_size=4))
def test_backlogged_users_are_served_in_proportion_to_their_weights(
        slots, weights, credit, arrivals):
    """Users arrive (after 0–3 tasks of the others finished), each with a backlog that
    outlasts the run; while every one is backlogged, the service each received (tasks ×
    cost / weight) differs by at most one task plus the credit."""
    ad = farm_of(slots, weights, credit)
    users = sorted(weights)
    steps = {u: COST / weights[u] for u in users}
    for u, wait in zip(users, arrivals, strict=False):
        for _ in range(wait):
            if ad.bus.published:
                finish(ad, *ad.bus.published[-1])
        submit(ad, u, f"{u}-e", 400)
    for _ in range(slots):  # every slot turned over once: all users are in the queue
        finish(ad, *ad.bus.published[-1])
    base = len(ad.bus.published)
    for _ in range(120):
        finish(ad, *ad.bus.published[-1])
    window = [owner(e) for e, _ in ad.bus.published[base:]]
    assert len(window) == 120
    service = {u: window.count(u) * steps[u] for u in users}
    gap = max(service.values()) - min(service.values())
    assert gap <= 2 * max(steps.values()) + credit + 1e-9, (service, steps)


# --- the scheduler's rules for refused deliveries ----------------------------------------

def test_a_dead_letter_counts_against_a_task_only_if_a_delivery_reached_a_render():
    from francine.domain.records import Status
    from francine.domain.scheduler import (
        REDRIVE_LIMIT,
        DeadLettered,
        Observed,
        Plan,
        Publish,
        Redrive,
        Replace,
        Reproduce,
        Requeue,
        step,
    )

    plan = Plan(planning.make_shape(64, 64, 4, 32))
    never_started = Observed(status=Status.RUNNING, task_status=Status.PENDING)
    # queued again at its place in the farm, or (no farm admission) published again
    farmed = dataclasses.replace(plan, farm=True)
    assert step(farmed, DeadLettered(Kind.PRODUCE, "p3", 10), never_started) == [Requeue("p3")]
    assert step(plan, DeadLettered(Kind.PRODUCE, "p3", 10), never_started) == [Publish((3,))]
    # one delivery reached a render and its worker died, the other nine were refused:
    # produced again, not counted; deliveries that reached renders again and again count
    reached = Observed(status=Status.RUNNING, task_status=Status.RUNNING, attempts=1)
    assert step(plan, DeadLettered(Kind.PRODUCE, "p3", 10), reached) == [Reproduce("p3")]
    again = dataclasses.replace(reached, attempts=2)
    assert isinstance(step(plan, DeadLettered(Kind.PRODUCE, "p3", 10), again)[0], Replace)
    # The event of a done task: its pixels exist, so it is re-driven, never counted
    # against the task; only a reduction that keeps failing when re-driven fails.
    up = planning.parent(plan.shape, "p3")
    done = Observed(status=Status.RUNNING, task_status=Status.DONE, redrives=REDRIVE_LIMIT - 1)
    assert step(plan, DeadLettered(Kind.REDUCE, "p3", 5), done) == [Redrive(up, "p3")]
    tired = dataclasses.replace(done, redrives=REDRIVE_LIMIT, parent_status=Status.RUNNING)
    assert step(plan, DeadLettered(Kind.REDUCE, "p3", 5), tired)[-1].status == Status.FAILED
    untaken = dataclasses.replace(tired, parent_status=Status.PENDING)
    assert step(plan, DeadLettered(Kind.REDUCE, "p3", 5), untaken) == [Redrive(up, "p3")]


def test_the_handlers_render_every_users_execution_through_the_farm_queue():
    """The api's start, the render worker and the reducer over the twins, with farm
    admission of 2: three users' executions all end done, each task published once."""
    from francine.domain.records import Session
    from francine.handlers.reducer import Reducer
    from francine.handlers.worker import Worker
    from francine.services import executions
    from francine.twins import pump

    ad = twin_adapters(dataclasses.replace(Settings(), farm_slots=2, min_task_s=0.0))
    published = []
    publish = ad.bus.publish_tasks
    ad.bus.publish_tasks = lambda sid, eid, tasks: (published.extend(t for _, t in tasks),
                                                     publish(sid, eid, tasks))
    started = []
    for user in ("a", "b", "c"):
        ad.store.create_session(Session(user, user, "ao", "png",
                                        {"width": 32, "height": 16, "nao_samples": 2}))
        ex, _ = executions.start(ad, user, user, {"parallel": 4, "tile": 16})
        started.append(ex)
    assert len(published) == 2  # the farm's size; the rest waits in the queue
    pump(ad, Worker(ad), Reducer(ad))
    for ex in started:
        assert ad.store.execution(ex.session_id, ex.id).status == "done"
    assert len(published) == len(set(published)) == 3 * 8  # 2 tiles × 4 passes each
    assert ad.store.count_out(farm.name(ad.settings)) == 0
