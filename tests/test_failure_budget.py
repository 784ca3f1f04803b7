"""Failure budget, replacement passes, speculative copies and lost inputs, on the real
emulators (Firestore, Pub/Sub, Cloud Storage) with the real worker, reducer and
watchdog code, driven by hand so that a render can be made to fail or to hang at a
chosen moment: the messages go to topics of this test that nobody subscribes to, and
the test delivers them itself, as Pub/Sub would (again and again, in any order)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
import uuid

import numpy as np
import pytest

from francine import producers
from francine.base import errors
from francine.domain import imaging, planning
from francine.domain.envelope import DEAD_LETTER_ATTRIBUTE, Message
from francine.domain.producer import Tile
from francine.domain.records import Session, Status
from francine.handlers import watchdog
from francine.services import executions
from francine.tools.client import ApiError
from francine.tools.local.processes import environment

SCENE = {"width": 32, "height": 32, "nao_samples": 2}


class FlakyAO:
    """The ao producer, whose render raises when ``fails(seed)`` says so, and may
    block on ``gate`` for a chosen seed (a straggler)."""

    name = "flaky-ao"

    def __init__(self):
        self.ao = producers.get("ao")
        self.display, self.channels = self.ao.display, self.ao.channels
        self.fails = lambda seed: False
        self.error = None  # the same error from every failing render (a poison scene)
        self.slow_seed, self.gate = None, threading.Event()
        self.renders = 0

    def __getattr__(self, name):  # schema, validation, sizes, estimates: ao's
        return getattr(self.ao, name)

    def render(self, scene, tile, seed, resources):
        self.renders += 1
        if self.fails(seed):
            raise RuntimeError(self.error or f"cosmic ray at seed {seed}")
        if seed == self.slow_seed:
            self.slow_seed = None  # only the first render of it straggles
            assert self.gate.wait(60)
        return self.ao.render(scene, tile, seed, resources)


class Farm:
    """The pipeline with a hand-driven bus."""

    def __init__(self, stack, adapters):
        from francine.handlers.reducer import Reducer
        from francine.handlers.worker import Worker
        from francine.tools.wiring import make_adapters

        tag = uuid.uuid4().hex[:8]
        settings = dataclasses.replace(
            adapters.settings, produce_topic=f"test-{tag}-produce",
            events_topic=f"test-{tag}-events", produce_shards=1, min_task_s=0.0)
        with environment(stack.info["env"]):
            self.ad = make_adapters(settings)
        publisher = self.ad.bus._publisher
        for topic in (settings.produce_topic, settings.events_topic):
            publisher.create_topic(name=publisher.topic_path(settings.project, topic))
        self.worker, self.reducer = Worker(self.ad), Reducer(self.ad)
        self.producer = FlakyAO()
        producers.register(self.producer)

    def start(self, user: str, parallel: int) -> tuple[str, str]:
        sid = uuid.uuid4().hex[:20]
        self.ad.store.create_session(Session(sid, user, FlakyAO.name, "png", SCENE,
                                             created=self.ad.clock()))
        ex, _ = executions.start(self.ad, user, sid, {"parallel": parallel})
        return sid, ex.id

    def deliver(self, sid: str, eid: str, node: str, message_id: str | None = None) -> str:
        payload = {"session_id": sid, "execution_id": eid,
                   "task_id": planning.task_id(eid, node)}
        try:
            return self.worker.handle(Message(message_id or uuid.uuid4().hex, payload,
                                              {"type": "produce"}))
        except errors.PermanentError as e:  # acknowledged by the entry point
            return f"failed: {e}"

    def announce(self, sid: str, eid: str, node: str) -> str:
        return self.reducer.handle(Message(uuid.uuid4().hex, {
            "session_id": sid, "execution_id": eid, "node": node}, {"type": "task_done"}))

    def tasks(self, sid: str, eid: str):
        return self.ad.store.tasks_in(sid, eid, ("pending", "running", "done", "failed"))

    def run(self, sid: str, eid: str, rounds: int = 20) -> dict:
        """Deliver every unfinished production task, then the event of every done
        task, until the execution is final (as redelivery would)."""
        for _ in range(rounds):
            ex = self.ad.store.execution(sid, eid)
            if ex.final:
                return ex
            tasks = self.tasks(sid, eid)
            for t in tasks:
                if t.kind == "produce" and t.status in ("pending", "running"):
                    self.deliver(sid, eid, t.node)
            for t in self.tasks(sid, eid):
                if t.status == "done":
                    self.announce(sid, eid, t.node)
        return self.ad.store.execution(sid, eid)


@pytest.fixture
def farm(stack, adapters):
    return Farm(stack, adapters)


@pytest.fixture
def user(client, adapters):
    """The id of the client's user (to own sessions made behind the API)."""
    sid = client.create_session("ao", {"width": 8, "height": 8})["id"]
    return adapters.store.get_session(sid).user


