"""The scheduler run against the store: what the store says for each event, and the one
executor of every action.

``francine.domain.scheduler`` decides, purely. Every caller that feeds it events (the
api: an execution's creation and its resumption; the render worker: a delivery; the
reducer: a task's event, a dead letter; the watchdog: a tick) builds a ``Run`` and
calls ``drive``, which steps each event with

- ``observe``: the one builder of ``Observed`` for each type of event, from what the
  store says. An event is a claim, the store is the truth: a ``TaskDone`` is counted
  on the task's own document and its stored output, never on the message;
- ``carry_out``: the one executor of the scheduler's actions, a match over every type
  of action that mypy checks exhaustive (``assert_never``), so that an action added
  to the scheduler and carried out nowhere is a type error, not a message
  acknowledged with nothing done.

Rendering and reducing are the handlers' own (``Work``); everything else is here.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import assert_never

from francine.base import errors
from francine.domain import imaging, planning, scheduler
from francine.domain.records import Claim, Execution, Kind, Status, Task
from francine.ports import Adapters
from francine.ports.layout import partial_name
from francine.services import events, farm, recovery, views

log = logging.getLogger("francine.scheduling")

#: What a render worker answers for a claim it did not win.
CLAIM_NOTES = {Claim.DONE: "already done",
               Claim.HELD: "skipped: another delivery took it this instant",
               Claim.OTHER: "skipped: not a production task"}


class Work:
    """Rendering and reducing: the render worker's and the reducer's own (each
    overrides its part). Another caller never meets these actions: the scheduler
    yields them only after a claim of the task's kind was won, or a piece delivered."""

    def produce(self, run: Run, task: Task) -> scheduler.Event | None:
        raise TypeError(f"{type(self).__name__} does not render")

    def produce_piece(self, run: Run, task: Task, piece: int,
                      pieces: int) -> scheduler.Event | None:
        raise TypeError(f"{type(self).__name__} does not render")

    def reduce(self, run: Run, node: str, owner: str) -> scheduler.Event | None:
        raise TypeError(f"{type(self).__name__} does not reduce")


@dataclass
class Run:
    """One drive of the scheduler over one execution: what observing and carrying out
    need, and what they learnt on the way."""

    ad: Adapters
    ex: Execution  # kept as the store is: planned, published, final
    plan: scheduler.Plan
    work: Work = field(default_factory=Work)
    #: The task records read or claimed during the drive, by node: a claim's record is
    #: the one its render goes on with.
    tasks: dict[str, Task] = field(default_factory=dict)
    #: What happened, in the handler's words (its answer to the message).
    notes: list[str] = field(default_factory=list)
    #: For each ``End`` carried out: whether it was the one that ended the execution.
    ended: list[bool] = field(default_factory=list)
    #: What the execution's end records beside its status (the root's noise and passes).
    outcome: dict = field(default_factory=dict)

    def task(self, node: str) -> Task:
        """The record of ``node``: the one held, else read."""
        held = self.tasks.get(node)
        if held is not None:
            return held
        found = read_task(self, node)
        if found is None:
            raise ValueError(f"no task {node}")
        return found


def drive(run: Run, events: list[scheduler.Event]) -> scheduler.Trace:
    """Step ``events`` (and those their actions yield) against the store."""
    return scheduler.drive(run.plan, events, lambda e: observe(run, e),
                           lambda a: carry_out(run, a))


# --- what the store says, for each event -------------------------------------------------

def observe(run: Run, event: scheduler.Event) -> scheduler.Observed:
    """What the store says for ``event``: one builder per type of event."""
    seen = basics(run)
    match event:
        case scheduler.Tick():
            return observe_tick(run, seen)
        case scheduler.TaskDone():
            return observe_done(run, event, seen)
        case scheduler.PieceDelivered(node=node):
            task = read_task(run, node)
            return dataclasses.replace(seen, task_status=task.status if task else None)
        case scheduler.PassFailed(node=node):
            return observe_pass_failed(run, node, seen)
        case scheduler.DeadLettered():
            return observe_dead_letter(run, event, seen)
        case (scheduler.ExecutionCreated() | scheduler.TaskDelivered() | scheduler.TaskClaimed()
              | scheduler.TaskProduced() | scheduler.TaskFailed() | scheduler.InputsLost()):
            return seen  # the execution's status is all these need
    assert_never(event)


