"""The planner's per-pixel time estimate for an execution.

Every producer estimates from the scene (``pixel_seconds``), and from its resources'
records where it has ``scene_pixel_seconds`` (the path tracer: triangles of the
meshes). That is a guess made before anything ran; once executions of the session
have finished, their measured times correct it: the estimate is scaled by measured /
estimated over the session's last finished executions of the same producer, with a
margin, so a scene that the model gets wrong by a constant factor is planned right
from its second execution on. The blender producer has a correction of its own
(``estimate_pixel_seconds``: measured CPU per pixel-sample), because its estimate
from the file is cruder than any scene's.

What is measured is the production tasks' work time (``time.producing``: what a task
takes, which is what must fit in Pub/Sub's deadline), falling back to ``time.cpu``.
"""

from __future__ import annotations

from francine.domain.records import Execution, Status
from francine.ports import Adapters

#: The corrected estimate is this much above what was measured: a new camera or a
#: busier machine may be costlier than what was measured.
MARGIN = 1.5
#: Finished executions taken into account (the most recent ones).
HISTORY = 8
#: A measured/estimated ratio is kept within these bounds (a broken measurement must
#: not make the planner cut tasks a hundred times too large).
RATIO_BOUNDS = (1 / 50, 50.0)


def scene_seconds(producer, scene: dict, resources: list[dict]) -> float:
    """The producer's estimate before anything ran."""
    from_records = getattr(producer, "scene_pixel_seconds", None)
    if from_records is not None:
        return from_records(scene, resources)
    return producer.pixel_seconds(scene)


def measured_ratio(producer, history: list[Execution], resources: list[dict]) -> float | None:
    """Measured / estimated seconds over the finished executions in ``history`` (the
    session's, oldest first) of ``producer``; None when none has been measured."""
    measured, estimated = 0.0, 0.0
    mine = [ex for ex in history if ex.status == Status.DONE and ex.producer == producer.name]
    for ex in mine[-HISTORY:]:
        time = (ex.summary or {}).get("time") or {}
        seconds = time.get("producing") or time.get("cpu")
        if not (seconds and ex.shape and ex.scene):
            continue
        try:
            per_pixel = scene_seconds(producer, ex.scene, resources)
        except (KeyError, TypeError, ValueError):
            continue  # a scene of an older form
        measured += seconds
        estimated += ex.shape["width"] * ex.shape["height"] * ex.shape["passes"] * per_pixel
    if not estimated:
        return None
    low, high = RATIO_BOUNDS
    return min(high, max(low, measured / estimated))


def corrected(producer, scene: dict, resources: list[dict],
              history: list[Execution]) -> float:
    """The estimate of ``scene`` corrected by the measured times in ``history``."""
    guess = scene_seconds(producer, scene, resources)
    ratio = measured_ratio(producer, history, resources)
    return guess if ratio is None else guess * ratio * MARGIN


def pixel_seconds(ad: Adapters, sid: str, producer, scene: dict, resources: list[dict]) -> float:
    history = [ex for ex in ad.store.list_executions(sid) if ex.status == Status.DONE]
    refine = getattr(producer, "estimate_pixel_seconds", None)
    if refine is not None:
        return refine(scene, resources, history)
    return corrected(producer, scene, resources, history)


def quote(ad: Adapters, user: str, sid: str, body: dict) -> dict:
    """The estimate of the execution that ``body`` asks for, starting nothing (a
    ``dry_run``)."""
    from francine.base import errors

    raise errors.BadRequest("dry_run: estimates are not available yet", "not_implemented")
