"""Blender files through the whole pipeline, checked against Blender itself.

The references are plain full-frame renders by ``bpy`` in this process (no render
border, no producer code): tiles assembled by the pipeline must equal them pixel for
pixel given the same seeds and samples, and the mean of many passes must converge to a
high-sample render as fast as independent renders do.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from test_api_contract import assert_error, call

from francine import producers
from francine.domain import imaging, planning

bpy = pytest.importorskip("bpy")

WIDTH, HEIGHT = 64, 48
SEED_MASK = 0x7FFFFFFF  # Cycles' seed is a non-negative C int
REFERENCE_SAMPLES = 512


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> pathlib.Path:
    from francine.producers.blender import examples

    root = tmp_path_factory.mktemp("blender")
    examples.checker_png(root / "textures" / "checker.png")
    examples.build(root / "demo.blend", WIDTH, HEIGHT, texture="textures/checker.png")
    return root


def bpy_render(blend: pathlib.Path, seed: int, samples: int, tmp: pathlib.Path,
               passes: bool = False, frame: int | None = None) -> np.ndarray:
    """One full-frame Cycles render of the file as it is on disk (at ``frame``, else its
    current frame): linear RGBA (and, with ``passes``, the denoising albedo and normal)."""
    import OpenEXR

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    sc = bpy.context.scene
    if frame is not None:
        sc.frame_set(frame)
    c = sc.cycles
    c.device, c.samples, c.seed = "CPU", samples, seed & SEED_MASK
    c.use_adaptive_sampling = c.use_denoising = c.use_animated_seed = False
    sc.render.threads_mode, sc.render.threads = "FIXED", 2
    sc.view_layers[0].cycles.denoising_store_passes = passes
    fmt = sc.render.image_settings
    fmt.media_type = "MULTI_LAYER_IMAGE" if passes else "IMAGE"
    fmt.file_format = "OPEN_EXR_MULTILAYER" if passes else "OPEN_EXR"
    fmt.color_depth, fmt.color_mode = "32", "RGBA"
    out = tmp / f"ref-{seed}-{samples}-{frame}.exr"
    sc.render.filepath, sc.render.use_file_extension = str(out), False
    bpy.ops.render.render(write_still=True)
    with OpenEXR.File(str(out), separate_channels=passes) as f:
        ch = {n: c for part in f.parts for n, c in part.channels.items()}
        if not passes:
            return np.array(ch["RGBA"].pixels, np.float32)

        def get(layer, names):
            return np.stack([ch[f"ViewLayer.{layer}.{n}"].pixels for n in names], axis=-1)

        return np.concatenate([get("Combined", "RGBA"), get("Denoising Albedo", "RGB"),
                               get("Denoising Normal", "XYZ")], axis=-1).astype(np.float32)


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory) -> np.ndarray:
    return bpy_render(demo / "demo.blend", 424242, REFERENCE_SAMPLES,
                      tmp_path_factory.mktemp("ref"))


def read_exr(data: bytes, tmp: pathlib.Path) -> np.ndarray:
    import OpenEXR

    path = tmp / "result.exr"
    path.write_bytes(data)
    with OpenEXR.File(str(path)) as f:
        return np.array(f.parts[0].channels["RGBA"].pixels, np.float32)


def upload(client, demo: pathlib.Path, scene: dict | None = None, texture: bool = True) -> str:
    sid = client.create_session("blender", {"blend": "demo.blend", **(scene or {})},
                                fmt="exr")["id"]
    client.put_resource(sid, "demo.blend", (demo / "demo.blend").read_bytes())
    if texture:
        client.put_resource(sid, "textures/checker.png",
                            (demo / "textures" / "checker.png").read_bytes())
    return sid


def render(client, sid: str, tmp: pathlib.Path, **kwargs) -> tuple[np.ndarray, str]:
    e = client.execute(sid, **kwargs)
    status = client.wait(sid, e["id"], timeout_s=120)
    assert status["status"] == "done", status
    return read_exr(client.result(sid, e["id"]), tmp), e["id"]


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a[:, :, :3].astype(np.float64) - b[:, :, :3]) ** 2))


def test_tiles_through_the_pipeline_equal_a_full_frame_blender_render(client, demo, tmp_path):
    """12 tiles × 2 passes, textured by a separate resource: the same pixels as two
    full-frame renders with the passes' seeds."""
    sid = upload(client, demo, {"samples": 4})
    got, eid = render(client, sid, tmp_path, parallel=2, tile=16)
    expected = np.mean([bpy_render(demo / "demo.blend", planning.seed_for(eid, p), 4, tmp_path)
                        for p in range(2)], axis=0)
    assert got.shape == (HEIGHT, WIDTH, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The texture is there: orange and teal cells on the floor, no missing-texture pink.
    rgb = got[HEIGHT // 2:, :, :3]
    assert (rgb[:, :, 0] > 2 * rgb[:, :, 2]).mean() > 0.1  # orange cells
    assert (rgb[:, :, 2] > 1.5 * rgb[:, :, 0]).mean() > 0.1  # teal cells
    pink = (rgb[:, :, 0] > 0.8) & (rgb[:, :, 1] < 0.1) & (rgb[:, :, 2] > 0.8)
    assert not pink.any()


def test_passes_converge_like_independent_renders(client, demo, reference, tmp_path):
    """The mean of 8 passes of 4 samples is as close to a 512-sample render as the mean
    of 8 independent 4-sample renders is; the same seed for every pass (or any scheme
    that correlates the passes) stays as far as one 4-sample render, which fails."""
    sid = upload(client, demo, {"samples": 4})
    got, _ = render(client, sid, tmp_path, parallel=8, tile=32)
    blend = demo / "demo.blend"
    independent = [bpy_render(blend, 1000 + s, 4, tmp_path) for s in range(8)]
    bound = 2.0 * mse(np.mean(independent, axis=0), reference)
    error = mse(got, reference)
    assert error < bound, (error, bound)
    # The bound can fail: the mean of 8 copies of one pass.
    assert mse(independent[0], reference) > bound
    psnr = 10 * np.log10(1.0 / error)
    assert psnr > 25, psnr


def test_denoised_image_is_closer_to_the_reference(client, adapters, demo, reference,
                                                   tmp_path):
    sid = upload(client, demo, {"samples": 1, "denoise": True})
    got, eid = render(client, sid, tmp_path, parallel=4, tile=32)
    noisy = np.mean([bpy_render(demo / "demo.blend", planning.seed_for(eid, p), 1, tmp_path)
                     for p in range(4)], axis=0)  # the same passes, not denoised
    assert got.shape == (HEIGHT, WIDTH, 4)
    np.testing.assert_allclose(got[:, :, 3], noisy[:, :, 3], atol=1e-6)  # alpha untouched
    # The partials carry what the planner's memory estimate counts (albedo and normal).
    ex = adapters.store.execution(sid, eid)
    partial = imaging.load_partial(adapters.blobs.get_partial(sid, eid, planning.node_name(0, 0)))
    assert partial.sum.shape[2] == producers.partial_channels("blender", ex.scene) == 10
    # Denoising removes much of the noise of 4 one-sample passes (about half the error
    # here, depending on the seeds); it must at least be clearly closer.
    assert mse(got, reference) < 0.8 * mse(noisy, reference)


def test_missing_texture_is_refused_when_the_execution_is_created(client, demo):
    sid = upload(client, demo, texture=False)
    err = assert_error(call(client, "POST", f"/v1/sessions/{sid}/executions",
                            json={"parallel": 1}), 400, "invalid_scene")
    assert "scene.blend" in err["message"] and "textures/checker.png" in err["message"]


@pytest.mark.parametrize("update,field", [
    ({"scene": "Nope"}, "scene.scene"),
    ({"camera": "Ball"}, "scene.camera"),
    ({"frame": 99}, "scene.frame"),
    ({"samples": 10 ** 6}, "scene.samples"),
    ({"width": 0}, "scene.width"),
])
def test_bad_blender_executions_name_the_field(client, demo, update, field):
    sid = upload(client, demo)
    err = assert_error(call(client, "POST", f"/v1/sessions/{sid}/executions",
                            json={"parallel": 1, "update": update}), 400, "invalid_scene")
    assert field in err["message"]


def test_a_file_that_is_not_a_blend_is_refused_at_upload(client):
    sid = client.create_session("blender", {"blend": "demo.blend"})["id"]
    err = assert_error(call(client, "PUT", f"/v1/sessions/{sid}/resources/demo.blend",
                            data=b"\x89PNG\r\n\x1a\n not a blend"), 400, "invalid_resource")
    assert "demo.blend" in err["message"] and "not a .blend" in err["message"]


def test_a_noise_target_and_an_extension_of_a_blender_file(client, demo, reference, tmp_path):
    """A Blender file rendered until a noise target: it stops when its estimate meets
    the target (or at max_passes), and its error against a 512-sample render is within
    1.5× the target. Extended by two passes, a render is the very bytes of one render
    of all four with the same seed."""
    sid = upload(client, demo, {"samples": 4})
    target = 0.3
    e = client.execute(sid, tile=32, until={"noise": target, "max_passes": 24}, parallel=4)
    status = client.wait(sid, e["id"], timeout_s=300)
    assert status["status"] == "done" and status["stopped"] in ("noise", "max_passes")
    assert 4 <= status["passes"] <= 24 and status["noise"] is not None
    got = read_exr(client.result(sid, e["id"]), tmp_path)
    lum = imaging.luminance(got)[:, :, 0]
    ref = imaging.luminance(reference)[:, :, 0]
    lit = ref > 0.02 * ref.mean()
    error = float(np.sqrt(np.mean(((lum[lit] - ref[lit]) / ref[lit]) ** 2)))
    assert error <= 1.5 * max(target, status["noise"]), (error, status)

    first = client.execute(sid, parallel=2, tile=32, seed=5)
    assert client.wait(sid, first["id"], timeout_s=120)["status"] == "done"
    client.request("POST", f"/v1/sessions/{sid}/executions/{first['id']}:extend",
                   json={"passes": 2})
    assert client.wait(sid, first["id"], timeout_s=120)["passes"] == 4
    whole = client.execute(sid, parallel=4, tile=32, seed=5)
    assert client.wait(sid, whole["id"], timeout_s=120)["status"] == "done"
    assert client.result(sid, first["id"]) == client.result(sid, whole["id"])
