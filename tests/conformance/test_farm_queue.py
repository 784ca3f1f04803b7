"""The farm's queue and fair-share accounts (francine.services.farm) on the Firestore emulator and
on the twin: tasks across executions by tag, slots counted, conditional takes and
releases, requeues, an ended execution's tasks out of the queue, accounts."""

from __future__ import annotations

import threading

from francine.domain.records import Kind, Status, Task

from .test_store import execution, session


def queued(node: str, tag: float | None, farm: str, rank: float | None = None) -> Task:
    return Task(f"t-{node}", node, Kind.PRODUCE, "r1.0", tile=(0, 0, 8, 8), pass_index=0,
                seed=1, queue=f"{farm}:waiting" if tag is not None else None, tag=tag,
                rank=tag if rank is None else rank)


def setup(backend, farm: str) -> None:
    """Two executions (of one session), their tasks interleaved by tag."""
    session(backend, farm)
    for eid in ("e1", "e2"):
        execution(backend, farm, eid)
    backend.store.write_tasks(farm, "e1", [queued("p0", 1.0, farm), queued("p1", 3.0, farm),
                                           queued("p2", None, farm)])
    backend.store.write_tasks(farm, "e2", [queued("p0", 2.0, farm),
                                           queued("p1", 4.0, farm, rank=0.5)])


def listing(backend, farm, limit=10, order="rank"):
    return [(eid, t.node, getattr(t, order)) for _, eid, t in
            backend.store.waiting_tasks(farm, limit, order=order)]


def test_waiting_tasks_come_by_rank_or_tag_across_executions(backend, unique):
    setup(backend, unique)
    assert listing(backend, unique) == [("e2", "p1", 0.5), ("e1", "p0", 1.0),
                                        ("e2", "p0", 2.0), ("e1", "p1", 3.0)]
    assert listing(backend, unique, 2) == [("e2", "p1", 0.5), ("e1", "p0", 1.0)]
    assert listing(backend, unique, 2, order="tag") == [("e1", "p0", 1.0), ("e2", "p0", 2.0)]
    assert listing(backend, unique + "-other") == []
    assert backend.store.count_out(unique) == 0


def test_a_take_is_conditional_and_a_release_frees_its_slot_once(backend, unique):
    setup(backend, unique)
    store = backend.store
    assert store.take_waiting(unique, "e2", "t-p1", unique, 3)
    assert not store.take_waiting(unique, "e2", "t-p1", unique, 4)  # taken already
    assert not store.take_waiting(unique, "e1", "t-p2", unique, 4)  # never queued
    assert store.count_out(unique) == 1 and store.held_slots(unique) == [3]
    assert listing(backend, unique)[0] == ("e1", "p0", 1.0)
    task = store.get_task(unique, "e2", "t-p1")
    assert task.queue == f"{unique}:out" and task.slot == 3 and task.rank == 0.5
    assert store.release_task(unique, "e2", "t-p1", unique) == 3
    assert store.release_task(unique, "e2", "t-p1", unique) is None
    assert store.count_out(unique) == 0 and store.held_slots(unique) == []
    assert store.get_task(unique, "e2", "t-p1").queue is None


def test_a_chunk_is_taken_in_one_go_up_to_the_first_task_not_waiting(backend, unique):
    setup(backend, unique)
    store = backend.store
    assert store.take_waiting_many(unique, []) == 0
    assert store.take_waiting(unique, "e1", "t-p1", unique, 9)  # another dispatch's
    takes = [(unique, "e2", "t-p1", 0), (unique, "e1", "t-p0", 1),
             (unique, "e1", "t-p1", 2), (unique, "e2", "t-p0", 3)]
    assert store.take_waiting_many(unique, takes) == 2  # stops at t-p1, taken already
    assert sorted(store.held_slots(unique)) == [0, 1, 9]
    assert store.get_task(unique, "e2", "t-p0").queue == f"{unique}:waiting"
    assert store.take_waiting_many(unique, [(unique, "e2", "t-p0", 3)]) == 1
    assert store.take_waiting_many(unique, [(unique, "e1", "t-p2", 4)]) == 0  # not queued
    assert store.count_out(unique) == 4


def test_concurrent_takes_publish_a_task_once(backend, unique):
    setup(backend, unique)
    results, barrier = [], threading.Barrier(6)

    def take(slot):
        barrier.wait()
        results.append(backend.store.take_waiting(unique, "e1", "t-p0", unique, slot))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert backend.store.count_out(unique) == 1