def basics(run: Run) -> scheduler.Observed:
    """What every event needs: the execution's status, planning and age."""
    ex = run.ex
    return scheduler.Observed(status=ex.status, planned=ex.planned, published=ex.published,
                              now_s=(run.ad.clock() - ex.created).total_seconds())


def read_task(run: Run, node: str) -> Task | None:
    """The task of ``node`` as the store has it now (kept as the record held)."""
    task = run.ad.store.get_task(run.ex.session_id, run.ex.id, planning.task_id(run.ex.id, node))
    if task is not None:
        run.tasks[node] = task
    return task


def observe_tick(run: Run, seen: scheduler.Observed) -> scheduler.Observed:
    """The running production tasks and for how long, the mean time of the finished
    ones, the unfinished tasks (those waiting in the farm's queue apart), the time
    since any task started or finished."""
    if not seen.published:
        return seen
    ad, sid, eid = run.ad, run.ex.session_id, run.ex.id
    now = ad.clock()
    open_tasks = ad.store.tasks_in(sid, eid, (str(Status.PENDING), str(Status.RUNNING)))
    running = tuple((t.node, (now - t.started).total_seconds(), t.speculated)
                    for t in open_tasks if t.status == Status.RUNNING
                    and t.kind == Kind.PRODUCE and t.started is not None)
    stats = ad.store.task_stats(sid, eid)["produce"]
    last = ad.store.last_progress(sid, eid) or run.ex.created
    return dataclasses.replace(
        seen, running=running, mean_done_s=stats["work"] / stats["n"] if stats["n"] else None,
        unfinished=tuple(t.node for t in open_tasks),
        # queued behind other work in the farm: the farm's dispatch starts them
        waiting=tuple(t.node for t in open_tasks if t.queue and t.queue.endswith(":waiting")),
        idle_s=(now - max(last, run.ex.created)).total_seconds())


def observe_done(run: Run, event: scheduler.TaskDone,
                 seen: scheduler.Observed) -> scheduler.Observed:
    """A task's event is a claim: the task's own document is read. For a task that is
    done, how many children of its parent are done and what the end game needs; and
    when its output is about to be used (its parent's children are all done, or it is
    the root: the execution ends on it), whether that output (partial, or image) is
    stored."""
    task = read_task(run, event.node)
    if task is None or task.status != Status.DONE:
        return dataclasses.replace(seen, task_status=task.status if task else None)
    shape, ex = run.plan.shape, run.ex
    up = planning.parent(shape, event.node)
    done = run.ad.store.count_done_children(ex.session_id, ex.id, up) if up else 0
    used = up is None or done >= len(planning.children(shape, up))
    return observe_endgame(run, event.node, dataclasses.replace(
        seen, task_status=Status.DONE, done_siblings=done,
        stored=output_stored(run, event.node) if used else None))


def output_stored(run: Run, node: str) -> bool:
    """Whether the output of ``node`` exists: its partial, or the root's final image."""
    ad, sid, eid = run.ad, run.ex.session_id, run.ex.id
    if node == run.plan.shape.root:
        return ad.blobs.result_size(result_name(run)) is not None
    name = partial_name(sid, eid, node)
    return any(o.name == name for o in ad.blobs.list_objects("partials", name))


def observe_endgame(run: Run, node: str, seen: scheduler.Observed) -> scheduler.Observed:
    """What the ``TaskDone`` of a production task needs for the end game: how many
    production tasks never started (a count) and, when none is left, the mean time of
    the finished ones (an aggregation), the longest-running tasks without a copy and,
    when there are more, the ones that started last (queries limited to
    ``ENDGAME_CANDIDATES``): at most four bounded queries, whatever the execution's
    size."""
    if scheduler.production_index(node) is None:
        return seen
    ad, sid, eid = run.ad, run.ex.session_id, run.ex.id
    unstarted = ad.store.count_tasks(sid, eid, str(Status.PENDING), kind=str(Kind.PRODUCE))
    if unstarted:
        return dataclasses.replace(seen, unstarted=unstarted)
    now = ad.clock()
    k = scheduler.ENDGAME_CANDIDATES
    found = ad.store.longest_running(sid, eid, k)
    if len(found) == k:  # more are running: the ones that started last too
        found += ad.store.longest_running(sid, eid, k, newest=True)
    running = tuple((t.node, (now - t.started).total_seconds(), t.speculated)
                    for t in found if t.kind == Kind.PRODUCE and t.started is not None)
    return dataclasses.replace(seen, unstarted=0, running=running,
                               mean_done_s=ad.store.mean_work(sid, eid))


