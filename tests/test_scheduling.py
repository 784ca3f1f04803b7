"""The scheduler run against the store (``francine.services.scheduling``), with the real
api start, render worker and reducer over the in-memory twins (whose semantics the
conformance suite checks against the emulators): an event is a claim and the store is
the truth; a cancelled execution's tasks never start; a replacement applies once per
generation and a task's deliveries are counted over its generations; with farm
admission, copies wait in the farm's queue; what the status and the failed-task list
show."""

from __future__ import annotations

import dataclasses

import pytest

from francine import producers
from francine.base import errors
from francine.base.config import Settings
from francine.domain import planning, scheduler
from francine.domain.records import Session, Status
from francine.handlers.reducer import Reducer
from francine.handlers.worker import Worker
from francine.services import executions, farm, recovery, scheduling, tasklist, views
from francine.twins import pump, twin_adapters

SCENE = {"width": 48, "height": 32, "nao_samples": 3}
ONE_TILE = {"width": 16, "height": 16, "nao_samples": 1}
KEY = "same-seeds"  # the same execution id, so the same seeds, in every render here


def adapters(scene: dict = SCENE, **settings):
    ad = twin_adapters(dataclasses.replace(Settings(), min_task_s=0.0, max_render_instances=2,
                                           **settings))
    ad.store.create_session(Session("s", "u", "ao", "png", scene))
    return ad


def start(ad, parallel: int = 4):
    ex, _ = executions.start(ad, "u", "s", {"parallel": parallel, "tile": 16},
                             idempotency_key=KEY)
    return ex


def reference_image() -> bytes:
    ad = adapters()
    ex = start(ad)
    pump(ad, Worker(ad), Reducer(ad))
    ex = ad.store.execution("s", ex.id)
    assert ex.status == Status.DONE, ex.error
    return ad.blobs.get_result(ex.result)


def deliver_all(ad, name: str, handler) -> list[str]:
    """Hand every pending message of subscription ``name`` to ``handler``."""
    out = []
    for d in ad.bus.pull(name, 1 << 30):
        out.append(handler(d.message))
        ad.bus.ack(d.ack_id)
    return out


# --- an event is a claim, the store is the truth ----------------------------------------

@pytest.mark.parametrize("slots", [0, 2])
def test_false_task_events_change_neither_the_image_nor_the_counts(slots):
    """A task event published for every node at the start, before any task is done,
    and again halfway: the execution does not end early, ends done with the image of
    a clean render and all its tasks counted done, each reduction claimed once; with
    farm admission, no false event frees a slot (never more tasks out than slots)."""
    ad = adapters(farm_slots=slots)
    ex = start(ad)
    shape = planning.Shape.from_dict(ex.shape)
    worker, reducer = Worker(ad), Reducer(ad)
    out: dict[str, int] = {}
    publish = ad.bus.publish_tasks

    def published(sid, eid, tasks):  # tasks published and not done, at each publication
        publish(sid, eid, tasks)
        out.update({tid: 1 for _, tid, *_ in tasks})
        running = [t for t in out if ad.store.get_task(sid, eid, t).status != Status.DONE]
        assert not slots or len(running) <= slots, running

    ad.bus.publish_tasks = published

    def lie():
        for node in planning.all_nodes(shape):
            ad.bus.publish_done("s", ex.id, node)
        deliver_all(ad, "reduce", reducer.handle)

    lie()
    assert ad.store.execution("s", ex.id).status == Status.QUEUED  # not ended on a lie
    rendered = 0
    while deliveries := ad.bus.pull("render", 1):
        assert worker.handle(deliveries[0].message) == "rendered"
        ad.bus.ack(deliveries[0].ack_id)
        rendered += 1
        if rendered == shape.productions // 2:
            lie()
        deliver_all(ad, "reduce", reducer.handle)
    pump(ad, worker, reducer)
    done = ad.store.execution("s", ex.id)
    assert done.status == Status.DONE, done.error
    assert ad.blobs.get_result(done.result) == reference_image()
    status = views.view(ad, done)
    assert status["tasks"]["done"] == status["tasks"]["total"] == shape.total_tasks
    assert status["tasks"]["running"] == 0 and status["progress"] == 1.0
    for node in planning.all_nodes(shape):
        if node.startswith("r"):  # claimed once: no lie took a reduction
            assert ad.store.get_task("s", ex.id, planning.task_id(ex.id, node)).attempts == 1


def test_done_is_written_only_once_the_image_is_stored():
    """The root's document says done but its image is not there (lost on the way): its
    event does not end the execution; the root is reduced again and the execution
    ends done with its image."""
    ad = adapters()
    ex = start(ad)
    put_result, dropped = ad.blobs.put_result, []
    ad.blobs.put_result = lambda name, data, kind: (  # the image, not the sum beside it
        dropped.append(name) if not dropped and not name.endswith("sum.npz")
        else put_result(name, data, kind))
    pump(ad, Worker(ad), Reducer(ad))
    done = ad.store.execution("s", ex.id)
    assert dropped and done.status == Status.DONE
    assert ad.blobs.get_result(done.result) == reference_image()
    root = planning.Shape.from_dict(ex.shape).root
    assert ad.store.get_task("s", ex.id, planning.task_id(ex.id, root)).attempts == 2


