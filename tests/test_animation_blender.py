"""An animation of a Blender file through the whole pipeline on the local stack, checked
against Blender itself: a scene whose sphere moves over frames 1-4, rendered as one
execution. Each frame's image is the mean of full-frame ``bpy`` renders of that frame
with its passes' seeds, and is closer to that frame's high-sample render than to any
other frame's; the preview video holds the 4 frames; the CLI writes 4 files as the
frames finish, and the video."""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np
import pytest
from test_blender_cli import api, francine, read_exr, started
from test_blender_pipeline import bpy_render, mse
from test_blender_pipeline import read_exr as exr_of_bytes
from test_events_webhooks import receiver  # noqa: F401 - a fixture

from francine.domain import planning
from francine.services import animation, video
from francine.tools.client import ApiError

bpy = pytest.importorskip("bpy")

WIDTH, HEIGHT = 32, 24
FRAMES = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def shot(tmp_path_factory) -> pathlib.Path:
    from francine.producers.blender import examples

    root = tmp_path_factory.mktemp("shot")
    examples.checker_png(root / "maps" / "checker.png")
    examples.build(root / "shot.blend", WIDTH, HEIGHT, texture="maps/checker.png",
                   frames=len(FRAMES))
    return root / "shot.blend"


def session(client, shot: pathlib.Path, samples: int) -> str:
    sid = client.create_session("blender", {"blend": "shot.blend", "samples": samples},
                                fmt="exr")["id"]
    client.put_resource(sid, "shot.blend", shot.read_bytes())
    client.put_resource(sid, "maps/checker.png",
                        (shot.parent / "maps" / "checker.png").read_bytes())
    return sid


def test_each_frame_is_blenders_render_of_that_frame(client, shot, tmp_path):
    sid = session(client, shot, samples=4)
    e = client.execute(sid, parallel=2, tile=16, frames="1-4")
    assert e["frames"]["total"] == 4
    status = client.wait(sid, e["id"], timeout_s=300)
    assert status["status"] == "done", status
    assert status["frames"]["done"] == 4 and status["frames"]["failed"] == 0
    listed = client.frames(sid, e["id"])
    assert [f["frame"] for f in listed] == list(FRAMES)
    assert all(f["status"] == "done" and f["result"].endswith(f"?frame={f['frame']}")
               for f in listed)
    # One execution in the session's list: the frames are its own.
    assert [x["id"] for x in client.executions(sid)] == [e["id"]]
    references = {f: bpy_render(shot, 7, 128, tmp_path, frame=f) for f in FRAMES}
    for f in FRAMES:
        got = exr_of_bytes(client.result(sid, e["id"], f), tmp_path)
        assert got.shape == (HEIGHT, WIDTH, 4)
        # The same pixels as Blender's full-frame renders of frame f with the passes' seeds.
        fid = animation.frame_id(e["id"], f)
        expected = np.mean([bpy_render(shot, planning.seed_for(fid, p), 4, tmp_path, frame=f)
                            for p in range(2)], axis=0)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        # And it is frame f: closer to frame f's converged render than to any other's.
        errors = {g: mse(got, ref) for g, ref in references.items()}
        assert min(errors, key=errors.get) == f, errors
    # The preview video: the 4 frames, H.264 yuv420p at the scene's rate.
    data = client.video(sid, e["id"])
    probe = video.probe(data)
    assert probe["frames"] == 4 and probe["size"] == (WIDTH, HEIGHT)
    assert probe["codec"].startswith("h264") and probe["pix_fmt"].startswith("yuv420p")
    assert probe["fps"] == 24
    # Which frame, said clearly: none named, one that is not the animation's.
    with pytest.raises(ApiError) as no_frame:
        client.result(sid, e["id"])
    assert (no_frame.value.status, no_frame.value.code) == (400, "frame_required")
    with pytest.raises(ApiError) as not_one:
        client.result(sid, e["id"], 9)
    assert not_one.value.status == 404 and "frame 9" in not_one.value.message


