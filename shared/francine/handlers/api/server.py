"""The api as an ASGI application (served by uvicorn): what costs nothing is decided on
the event loop, so that no slow or hostile client can hold a thread.

- ``/health`` answers on the loop itself.
- The route, the API key and the declared body size are checked before a byte of the
  body is read: a refused request (``401``, ``404``, ``405``, ``413``) is answered at
  once and its connection closed, its body never read.
- An accepted body is read on the loop into a spooled file (memory up to 1 MiB, disk
  beyond), cut off at the route's limit and when the client stalls; only then does the
  request reach a thread, with its body complete.
- ``?block=1`` and ``GET /`` wait on the loop: the thread that started the render is
  free again while the wait polls the execution.

The routes themselves are ``Api.handle`` of app.py, unchanged: the same code serves a
Flask request under functions-framework.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable

from werkzeug.wrappers import Request, Response

from francine.base import errors
from francine.domain.records import Execution
from francine.handlers.api import requestlog
from francine.handlers.api.app import (
    Api,
    Waiting,
    error_response,
    json_response,
    match,
    upload_too_large,
)

log = logging.getLogger("francine.api")

PUBLIC = {"health", "openapi", "demo", "viewer"}
#: Requests of one API key in the api's threads at once, reads and writes apart; more
#: wait on the event loop, so that one client's flood of writes leaves threads to
#: everyone else and to its own reads.
PER_KEY_THREADS = 6
#: A client that sends no byte of its body for this long is cut off.
BODY_IDLE_S = 30.0
SPOOL = 1 << 20


class AsgiApi:
    def __init__(self, make_api: Callable[[], Api], threads: int = 32):
        self._make_api = make_api
        self._api: Api | None = None
        self._lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, "francine-api")
        self.per_key: dict[str, list] = {}  # key -> [semaphore, users]

    def api(self) -> Api:
        with self._lock:
            if self._api is None:
                self._api = self._make_api()
                self._api.defer_waits = True
            return self._api

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            collector = None
            while (await receive())["type"] != "lifespan.shutdown":
                collector = asyncio.get_running_loop().create_task(self.collect_garbage())
                await send({"type": "lifespan.startup.complete"})
            if collector is not None:
                collector.cancel()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        try:
            response, body_read = await self.respond(scope, receive)
        except Exception:
            log.exception("unexpected error")
            response, body_read = error_response(errors.FrancineError("internal error")), False
        # For a stream (events), the time to its start; the log line comes first.
        requestlog.log_request(_Logged(scope, response), response.status_code,
                               time.perf_counter() - t0)
        await self.send(send, response, close=not body_read)
        after = getattr(response, "after", None)
        if after is not None:
            try:
                await self.run(after)
            except Exception:
                log.exception("work after the answer failed")

    async def collect_garbage(self) -> None:
        """retention.collect every gc_interval_s (the cloud has lifecycle rules)."""
        from francine.base.config import Settings
        from francine.services import retention

        interval = Settings.from_env().gc_interval_s
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                api = await self.run(self.api)
                done = await self.run(retention.collect, api.ad)
                log.info("garbage collected: %s", done)
            except Exception:
                log.exception("garbage collection failed")

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def respond(self, scope, receive) -> tuple[Response, bool]:
        method, path = scope["method"], scope["path"]
        user = None
        try:
            endpoint, args = match(method, path)
            if endpoint == "health":
                return json_response({"status": "ok"}), False
            api = self.api() if self._api is not None else await self.run(self.api)
            headers = _headers(scope)
            if endpoint not in PUBLIC:
                auth = _AuthOnly(headers)
                await self.run(api.user, auth)
                user = auth.environ.get(requestlog.USER)
            limit = _body_limit(api, endpoint, method)
            length = headers.get("content-length")
            if length is not None:
                if not (length.isascii() and length.isdigit()):
                    raise errors.BadRequest("Content-Length: not a number", "invalid_header")
                if int(length) > limit:
                    raise (upload_too_large(limit, args.get("name", "")) if endpoint == "resource"
                           else errors.too_large("this request body", limit))
            body = await _read_body(receive, limit)
        except errors.FrancineError as e:
            response = error_response(e)
            response.francine_user = user
            return response, False
        try:
            request = Request(_environ(scope, headers, body))
            lane = "read" if method in ("GET", "HEAD") else "write"
            async with self.turn(f"{lane} {headers.get('authorization', '')}"):
                response = await self.run(api.handle, request)
        finally:
            body.close()
        if isinstance(response, Waiting):
            response = await self.wait(api, response)
        response.francine_user = request.environ.get(requestlog.USER, user)
        return response, True

    @contextlib.asynccontextmanager
    async def turn(self, key: str):
        entry = self.per_key.setdefault(key, [asyncio.Semaphore(PER_KEY_THREADS), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self.per_key[key]

    async def wait(self, api: Api, waiting: Waiting) -> Response:
        sid, eid = waiting.execution.session_id, waiting.execution.id
        deadline = time.monotonic() + api.ad.settings.block_timeout_s
        poll_s = 0.1
        try:
            while True:
                ex = await self.run(api.ad.store.execution, sid, eid)
                if ex is None:
                    return error_response(errors.NotFound(f"execution {eid} not found"))
                if ex.final or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(poll_s)
                poll_s = min(1.0, poll_s * 1.25)
        except errors.FrancineError as e:
            return error_response(e)
        finally:
            waiting.release()
        return await self.run(_finish, api, ex)

    async def send(self, send, response: Response, close: bool) -> None:
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in response.headers.items() if k.lower() != "content-length"]
        if close:
            headers.append((b"connection", b"close"))
        if response.is_streamed:
            # A stream (Server-Sent Events): each chunk is produced on the api's threads
            # (it may wait for a change) and sent as it comes.
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": headers})
            chunks = iter(response.response)
            try:
                while (chunk := await self.run(next, chunks, None)) is not None:
                    data = chunk.encode() if isinstance(chunk, str) else chunk
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            except OSError:  # the client went away
                pass
            finally:
                close_stream = getattr(response.response, "close", None)
                if close_stream is not None:
                    await self.run(close_stream)
            await send({"type": "http.response.body", "body": b""})
            return
        body = response.get_data()
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _finish(api: Api, ex: Execution) -> Response:
    try:
        return api.finish_wait(ex)
    except errors.FrancineError as e:
        return error_response(e)


class _Logged:
    """What the request log reads of a request."""

    def __init__(self, scope, response: Response):
        self.method, self.path = scope["method"], scope["path"]
        self.environ = {requestlog.USER: getattr(response, "francine_user", None)}
        trace = dict(scope.get("headers") or ()).get(b"x-cloud-trace-context")
        self.headers = {"X-Cloud-Trace-Context": trace.decode("latin-1")} if trace else {}


class _AuthOnly:
    """What ``Api.user`` reads of a request: its headers."""

    def __init__(self, headers: dict[str, str]):
        self.headers = headers
        self.environ: dict = {}  # Api.user leaves the user id here (for the request log)


def _headers(scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        out[k.decode("latin-1").lower()] = v.decode("latin-1")
    return _Caseless(out)


class _Caseless(dict):
    def get(self, key, default=None):
        return super().get(key.lower(), default)


def _body_limit(api: Api, endpoint: str, method: str) -> int:
    s = api.ad.settings
    if endpoint == "resource":
        return min(s.max_upload_bytes, s.max_resource_bytes)
    return s.max_json_bytes


async def _read_body(receive, limit: int):
    body = tempfile.SpooledTemporaryFile(SPOOL)  # noqa: SIM115 - closed by the caller
    size = 0
    try:
        while True:
            try:
                message = await asyncio.wait_for(receive(), BODY_IDLE_S)
            except TimeoutError:
                raise errors.RequestTimeout(
                    f"no byte of the body for {BODY_IDLE_S:.0f} s") from None
            if message["type"] == "http.disconnect":
                raise errors.BadRequest("the client went away", "disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise errors.too_large("this request body", limit)
            body.write(chunk)
            if not message.get("more_body"):
                break
    except BaseException:
        body.close()
        raise
    body.seek(0)
    return body


def _environ(scope, headers: dict[str, str], body) -> dict:
    server = scope.get("server") or ("localhost", 80)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": scope["path"].encode("utf-8", "surrogateescape").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]), "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.input": body, "wsgi.errors": None, "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for k, v in headers.items():
        key = k.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ[key] = v
        elif key not in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
            environ["HTTP_" + key] = v
    # The body is read whole already (de-chunked): its length is what it holds.
    environ["CONTENT_LENGTH"] = str(body.seek(0, 2))
    body.seek(0)
    return environ
