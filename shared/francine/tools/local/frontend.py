"""Cloud Run's front end for the local render workers.

In the cloud a push reaches whichever instance of the render service is idle; when all
of them are busy at max instances, Cloud Run answers 429 and Pub/Sub tries again later.
The local stack feeds its workers from one topic shard each (the Pub/Sub emulator
pushes at most 2 requests at a time per subscription), so without a front end a task
waits for, or is refused by, the one worker of its shard while another one idles.
Every shard's subscription pushes here instead, and the front end hands each push to
an idle worker: it waits for one when all are busy, or, with ``refuse_when_busy``,
answers 429 as Cloud Run does at max instances. A worker that refuses the connection
(dead, being started again) is skipped; when no worker takes the push the answer is
503 and Pub/Sub retries it.
"""

from __future__ import annotations

import http.client
import json
import logging
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("francine.frontend")

#: Headers a push carries that the worker reads.
FORWARDED = ("Content-Type", "X-Cloud-Trace-Context", "traceparent")
#: A worker that refused a connection is not tried again for this long.
DOWN_S = 0.5
#: A push waits at most this long for an idle worker (Pub/Sub's ack deadline is 600 s).
WAIT_S = 300.0


def error(status: int, code: str, message: str) -> tuple[int, str, bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, "application/json", body


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that closed its connection (the emulator drops idle ones) is not an
        error; anything else is logged."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            log.exception("front end: request from %s", client_address)


class FrontEnd:
    def __init__(self, worker_urls: list[str], refuse_when_busy: bool = False):
        self.workers = [urllib.parse.urlsplit(u) for u in worker_urls]
        self.refuse_when_busy = refuse_when_busy
        self.busy = [False] * len(self.workers)
        self.down_until = [0.0] * len(self.workers)
        self.turn = 0
        self.refused = 0  # pushes answered 429
        self.lock = threading.Condition()
        self.server: ThreadingHTTPServer | None = None

    # --- choosing a worker -------------------------------------------------------------
    def take(self, tried: set[int]) -> int | None:
        """An idle worker not tried yet, marked busy; None if there is none (after
        waiting for one, unless refusing when busy)."""
        deadline = time.monotonic() + WAIT_S
        with self.lock:
            while True:
                now = time.monotonic()
                n = len(self.workers)
                for k in range(n):
                    i = (self.turn + k) % n
                    if not self.busy[i] and i not in tried and self.down_until[i] <= now:
                        self.busy[i], self.turn = True, (i + 1) % n
                        return i
                untried_busy = any(self.busy[i] and i not in tried for i in range(n))
                if self.refuse_when_busy or not untried_busy or now >= deadline:
                    return None
                self.lock.wait(min(1.0, deadline - now))

    def release(self, i: int, down: bool = False) -> None:
        with self.lock:
            self.busy[i] = False
            if down:
                self.down_until[i] = time.monotonic() + DOWN_S
            self.lock.notify_all()

    def forward(self, method: str, path: str, body: bytes,
                headers: dict[str, str]) -> tuple[int, str, bytes]:
        """(status, content type, body) of the worker that took the request, or the
        front end's own 429 / 503."""
        tried: set[int] = set()
        while True:
            i = self.take(tried)
            if i is None:
                with self.lock:
                    working = any(self.busy)  # Cloud Run at max instances: 429
                    self.refused += working
                if working:
                    log.info("refused: every render worker is busy (429)")
                    return error(429, "busy", "every render worker is busy")
                return error(503, "unavailable", "no render worker answers")
            tried.add(i)
            w = self.workers[i]
            down = True
            try:
                conn = http.client.HTTPConnection(w.hostname, w.port, timeout=None)
                try:
                    conn.request(method, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    out = resp.status, resp.getheader("Content-Type", ""), resp.read()
                finally:
                    conn.close()
                down = False
            except ConnectionRefusedError:
                continue  # not listening: try another worker
            except (OSError, http.client.HTTPException):
                # It died with the request (a SIGKILL): as Cloud Run, a 503; Pub/Sub
                # delivers the message again.
                return error(503, "unavailable", "the render worker died")
            finally:  # whatever happened, the worker is not left marked busy
                self.release(i, down=down)
            return out

    # --- serving -----------------------------------------------------------------------
    def start(self, port: int = 0) -> str:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - the standard library's name
                length = int(self.headers.get("Content-Length") or 0)
                self.answer("POST", self.rfile.read(length))

            def do_GET(self):  # noqa: N802 - the front end's own health, never waits
                with front.lock:
                    busy = sum(front.busy)
                out = json.dumps({"status": "ok", "workers": len(front.workers),
                                  "busy": busy, "refused": front.refused}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def answer(self, method: str, body: bytes) -> None:
                headers = {h: self.headers[h] for h in FORWARDED if self.headers.get(h)}
                status, kind, out = front.forward(method, self.path, body, headers)
                self.send_response(status)
                self.send_header("Content-Type", kind or "application/octet-stream")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):  # the workers log what they do
                pass

        self.server = Server(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, name="francine-frontend",
                         daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