def test_the_status_never_shows_a_task_running_beside_all_of_them_done():
    ad = adapters()
    ex = start(ad)
    total = planning.Shape.from_dict(ex.shape).total_tasks
    stats = ad.store.task_stats("s", ex.id)
    # the separate counts of a task ending between them: running, and done too
    stats = {**stats, "done": total, "running": 1}
    assert views.summarize(ex, stats, None)["tasks"]["running"] == 0
    assert views.summarize(ex, {**stats, "done": total - 2}, None)["tasks"]["running"] == 1
    ended = views.summarize(ex, {**stats, "done": total - 2}, ad.clock(), Status.DONE)
    assert ended["tasks"]["running"] == 0


# --- a cancelled execution's tasks never start -------------------------------------------

def test_a_task_delivered_after_a_cancel_never_starts_whatever_the_worker_read():
    """The worker read the execution before the cancel (here, a read it keeps); the
    claim reads it again in the same transaction as the task: refused."""
    ad = adapters()
    ex = start(ad)
    deliveries = ad.bus.pull("render", 10)
    worker = Worker(ad)
    worker.execution_ttl_s = 3600.0  # its read of the execution outlives the cancel
    assert worker.handle(deliveries[0].message) == "rendered"
    executions.end(ad, ad.store.execution("s", ex.id), Status.CANCELLED)
    assert worker.execution("s", ex.id).status == Status.QUEUED  # the read it holds
    assert worker.handle(deliveries[1].message) == "skipped: execution gone or ended"
    tid = deliveries[1].message.payload["task_id"]
    assert ad.store.get_task("s", ex.id, tid).status == Status.PENDING
    with pytest.raises(errors.NotFound):
        ad.blobs.get_partial("s", ex.id, tid.partition("-")[2])


# --- replacements and deliveries over generations -------------------------------------------

def test_a_stale_replacement_does_not_apply():
    """Two failures of the same generation (the task's own render and its copy's), both
    observed before either was carried out: one replacement, one failure counted, one
    publication."""
    ad = adapters()
    ex = start(ad, parallel=20)
    ad.bus.pull("render", 1000)
    run = scheduling.Run(ad, ex, recovery.scheduler_plan(ad, ex))
    replace = scheduler.Replace("p3", "RuntimeError: boom", 1)
    scheduling.carry_out(run, replace)
    scheduling.carry_out(run, replace)  # the copy's, of the generation replaced already
    task = ad.store.get_task("s", ex.id, planning.task_id(ex.id, "p3"))
    assert (task.generation, task.failures) == (1, 1)
    assert len(ad.bus.pull("render", 1000)) == 1


class DyingAO:
    """The ao producer, whose renders of the ``poison`` seeds kill their worker: the
    delivery reached a render and ended without a result."""

    name = "dying-ao"

    def __init__(self):
        self.ao = producers.get("ao")
        self.display, self.channels = self.ao.display, self.ao.channels
        self.poison: set[int] = set()
        self.deaths = 0

    def __getattr__(self, name):  # schema, validation, sizes, estimates: ao's
        return getattr(self.ao, name)

    def render(self, scene, tile, seed, resources):
        if seed in self.poison:
            self.deaths += 1
            raise errors.TransientError("the instance died")
        return self.ao.render(scene, tile, seed, resources)


def test_a_replaced_task_gets_no_fresh_delivery_count():
    """A pass whose every render kills its worker, on a farm that refuses its other
    deliveries (no idle instance): its first dead letter, one render reached, is
    produced again without counting; after that every dead letter counts, across the
    task's generations (its attempts are never reset), so the budget (2 of 20 passes)
    is spent after three renders, not one free try per generation."""
    ad = adapters(ONE_TILE)
    ex = start(ad, parallel=20)  # one tile: p3 is pass 3
    dying = DyingAO()
    producers.register(dying)
    ad.store.update_execution("s", ex.id, {"producer": dying.name})
    dying.poison = {planning.seed_for(ex.id, 3, g) for g in range(10)}
    worker, reducer = Worker(ad), Reducer(ad)
    handlers = {"render": worker.handle, "reduce": reducer.handle,
                "dead-letters": reducer.handle}
    p3 = planning.task_id(ex.id, "p3")
    while batch := [(n, d) for n in handlers for d in ad.bus.pull(n, 1 << 30)]:
        for name, d in batch:
            if name == "render" and d.message.payload["task_id"] == p3 and d.attempt > 1:
                ad.bus.nack(d.ack_id)  # refused: no idle instance
                continue
            try:
                handlers[name](d.message)
            except errors.PermanentError:
                pass
            except errors.TransientError:
                ad.bus.nack(d.ack_id)
                continue
            ad.bus.ack(d.ack_id)
    ended = ad.store.execution("s", ex.id)
    assert ended.status == Status.FAILED
    assert ended.error["message"].startswith("2 failures of 20 passes (the budget is 2)")
    assert "undeliverable" in ended.error["message"]
    assert dying.deaths == 3
    task = ad.store.get_task("s", ex.id, p3)
    assert (task.attempts, task.generation, task.failures) == (3, 1, 2)


