"""What a .blend reads, kind by kind (traced with Blender Asset Tracer, files written by
bpy), how the CLI packs it from anywhere on the user's disk, and how the api checks a
session's resources against it.

Kinds not built here because bpy cannot make them without a bake (multires ``.btx``,
ocean caches) and the old file formats (2.7x libraries read from the ``name`` field)
are covered by BAT's own test suite; the kinds below are the ones a farm user meets
most."""

from __future__ import annotations

import pathlib

import pytest

from francine.domain.producer import ResourceInfo, SceneError
from francine.producers import blender
from francine.producers.blender import deps, examples, scene

bpy = pytest.importorskip("bpy")

ODD = "Golden Palace 2, Old Bagan-1k.png"  # spaces, a comma: a real texture's name
BLEND = "basic_file_ñønæščii.blend"  # and a real file's


def png(path: pathlib.Path, value: float = 0.5) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = bpy.data.images.new("tmp", 4, 4)
    img.pixels = [value, value, value, 1.0] * 16
    img.filepath_raw = str(path)
    img.file_format = "PNG"
    img.save()
    bpy.data.images.remove(img)
    return path


def image(path: str, source: str = "FILE"):
    img = bpy.data.images.new(pathlib.PurePath(path).name, 4, 4)
    img.source = source
    img.filepath = path
    img.use_fake_user = True
    return img


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> pathlib.Path:
    """``proj/shots/<BLEND>`` reading, by every kind of path, files around it; one image
    by an absolute path outside the project; a library that reads a texture itself."""
    root = tmp_path_factory.mktemp("deps")
    proj, elsewhere = root / "proj", root / "elsewhere"
    png(proj / "textures" / ODD)
    for f in (1, 2, 3):
        png(proj / "seq" / f"frame_{f:04d}.png", f / 4)
    for tile in (1001, 1002):
        png(proj / "textures" / f"skin.{tile}.png")
    png(elsewhere / "decal.png")
    png(proj / "lib" / "wood.png")
    examples.build(proj / "lib" / "props.blend", texture="wood.png")

    examples.build(proj / "shots" / BLEND, texture=f"../textures/{ODD}")
    sc = bpy.context.scene
    image("//../seq/frame_0001.png", "SEQUENCE")
    image("//../textures/skin.<UDIM>.png", "TILED")
    image(str(elsewhere / "decal.png"))
    with bpy.data.libraries.load(str(proj / "lib" / "props.blend"), link=True,
                                 relative=True) as (_, dst):
        dst.objects = ["Ball"]
    sc.collection.objects.link(dst.objects[0])
    carrier = bpy.data.objects.new("Carrier", bpy.data.meshes.new("carrier"))
    sc.collection.objects.link(carrier)
    carrier.modifiers.new("MeshCache", "MESH_CACHE").filepath = "//../caches/walk.mdd"
    (proj / "caches").mkdir()
    (proj / "caches" / "walk.mdd").write_bytes(b"mdd")
    volume = bpy.data.volumes.new("Smoke")
    volume.filepath, volume.is_sequence = "//../vdb/smoke_0001.vdb", True
    sc.collection.objects.link(bpy.data.objects.new("Smoke", volume))
    (proj / "vdb").mkdir()
    for f in (1, 2):
        (proj / "vdb" / f"smoke_{f:04d}.vdb").write_bytes(b"vdb")
    # An Alembic sequence, exported by Blender itself, read back as a cache file.
    (proj / "abc").mkdir()
    for f in (1, 2):
        sc.frame_set(f)
        bpy.ops.wm.alembic_export(filepath=str(proj / "abc" / f"walk_{f:04d}.abc"),
                                  start=f, end=f, selected=False)
    sc.frame_set(1)
    bpy.ops.wm.alembic_import(filepath=str(proj / "abc" / "walk_0001.abc"),
                              is_sequence=True, relative_path=True)
    # Text in Blender's built-in font: no file.
    sc.collection.objects.link(bpy.data.objects.new("Title", bpy.data.curves.new("T", "FONT")))
    # A cloth's disk cache (needs a saved file) and a geometry-nodes bake on disk.
    bpy.ops.wm.save_as_mainfile(filepath=str(proj / "shots" / BLEND), relative_remap=False)
    cloth = carrier.modifiers.new("Cloth", "CLOTH")
    cloth.point_cache.use_disk_cache = True
    nodes = carrier.modifiers.new("Bake", "NODES")
    nodes.node_group = bake_group()
    nodes.bake_target, nodes.bake_directory = "DISK", "//../bakes/carrier"
    (proj / "bakes" / "carrier" / "data").mkdir(parents=True)
    (proj / "bakes" / "carrier" / "data" / "1.bcache").write_bytes(b"bake")
    bpy.ops.wm.save_as_mainfile(filepath=str(proj / "shots" / BLEND), relative_remap=False)
    return root


