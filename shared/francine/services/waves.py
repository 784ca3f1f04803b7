"""Waves: a render whose passes are not all planned at once.

Three requests render their passes in waves, each wave an execution of its own (with
``parent``: the render's id, ``wave``: its number from 1, ``first_pass``: its passes
follow those of the waves before it, and the render's seeds), so that the scheduler's
state machine, recovery and fair share are the single image's, unchanged:

- a **noise target** (``until: {noise, max_passes}``): after each wave the render
  estimates, tile by tile, the relative standard error of the mean from the variance
  across passes (``imaging.relative_error``); a tile whose error is at or below the
  target over 99% of its pixels (near-black pixels aside) stops, the others get the
  next wave, sized from how far they are (the error falls as 1/√passes);
- a **spending cap** (``max_cost_usd``, ``max_cpu_seconds``): each wave is sized to
  fit in what is left of the cap at the CPU-seconds per tile-pass measured so far, so
  the render stops with the passes it finished (``stopped: "budget"``) rather than
  overspend;
- an **extension** (``:extend``) of a finished render: more passes after its last one.

*The image.* Every render's root stores the sum of its passes (fixed point:
``francine.domain.imaging``) beside its result; after wave k the render's sum is its
sum before plus the wave's (``sum_name(render, k)``), and its image is encoded from it.
Fixed-point sums are exact, so the image of a render extended from 8 to 16 passes is
the bytes of one render of 16 passes with the same seeds, and a tile that stopped early
is weighted by its own count of passes. Each step is idempotent (sums are written under
names of their own and recomputed the same; a wave's execution is created once, first
wins), so the wave's end (its final status, pushed to the reducer: ``wave_ended``) and
the watchdog (``tick``) may both advance the render.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math

import numpy as np

from francine import producers
from francine.base import errors
from francine.domain import imaging, planning, scheduler
from francine.domain.records import Execution, Status
from francine.ports import Adapters
from francine.services import estimates, events, recovery, scheduling, schemas, views

log = logging.getLogger("francine.waves")

#: The first wave of a noise target, unless the request's ``parallel`` says otherwise.
FIRST_WAVE = 8
#: A wave asks for this much more than the passes the noise predicts are missing.
MARGIN = 1.1
#: A wave renders at most this many times the passes each tile holds already (the
#: prediction from few passes is rough).
GROWTH = 3
#: Pixels darker than this share of the image's mean luminance are not held to the
#: noise target (their relative error is large and invisible).
NEAR_BLACK = 0.02
#: The share of a tile's pixels that must meet the target.
SHARE = 0.99
#: With a cap, a wave spends at most this share of what is left (estimates err), and
#: the first renders this share of the passes (the rest are sized from its measure).
CAP_SHARE = 0.8
FIRST_SHARE = 0.25
#: A wave's production tasks stay under this share of the planner's limit of tasks
#: (the reductions take the rest).
TASK_SHARE = 0.9
NOISE, MAX_PASSES, BUDGET = "noise", "max_passes", "budget"


# --- names ------------------------------------------------------------------------------

def wave_id(eid: str, wave: int) -> str:
    return hashlib.sha256(f"{eid}\0wave\0{wave}".encode()).hexdigest()[:20]


def sum_name(ad: Adapters, ex: Execution, wave: int = 0) -> str:
    """Where the sum of ``ex``'s passes is kept, beside its result (as long as it):
    its own root's (``wave`` 0), or a waved render's after ``wave`` waves."""
    return ad.blobs.result_name(ex.session_id, ex.id, "sum.npz" if wave == 0
                                else f"sum{wave}.npz")


def store_sum(ad: Adapters, ex: Execution, total: imaging.Partial, wave: int = 0) -> None:
    ad.blobs.put_result(sum_name(ad, ex, wave), imaging.dump_partial(total),
                        "application/octet-stream")


def load_sum(ad: Adapters, ex: Execution, wave: int = 0) -> imaging.Partial | None:
    try:
        return imaging.load_partial(ad.blobs.get_result(sum_name(ad, ex, wave)))
    except errors.NotFound:
        return None


# --- what a sum says ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Assessment:
    passes: np.ndarray  # per tile of the grid (row-major): passes its pixels hold
    noise: np.ndarray  # per tile: the error SHARE of its pixels are at or below
    image_noise: float


def assess(shape: planning.Shape, total: imaging.Partial) -> Assessment:
    """The passes and noise of every tile of the render's sum, and the image's; a row
    of tiles at a time (the root's memory stays its sum's, whatever the image)."""
    rows = [band_of(total, y, shape.tile) for y in range(0, total.height, shape.tile)]
    lit = [imaging.luminance(band.mean(uncovered=0.0))[:, :, 0][band.pixel_counts()[:, :, 0]
                                                                 > 0] for band in rows]
    covered = sum(v.size for v in lit)
    level = float(sum(v.sum() for v in lit) / covered) if covered else 0.0
    near_black = max(1e-6, NEAR_BLACK * level)
    noise = np.zeros(shape.tiles_x * shape.tiles_y)
    errors = []
    for ty, band in enumerate(rows):
        error = imaging.relative_error(band, near_black)
        for tx in range(shape.tiles_x):
            noise[ty * shape.tiles_x + tx] = imaging.noise_of(
                error[:, tx * shape.tile: (tx + 1) * shape.tile], SHARE)
        errors.append(error[~np.isnan(error)].astype(np.float32))
    passes = total.count.reshape(-1).astype(np.int64)
    return Assessment(passes, noise, imaging.noise_of(np.concatenate(errors), SHARE))


def band_of(p: imaging.Partial, y: int, rows: int) -> imaging.Partial:
    """Rows ``y`` to ``y + rows`` of a partial (``y`` on its tile grid), as one."""
    cell = y // p.tile
    return imaging.Partial(p.x0, p.y0 + y, p.tile, p.sum[y: y + rows],
                           p.count[cell: cell + -(-rows // p.tile)], p.sq[y: y + rows])


@dataclasses.dataclass(frozen=True)
class Next:
    """The next wave (its passes, its tiles: empty for all), or why the render stops."""

    passes: int = 0
    tiles: tuple[int, ...] = ()
    stopped: str | None = None
    first_pass: int = 0


def capped(ex: Execution) -> bool:
    return ex.max_cpu_seconds is not None or ex.max_cost_usd is not None


def affordable(ex: Execution, spent_s: float, tile_passes: int, tiles: int) -> int | None:
    """Passes of ``tiles`` tiles that fit in what is left of the cap (None: no cap), at
    the CPU-seconds per tile-pass measured (or, before any, estimated)."""
    caps = []
    if ex.max_cpu_seconds is not None:
        caps.append(ex.max_cpu_seconds)
    if ex.max_cost_usd is not None and ex.usd_per_cpu_second:
        caps.append(ex.max_cost_usd / ex.usd_per_cpu_second)
    if not caps:
        return None
    per = spent_s / tile_passes if tile_passes and spent_s > 0 else (ex.tile_pass_cpu_s or 0)
    left = min(caps) - spent_s
    if per <= 0:
        return planning.MAX_PARALLEL
    return max(0, math.floor(CAP_SHARE * left / (per * tiles)))


def decide(ex: Execution, shape: planning.Shape, state: Assessment | None,
           spent_s: float, max_tasks: int = 0) -> Next:
    """What comes after the waves so far (``state``: None before the first): the tiles
    with the fewest passes of those still to render (all of them at first), and as
    many passes as the noise target predicts (or, for a fixed count, as reach the next
    tile's count or the target), within the cap."""
    target = ex.target_passes or shape.passes
    grid = shape.tiles_x * shape.tiles_y
    if state is None:
        low, tiles = 0, tuple(range(grid))
        want = min(target, ex.parallel) if ex.until else target
        if capped(ex):  # measure a first share before committing the rest
            want = min(want, math.ceil(target * FIRST_SHARE))
    elif ex.until:
        goal = float(ex.until["noise"])
        noisy = [t for t in range(grid) if state.noise[t] > goal]
        behind = [t for t in noisy if state.passes[t] < target]
        if not behind:
            return Next(stopped=MAX_PASSES if noisy else NOISE)
        low = min(int(state.passes[t]) for t in behind)
        tiles = tuple(t for t in behind if state.passes[t] == low)
        worst = max(float(state.noise[t]) for t in tiles)
        needed = (math.ceil(low * (worst / goal) ** 2 * MARGIN) - low
                  if math.isfinite(worst) else GROWTH * low)  # one pass: no variance yet
        want = max(1, min(needed, GROWTH * low, target - low))
    else:
        low = int(state.passes.min())
        if low >= target:
            return Next()
        tiles = tuple(int(t) for t in np.flatnonzero(state.passes == low))
        want = min([int(p) for p in state.passes if p > low] + [target]) - low
    if max_tasks:  # a wave is an execution: within the planner's limit of tasks
        want = max(1, min(want, int(TASK_SHARE * max_tasks / len(tiles)) * shape.fold))
    tile_passes = 0 if state is None else int(state.passes.sum())
    room = affordable(ex, spent_s, tile_passes, len(tiles))
    if room is not None and room < want:
        if room < 1:
            return Next(stopped=BUDGET)
        want = room
    return Next(want, () if len(tiles) == grid else tiles, first_pass=low)


# --- the waves --------------------------------------------------------------------------

def of_wave(ex: Execution, wave: int, nxt: Next, created) -> Execution:
    shape = planning.Shape.from_dict(ex.shape)
    wave_shape = planning.make_shape(shape.width, shape.height, nxt.passes, shape.tile,
                                     min(shape.fold, nxt.passes), nxt.tiles)
    cleared = {f.name: None for f in dataclasses.fields(Execution) if f.name in (
        "finished", "error", "summary", "result", "notify_url", "cpu_estimate", "frames",
        "frame_window", "on_frame_failure", "notify_frames", "share_start", "share_credit",
        "until", "max_cost_usd", "max_cpu_seconds", "target_passes", "waves",
        "passes_done", "noise", "stopped", "spent_cpu_s", "frame")}
    return dataclasses.replace(
        ex, **cleared, id=wave_id(ex.id, wave), created=created, status=Status.QUEUED,
        planned=False, published=False, parent=ex.id, wave=wave, first_pass=nxt.first_pass,
        seeds=ex.seed_basis, shape=wave_shape.to_dict(), parallel=nxt.passes, update=None,
        endgame=True if ex.endgame is None else ex.endgame)


waves_of = views.waves_of


def start_wave(ad: Adapters, ex: Execution, wave: int, nxt: Next) -> bool:
    """Create the wave's execution and publish its tasks; only its creator publishes
    (the watchdog resumes a creator that died, as for any execution)."""
    child, created = ad.store.add_frame(ex.session_id, of_wave(ex, wave, nxt, ad.clock()))
    if created:
        run = scheduling.Run(ad, child, recovery.scheduler_plan(ad, child))
        scheduling.drive(run, [scheduler.ExecutionCreated()])
        ad.store.update_execution(ex.session_id, ex.id, {"waves": wave})
        log.info("render %s/%s: wave %d, %d passes from pass %d on %s tiles", ex.session_id,
                 ex.id, wave, nxt.passes, nxt.first_pass, len(nxt.tiles) or "all")
        current = ad.store.execution(ex.session_id, ex.id)
        if current is None or current.final:  # a cancel raced the wave's start
            scheduling.end(ad, child, Status.CANCELLED)
    return created


def spent(ex: Execution, waves: list[Execution]) -> float:
    """CPU-seconds of the render so far: its own tasks' (an extended render's first
    passes) and every ended wave's."""
    return (ex.own_cpu_s or 0.0) + sum((w.summary or {}).get("time", {}).get("cpu", 0.0)
                                       for w in waves if w.final)


def advance(ad: Adapters, ex: Execution) -> bool:
    """Start the next wave, or end the render; run when it is created, when a wave ends
    or it is extended (the reducer, on the status topic) and by the watchdog.
    Idempotent: it reads the render afresh. True if it did something."""
    ex = ad.store.execution(ex.session_id, ex.id) or ex
    if ex.final:
        return False
    sid = ex.session_id
    if not ex.published:
        ad.store.update_execution(sid, ex.id, {"planned": True, "published": True})
        ex.planned = ex.published = True
    waves = waves_of(ad, ex)
    # The waves since the render was last started (or extended) decide; those before
    # ended with it (a failed one among them adds nothing).
    fresh = [w for w in waves if (w.wave or 0) > (ex.waves_before or 0)]
    if fresh and not fresh[-1].final:
        return False
    if fresh and fresh[-1].status != Status.DONE:
        return give_up(ad, ex, fresh[-1], waves)
    done = [w for w in waves if w.status == Status.DONE]
    shape = planning.Shape.from_dict(ex.shape)
    total = accumulated(ad, ex, done)
    state = None if total is None else assess(shape, total)
    cpu = spent(ex, waves)
    nxt = decide(ex, shape, state, cpu, ad.settings.max_tasks)
    if nxt.passes == 0:
        if total is None:  # a cap below one wave: nothing rendered
            return end(ad, ex, Status.FAILED, {"code": "over_cap", "message":
                       "the spending cap does not cover one pass of the image"}, waves)
        return finish(ad, ex, total, state, nxt.stopped, cpu, waves)
    if state is not None and total is not None and ex.imaged != len(done):
        # The image so far, shown while the next wave renders.
        ad.store.update_execution(sid, ex.id, {
            "result": encode_image(ad, ex, total), "imaged": len(done), "spent_cpu_s": cpu,
            **progress(state)})
    return start_wave(ad, ex, len(waves) + 1, nxt)


def progress(state: Assessment) -> dict:
    """The status's passes and noise (None while a pass has no variance to measure)."""
    noise = state.image_noise
    return {"passes_done": int(state.passes.max()),
            "noise": noise if math.isfinite(noise) else None}


def encode_image(ad: Adapters, ex: Execution, total: imaging.Partial) -> str:
    """Store the image of the passes in ``total`` as the render's result; its name."""
    final = producers.final_image(ex.producer, ex.scene, total.mean())
    name = ad.blobs.result_name(ex.session_id, ex.id, imaging.EXTENSIONS[ex.format])
    ad.blobs.put_result(name, imaging.encode(final, ex.format, ex.display),
                        imaging.FORMATS[ex.format])
    return name


def accumulated(ad: Adapters, ex: Execution, done: list[Execution]) -> imaging.Partial | None:
    """The render's sum after its ``done`` waves (its own passes' first, if it has
    any): kept under the last wave's number, computed from the sum before it and the
    wave's (the sum before is then let go: only the last is needed)."""
    if not done:  # an extended render's own passes, or nothing yet
        return None if ex.own_cpu_s is None else load_sum(ad, ex, 0)
    last = done[-1].wave or 0
    kept = load_sum(ad, ex, last)
    if kept is not None:
        return kept
    before = accumulated(ad, ex, done[:-1])
    wave = load_sum(ad, done[-1], 0)
    if wave is None:
        raise errors.TransientError(f"the sum of wave {last} of {ex.id} is not stored yet")
    if before is None:
        total = wave
    else:  # added in place: the render's sum and the wave's, no third image
        acc = imaging.Accumulator.wrap(before)
        acc.add(wave)
        total = acc.partial()
    store_sum(ad, ex, total, last)
    if len(done) > 1:
        ad.blobs.delete_object("results", sum_name(ad, ex, done[-2].wave or 0))
    return total


def has_sum(ad: Adapters, ex: Execution, waves: list[Execution]) -> bool:
    """Whether the sum of the render's passes is still kept (an extension adds to it)."""
    done = [w.wave or 0 for w in waves if w.status == Status.DONE]
    if done:
        return ad.blobs.result_size(sum_name(ad, ex, done[-1])) is not None
    if ex.waved and ex.own_cpu_s is None:  # waves only, none of them done
        return False
    return ad.blobs.result_size(sum_name(ad, ex, 0)) is not None


def finish(ad: Adapters, ex: Execution, total: imaging.Partial, state: Assessment | None,
           stopped: str | None, cpu: float, waves: list[Execution]) -> bool:
    """Encode the image of every pass so far and end the render done."""
    fields = {"result": encode_image(ad, ex, total), "stopped": stopped, "spent_cpu_s": cpu}
    if state is not None:
        fields.update(progress(state))
    return end(ad, ex, Status.DONE, None, waves, fields)


def give_up(ad: Adapters, ex: Execution, last: Execution, waves: list[Execution]) -> bool:
    """A wave failed or was cancelled. A render with an image (an extended one, or one
    whose earlier waves rendered) ends done with the passes it has, ``stopped`` saying
    why (a failed wave's error in ``error``); one without fails or is cancelled."""
    cancelled = last.status == Status.CANCELLED
    error = None if cancelled else {
        "code": "wave_failed",
        "message": f"wave {last.wave}: {(last.error or {}).get('message', 'failed')}"}
    if ex.result and (not cancelled or ex.waves_before is not None):
        return end(ad, ex, Status.DONE, error, waves,
                   {"stopped": "cancelled" if cancelled else "failed"})
    return end(ad, ex, Status.CANCELLED if cancelled else Status.FAILED, error, waves)


def end(ad: Adapters, ex: Execution, status: Status, error: dict | None,
        waves: list[Execution] | None, fields: dict | None = None) -> bool:
    """The render's final status (first caller wins), its summary summed over its own
    tasks and its waves; the winner announces it."""
    finished = ad.clock()
    if waves is None:
        waves = waves_of(ad, ex)
    summary = views.summarize_waves(ad, ex, waves, finished)
    won = ad.store.finish_execution(ex.session_id, ex.id, {
        "status": status, "finished": finished, "error": error, "summary": summary,
        "spent_cpu_s": spent(ex, waves), **(fields or {})})
    if won:
        current = ad.store.execution(ex.session_id, ex.id)
        if current is not None:
            events.publish_status(ad, current)
    return won


def cancel(ad: Adapters, ex: Execution) -> bool:
    """Cancel the render and its wave. An extension's render keeps its image: it ends
    done with the passes it had, ``stopped: "cancelled"``."""
    waves = waves_of(ad, ex)
    if ex.waves_before is not None and ex.result:
        won = end(ad, ex, Status.DONE, None, waves, {"stopped": "cancelled"})
    else:
        won = end(ad, ex, Status.CANCELLED, None, waves)
    for w in waves:
        if not w.final:
            scheduling.end(ad, w, Status.CANCELLED)
    return won


def extend(ad: Adapters, ex: Execution, body: dict, admit=None) -> Execution:
    """``POST …/executions/{eid}:extend``: more passes on a done render, after its last
    one (``{"passes": N}``, or a noise target ``{"until": …}``), with an optional cap.
    The render is running again until its next wave ends; its image stays until then.
    ``admit(shape, pixel_seconds, frames, window)``: the quotas' admission."""
    request = schemas.parse("extend", body)
    if ex.animation or ex.parent is not None:
        raise errors.BadRequest("extend: renders of one image only (an animation's frames "
                                "are not extended)", "invalid_field")
    if (request["passes"] is None) == (request["until"] is None):
        raise errors.BadRequest("extend: give either passes or until", "invalid_field")
    if ex.status != Status.DONE:
        raise errors.Conflict(f"execution {ex.id} is {ex.status}: only a done render is "
                              "extended", "not_done")
    shape = planning.Shape.from_dict(ex.shape)
    held = ex.passes_done if ex.passes_done is not None else shape.passes
    until = request["until"]
    target = until["max_passes"] if until else held + request["passes"]
    if target > planning.MAX_PARALLEL or target <= held:
        raise errors.BadRequest(
            f"{'until.max_passes' if until else 'passes'}: the render holds {held} passes; "
            f"it may hold {held + 1} to {planning.MAX_PARALLEL}", "invalid_field")
    own = not ex.waved  # its passes are its own tasks' (their sum kept by its root)
    if not has_sum(ad, ex, waves_of(ad, ex)):
        raise errors.Conflict(f"execution {ex.id} kept no sum of its passes (it predates "
                              "extensions, or its results expired): render it again",
                              "not_done")
    more = (target - held) if not until else min(target - held, max(held, FIRST_WAVE))
    wave_shape = planning.make_shape(shape.width, shape.height, more, shape.tile,
                                     min(shape.fold, more))
    producer = producers.get(ex.producer)
    fields: dict = {"until": until, "target_passes": target, "stopped": None,
                    "max_cost_usd": request["max_cost_usd"],
                    "max_cpu_seconds": request["max_cpu_seconds"], "finished": None,
                    "error": None, "summary": None, "waves": ex.waves or 0,
                    "waves_before": ex.waves or 0, "passes_done": held}
    if request["max_cost_usd"] is not None or request["max_cpu_seconds"] is not None:
        fields.update(estimates.check_cap(ad, ex.session_id, wave_shape, producer, ex.scene,
                                          1, request, "the extension's first wave"))
    if admit is not None:
        pixel_seconds = (ex.task_seconds or 0.0) / max(1, min(shape.tile, shape.width)
                                                       * min(shape.tile, shape.height)
                                                       * shape.fold)
        fields.update(admit(wave_shape, pixel_seconds, 1, 1))
    if own:  # its own tasks' passes and spending come before the waves
        fields.update(own_cpu_s=float(((ex.summary or {}).get("time") or {}).get("cpu")
                                      or 0.0), own_summary=ex.summary)
    before = fields.get("own_cpu_s", 0.0) if own else (ex.spent_cpu_s or 0.0)
    fields["spent_cpu_s"] = before
    # A cap counts from what the render had spent.
    if fields["max_cpu_seconds"] is not None:
        fields["max_cpu_seconds"] += before
    if fields["max_cost_usd"] is not None and fields.get("usd_per_cpu_second"):
        fields["max_cost_usd"] += before * fields["usd_per_cpu_second"]
    if not ad.store.reopen_execution(ex.session_id, ex.id, fields):
        raise errors.Conflict(f"execution {ex.id} is being extended already", "not_done")
    current = ad.store.execution(ex.session_id, ex.id)
    if current is None:
        raise errors.NotFound(f"execution {ex.id} not found")
    # Its status on the topic has the reducer start the wave (the render's sum is
    # loaded there, within the reducer's memory); the watchdog does, if it is lost.
    events.publish_status(ad, current)
    return current


def wave_ended(ad: Adapters, wave: Execution) -> str:
    """A wave's final status came in: its render goes on (or ends)."""
    if wave.parent is None or not wave.wave:
        return ""
    ex = ad.store.execution(wave.session_id, wave.parent)
    if ex is None or ex.final:
        return "render gone or ended"
    advance(ad, ex)
    return f"wave {wave.wave} {wave.status}"


def tick(ad: Adapters, ex: Execution) -> str | None:
    """The watchdog's part: a waved render is advanced; a wave whose render ended is
    cancelled. None for other executions."""
    if ex.waved:
        if ex.frame is not None and ex.parent:  # a frame: is its animation still on?
            animation = ad.store.execution(ex.session_id, ex.parent)
            if animation is None or animation.final:
                cancel(ad, ex)
                return "frame of an ended animation cancelled"
        return "advanced" if advance(ad, ex) else "waves idle"
    if ex.wave:
        parent = ad.store.execution(ex.session_id, ex.parent or "")
        if parent is None or parent.final:
            scheduling.end(ad, ex, Status.CANCELLED)
            return "wave of an ended render cancelled"
    return None
