"""Never silently wrong: a Blender task whose frame reads a file that is not among the
session's resources fails, naming the file, instead of rendering Blender's magenta.

The scene is built with ``bpy``: a plane showing an image sequence (three PNG frames,
one colour each) through an image user that follows the scene's frame. The frame
numbering is checked against Blender's own (the frame its depsgraph computes, the file
name ``Image.filepath_from_user`` gives), the renders against Blender's renders of the
complete file.
"""

from __future__ import annotations

import hashlib
import pathlib
import shutil

import numpy as np
import pytest

from francine.domain.producer import ResourceInfo, Resources, SceneError, Tile

bpy = pytest.importorskip("bpy")

COLOURS = [(255, 40, 20), (20, 255, 40), (40, 20, 255)]  # frames 1, 2, 3
FRAMES = [f"textures/seq/f_{i:03d}.png" for i in (1, 2, 3)]
WIDTH, HEIGHT = 32, 24


def build(root: pathlib.Path) -> None:
    """seq.blend and its three frames under ``root``."""
    from PIL import Image

    for name, colour in zip(FRAMES, COLOURS, strict=True):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), colour, np.uint8)).save(root / name)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    sc.name = "Shot"
    sc.render.engine = "CYCLES"
    sc.render.resolution_x, sc.render.resolution_y = WIDTH, HEIGHT
    sc.frame_start, sc.frame_end, sc.frame_current = 1, 3, 1
    image = bpy.data.images.load(str(root / FRAMES[0]))
    image.source = "SEQUENCE"
    image.filepath = "//" + FRAMES[0]
    mat = bpy.data.materials.new("Screen")
    if mat.node_tree is None:
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    user = tex.image_user
    user.frame_start, user.frame_duration, user.frame_offset = 1, 3, 0
    user.use_auto_refresh = True  # follow the scene's frame
    emit = nodes.new("ShaderNodeEmission")
    links.new(tex.outputs["Color"], emit.inputs["Color"])
    links.new(emit.outputs["Emission"], nodes["Material Output"].inputs["Surface"])
    bpy.ops.mesh.primitive_plane_add(size=4)
    bpy.context.object.data.materials.append(mat)
    bpy.ops.object.camera_add(location=(0, 0, 2))
    sc.camera = bpy.context.object
    bpy.ops.wm.save_as_mainfile(filepath=str(root / "seq.blend"), relative_remap=False)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("seq")
    build(root)
    return root


def resources_of(src: pathlib.Path, names: list[str], cache: pathlib.Path) -> Resources:
    from francine.producers import blender

    cache.mkdir(exist_ok=True)
    infos = {}
    for name in names:
        data = (src / name).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        (cache / sha).write_bytes(data)
        infos[name] = ResourceInfo(name, sha, len(data),
                                   blender.PRODUCER.inspect_resource(name, src / name) or None)
    return Resources(infos, lambda info: cache / info.sha256, {})


def direct(blend: pathlib.Path, frame: int, seed: int, tmp: pathlib.Path) -> np.ndarray:
    """Blender itself renders the complete file (every frame present)."""
    import OpenEXR

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    sc = bpy.context.scene
    sc.frame_set(frame)
    c = sc.cycles
    c.samples, c.seed, c.device = 2, seed, "CPU"
    c.use_adaptive_sampling = c.use_denoising = False
    sc.render.image_settings.file_format = "OPEN_EXR"
    sc.render.image_settings.color_depth = "32"
    sc.render.filepath = str(tmp / f"direct-{frame}.exr")
    sc.render.use_file_extension = False
    bpy.ops.render.render(write_still=True)
    with OpenEXR.File(sc.render.filepath) as f:
        return np.array(f.parts[0].channels["RGBA"].pixels, np.float32)


@pytest.mark.parametrize("start,offset,duration,cyclic", [
    (1, 0, 3, False), (5, 0, 3, False), (1, 10, 4, False), (2, 3, 3, True), (1, 0, 0, False),
    (-3, 2, 5, True),
])
def test_the_sequence_frame_is_the_one_blender_computes(src, start, offset, duration, cyclic):
    from francine.producers.blender import external

    bpy.ops.wm.open_mainfile(filepath=str(src / "seq.blend"))
    sc = bpy.context.scene
    mat = bpy.data.materials["Screen"]
    user = next(n for n in mat.node_tree.nodes if n.type == "TEX_IMAGE").image_user
    user.frame_start, user.frame_offset, user.frame_duration = start, offset, duration
    user.use_cyclic = cyclic
    for cfra in range(-6, 16):
        sc.frame_set(cfra)
        evaluated = mat.evaluated_get(bpy.context.evaluated_depsgraph_get())
        blender = next(n for n in evaluated.node_tree.nodes
                       if n.type == "TEX_IMAGE").image_user.frame_current
        assert external.image_frame(start, offset, duration, cyclic, cfra) == blender, cfra


