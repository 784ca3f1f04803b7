"""The OpenAPI 3 document of the API, with each producer's scene schema."""

from __future__ import annotations

import functools

from francine.domain import imaging
from francine.services import events, resources
from francine.services import schemas as request_schemas

#: A task as the tasks routes list it.
TASK = {"type": "object", "properties": {
    "node": {"type": "string"}, "kind": {"type": "string"}, "status": {"type": "string"},
    "error": {"type": ["string", "null"]},
    "instance": {"type": ["string", "null"], "description": "the worker that last took it"},
    **{k: {"type": ["string", "null"], "format": "date-time"} for k in ("started", "finished")},
    **{k: {"type": ["number", "null"]} for k in ("fetch_s", "work_s", "cpu_s")},
    **{k: {"type": "integer"} for k in ("failures", "replaced", "attempts")}}}
ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


RETRY = {"Retry-After": {"description": "seconds to wait before trying again",
                         "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
LOCATION = {"Location": {"description": "the execution's status",
                         "schema": {"type": "string"}}}


def _resp(description: str, schema: dict | None = None, content: dict | None = None,
          headers: dict | None = None) -> dict:
    r: dict = {"description": description}
    if headers:
        r["headers"] = headers
    if schema is not None:
        r["content"] = _json(schema)
    if content is not None:
        r["content"] = content
    return r


#: A render refused while the render service does not exist yet (a first deployment).
UNDEPLOYED = _resp("the render service does not exist yet (render_service_missing)", ERROR,
                   headers=RETRY)

ERRORS = {code: _resp(text, ERROR) for code, text in {
    "400": "malformed JSON, a wrong field or an invalid scene",
    "401": "missing or unknown API key",
    "404": "no such session or execution (or another user's)",
    "413": "body too large",
    "415": "unsupported media type",
}.items()}

IMAGES = {mime: {"schema": {"type": "string", "format": "binary"}}
          for mime in imaging.FORMATS.values()}


UPLOAD_REQUEST = {"type": "object", "required": ["name", "size", "sha256"],
                  "additionalProperties": False, "properties": {
                      "name": {"type": "string"}, "size": {"type": "integer", "minimum": 0},
                      "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}
UPLOAD = {"type": "object", "properties": {
    "id": {"type": "string"}, "upload_url": {"type": "string"},
    "method": {"type": "string"}, "finish": {"type": "string"},
    "name": {"type": "string"}, "size": {"type": "integer"}, "sha256": {"type": "string"}}}


def _op(summary: str, responses: dict, body: dict | None = None, params: list | None = None,
        secured: bool = True) -> dict:
    merged = dict(responses)
    for code, generic in (ERRORS if secured else {}).items():
        # A route's own word on a status (what its 400 or 404 also means there) is added.
        merged[code] = generic if code not in responses else {
            **generic, "description": f"{generic['description']}; "
                                      f"{responses[code]['description']}"}
    op: dict = {"summary": summary, "responses": merged}
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if params:
        op["parameters"] = params
    if not secured:
        op["security"] = []
    return op


def _path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _op_id(method: str, path: str) -> str:
    words = path.strip("/").replace("{", "").replace("}", "").replace(":", "/").split("/")
    return "_".join([method, *[w for w in words if w and w != "v1"]]) if path != "/" \
        else f"{method}_demo"


def _link(paths: dict) -> None:
    """Operation ids, and links from what creates a session or an execution to what
    reads it (clients and fuzzers follow them)."""
    for path, ops in paths.items():
        for method, op in ops.items():
            op["operationId"] = _op_id(method, path)
    session = {"sid": "$response.body#/id"}
    paths["/v1/sessions"]["post"]["responses"]["201"]["links"] = {
        _op_id(m, p): {"operationId": _op_id(m, p), "parameters": session}
        for p, m in [("/v1/sessions/{sid}", "get"), ("/v1/sessions/{sid}/resources", "get"),
                     ("/v1/sessions/{sid}/resources", "post"),
                     ("/v1/sessions/{sid}/resources/{name}", "put"),
                     ("/v1/sessions/{sid}/executions", "get"),
                     ("/v1/sessions/{sid}/executions", "post"),
                     ("/v1/sessions/{sid}", "delete")]}
    execution = {"sid": "$request.path.sid", "eid": "$response.body#/id"}
    paths["/v1/sessions/{sid}/executions"]["post"]["responses"]["202"]["links"] = {
        _op_id(m, p): {"operationId": _op_id(m, p), "parameters": execution}
        for p, m in [("/v1/sessions/{sid}/executions/{eid}", "get"),
                     ("/v1/sessions/{sid}/executions/{eid}/result", "get"),
                     ("/v1/sessions/{sid}/executions/{eid}:cancel", "post"),
                     ("/v1/sessions/{sid}/executions/{eid}:extend", "post")]}


@functools.cache
def openapi_document() -> dict:
    sid, eid = _path_param("sid"), _path_param("eid")
    schemas = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        "Resource": {"type": "object", "properties": {
            "name": {"type": "string"}, "sha256": {"type": "string"},
            "size": {"type": "integer"}}},
        "Session": {"type": "object", "properties": {
            "id": {"type": "string"}, "producer": {"type": "string"},
            "format": {"type": "string"}, "scene": {"type": "object"},
            "created": {"type": "string", "format": "date-time"},
            "updated": {"type": "string", "format": "date-time"},
            "resources": {"type": "array", "items": {"$ref": "#/components/schemas/Resource"}}}},
        "Execution": {"type": "object", "properties": {
            "id": {"type": "string"}, "session_id": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "running", "reducing", "done",
                                                  "failed", "cancelled"]},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "tasks": {"type": "object", "description": (
                "retries: deliveries taken again (a worker died, a message came twice, a "
                "stalled execution was re-driven); replaced: failed passes rendered again "
                "with a fresh seed; speculative: copies of stragglers; redriven: "
                "reductions started again"), "properties": {
                k: {"type": "integer"} for k in ("total", "done", "failed", "running",
                                                 "retries", "replaced", "speculative",
                                                 "redriven")}},
            "time": {"type": "object", "description": (
                "created/finished: RFC 3339. fetching, producing, reducing: seconds that "
                "tasks spent fetching inputs, rendering and reducing, summed over tasks. "
                "cpu: CPU-seconds of all tasks (the basis of a cost estimate). total: "
                "wall seconds from creation to the end (or now). first_task_after: wall "
                "seconds from creation to the first task starting; image_after_last_task: "
                "from the last production task finishing to the final image."),
                "properties": {
                    "created": {"type": "string", "format": "date-time"},
                    "finished": {"type": ["string", "null"], "format": "date-time"},
                    **{k: {"type": ["number", "null"]} for k in (
                        "fetching", "producing", "reducing", "total", "cpu",
                        "first_task_after", "image_after_last_task")}}},
            "error": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}}}]},
            "frames": {"type": "object", "description": (
                "an animation (a request with frames): total, done and failed frames, "
                "which failed, the first frame not ended yet (rendering; null once all "
                "have), and how many frames render at once (window). tasks and time "
                "are summed over the frames"), "properties": {
                **{k: {"type": "integer"} for k in ("total", "done", "failed", "window")},
                "failed_frames": {"type": "array", "items": {"type": "integer"}},
                "rendering": {"type": ["integer", "null"]}}},
            "passes": {"type": "integer", "minimum": 0, "description": (
                "the most sample passes any tile of the image holds: a plain render's "
                "parallel; with until or after :extend, what its waves reached")},
            "noise": {"type": ["number", "null"], "minimum": 0, "description": (
                "the estimated relative standard error of the image's mean, 99th "
                "percentile over the pixels that are not near-black (null until known)")},
            "stopped": {"type": ["string", "null"],
                        "enum": ["noise", "max_passes", "budget", "failed", "cancelled",
                                 None], "description": (
                "why a render in waves ended: its noise target was met, it reached "
                "max_passes, or a spending cap (done with the passes it finished); an "
                "extension whose wave failed (its error in error) or was cancelled: done "
                "with the passes it had")},
            "waves": {"type": "integer", "minimum": 0,
                      "description": "waves rendered beyond the execution's own tasks"},
            "spent": {"type": "object", "description": "what the render has cost so far",
                      "properties": {"cpu_seconds": {"type": "number"},
                                     "usd": {"type": "number"}}},
            "seed": {"type": ["integer", "null"],
                     "description": "the request's seed (null: from the execution's id)"},
            "until": {"anyOf": [{"$ref": "#/components/schemas/Until"}, {"type": "null"}],
                      "description": "the request's noise target (null: a fixed number of "
                                     "passes)"},
            **{k: {"type": ["number", "null"], "description": "the request's spending cap "
                   "(null: none)"} for k in ("max_cost_usd", "max_cpu_seconds")},
            "animation": {"type": "string", "description": "a frame's status (on the "
                          "status topic): the animation it belongs to"},
            "frame": {"type": "integer", "description": "a frame's status: its frame"}}},
        "Frame": {"type": "object", "properties": {
            "frame": {"type": "integer"},
            "status": {"type": "string", "enum": ["pending", "running", "done", "failed",
                                                  "cancelled"]},
            "result": {"type": ["string", "null"], "description": "GET it for the image"},
            "preview": {"type": ["string", "null"]},
            "finished": {"type": "string", "format": "date-time"},
            "error": {"type": "object"}}},
        **request_schemas.components(),
    }
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    wave = {"name": "wave", "in": "query", "schema": {"type": "integer", "minimum": 0},
            "description": "of a render in waves (a noise target, a cap, an extension): "
                           "the wave whose tasks are meant, 0 for its own (by default its "
                           "last)"}
    frame = {"name": "frame", "in": "query", "schema": {"type": "integer"},
             "description": "an animation's frame (required for an animation of more "
                            "than one frame; refused for a single image)"}
    paths = {
        "/": {"get": _op(
            "the default ao scene rendered through the pipeline (demo); rendered once per "
            "value of parallel, then served from storage",
            {"200": _resp("the image", content={"image/png": IMAGES["image/png"]}),
             "400": _resp("parallel out of range", ERROR),
             "409": _resp("the demo render failed", ERROR),
             "429": _resp("too many demo renders waited on at once", ERROR, headers=RETRY)},
            params=[{"name": "parallel", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 64, "default": 4}}],
            secured=False)},
        "/health": {"get": _op("liveness (Cloud Run's front end keeps paths ending in z "
                               "for itself)", {"200": _resp("alive")}, secured=False)},
        "/v1/openapi.json": {"get": _op("this document", {"200": _resp("OpenAPI 3")},
                                        secured=False)},
        "/v1/webhook-secret": {"get": _op(
            "the caller's secret for verifying notify_url webhooks (made at first use)",
            {"200": _resp("the secret", {"type": "object", "properties": {
                "secret": {"type": "string"}, "header": {"type": "string"},
                "scheme": {"type": "string"}}})})},
        "/v1/sessions": {
            "post": _op("create a session", {"201": _resp("the session", ref("Session"))},
                        _json(ref("SessionRequest"))),
            "get": _op("the caller's sessions", {"200": _resp("sessions", {
                "type": "object", "properties": {"sessions": {
                    "type": "array", "items": ref("Session")}}})})},
        "/v1/sessions/{sid}": {
            "get": _op("one session, its scene with all updates applied, its resources",
                       {"200": _resp("the session", ref("Session"))}, params=[sid]),
            "delete": _op("delete the session, its executions and stored images",
                          {"204": _resp("deleted")}, params=[sid])},
        "/v1/sessions/{sid}/resources": {
            "get": _op("the session's resources", {"200": _resp("resources", {
                "type": "object", "properties": {"resources": {
                    "type": "array", "items": ref("Resource")}}})}, params=[sid]),
            "post": _op("attach an external file, fetched once, hashed and stored", {
                "201": _resp("attached", ref("Resource")),
                "200": _resp("the same bytes were attached already", ref("Resource")),
                "403": _resp("gs://: the bucket is not allowed for this user", ERROR),
                "409": _resp("the name holds other bytes", ERROR),
                "429": _resp("over the stored-bytes quota", ERROR, headers=RETRY)},
                _json(ref("AttachRequest")),
                params=[sid])},
        "/v1/sessions/{sid}/resources/{name}": {
            "put": _op("attach a file (immutable, identified by its SHA-256)", {
                "201": _resp("attached", ref("Resource")),
                "200": _resp("the same bytes were attached already", ref("Resource")),
                "409": _resp("the name holds other bytes", ERROR),
                "429": _resp("over the stored-bytes quota", ERROR, headers=RETRY)},
                {"application/octet-stream": {"schema": {"type": "string",
                                                          "format": "binary"}}},
                params=[sid, {"name": "name", "in": "path", "required": True,
                              "schema": {"type": "string",
                                         "pattern": resources.NAME.pattern}}])},
        "/v1/sessions/{sid}/executions": {
            "post": _op("start a render", {
                "202": _resp("the execution", ref("Execution")),
                "200": _resp("with ?block=1: the image (an animation: its status); with "
                             "dry_run: the estimate, and nothing started",
                             content={**IMAGES, "application/json": {
                                 "schema": {"type": "object"}}}),
                "400": _resp("a render that cannot be planned (tile_too_large, "
                             "too_many_tasks, image_too_large), over the daily budget "
                             "(over_budget) or whose estimate alone exceeds its spending "
                             "cap (over_cap)", ERROR),
                "409": _resp("with ?block=1: the execution failed or was cancelled", ERROR),
                "429": _resp("over a quota (executions or tasks in flight, CPU-seconds "
                             "per day, concurrent blocking waits)", ERROR, headers=RETRY),
                "503": UNDEPLOYED},
                _json(ref("ExecutionRequest")), params=[sid, {
                    "name": "block", "in": "query", "schema": {"type": "string",
                                                               "enum": ["1", "true"]}}, {
                    "name": "Idempotency-Key", "in": "header", "schema": {"type": "string"},
                    "description": "a retried POST with the same key returns the first "
                                   "execution instead of starting a second one"}]),
            "get": _op("the session's executions", {"200": _resp("executions", {
                "type": "object", "properties": {"executions": {
                    "type": "array", "items": ref("Execution")}}})}, params=[sid])},
        "/v1/sessions/{sid}/executions/{eid}": {
            "get": _op("status", {"200": _resp("the execution", ref("Execution"))},
                       params=[sid, eid])},
        "/v1/sessions/{sid}/executions/{eid}/result": {
            "get": _op("the final image (of one frame of an animation)", {
                "200": _resp("the image", content=IMAGES),
                "307": _resp("an image larger than a response can carry: a short-lived URL "
                             "to it in Location (follow it)"),
                "400": _resp("frame missing (an animation) or given (a single image)",
                             ERROR),
                "404": _resp("not a frame of this animation", ERROR),
                "409": _resp("not done", ERROR)}, params=[sid, eid, frame])},
        "/v1/sessions/{sid}/executions/{eid}/frames": {
            "get": _op("an animation's frames, in order, each with its status and, once "
                       "done, its image's URL", {
                           "200": _resp("the frames", {"type": "object", "properties": {
                               "id": {"type": "string"},
                               "frames": {"type": "array", "items": ref("Frame")}}}),
                           "404": _resp("not an animation", ERROR)}, params=[sid, eid])},
        "/v1/sessions/{sid}/executions/{eid}/video": {
            "get": _op("an animation's preview video: its frames finished so far, in "
                       "order, as an H.264 MP4 (yuv420p) at the scene's frame rate; made "
                       "again only when frames were added", {
                           "200": _resp("the video", content={"video/mp4": {
                               "schema": {"type": "string", "format": "binary"}}}),
                           "307": _resp("a video larger than a response can carry: a "
                                        "short-lived URL to it in Location"),
                           "404": _resp("not an animation, or no frame finished yet",
                                        ERROR)}, params=[sid, eid])},
        "/v1/sessions/{sid}/uploads": {
            "post": _op("open an upload session for a file larger than a request body: "
                        "send its bytes to upload_url (PUT, or the Cloud Storage resumable "
                        "protocol in chunks), then POST to finish with the same fields",
                        {"201": _resp("where to send the bytes", UPLOAD)},
                        _json(UPLOAD_REQUEST), params=[sid])},
        "/v1/sessions/{sid}/uploads/{upload}:finish": {
            "post": _op("verify the uploaded bytes (size, SHA-256) and attach them",
                        {"201": _resp("attached", ref("Resource")),
                         "200": _resp("the same bytes were attached already",
                                      ref("Resource")),
                         "400": _resp("the bytes differ from what was declared", ERROR)},
                        _json(UPLOAD_REQUEST),
                        params=[sid, {"name": "upload", "in": "path", "required": True,
                                      "schema": {"type": "string"}}])},
        "/v1/sessions/{sid}/executions/{eid}/preview": {
            "get": _op(
                "the newest intermediate image, assembled over the whole frame from the "
                "highest finished node of each region (black where nothing is rendered "
                "yet); the final image once done. Always PNG. Built on demand from what "
                "the pipeline stores anyway: watching adds no work to the render",
                {"200": _resp("the image; header X-Francine-Passes: the fewest sample "
                              "passes any tile holds (0 while some tile is black); "
                              "X-Francine-Final: 1 for the final image",
                              content={"image/png": IMAGES["image/png"]}),
                 "400": _resp("frame given for a single image", ERROR),
                 "404": _resp("not a frame of this animation", ERROR),
                 "409": _resp("no task has finished yet", ERROR)}, params=[sid, eid, frame])},
        "/v1/sessions/{sid}/executions/{eid}/tasks": {
            "get": _op(
                "the execution's tasks: with status=failed, every production task with a "
                "failed pass and its errors (each failed pass is replaced by a new one with "
                "a fresh seed until failures reach 10% of the passes, at least 1; then the "
                "execution fails); without status, every task a page at a time in the "
                "order of its node's name (next: the after of the next page, null after "
                "the last)",
                {"200": _resp("the tasks", {"type": "object", "properties": {
                    "tasks": {"type": "array", "items": TASK},
                    "next": {"type": ["string", "null"]},
                    "frame": {"type": ["integer", "null"],
                              "description": "the frame listed (an animation's)"},
                    "wave": {"type": "integer",
                             "description": "the wave listed (0: the render's own tasks)"}}}),
                 "400": _resp("status not 'failed', limit out of 1..1000, an unknown "
                              "parameter, a wave the render does not have, or a frame of "
                              "a single image", ERROR),
                 "404": _resp("not a frame of this animation", ERROR)},
                params=[sid, eid, frame, wave,
                        {"name": "status", "in": "query",
                         "schema": {"type": "string", "enum": ["failed"]}},
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                        {"name": "after", "in": "query", "schema": {"type": "string"},
                         "description": "the node after which the page starts"}])},
        "/v1/sessions/{sid}/executions/{eid}/tasks/{node}": {
            "get": _op(
                "one task, with the lines its worker or reducer logged while it worked on "
                "it (log: the last 12)",
                {"200": _resp("the task", {**TASK, "properties": {
                    **TASK["properties"], "log": {"type": "array",
                                                  "items": {"type": "string"}}}}),
                 "400": _resp("a wave the render does not have, or a frame of a single "
                              "image", ERROR),
                 "404": _resp("no such task (or frame)", ERROR)},
                params=[sid, eid, {"name": "node", "in": "path", "required": True,
                                   "schema": {"type": "string"}}, frame, wave])},
        "/v1/sessions/{sid}/executions/{eid}/events": {
            "get": _op(
                "Server-Sent Events: an event 'status' (data: the Execution) at once, on "
                "every change of status, progress or preview, and a last one when the "
                "execution is final; then the stream ends. An animation's stream also has "
                "an event 'frame' as each frame ends (data: the Frame). A stream lives at most "
                "FRANCINE_EVENTS_MAX_S seconds (under Cloud Run's request timeout) and then "
                "ends with an event 'timeout': reconnect. Comment lines keep it alive.",
                {"200": _resp("the stream", content={"text/event-stream": {
                    "schema": {"type": "string"}}})}, params=[sid, eid])},
        "/viewer": {"get": _op(
            "the web viewer (HTML); it asks for the API key in the page, never in the URL",
            {"200": _resp("the page", content={"text/html": {"schema": {"type": "string"}}})},
            secured=False)},
        "/v1/sessions/{sid}/executions/{eid}:cancel": {
            "post": _op("stop a render; tasks not yet started never run",
                        {"200": _resp("the execution", ref("Execution"))}, params=[sid, eid])},
        "/v1/sessions/{sid}/executions/{eid}:extend": {
            "post": _op(
                "more passes on a done render (not an animation): passes after its last "
                "one, each with its own seed, combined with its finished partials without "
                "rendering those again; the image is the one a single execution of all "
                "the passes with the same seed gives, byte for byte",
                {"202": _resp("the execution, running again", ref("Execution"),
                              headers=LOCATION),
                 "400": _resp("an animation; both or neither of passes and until; more than "
                              "4096 passes in all (invalid_field); the estimate alone over "
                              "a cap (over_cap)", ERROR),
                 "409": _resp("the execution is not done (not_done)", ERROR),
                 "429": _resp("over a quota, as for a new render", ERROR, headers=RETRY),
                 "503": UNDEPLOYED},
                _json(ref("ExtendRequest")), params=[sid, eid])},
    }
    _link(paths)
    # An empty body is an execution with every default.
    paths["/v1/sessions/{sid}/executions"]["post"]["requestBody"]["required"] = False
    return {
        "openapi": "3.1.0",
        "info": {"title": "Francine", "version": "1",
                 "description": "A render farm as a serverless pipeline."},
        "components": {"schemas": schemas, "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer"}}},
        "security": [{"apiKey": []}],
        "paths": paths,
        # Not HTTP: what the api and the reducer publish for other systems.
        "x-execution-events": {
            "description": "Pub/Sub topic (FRANCINE_STATUS_TOPIC, default "
                           "francine-execution-events): a message when an execution is "
                           "created and when it ends, "
                           "attribute type=execution_status, JSON body as below",
            "schema": events.STATUS_MESSAGE_SCHEMA},
    }
