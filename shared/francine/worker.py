"""The render worker: one production task per Pub/Sub push request.

Idempotent: a task found done is announced again (its event may have been lost) and
not rendered again; a task delivered twice while running renders at most once more and
stores its partial at most once (partials are created, never overwritten). A render
that finds its task done when it ends (a speculative copy finished first) drops its
result. A render that raises is a
failed pass: the scheduler replaces it (a fresh seed) or, past the failure budget,
fails the execution.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time

from francine import errors, executions, imaging, planning, producers, recovery, scheduler
from francine.cache import ResourceCache
from francine.clients import Adapters
from francine.envelope import Message, require
from francine.producers.base import ResourceInfo, Resources, Tile
from francine.records import Claim, Execution, Status, Task

log = logging.getLogger("francine.worker")

#: An instance reads an execution at most this often (0: before every task). Only its
#: status changes after creation, so a cancelled or failed execution stops reaching this
#: instance's tasks within this time, and back-to-back tasks of one execution save a
#: Firestore round trip each. 0 by default: API.md promises that tasks not yet started
#: when a render is cancelled never run.
EXECUTION_TTL_S = 0.0


class RenderFailed(Exception):
    """The producer's render raised (not for a scene error, not for the platform)."""


class Worker:
    def __init__(self, adapters: Adapters):
        self.ad = adapters
        self.cache = ResourceCache(pathlib.Path(adapters.settings.cache_dir),
                                   adapters.settings.cache_bytes)
        # Lives as long as the instance: parsed meshes, acceleration structures.
        self.memo: dict = {}
        self.execution_ttl_s = EXECUTION_TTL_S
        self._last: tuple = ((None, None), None, None)  # (sid, eid), read at, execution

    def execution(self, sid: str, eid: str, tid: str | None = None) -> Execution | None:
        """The execution, read again when the last read is older than the TTL or was
        of another execution or found it ended (the last one only is kept)."""
        key, read_at, ex = self._last
        now = self.ad.clock()
        if key == (sid, eid) and ex is not None and not ex.final \
                and (now - read_at).total_seconds() < self.execution_ttl_s:
            return ex
        # The task is read in the same round trip, for the claim that follows.
        ex = self.ad.store.execution(sid, eid, with_task=tid)
        self._last = ((sid, eid), now, ex)
        return ex

    def fetch(self, info: ResourceInfo) -> pathlib.Path:
        """A local copy of a resource, downloaded once per instance (by content hash)
        and kept while the cache's byte bound allows."""
        return self.cache.path(info.sha256,
                               lambda dest: self.ad.blobs.fetch_resource(info.sha256, dest))

    def handle(self, message: Message) -> str:
        """Render the task of ``message``; returns what happened (for logs and tests)."""
        sid, eid, tid = require(message.payload, "session_id", "execution_id", "task_id")
        t_fetch = time.perf_counter()
        ex = self.execution(sid, eid, tid)
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

        def observe(event) -> scheduler.Observed:
            if isinstance(event, scheduler.PassFailed):
                # The task as it is now: a copy may have failed and replaced it already.
                now = self.ad.store.get_task(sid, eid, tid) or held["task"]
                return dataclasses.replace(seen, failed=recovery.failed_passes(self.ad, ex),
                                           generation=now.generation)
            return seen

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
                    except RenderFailed as e:
                        log.warning("render of %s/%s/%s failed: %s", sid, eid, task.node, e)
                        outcome.append(f"failed: {e}")
                        return scheduler.PassFailed(task.node, str(e), task.generation)
                    if task.status == Status.DONE:
                        outcome.append("dropped: another copy finished first")
                        return None
                    outcome.append("rendered")
                    return scheduler.TaskProduced(task.node)
                case scheduler.Announce(node=n):
                    if held["task"].status == Status.FAILED:
                        outcome.append("skipped: task failed")
                        return None
                    self.ad.bus.publish_done(sid, eid, n)
                    if outcome == ["already done"]:
                        outcome[0] = "announced again: already done"
                case scheduler.End(status=status, error=error):
                    executions.end(self.ad, ex, status, error)
                    raise errors.PermanentError(error["message"] if error else str(status))
                case _:
                    recovery.carry_out(self.ad, ex, plan.shape, action, held.get("task"))
            return None

        scheduler.drive(plan, [scheduler.TaskDelivered(node, message.id)], observe, carry_out)
        return outcome[0] if outcome else "nothing to do"

    def produce(self, ex: Execution, shape: planning.Shape, task: Task, fetch_s: float) -> None:
        """Render the task's passes, store its partial, then mark it done (in that
        order: done means the partial exists). If the task is done by the time the
        render ends (a copy won), nothing is written and ``task.status`` says so."""
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
            # Every pass keeps its own seed, whatever the folding; a replacement
            # (generation > 0) renders fresh ones.
            seed = planning.seed_for(eid, p, task.generation)
            try:
                pixels = producer.render(ex.scene, tile, seed, resources)
            except (ValueError, errors.FrancineError):
                raise  # a scene error (permanent) or the platform's (retried)
            except Exception as e:
                raise RenderFailed(f"{type(e).__name__}: {e}") from e
            partial = imaging.from_pass(tile, shape.tile, pixels)
            total = partial if total is None else imaging.combine([total, partial])
        work_s = time.perf_counter() - t0 - fetched
        cpu_s = time.process_time() - cpu0
        t_up = time.perf_counter()
        if not self.ad.blobs.put_partial(sid, eid, task.node, imaging.dump_partial(total)):
            # Create-only: the partial exists. A copy finished first (the first result
            # wins: drop this one), or a try of this task died before marking it done
            # (then this one marks it done).
            now = self.ad.store.get_task(sid, eid, task.id)
            if now is not None and now.status == Status.DONE:
                task.status = Status.DONE
                log.info("dropped %s/%s/%s: another copy finished first", sid, eid,
                         task.node)
                return
        self.ad.store.update_task(sid, eid, task.id, {
            "status": Status.DONE, "finished": self.ad.clock(), "fetch_s": fetch_s + fetched,
            "work_s": work_s + (time.perf_counter() - t_up), "cpu_s": cpu_s})
        log.info("rendered %s/%s/%s in %.3f s", sid, eid, task.node, work_s)
