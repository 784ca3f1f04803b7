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

import logging
import pathlib
import time

from francine import producers
from francine.base import errors, logs
from francine.domain import imaging, planning, scheduler
from francine.domain.envelope import Message, require
from francine.domain.producer import ResourceInfo, Resources, Tile
from francine.domain.records import Execution, Status, Task
from francine.ports import Adapters
from francine.services import recovery, scheduling
from francine.services.cache import ResourceCache

log = logging.getLogger("francine.worker")

#: An instance reads an execution at most this often (0: before every task). Only its
#: status changes after creation, and the claim reads it again in its transaction, so
#: tasks not yet started when a render is cancelled never run (the REST contract,
#: docs/api.md) whatever this is; within it, back-to-back tasks of one execution save
#: a Firestore round trip each.
EXECUTION_TTL_S = 5.0


def parse_piece(value) -> tuple[int, int] | None:
    """(piece, pieces) of a copy's piece, given as "piece/pieces"; None if malformed."""
    if not isinstance(value, str):
        return None
    piece, _, pieces = value.partition("/")
    if not (piece.isdigit() and pieces.isdigit()):
        return None
    if not 0 <= int(piece) < int(pieces) <= scheduler.MAX_COPY_PIECES:
        return None
    return int(piece), int(pieces)


class RenderFailed(Exception):
    """The producer's render raised (not for a scene error, not for the platform)."""


class Delivery(scheduling.Work):
    """The rendering of one delivery, for the scheduler's executor: a task's passes, or
    a band of a copy's, stored; what happened goes into the run's notes."""

    def __init__(self, worker: Worker, started: float, captured: logs.Captured):
        self.worker = worker
        self.started = started  # perf_counter when the message arrived: fetching starts
        self.log = captured.lines  # what is logged meanwhile: kept with the task

    def produce(self, run: scheduling.Run, task: Task) -> scheduler.Event | None:
        ex = run.ex
        try:
            self.worker.produce(ex, run.plan.shape, task, time.perf_counter() - self.started,
                                self.log)
        except ValueError as e:  # SceneError is one
            # Validated when the execution was created: retrying cannot help.
            return scheduler.TaskFailed(task.node, str(e))
        except RenderFailed as e:
            log.warning("render of %s/%s/%s failed: %s", ex.session_id, ex.id, task.node, e)
            run.notes.append(f"failed: {e}")
            return scheduler.PassFailed(task.node, str(e), task.generation)
        if task.status == Status.DONE:
            run.notes.append("dropped: another copy finished first")
            return None
        run.notes.append("rendered")
        return scheduler.TaskProduced(task.node)

    def produce_piece(self, run: scheduling.Run, task: Task, piece: int,
                      pieces: int) -> scheduler.Event | None:
        ex = run.ex
        try:
            stored = self.worker.produce_piece(ex, run.plan.shape, task, piece, pieces,
                                               self.log)
        except (ValueError, RenderFailed) as e:
            # A copy's piece: the task's own render decides its fate.
            log.warning("piece %d of %d of %s/%s/%s failed: %s", piece, pieces,
                        ex.session_id, ex.id, task.node, e)
            run.notes.append(f"failed: piece {piece} of {pieces}: {e}")
            return None
        if stored:
            run.notes.append("rendered")
            return scheduler.TaskProduced(task.node)
        run.notes.append("dropped: another copy finished first" if task.status == Status.DONE
                         else f"stored piece {piece} of {pieces}")
        return None


