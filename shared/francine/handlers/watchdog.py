"""The watchdog: a periodic sweep over the executions that are not final.

In the cloud, Cloud Scheduler calls the ``watchdog`` HTTP function
(``functions/watchdog``) every minute; the local stack calls the same entry point
from a timer. For each execution it observes what the scheduler needs for a ``Tick``
(the running production tasks and for how long, the mean time of the finished ones,
the unfinished tasks, the time since any task started or finished) and carries out
what the scheduler decides: finish publishing an execution whose creating request
died, start speculative copies of stragglers, re-drive an execution that stopped
moving. Every action is idempotent, so two sweeps at once are harmless.

``observe_endgame`` is the same kind of observation for the reducer, on every finished
production task: the end game's backup copies start then, not at the next sweep.
"""

from __future__ import annotations

import dataclasses
import logging

from francine.base import logs
from francine.domain import scheduler
from francine.domain.records import Execution, Kind, Status
from francine.ports import Adapters
from francine.services import executions, farm, recovery, warmup

log = logging.getLogger("francine.watchdog")


def observe(ad: Adapters, ex: Execution) -> scheduler.Observed:
    sid, eid = ex.session_id, ex.id
    now = ad.clock()
    seen = scheduler.Observed(status=ex.status, planned=ex.planned, published=ex.published,
                              now_s=(now - ex.created).total_seconds())
    if not ex.published:
        return seen
    open_tasks = ad.store.tasks_in(sid, eid, (str(Status.PENDING), str(Status.RUNNING)))
    running = tuple((t.node, (now - t.started).total_seconds(), t.speculated)
                    for t in open_tasks if t.status == Status.RUNNING
                    and t.kind == Kind.PRODUCE and t.started is not None)
    stats = ad.store.task_stats(sid, eid)["produce"]
    mean = stats["work"] / stats["n"] if stats.get("n") else None
    last = ad.store.last_progress(sid, eid) or ex.created
    return scheduler.Observed(
        status=ex.status, planned=ex.planned, published=ex.published,
        now_s=seen.now_s, running=running, mean_done_s=mean,
        unfinished=tuple(t.node for t in open_tasks),
        # queued behind other work in the farm: the farm's dispatch starts them
        waiting=tuple(t.node for t in open_tasks if t.queue and t.queue.endswith(":waiting")),
        idle_s=(now - max(last, ex.created)).total_seconds())


def observe_endgame(ad: Adapters, ex: Execution, node: str,
                    seen: scheduler.Observed) -> scheduler.Observed:
    """What the ``TaskDone`` of a production task needs for the end game: how many
    production tasks never started (a count) and, when none is left, the mean time of
    the finished ones (an aggregation), the longest-running tasks without a copy and,
    when there are more, the ones that started last (queries limited to
    ``ENDGAME_CANDIDATES``): at most four bounded queries, whatever the execution's
    size."""
    if scheduler.production_index(node) is None:
        return seen
    sid, eid = ex.session_id, ex.id
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


def tick(ad: Adapters, ex: Execution, stall_s: float) -> list[scheduler.Action]:
    """Step one execution's ``Tick`` and carry out its actions; returns them."""
    plan = recovery.scheduler_plan(ad, ex, stall_s=stall_s)
    if not ex.published:  # the api's resumption: writes the tasks, publishes
        current = ad.store.execution(ex.session_id, ex.id)
        return executions.carry_out_start(ad, current, scheduler.Tick()).actions \
            if current else []

    def carry_out(action):
        recovery.carry_out(ad, ex, plan.shape, action)
        log.info("watchdog %s/%s: %s", ex.session_id, ex.id, action)

    return scheduler.drive(plan, [scheduler.Tick()], lambda _e: observe(ad, ex),
                           carry_out).actions


def sweep(ad: Adapters, stall_s: float | None = None) -> dict:
    """One pass over every active execution; returns counts of what it did. An
    execution that fails to sweep is logged and skipped (the next sweep retries)."""
    stall_s = ad.settings.stall_s if stall_s is None else stall_s
    report = {"executions": 0, "speculated": 0, "republished": 0, "redriven": 0,
              "resumed": 0, "errors": 0}
    for ex in ad.store.active_executions():
        report["executions"] += 1
        try:
            with logs.context(session_id=ex.session_id, execution_id=ex.id):
                actions = tick(ad, ex, stall_s)
        except Exception:
            log.exception("watchdog: execution %s/%s", ex.session_id, ex.id)
            report["errors"] += 1
            continue
        for a in actions:
            match a:
                case scheduler.Speculate():
                    report["speculated"] += 1
                case scheduler.Publish(first=True):
                    report["resumed"] += 1
                case scheduler.Publish(indices=indices):
                    report["republished"] += len(indices)
                case scheduler.Redrive():
                    report["redriven"] += 1
    try:  # a dispatch lost with an instance that died is made up for here
        report["dispatched"] = farm.dispatch_now(ad)
    except Exception:
        log.exception("watchdog: farm dispatch")
        report["errors"] += 1
    report["min_instances"] = warmup.reconcile(ad)  # logs its own failures
    return report
