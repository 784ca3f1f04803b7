"""The .blend inspector (no Blender in the api) read against files that Blender wrote,
and the blender scene's validation against what it read."""

from __future__ import annotations

import gzip
import pathlib

import pytest

from francine.domain.producer import ResourceInfo, SceneError
from francine.producers.blender import blendfile, deps, scene

bpy = pytest.importorskip("bpy")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> pathlib.Path:
    """Files written by bpy: two scenes, two cameras, a frame range, a percentage, an
    external and a packed image, a linked library, and the same compressed."""
    from francine.producers.blender import examples

    root = tmp_path_factory.mktemp("blends")
    examples.checker_png(root / "textures" / "checker.png")
    examples.checker_png(root / "textures" / "packed.png")
    examples.build(root / "lib" / "props.blend")
    examples.build(root / "shots" / "a.blend", width=200, height=100,
                   texture="../textures/checker.png", frames=24, second_camera=True)
    sc = bpy.data.scenes["Shot"]
    sc.render.resolution_percentage = 50
    sc.frame_start, sc.frame_end, sc.frame_current = 3, 24, 7
    extra = bpy.data.scenes.new("Close-up")
    extra.render.resolution_x, extra.render.resolution_y = 32, 16
    extra.camera = bpy.data.objects["Side"]
    packed = bpy.data.images.load(str(root / "textures" / "packed.png"))
    packed.pack()
    packed.use_fake_user = True
    with bpy.data.libraries.load(str(root / "lib" / "props.blend"), link=True,
                                 relative=True) as (src, dst):
        dst.objects = ["Ball"]
    sc.collection.objects.link(dst.objects[0])
    bpy.ops.wm.save_as_mainfile(filepath=str(root / "shots" / "a.blend"), compress=False)
    bpy.ops.wm.save_as_mainfile(filepath=str(root / "shots" / "zstd.blend"), compress=True)
    (root / "shots" / "gzip.blend").write_bytes(
        gzip.compress((root / "shots" / "a.blend").read_bytes()))
    return root


@pytest.mark.parametrize("name", ["a.blend", "zstd.blend", "gzip.blend"])
def test_inspector_reads_what_blender_wrote(files, name):
    info = blendfile.inspect(files / "shots" / name)
    assert info.version == bpy.app.version[0] * 100 + bpy.app.version[1]
    assert {s.name for s in info.scenes} == {"Shot", "Close-up"}
    assert info.active_scene == "Shot"
    shot = info.scene(None)
    assert (shot.frame_start, shot.frame_end, shot.frame_current) == (3, 24, 7)
    assert (shot.width, shot.height) == (100, 50)  # 200×100 at 50 %
    assert shot.camera == "Camera"
    close = info.scene("Close-up")
    assert (close.width, close.height, close.camera) == (32, 16, "Side")
    assert info.cameras == ["Camera", "Side"]
    external = {(e.kind, e.path) for e in deps.of_file(files / "shots" / name)}
    # The packed image is inside the file: no dependency.
    assert external == {("image", "//../textures/checker.png"),
                        ("library", "//../lib/props.blend")}
    assert info.polygons > 500 and info.objects == 7


def test_relative_paths_resolve_to_resource_names():
    assert deps.resolve("shots/a.blend", "//../textures/x.png") == "textures/x.png"
    assert deps.resolve("a.blend", "//textures\\x.png") == "textures/x.png"
    assert deps.resolve("a.blend", "//../x.png") is None  # outside the session
    assert deps.resolve("a.blend", "/home/me/x.png") is None


@pytest.mark.parametrize("data,words", [
    (b"PNG not a blend", "not a .blend"),
    (b"BLENDER-v405" + b"\0" * 10, "truncated"),
    (b"BLENDER17-02v0500" + b"\0" * 40, "format version"),
])
def test_inspector_refuses_what_is_not_a_blend(tmp_path, data, words):
    path = tmp_path / "x.blend"
    path.write_bytes(data)
    with pytest.raises(blendfile.BlendError, match=words):
        blendfile.inspect(path)


def test_truncated_file_is_refused(files, tmp_path):
    data = (files / "shots" / "a.blend").read_bytes()
    path = tmp_path / "cut.blend"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(blendfile.BlendError, match="truncated"):
        blendfile.inspect(path)


def resources(files, names: list[str]) -> dict[str, ResourceInfo]:
    from francine.producers import blender

    out = {}
    for n in names:
        path = files / n
        out[n] = ResourceInfo(n, "0" * 64, path.stat().st_size,
                              blender.PRODUCER.inspect_resource(n, path) or None)
    return out


ALL = ["shots/a.blend", "textures/checker.png", "lib/props.blend"]


def test_validation_fills_in_the_file_defaults(files):
    got = scene.validate({"blend": "shots/a.blend"}, resources(files, ALL))
    assert got == {"blend": "shots/a.blend", "scene": "Shot", "frame": 7, "camera": "Camera",
                   "width": 100, "height": 50, "samples": 16, "denoise": False}
    got = scene.validate({"blend": "shots/a.blend", "scene": "Close-up"}, resources(files, ALL))
    assert (got["camera"], got["width"], got["height"]) == ("Side", 32, 16)


@pytest.mark.parametrize("patch,field,words", [
    ({"scene": "Nope"}, "scene", "Close-up"),
    ({"camera": "Ball"}, "camera", "Camera"),
    ({"frame": 2}, "frame", "3..24"),
    ({"frame": 25}, "frame", "3..24"),
    ({"samples": 0}, "samples", "1.."),
    ({"width": 100_000}, "width", "1.."),
    ({"camera_matrix": [[1, 0, 0, 0]] * 3}, "camera_matrix", "4 rows"),
    ({"denoise": "yes"}, "denoise", "true or false"),
    ({"blend": "textures/checker.png"}, "blend", "not a .blend"),
    ({"blend": "other.blend"}, "blend", "not attached"),
    ({"colour": 1}, "colour", "unknown"),
])
def test_validation_names_the_field(files, patch, field, words):
    with pytest.raises(SceneError) as e:
        scene.validate({"blend": "shots/a.blend", **patch}, resources(files, ALL))
    assert e.value.field == field and words in e.value.message


@pytest.mark.parametrize("missing,words", [
    ("textures/checker.png", "textures/checker.png"),
    ("lib/props.blend", "lib/props.blend"),
])
def test_missing_dependency_is_named(files, missing, words):
    present = [n for n in ALL if n != missing]
    with pytest.raises(SceneError) as e:
        scene.validate({"blend": "shots/a.blend"}, resources(files, present))
    assert e.value.field == "blend" and f"attach it as resource {words!r}" in e.value.message


def test_a_linked_library_must_be_attached_but_not_all_it_reads(files, tmp_path):
    """A library is read whole, so it must be there; the files it reads are needed only
    if what is linked from it uses them, which the worker checks when it renders."""
    from francine.producers import blender
    from francine.producers.blender import examples

    (tmp_path / "lib").mkdir()
    examples.checker_png(tmp_path / "lib" / "wood.png")
    examples.build(tmp_path / "lib" / "props.blend", texture="wood.png")
    infos = resources(files, ["shots/a.blend", "textures/checker.png"])
    with pytest.raises(SceneError, match="'lib/props.blend'"):
        scene.validate({"blend": "shots/a.blend"}, infos)
    infos["lib/props.blend"] = ResourceInfo(
        "lib/props.blend", "1" * 64, 1,
        blender.PRODUCER.inspect_resource("lib/props.blend", tmp_path / "lib" / "props.blend"))
    assert scene.validate({"blend": "shots/a.blend"}, infos)["scene"] == "Shot"