def test_only_a_task_that_never_started_is_queued_again(backend, unique):
    setup(backend, unique)
    store = backend.store
    assert store.take_waiting(unique, "e1", "t-p0", unique, 0)
    assert store.take_waiting(unique, "e1", "t-p1", unique, 1)
    store.claim_task(unique, "e1", "t-p1", "m", 0.0)  # reached a render
    assert store.requeue_task(unique, "e1", "t-p0", unique)
    assert not store.requeue_task(unique, "e1", "t-p0", unique)  # waiting already
    assert not store.requeue_task(unique, "e1", "t-p1", unique)
    assert not store.requeue_task(unique, "e1", "t-p2", unique)  # no tag: not queued
    assert store.count_out(unique) == 1
    assert ("e1", "p0", 1.0) in listing(backend, unique)
    store.update_task(unique, "e1", "t-p1", {"status": Status.DONE})
    assert not store.requeue_task(unique, "e1", "t-p1", unique)


def test_an_ended_execution_leaves_the_queue_and_its_slots(backend, unique):
    setup(backend, unique)
    store = backend.store
    store.take_waiting(unique, "e2", "t-p1", unique, 0)
    store.take_waiting(unique, "e1", "t-p0", unique, 1)
    assert store.release_execution(unique, "e2", unique) == 1
    assert store.count_out(unique) == 1
    assert listing(backend, unique) == [("e1", "p1", 3.0)]
    assert listing(backend, unique, order="tag") == [("e1", "p1", 3.0)]
    assert store.release_execution(unique, "e2", unique) == 0


def test_fair_share_accounts(backend, unique):
    store = backend.store
    assert store.latest_finish(unique) is None
    seen = []

    def update(previous):
        seen.append(previous)
        return {"finish": (previous or {"finish": 0.0})["finish"] + 4.0, "start": 0.0,
                "last": "e"}

    assert store.reserve_share(unique, "alice", update)["finish"] == 4.0
    assert store.reserve_share(unique, "alice", update)["finish"] == 8.0
    assert store.reserve_share(unique, "bob/x", update)["finish"] == 4.0
    assert seen[0] is None and seen[1]["finish"] == 4.0 and seen[1]["user"] == "alice"
    assert store.latest_finish(unique) == 8.0
    assert store.latest_finish(unique + "-other") is None


def test_a_copys_pieces_wait_in_the_queue_and_are_no_tasks(backend, unique):
    """A copy's entries are queued with the tasks (by rank, across executions), hold
    slots once taken, and leave with their task's release or their execution's end;
    no count, listing or aggregation of the execution's tasks sees them."""
    setup(backend, unique)
    store = backend.store
    task = store.get_task(unique, "e1", "t-p1")
    stats = store.task_stats(unique, "e1")
    store.queue_copies(unique, "e1", task, unique, [("t-p1~0of2", 5.0, 0.25),
                                                    ("t-p1~1of2", 6.0, 6.0)])
    store.queue_copies(unique, "e1", task, unique, [("t-p1~0of2", 9.0, 9.0)])  # created once
    assert listing(backend, unique) == [("e1", "p1", 0.25), ("e2", "p1", 0.5),
                                        ("e1", "p0", 1.0), ("e2", "p0", 2.0),
                                        ("e1", "p1", 3.0), ("e1", "p1", 6.0)]
    assert [t.id for _, _, t in store.waiting_tasks(unique, 1)] == ["t-p1~0of2"]
    assert store.take_waiting(unique, "e1", "t-p1~0of2", unique, 2)
    assert store.take_waiting(unique, "e1", "t-p0", unique, 1)
    assert store.count_out(unique) == 2 and store.held_slots(unique) == [1, 2]
    # not tasks: the execution's counts and listings are as they were
    assert store.task_stats(unique, "e1") == stats
    assert {t.node for t in store.tasks_in(unique, "e1", ("pending", "running"))} == {
        "p0", "p1", "p2"}
    assert store.count_tasks(unique, "e1", "pending", kind="produce") == 3
    assert store.failed_tasks(unique, "e1") == [] and store.done_nodes(unique, "e1") == []
    assert store.recovery_stats(unique, "e1")["retries"] == 0
    # the task's release frees the copy's slot and takes its waiting piece out
    assert store.release_copies(unique, "e1", "t-p1", unique) == [2]
    assert store.release_copies(unique, "e1", "t-p1", unique) == []
    assert store.count_out(unique) == 1
    assert ("e1", "p1", 6.0) not in listing(backend, unique)
    # ...and an execution's end takes its copies with its tasks
    store.queue_copies(unique, "e2", store.get_task(unique, "e2", "t-p0"), unique,
                       [("t-p0~copy", 7.0, 7.0)])
    assert store.take_waiting(unique, "e2", "t-p0~copy", unique, 0)
    assert store.release_execution(unique, "e2", unique) == 1
    assert store.count_out(unique) == 1
