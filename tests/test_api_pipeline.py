"""End-to-end: executions through the real pipeline (api → Pub/Sub → workers →
reducer → Cloud Storage) on the emulators, compared with the producer's own passes."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
import requests
from PIL import Image

from francine import producers
from francine.domain import imaging, planning
from francine.domain.producer import Tile


def reference_image(scene: dict, eid: str, passes: int) -> np.ndarray:
    """What the pipeline must produce: the mean of the execution's passes, rendered here
    in one piece per pass with the same seeds, mapped to 8 bits."""
    ao = producers.get("ao")
    scene = ao.validate(scene, None)
    w, h = ao.image_size(scene)
    total = np.zeros((h, w, 1), np.float64)
    for p in range(passes):
        total += ao.render(scene, Tile(0, 0, w, h), planning.seed_for(eid, p), None)
    return imaging.to_8bit((total / passes).astype(np.float32), "linear")[:, :, 0]


def decode_png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image)


def test_parallel_8_with_tiles_matches_the_passes_rendered_directly(client, small_ao):
    session = client.create_session("ao", small_ao)
    execution = client.execute(session["id"], parallel=8, tile=32)
    assert execution["status"] in ("queued", "running")
    shape = planning.make_shape(96, 64, 8, 32)
    assert execution["tasks"]["total"] == shape.total_tasks  # 6 tiles × 8 passes + reducers
    status = client.wait(session["id"], execution["id"], timeout_s=120)
    assert status["status"] == "done", status
    assert status["progress"] == 1.0
    counts = {k: status["tasks"][k] for k in ("total", "done", "failed", "running")}
    assert counts == {"total": shape.total_tasks, "done": shape.total_tasks,
                      "failed": 0, "running": 0}
    # recovery (a slow first render may get a speculative copy on a busy machine)
    assert status["tasks"]["replaced"] == 0
    assert all(status["tasks"][k] >= 0 for k in ("retries", "speculative", "redriven"))
    t = status["time"]
    assert t["finished"] and t["total"] > 0 and t["producing"] > 0 and t["reducing"] > 0
    assert 0 <= t["first_task_after"] <= t["total"]
    image = decode_png(client.result(session["id"], execution["id"]))
    expected = reference_image(small_ao, execution["id"], 8)
    assert image.shape == (64, 96)
    # float sums in another order may move a value across a rounding boundary
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1
    assert image.std() > 10  # a real picture, not a flat one


def test_block_returns_the_image(client, small_ao):
    session = client.create_session("ao", small_ao)
    resp = client.request("POST", f"/v1/sessions/{session['id']}/executions?block=1",
                          json={"parallel": 2})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "image/png"
    eid = resp.headers["X-Francine-Execution"]
    np.testing.assert_array_equal(decode_png(resp.content), reference_image(small_ao, eid, 2))


@pytest.mark.parametrize("fmt,mime", [("jpeg", "image/jpeg"), ("exr", "image/x-exr")])
def test_other_formats(client, small_ao, fmt, mime):
    session = client.create_session("ao", small_ao, fmt=fmt)
    resp = client.request("POST", f"/v1/sessions/{session['id']}/executions?block=1",
                          json={"parallel": 1})
    assert resp.headers["Content-Type"] == mime
    if fmt == "jpeg":
        assert Image.open(io.BytesIO(resp.content)).size == (96, 64)
    else:
        assert resp.content[:4] == b"v/1\x01"  # the OpenEXR magic number


def test_idempotency_key_returns_the_first_execution(client, small_ao):
    session = client.create_session("ao", small_ao)
    key = uuid.uuid4().hex
    first = client.execute(session["id"], parallel=2, idempotency_key=key)
    again = client.execute(session["id"], parallel=2, idempotency_key=key)
    other = client.execute(session["id"], parallel=2, idempotency_key=uuid.uuid4().hex)
    assert again["id"] == first["id"] != other["id"]
    listed = client.request("GET", f"/v1/sessions/{session['id']}/executions").json()
    assert sorted(e["id"] for e in listed["executions"]) == sorted([first["id"], other["id"]])
    for eid in (first["id"], other["id"]):
        assert client.wait(session["id"], eid, timeout_s=120)["status"] == "done"


def test_updates_persist_in_creation_order(client, small_ao):
    session = client.create_session("ao", small_ao)
    sid = session["id"]
    e1 = client.execute(sid, update={"width": 48})
    e2 = client.execute(sid, update={"nao_samples": 2})
    e3 = client.execute(sid)  # no update: the scene as the updates left it
    scene = client.request("GET", f"/v1/sessions/{sid}").json()["scene"]
    assert (scene["width"], scene["height"], scene["nao_samples"]) == (48, 64, 2)
    for e in (e1, e2, e3):
        assert client.wait(sid, e["id"], timeout_s=120)["status"] == "done"
        assert e["width"] == 48
    image = decode_png(client.result(sid, e3["id"]))
    assert image.shape == (64, 48)
    np.testing.assert_array_equal(image, reference_image(
        {**small_ao, "width": 48, "nao_samples": 2}, e3["id"], 1))
    # a patch that deletes a key falls back to the producer's default for it
    e4 = client.execute(sid, update={"nao_samples": None})
    assert client.request("GET", f"/v1/sessions/{sid}").json()["scene"]["nao_samples"] == 8
    assert client.wait(sid, e4["id"], timeout_s=120)["status"] == "done"


def test_a_bad_update_is_rejected_and_changes_nothing(client, small_ao):
    session = client.create_session("ao", small_ao)
    sid = session["id"]
    resp = requests.post(f"{client.api_url}/v1/sessions/{sid}/executions",
                         json={"update": {"spheres": [{"center": [0, 0], "radius": 1}]}},
                         headers=client.session.headers, timeout=30)
    assert resp.status_code == 400
    assert "spheres[0].center" in resp.json()["error"]["message"]
    assert client.request("GET", f"/v1/sessions/{sid}").json()["scene"]["width"] == 96
    assert client.request("GET", f"/v1/sessions/{sid}/executions").json()["executions"] == []


def test_result_is_409_until_done_and_cancel_stops(client):
    # 512×512 at 4 × (1 + 16²) rays a pixel, 64 passes: a minute of work, so the cancel
    # comes first (the default scene renders in tens of milliseconds).
    session = client.create_session("ao", {"nsubsamples": 2, "nao_samples": 16})
    sid = session["id"]
    e = client.execute(sid, parallel=64, tile=128)
    resp = requests.get(f"{client.api_url}/v1/sessions/{sid}/executions/{e['id']}/result",
                        headers=client.session.headers, timeout=30)
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "not_ready"
    cancelled = client.request("POST", f"/v1/sessions/{sid}/executions/{e['id']}:cancel").json()
    assert cancelled["status"] == "cancelled"
    status = client.execution(sid, e["id"])
    assert status["status"] == "cancelled" and status["time"]["finished"]
    resp = requests.get(f"{client.api_url}/v1/sessions/{sid}/executions/{e['id']}/result",
                        headers=client.session.headers, timeout=30)
    assert resp.status_code == 409


def test_demo_route_renders_aobench_once_per_parallel(stack):
    resp = requests.get(stack.info["api_url"] + "/?parallel=1", timeout=300)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/png"
    image = decode_png(resp.content)
    assert image.shape == (512, 512)
    assert image[:180].max() == 0  # the sky above the spheres (tops at row ~197): all miss
    assert image[480:].mean() > 150  # the open plane near the camera is bright
    eid = resp.headers["X-Francine-Execution"]
    np.testing.assert_array_equal(image, reference_image({}, eid, 1))
    again = requests.get(stack.info["api_url"] + "/?parallel=1", timeout=300)
    assert again.headers["X-Francine-Execution"] == eid  # served, not rendered again
    assert again.content == resp.content
    other = requests.get(stack.info["api_url"] + "/?parallel=2", timeout=300)
    assert other.status_code == 200 and other.headers["X-Francine-Execution"] != eid
    for bad in ("0", "65", "x"):
        assert requests.get(f"{stack.info['api_url']}/?parallel={bad}", timeout=30) \
            .status_code == 400
