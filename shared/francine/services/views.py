"""What an execution looks like from outside: its counts and times (``summarize``, frozen
into the execution when it ends) and its REST status (``view``: the one place an
execution becomes the JSON of the REST contract, for the api, the events and the
status topic)."""

from __future__ import annotations

import datetime as dt

from francine.base.clock import now
from francine.domain import planning, pricing
from francine.domain.records import FINAL, Execution, Status
from francine.ports import Adapters
from francine.ports.protocols import TaskStats
from francine.services import recovery


def rfc3339(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summarize(ex: Execution, stats: TaskStats, finished: dt.datetime | None,
              status: str | None = None) -> dict:
    """The counts and times of an execution from its task statistics. An ended
    execution has no task running: tasks still running when it was cancelled or
    failed are abandoned, not running forever, and once it is done a render still
    going is a losing copy. Nor does a task run beside all of them done (the counts
    are separate queries: a task that ends between them is counted in both)."""
    status = status or ex.status
    ended_without_image = finished is not None and status in (Status.CANCELLED, Status.FAILED)
    shape = planning.Shape.from_dict(ex.shape)
    created = ex.created
    end = finished or now()
    first, last = stats.get("first_started"), stats.get("last_produced")
    prod, red = stats["produce"], stats["reduce"]
    running = 0 if finished is not None \
        else max(0, min(stats["running"], shape.total_tasks - stats["done"]))
    return {
        "tasks": {"total": shape.total_tasks, "done": stats["done"],
                  "failed": stats["failed"], "running": running},
        "time": {
            "created": rfc3339(created), "finished": rfc3339(finished),
            "fetching": round(prod["fetch"] + red["fetch"], 4),
            "producing": round(prod["work"], 4),
            "reducing": round(red["work"], 4),
            "total": round((end - created).total_seconds(), 4),
            "cpu": round(prod["cpu"] + red["cpu"], 4),
            # The pipeline's own latency: request → first task running, and last
            # production task finished → final image stored.
            "first_task_after": round((first - created).total_seconds(), 4) if first else None,
            "image_after_last_task": (round(max(0.0, (finished - last).total_seconds()), 4)
                                      if finished and last and not ended_without_image
                                      else None),
        },
        "productions_done": int(prod.get("n", 0)),
    }


def view(ad: Adapters, ex: Execution) -> dict:
    """The execution status of the REST contract (docs/api.md): the one place an
    execution becomes REST JSON."""
    if ex.animation:
        return animation_view(ad, ex)
    summary = ex.summary
    if summary is None and ex.waved:
        summary = summarize_waves(ad, ex, waves_of(ad, ex))
    elif summary is None:
        stats = ad.store.task_stats(ex.session_id, ex.id)
        summary = summarize(ex, stats, ex.finished)
    shape = planning.Shape.from_dict(ex.shape)
    tasks = summary["tasks"]
    if "retries" not in tasks and not ex.waved:  # frozen into the summary at the end
        tasks = {**tasks, **recovery.counts(ad, ex.session_id, ex.id)}
    status = ex.status
    if status not in FINAL:
        status = Status.QUEUED
        if summary["productions_done"] >= shape.productions and not ex.waved:
            status = Status.REDUCING
        elif tasks["done"] or tasks["running"] or ex.waves:
            status = Status.RUNNING
    progress = 1.0 if status == Status.DONE else round(
        tasks["done"] / tasks["total"], 4) if tasks["total"] else 0.0
    return {
        "id": ex.id, "session_id": ex.session_id, "status": str(status),
        "progress": progress, "tasks": tasks, "time": summary["time"],
        "error": ex.error,
        "parallel": ex.parallel, "tile": ex.tile, "update": ex.update,
        "format": ex.format, "width": shape.width, "height": shape.height,
        **waved_fields(ad, ex, shape, summary),
        **({"render": ex.parent, "wave": ex.wave} if ex.wave else
           {"animation": ex.parent, "frame": ex.frame} if ex.parent else {}),
    }


def waved_fields(ad: Adapters, ex: Execution, shape: planning.Shape, summary: dict) -> dict:
    """Passes, noise and spending of a render (francine.services.waves)."""
    cpu = ex.spent_cpu_s if ex.spent_cpu_s is not None else summary["time"]["cpu"]
    return {
        # what the image holds; a plain render's planned passes (a render in waves
        # holds none until its first wave ends)
        "passes": ex.passes_done if ex.passes_done is not None
        else 0 if ex.waved else shape.passes,
        "noise": None if ex.noise is None else round(float(ex.noise), 5),
        "stopped": ex.stopped, "waves": ex.waves or 0,
        "spent": {"cpu_seconds": round(cpu, 3), "usd": round(cpu * usd_per_cpu(ad, ex), 6)},
        "seed": ex.seed, "until": ex.until, "max_cost_usd": ex.max_cost_usd,
        "max_cpu_seconds": ex.max_cpu_seconds,
    }


def usd_per_cpu(ad: Adapters, ex: Execution) -> float:
    """Dollars a CPU-second of this render costs: its price's ratio when it was priced
    (a cap), else the render service's list price of a vCPU-second and the memory
    beside it."""
    if ex.usd_per_cpu_second:
        return ex.usd_per_cpu_second
    return pricing.usd_per_cpu_second(pricing.Prices.of(ad.settings),
                                      pricing.Farm.of(ad.settings).render)


def waves_of(ad: Adapters, ex: Execution) -> list[Execution]:
    """The waves of a render (francine.services.waves), in order."""
    return sorted((w for w in ad.store.frames_of(ex.session_id, ex.id) if w.wave),
                  key=lambda w: w.wave or 0)


def summarize_waves(ad: Adapters, ex: Execution, waves: list[Execution],
                    finished=None) -> dict:
    """A waved render's counts and times: its own tasks' (an extended render's frozen
    summary) and its waves' summed."""
    return summed(ad, ex, waves, finished, ex.own_summary)


# --- what an animation looks like from outside ---------------------------------------

def _frame_summary(ad: Adapters, ex: Execution) -> dict:
    if ex.summary is not None:
        return ex.summary
    if ex.waved:  # a frame with a noise target or a cap: its waves'
        return summarize_waves(ad, ex, waves_of(ad, ex))
    return summarize(ex, ad.store.task_stats(ex.session_id, ex.id), ex.finished)


def summarize_animation(ad: Adapters, parent: Execution, frames: list[Execution],
                        finished=None) -> dict:
    """The animation's counts and times: its frames' summed (tasks of frames not
    started yet count as planned, not done)."""
    shape = planning.Shape.from_dict(parent.shape)
    planned = shape.total_tasks * len(parent.frames or ())
    return summed(ad, parent, frames, finished, None, planned)


def summed(ad: Adapters, parent: Execution, children: list[Execution], finished,
           own: dict | None, planned: int | None = None) -> dict:
    """Counts and times summed over ``children`` (and ``own``: the parent's own
    tasks' summary); ``planned``: the tasks in all (else the children's)."""
    tasks = {"total": 0, "done": 0, "failed": 0, "running": 0}
    time = {"fetching": 0.0, "producing": 0.0, "reducing": 0.0, "cpu": 0.0}
    productions = 0
    firsts = []
    for ex in children:
        s = _frame_summary(ad, ex)
        tasks["total"] += s["tasks"].get("total", 0)
        for k in ("done", "failed", "running"):
            tasks[k] += s["tasks"].get(k, 0)
        for k in time:
            time[k] += s["time"].get(k) or 0.0
        productions += s.get("productions_done", 0)
        if s["time"].get("first_task_after") is not None:
            firsts.append((ex.created - parent.created).total_seconds()
                          + s["time"]["first_task_after"])
    if own is not None:
        for k in ("total", "done", "failed"):
            tasks[k] += own["tasks"].get(k, 0)
        for k in time:
            time[k] += own["time"].get(k) or 0.0
        productions += own.get("productions_done", 0)
    if planned is not None:  # frames in waves may plan more than their first wave
        tasks["total"] = max(planned, tasks["total"])
    if finished is not None:
        tasks["running"] = 0
    end = finished or ad.clock()
    return {
        "tasks": tasks,
        "time": {"created": rfc3339(parent.created), "finished": rfc3339(finished),
                 **{k: round(v, 4) for k, v in time.items()},
                 "total": round((end - parent.created).total_seconds(), 4),
                 "first_task_after": round(min(firsts), 4) if firsts else None,
                 "image_after_last_task": None},
        "productions_done": productions,
    }


def frame_counts(parent: Execution, frames: list[Execution]) -> dict:
    """``frames`` of the status: total, done, failed (with which), and ``rendering``, the
    first frame not ended yet (None once all have)."""
    by_frame = {ex.frame: ex for ex in frames}
    done = [f for f in parent.frames or () if f in by_frame
            and by_frame[f].status == Status.DONE]
    failed = [f for f in parent.frames or () if f in by_frame
              and by_frame[f].status == Status.FAILED]  # not those a cancel stopped
    rendering = next((f for f in parent.frames or ()
                      if f not in by_frame or not by_frame[f].final), None)
    return {"total": len(parent.frames or ()), "done": len(done), "failed": len(failed),
            "failed_frames": failed[:100], "rendering": None if parent.final else rendering,
            "window": parent.frame_window}


def animation_view(ad: Adapters, parent: Execution,
                   frames: list[Execution] | None = None) -> dict:
    """The REST status of an animation: a single image's, its counts summed over its
    ``frames`` (read here unless given), with ``frames``."""
    if frames is None:
        frames = ad.store.frames_of(parent.session_id, parent.id)
    summary = parent.summary or summarize_animation(ad, parent, frames)
    counts = frame_counts(parent, frames)
    status = parent.status
    if status not in FINAL:
        status = Status.QUEUED
        if counts["done"] + counts["failed"] or summary["tasks"]["done"] \
                or summary["tasks"]["running"]:
            status = Status.RUNNING
    tasks = summary["tasks"]
    progress = 1.0 if status == Status.DONE else round(
        tasks["done"] / tasks["total"], 4) if tasks["total"] else 0.0
    shape = planning.Shape.from_dict(parent.shape)
    return {
        "id": parent.id, "session_id": parent.session_id, "status": str(status),
        "progress": min(1.0, progress), "tasks": tasks, "time": summary["time"],
        "error": parent.error, "parallel": parent.parallel, "tile": parent.tile,
        "update": parent.update, "format": parent.format, "width": shape.width,
        "height": shape.height, "frames": counts,
    }


def frame_list(ad: Adapters, parent: Execution,
               frames: list[Execution] | None = None) -> list[dict]:
    """Every frame of the animation with its status, and its result's URL once done
    (``frames``: its frames' executions, read here unless given)."""
    base = f"/v1/sessions/{parent.session_id}/executions/{parent.id}"
    if frames is None:
        frames = ad.store.frames_of(parent.session_id, parent.id)
    by_frame = {ex.frame: ex for ex in frames}
    out = []
    for f in parent.frames or ():
        ex = by_frame.get(f)
        if ex is None:
            status = str(Status.CANCELLED) if parent.final else "pending"
        else:
            status = str(ex.status) if ex.final else str(Status.RUNNING)
        item: dict = {"frame": f, "status": status,
                      "result": f"{base}/result?frame={f}" if ex is not None
                      and ex.status == Status.DONE else None,
                      "preview": f"{base}/preview?frame={f}" if ex is not None else None}
        if ex is not None and ex.finished is not None:
            item["finished"] = rfc3339(ex.finished)
            if ex.error:
                item["error"] = ex.error
        out.append(item)
    return out


