"""The pathtracer through the whole pipeline: meshes uploaded as resources, HDR kept
linear in EXR, and bad scenes refused at the api with the field named."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from test_api_contract import assert_error, call

from francine import producers
from francine.domain import planning
from francine.domain.producer import ResourceInfo, Resources, Tile
from francine.producers.pathtracer.shapes import cornell_box


def direct_mean(scene, files: dict[str, bytes], eid: str, passes: int, tmp: pathlib.Path):
    """The execution's passes rendered here, in one piece each, with the same seeds."""
    pt = producers.get("pathtracer")
    paths = {}
    for name, data in files.items():
        paths[name] = tmp / name
        paths[name].write_bytes(data)
    infos = {n: ResourceInfo(n, f"sha-{n}", len(d)) for n, d in files.items()}
    resources = Resources(infos, lambda info: paths[info.name])
    scene = pt.validate(scene, infos)
    w, h = pt.image_size(scene)
    total = np.zeros((h, w, 3), np.float64)
    for p in range(passes):
        total += pt.render(scene, Tile(0, 0, w, h), planning.seed_for(eid, p), resources)
    return (total / passes).astype(np.float32)


def read_exr(data: bytes, tmp: pathlib.Path) -> np.ndarray:
    import OpenEXR

    path = tmp / "result.exr"
    path.write_bytes(data)
    with OpenEXR.File(str(path)) as f:
        return np.array(f.channels()["RGB"].pixels)


def test_cornell_box_through_the_pipeline_equals_direct_rendering(client, tmp_path):
    scene, files = cornell_box(size=32, spp=2)
    sid = client.create_session("pathtracer", scene, fmt="exr")["id"]
    for name, data in files.items():
        assert client.put_resource(sid, name, data)["size"] == len(data)
    e = client.execute(sid, parallel=3, tile=16)
    status = client.wait(sid, e["id"], timeout_s=180)
    assert status["status"] == "done", status
    got = read_exr(client.result(sid, e["id"]), tmp_path)
    expected = direct_mean(scene, files, e["id"], 3, tmp_path)
    assert got.shape == (32, 32, 3)
    assert np.isfinite(got).all() and (got >= 0).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.max() > 1.0  # the light is brighter than white: EXR keeps it


def test_malformed_obj_is_refused_at_upload(client):
    sid = client.create_session("pathtracer")["id"]
    resp = call(client, "PUT", f"/v1/sessions/{sid}/resources/broken.obj",
                data=b"v 0 0 0\nv 1 0 0\nf 1 2 9\n")
    err = assert_error(resp, 400, "invalid_resource")
    assert "broken.obj" in err["message"] and "line 3" in err["message"]
    assert client.request("GET", f"/v1/sessions/{sid}/resources").json()["resources"] == []


def test_missing_resource_is_refused_when_the_execution_is_created(client):
    scene, _ = cornell_box(size=16, spp=1)
    sid = client.create_session("pathtracer", scene)["id"]  # resources come later
    err = assert_error(call(client, "POST", f"/v1/sessions/{sid}/executions",
                            json={"parallel": 1}), 400, "invalid_scene")
    assert "scene.meshes[0].resource" in err["message"]
    assert client.request("GET", f"/v1/sessions/{sid}/executions").json()["executions"] == []


@pytest.mark.parametrize("patch,field", [
    ({"spheres": [{"center": [0, 0, 0], "radius": 1, "material": "unobtainium"}]},
     "scene.spheres[0].material"),
    ({"materials": {"x": {"type": "plasma"}}}, "scene.materials.x.type"),
    ({"max_depth": 0}, "scene.max_depth"),
])
def test_bad_pathtracer_scenes_name_the_field(client, patch, field):
    err = assert_error(call(client, "POST", "/v1/sessions",
                            json={"producer": "pathtracer", "scene": patch}), 400)
    assert field in err["message"]
