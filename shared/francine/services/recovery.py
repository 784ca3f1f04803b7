"""Carrying out the scheduler's recovery actions, for every caller that meets them (the
render worker, the reducer, the watchdog): replacing a failed pass, starting a
speculative copy, re-driving a reduction, producing a lost output again, publishing
production tasks again. The decisions are the scheduler's; this module only writes
the task documents and publishes.
"""

from __future__ import annotations

from francine import producers
from francine.domain import planning, scheduler
from francine.domain.records import Execution, Kind, Status, Task
from francine.ports import Adapters
from francine.services import farm


def scheduler_plan(ad: Adapters, ex: Execution, **options) -> scheduler.Plan:
    """The scheduler's static facts of ``ex``: its shape, its admission limit, and
    into how many pieces a speculative copy is cut (the settings' ``copy_pieces`` if
    the producer's pixels do not depend on how a tile is cut, else 1)."""
    exact = getattr(producers.get(ex.producer), "exact_tiles", False)
    pieces = min(max(1, ad.settings.copy_pieces), scheduler.MAX_COPY_PIECES) if exact else 1
    return scheduler.Plan(planning.Shape.from_dict(ex.shape), ex.admission_limit or 0,
                          copy_pieces=pieces, **options)


def failed_passes(ad: Adapters, ex: Execution) -> tuple[tuple[str, int, str], ...]:
    """What ``Observed.failed`` holds: every task with a failed pass, with its count
    and its last error."""
    return tuple((t.node, t.failures, t.error or "") for t in
                 ad.store.failed_tasks(ex.session_id, ex.id))


def counts(ad: Adapters, sid: str, eid: str) -> dict:
    """What the execution status shows of recovery: deliveries taken again (a worker
    died, a message came twice, a stall was re-driven), failed passes replaced with a
    fresh seed, speculative copies, reductions re-driven."""
    return ad.store.recovery_stats(sid, eid)


def publish_productions(ad: Adapters, ex: Execution, indices, shard_offset: int = 0) -> None:
    """Publish production tasks by index. ``shard_offset`` moves them to another
    shard of a sharded topic (the local stack's), i.e. to another worker than the one
    that has the task already."""
    ad.bus.publish_tasks(ex.session_id, ex.id, [
        (i + shard_offset, planning.task_id(ex.id, planning.node_name(0, i))) for i in indices])


def carry_out(ad: Adapters, ex: Execution, shape: planning.Shape, action,
              task: Task | None = None) -> bool:
    """Carry out ``action`` if it is a recovery action; False if it is not one.
    ``task``: the task's record when the caller holds it (saves a read)."""
    sid, eid = ex.session_id, ex.id

    def record(node: str) -> Task:
        if task is not None and task.node == node:
            return task
        found = ad.store.get_task(sid, eid, planning.task_id(eid, node))
        if found is None:
            raise ValueError(f"no task {node}")
        return found

    match action:
        case scheduler.Replace(node=node, error=error, generation=generation):
            t = record(node)
            # Pending again, one generation on: the next delivery renders a fresh seed.
            ad.store.update_task(sid, eid, t.id, {
                "status": Status.PENDING, "owner": None, "started": None, "error": error,
                "failures": t.failures + 1, "generation": generation})
            publish_productions(ad, ex, [scheduler.production_index(node)])
        case scheduler.MarkFailed(node=node, error=error):
            t = record(node)
            ad.store.update_task(sid, eid, t.id, {"status": Status.FAILED, "error": error,
                                                  "failures": t.failures + 1})
        case scheduler.Speculate(node=node, pieces=pieces):
            # Conditional: of callers asking at once, one starts the task's only copy.
            if ad.store.mark_speculated(sid, eid, planning.task_id(eid, node)):
                index = scheduler.production_index(node)
                pieces = min(pieces, planning.tile_of(shape, index).height)
                if pieces <= 1:
                    publish_productions(ad, ex, [index], shard_offset=1)
                else:  # one band each, on other shards than the task's own
                    tid = planning.task_id(eid, node)
                    ad.bus.publish_tasks(sid, eid, [(index + 1 + j, tid, f"{j}/{pieces}")
                                                    for j in range(pieces)])
        case scheduler.Publish(indices=indices):
            publish_productions(ad, ex, indices)
        case scheduler.Redrive(node=node, child=child):
            t = record(node)
            if t.status != Status.DONE:
                ad.store.update_task(sid, eid, t.id, {"status": Status.PENDING, "owner": None,
                                                      "redrives": t.redrives + 1})
            ad.bus.publish_done(sid, eid, child)
        case scheduler.Reproduce(node=node):
            t = record(node)
            ad.store.update_task(sid, eid, t.id, {"status": Status.PENDING, "owner": None})
            if t.kind == Kind.PRODUCE:
                publish_productions(ad, ex, [scheduler.production_index(node)])
            else:
                ad.bus.publish_done(sid, eid, planning.children(shape, node)[-1])
        case scheduler.Requeue(node=node):
            farm.requeue(ad, ex, node)
        case _:
            return False
    return True
