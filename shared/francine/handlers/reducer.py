"""The reducer: on every task event, decide whether a reduction group is complete and,
if this invocation wins the claim, reduce it; the root also encodes the final image.

The decisions are the scheduler's (``francine.domain.scheduler``); this module observes (the
execution's status, the number of done siblings: an aggregation query over task
documents, so no hot spot) and carries out its actions. The claim is a conditional
write on the parent's own task document. After reducing a node the same invocation
goes on to the node's parent, so one event can carry the tree up to the root.

Dead-lettered messages: a production task that failed all its delivery attempts is a
failed pass (replaced, or past the failure budget the execution fails with the
reason); a task event is re-driven a few times before the execution fails. A reduction
that finds one of its inputs lost has it produced again.
"""

from __future__ import annotations

import logging
import time

from francine import producers
from francine.base import errors
from francine.domain import imaging, planning, reduction, scheduler
from francine.domain.envelope import EXECUTION_STATUS, ID, PRODUCE, TASK_DONE, Message, require
from francine.domain.records import Execution, Kind, Status
from francine.handlers import watchdog
from francine.ports import Adapters
from francine.services import events, executions, farm, recovery

log = logging.getLogger("francine.reducer")

#: A claim older than this is presumed dead (its holder was killed without a retry).
CLAIM_LEASE_S = scheduler.REDUCE_LEASE_S


