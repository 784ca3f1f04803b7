"""The scheduler's static facts of an execution (``scheduler_plan``: the one place a
``Plan`` is built), and its recovery actions carried out for the executor
(``francine.services.scheduling``): publishing production tasks (the one place they
are published, but for the farm's dispatch), replacing a failed pass, starting a
speculative copy, re-driving a reduction, producing a lost output again. The decisions
are the scheduler's; this module only writes the task documents and publishes.
"""

from __future__ import annotations

from collections.abc import Iterable

from francine import producers
from francine.domain import planning, scheduler
from francine.domain.records import Execution, Kind, Status, Task
from francine.ports import Adapters
from francine.ports.protocols import RecoveryCounts
from francine.services import farm


def scheduler_plan(ad: Adapters, ex: Execution, stall_s: float | None = None) -> scheduler.Plan:
    """The scheduler's static facts of ``ex``: its shape, its admission limit or farm
    admission, how long it may stand still (the settings', or ``stall_s``), and into
    how many pieces a speculative copy is cut (the settings' ``copy_pieces`` if the
    producer's pixels do not depend on how a tile is cut, else 1)."""
    exact = getattr(producers.get(ex.producer), "exact_tiles", False)
    pieces = min(max(1, ad.settings.copy_pieces), scheduler.MAX_COPY_PIECES) if exact else 1
    return scheduler.Plan(planning.Shape.from_dict(ex.shape), ex.admission_limit or 0,
                          stall_s=ad.settings.stall_s if stall_s is None else stall_s,
                          copy_pieces=pieces, farm=farm.enabled(ad.settings),
                          endgame=ex.endgame is not False)


def counts(ad: Adapters, sid: str, eid: str) -> RecoveryCounts:
    """What the execution status shows of recovery: deliveries taken again (a worker
    died, a message came twice, a stall was re-driven), failed passes replaced with a
    fresh seed, speculative copies, reductions re-driven."""
    return ad.store.recovery_stats(sid, eid)


def publish(ad: Adapters, ex: Execution, indices: Iterable[int], shard_offset: int = 0) -> None:
    """Publish production tasks by index. ``shard_offset`` moves them to another
    shard of a sharded topic (the local stack's), i.e. to another worker than the one
    that has the task already."""
    ad.bus.publish_tasks(ex.session_id, ex.id, [
        (i + shard_offset, planning.task_id(ex.id, planning.node_name(0, i))) for i in indices])


def replace(ad: Adapters, ex: Execution, node: str, error: str, generation: int) -> bool:
    """Pending again as ``generation`` (the next delivery renders a fresh seed), if
    the task is still of the generation before: of two failures of one generation
    (a copy's and the task's own), one replaces it. The task keeps its slot in the
    farm: it is published again at once. False if it was replaced already."""
    index = scheduler.production_index(node)
    if index is None or not ad.store.replace_task(
            ex.session_id, ex.id, planning.task_id(ex.id, node), generation, error):
        return False
    publish(ad, ex, [index])
    return True


def mark_failed(ad: Adapters, ex: Execution, task: Task, error: str) -> None:
    ad.store.update_task(ex.session_id, ex.id, task.id, {
        "status": Status.FAILED, "error": error, "failures": task.failures + 1})


def speculate(ad: Adapters, ex: Execution, node: str, pieces: int, queued: bool) -> bool:
    """Start the task's only copy (a conditional write: of callers asking at once, one
    starts it), in at most as many pieces as its tile has rows: published to other
    shards than the task's own, or, with farm admission (``queued``), waiting in the
    farm's queue for slots. False if the task had its copy already."""
    sid, eid, tid = ex.session_id, ex.id, planning.task_id(ex.id, node)
    index = scheduler.production_index(node)
    if index is None or not ad.store.mark_speculated(sid, eid, tid):
        return False
    pieces = min(pieces, planning.tile_of(planning.Shape.from_dict(ex.shape), index).height)
    if queued:
        task = ad.store.get_task(sid, eid, tid)
        if task is not None:
            farm.enqueue_copy(ad, ex, task, pieces)
    elif pieces <= 1:
        publish(ad, ex, [index], shard_offset=1)
    else:  # one band each, on other shards than the task's own
        ad.bus.publish_tasks(sid, eid, [(index + 1 + j, tid, f"{j}/{pieces}")
                                        for j in range(pieces)])
    return True


def redrive(ad: Adapters, ex: Execution, task: Task, child: str) -> None:
    """The reduction back to pending (its holder may be dead) unless it is done, and
    its child's event published again: a reducer claims it and goes on."""
    if task.status != Status.DONE:
        ad.store.update_task(ex.session_id, ex.id, task.id, {
            "status": Status.PENDING, "owner": None, "redrives": task.redrives + 1})
    ad.bus.publish_done(ex.session_id, ex.id, child)


def reproduce(ad: Adapters, ex: Execution, task: Task, queued: bool) -> None:
    """A task whose output is lost (or never came) back to pending and produced again:
    a production task is published (with ``queued``, queued in the farm again: its
    slot was freed when it finished), a reduction re-driven from its last child."""
    ad.store.update_task(ex.session_id, ex.id, task.id, {"status": Status.PENDING,
                                                         "owner": None})
    if task.kind == Kind.REDUCE:
        shape = planning.Shape.from_dict(ex.shape)
        ad.bus.publish_done(ex.session_id, ex.id, planning.children(shape, task.node)[-1])
    elif queued:
        farm.requeue(ad, ex, task.node)
    else:
        publish(ad, ex, [planning.parse_node(task.node)[1]])
