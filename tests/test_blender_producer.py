"""The blender producer in one process: the file stays open across tasks, and frame,
camera and camera matrix change without reopening it, each checked against Blender."""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import pytest

from francine.domain.producer import ResourceInfo, Resources, Tile

bpy = pytest.importorskip("bpy")


@pytest.fixture
def setup(tmp_path):
    from francine.producers import blender
    from francine.producers.blender import examples

    src = tmp_path / "src"
    examples.checker_png(src / "textures" / "checker.png")
    examples.build(src / "anim.blend", 32, 24, texture="textures/checker.png", frames=5,
                   second_camera=True)
    cache = tmp_path / "cache"
    cache.mkdir()
    infos = {}
    for name in ("anim.blend", "textures/checker.png"):
        data = (src / name).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        (cache / sha).write_bytes(data)
        infos[name] = ResourceInfo(name, sha, len(data),
                                   blender.PRODUCER.inspect_resource(name, src / name) or None)
    fetched = []

    def fetch(info):
        fetched.append(info.name)
        return cache / info.sha256

    resources = Resources(infos, fetch, {})
    return blender.PRODUCER, resources, infos, src, fetched


def direct(blend: pathlib.Path, tmp: pathlib.Path, frame: int = 1,
           camera: str = "Camera") -> np.ndarray:
    """Blender itself: the file as saved, the frame and camera set, seed 5, 2 samples."""
    import OpenEXR

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    sc = bpy.context.scene
    sc.frame_set(frame)
    sc.camera = bpy.data.objects[camera]
    c = sc.cycles
    c.samples, c.seed, c.device = 2, 5, "CPU"
    c.use_adaptive_sampling = c.use_denoising = False
    sc.render.image_settings.file_format = "OPEN_EXR"
    sc.render.image_settings.color_depth = "32"
    sc.render.filepath = str(tmp / "direct.exr")
    sc.render.use_file_extension = False
    bpy.ops.render.render(write_still=True)
    with OpenEXR.File(str(tmp / "direct.exr")) as f:
        return np.array(f.parts[0].channels["RGBA"].pixels, np.float32)


def test_frame_camera_and_matrix_change_without_reopening(setup, tmp_path):
    producer, resources, infos, src, _ = setup
    base = producer.validate({"blend": "anim.blend", "samples": 2}, infos)
    whole = Tile(0, 0, 32, 24)

    def render(**patch):
        return producer.render({**base, **patch}, whole, 5, resources)

    first = render()
    side = bpy.data.objects["Side"].matrix_world
    side_rows = [list(row) for row in side]
    frame5 = render(frame=5)
    by_name = render(camera="Side")
    by_matrix = render(camera_matrix=side_rows)
    again = render()
    state = resources.memo["blender.open"]
    assert state.opened == 1  # one open for five tasks

    np.testing.assert_array_equal(again, first)  # the matrix was put back
    # Same view, same pixels (up to the float32 rounding of the matrix).
    np.testing.assert_allclose(by_matrix, by_name, atol=1e-3)
    assert np.abs(frame5 - first).mean() > 1e-3  # the ball moved
    blend = src / "anim.blend"
    np.testing.assert_allclose(first, direct(blend, tmp_path), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(frame5, direct(blend, tmp_path, frame=5), rtol=1e-5, atol=1e-6)
    # Kept render data (persistent data) is updated, not rebuilt, for the new camera:
    # the same samples, summed with float rounding of another order.
    np.testing.assert_allclose(by_name, direct(blend, tmp_path, camera="Side"),
                               rtol=1e-4, atol=1e-4)


def test_relative_texture_resolves_to_the_session_resource(setup, tmp_path):
    """The texture is read through the session's resources, not from beside the file."""
    import shutil

    producer, resources, infos, src, fetched = setup
    expected = direct(src / "anim.blend", tmp_path)[12:]
    shutil.rmtree(src / "textures")
    scene = producer.validate({"blend": "anim.blend", "samples": 2}, infos)
    got = producer.render(scene, Tile(0, 12, 32, 12), 5, resources)
    assert "textures/checker.png" in fetched
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