class Reducer:
    def __init__(self, adapters: Adapters):
        self.ad = adapters

    def handle(self, message: Message) -> str:
        if message.dead_lettered:
            return self.dead_letter(message)
        if message.type == EXECUTION_STATUS:
            return events.notify(self.ad, message)
        if message.type != TASK_DONE:
            return f"ignored: message of type {message.type!r}"
        sid, eid, node = require(message.payload, "session_id", "execution_id", "node")
        ex = self.ad.store.execution(sid, eid)
        if ex is None or ex.final:
            return "skipped: execution gone or ended"
        try:
            planning.parse_node(node)
        except ValueError:
            return f"ignored: bad node {node!r}"
        if scheduler.production_index(node) is not None:
            farm.finished(self.ad, ex, node)  # its farm slot goes to the next task
        return self.advance(ex, node, owner=message.id or node)

    def advance(self, ex: Execution, node: str, owner: str) -> str:
        sid, eid = ex.session_id, ex.id
        plan = recovery.scheduler_plan(self.ad, ex)
        reduced: list[str] = []

        def observe(event) -> scheduler.Observed:
            up = scheduler.parent_to_count(plan, event)
            done = self.ad.store.count_done_children(sid, eid, up) if up else 0
            seen = scheduler.Observed(status=ex.status, planned=ex.planned,
                                      published=ex.published, done_siblings=done)
            if isinstance(event, scheduler.TaskDone):  # a freed instance: the end game?
                seen = watchdog.observe_endgame(self.ad, ex, event.node, seen)
            return seen

        def carry_out(action):
            match action:
                case scheduler.Publish(indices=indices):
                    self.ad.bus.publish_tasks(sid, eid, [
                        (i, planning.task_id(eid, planning.node_name(0, i))) for i in indices])
                case scheduler.ClaimTask(node=n, kind=kind, owner=who, lease_s=lease):
                    state, _ = self.ad.store.claim_task(
                        sid, eid, planning.task_id(eid, n), who, lease, kind=kind)
                    return scheduler.TaskClaimed(n, state, who)
                case scheduler.Reduce(node=n):
                    missing = self.reduce(ex, plan.shape, n)
                    if missing:
                        log.warning("inputs of %s/%s/%s lost: %s", sid, eid, n, missing)
                        return scheduler.InputsLost(n, missing)
                    reduced.append(n)
                    return scheduler.TaskDone(n, owner)
                case scheduler.Advance(node=n):
                    return scheduler.TaskDone(n, owner)
                case scheduler.End(status=status, error=error):
                    self.end(ex, status, error)
                case _:
                    recovery.carry_out(self.ad, ex, plan.shape, action)
            return None

        scheduler.drive(plan, [scheduler.TaskDone(node, owner)], observe, carry_out)
        return f"reduced {reduced}" if reduced else "waiting for siblings"

    def reduce(self, ex: Execution, shape: planning.Shape, node: str) -> tuple[str, ...]:
        """Reduce ``node``; returns the children whose partials are lost (then nothing
        was written), else ()."""
        sid, eid = ex.session_id, ex.id
        cpu0, t0 = time.process_time(), time.perf_counter()
        below = planning.children(shape, node)
        fetch_s = 0.0

        def timed(children):
            nonlocal fetch_s
            it = iter(children)
            while True:
                t = time.perf_counter()
                data = next(it, None)
                fetch_s += time.perf_counter() - t  # waiting for a download
                if data is None:
                    return
                yield data
                del data

        try:
            combined = reduction.accumulate(shape, node, timed(
                self.ad.blobs.stream_partials(sid, eid, below, reduction.WINDOW)))
        except errors.NotFound:
            return self.lost(ex, below)
        if node == shape.root:
            final = producers.final_image(ex.producer, ex.scene, combined.mean(in_place=True))
            del combined
            image = imaging.encode(final, ex.format, ex.display)
            self.ad.blobs.put_result(self.result_name(ex), image, imaging.FORMATS[ex.format])
        else:
            self.ad.blobs.put_partial(sid, eid, node, imaging.dump_partial(combined))
        self.ad.store.update_task(sid, eid, planning.task_id(eid, node), {
            "status": Status.DONE, "finished": self.ad.clock(), "fetch_s": fetch_s,
            "work_s": time.perf_counter() - t0 - fetch_s, "cpu_s": time.process_time() - cpu0})
        return ()

    def lost(self, ex: Execution, nodes: list[str]) -> tuple[str, ...]:
        missing = []
        for n in nodes:
            try:
                self.ad.blobs.get_partial(ex.session_id, ex.id, n)
            except errors.NotFound:
                missing.append(n)
        if not missing:
            raise errors.TransientError(f"partials of {nodes} were missing for a moment")
        return tuple(missing)

    def result_name(self, ex: Execution) -> str:
        return self.ad.blobs.result_name(ex.session_id, ex.id, imaging.EXTENSIONS[ex.format])

    def end(self, ex: Execution, status: Status, error: dict | None = None) -> bool:
        result = self.result_name(ex) if status == Status.DONE else None
        ended = executions.end(self.ad, ex, status, error, result=result)
        if ended:
            log.info("execution %s/%s %s", ex.session_id, ex.id, status)
        return ended

    def dead_letter(self, message: Message) -> str:
        payload = message.payload
        sid, eid = payload.get("session_id"), payload.get("execution_id")
        if not (isinstance(sid, str) and isinstance(eid, str)
                and ID.fullmatch(sid) and ID.fullmatch(eid)):
            return "ignored: dead letter without execution"
        if message.type == PRODUCE and "piece" in payload:
            # Its deliveries ran out (refused: no idle instance); the task's own render
            # and the watchdog look after the task.
            return "ignored: a piece of a speculative copy"
        ex = self.ad.store.execution(sid, eid)
        if ex is None or ex.final:
            return "execution already ended"
        plan = recovery.scheduler_plan(self.ad, ex)
        tid = payload.get("task_id")
        task, failed, up = None, (), None
        if message.type == PRODUCE and isinstance(tid, str) and ID.fullmatch(tid):
            task = self.ad.store.get_task(sid, eid, tid)
            event = scheduler.DeadLettered(Kind.PRODUCE, task.node if task else tid,
                                           message.delivery_attempts)
            if task is not None and task.status != Status.DONE:
                failed = recovery.failed_passes(self.ad, ex)
        else:
            node = payload.get("node")
            event = scheduler.DeadLettered(Kind.REDUCE, node, message.delivery_attempts)
            up = self.parent_task(ex, plan, node)
            if isinstance(node, str) and up is not None:  # done: its pixels exist
                task = self.ad.store.get_task(sid, eid, planning.task_id(eid, node))
        seen = scheduler.Observed(status=ex.status, planned=ex.planned, published=ex.published,
                                  task_status=task.status if task else None, failed=failed,
                                  generation=task.generation if task else 0,
                                  attempts=task.attempts if task else 0,
                                  redrives=up.redrives if up else 0,
                                  parent_status=up.status if up else None)
        ended = []

        def carry_out(action):
            match action:
                case scheduler.End(status=status, error=error):
                    ended.append(self.end(ex, status, error))
                case _:
                    recovery.carry_out(self.ad, ex, plan.shape, action, task)

        trace = scheduler.drive(plan, [event], lambda _e: seen, carry_out)
        if not trace.actions:
            return "ignored: the task is done (its acknowledgement was lost)"
        if not any(isinstance(a, scheduler.End) for a in trace.actions):
            return f"re-driven: {[type(a).__name__ for a in trace.actions]}"
        return "failed execution" if any(ended) else "execution already ended"

    def parent_task(self, ex: Execution, plan: scheduler.Plan, node):
        try:
            up = planning.parent(plan.shape, node) if isinstance(node, str) else None
        except ValueError:
            return None
        return self.ad.store.get_task(ex.session_id, ex.id, planning.task_id(ex.id, up)) \
            if up else None