def failed_passes(run: Run) -> tuple[tuple[str, int, str], ...]:
    """What ``Observed.failed`` holds: every task with a failed pass, with its count
    and its last error."""
    return tuple((t.node, t.failures, t.error or "") for t in
                 run.ad.store.failed_tasks(run.ex.session_id, run.ex.id))


def observe_pass_failed(run: Run, node: str, seen: scheduler.Observed) -> scheduler.Observed:
    """The task as it is now (a copy may have failed and replaced it already, or
    finished it), and the execution's failed passes."""
    task = read_task(run, node) or run.tasks.get(node)
    if task is None:
        return seen
    return dataclasses.replace(seen, task_status=task.status, generation=task.generation,
                               failed=failed_passes(run))


def observe_dead_letter(run: Run, event: scheduler.DeadLettered,
                        seen: scheduler.Observed) -> scheduler.Observed:
    """A production task's: the task (its status, generation and attempts over all its
    generations) and, unless it is done, the execution's failed passes. A task
    event's: the parent's reduction (how often it was re-driven, whether a reducer
    took it)."""
    if event.node is None:
        return seen
    if event.kind == Kind.PRODUCE:
        task = read_task(run, event.node)
        if task is None:
            return seen
        return dataclasses.replace(
            seen, task_status=task.status, generation=task.generation, attempts=task.attempts,
            failed=failed_passes(run) if task.status != Status.DONE else ())
    try:
        up = planning.parent(run.plan.shape, event.node)
    except ValueError:
        return seen
    parent = read_task(run, up) if up else None
    if parent is None:
        return seen
    return dataclasses.replace(seen, redrives=parent.redrives, parent_status=parent.status)


# --- the one executor ------------------------------------------------------------------

def carry_out(run: Run, action: scheduler.Action) -> scheduler.Event | None:
    """Carry out ``action``; the event it yields, if any. Every type of action is
    matched here, and nowhere else."""
    ad, ex = run.ad, run.ex
    match action:
        case scheduler.WriteTasks(queued=queued):
            write_tasks(run, queued)
        case scheduler.Publish(indices=indices, first=first):
            recovery.publish(ad, ex, indices)
            if first:
                mark_published(run)
        case scheduler.Admit(first=first):
            if first:
                mark_published(run)
            farm.dispatch_now(ad)
        case scheduler.Release(node=node, piece=piece, pieces=pieces):
            release(run, node, piece, pieces)
        case scheduler.ClaimTask(node=node, kind=kind, owner=owner, lease_s=lease_s):
            return claim(run, node, kind, owner, lease_s)
        case scheduler.Produce(node=node):
            return run.work.produce(run, run.task(node))
        case scheduler.ProducePiece(node=node, piece=piece, pieces=pieces):
            return run.work.produce_piece(run, run.task(node), piece, pieces)
        case scheduler.Announce(node=node):
            announce(run, node)
        case scheduler.Reduce(node=node, owner=owner):
            return run.work.reduce(run, node, owner)
        case scheduler.Advance(node=node, owner=owner):
            return scheduler.TaskDone(node, owner)
        case scheduler.MarkFailed(node=node, error=error):
            recovery.mark_failed(ad, ex, run.task(node), error)
        case scheduler.Replace(node=node, error=error, generation=generation):
            recovery.replace(ad, ex, node, error, generation)
        case scheduler.Speculate(node=node, pieces=pieces, queued=queued):
            recovery.speculate(ad, ex, node, pieces, queued)
        case scheduler.Redrive(node=node, child=child):
            recovery.redrive(ad, ex, run.task(node), child)
        case scheduler.Reproduce(node=node, queued=queued):
            recovery.reproduce(ad, ex, run.task(node), queued)
        case scheduler.Requeue(node=node):
            farm.requeue(ad, ex, node)
        case scheduler.End(status=status, error=error):
            finish(run, status, error)
        case _:
            assert_never(action)
    return None


def task_records(eid: str, shape: planning.Shape, basis: str | None = None,
                 first_pass: int = 0) -> list[Task]:
    """The execution's task documents, as planning makes them (``basis``: where the
    seeds come from, the id by default; ``first_pass``: a wave's)."""
    tasks = []
    for t in planning.planned_tasks(basis or eid, shape, first_pass):
        tile = None if t.tile is None else (t.tile.x0, t.tile.y0, t.tile.width, t.tile.height)
        tasks.append(Task(planning.task_id(eid, t.node), t.node, Kind(t.kind), t.parent,
                          children=t.children, tile=tile, pass_index=t.pass_index,
                          seed=t.seed, passes=t.passes))
    return tasks