def reference(eid: str, parallel: int, generations: dict[int, int]) -> np.ndarray:
    ao = producers.get("ao")
    scene = ao.validate(SCENE, None)
    total = np.zeros((32, 32, 1), np.float64)
    for p in range(parallel):
        seed = planning.seed_for(eid, p, generations.get(p, 0))
        total += ao.render(scene, Tile(0, 0, 32, 32), seed, None)
    return imaging.to_8bit((total / parallel).astype(np.float32), "linear")[:, :, 0]


def test_a_failed_pass_is_replaced_with_a_fresh_seed_and_the_image_keeps_its_weight(
        farm, user, client):
    from test_api_pipeline import decode_png

    sid, eid = farm.start(user, parallel=20)  # 20 passes: a budget of 2 failures
    bad = planning.seed_for(eid, 3)
    farm.producer.fails = lambda seed: seed == bad
    assert farm.deliver(sid, eid, "p3").startswith("failed: RuntimeError: cosmic ray")
    task = farm.ad.store.get_task(sid, eid, planning.task_id(eid, "p3"))
    assert (task.status, task.failures, task.generation) == ("pending", 1, 1)
    ex = farm.run(sid, eid)
    assert ex.status == "done", ex.error
    status = client.execution(sid, eid)
    assert status["tasks"]["replaced"] == 1 and status["tasks"]["failed"] == 0
    listed = client.request("GET", f"/v1/sessions/{sid}/executions/{eid}/tasks",
                            params={"status": "failed"}).json()["tasks"]
    assert [(t["node"], t["status"], t["failures"], t["replaced"]) for t in listed] == [
        ("p3", "done", 1, 1)]
    assert "cosmic ray" in listed[0]["error"]
    image = decode_png(client.result(sid, eid))
    # all 20 passes, pass 3 with its replacement's seed
    expected = reference(eid, 20, {3: 1})
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(image.astype(int) - reference(eid, 19, {}).astype(int)).max() > 1


def test_failures_reaching_ten_percent_fail_the_execution_and_nothing_runs_after(
        farm, user, client):
    sid, eid = farm.start(user, parallel=20)  # budget 2
    bad = {planning.seed_for(eid, 4), planning.seed_for(eid, 11)}
    farm.producer.fails = lambda seed: seed in bad
    assert farm.deliver(sid, eid, "p4").startswith("failed: RuntimeError")
    assert not farm.ad.store.execution(sid, eid).final
    outcome = farm.deliver(sid, eid, "p11")
    assert outcome.startswith("failed: 2 failures of 20 passes (the budget is 2)")
    status = client.execution(sid, eid)
    assert status["status"] == "failed" and status["error"]["code"] == "task_failed"
    assert "p11: RuntimeError: cosmic ray" in status["error"]["message"]
    assert "p4: RuntimeError: cosmic ray" in status["error"]["message"]
    renders = farm.producer.renders
    farm.run(sid, eid, rounds=2)  # every task delivered again: none renders
    assert farm.producer.renders == renders
    listed = client.request("GET", f"/v1/sessions/{sid}/executions/{eid}/tasks",
                            params={"status": "failed"}).json()["tasks"]
    # p4 was replaced, but the execution failed before its new pass rendered: failed
    assert {(t["node"], t["status"], t["failures"], t["replaced"]) for t in listed} == {
        ("p4", "failed", 1, 1), ("p11", "failed", 1, 0)}
    with pytest.raises(ApiError) as refused:
        client.request("GET", f"/v1/sessions/{sid}/executions/{eid}/tasks",
                       params={"status": "running"})
    assert refused.value.status == 400 and "status" in str(refused.value)


def test_a_poison_scene_fails_at_the_budget_not_after_the_retry_schedule(farm, user, client):
    sid, eid = farm.start(user, parallel=40)  # budget 4
    farm.producer.fails = lambda seed: True
    t0 = time.monotonic()
    ex = farm.run(sid, eid)
    assert ex.status == "failed"
    assert time.monotonic() - t0 < 60
    assert farm.producer.renders == 4  # the budget, then nothing more runs
    assert ex.error["message"].startswith("4 failures of 40 passes (the budget is 4)")


