"""``francine render scene.blend``: the file and what it reads by relative path are
uploaded, and a frame range gives one image per frame."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from francine import blender_cli, cli

bpy = pytest.importorskip("bpy")


@pytest.fixture
def shot(tmp_path):
    from francine.producers.blender import examples

    examples.checker_png(tmp_path / "maps" / "checker.png")
    examples.build(tmp_path / "shot.blend", 32, 24, texture="maps/checker.png", frames=3)
    return tmp_path / "shot.blend"


def test_dependencies_are_found_without_blender(shot):
    assert blender_cli.dependencies(shot) == {
        "shot.blend": shot, "maps/checker.png": shot.parent / "maps" / "checker.png"}
    (shot.parent / "maps" / "checker.png").unlink()
    with pytest.raises(ValueError, match="maps/checker.png"):
        blender_cli.dependencies(shot)


@pytest.mark.parametrize("spec,frames", [("1-3", [1, 2, 3]), ("4", [4]), ("1-2,7", [1, 2, 7])])
def test_frame_ranges(spec, frames):
    assert blender_cli.parse_frames(spec) == frames


@pytest.mark.parametrize("spec", ["3-1", "a-b", ""])
def test_bad_frame_ranges(spec):
    with pytest.raises(ValueError, match="--frames"):
        blender_cli.parse_frames(spec)


def test_render_a_frame_range(stack, client, shot, tmp_path, capsys):
    out = tmp_path / "out" / "ball.png"
    out.parent.mkdir()
    assert cli.main(["render", str(shot), "-o", str(out), "--parallel", "2", "--samples", "2",
                     "--frames", "1-3", "--api", client.api_url,
                     "--key", client.session.headers["Authorization"][7:]]) == 0
    images = [np.asarray(Image.open(io.BytesIO(out.with_name(f"ball_{f:04d}.png").read_bytes())))
              for f in (1, 2, 3)]
    assert all(i.shape == (24, 32, 4) for i in images)
    # The ball moves: each frame differs from the one before.
    pairs = zip(images[:-1], images[1:], strict=True)
    assert all(np.abs(a.astype(int) - b).mean() > 1 for a, b in pairs)
    assert "3/3 frames" in capsys.readouterr().err