def test_the_cli_writes_each_frame_and_the_video(client, shot, tmp_path, capsys):
    out = tmp_path / "out" / "shot.exr"
    out.parent.mkdir()
    mp4 = tmp_path / "out" / "shot.mp4"
    code, stdout, err = francine(capsys, "render", shot, "-o", out, "--parallel", "1",
                                 "--samples", "1", "--frames", "1-4", "--video", mp4,
                                 *api(client))
    assert code == 0, err
    names = [out.with_name(f"shot_{f:04d}.exr") for f in FRAMES]
    assert sorted(out.parent.iterdir()) == sorted([*names, mp4])
    (sid, eid, count), = started(err)
    assert count == 4
    assert all(read_exr(p).shape == (HEIGHT, WIDTH, 4) for p in names)
    assert video.probe(mp4.read_bytes())["frames"] == 4
    assert "4/4 frames" in err
    # executions result --frame writes one frame; without it, a clear error
    one = tmp_path / "two.exr"
    code, _, err = francine(capsys, "executions", "result", f"{sid}/{eid}", "-o", one,
                            "--frame", "2", *api(client))
    assert code == 0, err
    assert one.read_bytes() == names[1].read_bytes()
    code, _, err = francine(capsys, "executions", "result", f"{sid}/{eid}", "-o", one,
                            *api(client))
    assert code == 1 and "--frame" in err


def test_a_cancel_mid_shot_keeps_the_finished_frames(client, shot, tmp_path):
    """Frames of many passes: the stream says when the first frame ends; a cancel then
    stops the others, and the finished frames stay downloadable."""
    sid = session(client, shot, samples=8)
    e = client.execute(sid, parallel=12, tile=32, frames="1-4")
    ended = None
    for name, data in client.all_events(sid, e["id"]):
        if name == "frame":
            ended = data
            break
    assert ended is not None and ended["status"] == "done", ended
    status = client.cancel(sid, e["id"])
    assert status["status"] == "cancelled"
    listed = {f["frame"]: f for f in client.frames(sid, e["id"])}
    done = [n for n, f in listed.items() if f["status"] == "done"]
    assert ended["frame"] in done and len(done) < 4
    assert all(f["status"] in ("done", "cancelled") for f in listed.values())
    image = exr_of_bytes(client.result(sid, e["id"], ended["frame"]), tmp_path)
    assert image.shape == (HEIGHT, WIDTH, 4) and float(image[..., :3].mean()) > 0
    later = max(n for n, f in listed.items() if f["status"] == "cancelled")
    with pytest.raises(ApiError) as not_done:
        client.result(sid, e["id"], later)
    assert not_done.value.status == 409


def test_the_webhook_fires_once_for_the_animation(client, shot, receiver):  # noqa: F811
    """Not once per frame: one delivery of the animation's final status (retried once
    here: the receiver fails its first request)."""
    url, received = receiver
    sid = session(client, shot, samples=1)
    eid = client.request("POST", f"/v1/sessions/{sid}/executions", json={
        "parallel": 1, "frames": "1-3", "notify_url": url}).json()["id"]
    assert client.wait(sid, eid, timeout_s=120)["status"] == "done"
    deadline = time.monotonic() + 60
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # any per-frame delivery would have come by now
    assert [h["X-Francine-Delivery"] for h, _ in received] == [eid, eid]
    body = json.loads(received[1][1])
    assert body["status"] == "done" and body["frames"]["done"] == 3


def test_the_cli_estimates_and_renders_nothing(client, shot, tmp_path, capsys):
    out = tmp_path / "shot.exr"
    code, stdout, err = francine(capsys, "render", shot, "-o", out, "--parallel", "2",
                                 "--samples", "1", "--frames", "1-4", "--estimate",
                                 *api(client))
    assert code == 0, err
    assert stdout.startswith("estimate (4 frames), ")
    assert "tasks" in stdout and "cost       $" in stdout and "wall time" in stdout
    assert not any(tmp_path.glob("shot*.exr"))
    assert client.sessions() == []  # the session made for the price went again