def test_a_poison_scene_fails_without_spending_a_large_budget(farm, user, client):
    sid, eid = farm.start(user, parallel=100)  # budget 10
    farm.producer.fails = lambda seed: True
    farm.producer.error = "the scene divides by zero"
    for node in ("p0", "p1", "p2"):  # one flaky instance could do this: replaced
        assert farm.deliver(sid, eid, node).startswith("failed: RuntimeError")
    assert not farm.ad.store.execution(sid, eid).final
    # p0 again, with its fresh seed: the same error, so it is the scene
    assert farm.deliver(sid, eid, "p0").startswith("failed: 3 tasks failed with the same")
    ex = farm.ad.store.execution(sid, eid)
    assert ex.status == "failed" and "the scene divides by zero" in ex.error["message"]
    assert farm.producer.renders == 4
    farm.run(sid, eid, rounds=1)  # nothing runs after
    assert farm.producer.renders == 4


def test_a_straggler_gets_a_copy_and_the_first_result_wins(farm, user, client, stack):
    from test_api_pipeline import decode_png

    sid, eid = farm.start(user, parallel=4)
    farm.producer.slow_seed = planning.seed_for(eid, 2)
    original = threading.Thread(target=lambda: outcomes.append(
        farm.deliver(sid, eid, "p2", "original")))
    outcomes: list[str] = []
    original.start()
    for node in ("p0", "p1", "p3"):
        assert farm.deliver(sid, eid, node) == "rendered"
    tid = planning.task_id(eid, "p2")
    deadline = time.monotonic() + 30
    while farm.ad.store.get_task(sid, eid, tid).status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ex = farm.ad.store.execution(sid, eid)
    # Not yet a straggler: running for less than SPECULATE_MIN_S.
    assert watchdog.tick(farm.ad, ex, stall_s=3600) == []
    # It has been running for 10 minutes, as far as the watchdog can tell.
    started = farm.ad.store.get_task(sid, eid, tid).started
    farm.ad.store.update_task(sid, eid, tid, {"started": started - dt.timedelta(minutes=10)})
    actions = watchdog.tick(farm.ad, ex, stall_s=3600)
    assert [type(a).__name__ for a in actions] == ["Speculate"]
    assert watchdog.tick(farm.ad, ex, stall_s=3600) == []  # one copy only
    assert farm.deliver(sid, eid, "p2", "copy") == "rendered"  # the copy wins
    farm.producer.gate.set()
    original.join(60)
    assert outcomes == ["dropped: another copy finished first"]
    assert farm.run(sid, eid).status == "done"
    assert client.execution(sid, eid)["tasks"]["speculative"] == 1
    image = decode_png(client.result(sid, eid))
    assert np.abs(image.astype(int) - reference(eid, 4, {}).astype(int)).max() <= 1


def test_a_lost_input_is_produced_again(farm, user, client, stack):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from test_api_pipeline import decode_png

    sid, eid = farm.start(user, parallel=4)
    for node in ("p0", "p1", "p2", "p3"):
        assert farm.deliver(sid, eid, node) == "rendered"
    with environment(stack.info["env"]):
        gcs = storage.Client(project=stack.info["project"], credentials=AnonymousCredentials())
        gcs.bucket(farm.ad.settings.partials_bucket).blob(
            farm.ad.blobs.partial_name(sid, eid, "p1")).delete()
    # p0's event: p0 and p1 are done, their reduction finds p1's partial lost
    assert farm.announce(sid, eid, "p0") == "waiting for siblings"
    p1 = farm.ad.store.get_task(sid, eid, planning.task_id(eid, "p1"))
    assert p1.status == "pending"
    assert farm.run(sid, eid).status == "done"
    image = decode_png(client.result(sid, eid))
    assert np.abs(image.astype(int) - reference(eid, 4, {}).astype(int)).max() <= 1


def test_a_dead_lettered_task_event_is_re_driven_not_failed(farm, user, client):
    sid, eid = farm.start(user, parallel=4)
    for node in ("p0", "p1", "p2", "p3"):
        assert farm.deliver(sid, eid, node) == "rendered"
    # Every delivery of p3's event failed (say the reducer was down): dead-lettered.
    dead = Message("dl-1", {"session_id": sid, "execution_id": eid, "node": "p3"},
                   {"type": "task_done", DEAD_LETTER_ATTRIBUTE: "events-reduce",
                    "CloudPubSubDeadLetterSourceDeliveryCount": "5"})
    assert farm.reducer.handle(dead).startswith("re-driven")
    shape = planning.Shape.from_dict(farm.ad.store.execution(sid, eid).shape)
    up = planning.parent(shape, "p3")
    assert farm.ad.store.get_task(sid, eid, planning.task_id(eid, up)).redrives == 1
    assert farm.run(sid, eid).status == "done"
    assert client.execution(sid, eid)["tasks"]["redriven"] == 1
    assert farm.ad.store.execution(sid, eid).status == Status.DONE