class Worker:
    def __init__(self, adapters: Adapters):
        self.ad = adapters
        self.cache = ResourceCache(pathlib.Path(adapters.settings.cache_dir),
                                   adapters.settings.cache_bytes)
        # Lives as long as the instance: parsed meshes, acceleration structures.
        self.memo: dict = {}
        self.execution_ttl_s = EXECUTION_TTL_S
        self._last: tuple = ((None, None), None, None)  # (sid, eid), read at, execution

    def execution(self, sid: str, eid: str) -> Execution | None:
        """The execution, read again when the last read is older than the TTL or was
        of another execution or found it ended (the last one only is kept). A cancel
        stops a task from starting however old this read is: the claim reads the
        execution in its transaction."""
        key, read_at, ex = self._last
        now = self.ad.clock()
        if key == (sid, eid) and ex is not None and not ex.final \
                and (now - read_at).total_seconds() < self.execution_ttl_s:
            return ex
        ex = self.ad.store.execution(sid, eid)
        self._last = ((sid, eid), now, ex)
        return ex

    def fetch(self, info: ResourceInfo) -> pathlib.Path:
        """A local copy of a resource, downloaded once per instance (by content hash)
        and kept while the cache's byte bound allows."""
        return self.cache.path(info.sha256,
                               lambda dest: self.ad.blobs.fetch_resource(info.sha256, dest))

    def handle(self, message: Message) -> str:
        """Render the task of ``message``; returns what happened (for logs and tests).
        Raises PermanentError when the task ends its execution as failed."""
        sid, eid, tid = require(message.payload, "session_id", "execution_id", "task_id")
        t_fetch = time.perf_counter()
        ex = self.execution(sid, eid)
        if ex is None or ex.final:
            return "skipped: execution gone or ended"
        if ex.waved:  # its own tasks (an extended render's) ended with its first image
            return "skipped: a render in waves"
        node = tid.partition("-")[2]
        try:
            if scheduler.production_index(node) is None:
                return "skipped: not a production task"
        except ValueError:
            return "skipped: no such task"
        if planning.task_id(eid, node) != tid:  # not a task of this execution
            return "skipped: no such task"
        piece = message.payload.get("piece")
        first: scheduler.Event
        if piece is None:
            first = scheduler.TaskDelivered(node, message.id)
        elif (band := parse_piece(piece)) is None:
            return f"skipped: malformed piece {piece!r}"
        else:
            first = scheduler.PieceDelivered(node, *band)
        with logs.captured() as captured:
            run = scheduling.Run(self.ad, ex, recovery.scheduler_plan(self.ad, ex),
                                 Delivery(self, t_fetch, captured))
            actions = scheduling.drive(run, [first]).actions
        for action in actions:
            if isinstance(action, scheduler.End):  # failed: acknowledged, and recorded
                raise errors.PermanentError(action.error["message"] if action.error
                                            else str(action.status))
        return run.notes[0] if run.notes else "nothing to do"

    def resources(self, ex: Execution) -> tuple[Resources, list[float]]:
        """The execution's resources, fetched on first use; the list collects the
        seconds spent fetching (not rendering)."""
        fetched = [0.0]

        def timed_fetch(info: ResourceInfo) -> pathlib.Path:
            t = time.perf_counter()
            try:
                return self.fetch(info)
            finally:
                fetched[0] += time.perf_counter() - t

        infos = {n: ResourceInfo(n, r["sha256"], r["size"]) for n, r in ex.resources.items()}
        return Resources(infos, timed_fetch, self.memo), fetched

    def render(self, ex: Execution, task: Task, tile: Tile,
               resources: Resources) -> imaging.PassSum:
        """The sum of the task's passes over ``tile`` (the task's tile or a band of
        it), added pass after pass in fixed point: a pixel's value is the same whatever
        the cut and the folding. A
        producer that renders several passes in one call (``render_passes``: one
        request to a Blender process) gets them all at once."""
        producer = producers.get(ex.producer)
        # Every pass keeps its own seed, whatever the folding; a replacement
        # (generation > 0) renders fresh ones.
        first = (ex.first_pass or 0) + (task.pass_index or 0)
        seeds = planning.pass_seeds(ex.seed_basis, range(first, first + task.passes),
                                    task.generation)
        several = getattr(producer, "render_passes", None)
        try:
            if several is not None:
                passes = several(ex.scene, tile, seeds, resources)
            else:
                passes = (producer.render(ex.scene, tile, seed, resources) for seed in seeds)
            total = imaging.PassSum()
            for pixels in passes:
                total.add(imaging.checked_pass(tile, pixels))
        except (ValueError, errors.FrancineError):
            raise  # a scene error (permanent) or the platform's (retried)
        except Exception as e:
            raise RenderFailed(f"{type(e).__name__}: {e}") from e
        return total

    @staticmethod
    def cpu_seconds(ex: Execution) -> float:
        """CPU seconds used so far by this process and by the producer's own processes
        (Blender renders in processes of its own): what a task's ``cpu_s`` counts."""
        own = getattr(producers.get(ex.producer), "cpu_seconds", None)
        return time.process_time() + (own() if own is not None else 0.0)

    def produce(self, ex: Execution, shape: planning.Shape, task: Task, fetch_s: float,
                log_lines: list[str] | None = None) -> None:
        """Render the task's passes, store its partial, then mark it done (in that
        order: done means the partial exists). If the task is done by the time the
        render ends (a copy won), nothing is written and ``task.status`` says so."""
        resources, fetched = self.resources(ex)
        tile = Tile(*task.tile)
        cpu0, t0 = self.cpu_seconds(ex), time.perf_counter()
        total = self.render(ex, task, tile, resources)
        work_s = time.perf_counter() - t0 - fetched[0]
        self.store(ex, task, imaging.tile_partial(tile, shape.tile, total, task.passes),
                   {"fetch_s": fetch_s + fetched[0], "work_s": work_s,
                    "cpu_s": self.cpu_seconds(ex) - cpu0}, log_lines)

    def produce_piece(self, ex: Execution, shape: planning.Shape, task: Task, piece: int,
                      pieces: int, log_lines: list[str] | None = None) -> bool:
        """Render band ``piece`` of ``pieces`` of a speculative copy of ``task`` and
        store it; the caller that then finds every band stored assembles the task's
        partial (the same pixels as the task's own render) and stores it as
        ``produce`` does. True if this call stored the task's partial."""
        sid, eid = ex.session_id, ex.id
        resources, fetched = self.resources(ex)
        tile = Tile(*task.tile)
        cpu0, t0 = self.cpu_seconds(ex), time.perf_counter()
        pixels = self.render(ex, task, planning.band(tile, piece, pieces), resources)
        work_s = time.perf_counter() - t0 - fetched[0]
        names = [planning.band_name(task.node, k, pieces, task.generation)
                 for k in range(pieces)]
        own = imaging.dump_band(pixels)
        self.ad.blobs.put_partial(sid, eid, names[piece], own)
        try:  # the last band stored finds all of them (its own is in hand: not read)
            others = self.ad.blobs.get_partials(sid, eid, names[:piece] + names[piece + 1:])
        except errors.NotFound:
            log.info("stored band %d of %d of %s/%s/%s", piece, pieces, sid, eid, task.node)
            return False
        bands = [*others[:piece], own, *others[piece:]]
        total = imaging.load_bands(bands)
        # The task's time as this band measured it (its mean guides speculation).
        self.store(ex, task, imaging.tile_partial(tile, shape.tile, total, task.passes),
                   {"fetch_s": fetched[0], "work_s": work_s * pieces,
                    "cpu_s": (self.cpu_seconds(ex) - cpu0) * pieces}, log_lines)
        return task.status != Status.DONE

    def store(self, ex: Execution, task: Task, partial: imaging.Partial, times: dict,
              log_lines: list[str] | None = None) -> None:
        """Create the task's partial and mark the task done with its ``times`` and the
        lines logged while it was worked on; if a copy stored the partial first, only
        note that in ``task.status``."""
        sid, eid = ex.session_id, ex.id
        t_up = time.perf_counter()
        if not self.ad.blobs.put_partial(sid, eid, task.node, imaging.dump_partial(partial)):
            # Create-only: the partial exists. A copy finished first (the first result
            # wins: drop this one), or a try of this task died before marking it done
            # (then this one marks it done).
            now = self.ad.store.get_task(sid, eid, task.id)
            if now is not None and now.status == Status.DONE:
                task.status = Status.DONE
                log.info("dropped %s/%s/%s: another copy finished first", sid, eid,
                         task.node)
                return
        log.info("rendered %s/%s/%s in %.3f s (%.3f CPU s, %.3f s fetching)", sid, eid,
                 task.node, times["work_s"], times["cpu_s"], times["fetch_s"])
        self.ad.store.update_task(sid, eid, task.id, {
            "status": Status.DONE, "finished": self.ad.clock(), **times,
            "work_s": times["work_s"] + (time.perf_counter() - t_up),
            **({"log": list(log_lines)} if log_lines else {})})
