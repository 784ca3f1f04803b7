"""Executions: starting one (plan, record, publish), reporting it, ending it.

Used by the api (start, status, wait) and by the reducer (finish, fail). The order of
writes makes every step safe to repeat: the execution document is created first
(transactionally with the session's scene update), then the task documents
(``planned``), then the messages (``published``). A retried request with the same
idempotency key resumes wherever the first one stopped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
import uuid

from francine import errors, planning, producers
from francine.adapters.store import now
from francine.clients import Adapters
from francine.mergepatch import merge_patch
from francine.producers.base import ResourceInfo, SceneError

FINAL = ("done", "failed", "cancelled")
MAX_PARALLEL = 4096
MIN_TILE = 8


def scene_error(e: SceneError) -> errors.BadRequest:
    field = f"scene.{e.field}" if e.field and e.field != "producer" else e.field
    return errors.BadRequest(f"{field}: {e.message}" if field else e.message, "invalid_scene")


def parse_request(body: dict) -> tuple[int, dict | None, int | None]:
    from francine.api.schemas import parse  # the one definition of the request body

    request = parse("execution", body)
    return request["parallel"], request["update"], request["tile"]


def execution_id(user: str, sid: str, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return uuid.uuid4().hex[:20]
    return hashlib.sha256(f"{user}\0{sid}\0{idempotency_key}".encode()).hexdigest()[:20]


def start(ad: Adapters, user: str, sid: str, body: dict,
          idempotency_key: str | None = None, admit=None) -> tuple[dict, bool]:
    """Create (or, for a repeated idempotency key, find) an execution and publish it.
    Returns (execution document, created). ``admit(shape, pixel_seconds)``, run only for
    a new execution (quotas.admission), raises to refuse it or returns extra fields."""
    parallel, update, tile = parse_request(body)
    eid = execution_id(user, sid, idempotency_key)

    def build(session: dict) -> tuple[dict, dict]:
        # Only for a new execution (a repeated key finds the first one before this).
        resources = {r["name"]: ResourceInfo(r["name"], r["sha256"], r["size"])
                     for r in ad.store.list_resources(sid)}
        producer = producers.get(session["producer"])
        scene = merge_patch(session["scene"], update) if update else session["scene"]
        try:
            scene = producer.validate(scene, resources)
            width, height = producer.image_size(scene)
        except SceneError as e:
            raise scene_error(e) from e
        pixel_seconds = producer.pixel_seconds(scene)
        bound = ad.settings.max_task_seconds
        edge = tile or planning.largest_tile(width, height, pixel_seconds, bound / 4)
        shape = planning.make_shape(width, height, parallel, edge)
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
        extra = admit(shape, pixel_seconds) if admit else {}
        created = now()
        doc = {
            "id": eid, "session_id": sid, "user": user, "created": created,
            "status": "queued", "producer": producer.name, "format": session["format"],
            "display": producer.display, "channels": producer.channels,
            "scene": scene, "update": update, "parallel": parallel, "tile": tile,
            "resources": {n: {"sha256": r.sha256, "size": r.size}
                          for n, r in resources.items()},
            "shape": shape.to_dict(), "admission_limit": ad.settings.admission_limit,
            "planned": False, "published": False, "finished": None, "error": None,
            **extra,
        }
        return ({"scene": scene, "updated": created} if update else {}), doc

    doc, created = ad.store.create_execution(sid, eid, build)
    if doc["status"] not in FINAL:
        try:
            publish(ad, doc)
        except Exception:
            if idempotency_key is None:
                # Nobody can resume this execution (a retry gets a new id): end it
                # rather than leave it queued forever. With a key, a retry resumes it.
                with contextlib.suppress(Exception):
                    fail(ad, sid, eid, "publish_failed", "the tasks could not be queued")
            raise
    return doc, created


def publish(ad: Adapters, doc: dict) -> None:
    """Write the task documents and publish the first production tasks; idempotent."""
    sid, eid = doc["session_id"], doc["id"]
    shape = planning.Shape.from_dict(doc["shape"])
    if not doc.get("planned"):
        ad.store.write_tasks(sid, eid, (
            (planning.task_id(eid, t.node), task_document(t)) for t in planning.plan(eid, shape)))
        ad.store.update_execution(sid, eid, {"planned": True})
        doc["planned"] = True
    if not doc.get("published"):
        first = shape.productions
        if doc.get("admission_limit"):
            first = min(first, doc["admission_limit"])
        ad.bus.publish_tasks(sid, eid, [(i, planning.task_id(eid, planning.node_name(0, i)))
                                        for i in range(first)])
        ad.store.update_execution(sid, eid, {"published": True})
        doc["published"] = True


#: An execution still unpublished this long after its creation lost the request that was
#: publishing it (an instance died, and the client did not retry with its key).
STALLED_S = 30.0


def resume_if_stalled(ad: Adapters, doc: dict) -> bool:
    """Finish publishing an execution whose creating request died; idempotent, so the
    status read that notices it can do it. True if it resumed."""
    if doc["status"] in FINAL or doc.get("published"):
        return False
    if (now() - doc["created"]).total_seconds() < STALLED_S:
        return False
    publish(ad, doc)
    return True


def task_document(t: planning.PlannedTask) -> dict:
    doc = {"node": t.node, "kind": t.kind, "parent": t.parent, "status": "pending",
           "children": t.children, "attempts": 0}
    if t.tile is not None:
        doc.update(tile=[t.tile.x0, t.tile.y0, t.tile.width, t.tile.height],
                   pass_index=t.pass_index, seed=t.seed)
    return doc


# --- reporting -------------------------------------------------------------------------

def rfc3339(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summarize(doc: dict, stats: dict, finished: dt.datetime | None,
              status: str | None = None) -> dict:
    """The counts and times of an execution from its task statistics. A cancelled or
    failed execution has no task running and no image: tasks still running when it
    ended are abandoned, not running forever."""
    status = status or doc.get("status")
    ended_without_image = finished is not None and status in ("cancelled", "failed")
    shape = planning.Shape.from_dict(doc["shape"])
    created = doc["created"]
    end = finished or now()
    first, last = stats.get("first_started"), stats.get("last_produced")
    prod, red = stats["produce"], stats["reduce"]
    return {
        "tasks": {"total": shape.total_tasks, "done": stats["done"],
                  "failed": stats["failed"],
                  "running": 0 if ended_without_image else stats["running"]},
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


def view(ad: Adapters, doc: dict) -> dict:
    """The execution status of API.md."""
    summary = doc.get("summary")
    if summary is None:
        stats = ad.store.task_stats(doc["session_id"], doc["id"])
        summary = summarize(doc, stats, doc.get("finished"))
    shape = planning.Shape.from_dict(doc["shape"])
    tasks = summary["tasks"]
    status = doc["status"]
    if status not in FINAL:
        status = "queued"
        if summary["productions_done"] >= shape.productions:
            status = "reducing"
        elif tasks["done"] or tasks["running"]:
            status = "running"
    progress = 1.0 if status == "done" else round(tasks["done"] / tasks["total"], 4)
    return {
        "id": doc["id"], "session_id": doc["session_id"], "status": status,
        "progress": progress, "tasks": tasks, "time": summary["time"],
        "error": doc.get("error"),
        "parallel": doc["parallel"], "tile": doc["tile"], "update": doc.get("update"),
        "format": doc["format"], "width": shape.width, "height": shape.height,
    }


def end(ad: Adapters, doc: dict, status: str, error: dict | None = None,
        result: str | None = None) -> bool:
    """Move the execution to a final status with its frozen summary; first caller wins."""
    finished = now()
    stats = ad.store.task_stats(doc["session_id"], doc["id"])
    fields = {"status": status, "finished": finished, "error": error,
              "summary": summarize(doc, stats, finished, status)}
    if result:
        fields["result"] = result
    return ad.store.finish_execution(doc["session_id"], doc["id"], fields)


def fail(ad: Adapters, sid: str, eid: str, code: str, message: str) -> bool:
    doc = ad.store.get_execution(sid, eid)
    if doc is None or doc["status"] in FINAL:
        return False
    return end(ad, doc, "failed", {"code": code, "message": message})


def wait(ad: Adapters, sid: str, eid: str, timeout_s: float) -> dict:
    """Poll the execution document until it is final or the timeout passes: every 0.1 s
    at first (small renders answer fast), backing off to every second."""
    deadline = time.monotonic() + timeout_s
    poll_s = 0.1
    while True:
        doc = ad.store.get_execution(sid, eid)
        if doc is None:
            raise errors.NotFound("execution not found")
        if doc["status"] in FINAL or time.monotonic() >= deadline:
            return doc
        time.sleep(poll_s)
        poll_s = min(1.0, poll_s * 1.25)
