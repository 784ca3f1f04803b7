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

For a blender file that no execution of the session has measured yet, a *scout*
(``francine.producers.blender.scout``, run by a ``dry_run``: ``francine.services.quotes``)
may have measured the scene's CPU per pixel-sample; it is kept as a small JSON object
beside the session's results (``scout_name``: per .blend content and scene state,
deleted with the session or after the results' 30 days), and the planner uses it, with
the margin, in place of the estimate from the file.

A price (``expected``) wants the expected seconds, not the planner's bound: each
producer's model without its safety factor (``SAFETY``), the measured times without
the margin, or the scout's measurement as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from francine import producers
from francine.base import errors
from francine.domain import planning, pricing
from francine.domain.records import Execution, Status
from francine.ports import Adapters
from francine.producers.ao import cost as ao_cost
from francine.producers.blender import cost as blender_cost
from francine.producers.blender import scout
from francine.producers.pathtracer import cost as pathtracer_cost

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


def measured_ratio(producer, history: list[Execution], resources: list[dict],
                   cpu: bool = False) -> float | None:
    """Measured / estimated seconds over the finished executions in ``history`` (the
    session's, oldest first) of ``producer``; None when none has been measured. With
    ``cpu``, the production tasks' CPU seconds (``time.cpu`` less the reductions' share
    as ``pricing`` models it) instead of their work time: a price counts CPU, and work
    time on a busy machine is longer than the CPU it took."""
    measured, estimated = 0.0, 0.0
    # An animation's own summary is its frames', which are executions of the history.
    mine = [ex for ex in history if ex.status == Status.DONE and ex.producer == producer.name
            and not ex.frames]
    for ex in mine[-HISTORY:]:
        time = (ex.summary or {}).get("time") or {}
        seconds = production_cpu(producer, ex, time) if cpu else \
            time.get("producing") or time.get("cpu")
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


def production_cpu(producer, ex: Execution, time: dict) -> float | None:
    """The CPU seconds of ``ex``'s production tasks: its ``time.cpu`` less what its
    reductions are modelled to take (at least half of it is kept)."""
    total = time.get("cpu")
    if not (total and ex.shape and ex.scene):
        return None
    try:
        shape = planning.Shape.from_dict(ex.shape)
        reducing, _ = pricing.reduction_cpu(
            shape, producers.partial_channels(producer.name, ex.scene), producer.channels)
    except (KeyError, TypeError, ValueError):
        return total
    return max(total - reducing, total / 2)


def corrected(producer, scene: dict, resources: list[dict],
              history: list[Execution]) -> float:
    """The estimate of ``scene`` corrected by the measured times in ``history``."""
    guess = scene_seconds(producer, scene, resources)
    ratio = measured_ratio(producer, history, resources)
    return guess if ratio is None else guess * ratio * MARGIN


def finished(ad: Adapters, sid: str) -> list[Execution]:
    """The session's finished renders whose shape says what their time covers: a
    single image, an animation's frame, a wave (not an animation's nor a waved render's
    own document, whose time is its frames' or waves')."""
    return [ex for ex in ad.store.list_executions(sid) if ex.status == Status.DONE
            and not ex.animation and not ex.waved]


def pixel_seconds(ad: Adapters, sid: str, producer, scene: dict, resources: list[dict]) -> float:
    history = finished(ad, sid)
    refine = getattr(producer, "estimate_pixel_seconds", None)
    if refine is not None:
        if producer.name == "blender" and blender_cost.measured_sample_seconds(history) is None:
            found = cached_scout(ad, sid, scene, resources)
            if found is not None:
                return found.pixel_seconds(scene.get("samples", 16)) * blender_cost.MARGIN
        return refine(scene, resources, history)
    return corrected(producer, scene, resources, history)


# --- the scout's measurement of a blender scene ------------------------------------------

def blend_record(scene: dict, resources: list[dict]) -> dict | None:
    return next((r for r in resources if r["name"] == scene.get("blend")), None)


def scout_name(ad: Adapters, sid: str, scene: dict, resources: list[dict]) -> str | None:
    """Where the scout's measurement of ``scene`` (validated) is kept, None without its
    .blend: a results object of the session, named by the file's content and the scene's
    state (``scout.key``)."""
    record = blend_record(scene, resources)
    if record is None:
        return None
    return ad.blobs.result_name(sid, "scout-" + scout.key(scene, record["sha256"])[:40], "json")


def cached_scout(ad: Adapters, sid: str, scene: dict,
                 resources: list[dict]) -> scout.Measurement | None:
    name = scout_name(ad, sid, scene, resources)
    if name is None:
        return None
    try:
        data = ad.blobs.get_result(name)
    except errors.NotFound:
        return None
    try:
        return scout.Measurement.from_dict(json.loads(data))
    except (ValueError, AttributeError):
        return None


# --- what a price counts on: expected seconds ----------------------------------------------

#: Each producer's model is its bench's measurement times this (its ``cost.SAFETY``).
SAFETY = {"ao": ao_cost.SAFETY, "pathtracer": pathtracer_cost.SAFETY,
          "blender": blender_cost.SAFETY}


@dataclass(frozen=True)
class Expected:
    """The expected CPU seconds (one vCPU's) of a render's parts, and where they come
    from: ``basis`` "model" (the producer's model of the scene) or "measured" (the
    session's finished executions, or a scout)."""

    pixel_seconds: float  # one pixel of one pass
    pass_seconds: float  # one render of one tile's pass, besides its pixels
    setup_seconds: float  # once per instance that renders the scene
    basis: str
    detail: str


