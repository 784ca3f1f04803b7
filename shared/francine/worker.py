"""The render worker: one production task per Pub/Sub push request.

Idempotent: a task found done is announced again (its event may have been lost) and
not rendered again; a task delivered twice while running renders at most once more and
writes the same bytes to the same object.
"""

from __future__ import annotations

import logging
import pathlib
import time

from francine import errors, executions, imaging, planning, producers, scheduler
from francine.cache import ResourceCache
from francine.clients import Adapters
from francine.envelope import Message, require
from francine.producers.base import ResourceInfo, Resources, Tile
from francine.records import Claim, Execution, Status, Task

log = logging.getLogger("francine.worker")


class Worker:
    def __init__(self, adapters: Adapters):
        self.ad = adapters
        self.cache = ResourceCache(pathlib.Path(adapters.settings.cache_dir),
                                   adapters.settings.cache_bytes)
        # Lives as long as the instance: parsed meshes, acceleration structures.
        self.memo: dict = {}

    def fetch(self, info: ResourceInfo) -> pathlib.Path:
        """A local copy of a resource, downloaded once per instance (by content hash)
        and kept while the cache's byte bound allows."""
        return self.cache.path(info.sha256,
                               lambda dest: self.ad.blobs.fetch_resource(info.sha256, dest))

    def handle(self, message: Message) -> str:
        """Render the task of ``message``; returns what happened (for logs and tests)."""
        sid, eid, tid = require(message.payload, "session_id", "execution_id", "task_id")
        t_fetch = time.perf_counter()
        ex = self.ad.store.execution(sid, eid)
        if ex is None or ex.final:
            return "skipped: execution gone or ended"
        node = tid.partition("-")[2]
        try:
            if scheduler.production_index(node) is None:
                return "skipped: not a production task"
        except ValueError:
            return "skipped: no such task"
        plan = scheduler.Plan(planning.Shape.from_dict(ex.shape), ex.admission_limit)
        seen = scheduler.Observed(status=ex.status, planned=ex.planned, published=ex.published)
        held: dict = {}
        outcome: list[str] = []

        def carry_out(action):
            match action:
                case scheduler.ClaimTask(node=n, kind=kind, owner=owner, lease_s=lease):
                    try:
                        # A conditional write: a task finished in the meantime is never
                        # set back to running.
                        state, held["task"] = self.ad.store.claim_task(
                            sid, eid, tid, owner, lease, kind=kind)
                    except errors.NotFound:
                        outcome.append("skipped: no such task")
                        return None
                    if state != Claim.WON:
                        outcome.append({Claim.DONE: "already done", Claim.HELD:
                                        "skipped: another delivery took it this instant",
                                        Claim.OTHER: "skipped: not a production task"}[state])
                    return scheduler.TaskClaimed(n, state, owner)
                case scheduler.Produce():
                    task = held["task"]
                    try:
                        self.produce(ex, plan.shape, task, time.perf_counter() - t_fetch)
                    except ValueError as e:  # SceneError is one
                        # Validated when the execution was created: retrying cannot help.
                        return scheduler.TaskFailed(task.node, str(e), permanent=True)
                    outcome.append("rendered")
                    return scheduler.TaskProduced(task.node)
                case scheduler.Announce(node=n):
                    if held["task"].status == Status.FAILED:
                        outcome.append("skipped: task failed")
                        return None
                    self.ad.bus.publish_done(sid, eid, n)
                    if outcome == ["already done"]:
                        outcome[0] = "announced again: already done"
                case scheduler.MarkFailed(node=n, error=error):
                    self.ad.store.update_task(sid, eid, tid, {"status": Status.FAILED,
                                                              "error": error})
                case scheduler.End(status=status, error=error):
                    executions.end(self.ad, ex, status, error)
                    raise errors.PermanentError(error["message"] if error else str(status))
            return None

        scheduler.drive(plan, [scheduler.TaskDelivered(node, message.id)],
                        lambda _event: seen, carry_out)
        return outcome[0] if outcome else "nothing to do"

    def produce(self, ex: Execution, shape: planning.Shape, task: Task, fetch_s: float) -> None:
        """Render the task's passes, store its partial, then mark it done (in that
        order: done means the partial exists)."""
        sid, eid = ex.session_id, ex.id
        fetched = 0.0

        def timed_fetch(info: ResourceInfo) -> pathlib.Path:
            nonlocal fetched
            t = time.perf_counter()
            try:
                return self.fetch(info)
            finally:
                fetched += time.perf_counter() - t

        infos = {n: ResourceInfo(n, r["sha256"], r["size"]) for n, r in ex.resources.items()}
        resources = Resources(infos, timed_fetch, self.memo)
        tile = Tile(*task.tile)
        producer = producers.get(ex.producer)
        cpu0, t0 = time.process_time(), time.perf_counter()
        total = None
        for p in range(task.pass_index, task.pass_index + task.passes):
            # Every pass keeps its own seed, whatever the folding.
            pixels = producer.render(ex.scene, tile, planning.seed_for(eid, p), resources)
            partial = imaging.from_pass(tile, shape.tile, pixels)
            total = partial if total is None else imaging.combine([total, partial])
        work_s = time.perf_counter() - t0 - fetched
        cpu_s = time.process_time() - cpu0
        t_up = time.perf_counter()
        self.ad.blobs.put_partial(sid, eid, task.node, imaging.dump_partial(total))
        self.ad.store.update_task(sid, eid, task.id, {
            "status": Status.DONE, "finished": self.ad.clock(), "fetch_s": fetch_s + fetched,
            "work_s": work_s + (time.perf_counter() - t_up), "cpu_s": cpu_s})
        log.info("rendered %s/%s/%s in %.3f s", sid, eid, task.node, work_s)
