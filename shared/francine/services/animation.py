"""Animations: one execution renders a frame range.

An animation's execution is planned once, for one frame (the frames of a shot cost about
the same), and counted once: in the quotas (its CPU estimate is every frame's), in fair
share (its frames draw on its user's account one after another, so it weighs its work
and no more) and in the estimates. It has no tasks of its own. Each frame renders as an
execution of its own, whose document names the animation (``parent``) and the frame:
its own tasks, reduction tree, final image, task folding, failure budget, speculative
copies, watchdog and recovery, all of them the single image's, unchanged.

*Order and overlap.* The frames start in ascending order, ``frame_window`` of them
unfinished at a time: enough that their tasks fill the farm's slots twice over, so the
last passes of frame N run beside the first passes of frames N+1, N+2 ... and the farm
never drains between frames, while the farm's queue (fair-share tags, given as each
frame is planned) serves the earlier frame first. A frame that ends starts the next
(``frame_ended``, from the frame's final status on the status topic); the watchdog's
tick (``advance``) starts any that a lost message left unstarted and ends the
animation once every frame has ended.

*Writes.* A frame's start writes its own documents; the animation's document is written
twice (published, ended), never per frame: its progress is read from its frames.

*A failed frame* (its tasks failed beyond the budget) is reported and the others go on
(``on_frame_failure: "continue"``, the default: what an artist expects of a farm); the
animation ends ``done`` with the failed frames listed, or ``failed`` if no frame rendered.
With ``"stop"``, the first failed frame cancels the rest and fails the animation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math

from francine.base import errors
from francine.domain import frames as frame_ranges
from francine.domain import planning, scheduler
from francine.domain.records import Execution, Status
from francine.ports import Adapters
from francine.services import events, farm, recovery, scheduling, views, waves

log = logging.getLogger("francine.animation")

#: The frames in flight hold at least this many times the farm's slots in tasks.
FILL = 2
#: Never more frames in flight than this (each is a few documents and a reduction tree).
MAX_WINDOW = 512
#: The least seconds a pass of a tile takes in an animation's plan (``tile_budget``).
TASK_S = 8.0
CONTINUE, STOP = "continue", "stop"


def requested_frames(request: dict, producer: str) -> list[int] | None:
    """The frames an execution request names (ascending), or None for a single image."""
    if request.get("frames") is None:
        if request.get("step") is not None:
            raise errors.BadRequest("step: applies to frames, which this request has not",
                                    "invalid_field")
        return None
    from francine import producers

    if not getattr(producers.get(producer), "animates", False):
        raise errors.BadRequest(f"frames: the {producer} producer renders still images: "
                                "only blender scenes have frames", "invalid_field")
    return frame_ranges.parse(request["frames"], request.get("step"))


def window(ad: Adapters, planned) -> int:
    """How many frames of ``planned`` render at once: enough that their production
    tasks fill the farm's slots ``FILL`` times over, within the user's tasks in flight."""
    per_frame = max(1, planned.shape.productions)
    wanted = max(2, math.ceil(FILL * slots(ad) / per_frame))
    room = max(1, ad.settings.quota_tasks_in_flight // max(1, planned.shape.total_tasks))
    return max(1, min(wanted, room, MAX_WINDOW, len(planned.frames)))


def slots(ad: Adapters) -> int:
    """The farm's size: its slots with farm admission, else the render instances."""
    return ad.settings.farm_slots if farm.enabled(ad.settings) \
        else ad.settings.max_render_instances


def tile_budget(ad: Adapters, frame_seconds: float, bound_s: float) -> float:
    """The seconds one pass of a tile may take in an animation: a frame's work spread
    over the farm (so that the first frame, served first, is done early and the last
    ones leave no long tail), but no less than ``TASK_S`` (each task pays the
    producer's fixed cost) and no more than a single image's budget."""
    return min(bound_s, max(TASK_S, frame_seconds / max(1, slots(ad))))


def frame_id(eid: str, frame: int) -> str:
    """The id of frame ``frame``'s execution (hex, like every execution id)."""
    return hashlib.sha256(f"{eid}\0frame\0{frame}".encode()).hexdigest()[:20]


