"""Failure paths on the real emulators: undeliverable tasks end in the dead-letter topic
and fail the execution with a reason; duplicate deliveries change nothing; exactly one
of many concurrent claimants wins a reduction."""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import time

import pytest

from francine.domain import planning
from francine.tools.local.processes import environment


@contextlib.contextmanager
def bucket_gone(stack, adapters, name: str):
    """Delete a bucket of the storage emulator for the duration (a real outage of the
    dependency, not a mock), then put it back."""
    from google.api_core import exceptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with environment(stack.info["env"]):
        client = storage.Client(project=stack.info["project"],
                                credentials=AnonymousCredentials())
        # An earlier test's work may still store an object between the deletion of the
        # objects and of the bucket (409, not empty): delete again.
        for attempt in range(10):
            try:
                client.bucket(name).delete(force=True)
                break
            except exceptions.Conflict:
                if attempt == 9:
                    raise
                time.sleep(0.5)
        try:
            yield
        finally:
            adapters.blobs.ensure_buckets()


def test_undeliverable_production_task_fails_the_execution(stack, adapters, client):
    sid = client.create_session("ao", {"width": 16, "height": 16, "nao_samples": 1})["id"]
    with bucket_gone(stack, adapters, adapters.settings.partials_bucket):
        e = client.execute(sid, parallel=1)
        status = client.wait(sid, e["id"], timeout_s=120)
    assert status["status"] == "failed"
    assert status["error"]["code"] == "task_failed"
    assert "production task p0" in status["error"]["message"]
    assert "every delivery that reached a render failed" in status["error"]["message"]
    assert status["time"]["finished"]
    task = adapters.store.get_task(sid, e["id"], planning.task_id(e["id"], "p0"))
    assert task.status == "failed" and task.attempts >= 5


def test_failed_final_reduction_fails_the_execution(stack, adapters, client):
    sid = client.create_session("ao", {"width": 16, "height": 16, "nao_samples": 1})["id"]
    with bucket_gone(stack, adapters, adapters.settings.results_bucket):
        e = client.execute(sid, parallel=2)
        status = client.wait(sid, e["id"], timeout_s=120)
    assert status["status"] == "failed"
    assert "reduction" in status["error"]["message"]
    # the production tasks themselves were fine
    assert status["tasks"]["done"] >= 2


def test_duplicate_deliveries_change_nothing(stack, adapters, client):
    """Deliver every finished task and its event again while the execution runs."""
    from test_api_pipeline import decode_png, reference_image

    scene = {"width": 256, "height": 128}
    sid = client.create_session("ao", scene)["id"]
    shape = planning.make_shape(256, 128, 24, None)
    eid = client.execute(sid, parallel=24)["id"]
    tasks = {i: planning.task_id(eid, f"p{i}") for i in range(shape.productions)}
    duplicated = set()
    deadline = time.monotonic() + 120
    while client.execution(sid, eid)["status"] not in ("reducing", "done", "failed"):
        assert time.monotonic() < deadline, "the execution did not finish"
        for i, tid in tasks.items():
            if i not in duplicated and adapters.store.get_task(sid, eid, tid).status == "done":
                adapters.bus.publish_tasks(sid, eid, [(i, tid)])
                adapters.bus.publish_done(sid, eid, f"p{i}")
                duplicated.add(i)
    assert duplicated, "no task finished while the execution ran"
    assert client.wait(sid, eid, timeout_s=120)["status"] == "done"
    time.sleep(2.0)  # let the duplicates that are still in flight arrive
    workers = [pathlib.Path(stack.info["logs"]) / f"worker-{i}.log" for i in range(2)]
    logs = "".join(w.read_text() for w in workers)
    assert "announced again: already done" in logs or "skipped: execution gone" in logs
    for node in planning.all_nodes(shape):
        task = adapters.store.get_task(sid, eid, planning.task_id(eid, node))
        assert task.status == "done"
        if node.startswith("r"):
            assert task.attempts == 1, node  # no reduction ran twice
    image = decode_png(client.result(sid, eid))
    expected = reference_image(scene, eid, 24)
    assert abs(image.astype(int) - expected.astype(int)).max() <= 1


