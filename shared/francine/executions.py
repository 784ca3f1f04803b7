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

from francine import errors, estimates, farm, planning, producers, recovery, scheduler
from francine.adapters.store import execution_from_doc, now
from francine.clients import Adapters
from francine.mergepatch import merge_patch
from francine.producers.base import ResourceInfo, SceneError
from francine.records import FINAL, Execution, Kind, Status, Task

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
    from francine import events  # events reads statuses from here

    parallel, update, tile = parse_request(body)
    notify_url = events.check_notify_url(body.get("notify_url"), ad.settings)
    eid = execution_id(user, sid, idempotency_key)

    def build(session: dict) -> tuple[dict, dict]:
        # Only for a new execution (a repeated key finds the first one before this).
        records = ad.store.list_resources(sid)
        resources = {r["name"]: ResourceInfo(r["name"], r["sha256"], r["size"], r.get("meta"))
                     for r in records}
        producer = producers.get(session["producer"])
        scene = merge_patch(session["scene"], update) if update else session["scene"]
        try:
            scene = producer.validate(scene, resources)
            width, height = producer.image_size(scene)
        except SceneError as e:
            raise scene_error(e) from e
        pixel_seconds = estimates.pixel_seconds(ad, sid, producer, scene, records)
        bound = ad.settings.max_task_seconds
        edge = tile or planning.largest_tile(width, height, pixel_seconds, bound / 4)
        # Tiny passes are folded: several passes of a tile per task, up to the minimum
        # task time, never past a quarter of the bound.
        one_pass = planning.task_seconds(planning.make_shape(width, height, 1, edge),
                                         pixel_seconds)
        fold = planning.passes_per_task(one_pass, parallel, ad.settings.min_task_seconds,
                                        bound / 4)
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
        extra = admit(shape, pixel_seconds) if admit else {}
        created = ad.clock()
        doc = {
            "id": eid, "session_id": sid, "user": user, "created": created,
            "status": "queued", "producer": producer.name, "format": session["format"],
            "display": producer.display, "channels": producer.channels,
            "scene": scene, "update": update, "parallel": parallel, "tile": tile,
            "resources": {n: {"sha256": r.sha256, "size": r.size}
                          for n, r in resources.items()},
            "shape": shape.to_dict(), "task_seconds": estimate,
            # Farm-wide admission (francine.farm) replaces the per-execution limit.
            "admission_limit": 0 if farm.enabled(ad.settings) else ad.settings.admission_limit,
            "planned": False, "published": False, "finished": None, "error": None,
            **extra,
        }
        if notify_url:
            doc["notify_url"] = notify_url
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
    if created:  # after the tasks: announcing it must not delay the render
        events.publish_status(ad, doc, created=True)
    return doc, created


def publish(ad: Adapters, doc: dict) -> None:
    """Write the task documents and publish the first production tasks; idempotent."""
    carry_out_start(ad, doc, scheduler.ExecutionCreated())


#: Kept for callers of the earlier name.
STALLED_S = scheduler.STALLED_S


def resume_if_stalled(ad: Adapters, doc: dict) -> bool:
    """Finish publishing an execution whose creating request died; idempotent, so the
    status read that notices it can do it. True if it resumed."""
    return bool(carry_out_start(ad, doc, scheduler.Tick()).actions)


def carry_out_start(ad: Adapters, doc: dict, event) -> scheduler.Trace:
    """Step ``event`` (creation or a tick) and carry out the writes and publications;
    ``doc`` is updated as the store is."""
    sid, eid = doc["session_id"], doc["id"]
    shape = planning.Shape.from_dict(doc["shape"])
    plan = scheduler.Plan(shape, doc.get("admission_limit") or 0)
    seen = scheduler.Observed(
        status=Status(doc["status"]), planned=bool(doc.get("planned")),
        published=bool(doc.get("published")),
        now_s=(ad.clock() - doc["created"]).total_seconds())

    def carry_out(action):
        match action:
            case scheduler.WriteTasks():
                tasks = task_records(eid, shape)
                if farm.enabled(ad.settings):  # tagged and queued, not published
                    farm.enqueue(ad, doc, tasks)
                ad.store.write_tasks(sid, eid, tasks)
                ad.store.update_execution(sid, eid, {"planned": True})
                doc["planned"] = True
            case scheduler.Publish(first=True) if farm.enabled(ad.settings):
                ad.store.update_execution(sid, eid, {"published": True})
                doc["published"] = True
                farm.dispatch_now(ad)
            case scheduler.Publish(indices=indices, first=first):
                ad.bus.publish_tasks(sid, eid, [
                    (i, planning.task_id(eid, planning.node_name(0, i))) for i in indices])
                if first:
                    ad.store.update_execution(sid, eid, {"published": True})
                    doc["published"] = True

    return scheduler.drive(plan, [event], lambda _e: seen, carry_out)


def task_records(eid: str, shape: planning.Shape) -> list[Task]:
    tasks = []
    for t in planning.plan(eid, shape):
        tile = None if t.tile is None else (t.tile.x0, t.tile.y0, t.tile.width, t.tile.height)
        tasks.append(Task(planning.task_id(eid, t.node), t.node, Kind(t.kind), t.parent,
                          children=t.children, tile=tile, pass_index=t.pass_index,
                          seed=t.seed, passes=t.passes))
    return tasks


def as_record(doc: dict | Execution) -> Execution:
    return doc if isinstance(doc, Execution) else execution_from_doc(doc)


# --- reporting -------------------------------------------------------------------------

def rfc3339(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summarize(doc: dict | Execution, stats: dict, finished: dt.datetime | None,
              status: str | None = None) -> dict:
    """The counts and times of an execution from its task statistics. A cancelled or
    failed execution has no task running and no image: tasks still running when it
    ended are abandoned, not running forever."""
    ex = as_record(doc)
    status = status or ex.status
    ended_without_image = finished is not None and status in ("cancelled", "failed")
    shape = planning.Shape.from_dict(ex.shape)
    created = ex.created
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
    if "retries" not in tasks:  # frozen into the summary at the end
        tasks = {**tasks, **recovery.counts(ad, doc["session_id"], doc["id"])}
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


def end(ad: Adapters, doc: dict | Execution, status: str, error: dict | None = None,
        result: str | None = None) -> bool:
    """Move the execution to a final status with its frozen summary; first caller wins."""
    ex = as_record(doc)
    finished = ad.clock()
    stats = ad.store.task_stats(ex.session_id, ex.id)
    summary = summarize(ex, stats, finished, status)
    summary["tasks"].update(recovery.counts(ad, ex.session_id, ex.id))
    fields = {"status": Status(status), "finished": finished, "error": error,
              "summary": summary}
    if result:
        fields["result"] = result
    won = ad.store.finish_execution(ex.session_id, ex.id, fields)
    if won:
        farm.ended(ad, ex)
        from francine import events

        events.publish_status(ad, ad.store.get_execution(ex.session_id, ex.id))
    return won


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
