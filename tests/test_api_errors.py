"""No request content makes a 5xx: every answer to odd paths, methods, bodies, numbers,
strings and URLs is a 4xx with the JSON error body of docs/api.md."""

from __future__ import annotations

import socket

import pytest
import requests
from test_api_contract import assert_error, call


def raw(stack, request: bytes) -> tuple[int, dict, bytes]:
    """Send bytes as they are (no client-side normalization of the path)."""
    host, port = stack.info["api_url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize("path", [
    "//v1/sessions", "/v1//sessions", "/v1/sessions//", "///nope", "/v1/sessions%0A",
    "/%0A", "/v1/sessions/%0Aabc", "/v1/sessions/abc%00", "/v1/sessions/%ZZ",
    "/v1/sessions/%FF%FE", "/v1/sessions/..%2F..%2Fetc", "/nope", "/v1/sessions/x/y/z/w",
    "/v1/sessions/abc/executions/def:nope", "/v1/sessions/abc/resources/",
])
def test_odd_paths_are_json_errors(stack, client, path):
    key = client.session.headers["Authorization"]
    status, headers, body = raw(stack, (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\n"
        "Connection: close\r\n\r\n").encode())
    assert status < 500 and status not in (301, 302, 307, 308), (path, status, body)
    assert headers["content-type"].startswith("application/json"), (path, headers)
    if status >= 400:
        assert set(requests.models.complexjson.loads(body)["error"]) == {"code", "message"}


@pytest.mark.parametrize("method,path", [
    ("DELETE", "/v1/sessions"), ("PUT", "/v1/sessions"), ("PATCH", "/health"),
    ("POST", "/health"), ("GET", "/v1/sessions/abc/resources/a.obj"),
    ("DELETE", "/v1/openapi.json"),
])
def test_405_carries_allow(client, method, path):
    resp = call(client, method, path)
    assert_error(resp, 405, "method_not_allowed")
    allow = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert allow and method not in allow


BIG = 2 ** 63


def deep(n: int) -> dict:
    value: dict = {"x": 1}
    for _ in range(n):
        value = {"a": value}
    return value


@pytest.mark.parametrize("body", [
    b'{"producer": "ao", "scene": {"width": 9223372036854775808}}',
    b'{"producer": "ao", "scene": {"spheres": [{"center": [18446744073709551616, 0, 0], '
    b'"radius": 1}]}}',
    b'{"producer": "ao", "scene": {"width": -9223372036854775809}}',
    b'{"producer": "ao", "scene": {"\\ud800": 1}}',
    b'{"producer": "ao\\udfff"}',
    b'{"\\ud800": 1}',
    b'{"producer": "ao", "scene": {"width": NaN}}',
    b'{"producer": "ao", "scene": {"width": Infinity}}',
    b'{"producer": "ao", "scene": {"width": 1e999}}',
    b'{"producer": "ao", "format": null}',
    b'{"producer": null}',
    b'{"producer": ["ao"]}',
    b'{"producer": "ao", "scene": []}',
    b'{"producer": "ao", "scene": {"width": true}}',
    b'{"producer": "ao", "scene": {"": 1}}',
    b'{"producer": "ao", "scene": {"__name__": 1}}',
    b'[' * 5000 + b']' * 5000,
    b'{"a":' * 100 + b'1' + b'}' * 100,
    b'{"producer": "ao", "scene": {"width": 1' + b'0' * 5000 + b'}}',
    b'\xff\xfe{}',
    b'',
    b'null',
])
def test_odd_session_bodies_are_400(client, body):
    resp = call(client, "POST", "/v1/sessions", data=body,
                headers={"Content-Type": "application/json"})
    assert_error(resp, 400)
    assert client.request("GET", "/v1/sessions").json()["sessions"] == []


@pytest.mark.parametrize("body", [
    {"update": {"width": BIG}},
    {"update": {"spheres": [{"center": [0, 0, BIG], "radius": 1}]}},
    {"update": {"nested": {"deeper": [BIG]}}},
    {"update": {"x": -BIG - 1}},
    {"update": {"__key__": 1}},
    {"update": {"": {}}},
    {"parallel": BIG},
    {"parallel": 2.0},
    {"parallel": "2"},
    {"tile": BIG},
    {"update": deep(30)},
])
def test_odd_execution_bodies_are_400_and_store_nothing(client, body):
    sid = client.create_session("ao", {"width": 16, "height": 16})["id"]
    assert_error(call(client, "POST", f"/v1/sessions/{sid}/executions", json=body), 400)
    assert client.request("GET", f"/v1/sessions/{sid}/executions").json()["executions"] == []
    assert client.request("GET", f"/v1/sessions/{sid}").json()["scene"]["width"] == 16


def test_lone_surrogate_in_an_update_key_is_400(client):
    sid = client.create_session("ao", {"width": 16, "height": 16})["id"]
    resp = call(client, "POST", f"/v1/sessions/{sid}/executions",
                data=b'{"update": {"\\udc80": 1}}', headers={"Content-Type": "application/json"})
    assert_error(resp, 400)


@pytest.mark.parametrize("url", [
    "https://xn--/a", "https://a..b/a", "https://" + "a" * 300 + "/a", "https://\u00e9\u0301.com/a",
    "https://[::1/a", "https://[zz::1]/a", "https://[1:2:3:4:5:6:7:8:9]/a",
    "https://a.com:99999/a", "https://a.com:0/a", "https://a.com:-1/a", "https://a.com:1e3/a",
    "gs://UPPER/a", "gs://a/x", "gs://" + "b" * 300 + "/x", "gs://goog..x/a", "gs://-bucket/a",
    "gs://bucket/" + "o" * 2000, "gs://bucket/\ud800", "gs://bucket/.", "https://\ud800/",
    "gs://bucket_/a", "gs://b\u00e9cket/a",
])
def test_odd_urls_are_4xx(client, url):
    sid = client.create_session("ao")["id"]
    resp = call(client, "POST", f"/v1/sessions/{sid}/resources",
                data=requests.models.complexjson.dumps({"name": "a.obj", "url": url}),
                headers={"Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500, (url, resp.text)
    assert_error(resp, resp.status_code)


def test_odd_headers_and_queries(client, stack):
    sid = client.create_session("ao", {"width": 16, "height": 16})["id"]
    for headers in [{"Idempotency-Key": "x" * 300}, {"Idempotency-Key": ""},
                    {"Content-Type": "text/plain"}]:
        resp = call(client, "POST", f"/v1/sessions/{sid}/executions", data=b"{}",
                    headers={"Content-Type": "application/json", **headers})
        assert 400 <= resp.status_code < 500, (headers, resp.text)
    for q in ["parallel=0", "parallel=65", "parallel=%F0", "parallel=1e3", "parallel=-1",
              "parallel=" + "9" * 100]:
        assert_error(requests.get(f"{stack.info['api_url']}/?{q}", timeout=10), 400)


def test_liveness_is_health_not_healthz(stack):
    # Cloud Run's front end answers paths ending in z itself: only /health is ours.
    resp = requests.get(stack.info["api_url"] + "/health", timeout=10)
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    assert_error(requests.get(stack.info["api_url"] + "/healthz", timeout=10), 404)