def of_frame(parent: Execution, frame: int, created, step: float) -> Execution:
    """The execution of one frame: the animation's scene at that frame; its place in
    its user's fair share follows the frames before it (``step``: one task's cost in
    virtual time); end-game copies only in the first window (the first frames are the
    ones an artist waits for) and the last (the shot's tail)."""
    frames = parent.frames or [frame]
    index = frames.index(frame)
    before = index * planning.Shape.from_dict(parent.shape).productions * step
    share = {"share_start": None, "share_credit": None} if parent.share_start is None else {
        "share_start": parent.share_start + before,
        "share_credit": max(0.0, (parent.share_credit or 0.0) - before)}
    n = len(frames)
    waved = {} if parent.target_passes is None else {
        # A noise target or a cap: the frame renders in waves; a cap is the animation's,
        # shared evenly by its frames.
        "waves": 0,
        "max_cost_usd": None if parent.max_cost_usd is None else parent.max_cost_usd / n,
        "max_cpu_seconds": (None if parent.max_cpu_seconds is None
                            else parent.max_cpu_seconds / n)}
    return dataclasses.replace(
        parent, **waved, id=frame_id(parent.id, frame), created=created,
        scene={**parent.scene, "frame": frame}, update=None, status=Status.QUEUED,
        planned=False, published=False, finished=None, error=None, summary=None,
        result=None, notify_url=parent.notify_url if parent.notify_frames else None,
        cpu_estimate=None, frames=None, frame_window=None, on_frame_failure=None,
        notify_frames=None, parent=parent.id, frame=frame,
        endgame=not (parent.frame_window or 1) <= index < len(frames) - (parent.frame_window
                                                                        or 1), **share)


def frame_execution(ad: Adapters, parent: Execution, frame: int) -> Execution | None:
    """The execution of one of the animation's frames, if it has started."""
    if frame not in (parent.frames or ()):
        raise errors.NotFound(f"frame {frame} is not one of execution {parent.id}'s frames")
    return ad.store.execution(parent.session_id, frame_id(parent.id, frame))


def start_frame(ad: Adapters, parent: Execution, frame: int) -> bool:
    """Create frame ``frame``'s execution and publish its tasks. Only the call that
    created it publishes: others racing it do nothing, and a creator that died before
    publishing leaves it to the watchdog, which resumes an unpublished execution as it
    does any. True if this call started it."""
    ex, created = ad.store.add_frame(parent.session_id, of_frame(
        parent, frame, ad.clock(), farm.task_cost(ad, parent)))
    if created:
        publish_frame(ad, ex)
    return created


def begin(ad: Adapters, parent: Execution) -> None:
    """Before the first frames start: the animation's share of its user's fair share
    is reserved, once, for every frame (its frames take their places in it without a
    transaction each), and it is marked published."""
    fields: dict = {"planned": True, "published": True}
    if farm.enabled(ad.settings) and parent.share_start is None:
        per_frame = planning.Shape.from_dict(parent.shape).productions
        step = farm.task_cost(ad, parent)
        account = farm.reserve(ad, parent.user, parent.id,
                               step * per_frame * len(parent.frames or ()),
                               ad.settings.fair_credit_s)
        fields.update(share_start=account.start, share_credit=account.credit)
    ad.store.update_execution(parent.session_id, parent.id, fields)
    for key, value in fields.items():
        setattr(parent, key, value)


def advance(ad: Adapters, parent: Execution) -> bool:
    """Start frames up to the window, in order; end the animation once every frame has
    ended (or, with ``on_frame_failure: "stop"``, at the first failed frame). Run when
    the animation is created and by the watchdog (which so makes up for a lost message);
    idempotent. True if it did something."""
    if parent.final:
        return False
    sid = parent.session_id
    if not parent.published:
        begin(ad, parent)
    started = {ex.frame: ex for ex in ad.store.frames_of(sid, parent.id)}
    ended = [ex for ex in started.values() if ex.final]
    failed = [ex for ex in ended if ex.status == Status.FAILED]
    if parent.on_frame_failure == STOP and failed:
        cancel_frames(ad, started.values())
        return end(ad, parent, Status.FAILED,
                   {"code": "frame_failed", "message": why(failed[0])})
    if len(ended) == len(parent.frames or ()):
        return finish(ad, parent, started.values())
    acted = False
    room = (parent.frame_window or 1) - (len(started) - len(ended))
    for frame in parent.frames or ():
        if room <= 0:
            break
        if frame not in started:
            acted |= start_frame(ad, parent, frame)
            room -= 1
    if acted:
        cancel_if_ended(ad, parent)
    return acted