def bake_group():
    group = bpy.data.node_groups.new("Baked", "GeometryNodeTree")
    group.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    group.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    into, out = group.nodes.new("NodeGroupInput"), group.nodes.new("NodeGroupOutput")
    bake = group.nodes.new("GeometryNodeBake")
    group.links.new(into.outputs[0], bake.inputs[0])
    group.links.new(bake.outputs[0], out.inputs[0])
    return group


def test_every_kind_is_traced(project):
    found = {(d.kind, d.path, d.sequence) for d in deps.of_file(
        project / "proj" / "shots" / BLEND)}
    decal = str(project / "elsewhere" / "decal.png")
    expected = {
        ("image", f"//../textures/{ODD}", False),
        ("image", "//../seq/frame_0001.png", True),
        ("image", "//../textures/skin.<UDIM>.png", True),
        ("image", decal, False),
        ("library", "//../lib/props.blend", False),
        ("mesh cache", "//../caches/walk.mdd", False),
        ("volume", "//../vdb/smoke_0001.vdb", True),
        ("cache file", "//../abc/walk_0001.abc", True),
        ("geometry-nodes bake", "//../bakes/carrier", True),
    }
    assert expected <= found
    caches = [p for k, p, _ in found if k == "point cache"]
    assert len(caches) == 1 and caches[0].startswith("//blendcache_basic_file_")
    # The built-in font is no file; nothing else is reported.
    assert len(found) == len(expected) + 1


def test_the_cli_packs_files_from_anywhere(project):
    blend = project / "proj" / "shots" / BLEND
    with deps.pack(blend) as packed:
        # ``//../textures`` widens the project to proj/; the absolute path does not.
        assert packed.root == project / "proj"
        names = set(packed.files)
        assert packed.blend == f"shots/{BLEND}"
        assert {f"textures/{ODD}", "seq/frame_0002.png", "seq/frame_0003.png",
                "textures/skin.1002.png", "lib/props.blend",
                "caches/walk.mdd", "vdb/smoke_0002.vdb", "abc/walk_0002.abc",
                "bakes/carrier/data/1.bcache"} <= names
        decal = str(project / "elsewhere" / "decal.png")
        remapped = dict(packed.remapped)
        assert set(remapped) == {decal}
        assert remapped[decal] in names and remapped[decal].startswith("_outside_project/")
        # The .blend that is uploaded reads the remapped name, relative to itself.
        rewritten = packed.files[packed.blend]
        assert rewritten != blend
        paths = {d.path for d in deps.of_file(rewritten)}
        assert decal not in paths and f"//../{remapped[decal]}" in paths
        # The library's texture is on an object that is not linked: Blender never
        # reads it, so it is not uploaded.
        assert "lib/wood.png" not in names
        for name in names - {packed.blend}:
            assert packed.files[name].is_file(), name
        # The api accepts the packed session: every dependency is a resource.
        infos = resources(packed.files)
        assert scene.validate({"blend": packed.blend}, infos)["scene"] == "Shot"
    assert not rewritten.exists()  # the rewritten copy goes with the pack


