"""``francine render scene.blend``: the file and what it reads by relative path are
uploaded, and a frame range gives one image per frame.

Everything the file and the disk can tell is checked before anything is created on the
server; a refusal by the api cancels what the command started and deletes its session;
Ctrl-C cancels what it started. All of it against the session's stack, through the API.
"""

from __future__ import annotations

import io
import os
import pathlib
import re
import signal
import subprocess

import numpy as np
import pytest
from test_cli_commands import FRANCINE, api

from francine.services import quotas, users
from francine.tools import blender_cli, cli

bpy = pytest.importorskip("bpy")

IDS = re.compile(r"session (\w+)  execution (\w+)(?:  (\d+) frames)?")


@pytest.fixture
def shot(tmp_path):
    """32×24, a texture beside it, a ball that moves over frames 1-3."""
    from francine.producers.blender import examples

    examples.checker_png(tmp_path / "maps" / "checker.png")
    examples.build(tmp_path / "shot.blend", 32, 24, texture="maps/checker.png", frames=3)
    return tmp_path / "shot.blend"


def francine(capsys, *argv) -> tuple[int, str, str]:
    """The CLI in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()  # what came before (Blender's lines) is not the CLI's
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def user_of(adapters, client) -> str:
    key = client.session.headers["Authorization"].split()[1]
    return adapters.store.get_user(users.key_hash(key))["id"]


def started(err: str) -> list[tuple[str, str, int | None]]:
    """(session, execution, frames) of every id line the CLI printed."""
    return [(s, e, int(f) if f else None) for s, e, f in IDS.findall(err)]


def read_exr(path: pathlib.Path) -> np.ndarray:
    import OpenEXR

    with OpenEXR.File(str(path)) as f:
        return np.asarray(f.channels()["RGBA"].pixels, np.float32)


# --- the file, without a server --------------------------------------------------------

def test_dependencies_are_found_without_blender(shot, capsys):
    with blender_cli.dependencies(shot) as packed:
        assert packed.blend == "shot.blend"
        assert packed.files == {"shot.blend": shot,
                                "maps/checker.png": shot.parent / "maps" / "checker.png"}
    (shot.parent / "maps" / "checker.png").unlink()
    with pytest.raises(cli.CliError, match="//maps/checker.png"):
        blender_cli.dependencies(shot)


@pytest.mark.parametrize("spec,frames", [
    ("1-3", [1, 2, 3]), ("4", [4]), ("1-2,7", [1, 2, 7]), ("1..3", [1, 2, 3]),
    (" 2 - 3 , 9", [2, 3, 9]), ("-2--1", [-2, -1]), ("-1-1", [-1, 0, 1])])
def test_frame_ranges(spec, frames):
    assert blender_cli.parse_frames(spec) == frames


@pytest.mark.parametrize("spec,words", [
    ("3-1", "ends before it starts"), ("a-b", "1..24"), ("", "1-3,10"), ("1-", "1-24"),
    ("1-3,2", "frame 2 is named twice"), ("1,,2", "a range")])
def test_bad_frame_ranges(spec, words):
    with pytest.raises(cli.CliError, match="--frames") as e:
        blender_cli.parse_frames(spec)
    assert words in str(e.value)


def test_ctrl_c_while_something_is_being_created_waits_for_the_answer():
    reached = []
    with pytest.raises(KeyboardInterrupt), blender_cli.held_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        reached.append("the request's answer")
    assert reached == ["the request's answer"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # A second Ctrl-C does not wait.
    with pytest.raises(KeyboardInterrupt), blender_cli.held_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        reached.append("never")
    assert reached == ["the request's answer"]


def test_size_and_percentage_are_computed_here(shot, tmp_path):
    # The file says 64×48 at 50 %: inspection (and the api) see 32×24.
    bpy.ops.wm.open_mainfile(filepath=str(shot))
    bpy.context.scene.render.resolution_x, bpy.context.scene.render.resolution_y = 64, 48
    bpy.context.scene.render.resolution_percentage = 50
    bpy.ops.wm.save_mainfile()

    def size(**options):
        scene = blender_cli.prepare(shot, tmp_path / "o.png", None, **options).scene
        return scene.get("width"), scene.get("height")

    assert size() == (None, None)  # the file's own: the api fills it in
    # The percentage replaces the file's own, as Blender's setting does.
    assert size(percentage=100) == (64, 48)
    assert size(percentage=25) == (16, 12)
    assert size(size="40x30") == (40, 30)
    assert size(size="40x30", percentage=50) == (20, 15)
    assert size(size="3x3", percentage=10) == (1, 1)  # never below one pixel
    assert size(size="16384x10", percentage=100) == (16384, 10)


def test_checks_before_anything_is_created(client, shot, tmp_path, capsys):
    (tmp_path / "a_0002.png").mkdir()  # where frame 2 would go
    (tmp_path / "folder.png").mkdir()
    blend = str(shot)
    base = ["render", blend, "--samples", "1", *api(client)]
    cases = [
        (["-o", tmp_path / "missing" / "o.exr"], ["missing", "does not exist"]),
        (["-o", tmp_path / "folder.png"], ["folder.png", "is a directory"]),
        (["-o", tmp_path / "a.png", "--frames", "1-3"], ["a_0002.png", "is a directory"]),
        (["-o", tmp_path / "o.tiff"], [".tiff", ".png", ".jpg", ".jpeg", ".exr"]),
        (["-o", tmp_path / "o"], ["no extension", ".png", ".jpg", ".jpeg", ".exr"]),
        (["-o", tmp_path / "o.png", "--format", "exr"], ["o.png", "png", "--format", "exr"]),
        (["-o", tmp_path / "o.png", "--camera", "Nope"], ["--camera Nope", "Camera"]),
        (["-o", tmp_path / "o.png", "--scene", "Nope"], ["--scene Nope", "Shot"]),
        (["-o", tmp_path / "o.png", "--frames", "2-5"], ["frame 5", "'Shot'", "1-3"]),
        (["-o", tmp_path / "o.png", "--frames", "0"], ["frame 0", "1-3"]),
        (["-o", tmp_path / "o.png", "--frames", "1to3"], ["1to3", "1-24", "1..24"]),
        (["-o", tmp_path / "o.png", "--size", "0x10"], ["--size 0x10", "WIDTHxHEIGHT",
                                                        "16384"]),
        (["-o", tmp_path / "o.png", "--size", "640"], ["--size 640", "WIDTHxHEIGHT"]),
        (["-o", tmp_path / "o.png", "--size", "20000x10"], ["16384"]),
        (["-o", tmp_path / "o.png", "--resolution-percentage", "0"], ["1 to 1000"]),
        (["-o", tmp_path / "o.png", "--resolution-percentage", "1001"], ["1 to 1000"]),
        (["-o", tmp_path / "o.png", "--size", "10000x100", "--resolution-percentage", "200"],
         ["20000x200", "16384"]),
        (["-o", tmp_path / "o.png", "--session", "0123abcd"], ["--session", ".blend"]),
    ]
    for extra, words in cases:
        code, _, err = francine(capsys, *base, *extra)
        line = one_line(err)
        assert code == 1, line
        for w in words:
            assert w in line, (extra, line)
    code, _, err = francine(capsys, "render", tmp_path / "nope.blend", "-o",
                            tmp_path / "o.png", *api(client))
    assert code == 1 and "no such .blend file" in one_line(err)
    code, _, err = francine(capsys, "render", "ao", "-o", tmp_path / "o.png", "--frames",
                            "1-3", *api(client))
    assert code == 1 and "--frames is for .blend files" in one_line(err)
    assert client.sessions() == []  # nothing reached the server
    assert not any(tmp_path.glob("o*"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_an_output_folder_without_write_permission(client, shot, tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    code, _, err = francine(capsys, "render", shot, "-o", folder / "o.png", *api(client))
    assert code == 1 and "not writable" in one_line(err)
    assert client.sessions() == []


# --- against the stack ------------------------------------------------------------------

def test_frames_write_exactly_the_files_they_name(client, shot, tmp_path, capsys):
    out = tmp_path / "out" / "anim.exr"
    out.parent.mkdir()
    code, stdout, err = francine(capsys, "render", shot, "-o", out, "--parallel", "2",
                                 "--samples", "2", "--frames", "1-3", *api(client))
    assert code == 0, err
    names = [out.with_name(f"anim_{f:04d}.exr") for f in (1, 2, 3)]
    assert sorted(out.parent.iterdir()) == names  # anim.exr itself is not written
    assert stdout.splitlines()[0] == f"wrote {names[0]}, {names[1]}, {names[2]}"
    # One execution renders the frames: its id went to stderr, and the API knows it.
    (sid, eid, count), = started(err)
    assert count == 3
    listed, = client.executions(sid)
    assert listed["id"] == eid and listed["frames"]["done"] == 3
    assert "3/3 frames" in err
    images = [read_exr(p) for p in names]
    assert all(i.shape == (24, 32, 4) for i in images)
    # The ball moves: each frame differs from the one before.
    assert all(np.abs(a - b).mean() > 1e-3 for a, b in zip(images, images[1:], strict=False))
    # Each file is its frame's result.
    for frame, path in zip((1, 2, 3), names, strict=True):
        assert path.read_bytes() == client.result(sid, eid, frame)


def test_resolution_percentage_replaces_the_files_own(client, shot, tmp_path, capsys):
    bpy.ops.wm.open_mainfile(filepath=str(shot))
    bpy.context.scene.render.resolution_x, bpy.context.scene.render.resolution_y = 64, 48
    bpy.context.scene.render.resolution_percentage = 50  # 32×24 as saved
    bpy.ops.wm.save_mainfile()
    out = tmp_path / "small.exr"
    code, stdout, err = francine(capsys, "render", shot, "-o", out, "--parallel", "1",
                                 "--samples", "1", "--resolution-percentage", "25",
                                 *api(client))
    assert code == 0, err
    assert stdout.splitlines()[0] == f"wrote {out}"
    assert read_exr(out).shape == (12, 16, 4)  # 25 % of 64×48, not of 32×24


def test_a_refused_execution_deletes_the_session(client, adapters, shot, tmp_path, capsys):
    user = user_of(adapters, client)
    users.set_quota(adapters.store, user, "executions_in_flight", 0)
    code, stdout, err = francine(capsys, "render", shot, "-o", tmp_path / "a.png",
                                 "--parallel", "16", "--samples", "2", "--frames", "1-3",
                                 *api(client))
    assert code == 1
    assert started(err) == []
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert "the api refused the render" in line
    assert "in flight" in line and "429 quota_exceeded" in line  # the server's words
    assert "deleted session" in line
    assert client.sessions() == []
    assert quotas.in_flight(adapters, user) == []  # nothing runs
    assert not any(tmp_path.glob("a_*"))


def test_a_refused_upload_deletes_the_session(client, adapters, shot, tmp_path, capsys):
    users.set_quota(adapters.store, user_of(adapters, client), "stored_bytes", 1000)
    code, _, err = francine(capsys, "render", shot, "-o", tmp_path / "a.png", *api(client))
    line = one_line(err)
    assert code == 1
    assert "429 quota_exceeded" in line and "deleted session" in line
    assert client.sessions() == []


def slow_render(client, shot, out: pathlib.Path) -> tuple[subprocess.Popen, str, str]:
    """A ``francine render`` of dozens of tasks (seconds of work on two workers), and
    the ids it prints before rendering."""
    p = subprocess.Popen([*FRANCINE, "render", str(shot), "-o", str(out), "--parallel", "48",
                          "--samples", "32", *api(client)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in p.stderr:
        seen.append(line)
        if IDS.search(line):
            (sid, eid, _), = started(line)
            return p, sid, eid
    raise AssertionError(f"no ids printed: {''.join(seen)}")


def test_ctrl_c_cancels_the_execution_it_started(client, shot, tmp_path):
    p, sid, eid = slow_render(client, shot, tmp_path / "o.png")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert f"cancelled execution {eid}" in err and f"session {sid} kept" in err
    assert client.execution(sid, eid)["status"] == "cancelled"
    assert not (tmp_path / "o.png").exists()


def test_a_render_cancelled_elsewhere_says_so(client, shot, tmp_path):
    p, sid, eid = slow_render(client, shot, tmp_path / "o.png")
    assert client.cancel(sid, eid)["status"] == "cancelled"
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1
    assert "Traceback" not in err and "None" not in err
    assert f"execution {eid} was cancelled elsewhere" in err
    assert client.sessions() == []  # made for this render, it goes with it
    assert not (tmp_path / "o.png").exists()


def test_the_image_of_one_frame_is_the_executions_result(client, shot, tmp_path, capsys):
    out = tmp_path / "one.jpg"
    code, stdout, err = francine(capsys, "render", shot, "-o", out, "--parallel", "1",
                                 "--samples", "1", "--size", "20x10", "--camera", "Camera",
                                 "--scene", "Shot", *api(client))
    assert code == 0, err
    (sid, eid, frame), = started(err)
    assert frame is None
    assert out.read_bytes() == client.result(sid, eid)
    from PIL import Image

    assert Image.open(io.BytesIO(out.read_bytes())).size == (20, 10)
    assert client.get_session(sid)["format"] == "jpeg"
    assert "producing" in stdout  # the time breakdown


def test_files_from_anywhere_on_disk_render_as_blender_renders_them(client, capsys, tmp_path):
    """A .blend whose name and textures' names have spaces, commas and other letters, in
    a folder beside its textures (``//../textures``), with one image by an absolute path
    elsewhere: uploaded under the common folder, the absolute one remapped (and said),
    and the image is what Blender renders of the file as the user has it."""
    from test_blender_pipeline import bpy_render

    from francine.domain import planning
    from francine.producers.blender import examples

    odd = "Golden Palace 2, Old Bagan-1k.png"
    examples.checker_png(tmp_path / "proj" / "textures" / odd)
    examples.checker_png(tmp_path / "elsewhere" / "decal.png")
    blend = tmp_path / "proj" / "shots" / "basic_file_ñønæščii.blend"
    examples.build(blend, 32, 24, texture=f"../textures/{odd}")
    decal = bpy.data.images.load(str(tmp_path / "elsewhere" / "decal.png"))
    decal.filepath = str(tmp_path / "elsewhere" / "decal.png")  # absolute
    world = bpy.context.scene.world.node_tree  # the decal lights the scene
    sky = world.nodes.new("ShaderNodeTexEnvironment")
    sky.image = decal
    world.links.new(sky.outputs["Color"], world.nodes["Background"].inputs["Color"])
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), relative_remap=False)

    out = tmp_path / "out.exr"
    code, _, err = francine(capsys, "render", blend, "-o", out, "--parallel", 2,
                            "--samples", 2, *api(client))
    assert code == 0, err
    assert f"remapped {tmp_path / 'elsewhere' / 'decal.png'} → _outside_project/" in err
    [(sid, eid, _)] = started(err)
    names = {r["name"] for r in client.request(
        "GET", f"/v1/sessions/{sid}/resources").json()["resources"]}
    assert {"shots/basic_file_ñønæščii.blend", f"textures/{odd}"} <= names
    assert any(n.startswith("_outside_project/") and n.endswith("decal.png") for n in names)
    expected = np.mean([bpy_render(blend, planning.seed_for(eid, p), 2, tmp_path)
                        for p in range(2)], axis=0)
    np.testing.assert_allclose(read_exr(out), expected, rtol=1e-4, atol=2e-5)
