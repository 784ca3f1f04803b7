"""Execution status events: the api's Server-Sent Events stream and the
``execution-events`` Pub/Sub topic.

**SSE** (``GET .../events``): one ``status`` event at once, another whenever the
status, the progress or the preview changes, a last one when the execution is final;
then the stream ends. The api polls cheaply (the execution document and one or two task
counts, every ``POLL_S``, then ``POLL_LATER_S`` once a task finished) and builds the
full status only when one of them moved.
A comment line every ``HEARTBEAT_S`` keeps proxies from closing an idle stream. A
stream lives at most ``Settings.events_max_s`` (under Cloud Run's request timeout,
which bounds every response, streamed or not); it then ends with an ``event: timeout``
and the client reconnects (``EventSource`` does so by itself).

**Topic** (``Settings.status_topic``, ``francine-execution-events`` by default): a message when
an execution is created and when it ends, with the attribute ``type`` =
``execution_status`` and the JSON body ``STATUS_MESSAGE_SCHEMA`` (the status of
docs/api.md plus the owner's user id and the schema version).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterator

from francine.domain.records import FINAL, Execution
from francine.ports import Adapters
from francine.services import views

log = logging.getLogger("francine.events")

STATUS = "execution_status"
#: Polling period until the first task finished (the first preview is what a viewer
#: waits for), and after it: each status built costs the store a dozen queries.
POLL_S = 0.25
POLL_LATER_S = 0.5
HEARTBEAT_S = 5.0

#: JSON Schema of a message on the execution-events topic.
STATUS_MESSAGE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Francine execution status event",
    "type": "object",
    "required": ["schema", "user", "execution"],
    "properties": {
        "schema": {"const": 1},
        "user": {"type": "string", "description": "id of the execution's owner"},
        "execution": {
            "type": "object", "description": "the execution status of the REST API",
            "required": ["id", "session_id", "status", "progress", "tasks", "time", "error"],
            "properties": {
                "id": {"type": "string"}, "session_id": {"type": "string"},
                "status": {"enum": ["queued", "running", "reducing", "done", "failed",
                                    "cancelled"]},
                "progress": {"type": "number", "minimum": 0, "maximum": 1},
                "tasks": {"type": "object"}, "time": {"type": "object"},
                "error": {"type": ["object", "null"]},
            },
        },
        "advance": {"const": True, "description": "a render in waves that is not over: "
                    "its next wave is to be started (Francine's reducer does)"},
    },
}


NO_TASKS = {"failed": 0, "running": 0, "done": 0,
            "produce": {"fetch": 0.0, "work": 0.0, "cpu": 0.0, "n": 0},
            "reduce": {"fetch": 0.0, "work": 0.0, "cpu": 0.0, "n": 0}}


def status_message(ex: Execution, view: dict) -> dict:
    message = {"schema": 1, "user": ex.user, "execution": view}
    if ex.waved and not ex.final:  # the reducer, which receives it, starts its next wave
        message["advance"] = True
    return message


def publish_status(ad, ex: Execution | None, created: bool = False) -> None:
    """Announce an execution's status on the topic. Never raises: the topic is for
    other systems, and a render must not fail because it could not be announced."""
    try:
        if created and not ex.animation:
            # Announced as queued without counting tasks (none has run yet).
            ex = dataclasses.replace(ex, summary=views.summarize(ex, NO_TASKS, None))
        view = views.view(ad, ex)
        ad.bus.publish_status(status_message(ex, view))
    except Exception:
        log.exception("could not publish the status of execution %s", getattr(ex, "id", None))


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _changing(view: dict) -> dict:
    """The parts of a status whose change is worth an event (not the running clock)."""
    return {k: v for k, v in view.items() if k != "time"}


def stream(ad, sid: str, eid: str, max_s: float, poll_s: float = POLL_S,
           heartbeat_s: float = HEARTBEAT_S) -> Iterator[str]:
    """The SSE stream of one execution (the caller has checked that it may see it)."""
    started = last_sent = time.monotonic()
    yield "retry: 1000\n\n"
    sent: dict | None = None
    seen: tuple | None = None
    try:
        while True:
            ex = ad.store.execution(sid, eid)
            if ex is None:  # deleted while watched
                yield sse("gone", {"id": eid, "session_id": sid})
                return
            if ex.animation:
                yield from _animation_stream(ad, ex, started, max_s, poll_s, heartbeat_s)
                return
            final = ex.final
            done = ad.store.count_tasks(sid, eid, "done")
            # Before the first finished task, a task starting is the news (queued →
            # running); after it, every change of status or progress moves ``done``.
            running = ad.store.count_tasks(sid, eid, "running") if not done else None
            # A render in waves progresses in its waves' tasks: its status is read
            # each time (and sent when it changed).
            mark = (ex.status, done, running) if not ex.waved else (time.monotonic(),)
            if mark != seen or final:
                seen = mark
                view = views.view(ad, ex)
                if sent is None or _changing(view) != sent or final:
                    sent = _changing(view)
                    last_sent = time.monotonic()
                    yield sse("status", view)
            if final:
                return
            line, last_sent, over = _idle(eid, started, max_s, last_sent, heartbeat_s)
            if line:
                yield line
            if over:
                return
            time.sleep(poll_s if not done else max(poll_s, POLL_LATER_S))
    except GeneratorExit:  # the client went away
        raise
    except Exception as e:
        log.exception("event stream of %s/%s failed", sid, eid)
        with contextlib.suppress(Exception):
            yield sse("error", {"code": "internal", "message": str(e)[:200]})


def _idle(eid: str, started: float, max_s: float, last_sent: float,
          heartbeat_s: float) -> tuple[str | None, float, bool]:
    """What a stream says while it waits: (a timeout or a keep-alive line or None, the
    time of the last line sent, whether the stream ends: past its ``max_s``)."""
    now = time.monotonic()
    if now - started > max_s:
        return sse("timeout", {"id": eid, "reconnect": True}), last_sent, True
    if now - last_sent > heartbeat_s:
        return ": keep-alive\n\n", now, False
    return None, last_sent, False


def _animation_stream(ad, ex: Execution, started: float, max_s: float, poll_s: float,
                      heartbeat_s: float) -> Iterator[str]:
    """An animation's stream: a ``frame`` event as each frame ends (its number, status
    and result), a ``status`` event when the animation's status or progress moved."""
    sid, eid = ex.session_id, ex.id
    announced: set[int] = set()
    sent: dict | None = None
    last_sent = time.monotonic()
    first = True
    while True:
        if not first:
            ex = ad.store.execution(sid, eid)
            if ex is None:
                yield sse("gone", {"id": eid, "session_id": sid})
                return
        first = False
        frames = ad.store.frames_of(sid, eid)  # one read of the frames per look
        for item in views.frame_list(ad, ex, frames):
            if item["status"] in FINAL and item.get("finished") \
                    and item["frame"] not in announced:
                announced.add(item["frame"])
                last_sent = time.monotonic()
                yield sse("frame", {"id": eid, **item})
        view = views.animation_view(ad, ex, frames)
        if sent is None or _changing(view) != sent or ex.final:
            sent = _changing(view)
            last_sent = time.monotonic()
            yield sse("status", view)
        if ex.final:
            return
        line, last_sent, over = _idle(eid, started, max_s, last_sent, heartbeat_s)
        if line:
            yield line
        if over:
            return
        time.sleep(max(poll_s, POLL_LATER_S))


