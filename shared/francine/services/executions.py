"""Executions: starting one (plan, record, publish), waiting for it, ending it.

Used by the api (start, wait, resume, cancel). The order of
writes makes every step safe to repeat: the execution document is created first
(transactionally with the session's scene update), then the task documents
(``planned``), then the messages (``published``). A retried request with the same
idempotency key resumes wherever the first one stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from dataclasses import dataclass

from francine import producers
from francine.base import errors
from francine.domain import planning, reduction, scheduler
from francine.domain.mergepatch import merge_patch
from francine.domain.producer import Producer, ResourceInfo, SceneError, resource_infos
from francine.domain.records import Execution, Session, Status
from francine.ports import Adapters
from francine.services import animation, estimates, farm, recovery, scheduling, waves


def scene_error(e: SceneError) -> errors.BadRequest:
    field = f"scene.{e.field}" if e.field and e.field != "producer" else e.field
    return errors.BadRequest(f"{field}: {e.message}" if field else e.message, "invalid_scene")


def parse_request(body: dict) -> dict:
    """The request body validated, with its defaults (``schemas.ExecutionRequest``)."""
    from francine.services.schemas import parse  # the one definition of the request body

    return parse("execution", body)


def first_wave(request: dict, body: dict) -> dict:
    """A noise target plans its first wave: ``parallel`` passes if the body gave more
    than one (one pass has no variance to measure), else ``waves.FIRST_WAVE``; never
    more than ``max_passes``."""
    until = request.get("until")
    if until is None:
        return request
    first = request["parallel"] if body.get("parallel", 1) > 1 else waves.FIRST_WAVE
    return {**request, "parallel": min(first, until["max_passes"])}


def waves_requested(ad: Adapters, sid: str, p: Planned, request: dict) -> dict:
    """The fields of a render with a seed, a noise target or a spending cap: its passes
    come in waves (``francine.services.waves``; an animation's frames do)."""
    until = request["until"]
    fields: dict = {"seed": request["seed"], "until": until,
                    "max_cost_usd": request["max_cost_usd"],
                    "max_cpu_seconds": request["max_cpu_seconds"]}
    capped = request["max_cost_usd"] is not None or request["max_cpu_seconds"] is not None
    if capped:
        fields.update(estimates.check_cap(
            ad, sid, p.shape, p.producer, p.scene, p.frame_count, request,
            "the first wave" if until else "this render"))
    if until is not None or capped:
        fields["target_passes"] = until["max_passes"] if until else request["parallel"]
        if not p.frames:
            fields["waves"] = 0
    return fields


def execution_id(user: str, sid: str, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return uuid.uuid4().hex[:20]
    return hashlib.sha256(f"{user}\0{sid}\0{idempotency_key}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Planned:
    """What an execution request comes to before anything is recorded: its scene, its
    tasks' shape and the estimates the planner made (for one frame of an animation)."""

    producer: Producer
    scene: dict
    update: dict | None
    resources: dict[str, ResourceInfo]
    shape: planning.Shape
    pixel_seconds: float
    task_seconds: float  # one production task
    frames: list[int] | None

    @property
    def frame_count(self) -> int:
        return len(self.frames) if self.frames else 1


def plan(ad: Adapters, session: Session, request: dict) -> Planned:
    """Validate the request against the session's scene and plan its tasks: the tile,
    the passes folded into one task, the limits. Reads the store, writes nothing."""
    sid = session.id
    update, tile, parallel = request["update"], request["tile"], request["parallel"]
    records = ad.store.list_resources(sid)
    resources = resource_infos(records)
    producer = producers.get(session.producer)
    scene = merge_patch(session.scene, update) if update else session.scene
    frames = animation.requested_frames(request, producer.name)
    try:
        scene = producer.validate(scene, resources)
        if frames:
            # Every frame is the scene at that frame: the first and the last must be valid.
            for frame in (frames[-1], frames[0]):
                producer.validate({**scene, "frame": frame}, resources)
        width, height = producer.image_size(scene)
    except SceneError as e:
        if frames and e.field == "frame":
            raise errors.BadRequest(f"frames: {e.message}", "invalid_scene") from e
        raise scene_error(e) from e
    pixel_seconds = estimates.pixel_seconds(ad, sid, producer, scene, records)
    bound = ad.settings.max_task_s
    budget = bound / 4
    if frames:  # an animation spreads each frame over the farm (animation.tile_budget)
        budget = animation.tile_budget(ad, width * height * parallel * pixel_seconds, budget)
    edge = tile or planning.largest_tile(width, height, pixel_seconds, budget)
    # Tiny passes are folded: several passes of a tile per task, up to the minimum
    # task time and so that the producer's fixed cost per task is worth paying,
    # never past a quarter of the bound, never leaving instances idle.
    single = planning.make_shape(width, height, 1, edge)
    fold = planning.passes_per_task(
        planning.task_seconds(single, pixel_seconds), parallel,
        ad.settings.min_task_s, bound / 4,
        overhead_s=getattr(producer, "task_overhead_s", 0.0), tiles=single.tiles,
        instances=ad.settings.max_render_instances)
    shape = planning.make_shape(width, height, parallel, edge, fold)
    estimate = planning.task_seconds(shape, pixel_seconds)
    if estimate > bound:
        raise errors.BadRequest(
            f"tile: one task of {edge}×{edge} pixels would take about {estimate:.0f} s, "
            f"more than the limit of {bound:.0f} s: use tile ≤ "
            f"{planning.largest_tile(width, height, pixel_seconds, bound)}", "tile_too_large")
    if shape.total_tasks > ad.settings.max_tasks:
        raise errors.BadRequest(
            f"this render would need {shape.total_tasks} tasks, more than the limit of "
            f"{ad.settings.max_tasks}: use fewer passes or larger tiles", "too_many_tasks")
    reduction.check_fits(shape, producers.partial_channels(producer.name, scene),
                         ad.settings.reducer_memory_bytes)
    return Planned(producer, scene, update, resources, shape, pixel_seconds, estimate, frames)


def start(ad: Adapters, user: str, sid: str, body: dict,
          idempotency_key: str | None = None, admit=None) -> tuple[Execution, bool]:
    """Create (or, for a repeated idempotency key, find) an execution and publish it.
    Returns (execution, created). ``admit(shape, pixel_seconds, frames, window)``, run
    only for a new execution (quotas.admission), raises to refuse it or returns extra
    fields."""
    from francine.services import events  # events reads statuses from here

    request = first_wave(parse_request(body), body)
    notify_url = events.check_notify_url(request["notify_url"], ad)
    eid = execution_id(user, sid, idempotency_key)

    def build(session: Session) -> tuple[dict, Execution]:
        # Only for a new execution (a repeated key finds the first one before this).
        p = plan(ad, session, request)
        window = animation.window(ad, p) if p.frames else None
        waved = waves_requested(ad, sid, p, request)
        extra = admit(p.shape, p.pixel_seconds, p.frame_count, window or 1) if admit else {}
        created = ad.clock()
        ex = Execution(
            id=eid, session_id=sid, user=user, created=created, producer=p.producer.name,
            format=session.format, display=p.producer.display,
            channels=p.producer.channels, scene=p.scene, update=p.update,
            parallel=request["parallel"], tile=request["tile"],
            resources={n: {"sha256": r.sha256, "size": r.size}
                       for n, r in p.resources.items()},
            shape=p.shape.to_dict(),
            # Farm-wide admission (francine.services.farm) replaces the per-execution limit.
            admission_limit=0 if farm.enabled(ad.settings) else ad.settings.admission_limit,
            notify_url=notify_url, task_seconds=p.task_seconds, **waved, **extra)
        if p.frames:
            ex.frames, ex.frame_window = p.frames, window
            ex.on_frame_failure = request["on_frame_failure"]
            ex.notify_frames = request["notify_frames"] or None
        return ({"scene": p.scene, "updated": created} if p.update else {}), ex

    ex, created = ad.store.create_execution(sid, eid, build)
    if not ex.final:
        try:
            publish(ad, ex)
        except Exception:
            if idempotency_key is None:
                # Nobody can resume this execution (a retry gets a new id): end it
                # rather than leave it queued forever. With a key, a retry resumes it.
                with contextlib.suppress(Exception):
                    fail(ad, sid, eid, "publish_failed", "the tasks could not be queued")
            raise
    if created:  # after the tasks: announcing it must not delay the render
        events.publish_status(ad, ex, created=True)
    return ex, created


def publish(ad: Adapters, ex: Execution) -> None:
    """Write the task documents and publish the first production tasks (or queue them
    in the farm); idempotent. ``ex`` is updated as the store is. An animation starts
    its first frames instead."""
    if ex.animation:
        animation.advance(ad, ex)
        return
    if ex.waved:
        waves.advance(ad, ex)
        return
    scheduling.drive(scheduling.Run(ad, ex, recovery.scheduler_plan(ad, ex)),
                     [scheduler.ExecutionCreated()])


#: Kept for callers of the earlier name.
STALLED_S = scheduler.STALLED_S


def resume_if_stalled(ad: Adapters, ex: Execution) -> bool:
    """Finish publishing an execution whose creating request died; idempotent, so the
    status read that notices it can do it. True if it resumed."""
    if ex.published:
        return False
    if ex.animation:
        return animation.advance(ad, ex)
    if ex.waved:
        return waves.advance(ad, ex)
    run = scheduling.Run(ad, ex, recovery.scheduler_plan(ad, ex))
    return bool(scheduling.drive(run, [scheduler.Tick()]).actions)


#: Ending an execution is the scheduler's ``End``, carried out for the api too (a cancel).
end = scheduling.end


def fail(ad: Adapters, sid: str, eid: str, code: str, message: str) -> bool:
    ex = ad.store.execution(sid, eid)
    if ex is None or ex.final:
        return False
    return end(ad, ex, Status.FAILED, {"code": code, "message": message})


def wait(ad: Adapters, sid: str, eid: str, timeout_s: float) -> Execution:
    """Poll the execution document until it is final or the timeout passes: every 0.1 s
    at first (small renders answer fast), backing off to every second."""
    deadline = time.monotonic() + timeout_s
    poll_s = 0.1
    while True:
        ex = ad.store.execution(sid, eid)
        if ex is None:
            raise errors.NotFound("execution not found")
        if ex.final or time.monotonic() >= deadline:
            return ex
        time.sleep(poll_s)
        poll_s = min(1.0, poll_s * 1.25)
