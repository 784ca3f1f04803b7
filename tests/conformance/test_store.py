"""The Store port: the same assertions on the Firestore emulator and on the twin."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest

from francine.base import errors
from francine.domain.records import Claim, Execution, Kind, Session, Status, Task


def session(backend, sid):
    backend.store.create_session(Session(sid, "conformance", "ao", "png", {"width": 8}))


def record(sid, eid, user):
    return Execution(
        id=eid, session_id=sid, user=user,
        created=dt.datetime.now(dt.UTC).replace(microsecond=123000), producer="ao",
        format="png", display="linear", channels=1, scene={"width": 16},
        shape={"width": 16, "height": 8, "passes": 2, "tile": 8, "fan_in": 2}, parallel=2,
        resources={"a.png": {"sha256": "0" * 64, "size": 3}}, cpu_estimate=1.5)


def execution(backend, sid, eid):
    return backend.store.create_execution(
        sid, eid, lambda s: ({"scene": {"width": 16}}, record(sid, eid, s.user)))


def test_an_execution_is_created_once_with_its_session_update(backend, unique):
    session(backend, unique)
    ex, created = execution(backend, unique, "e1")
    assert created and ex.user == "conformance"
    calls = []
    again, created = backend.store.create_execution(
        unique, "e1", lambda s: calls.append(s) or ({}, record(unique, "other", "x")))
    assert not created and again == ex and calls == []
    assert backend.store.execution(unique, "e1") == ex  # the record round-trips
    assert backend.store.execution(unique, "missing") is None
    stored = backend.store.get_session(unique)
    assert stored.scene == {"width": 16} and stored.user == "conformance"
    assert backend.store.get_session(unique + "-missing") is None
    with pytest.raises(errors.NotFound):
        execution(backend, unique + "-missing", "e1")


def test_the_first_ending_wins(backend, unique):
    session(backend, unique)
    execution(backend, unique, "e1")
    assert backend.store.finish_execution(unique, "e1", {"status": Status.DONE,
                                                         "result": "r"})
    assert not backend.store.finish_execution(unique, "e1", {"status": Status.FAILED})
    ex = backend.store.execution(unique, "e1")
    assert ex.status == Status.DONE and ex.final and ex.result == "r"


def test_only_a_done_execution_is_reopened_and_only_once(backend, unique):
    session(backend, unique)
    execution(backend, unique, "e1")
    assert not backend.store.reopen_execution(unique, "e1", {"waves": 0})  # queued
    backend.store.finish_execution(unique, "e1", {"status": Status.DONE, "result": "r"})
    assert backend.store.reopen_execution(unique, "e1", {"waves": 0, "target_passes": 8,
                                                         "finished": None})
    assert not backend.store.reopen_execution(unique, "e1", {"waves": 5})  # running now
    ex = backend.store.execution(unique, "e1")
    assert ex.status == Status.QUEUED and ex.waves == 0 and ex.target_passes == 8
    assert ex in backend.store.active_executions()  # in flight again: the watchdog sees it
    assert ex.finished is None and ex.result == "r"
    assert backend.store.finish_execution(unique, "e1", {"status": Status.DONE})


def test_a_sessions_executions_are_listed_oldest_first(backend, unique):
    session(backend, unique)
    session(backend, unique + "-other")
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for offset, eid in enumerate(("e2", "e1")):  # created in this order, ids reversed
        backend.store.create_execution(unique, eid, lambda s, eid=eid, offset=offset: (
            {}, dataclasses.replace(record(unique, eid, s.user),
                                    created=start + dt.timedelta(seconds=offset))))
    execution(backend, unique + "-other", "e3")
    listed = backend.store.list_executions(unique)
    assert [ex.id for ex in listed] == ["e2", "e1"]
    assert {ex.session_id for ex in listed} == {unique}
    assert backend.store.list_executions(unique + "-none") == []


def test_an_animations_frames_are_added_once_and_listed_by_frame(backend, unique):
    """A frame's execution is created once (first wins, without the session's
    transaction), found by its animation, in frame order, and is counted in the
    user's usage with its animation's id, so that quotas can leave it out."""
    session(backend, unique)
    anim = f"anim-{unique}"
    parent, _ = execution(backend, unique, anim)
    frames = {f: dataclasses.replace(record(unique, f"frame{f}", "conformance"),
                                     parent=anim, frame=f, cpu_estimate=None)
              for f in (3, 1, 2)}
    for ex in frames.values():
        assert backend.store.add_frame(unique, ex) == (ex, True)
    again, created = backend.store.add_frame(
        unique, dataclasses.replace(frames[1], scene={"other": 1}))
    assert not created and again == frames[1]
    assert [ex.frame for ex in backend.store.frames_of(unique, anim)] == [1, 2, 3]
    assert all(ex.parent == anim for ex in backend.store.frames_of(unique, anim))
    assert backend.store.frames_of(unique, "frame1") == []
    usage = [u for u in backend.store.executions_in_flight("conformance")
             if u.get("parent") == anim]
    assert len(usage) == 3
    assert parent.parent is None and parent.frames is None


def tasks():
    return [Task("a-p0", "p0", Kind.PRODUCE, "r1.0", tile=(0, 0, 8, 8), pass_index=0,
                 seed=123, passes=3),
            Task("a-p1", "p1", Kind.PRODUCE, "r1.0", tile=(8, 0, 8, 8), pass_index=0,
                 seed=123),
            Task("a-r1.0", "r1.0", Kind.REDUCE, None, children=2)]


def test_tasks_round_trip_and_are_never_overwritten(backend, unique):
    session(backend, unique)
    execution(backend, unique, "e1")
    backend.store.write_tasks(unique, "e1", tasks())
    p0 = backend.store.get_task(unique, "e1", "a-p0")
    assert p0 == tasks()[0]
    root = backend.store.get_task(unique, "e1", "a-r1.0")
    assert root.parent is None and root.kind == Kind.REDUCE and root.tile is None
    backend.store.update_task(unique, "e1", "a-p0", {"status": Status.DONE, "work_s": 1.5})
    backend.store.write_tasks(unique, "e1", tasks())  # a retried planning step
    assert backend.store.get_task(unique, "e1", "a-p0").status == Status.DONE
    assert backend.store.get_task(unique, "e1", "missing") is None
    with pytest.raises(errors.NotFound):
        backend.store.update_task(unique, "e1", "missing", {"status": Status.DONE})


def test_tasks_are_listed_a_page_at_a_time_by_node(backend, unique):
    session(backend, unique)
    execution(backend, unique, "e1")
    store = backend.store
    store.write_tasks(unique, "e1", tasks())
    store.update_task(unique, "e1", "a-p1", {"status": Status.DONE,
                                              "log": ["12:00:00.000 INFO rendered"]})
    first = store.task_page(unique, "e1", None, 2)
    assert [t.node for t in first] == ["p0", "p1"]
    assert first[1].log == ["12:00:00.000 INFO rendered"] and first[0].log is None
    assert [t.node for t in store.task_page(unique, "e1", "p1", 2)] == ["r1.0"]
    assert store.task_page(unique, "e1", "r1.0", 2) == []
    assert store.task_page(unique, "missing", None, 2) == []


def test_claims(backend, unique):
    session(backend, unique)
    execution(backend, unique, "e1")
    backend.store.write_tasks(unique, "e1", tasks())
    claim = backend.store.claim_task
    assert claim(unique, "e1", "a-r1.0", "m1", 600, kind="produce") == (Claim.OTHER, None)
    state, task = claim(unique, "e1", "a-r1.0", "m1", 600, kind="reduce")
    assert state == Claim.WON and task.owner == "m1" and task.attempts == 1
    assert claim(unique, "e1", "a-r1.0", "m2", 600)[0] == Claim.HELD  # within the lease
    assert claim(unique, "e1", "a-r1.0", "m1", 600)[0] == Claim.WON  # a redelivery of m1
    assert claim(unique, "e1", "a-r1.0", "m3", 0.0)[0] == Claim.WON  # the lease ran out
    assert backend.store.get_task(unique, "e1", "a-r1.0").attempts == 3
    backend.store.update_task(unique, "e1", "a-r1.0", {"status": Status.DONE})
    state, task = claim(unique, "e1", "a-r1.0", "m3", 0.0)
    assert state == Claim.DONE and task.status == Status.DONE
    with pytest.raises(errors.NotFound):
        claim(unique, "e1", "missing", "m1", 600)


def test_no_task_of_an_ended_execution_is_claimed(backend, unique):
    """The claim reads the execution with the task, in one transaction: after a cancel,
    a task not started never starts, one started is not taken again, whatever the
    caller read of the execution before."""
    session(backend, unique)
    execution(backend, unique, "e1")
    store = backend.store
    store.write_tasks(unique, "e1", tasks())
    assert store.claim_task(unique, "e1", "a-p0", "m1", 0.0)[0] == Claim.WON
    before = store.execution(unique, "e1")  # what a worker read before the cancel
    assert store.finish_execution(unique, "e1", {"status": Status.CANCELLED})
    assert not before.final
    for tid, owner in (("a-p1", "m2"), ("a-p0", "m1"), ("a-r1.0", "m3")):
        with pytest.raises(errors.Conflict) as refused:
            store.claim_task(unique, "e1", tid, owner, 0.0)
        assert refused.value.code == "execution_ended"
    assert store.get_task(unique, "e1", "a-p1").status == Status.PENDING
    assert store.get_task(unique, "e1", "a-p0").attempts == 1
    # a task unknown is still unknown; an execution gone ended too
    with pytest.raises(errors.NotFound):
        store.claim_task(unique, "e1", "missing", "m1", 0.0)
    store.write_tasks(unique, "e2", tasks())
    with pytest.raises(errors.Conflict):
        store.claim_task(unique, "e2", "a-p1", "m1", 0.0)


def test_a_failed_pass_is_replaced_once_per_generation(backend, unique):
    """Compare-and-set on the generation: a stale replacement (of a generation
    replaced already) writes nothing, a finished task is never replaced, and a
    replacement keeps counting the task's deliveries (no fresh count)."""
    session(backend, unique)
    execution(backend, unique, "e1")
    store = backend.store
    store.write_tasks(unique, "e1", tasks())
    store.claim_task(unique, "e1", "a-p0", "m1", 0.0)
    store.claim_task(unique, "e1", "a-p0", "m2", 0.0)
    assert store.replace_task(unique, "e1", "a-p0", 1, "boom")
    task = store.get_task(unique, "e1", "a-p0")
    assert (task.status, task.generation, task.failures, task.error, task.owner,
            task.started, task.attempts) == (Status.PENDING, 1, 1, "boom", None, None, 2)
    assert not store.replace_task(unique, "e1", "a-p0", 1, "again")  # stale
    assert store.get_task(unique, "e1", "a-p0").failures == 1
    store.claim_task(unique, "e1", "a-p0", "m3", 0.0)
    assert store.get_task(unique, "e1", "a-p0").attempts == 3  # over both generations
    # two failures of generation 1 at once (a copy's and the task's own): one applies
    results, barrier = [], threading.Barrier(6)

    def replace():
        barrier.wait()
        results.append(store.replace_task(unique, "e1", "a-p0", 2, "both"))

    threads = [threading.Thread(target=replace) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert store.get_task(unique, "e1", "a-p0").failures == 2
    store.update_task(unique, "e1", "a-p1", {"status": Status.DONE})
    assert not store.replace_task(unique, "e1", "a-p1", 1, "late")  # a copy won
    assert store.get_task(unique, "e1", "a-p1").failures == 0
    assert not store.replace_task(unique, "e1", "missing", 1, "x")


@pytest.mark.parametrize("kind", [None, "reduce"])
def test_exactly_one_concurrent_claim_wins(backend, unique, kind):
    """Whichever way the claim is committed (a transaction; a reduction's, a write
    conditional on what it read), and promptly: a reduction's reducers claim it at
    once whenever two of its children end together."""
    session(backend, unique)
    execution(backend, unique, "e1")
    backend.store.write_tasks(unique, "e1", tasks())
    results, barrier = [], threading.Barrier(8)

    def claim(owner):
        barrier.wait()
        results.append(backend.store.claim_task(unique, "e1", "a-r1.0", owner, 600,
                                                kind=kind)[0])

    threads = [threading.Thread(target=claim, args=(f"owner-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [Claim.HELD] * 7 + [Claim.WON]


def test_counts_are_aggregations_over_the_tasks(backend, unique):
    session(backend, unique)
    execution(backend, unique, "e1")
    backend.store.write_tasks(unique, "e1", tasks())
    assert backend.store.count_done_children(unique, "e1", "r1.0") == 0
    backend.store.claim_task(unique, "e1", "a-p1", "m", 0.0)
    backend.store.update_task(unique, "e1", "a-p0", {
        "status": Status.DONE, "work_s": 2.0, "fetch_s": 0.5, "cpu_s": 1.0})
    assert backend.store.count_done_children(unique, "e1", "r1.0") == 1
    stats = backend.store.task_stats(unique, "e1")
    assert stats["done"] == 1 and stats["running"] == 1 and stats["failed"] == 0
    assert stats["produce"] == {"fetch": 0.5, "work": 2.0, "cpu": 1.0, "n": 1.0}
    assert stats["reduce"]["n"] == 0.0
    assert stats["first_started"] is not None


def test_recovery_queries(backend, unique):
    """What the watchdog and the failure budget read: tasks by status, the tasks with
    failed passes, recovery counts, the last progress, the executions not final."""
    session(backend, unique)
    execution(backend, unique, "e1")
    store = backend.store
    store.write_tasks(unique, "e1", tasks())
    assert store.last_progress(unique, "e1") is None
    assert store.claim_task(unique, "e1", "a-p0", "m1", 0.0)[0] == Claim.WON
    store.claim_task(unique, "e1", "a-p0", "m2", 0.0)  # taken again: a retry
    store.update_task(unique, "e1", "a-p1", {"status": Status.PENDING, "failures": 2,
                                              "generation": 1, "error": "boom"})
    store.update_task(unique, "e1", "a-r1.0", {"redrives": 1})
    assert {t.node for t in store.tasks_in(unique, "e1", ("pending",))} == {"p1", "r1.0"}
    assert [t.node for t in store.tasks_in(unique, "e1", ("running",))] == ["p0"]
    (failed,) = store.failed_tasks(unique, "e1")
    assert (failed.node, failed.failures, failed.generation, failed.error) == (
        "p1", 2, 1, "boom")
    assert store.recovery_stats(unique, "e1") == {
        "retries": 1, "replaced": 1, "speculative": 0, "redriven": 1}
    store.update_task(unique, "e1", "a-p0", {"speculated": True})
    # the second take was the copy, not a retry
    assert store.recovery_stats(unique, "e1") == {
        "retries": 0, "replaced": 1, "speculative": 1, "redriven": 1}
    progress = store.last_progress(unique, "e1")
    assert progress is not None and (dt.datetime.now(dt.UTC) - progress).total_seconds() < 60
    assert ("e1", unique) in {(e.id, e.session_id) for e in store.active_executions()}
    store.finish_execution(unique, "e1", {"status": Status.DONE})
    assert ("e1", unique) not in {(e.id, e.session_id) for e in store.active_executions()}


def test_end_game_queries(backend, unique):
    """What a finished production task reads for the end game: production tasks never
    started, the longest-running tasks (bounded), the mean time of the finished ones;
    and the conditional flag that lets one caller start a task's copy."""
    import time

    session(backend, unique)
    execution(backend, unique, "e1")
    store = backend.store
    store.write_tasks(unique, "e1", tasks())
    assert store.count_tasks(unique, "e1", "pending", kind="produce") == 2
    assert store.count_tasks(unique, "e1", "pending") == 3
    assert store.mean_work(unique, "e1") is None
    assert store.longest_running(unique, "e1", 4) == []
    store.claim_task(unique, "e1", "a-p1", "m1", 0.0)
    time.sleep(0.01)
    store.claim_task(unique, "e1", "a-p0", "m2", 0.0)
    assert store.count_tasks(unique, "e1", "pending", kind="produce") == 0
    assert [t.node for t in store.longest_running(unique, "e1", 4)] == ["p1", "p0"]
    assert [t.node for t in store.longest_running(unique, "e1", 1)] == ["p1"]
    assert [t.node for t in store.longest_running(unique, "e1", 4, newest=True)] == ["p0", "p1"]
    assert [t.node for t in store.longest_running(unique, "e1", 1, newest=True)] == ["p0"]
    time.sleep(0.01)
    store.claim_task(unique, "e1", "a-p1", "m3", 0.0)  # taken again: it started later
    assert [t.node for t in store.longest_running(unique, "e1", 4)] == ["p0", "p1"]
    assert [t.node for t in store.longest_running(unique, "e1", 1, newest=True)] == ["p1"]
    # a done task has its three times, as the worker and the reducer write them
    times = {"fetch_s": 0.1, "cpu_s": 1.0}
    store.update_task(unique, "e1", "a-p0", {"status": Status.DONE, "work_s": 2.0, **times})
    store.update_task(unique, "e1", "a-r1.0", {"status": Status.DONE, "work_s": 9.0, **times})
    assert store.mean_work(unique, "e1") == 2.0
    assert store.mean_work(unique, "e1", "reduce") == 9.0
    assert [t.node for t in store.longest_running(unique, "e1", 4)] == ["p1"]
    # one copy per task, however many callers ask at once
    results, barrier = [], threading.Barrier(6)

    def mark():
        barrier.wait()
        results.append(store.mark_speculated(unique, "e1", "a-p1"))

    threads = [threading.Thread(target=mark) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert store.get_task(unique, "e1", "a-p1").speculated is True
    assert store.mark_speculated(unique, "e1", "a-p1") is False
    assert store.mark_speculated(unique, "e1", "a-nope") is False
    # a task with its copy is no candidate for another
    assert store.longest_running(unique, "e1", 4) == []


def test_an_execution_is_updated_in_place(backend, unique):
    session(backend, unique)
    execution(backend, unique, "e1")
    backend.store.update_execution(unique, "e1", {"planned": True, "published": True})
    ex = backend.store.execution(unique, "e1")
    assert ex.planned and ex.published and ex.user == "conformance"
    with pytest.raises(errors.NotFound):
        backend.store.update_execution(unique, "missing", {"planned": True})


def test_the_done_nodes_are_listed(backend, unique):
    session(backend, unique)
    execution(backend, unique, "e1")
    store = backend.store
    store.write_tasks(unique, "e1", tasks())
    assert store.done_nodes(unique, "e1") == []
    store.claim_task(unique, "e1", "a-p1", "m", 0.0)  # running: not done
    store.update_task(unique, "e1", "a-p0", {"status": Status.DONE})
    store.update_task(unique, "e1", "a-r1.0", {"status": Status.DONE})
    assert sorted(store.done_nodes(unique, "e1")) == ["p0", "r1.0"]
    assert store.done_nodes(unique, "e2") == []


def test_a_users_sessions_are_listed_oldest_first(backend, unique):
    store = backend.store
    t = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for sid, user, offset in ((f"{unique}-b", unique, 1), (f"{unique}-a", unique, 0),
                              (f"{unique}-x", f"{unique}-other", 0)):
        store.create_session(Session(sid, user, "ao", "png", {"width": 8},
                                     created=t + dt.timedelta(seconds=offset)))
    with pytest.raises(errors.Conflict):
        store.create_session(Session(f"{unique}-a", unique, "ao", "png", {}, created=t))
    listed = store.list_sessions(unique)
    assert [s.id for s in listed] == [f"{unique}-a", f"{unique}-b"]
    assert listed[0] == Session(f"{unique}-a", unique, "ao", "png", {"width": 8}, created=t)
    assert store.list_sessions(f"{unique}-none") == []


def test_a_session_being_deleted_and_then_deleted_with_all_below(backend, unique):
    """Its executions, tasks and resource records go with it, and its tasks leave the
    farm's queue (a collection-group query does not find them any more)."""
    store = backend.store
    t = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for sid in (unique, f"{unique}-kept"):
        store.create_session(Session(sid, unique, "ao", "png", {}, created=t))
        execution(backend, sid, "e1")
        store.write_tasks(sid, "e1", [dataclasses.replace(
            tasks()[0], queue=f"{unique}:waiting", tag=1.0, rank=1.0)])
        store.attach_resource(sid, {"name": "a.png", "sha256": "0" * 64, "size": 3})
    store.mark_session_deleting(unique)
    assert store.get_session(unique).deleting is True
    assert store.get_session(f"{unique}-kept").deleting is False
    with pytest.raises(errors.NotFound):
        store.mark_session_deleting(f"{unique}-none")
    assert len(store.waiting_tasks(unique, 10)) == 2

    store.delete_session(unique)
    assert store.get_session(unique) is None
    assert store.execution(unique, "e1") is None and store.list_executions(unique) == []
    assert store.get_task(unique, "e1", "a-p0") is None
    assert store.list_resources(unique) == []
    assert [(sid, eid) for sid, eid, _ in store.waiting_tasks(unique, 10)] == [
        (f"{unique}-kept", "e1")]
    assert [s.id for s in store.list_sessions(unique)] == [f"{unique}-kept"]
    assert store.get_task(f"{unique}-kept", "e1", "a-p0") is not None
    store.delete_session(unique)  # gone already: nothing to do


def test_resources_are_recorded_once_and_immutable(backend, unique):
    import hashlib

    session(backend, unique)
    store = backend.store
    sha_a, sha_b = (hashlib.sha256(f"{unique}-{n}".encode()).hexdigest() for n in "ab")
    a = {"name": "a.png", "sha256": sha_a, "size": 3, "meta": {"width": 1}}
    assert store.attach_resource(unique, a) is True
    assert store.attach_resource(unique, dict(a)) is False  # the same bytes again
    with pytest.raises(errors.Conflict) as refused:
        store.attach_resource(unique, {**a, "sha256": sha_b})
    assert refused.value.code == "resource_immutable"
    assert store.attach_resource(unique, {"name": "b/c.obj", "sha256": sha_b, "size": 4,
                                          "meta": {}}) is True
    listed = store.list_resources(unique)
    assert [(r["name"], r["sha256"], r["size"], r["meta"]) for r in listed] == [
        ("a.png", sha_a, 3, {"width": 1}), ("b/c.obj", sha_b, 4, {})]
    assert all(r["created"] is not None for r in listed)
    assert store.list_resources(f"{unique}-none") == []
    # what retention keeps: every hash that a session's record names
    assert {sha_a, sha_b} <= store.referenced_resources()
    store.delete_session(unique)
    assert not {sha_a, sha_b} & store.referenced_resources()