# --- webhooks ----------------------------------------------------------------------------
#
# An execution created with ``notify_url`` gets one POST of its final status. The final
# status message on the topic is pushed (subscription ``<status topic>-notify``) to the
# reducer, which delivers it; a failed delivery raises, so Pub/Sub retries it with its
# back-off, until ``notify_deadline_s`` after the execution ended. Each POST carries
#   X-Francine-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
#   X-Francine-Delivery: <execution id>   (the same on every retry: receivers dedupe)
# under the user's secret (GET /v1/webhook-secret). The URL is checked like an external
# resource's, at creation and again at each delivery (DNS may have changed): https only,
# public addresses only, no redirects.

SIGNATURE_HEADER = "X-Francine-Signature"
DELIVERY_HEADER = "X-Francine-Delivery"
NOTIFY_TIMEOUT_S = 10.0


def _insecure_hosts(settings) -> set[str]:
    return {h.strip() for h in settings.notify_insecure_hosts.split(",") if h.strip()}


def check_notify_url(url, ad: Adapters) -> str | None:
    """The execution's ``notify_url`` if it may be called; BadRequest naming the field."""
    from francine.base import errors
    from francine.domain import urls

    if url is None:
        return None
    if not isinstance(url, str) or len(url) > 2048:
        raise errors.BadRequest("notify_url: an https:// URL (at most 2048 characters)",
                                "invalid_field")
    if _insecure(url, ad.settings):
        return url
    try:
        u = urls.parse(url)  # the one reading of the URL, as for external resources
        if u.scheme != "https":
            raise urls.bad_url("an https:// URL")
        ad.outside.resolve_public(u.host, u.port)
    except errors.BadRequest as e:
        raise errors.BadRequest(e.message.replace("url:", "notify_url:", 1),
                                "invalid_field") from None
    return url


def _insecure(url: str, settings) -> bool:
    """A plain-http URL to a host the local stack's tests allow (never in the cloud)."""
    from urllib.parse import urlparse

    hosts = _insecure_hosts(settings)
    if not hosts or not url.startswith("http://"):
        return False
    return urlparse(url).hostname in hosts


def sign(secret: str, body: bytes, timestamp: int) -> str:
    import hashlib
    import hmac

    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def notify(ad, message) -> str:
    """Deliver the webhook of a final status message; raises TransientError to be
    retried. Returns what happened (for the log)."""
    import datetime as dt

    from francine.base import errors
    from francine.base.clock import now

    execution = message.payload.get("execution") or {}
    if execution.get("status") not in FINAL:
        return "ignored: not a final status"
    sid, eid = execution.get("session_id"), execution.get("id")
    if not (isinstance(sid, str) and isinstance(eid, str)):
        return "ignored: status without execution"
    ex = ad.store.execution(sid, eid)
    if ex is None or not ex.notify_url:
        return "no webhook"
    finished = ex.finished or now()
    if now() - finished > dt.timedelta(seconds=ad.settings.notify_deadline_s):
        log.error("webhook of %s/%s abandoned: no success within %.0f s", sid, eid,
                  ad.settings.notify_deadline_s)
        return "abandoned: deadline passed"
    try:
        url = check_notify_url(ex.notify_url, ad)
    except errors.BadRequest as e:
        return f"abandoned: {e.message}"
    body = json.dumps(execution, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", DELIVERY_HEADER: eid,
               SIGNATURE_HEADER: sign(ad.store.webhook_secret(ex.user), body,
                                      int(time.time())),
               "User-Agent": "francine-webhook/1"}
    status = ad.outside.post(url, body, headers, NOTIFY_TIMEOUT_S,
                             insecure=_insecure(url, ad.settings))
    if not 200 <= status < 300:
        raise errors.TransientError(f"webhook of {eid}: {url} answered {status}")
    return f"webhook delivered ({status})"
