"""notify_url webhooks against the local stack: signed with the user's secret, retried
after a failure, refused for URLs that an external resource could not have."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time

import pytest

from francine.tools.client import ApiError


@pytest.fixture
def receiver():
    """An HTTP endpoint on 127.0.0.1 that fails its first request and records all."""
    received: list[tuple[dict, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(503 if len(received) == 1 else 204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_webhook_is_signed_and_retried(client, receiver):
    url, received = receiver
    secret = client.request("GET", "/v1/webhook-secret").json()
    assert secret["header"] == "X-Francine-Signature"
    assert client.request("GET", "/v1/webhook-secret").json() == secret  # stable
    sid = client.create_session("ao", {"width": 16, "height": 16, "nao_samples": 1})["id"]
    eid = client.request("POST", f"/v1/sessions/{sid}/executions",
                         json={"parallel": 1, "notify_url": url}).json()["id"]
    assert client.wait(sid, eid)["status"] == "done"
    deadline = time.monotonic() + 60
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(received) == 2, "the failed delivery was not retried"
    for headers, body in received:
        assert headers["X-Francine-Delivery"] == eid
        t, v1 = (part.split("=", 1)[1] for part in headers["X-Francine-Signature"].split(","))
        expected = hmac.new(secret["secret"].encode(), f"{t}.".encode() + body,
                            hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, expected)
        assert abs(time.time() - int(t)) < 120
        status = json.loads(body)
        assert status["id"] == eid and status["status"] == "done"
    assert received[0][1] == received[1][1]
    time.sleep(2)
    assert len(received) == 2  # delivered: no more


@pytest.mark.parametrize("url, words", [
    ("http://example.com/hook", "https"),
    ("https://10.1.2.3/hook", "public"),
    ("https://localhost/hook", "public"),
    ("https://user:pw@example.com/hook", "credentials"),
    (42, "notify_url"),
])
def test_notify_url_is_guarded(client, url, words):
    sid = client.create_session("ao", {"width": 16, "height": 16, "nao_samples": 1})["id"]
    with pytest.raises(ApiError) as e:
        client.request("POST", f"/v1/sessions/{sid}/executions",
                       json={"parallel": 1, "notify_url": url})
    assert e.value.status == 400
    assert "notify_url" in e.value.message and words in e.value.message
    assert client.executions(sid) == []