@pytest.mark.parametrize("stored", ["//a/f_001.png", "//a/shot_007_col.exr", "//a/f.0001.png",
                                    "//a/nodigits.png", "//a/9/x12y.png", "//a/v2/f_99"])
def test_the_sequence_file_name_is_the_one_blender_gives(src, stored):
    from francine.producers.blender import external

    bpy.ops.wm.open_mainfile(filepath=str(src / "seq.blend"))
    image = bpy.data.images[0]
    image.filepath = stored
    user = next(n for n in bpy.data.materials["Screen"].node_tree.nodes
                if n.type == "TEX_IMAGE").image_user
    for number in (0, 1, 7, 12, 1234, 123456):
        user.frame_current = number
        want = image.filepath_from_user(image_user=user)
        assert external.sequence_path(bpy.path.abspath(stored), number) == want, number


def test_a_missing_frame_fails_its_task_and_names_the_file(src, tmp_path):
    """Frames 1 and 3 are attached, frame 2 is not: frames 1 and 3 render as Blender
    renders the complete file, frame 2 fails with a scene error naming its file."""
    from francine.producers import blender

    resources = resources_of(src, ["seq.blend", FRAMES[0], FRAMES[2]], tmp_path / "cache")
    producer = blender.PRODUCER
    base = producer.validate({"blend": "seq.blend", "samples": 2}, resources.infos)
    whole = Tile(0, 0, WIDTH, HEIGHT)
    first = producer.render({**base, "frame": 1}, whole, 5, resources)
    with pytest.raises(SceneError) as e:
        producer.render({**base, "frame": 2}, whole, 5, resources)
    assert e.value.field == "blend"
    assert FRAMES[1] in str(e.value) and "frame 2" in str(e.value)
    assert FRAMES[0] not in str(e.value) and str(tmp_path) not in str(e.value)
    third = producer.render({**base, "frame": 3}, whole, 5, resources)
    np.testing.assert_allclose(first, direct(src / "seq.blend", 1, 5, tmp_path),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(third, direct(src / "seq.blend", 3, 5, tmp_path),
                               rtol=1e-5, atol=1e-6)
    # Each shows its own frame: red, then blue.
    assert first[..., 0].mean() > 3 * first[..., 2].mean()
    assert third[..., 2].mean() > 3 * third[..., 0].mean()


def test_an_image_blender_cannot_read_fails_its_task_and_names_it(src, tmp_path):
    """A frame that exists but is no image: Cycles reports it, the task fails."""
    from francine.producers import blender

    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    (broken / FRAMES[1]).write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    resources = resources_of(broken, ["seq.blend", *FRAMES], tmp_path / "cache")
    scene = blender.PRODUCER.validate({"blend": "seq.blend", "samples": 2, "frame": 2},
                                      resources.infos)
    for _ in range(2):  # and again: the stand-in Cycles kept was not kept
        with pytest.raises(SceneError) as e:
            blender.PRODUCER.render(scene, Tile(0, 0, WIDTH, HEIGHT), 5, resources)
        assert FRAMES[1] in str(e.value) and "failed to open" in str(e.value)


def test_a_missing_frame_fails_the_execution_at_once(client, src, tmp_path):
    """Through the pipeline: frame 1 renders, frame 2 fails the execution with the
    file's name, without retries (a scene error)."""
    from test_blender_pipeline import read_exr

    sid = client.create_session("blender", {"blend": "seq.blend", "samples": 2},
                                fmt="exr")["id"]
    for name in ["seq.blend", FRAMES[0], FRAMES[2]]:
        client.put_resource(sid, name, (src / name).read_bytes())
    e = client.execute(sid, parallel=1, update={"frame": 1})
    assert client.wait(sid, e["id"], timeout_s=120)["status"] == "done"
    got = read_exr(client.result(sid, e["id"]), tmp_path)
    assert got[..., 0].mean() > 3 * got[..., 2].mean()  # red: frame 1's file
    e = client.execute(sid, parallel=1, update={"frame": 2})
    status = client.wait(sid, e["id"], timeout_s=120)
    assert status["status"] == "failed", status
    assert FRAMES[1] in status["error"]["message"], status
