"""The watchdog: a periodic sweep over the executions that are not final.

In the cloud, Cloud Scheduler calls the ``watchdog`` HTTP function
(``functions/watchdog``) every minute; the local stack calls the same entry point
from a timer. Each execution gets a ``Tick``: ``francine.services.scheduling`` observes
what it needs (the running production tasks and for how long, the mean time of the
finished ones, the unfinished tasks and those waiting in the farm's queue, the time
since any task started or finished) and carries out what the scheduler decides: finish
publishing an execution whose creating request died, admit tasks waiting in the farm's
queue (a dispatch lost with a dead instance is made up for), start speculative copies
of stragglers, re-drive an execution that stopped moving. Every action is idempotent,
so two sweeps at once are harmless. The sweep also sets the render service's warm
minimum to what the running executions need.
"""

from __future__ import annotations

import logging

from francine.base import logs
from francine.domain import scheduler
from francine.domain.records import Execution
from francine.ports import Adapters
from francine.services import animation, recovery, scheduling, warmup

log = logging.getLogger("francine.watchdog")


def tick(ad: Adapters, ex: Execution, stall_s: float) -> list[scheduler.Action]:
    """Step one execution's ``Tick`` and carry out its actions; returns them."""
    if not ex.published:  # the api's resumption: writes the tasks, publishes
        current = ad.store.execution(ex.session_id, ex.id)
        if current is None:
            return []
        ex = current
    run = scheduling.Run(ad, ex, recovery.scheduler_plan(ad, ex, stall_s=stall_s))
    actions = scheduling.drive(run, [scheduler.Tick()]).actions
    for action in actions:
        log.info("watchdog %s/%s: %s", ex.session_id, ex.id, action)
    return actions


def sweep(ad: Adapters, stall_s: float | None = None) -> dict:
    """One pass over every active execution; returns counts of what it did. An
    execution that fails to sweep is logged and skipped (the next sweep retries)."""
    stall_s = ad.settings.stall_s if stall_s is None else stall_s
    report = {"executions": 0, "speculated": 0, "republished": 0, "redriven": 0,
              "resumed": 0, "dispatched": 0, "frames": 0, "errors": 0}
    for ex in ad.store.active_executions():
        report["executions"] += 1
        try:
            with logs.context(session_id=ex.session_id, execution_id=ex.id):
                done = animation.tick(ad, ex)  # an animation, or a frame of an ended one
                if done is not None:
                    if done != "animation idle":
                        log.info("watchdog %s/%s: %s", ex.session_id, ex.id, done)
                        report["frames"] += 1
                    continue
                actions = tick(ad, ex, stall_s)
        except Exception:
            log.exception("watchdog: execution %s/%s", ex.session_id, ex.id)
            report["errors"] += 1
            continue
        for a in actions:
            match a:
                case scheduler.Speculate():
                    report["speculated"] += 1
                case scheduler.Publish(first=True) | scheduler.Admit(first=True):
                    report["resumed"] += 1
                case scheduler.Publish(indices=indices):
                    report["republished"] += len(indices)
                case scheduler.Redrive():
                    report["redriven"] += 1
                case scheduler.Admit():  # a dispatch lost with a dead instance, made up for
                    report["dispatched"] += 1
    report["min_instances"] = warmup.reconcile(ad)  # logs its own failures
    return report