# --- farm admission: copies wait in the queue -----------------------------------------------

def test_with_farm_admission_a_copys_pieces_wait_for_free_slots():
    """A straggler's copy, in pieces, waits in the farm's queue while the farm is full;
    every message published (tasks and pieces) holds a slot when it goes out, a piece
    that ended frees its own, and the straggler's end takes its copy out of the queue."""
    ad = adapters(farm_slots=2, copy_pieces=2)
    ex = start(ad)  # 4 passes of 6 tiles: 24 production tasks, 2 slots
    name = farm.name(ad.settings)
    publish, published = ad.bus.publish_tasks, []

    def holding_a_slot(sid, eid, tasks):
        for _, tid, *piece in tasks:
            entry = farm.copy_entries(tid, 2)[int(piece[0][0])] if piece else tid
            assert ad.store.get_task(sid, eid, entry).queue == f"{name}:out", entry
            published.append((tid, *piece))
        publish(sid, eid, tasks)

    ad.bus.publish_tasks = holding_a_slot
    worker, reducer = Worker(ad), Reducer(ad)
    straggler, other = ad.bus.pull("render", 10)  # the farm's two slots
    assert worker.handle(other.message) == "rendered"
    ad.bus.ack(other.ack_id)
    deliver_all(ad, "reduce", reducer.handle)  # its slot goes to the next task
    tid = straggler.message.payload["task_id"]
    node = tid.partition("-")[2]
    run = scheduling.Run(ad, ex, recovery.scheduler_plan(ad, ex))
    assert run.plan.farm and run.plan.copy_pieces == 2
    for action in scheduler.step(run.plan, scheduler.Tick(), scheduler.Observed(
            status=Status.RUNNING, published=True, running=((node, 1e3, False),))):
        scheduling.carry_out(run, action)
    # the farm is full (the straggler and the next task): the pieces wait
    assert ad.store.count_out(name) == 2
    assert [e for _, _, t in ad.store.waiting_tasks(name, 100)
            if (e := t.id).startswith(tid)] == farm.copy_entries(tid, 2)
    assert all(len(m) == 1 for m in published)  # no piece went out
    # the other tasks, then the pieces as slots free: the copy wins
    pump(ad, worker, reducer)
    assert ad.store.execution("s", ex.id).status == Status.DONE
    assert {m for m in published if len(m) == 2} == {(tid, "0/2"), (tid, "1/2")}
    assert len(published) == 22 + 2  # the 22 other tasks and the 2 pieces, once each
    assert worker.handle(straggler.message) == "skipped: execution gone or ended"
    assert ad.store.count_out(name) == 0 and ad.store.waiting_tasks(name, 100) == []


# --- the failed-task list -------------------------------------------------------------------

class FlakyAO(DyingAO):
    """Renders of the poisoned seeds raise (a failed pass, replaced)."""

    name = "flaky-ao-twins"

    def render(self, scene, tile, seed, resources):
        if seed in self.poison:
            raise RuntimeError(f"cosmic ray at seed {seed}")
        return self.ao.render(scene, tile, seed, resources)


def test_the_failed_task_list_shows_a_replaced_task_that_never_rendered_again_as_failed():
    ad = adapters(ONE_TILE)
    ex = start(ad, parallel=20)  # budget 2
    flaky = FlakyAO()
    producers.register(flaky)
    ad.store.update_execution("s", ex.id, {"producer": flaky.name})
    flaky.poison = {planning.seed_for(ex.id, 4), planning.seed_for(ex.id, 11)}
    deliveries = {d.message.payload["task_id"].partition("-")[2]: d
                  for d in ad.bus.pull("render", 100)}
    worker = Worker(ad)
    assert worker.handle(deliveries["p4"].message).startswith("failed: RuntimeError")

    def listed():
        ex_now = ad.store.execution("s", ex.id)
        return [(t["node"], t["status"], t["failures"], t["replaced"]) for t in
                tasklist.list_tasks(ad, ex_now, {"status": "failed"})["tasks"]]

    # replaced, its new pass still to render: pending, with its failure
    assert listed() == [("p4", "pending", 1, 1)]
    with pytest.raises(errors.PermanentError):
        worker.handle(deliveries["p11"].message)
    # the execution failed before p4's replacement rendered: failed, not pending
    assert listed() == [("p11", "failed", 1, 0), ("p4", "failed", 1, 1)]
