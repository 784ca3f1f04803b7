"""The reducer: on every task event, decide whether a reduction group is complete and,
if this invocation wins the claim, reduce it; the root also encodes the final image.

The decisions are the scheduler's (``francine.domain.scheduler``), observed and carried
out by ``francine.services.scheduling``; this module reduces. A task's event is a
claim: it counts only if the task's own document is done and its partial (the root's:
the image) is stored; then the number of done siblings (an aggregation query over
task documents, so no hot spot) decides whether the parent is claimed, a conditional
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
from francine.base import errors, logs
from francine.domain import imaging, planning, reduction, scheduler
from francine.domain.envelope import EXECUTION_STATUS, ID, PRODUCE, TASK_DONE, Message, require
from francine.domain.records import FINAL, Execution, Kind, Status
from francine.ports import Adapters
from francine.services import animation, events, recovery, scheduling, waves

log = logging.getLogger("francine.reducer")


class Reducer:
    def __init__(self, adapters: Adapters):
        self.ad = adapters

    def handle(self, message: Message) -> str:
        if message.dead_lettered:
            return self.dead_letter(message)
        if message.type == EXECUTION_STATUS:
            return "; ".join(filter(None, (self.child_ended(message),
                                           events.notify(self.ad, message))))
        if message.type != TASK_DONE:
            return f"ignored: message of type {message.type!r}"
        sid, eid, node = require(message.payload, "session_id", "execution_id", "node")
        ex = self.ad.store.execution(sid, eid)
        if ex is None or ex.final:
            return "skipped: execution gone or ended"
        if ex.waved:  # its own tasks (an extended render's) ended with its first image
            return "skipped: a render in waves"
        try:
            planning.parse_node(node)
        except ValueError:
            return f"ignored: bad node {node!r}"
        work = Reduction(self)
        run = scheduling.Run(self.ad, ex, recovery.scheduler_plan(self.ad, ex), work)
        scheduling.drive(run, [scheduler.TaskDone(node, message.id or node)])
        return f"reduced {work.reduced}" if work.reduced else "waiting for siblings"

    def child_ended(self, message: Message) -> str:
        """A frame of an animation ended: the animation starts its next frames; a wave
        of a render ended, or a render in waves was created or extended: the render
        goes on."""
        execution = message.payload.get("execution") or {}
        if message.payload.get("advance"):  # a render in waves, created or extended
            ex = self.ad.store.execution(execution["session_id"], execution["id"])
            if ex is None or not ex.waved:
                return ""
            return "advanced" if waves.advance(self.ad, ex) else "waves idle"
        if execution.get("status") not in FINAL or not (
                execution.get("animation") or execution.get("render")):
            return ""
        ex = self.ad.store.execution(execution["session_id"], execution["id"])
        if ex is None:
            return ""
        if ex.wave:
            return waves.wave_ended(self.ad, ex)
        return animation.frame_ended(self.ad, ex)

    def reduce(self, ex: Execution, shape: planning.Shape, node: str,
               outcome: dict | None = None) -> tuple[str, ...]:
        """Reduce ``node``; returns the children whose partials are lost (then nothing
        was written), else (). At the root, ``outcome`` gets what the execution's end
        records beside its image (its noise and passes). The task keeps the lines
        logged meanwhile."""
        with logs.captured() as captured:
            return self.reduce_logged(ex, shape, node, outcome, captured.lines)

    def reduce_logged(self, ex: Execution, shape: planning.Shape, node: str,
                      outcome: dict | None, log_lines: list[str]) -> tuple[str, ...]:
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
            # The sum of every pass, kept beside the image: more passes may be added
            # to it (an extension, the next wave of a noise target).
            if ex.frame is None:  # an animation's frames are not extended
                waves.store_sum(self.ad, ex, combined)
            if not ex.wave and outcome is not None:  # its status: how noisy the image is
                outcome.update(waves.progress(waves.assess(shape, combined)))
            if ex.wave:  # a wave's image is seen only as a preview: its tiles, unfinished
                final = combined.mean(uncovered=0.0)
            else:
                final = producers.final_image(ex.producer, ex.scene, combined.mean())
            del combined
            image = imaging.encode(final, ex.format, ex.display)
            self.ad.blobs.put_result(self.result_name(ex), image, imaging.FORMATS[ex.format])
        else:
            self.ad.blobs.put_partial(sid, eid, node, imaging.dump_partial(combined))
        work_s, cpu_s = time.perf_counter() - t0 - fetch_s, time.process_time() - cpu0
        log.info("reduced %s/%s/%s: %d inputs in %.3f s (%.3f s waiting for them)",
                 sid, eid, node, len(below), work_s, fetch_s)
        self.ad.store.update_task(sid, eid, planning.task_id(eid, node), {
            "status": Status.DONE, "finished": self.ad.clock(), "fetch_s": fetch_s,
            "work_s": work_s, "cpu_s": cpu_s, "log": list(log_lines)})
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
        if ex.waved:
            return "ignored: a render in waves (its own tasks ended with its first image)"
        tid, node = payload.get("task_id"), payload.get("node")
        if message.type == PRODUCE and isinstance(tid, str) and ID.fullmatch(tid):
            event = scheduler.DeadLettered(Kind.PRODUCE, task_node(eid, tid),
                                           message.delivery_attempts)
        else:
            event = scheduler.DeadLettered(Kind.REDUCE, node if isinstance(node, str) else None,
                                           message.delivery_attempts)
        run = scheduling.Run(self.ad, ex, recovery.scheduler_plan(self.ad, ex))
        trace = scheduling.drive(run, [event])
        if not trace.actions:
            return "ignored: the task is done (its acknowledgement was lost)"
        if not run.ended:
            return f"re-driven: {[type(a).__name__ for a in trace.actions]}"
        return "failed execution" if any(run.ended) else "execution already ended"


def task_node(eid: str, tid: str) -> str | None:
    """The node of task ``tid`` of execution ``eid``; None if it is not one of its."""
    node = tid.partition("-")[2]
    try:
        planning.parse_node(node)
    except ValueError:
        return None
    return node if planning.task_id(eid, node) == tid else None


class Reduction(scheduling.Work):
    """The reductions of one task event, for the scheduler's executor: each claim won
    up the tree reduces its node; the nodes reduced are the reducer's answer."""

    def __init__(self, reducer: Reducer):
        self.reducer = reducer
        self.reduced: list[str] = []

    def reduce(self, run: scheduling.Run, node: str, owner: str) -> scheduler.Event | None:
        missing = self.reducer.reduce(run.ex, run.plan.shape, node, run.outcome)
        if missing:
            log.warning("inputs of %s/%s/%s lost: %s", run.ex.session_id, run.ex.id, node,
                        missing)
            return scheduler.InputsLost(node, missing)
        self.reduced.append(node)
        return scheduler.TaskDone(node, owner)