def cancel_if_ended(ad: Adapters, parent: Execution) -> None:
    """A cancel that raced the start of frames: they are cancelled too."""
    current = ad.store.execution(parent.session_id, parent.id)
    if current is None or current.final:
        cancel_frames(ad, ad.store.frames_of(parent.session_id, parent.id))


def publish_frame(ad: Adapters, ex: Execution) -> bool:
    """Write a frame's tasks and publish them (or queue them in the farm), or start its
    first wave; idempotent."""
    if ex.waved:
        return waves.advance(ad, ex)
    run = scheduling.Run(ad, ex, recovery.scheduler_plan(ad, ex))
    return bool(scheduling.drive(run, [scheduler.ExecutionCreated()]).actions)


def frame_ended(ad: Adapters, ex: Execution) -> str:
    """A frame's execution ended (its final status came in): it starts its own
    successor, the frame one window after it, so that frames ending at once start
    distinct frames and the window stays full; a frame of the last window, or a failed
    one, advances the animation (which ends it once every frame has ended). Returns
    what happened (for the log)."""
    if ex.parent is None or ex.frame is None:
        return ""
    parent = ad.store.execution(ex.session_id, ex.parent)
    if parent is None or parent.final or ex.frame not in (parent.frames or ()):
        return "animation gone or ended"
    frames, window_ = parent.frames or [], parent.frame_window or 1
    index = frames.index(ex.frame)
    if index + window_ < len(frames) and start_frame(ad, parent, frames[index + window_]):
        cancel_if_ended(ad, parent)
    if index >= len(frames) - window_ or ex.status == Status.FAILED:
        advance(ad, parent)
    return f"frame {ex.frame} {ex.status}"


def cancel_frames(ad: Adapters, frames) -> None:
    for ex in frames:
        if ex.waved and not ex.final:
            waves.cancel(ad, ex)  # and its wave
        elif not ex.final:
            scheduling.end(ad, ex, Status.CANCELLED)


def cancel(ad: Adapters, parent: Execution) -> bool:
    """Cancel the animation and its unfinished frames; the finished frames stay."""
    won = end(ad, parent, Status.CANCELLED)
    cancel_frames(ad, ad.store.frames_of(parent.session_id, parent.id))
    return won


def why(ex: Execution) -> str:
    """Why a frame has no image, in words."""
    return f"frame {ex.frame} {ex.status}: {(ex.error or {}).get('message', 'no image')}"


def finish(ad: Adapters, parent: Execution, frames) -> bool:
    """Every frame has ended (there is at least one): the animation is done if any
    frame rendered."""
    frames = list(frames)
    if any(ex.status == Status.DONE for ex in frames):
        return end(ad, parent, Status.DONE, frames=frames)
    return end(ad, parent, Status.FAILED, {
        "code": "frames_failed", "message": f"no frame rendered: {why(frames[0])}"},
        frames=frames)


def end(ad: Adapters, parent: Execution, status: Status, error: dict | None = None,
        frames: list[Execution] | None = None) -> bool:
    """Move the animation to a final status (first caller wins), its summary summed
    over its ``frames`` (read here unless given); the winner announces it (one
    webhook, at the end)."""
    finished = ad.clock()
    if frames is None:
        frames = ad.store.frames_of(parent.session_id, parent.id)
    summary = views.summarize_animation(ad, parent, frames, finished)
    won = ad.store.finish_execution(parent.session_id, parent.id, {
        "status": status, "finished": finished, "error": error, "summary": summary})
    if won:
        current = ad.store.execution(parent.session_id, parent.id)
        if current is not None:
            events.publish_status(ad, current)
    return won


def done_frames(ad: Adapters, parent: Execution) -> list[Execution]:
    """The frames whose image exists, in frame order."""
    return [ex for ex in ad.store.frames_of(parent.session_id, parent.id)
            if ex.status == Status.DONE and ex.result]


def tick(ad: Adapters, ex: Execution) -> str | None:
    """The watchdog's part: an animation is advanced; a frame whose animation ended (a
    cancel that raced the frame's start) is cancelled; a waved render (a frame may be
    one) or a wave, ``waves.tick``. None for other executions."""
    waved = waves.tick(ad, ex)
    if waved is not None:
        return waved
    if ex.animation:
        return "advanced" if advance(ad, ex) else "animation idle"
    if ex.parent is not None:
        parent = ad.store.execution(ex.session_id, ex.parent)
        if parent is None or parent.final:
            scheduling.end(ad, ex, Status.CANCELLED)
            return "frame of an ended animation cancelled"
    return None
