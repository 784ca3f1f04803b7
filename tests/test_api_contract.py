"""The REST contract (docs/api.md): authentication, isolation, resources and the
error cases, against the api running on the emulators."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest
import requests

from francine.tools.client import ApiError, Client


def call(client: Client, method: str, path: str, **kwargs) -> requests.Response:
    """A raw request with the client's key (errors are returned, not raised)."""
    headers = {**client.session.headers, **kwargs.pop("headers", {})}
    return requests.request(method, client.api_url + path, headers=headers, timeout=60,
                            **kwargs)


def assert_error(resp: requests.Response, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def test_public_routes(stack):
    assert requests.get(stack.info["api_url"] + "/health", timeout=10).status_code == 200
    doc = requests.get(stack.info["api_url"] + "/v1/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.")
    assert "/v1/sessions/{sid}/executions" in doc["paths"]
    assert "Scene_ao" in doc["components"]["schemas"]


def test_openapi_document_is_valid(stack):
    from openapi_spec_validator import validate

    validate(requests.get(stack.info["api_url"] + "/v1/openapi.json", timeout=10).json())


@pytest.mark.parametrize("auth", [None, "Bearer", "Bearer nope", "Basic abc", "fr_x"])
def test_missing_or_unknown_key_is_401(stack, auth):
    headers = {"Authorization": auth} if auth else {}
    resp = requests.get(stack.info["api_url"] + "/v1/sessions", headers=headers, timeout=10)
    assert_error(resp, 401, "unauthorized")


def test_keys_are_stored_only_as_hashes(client, adapters):
    key = client.session.headers["Authorization"].split()[1]
    assert adapters.store.get_user(key) is None
    assert adapters.store.get_user(hashlib.sha256(key.encode()).hexdigest()) is not None


def test_sessions_crud_and_isolation(client, stack):
    from francine.tools.local.stack import create_user_in

    other = Client(stack.info["api_url"],
                   create_user_in(stack.info["env"], stack.info["project"], "other"))
    mine = client.create_session("ao", {"width": 32, "height": 32})
    assert mine["producer"] == "ao" and mine["format"] == "png"
    assert mine["scene"]["nao_samples"] == 8  # defaults filled in
    theirs = other.create_session("ao")
    assert [s["id"] for s in client.request("GET", "/v1/sessions").json()["sessions"]] \
        == [mine["id"]]
    # another user's session answers exactly like a missing one (with its id swapped)
    missing = "0123456789abcdef0123"
    for method, path in [("GET", ""), ("DELETE", ""), ("GET", "/executions"),
                         ("GET", "/resources"), ("POST", "/executions"),
                         ("PUT", "/resources/a.txt"), ("POST", "/resources")]:
        body = {"name": "a", "url": "gs://b/a"} if path == "/resources" else {}
        answers = [call(client, method, f"/v1/sessions/{sid}{path}",
                        json=body if method == "POST" else None)
                   for sid in (theirs["id"], missing)]
        errs = [assert_error(resp, 404, "not_found") for resp in answers]
        assert errs[0]["message"].replace(theirs["id"], missing) == errs[1]["message"]
    e = other.execute(theirs["id"], update={"width": 16, "height": 16})
    assert_error(call(client, "GET", f"/v1/sessions/{theirs['id']}/executions/{e['id']}"), 404)
    assert_error(call(client, "GET",
                      f"/v1/sessions/{theirs['id']}/executions/{e['id']}/result"), 404)
    assert other.wait(theirs["id"], e["id"], timeout_s=60)["status"] == "done"
    assert other.request("DELETE", f"/v1/sessions/{theirs['id']}").status_code == 204


def test_delete_session_removes_executions_and_images(client, adapters):
    s = client.create_session("ao", {"width": 16, "height": 16, "nao_samples": 1})
    e = client.execute(s["id"], parallel=2)
    assert client.wait(s["id"], e["id"], timeout_s=60)["status"] == "done"
    result = adapters.store.execution(s["id"], e["id"]).result
    assert adapters.blobs.get_result(result)
    resp = call(client, "DELETE", f"/v1/sessions/{s['id']}")
    assert resp.status_code == 204
    assert_error(call(client, "GET", f"/v1/sessions/{s['id']}"), 404)  # at once
    assert_error(call(client, "DELETE", f"/v1/sessions/{s['id']}"), 404)
    assert s["id"] not in [x["id"] for x in client.request("GET", "/v1/sessions").json()[
        "sessions"]]
    # the documents and images go in the background, right after the answer
    deadline = time.monotonic() + 30
    while adapters.store.get_session(s["id"]) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert adapters.store.execution(s["id"], e["id"]) is None
    with pytest.raises(Exception):  # noqa: B017 - NotFound from the storage emulator
        adapters.blobs.get_result(result)


def test_resources_are_content_addressed_and_immutable(client):
    sid = client.create_session("ao")["id"]
    data = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
    resp = call(client, "PUT", f"/v1/sessions/{sid}/resources/meshes/tri.obj", data=data)
    assert resp.status_code == 201
    assert resp.json() == {"name": "meshes/tri.obj", "size": len(data),
                           "sha256": hashlib.sha256(data).hexdigest()}
    again = call(client, "PUT", f"/v1/sessions/{sid}/resources/meshes/tri.obj", data=data)
    assert again.status_code == 200 and again.json() == resp.json()
    conflict = call(client, "PUT", f"/v1/sessions/{sid}/resources/meshes/tri.obj",
                    data=data + b"f 1 3 2\n")
    assert_error(conflict, 409, "resource_immutable")
    listed = client.request("GET", f"/v1/sessions/{sid}/resources").json()["resources"]
    assert listed == [resp.json()]
    session = client.request("GET", f"/v1/sessions/{sid}").json()
    assert session["resources"] == [resp.json()]


# Dot segments are percent-encoded: HTTP clients would resolve them before sending.
@pytest.mark.parametrize("name,shown", [
    ("%2E%2E/escape", "../escape"), ("a/%2E%2E/b", "a/../b"), ("a/%2E/b", "a/./b"),
    ("x" * 600, "x" * 20), ("tab%09name.png", "tab\\tname.png"),
    ("back%5Cslash.png", "back\\\\slash.png")])
def test_bad_resource_names_are_400_naming_the_file(client, name, shown):
    sid = client.create_session("ao")["id"]
    resp = call(client, "PUT", f"/v1/sessions/{sid}/resources/{name}", data=b"x")
    assert_error(resp, 400, "invalid_name")
    assert shown in resp.json()["error"]["message"]
    assert client.request("GET", f"/v1/sessions/{sid}/resources").json()["resources"] == []


@pytest.mark.parametrize("name", [
    "Golden Palace 2, Old Bagan-1k.exr", "textures/basic_file_ñønæščii.blend",
    "semi;colon & 100% #1?.png", "日本語/テクスチャ.png"])
def test_resource_names_are_the_users_file_names(client, name):
    """Spaces, commas, any letter, URL-special characters: quoted by the client, the
    same name comes back."""
    sid = client.create_session("ao")["id"]
    record = client.put_resource(sid, name, b"bytes")
    assert record["name"] == name
    listed = client.request("GET", f"/v1/sessions/{sid}/resources").json()["resources"]
    assert [r["name"] for r in listed] == [name]


@pytest.mark.parametrize("body,field", [
    ({"producer": "nope"}, "producer"),
    ({}, "producer"),
    ({"producer": "ao", "format": "gif"}, "format"),
    ({"producer": "ao", "scene": []}, "scene"),
    ({"producer": "ao", "scene": {"width": -1}}, "scene.width"),
    ({"producer": "ao", "scene": {"width": "wide"}}, "scene.width"),
    ({"producer": "ao", "scene": {"plane": {"point": [0, 0, 0], "normal": [0, 0, 0]}}},
     "scene.plane.normal"),
    ({"producer": "ao", "extra": 1}, "extra"),
])
def test_bad_session_bodies_are_400_naming_the_field(client, body, field):
    err = assert_error(call(client, "POST", "/v1/sessions", json=body), 400)
    assert field in err["message"]


@pytest.mark.parametrize("body,field", [
    ({"parallel": 0}, "parallel"), ({"parallel": "8"}, "parallel"),
    ({"parallel": 1.5}, "parallel"), ({"parallel": 10**9}, "parallel"),
    ({"tile": 1}, "tile"), ({"update": [1]}, "update"), ({"paralel": 2}, "paralel"),
    ({"parallel": 4096, "tile": 8}, "tasks"),
])
def test_bad_execution_bodies_are_400(client, body, field):
    sid = client.create_session("ao")["id"]
    err = assert_error(call(client, "POST", f"/v1/sessions/{sid}/executions", json=body), 400)
    assert field in err["message"]


def test_malformed_json_is_400_and_wrong_media_type_is_415(client):
    assert_error(call(client, "POST", "/v1/sessions", data=b"{not json",
                      headers={"Content-Type": "application/json"}), 400, "malformed_json")
    assert_error(call(client, "POST", "/v1/sessions", data=b"[1, 2]",
                      headers={"Content-Type": "application/json"}), 400, "malformed_json")
    assert_error(call(client, "POST", "/v1/sessions", data=b'{"producer": "ao"}',
                      headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")


def test_too_large_bodies_are_413(client):
    big = b'{"producer": "ao", "scene": {"pad": "' + b"x" * (1 << 20) + b'"}}'
    assert_error(call(client, "POST", "/v1/sessions", data=big,
                      headers={"Content-Type": "application/json"}), 413, "payload_too_large")


def test_too_large_uploads_are_413_and_store_nothing(client):
    from conftest import UPLOAD_LIMIT

    sid = client.create_session("ao")["id"]
    big = b"x" * (UPLOAD_LIMIT + 1)
    assert_error(call(client, "PUT", f"/v1/sessions/{sid}/resources/big.bin", data=big), 413)

    def chunks():  # no Content-Length: the limit must hold while streaming too
        for _ in range(9):
            yield b"y" * (1 << 20)

    assert_error(call(client, "PUT", f"/v1/sessions/{sid}/resources/big.bin", data=chunks()),
                 413)
    assert client.request("GET", f"/v1/sessions/{sid}/resources").json()["resources"] == []
    ok = call(client, "PUT", f"/v1/sessions/{sid}/resources/big.bin", data=big[:UPLOAD_LIMIT])
    assert ok.status_code == 201 and ok.json()["size"] == UPLOAD_LIMIT


def test_unknown_routes_and_methods(client):
    assert_error(call(client, "GET", "/v2/nothing"), 404)
    assert_error(call(client, "PATCH", "/v1/sessions"), 405)
    sid = client.create_session("ao")["id"]
    assert_error(call(client, "POST", f"/v1/sessions/{sid}/executions/x:explode"), 404)


@pytest.mark.parametrize("path", ["/v1/sessions/__x__", "/v1/sessions/__x__/executions",
                                  "/v1/sessions/a.b", "/v1/sessions/" + "a" * 65])
def test_ids_that_cannot_exist_are_404(client, path):
    assert_error(call(client, "GET", path), 404)


def test_hostile_bodies_are_4xx_never_5xx(client, stack):
    deep = b"[" * 100_000 + b"]" * 100_000
    assert_error(call(client, "POST", "/v1/sessions", data=deep,
                      headers={"Content-Type": "application/json"}), 400, "malformed_json")
    for producer, scene in [("ao", {"spheres": [{"center": [10**400, 0, 0], "radius": 1}]}),
                            ("ao", {"width": 10**400}),
                            ("pathtracer", {"camera": {"fov": 10**400}})]:
        assert_error(call(client, "POST", "/v1/sessions",
                          json={"producer": producer, "scene": scene}), 400)
    resp = requests.get(stack.info["api_url"] + "/?parallel=\u00b2", timeout=30)
    assert_error(resp, 400, "invalid_field")
    sid = client.create_session("ao")["id"]
    assert_error(call(client, "GET", f"/v1/sessions/{sid}/executions/__x__"), 404)
    assert_error(call(client, "POST", f"/v1/sessions/{sid}/executions/__x__:cancel"), 404)


def test_resources_per_session_are_capped(client):
    from conftest import RESOURCE_LIMIT

    sid = client.create_session("ao")["id"]
    for i in range(RESOURCE_LIMIT):
        assert call(client, "PUT", f"/v1/sessions/{sid}/resources/r{i}", data=b"%d" % i) \
            .status_code == 201
    assert_error(call(client, "PUT", f"/v1/sessions/{sid}/resources/one-more", data=b"x"),
                 409, "too_many_resources")
    # the same bytes under a name it holds are still a no-op
    assert call(client, "PUT", f"/v1/sessions/{sid}/resources/r0", data=b"0").status_code == 200


def test_unknown_execution_is_404(client):
    sid = client.create_session("ao")["id"]
    assert_error(call(client, "GET", f"/v1/sessions/{sid}/executions/{uuid.uuid4().hex}"), 404)


def test_client_raises_api_errors(client):
    with pytest.raises(ApiError) as info:
        client.create_session("nope")
    assert info.value.status == 400 and info.value.code == "invalid_scene"


def test_tasks_that_would_outlast_the_deadline_are_refused_or_split(client):
    # 16384² pixels with 16×16 subsamples and 64×64 AO rays: months of work for one task
    sid = client.create_session("ao", {"width": 16384, "height": 16384, "nsubsamples": 16,
                                       "nao_samples": 64})["id"]
    err = assert_error(call(client, "POST", f"/v1/sessions/{sid}/executions",
                            json={"tile": 2048}), 400, "tile_too_large")
    assert "tile ≤" in err["message"]
    # without a tile the planner cuts the image small enough... and here that is too many
    assert_error(call(client, "POST", f"/v1/sessions/{sid}/executions", json={}), 400,
                 "too_many_tasks")
    # a scene that fits is still one task per pass
    sid = client.create_session("ao", {"width": 64, "height": 64})["id"]
    e = client.execute(sid, parallel=2)
    assert e["tasks"]["total"] == 3
