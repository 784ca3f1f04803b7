"""Routes of the REST API. ``Api.handle(request)`` takes a Flask request (what
functions-framework hands to an HTTP function) and always returns a response: every
error, expected or not, becomes the API's error body with its status, in one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import uuid

from flask import Response
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WzMethodNotAllowed
from werkzeug.routing import BaseConverter, Map, Rule

from francine import producers
from francine.base import errors
from francine.base.clock import now
from francine.domain import imaging
from francine.domain.producer import SceneError
from francine.domain.records import Execution, Session, Status
from francine.handlers.api import requestlog, viewer
from francine.handlers.api.openapi import openapi_document
from francine.ports import Adapters, readiness
from francine.services import (
    animation,
    events,
    executions,
    quotas,
    quotes,
    resources,
    schemas,
    tasklist,
    uploads,
    users,
    video,
    views,
    waves,
)
from francine.services.preview import Previews

log = logging.getLogger("francine.api")

DEMO_USER = "demo"  # not a user id that any API key maps to (those are uuid4 hex)
DEMO_SESSION = hashlib.sha256(b"francine demo session").hexdigest()[:20]
#: Session and execution ids are ours: hex. Anything else cannot exist (and some strings,
#: such as "__x__", are not even valid Firestore ids).
ID = re.compile(r"^[0-9a-f]{1,64}$")
CHUNK = 1 << 20

class SegmentConverter(BaseConverter):
    """One path segment without ':' (``{eid}:cancel`` is a route of its own)."""

    regex = "[^/:]+"


ROUTES = Map([
    Rule("/", endpoint="demo", methods=["GET"]),
    Rule("/health", endpoint="health", methods=["GET"]),
    Rule("/v1/openapi.json", endpoint="openapi", methods=["GET"]),
    Rule("/viewer", endpoint="viewer", methods=["GET"]),
    Rule("/viewer/<name>", endpoint="viewer", methods=["GET"]),
    Rule("/v1/sessions", endpoint="sessions", methods=["GET", "POST"]),
    Rule("/v1/webhook-secret", endpoint="webhook_secret", methods=["GET"]),
    Rule("/v1/sessions/<sid>", endpoint="session", methods=["GET", "DELETE"]),
    Rule("/v1/sessions/<sid>/resources", endpoint="resources", methods=["GET", "POST"]),
    Rule("/v1/sessions/<sid>/resources/<path:name>", endpoint="resource", methods=["PUT"]),
    Rule("/v1/sessions/<sid>/uploads", endpoint="uploads", methods=["POST"]),
    Rule("/v1/sessions/<sid>/uploads/<upload>", endpoint="upload", methods=["POST"]),
    Rule("/v1/sessions/<sid>/executions", endpoint="executions", methods=["GET", "POST"]),
    Rule("/v1/sessions/<sid>/executions/<seg:eid>", endpoint="execution", methods=["GET"]),
    Rule("/v1/sessions/<sid>/executions/<seg:eid>:cancel", endpoint="cancel",
         methods=["POST"]),
    Rule("/v1/sessions/<sid>/executions/<seg:eid>:extend", endpoint="extend",
         methods=["POST"]),
    Rule("/v1/sessions/<sid>/executions/<eid>/result", endpoint="result", methods=["GET"]),
    Rule("/v1/sessions/<sid>/executions/<eid>/preview", endpoint="preview", methods=["GET"]),
    Rule("/v1/sessions/<sid>/executions/<eid>/events", endpoint="events", methods=["GET"]),
    Rule("/v1/sessions/<sid>/executions/<eid>/tasks", endpoint="tasks", methods=["GET"]),
    Rule("/v1/sessions/<sid>/executions/<eid>/tasks/<node>", endpoint="task",
         methods=["GET"]),
    Rule("/v1/sessions/<sid>/executions/<eid>/frames", endpoint="frames", methods=["GET"]),
    Rule("/v1/sessions/<sid>/executions/<eid>/video", endpoint="video", methods=["GET"]),
], strict_slashes=False, merge_slashes=False, redirect_defaults=False,
    converters={"seg": SegmentConverter})


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json",
                    headers=headers)


def error_response(e: errors.FrancineError) -> Response:
    return json_response({"error": {"code": e.code, "message": e.message}}, e.status,
                         e.headers or None)


def match(method: str, path: str) -> tuple[str, dict]:
    """The endpoint and arguments of a request; every miss is the API's own error (no
    routing redirect, no HTML page)."""
    adapter = ROUTES.bind("localhost", path_info=path, url_scheme="http")
    try:
        return adapter.match(path, method=method)
    except WzMethodNotAllowed as e:
        allow = ", ".join(sorted(e.valid_methods or ()))
        raise errors.MethodNotAllowed(f"{method} is not allowed on this path",
                                      headers={"Allow": allow}) from None
    except HTTPException:  # not found, or a redirect that merging slashes would ask for
        raise errors.NotFound("no such route") from None


class Api:
    def __init__(self, adapters: Adapters, defer_waits: bool = False):
        self.ad = adapters
        self.renders = readiness.for_bus(adapters.bus)  # 503 until renders can be taken
        self.previews = Previews(adapters)
        self.defer_waits = defer_waits
        self.waits = WaitSlots(adapters.settings.max_blocking_waits)
        self.key_locks = KeyLocks()

    # --- plumbing ----------------------------------------------------------------------
    def handle(self, request) -> Response:
        try:
            endpoint, args = match(request.method, request.path)
            return getattr(self, f"route_{endpoint}")(request, **args)
        except errors.FrancineError as e:
            if e.status >= 500:
                log.exception("request failed: %s %s", request.method, request.path)
            return error_response(e)
        except Exception:
            log.exception("unexpected error: %s %s", request.method, request.path)
            return error_response(errors.FrancineError("internal error"))

    def user(self, request) -> str:
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise errors.Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        user = self.ad.store.get_user(users.key_hash(key.strip()))
        if user is None:
            raise errors.Unauthorized("unknown API key")
        request.environ[requestlog.USER] = user["id"]
        return user["id"]

    def json_body(self, request, allow_empty: bool = False) -> dict:
        limit = self.ad.settings.max_json_bytes
        if request.content_length is not None and request.content_length > limit:
            raise errors.too_large("a JSON body", limit)
        raw = request.stream.read(limit + 1)
        if len(raw) > limit:
            raise errors.too_large("a JSON body", limit)
        if not raw and allow_empty:
            return {}
        if request.mimetype != "application/json":
            raise errors.UnsupportedMediaType(
                f"expected Content-Type application/json, got {request.mimetype or 'none'!r}")
        try:
            body = json.loads(raw, parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            raise errors.BadRequest(f"malformed JSON: {e}", "malformed_json") from e
        if not isinstance(body, dict):
            raise errors.BadRequest("the body must be a JSON object", "malformed_json")
        schemas.check_json(body)
        return body

    def own_session(self, user: str, sid: str) -> Session:
        session = self.ad.store.get_session(sid) if ID.match(sid) else None
        # Another user's session answers exactly like a missing one.
        if session is None or session.user != user or session.deleting:
            raise errors.NotFound(f"session {sid} not found")
        return session

    def own_execution(self, user: str, sid: str, eid: str) -> Execution:
        self.own_session(user, sid)
        ex = self.ad.store.execution(sid, eid) if ID.match(eid) else None
        if ex is None:
            raise errors.NotFound(f"execution {eid} not found")
        return ex

    # --- public routes -----------------------------------------------------------------
    def route_health(self, request) -> Response:
        return json_response({"status": "ok"})

    def route_viewer(self, request, name: str = "index.html") -> Response:
        data, mimetype = viewer.asset(name)
        return Response(data, 200, mimetype=mimetype, headers=viewer.headers())

    def route_openapi(self, request) -> Response:
        return json_response(openapi_document())

    def route_demo(self, request) -> Response:
        """The original Francine's demo: the default ao scene through the pipeline.

        Anyone may call it, so it must not be a way to spend the farm: each ``parallel``
        renders once (an idempotency key per value, in one shared session of a user no
        key leads to), and later calls answer with the stored image.
        """
        parallel = request.args.get("parallel", "4")
        if not (parallel.isascii() and parallel.isdigit() and 1 <= int(parallel) <= 64):
            raise errors.BadRequest("parallel: an integer in 1..64", "invalid_field")
        if self.ad.store.get_session(DEMO_SESSION) is None:
            with contextlib.suppress(errors.Conflict):  # another instance was first
                self.create_session(DEMO_USER, {"producer": "ao"}, sid=DEMO_SESSION)
        body = {"parallel": int(parallel)}
        self.renders.check()
        ex, _ = executions.start(self.ad, DEMO_USER, DEMO_SESSION, body, f"demo-{parallel}")
        if ex.status in (Status.FAILED, Status.CANCELLED):
            # One retry per failed render, shared by every caller.
            ex, _ = executions.start(self.ad, DEMO_USER, DEMO_SESSION, body,
                                     f"demo-{parallel}-after-{ex.id}")
        return self.blocking_result(ex, DEMO_USER)

    # --- sessions ----------------------------------------------------------------------
    def create_session(self, user: str, body: dict, sid: str | None = None) -> dict:
        body = schemas.parse("session", body)
        name, fmt, scene = body["producer"], body["format"], body["scene"]
        try:
            producer = producers.get(name)
            scene = producer.validate(producer.default_scene() if scene is None else scene, None)
        except SceneError as e:
            raise executions.scene_error(e) from e
        sid = sid or uuid.uuid4().hex[:20]
        session = Session(sid, user, name, fmt, scene, created=now(), updated=now())
        self.ad.store.create_session(session)
        return self.session_view(session, [])

    @staticmethod
    def session_view(session: Session, resources: list[dict]) -> dict:
        return {"id": session.id, "producer": session.producer, "format": session.format,
                "scene": session.scene, "created": views.rfc3339(session.created),
                "updated": views.rfc3339(session.updated),
                "resources": [resource_view(r) for r in resources]}

    def route_sessions(self, request) -> Response:
        user = self.user(request)
        if request.method == "POST":
            return json_response(self.create_session(user, self.json_body(request)), 201)
        return json_response({"sessions": [
            self.session_view(s, []) for s in self.ad.store.list_sessions(user)
            if not s.deleting]})

    def route_session(self, request, sid: str) -> Response:
        user = self.user(request)
        session = self.own_session(user, sid)
        if request.method == "DELETE":
            # Stop what is running first, so that no worker writes after the deletion.
            for ex in self.ad.store.list_executions(sid):
                if not ex.final:
                    executions.end(self.ad, ex, Status.CANCELLED)
            # From now on the session answers 404 (own_session), whatever is left of it.
            self.ad.store.mark_session_deleting(sid)
            response = Response(status=204)
            # The objects and documents go after the answer (served by server.py; inline
            # under functions-framework); what an interrupted deletion leaves behind,
            # retention.collect removes.
            response.after = lambda: (self.ad.blobs.delete_session(sid),
                                      self.ad.store.delete_session(sid))
            if not self.defer_waits:
                response.after()
            return response
        return json_response(self.session_view(session, self.ad.store.list_resources(sid)))

    # --- resources ---------------------------------------------------------------------
    def route_resources(self, request, sid: str) -> Response:
        user = self.user(request)
        session = self.own_session(user, sid)
        if request.method == "POST":
            body = schemas.parse("attach", self.json_body(request))
            name = resources.check_name(body["name"])
            s = self.ad.settings
            room = quotas.storage_room(self.ad, user)
            limit = min(s.max_resource_bytes, room)
            own = frozenset({s.resources_bucket, s.partials_bucket, s.results_bucket})
            with over_quota_if(limit < s.max_resource_bytes, self.ad, user):
                chunks = self.ad.outside.open_url(
                    body["url"], limit, own,
                    users.allowed_buckets(self.ad.store, request_key(request)))
                record, created = resources.attach(self.ad, sid, session.producer, name,
                                                   chunks, limit)
            return json_response(resource_view(record), 201 if created else 200)
        return json_response({"resources": [
            resource_view(r) for r in self.ad.store.list_resources(sid)]})

    def route_resource(self, request, sid: str, name: str) -> Response:
        user = self.user(request)
        session = self.own_session(user, sid)
        resources.check_name(name)
        s = self.ad.settings
        limit = min(s.max_upload_bytes, s.max_resource_bytes)
        if request.content_length is not None and request.content_length > limit:
            raise upload_too_large(limit, name)
        room = quotas.storage_room(self.ad, user)
        if request.content_length is not None and request.content_length > room:
            raise quotas.over_storage(quotas.limits(self.ad, user).quota_stored_bytes)
        chunks = iter(lambda: request.stream.read(CHUNK), b"")
        with over_quota_if(room < limit, self.ad, user):
            record, created = resources.attach(self.ad, sid, session.producer, name,
                                               chunks, min(limit, room))
        return json_response(resource_view(record), 201 if created else 200)

    def route_uploads(self, request, sid: str) -> Response:
        """A file larger than a request body: an upload session (``francine.services.uploads``)."""
        self.own_session(self.user(request), sid)
        body = uploads.start(self.ad, sid, self.json_body(request),
                             request.headers.get("Origin"))
        return json_response(body, 201)

    def route_upload(self, request, sid: str, upload: str) -> Response:
        session = self.own_session(self.user(request), sid)
        upload_id, _, verb = upload.partition(":")
        if verb != "finish":
            raise errors.NotFound(f"no route {request.path}")
        record, created = uploads.finish(self.ad, sid, session.producer, upload_id,
                                         self.json_body(request))
        return json_response(resource_view(record), 201 if created else 200)

    # --- executions --------------------------------------------------------------------
    def route_executions(self, request, sid: str) -> Response:
        user = self.user(request)
        self.own_session(user, sid)
        if request.method == "GET":
            return json_response({"executions": [
                views.view(self.ad, ex) for ex in self.ad.store.list_executions(sid)
                if ex.parent is None]})  # an animation's frames are listed by /frames
        body = self.json_body(request, allow_empty=True)
        if body.get("dry_run") is True:  # a price, nothing started (services/quotes.py)
            return json_response(quotes.quote(self.ad, user, sid, body))
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 255:
            raise errors.BadRequest("Idempotency-Key: 1 to 255 characters", "invalid_header")
        self.renders.check()
        ex = self.start(user, sid, body, key)
        if request.args.get("block") in ("1", "true"):
            return self.blocking_result(ex, user)
        location = f"/v1/sessions/{sid}/executions/{ex.id}"
        return json_response(views.view(self.ad, ex), 202, {"Location": location})

    def start(self, user: str, sid: str, body: dict, key: str | None) -> Execution:
        """``executions.start`` under the quotas. Retries of one idempotency key that
        arrive together wait for the first one here rather than contend in Firestore
        transactions; once it is published they read it like any status."""
        admit = quotas.admission(self.ad, user)
        if key is None:
            return executions.start(self.ad, user, sid, body, None, admit=admit)[0]
        eid = executions.execution_id(user, sid, key)
        with self.key_locks.hold(eid):
            ex = self.ad.store.execution(sid, eid)
            if ex is None or not ex.published:
                ex = executions.start(self.ad, user, sid, body, key, admit=admit)[0]
        return ex

    def blocking_result(self, ex: Execution, user: str) -> Response:
        """The image once the execution ends (or its status after the block timeout).
        Served asynchronously (``defer_waits``), the wait itself is left to the server,
        which holds no thread while it waits: the answer is a ``Waiting`` marker."""
        sid, eid = ex.session_id, ex.id
        if not ex.final:
            if self.defer_waits:
                self.waits.acquire(user)
                return Waiting(self, ex, user)
            with self.waits.hold(user):
                ex = executions.wait(self.ad, sid, eid, self.ad.settings.block_timeout_s)
        return self.finish_wait(ex)

    def finish_wait(self, ex: Execution) -> Response:
        sid, eid = ex.session_id, ex.id
        if ex.animation and ex.status == Status.DONE:  # many images: its status says where
            return json_response(views.view(self.ad, ex))
        if ex.status == Status.DONE:
            return self.image_response(ex)
        if ex.final:
            error = ex.error or {}
            raise errors.Conflict(
                f"execution {eid} is {ex.status}: {error.get('message', 'no image')}",
                f"execution_{ex.status}")
        # Still running after the wait: answer like the non-blocking call.
        return json_response(views.view(self.ad, ex), 202,
                             {"Location": f"/v1/sessions/{sid}/executions/{eid}"})

    def image_response(self, ex: Execution) -> Response:
        size = uploads.result_size(self.ad, ex.result)
        if size is not None and size > self.ad.settings.max_response_bytes:
            return Response(status=307, headers={
                "Location": uploads.result_url(self.ad, ex.result),
                "X-Francine-Execution": ex.id})
        data = self.ad.blobs.get_result(ex.result)
        return Response(data, 200, mimetype=imaging.FORMATS[ex.format],
                        headers={"X-Francine-Execution": ex.id})

    def route_cancel(self, request, sid: str, eid: str) -> Response:
        user = self.user(request)
        ex = self.own_execution(user, sid, eid)
        if ex.animation:
            animation.cancel(self.ad, ex)  # and its unfinished frames; the finished stay
        elif ex.waved and not ex.final:
            waves.cancel(self.ad, ex)  # and its wave
        elif not ex.final:
            executions.end(self.ad, ex, Status.CANCELLED)
        return json_response(views.view(self.ad, self.ad.store.execution(sid, eid)))

    def route_extend(self, request, sid: str, eid: str) -> Response:
        """More passes on a finished render (``francine.services.waves``)."""
        user = self.user(request)
        ex = self.own_execution(user, sid, eid)
        body = self.json_body(request)
        self.renders.check()
        ex = waves.extend(self.ad, ex, body, admit=quotas.admission(self.ad, user))
        return json_response(views.view(self.ad, ex), 202,
                             {"Location": f"/v1/sessions/{sid}/executions/{eid}"})

    def route_execution(self, request, sid: str, eid: str) -> Response:
        user = self.user(request)
        ex = self.own_execution(user, sid, eid)
        executions.resume_if_stalled(self.ad, ex)
        return json_response(views.view(self.ad, ex))

    def route_tasks(self, request, sid: str, eid: str) -> Response:
        ex = self.tasks_of(request, sid, eid)
        if ex.waved and "status" in request.args:
            if "wave" in request.args:
                raise errors.BadRequest("wave: the tasks with a failed pass are listed over "
                                        "every wave", "invalid_parameter")
            # Its own tasks' (an extended render's) and its waves'.
            listed = [tasklist.list_tasks(self.ad, w, request.args)["tasks"]
                      for w in [ex, *waves.waves_of(self.ad, ex)]]
            return json_response({"tasks": [t for tasks in listed for t in tasks]})
        listed = self.wave_of(request, ex)
        page = tasklist.list_tasks(self.ad, listed, request.args)
        if "next" in page:  # which frame and wave it lists, to ask for the next page of
            page.update(frame=listed.frame, wave=listed.wave or 0)
        return json_response(page)

    def route_task(self, request, sid: str, eid: str, node: str) -> Response:
        ex = self.wave_of(request, self.tasks_of(request, sid, eid))
        return json_response(tasklist.task_detail(self.ad, ex, node, request.args))

    def tasks_of(self, request, sid: str, eid: str) -> Execution:
        """The execution whose tasks a request lists: an animation's frame (``?frame=N``,
        by default the frame rendering first, else the last), else the execution."""
        ex = self.own_execution(self.user(request), sid, eid)
        if not ex.animation:
            return self.frame_of(request, ex)  # 400 for a frame of a single image
        frames = self.ad.store.frames_of(sid, eid)
        return self.frame_of(request, ex, default=views.frame_counts(ex, frames)
                             ["rendering"] or ex.frames[-1])

    def wave_of(self, request, ex: Execution) -> Execution:
        """``?wave=K`` of a render in waves (its own tasks: 0; by default its last
        wave); a render that is not in waves is its own wave 0."""
        value = request.args.get("wave")
        last = (ex.waves or 0) if ex.waved else 0
        if value is not None and not (value.isascii() and value.isdigit()
                                      and int(value) <= last):
            raise errors.BadRequest(f"wave: a number from 0 to {last}", "invalid_parameter")
        wave = last if value is None else int(value)
        if wave == 0:
            return ex
        found = [w for w in waves.waves_of(self.ad, ex) if w.wave == wave]
        if not found:
            raise errors.Conflict(f"wave {wave} of execution {ex.id} has not started",
                                  "not_ready")
        return found[0]

    @staticmethod
    def requested_frame(request) -> int | None:
        value = request.args.get("frame")
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise errors.BadRequest("frame: a frame number", "invalid_parameter") from None

    def frame_of(self, request, ex: Execution, default: int | None = None) -> Execution:
        """The execution that ``?frame=N`` names: the frame of an animation (the frame
        ``default`` without the parameter); a single image has no frames."""
        frame = self.requested_frame(request)
        if not ex.animation:
            if frame is not None:
                raise errors.BadRequest(f"frame: execution {ex.id} renders one image, not "
                                        "frames", "invalid_parameter")
            return ex
        if frame is None:
            if default is None:
                raise errors.BadRequest(f"frame: execution {ex.id} renders "
                                        f"{len(ex.frames or ())} frames: name one (?frame=N) "
                                        "or list them (GET .../frames)", "frame_required")
            frame = default
        found = animation.frame_execution(self.ad, ex, frame)
        if found is None:
            raise errors.Conflict(f"frame {frame} of execution {ex.id} has not started",
                                  "not_ready")
        return found

    def route_result(self, request, sid: str, eid: str) -> Response:
        user = self.user(request)
        ex = self.own_execution(user, sid, eid)
        ex = self.frame_of(request, ex, default=self.only_frame(ex))
        if ex.status != Status.DONE:
            what = f"frame {ex.frame}" if ex.parent else f"execution {eid}"
            raise errors.Conflict(f"{what} is {views.view(self.ad, ex)['status']}"
                                  ", not done", "not_ready")
        return self.image_response(ex)

    @staticmethod
    def only_frame(ex: Execution) -> int | None:
        return ex.frames[0] if ex.frames and len(ex.frames) == 1 else None

    def route_frames(self, request, sid: str, eid: str) -> Response:
        ex = self.own_execution(self.user(request), sid, eid)
        if not ex.animation:
            raise errors.NotFound(f"execution {eid} renders one image, not frames")
        return json_response({"id": eid, "frames": views.frame_list(self.ad, ex)})

    def route_video(self, request, sid: str, eid: str) -> Response:
        ex = self.own_execution(self.user(request), sid, eid)
        if not ex.animation:
            raise errors.NotFound(f"execution {eid} renders one image, not frames")
        name = video.of_animation(self.ad, ex)
        size = uploads.result_size(self.ad, name)
        if size is not None and size > self.ad.settings.max_response_bytes:
            return Response(status=307, headers={
                "Location": uploads.result_url(self.ad, name), "X-Francine-Execution": eid})
        return Response(self.ad.blobs.get_result(name), 200, mimetype="video/mp4",
                        headers={"X-Francine-Execution": eid, "Cache-Control": "no-store"})

    def route_preview(self, request, sid: str, eid: str) -> Response:
        ex = self.own_execution(self.user(request), sid, eid)
        if ex.animation:
            ex = self.frame_of(request, ex, default=self.preview_frame(ex))
        p = self.previews.get(ex)
        return Response(p.png, 200, mimetype="image/png", headers={
            "X-Francine-Passes": str(p.passes), "X-Francine-Final": "1" if p.final else "0",
            "Cache-Control": "no-store"})

    def preview_frame(self, ex: Execution) -> int:
        """Without ``?frame``: the frame rendering first once it has a finished task,
        else the last finished frame."""
        frames = self.ad.store.frames_of(ex.session_id, ex.id)  # one read of them
        rendering = views.frame_counts(ex, frames)["rendering"]
        done = [f for f in frames if f.status == Status.DONE and f.result]
        current = next((f for f in frames if f.frame == rendering), None)
        if current is not None and (not done or self.ad.store.count_tasks(
                ex.session_id, current.id, "done")):
            return current.frame
        return done[-1].frame if done else (rendering or ex.frames[0])

    def route_webhook_secret(self, request) -> Response:
        return json_response({"secret": self.ad.store.webhook_secret(self.user(request)),
                              "header": events.SIGNATURE_HEADER,
                              "scheme": "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'>"})

    def route_events(self, request, sid: str, eid: str) -> Response:
        self.own_execution(self.user(request), sid, eid)
        return Response(events.stream(self.ad, sid, eid, self.ad.settings.events_max_s),
                        200, mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


class WaitSlots:
    """Per-user count of requests waiting for a render (``?block=1``, ``GET /``): over
    the cap, a 429 rather than one more waiter."""

    def __init__(self, cap: int):
        self.cap, self.held, self.lock = cap, {}, threading.Lock()

    def acquire(self, user: str) -> None:
        with self.lock:
            if self.held.get(user, 0) >= self.cap:
                raise errors.TooManyRequests(
                    f"at most {self.cap} blocking waits at once: poll the execution instead",
                    5, "too_many_waits")
            self.held[user] = self.held.get(user, 0) + 1

    def release(self, user: str) -> None:
        with self.lock:
            self.held[user] -= 1
            if not self.held[user]:
                del self.held[user]

    @contextlib.contextmanager
    def hold(self, user: str):
        self.acquire(user)
        try:
            yield
        finally:
            self.release(user)


class KeyLocks:
    """One lock per key while anyone holds it (idempotency keys being started)."""

    def __init__(self):
        self.locks: dict[str, list] = {}
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, key: str):
        with self.lock:
            entry = self.locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self.lock:
                entry[1] -= 1
                if not entry[1]:
                    del self.locks[key]


class Waiting(Response):
    """What ``blocking_result`` answers when the server does the waiting; the server
    calls ``release`` when the wait ends."""

    def __init__(self, api: Api, ex: Execution, user: str):
        super().__init__(status=202)
        self.api, self.execution, self.user = api, ex, user

    def release(self) -> None:
        self.api.waits.release(self.user)


@contextlib.contextmanager
def over_quota_if(quota_binds: bool, ad: Adapters, user: str):
    """A body cut off by the storage quota (not by a size limit) is a 429."""
    try:
        yield
    except errors.PayloadTooLarge as e:
        if quota_binds:
            raise quotas.over_storage(quotas.limits(ad, user).quota_stored_bytes) from e
        raise


def upload_too_large(limit: int, name: str) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(
        f"resource {name!r}: uploads are limited to {limit} bytes; attach larger files by "
        "gs:// URL (POST /v1/sessions/{sid}/resources)")


def request_key(request) -> str:
    return request.headers.get("Authorization", "").partition(" ")[2].strip()


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def resource_view(record: dict) -> dict:
    return {"name": record["name"], "sha256": record["sha256"], "size": record["size"]}
