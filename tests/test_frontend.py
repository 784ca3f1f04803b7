"""The local stack's front end for the render workers (francine/tools/local/frontend.py): a
push goes to an idle worker, waits for one or is refused with 429 when all are busy,
and skips a worker that is not listening. Workers here are small HTTP servers that
hold each request until the test lets it go."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from francine.tools.local.frontend import FrontEnd
from francine.tools.local.processes import free_port


class Worker:
    def __init__(self, name: str):
        self.name, self.gate, self.seen = name, threading.Event(), []
        worker = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                worker.seen.append((body, self.headers.get("X-Cloud-Trace-Context")))
                worker.gate.wait(10)
                out = worker.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self):
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def workers():
    ws = [Worker("w0"), Worker("w1")]
    yield ws
    for w in ws:
        w.close()


def front(urls, refuse=False):
    f = FrontEnd(urls, refuse_when_busy=refuse)
    return f, f.start()


def test_each_push_goes_to_an_idle_worker_with_its_body_and_trace(workers):
    f, url = front([w.url for w in workers])
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            sent = [pool.submit(requests.post, url, data=f"task {i}".encode(), timeout=20,
                                headers={"X-Cloud-Trace-Context": f"t{i}/1"})
                    for i in range(2)]
            deadline = time.monotonic() + 5
            while not all(w.seen for w in workers):  # both busy at once: one each
                assert time.monotonic() < deadline
                time.sleep(0.01)
            for w in workers:
                w.gate.set()
            answered = sorted(r.result().text for r in sent)
        assert answered == ["w0", "w1"]
        assert sorted(b for w in workers for b, _ in w.seen) == [b"task 0", b"task 1"]
        assert sorted(t for w in workers for _, t in w.seen) == ["t0/1", "t1/1"]
    finally:
        f.stop()


def test_all_busy_refuses_with_429_or_waits(workers):
    f, url = front([workers[0].url], refuse=True)
    g, wait_url = front([workers[1].url])
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            first = pool.submit(requests.post, url, data=b"a", timeout=20)
            while not workers[0].seen:
                time.sleep(0.01)
            refused = requests.post(url, data=b"b", timeout=20)
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "busy"
            held = pool.submit(requests.post, wait_url, data=b"c", timeout=20)
            while not workers[1].seen:
                time.sleep(0.01)
            waiting = pool.submit(requests.post, wait_url, data=b"d", timeout=20)
            time.sleep(0.3)
            assert not waiting.done()  # waits for the busy worker, not refused
            workers[0].gate.set()
            workers[1].gate.set()
            assert first.result().text == "w0"
            assert held.result().text == "w1" and waiting.result().text == "w1"
        assert [b for b, _ in workers[1].seen] == [b"c", b"d"]
    finally:
        f.stop()
        g.stop()


def test_a_worker_that_is_not_listening_is_skipped_and_none_is_503(workers):
    dead = f"http://127.0.0.1:{free_port()}/"
    workers[0].gate.set()
    f, url = front([dead, workers[0].url])
    g, none_url = front([dead])
    try:
        for _ in range(3):
            assert requests.post(url, data=b"x", timeout=20).text == "w0"
        answer = requests.post(none_url, data=b"x", timeout=20)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "unavailable"
        health = requests.get(url + "health", timeout=5).json()  # its own, never waits
        assert health == {"status": "ok", "workers": 2, "busy": 0, "refused": 0}
    finally:
        f.stop()
        g.stop()