def write_tasks(run: Run, queued: bool) -> None:
    """Every task document (existing ones untouched: a retried planning step never
    resets a task a worker took), tagged and waiting in the farm's queue when
    ``queued``; then the execution is ``planned``."""
    ad, ex = run.ad, run.ex
    tasks = task_records(ex.id, run.plan.shape, ex.seed_basis, ex.first_pass or 0)
    if queued:
        farm.enqueue(ad, ex, tasks)
    ad.store.write_tasks(ex.session_id, ex.id, tasks)
    ad.store.update_execution(ex.session_id, ex.id, {"planned": True})
    ex.planned = True


def mark_published(run: Run) -> None:
    run.ad.store.update_execution(run.ex.session_id, run.ex.id, {"published": True})
    run.ex.published = True


def release(run: Run, node: str, piece: int | None, pieces: int) -> None:
    """A farm slot freed: a finished task's (with its copy's), or a copy's piece's."""
    if piece is None:
        farm.finished(run.ad, run.ex, node, copied=run.task(node).speculated)
    else:
        farm.piece_ended(run.ad, run.ex, node, piece, pieces)


def claim(run: Run, node: str, kind: Kind, owner: str, lease_s: float
          ) -> scheduler.Event | None:
    """The conditional claim; its record is held for the work that follows. A task
    gone, or of an execution that ended meanwhile, yields nothing."""
    ex = run.ex
    try:
        state, task = run.ad.store.claim_task(ex.session_id, ex.id, planning.task_id(ex.id, node),
                                              owner, lease_s, kind=kind)
    except errors.NotFound:
        run.notes.append("skipped: no such task")
        return None
    except errors.Conflict as e:
        if e.code != "execution_ended":
            raise
        run.notes.append("skipped: execution gone or ended")
        return None
    if task is not None:
        run.tasks[node] = task
    if state != Claim.WON:
        run.notes.append(CLAIM_NOTES[state])
    return scheduler.TaskClaimed(node, state, owner)


def announce(run: Run, node: str) -> None:
    """The event of a done production task (again, if it was found done)."""
    task = run.tasks.get(node)
    if task is not None and task.status == Status.FAILED:
        run.notes.append("skipped: task failed")
        return
    run.ad.bus.publish_done(run.ex.session_id, run.ex.id, node)
    if run.notes == ["already done"]:
        run.notes[0] = "announced again: already done"


def result_name(run: Run) -> str:
    ex = run.ex
    return run.ad.blobs.result_name(ex.session_id, ex.id, imaging.EXTENSIONS[ex.format])


def finish(run: Run, status: Status, error: dict | None) -> None:
    """``End``: the execution's final status (done: with its image, which the
    scheduler saw stored); nothing more is acted on in this drive."""
    result = result_name(run) if status == Status.DONE else None
    won = end(run.ad, run.ex, status, error, result=result,
              outcome=run.outcome if status == Status.DONE else None)
    run.ended.append(won)
    if won:
        log.info("execution %s/%s %s", run.ex.session_id, run.ex.id, status)
    run.ex.status = status


def end(ad: Adapters, ex: Execution, status: str, error: dict | None = None,
        result: str | None = None, outcome: dict | None = None) -> bool:
    """Move the execution to a final status with its frozen summary (and ``outcome``:
    more fields, such as its image's noise); first caller wins. The winner takes its
    tasks out of the farm, announces the status and lets the farm's warm minimum
    fall."""
    finished = ad.clock()
    stats = ad.store.task_stats(ex.session_id, ex.id)
    summary = views.summarize(ex, stats, finished, status)
    summary["tasks"].update(recovery.counts(ad, ex.session_id, ex.id))
    fields = {**(outcome or {}), "status": Status(status), "finished": finished,
              "error": error, "summary": summary}
    if result:
        fields["result"] = result
    won = ad.store.finish_execution(ex.session_id, ex.id, fields)
    if won:
        farm.ended(ad, ex)
        current = ad.store.execution(ex.session_id, ex.id)
        if current is not None:
            events.publish_status(ad, current)
    return won
