"""What an execution looks like from outside: its counts and times (``summarize``, frozen
into the execution when it ends) and its REST status (``view``: the one place an
execution becomes the JSON of the REST contract, for the api, the events and the
status topic)."""

from __future__ import annotations

import datetime as dt

from francine.base.clock import now
from francine.domain import planning
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
    summary = ex.summary
    if summary is None:
        stats = ad.store.task_stats(ex.session_id, ex.id)
        summary = summarize(ex, stats, ex.finished)
    shape = planning.Shape.from_dict(ex.shape)
    tasks = summary["tasks"]
    if "retries" not in tasks:  # frozen into the summary at the end
        tasks = {**tasks, **recovery.counts(ad, ex.session_id, ex.id)}
    status = ex.status
    if status not in FINAL:
        status = Status.QUEUED
        if summary["productions_done"] >= shape.productions:
            status = Status.REDUCING
        elif tasks["done"] or tasks["running"]:
            status = Status.RUNNING
    progress = 1.0 if status == Status.DONE else round(tasks["done"] / tasks["total"], 4)
    return {
        "id": ex.id, "session_id": ex.session_id, "status": str(status),
        "progress": progress, "tasks": tasks, "time": summary["time"],
        "error": ex.error,
        "parallel": ex.parallel, "tile": ex.tile, "update": ex.update,
        "format": ex.format, "width": shape.width, "height": shape.height,
    }