def finished_execution(client, adapters, parallel=4):
    sid = client.create_session("ao", {"width": 32, "height": 32, "nao_samples": 2})["id"]
    eid = client.execute(sid, parallel=parallel)["id"]
    assert client.wait(sid, eid, timeout_s=60)["status"] == "done"
    return sid, eid, adapters.store.execution(sid, eid)


def test_a_reducer_that_died_after_storing_the_image_is_finished_by_a_redelivery(
        client, adapters):
    from francine.domain.envelope import Message
    from francine.handlers.reducer import Reducer

    sid, eid, _ = finished_execution(client, adapters)
    # The crash window: the root task is done and the image stored, but the execution
    # was never marked done (its reducer was killed in between).
    adapters.store.update_execution(sid, eid, {"status": "queued", "finished": None,
                                               "summary": None, "result": None})
    assert client.execution(sid, eid)["status"] != "done"
    outcome = Reducer(adapters).handle(Message("redelivered-1", {
        "session_id": sid, "execution_id": eid, "node": "p3"}, {"type": "task_done"}))
    assert outcome == "waiting for siblings"  # nothing left to reduce...
    status = client.execution(sid, eid)
    assert status["status"] == "done"  # ...but the execution is ended
    assert client.result(sid, eid)[:8] == b"\x89PNG\r\n\x1a\n"


def test_planning_again_never_resets_a_task(client, adapters):
    from francine.services import executions

    sid, eid, ex = finished_execution(client, adapters)
    # a retried request that believes nothing was planned or published yet
    executions.publish(adapters, dataclasses.replace(ex, planned=False, published=False))
    shape = planning.Shape.from_dict(ex.shape)
    for node in planning.all_nodes(shape):
        assert adapters.store.get_task(sid, eid, planning.task_id(eid, node)).status == "done"
    time.sleep(1.0)  # the republished tasks reach the workers, which skip them
    assert client.execution(sid, eid)["status"] == "done"


def test_a_delivery_for_a_task_of_another_kind_changes_nothing(client, adapters):
    from francine.domain.envelope import Message
    from francine.handlers.worker import Worker

    sid = client.create_session("ao", {"width": 16, "height": 16})["id"]
    eid = client.execute(sid, parallel=2)["id"]
    root = planning.task_id(eid, "r1.0")
    before = adapters.store.get_task(sid, eid, root)
    outcome = Worker(adapters).handle(Message("bogus", {
        "session_id": sid, "execution_id": eid, "task_id": root}, {"type": "produce"}))
    assert outcome in ("skipped: not a production task", "skipped: execution gone or ended")
    after = adapters.store.get_task(sid, eid, root)
    # the worker left it alone (the reducer may have taken it since: it is live)
    assert before.owner != "bogus" and after.owner != "bogus"
    assert client.wait(sid, eid, timeout_s=60)["status"] == "done"


def test_an_execution_whose_publishing_died_is_resumed_by_a_status_read(
        stack, client, adapters):
    """The request that creates an execution dies after recording it (here: its topic
    is missing) and the client does not retry: the next status read finishes the job."""
    import dataclasses
    import datetime as dt

    from francine.base import errors
    from francine.services import executions
    from francine.tools.wiring import make_adapters

    sid = client.create_session("ao", {"width": 16, "height": 16})["id"]
    user = adapters.store.get_session(sid).user
    with environment(stack.info["env"]):
        crippled = make_adapters(
            dataclasses.replace(adapters.settings, produce_topic="no-such-topic"))
    with pytest.raises(errors.FrancineError):
        executions.start(crippled, user, sid, {"parallel": 2}, idempotency_key="k")
    eid = executions.execution_id(user, sid, "k")
    ex = adapters.store.execution(sid, eid)
    assert ex.planned and not ex.published
    assert client.execution(sid, eid)["status"] == "queued"  # too recent to touch
    adapters.store.update_execution(sid, eid, {
        "created": ex.created - dt.timedelta(seconds=executions.STALLED_S + 1)})
    client.execution(sid, eid)  # notices, and publishes
    assert client.wait(sid, eid, timeout_s=60)["status"] == "done"
