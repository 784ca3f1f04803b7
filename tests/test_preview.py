"""The progressive preview: which stored nodes it shows, how it assembles them, and the
route against the local stack (while a render runs, once it is done, before any task)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from francine.domain import imaging, planning
from francine.domain.producer import Tile
from francine.services.preview import assemble, covering_nodes
from francine.tools.client import ApiError


def test_covering_nodes_take_the_highest_finished_node_of_each_region():
    shape = planning.make_shape(64, 64, 4, 32)  # 4 tiles × 4 passes = 16 tasks, fan-in 4
    assert shape.fan_in == 4 and shape.root == "r2.0"
    done = {"p0", "p1", "p2", "p3", "r1.0", "p4", "p6", "p15"}
    # r1.0 holds p0..p3; p4, p6, p15 have no finished parent.
    assert covering_nodes(shape, done) == ["p15", "p4", "p6", "r1.0"]
    assert covering_nodes(shape, set()) == []
    assert covering_nodes(shape, {"r1.0", "r1.1", "r1.2", "r1.3", "r2.0", "p0"}) == ["r2.0"]


def test_assemble_averages_passes_per_tile_and_leaves_the_rest_black():
    shape = planning.make_shape(48, 32, 3, 16)  # 3 × 2 tiles of 16 px
    ones = np.ones((16, 16, 1), np.float32)
    a1 = imaging.from_pass(Tile(0, 0, 16, 16), 16, 0.2 * ones)
    a2 = imaging.from_pass(Tile(0, 0, 16, 16), 16, 0.6 * ones)
    b = imaging.from_pass(Tile(32, 16, 16, 16), 16, 0.9 * ones)
    image, passes = assemble(shape, [imaging.combine([a1, a2]), b])
    expected = np.zeros((32, 48, 1), np.float32)
    expected[0:16, 0:16] = 0.4
    expected[16:32, 32:48] = 0.9
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert passes == 0  # four tiles have nothing yet

    everything = [imaging.from_pass(planning.tile_of(shape, i), 16, 0.5 * np.ones(
        (16, 16, 1), np.float32)) for i in range(shape.productions)]
    image, passes = assemble(shape, everything)
    assert passes == 3
    np.testing.assert_allclose(image, 0.5, atol=1e-6)


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), np.float32)


def test_preview_while_running_then_the_final_image(client):
    scene = {"width": 96, "height": 64, "nao_samples": 8}
    sid = client.create_session("ao", scene)["id"]
    eid = client.execute(sid, parallel=12, tile=32)["id"]  # 6 tiles × 12 passes = 72 tasks
    path = f"/v1/sessions/{sid}/executions/{eid}/preview"
    partial = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            resp = client.request("GET", path)
        except ApiError as e:
            assert e.status == 409 and e.code == "not_ready"
            time.sleep(0.05)
            continue
        assert resp.headers["Content-Type"] == "image/png"
        if resp.headers["X-Francine-Final"] == "0":
            partial = resp
            break
        time.sleep(0.05)
    assert partial is not None, "never saw an intermediate preview"
    assert 0 <= int(partial.headers["X-Francine-Passes"]) < 12
    status = client.wait(sid, eid)
    assert status["status"] == "done"
    final = client.request("GET", path)
    assert final.headers["X-Francine-Final"] == "1"
    assert final.headers["X-Francine-Passes"] == "12"
    result = client.result(sid, eid)
    np.testing.assert_array_equal(png(final.content), png(result))

    # Where the intermediate preview shows something, it is the same picture with fewer
    # passes (a misplaced tile would differ by far more than the noise).
    early, done = png(partial.content), png(result)
    assert early.shape == done.shape == (64, 96)
    shown = early > 0
    assert shown.any()
    assert np.abs(early[shown] - done[shown]).mean() < 25


def test_preview_of_jpeg_session_is_png(client):
    sid = client.create_session("ao", {"width": 32, "height": 32, "nao_samples": 2},
                                fmt="jpeg")["id"]
    eid = client.execute(sid, parallel=2)["id"]
    assert client.wait(sid, eid)["status"] == "done"
    resp = client.request("GET", f"/v1/sessions/{sid}/executions/{eid}/preview")
    assert resp.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(resp.content)).format == "PNG"


def test_preview_before_any_task_finished_and_of_others(client, stack):
    from francine.tools.client import Client
    from francine.tools.local.stack import create_user_in

    # 512×512 at 16 × (1 + 32²) rays a pixel: seconds for its one task (the default
    # scene renders in tens of milliseconds, before the first request could arrive).
    sid = client.create_session("ao", {"nsubsamples": 4, "nao_samples": 32})["id"]
    eid = client.execute(sid, parallel=1)["id"]
    path = f"/v1/sessions/{sid}/executions/{eid}/preview"
    with pytest.raises(ApiError) as e:
        client.request("GET", path)
    assert e.value.status == 409 and e.value.body["error"]["code"] == "not_ready"
    other = Client(stack.info["api_url"],
                   create_user_in(stack.info["env"], stack.info["project"], "intruder"))
    with pytest.raises(ApiError) as e:
        other.request("GET", path)
    assert e.value.status == 404
    client.request("POST", f"/v1/sessions/{sid}/executions/{eid}:cancel")