def expected(ad: Adapters, sid: str, producer, scene: dict, resources: list[dict],
             history: list[Execution] | None = None) -> Expected:
    """What the render of ``scene`` (validated) is expected to take, from the best
    measurement there is: a scout of this scene (blender), the session's finished
    executions, else the producer's model without its safety factor."""
    history = finished(ad, sid) if history is None else history
    if producer.name == "blender":
        return expected_blender(ad, sid, scene, resources, history)
    guess = scene_seconds(producer, scene, resources)
    ratio = measured_ratio(producer, history, resources, cpu=True)
    if ratio is not None:
        n = len([ex for ex in history if ex.producer == producer.name][-HISTORY:])
        return Expected(guess * ratio, 0.0, 0.0, "measured",
                        "the model scaled by measured/estimated CPU over the session's last "
                        f"{n} finished executions")
    safety = SAFETY.get(producer.name, 1.0)
    return Expected(guess / safety, 0.0, 0.0, "model",
                    f"the {producer.name} model of the scene, without its safety factor of "
                    f"{safety:g}")


def expected_blender(ad: Adapters, sid: str, scene: dict, resources: list[dict],
                     history: list[Execution]) -> Expected:
    samples = scene.get("samples", 16)
    # A scout of this very scene state first: it tells the samples from the set-up and
    # the passes' fixed costs, which the executions' CPU per pixel-sample mixes (and it
    # may be of another camera or frame).
    found = cached_scout(ad, sid, scene, resources)
    if found is not None:
        return Expected(found.pixel_seconds(samples), found.pass_seconds,
                        found.import_seconds + found.open_seconds, "measured",
                        f"a scout of this scene: {found.width}×{found.height} pixels at "
                        f"{', '.join(str(s) for s in found.samples)} samples")
    measured = blender_cost.measured_sample_seconds(history)
    if measured is not None:
        # Everything a task costs is in it (its share of opening the file, the passes'
        # fixed costs): no set-up or pass cost on top.
        return Expected(samples * measured, 0.0, 0.0, "measured",
                        "CPU per pixel-sample of the session's finished executions")
    record = blend_record(scene, resources) or {}
    meta = (record.get("meta") or {}).get("blend")
    return Expected(blender_cost.pixel_seconds(scene, meta) / blender_cost.SAFETY,
                    blender_cost.PASS_SECONDS, blender_cost.SETUP_SECONDS, "model",
                    "the file's polygons and objects (no scout), without the model's safety "
                    f"factor of {blender_cost.SAFETY:g}")


def work_of(planned, exp: Expected, files: int) -> pricing.Work:
    """One frame's expected CPU by part, from the planned shape (``planned``: an
    ``executions.Planned``)."""
    return shape_work(planned.shape, planned.producer, planned.scene, planned.frame_count,
                      exp, files)


def shape_work(shape: planning.Shape, producer, scene: dict, frames: int, exp: Expected,
               files: int) -> pricing.Work:
    """One frame's expected CPU by part: every pass of every tile is one render of its
    pixels plus a render's fixed cost."""
    name = producer.name
    renders = shape.tiles * shape.passes
    production = (shape.width * shape.height * shape.passes * exp.pixel_seconds
                  + renders * exp.pass_seconds)
    edge_w, edge_h = min(shape.tile, shape.width), min(shape.tile, shape.height)
    largest = shape.fold * (edge_w * edge_h * exp.pixel_seconds + exp.pass_seconds)
    total, critical = pricing.reduction_cpu(
        shape, producers.partial_channels(name, scene), producer.channels)
    if name == "blender" and scene.get("denoise"):  # the root denoises the image
        from francine.producers.blender import cost

        denoising = shape.width * shape.height * cost.DENOISE_PIXEL_SECONDS
        total, critical = total + denoising, critical + denoising
    return pricing.Work(shape=shape, production_cpu_s=production, largest_task_cpu_s=largest,
                        reduction_cpu_s=total, critical_reduction_cpu_s=critical,
                        setup_cpu_s=exp.setup_seconds, frames=frames, resources=files)


def price(ad: Adapters, sid: str, shape: planning.Shape, producer, scene: dict,
          frames: int = 1) -> tuple[float, float]:
    """(CPU-seconds, USD on a warm farm) that a render of ``shape`` is expected to
    cost, from the best measurement there is (no scout is run: a dry run does that)."""
    records = ad.store.list_resources(sid)
    exp = expected(ad, sid, producer, scene, records)
    est = pricing.estimate(shape_work(shape, producer, scene, frames, exp, len(records)),
                           pricing.Farm.of(ad.settings), pricing.Prices.of(ad.settings))
    return est.cpu_seconds, est.cost_warm["total"]


def check_cap(ad: Adapters, sid: str, shape: planning.Shape, producer, scene: dict,
              frames: int, request: dict, what: str = "this render") -> dict:
    """A 400 ``over_cap`` when the estimate of ``what`` (a render of ``shape``) alone
    exceeds the request's cap; else the execution's fields that let its waves keep to
    it (``francine.services.waves``)."""
    cpu, usd = price(ad, sid, shape, producer, scene, frames)
    cap_usd, cap_cpu = request.get("max_cost_usd"), request.get("max_cpu_seconds")
    if cap_usd is not None and usd > cap_usd:
        raise errors.BadRequest(f"max_cost_usd: {what} is estimated at ${usd:.4g}, more than "
                                f"the cap of ${cap_usd:g}", "over_cap")
    if cap_cpu is not None and cpu > cap_cpu:
        raise errors.BadRequest(f"max_cpu_seconds: {what} is estimated at {cpu:.4g} "
                                f"CPU-seconds, more than the cap of {cap_cpu:g}", "over_cap")
    return {"usd_per_cpu_second": usd / cpu if cpu > 0 else None,
            "tile_pass_cpu_s": cpu / max(1, shape.tiles * shape.passes * frames)}