def test_missing_files_are_all_named_before_anything(project, tmp_path):
    """Two missing files (one of a sequence, whose every frame is gone): one error that
    names both, and says how to fix it."""
    png(tmp_path / "gone.png")
    examples.build(tmp_path / "scene.blend", texture="gone.png")
    image("//frames/f_0001.png", "SEQUENCE")
    (tmp_path / "gone.png").unlink()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    with pytest.raises(deps.MissingFiles) as e:
        deps.pack(tmp_path / "scene.blend")
    message = str(e.value)
    assert "'//gone.png'" in message and "'//frames/f_0001.png'" in message
    assert "Find Missing Files" in message and len(e.value.missing) == 2


@pytest.mark.parametrize("name,pattern", [
    ("seq/frame_0001.png", "seq/frame_*.png"),
    ("t/skin.<UDIM>.png", "t/skin.*.png"),
    ("blendcache_a/4375_*.bphys", "blendcache_a/4375_*.bphys"),
    ("bakes/carrier", "bakes/carrier/*"),
    ("odd [1]/a_01.exr", "odd [1]/a_*.exr"),
    ("x/[b]_7.png", "x/[[]b]_*.png"),
])
def test_sequence_patterns(name, pattern):
    assert deps.sequence_pattern(name) == pattern


def resources(files: dict[str, pathlib.Path]) -> dict[str, ResourceInfo]:
    return {n: ResourceInfo(n, "0" * 64, p.stat().st_size,
                            blender.PRODUCER.inspect_resource(n, p) or None)
            for n, p in files.items()}


def test_the_api_checks_sequences_against_resources(project):
    with deps.pack(project / "proj" / "shots" / BLEND) as packed:
        infos = resources(packed.files)
    frames = [n for n in infos if n.startswith("seq/")]
    for n in frames:
        del infos[n]
    with pytest.raises(SceneError) as e:
        scene.validate({"blend": packed.blend}, infos)
    assert "matching 'seq/frame_*.png'" in e.value.message
    del infos["vdb/smoke_0001.vdb"]  # one frame of a sequence is enough here
    infos.update({n: ResourceInfo(n, "0" * 64, 1) for n in frames[:1]})
    assert scene.validate({"blend": packed.blend}, infos)["scene"] == "Shot"
    # An empty simulation cache is filled by Blender itself: not required.
    for n in [n for n in infos if n.startswith("bakes/")]:
        del infos[n]
    assert scene.validate({"blend": packed.blend}, infos)["scene"] == "Shot"


def test_an_absolute_path_is_refused_by_the_api_with_the_fix(project):
    """The file as the user has it (not rewritten by the pack): the api cannot know the
    user's disk, and says how to upload it."""
    original = project / "proj" / "shots" / BLEND
    with deps.pack(original) as packed:
        infos = resources(packed.files)
    infos[packed.blend] = ResourceInfo(packed.blend, "0" * 64, 1,
                                       blender.PRODUCER.inspect_resource(BLEND, original))
    with pytest.raises(SceneError) as e:
        scene.validate({"blend": packed.blend}, infos)
    assert "decal.png" in e.value.message and "francine render" in e.value.message


def test_the_sequencer_reads_nothing_the_farm_needs(tmp_path):
    """The farm renders with the sequencer off: a strip's or a sound's missing file
    neither is a dependency nor stops the upload."""
    examples.build(tmp_path / "edit.blend")
    editor = bpy.context.scene.sequence_editor_create()
    editor.strips.new_image("Plate", str(tmp_path / "gone" / "plate_0001.png"), 1, 1)
    bpy.data.sounds.load(str(tmp_path / "gone" / "music.wav"),
                         check_existing=False).use_fake_user = True
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "edit.blend"))
    assert deps.of_file(tmp_path / "edit.blend") == []
    with deps.pack(tmp_path / "edit.blend") as packed:
        assert set(packed.files) == {"edit.blend"}
