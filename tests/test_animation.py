"""Animations over the twins (the real api start, render worker, reducer and watchdog):
a frame range is one execution whose frames render as executions of their own, in
order, a window at a time; quotas count it once; a failed frame is reported and the
rest go on (or, asked to, stops the shot); a cancel keeps the finished frames; a lost
status message is made up for by the watchdog; each frame's image is its frame's.
The Blender frames against Blender itself: tests/test_animation_blender.py."""

from __future__ import annotations

import dataclasses
import io

import animated
import numpy as np
import pytest
from PIL import Image

from francine.base import errors
from francine.base.config import Settings
from francine.domain import planning
from francine.domain.records import Session, Status
from francine.handlers import watchdog
from francine.handlers.reducer import Reducer
from francine.handlers.worker import Worker
from francine.services import animation, executions, quotas, video, views
from francine.twins import pump, twin_adapters

SCENE = {"width": 32, "height": 16, "nao_samples": 2}


@pytest.fixture(autouse=True)
def flipbook():
    return animated.register()


def adapters(scene=SCENE, producer="flipbook", **settings):
    settings = {"min_task_s": 0.0, "max_render_instances": 2, **settings}
    ad = twin_adapters(dataclasses.replace(Settings(), **settings))
    ad.store.create_session(Session("s", "u", producer, "png", scene))
    return ad


def start(ad, frames="1-4", **body):
    return executions.start(ad, "u", "s", {"parallel": 2, "tile": 16, "frames": frames,
                                           **body}, admit=quotas.admission(ad, "u"))[0]


def run(ad):
    pump(ad, Worker(ad), Reducer(ad))
    return ad.store.execution  # for brevity at the call site


def image(ad, ex) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(ad.blobs.get_result(ex.result))), dtype=float)


def test_a_frame_range_is_one_execution_and_each_frame_is_its_frames_image():
    ad = adapters()
    ex = start(ad)
    assert ex.frames == [1, 2, 3, 4]
    assert [e.id for e in ad.store.list_executions("s") if e.parent is None] == [ex.id]
    # one execution in the quotas, reserving every frame's CPU
    usage = quotas.in_flight(ad, "u")
    assert len(usage) == 1
    single = start(adapters(), frames="1")
    assert usage[0]["cpu_estimate"] == pytest.approx(4 * single.cpu_estimate)
    shape = planning.Shape.from_dict(ex.shape)
    run(ad)
    ex = ad.store.execution("s", ex.id)
    assert ex.status == Status.DONE
    status = views.view(ad, ex)
    assert status["frames"] == {"total": 4, "done": 4, "failed": 0, "failed_frames": [],
                                "rendering": None, "window": ex.frame_window}
    assert status["tasks"]["done"] == status["tasks"]["total"] == 4 * shape.total_tasks
    frames = {e.frame: e for e in animation.done_frames(ad, ex)}
    assert sorted(frames) == [1, 2, 3, 4]
    # The stand-in renders the frame at frame/10 brightness: each image is its frame's.
    means = {f: image(ad, e).mean() for f, e in frames.items()}
    for f in (2, 3, 4):
        assert means[f] / means[1] == pytest.approx(f, rel=0.15)
    # The scene patch applies to every frame; the frame is set per frame.
    assert all(e.scene["nao_samples"] == 2 and e.scene["frame"] == f
               for f, e in frames.items())


def test_frames_start_in_order_a_window_at_a_time_and_end_in_order():
    ad = adapters(max_render_instances=1)
    ex = start(ad, frames="1-6")
    assert ex.frame_window >= 2
    seen_open = []
    ended = []
    publish = ad.bus.publish_status

    def status(message):
        publish(message)
        e = message["execution"]
        if e.get("animation") and e["status"] in ("done", "failed", "cancelled"):
            ended.append(e["frame"])
        frames = ad.store.frames_of("s", ex.id)
        seen_open.append(sum(not f.final for f in frames))

    ad.bus.publish_status = status
    run(ad)
    assert ad.store.execution("s", ex.id).status == Status.DONE
    assert max(seen_open) <= ex.frame_window
    assert ended == sorted(ended) == [1, 2, 3, 4, 5, 6]
    # The animation's own document is written when created, published and ended only,
    # never per frame.
    assert len(ad.store.meter.writes[f"sessions/s/executions/{ex.id}"]) <= 3


def test_one_webhook_and_one_final_status_for_the_animation():
    ad = adapters()
    sent = []
    publish = ad.bus.publish_status

    def status(message):
        sent.append(message["execution"])
        publish(message)

    ad.bus.publish_status = status
    ex = start(ad)
    run(ad)
    mine = [m for m in sent if m["id"] == ex.id]
    assert [m["status"] for m in mine] == ["queued", "done"]
    frames = [m for m in sent if m.get("animation") == ex.id and m["status"] == "done"]
    assert sorted(m["frame"] for m in frames) == [1, 2, 3, 4]
    # A frame's execution has no webhook unless per-frame notifications were asked for.
    assert all(e.notify_url is None for e in ad.store.frames_of("s", ex.id))


def test_over_the_quota_a_frame_range_is_refused_with_nothing_started():
    ad = adapters()
    ad.store.create_user("k", {"id": "u", "name": "u", "quotas": {}})
    single = start(ad, frames="1")
    run(ad)
    cpu = single.cpu_estimate
    ad.store.update_user("k", {"quotas": {"cpu_seconds_per_day": cpu * 30}})
    before = {e.id for e in ad.store.list_executions("s")}
    with pytest.raises(errors.BadRequest) as refused:
        start(ad, frames="1-40")
    assert refused.value.code == "over_budget" and "40 frames" in refused.value.message
    assert {e.id for e in ad.store.list_executions("s")} == before
    assert not ad.bus.pull("render", 100)


def test_frames_are_for_producers_that_have_them():
    ad = adapters(producer="ao")
    with pytest.raises(errors.BadRequest) as refused:
        start(ad)
    assert "only blender scenes have frames" in refused.value.message
    ad = adapters()
    with pytest.raises(errors.BadRequest) as refused:
        start(ad, frames="30-45")
    assert refused.value.message.startswith("frames: frame 45 is outside")
    with pytest.raises(errors.BadRequest):
        start(ad, frames="4-1")
    with pytest.raises(errors.BadRequest):
        executions.start(ad, "u", "s", {"step": 2})


class FailingFrame(animated.Flipbook):
    name = "flipbook-failing"
    bad = 2

    def render(self, scene, tile, seed, resources=None):
        if scene["frame"] == self.bad:
            raise ValueError("this frame cannot render")
        return super().render(scene, tile, seed, resources)


@pytest.mark.parametrize("policy", ["continue", "stop"])
def test_a_failed_frame_is_reported_and_by_default_the_rest_render(policy):
    from francine import producers

    producers.register(FailingFrame())
    ad = adapters(producer="flipbook-failing")
    ex = start(ad, frames="1-5", on_frame_failure=policy)
    run(ad)
    ex = ad.store.execution("s", ex.id)
    status = views.view(ad, ex)
    by_frame = {f["frame"]: f["status"] for f in views.frame_list(ad, ex)}
    assert by_frame[2] == "failed"
    if policy == "continue":
        assert ex.status == Status.DONE
        assert status["frames"]["failed_frames"] == [2]
        assert [f for f, s in by_frame.items() if s == "done"] == [1, 3, 4, 5]
    else:
        assert ex.status == Status.FAILED
        assert ex.error["code"] == "frame_failed" and "frame 2" in ex.error["message"]
        assert by_frame[1] == "done"
        assert all(s in ("cancelled", "failed") for f, s in by_frame.items() if f > 1)


def test_a_cancel_mid_shot_keeps_the_finished_frames():
    ad = adapters(max_render_instances=1)
    ex = start(ad, frames="1-8")
    worker, reducer = Worker(ad), Reducer(ad)
    while not animation.done_frames(ad, ex):  # until the first frame is done
        pump(ad, worker, reducer, limit=1)
    animation.cancel(ad, ad.store.execution("s", ex.id))
    run(ad)
    ex = ad.store.execution("s", ex.id)
    assert ex.status == Status.CANCELLED
    done = animation.done_frames(ad, ex)
    assert done and done[0].frame == 1 and len(done) < 8
    assert all(f.final for f in ad.store.frames_of("s", ex.id))
    statuses = {f["frame"]: f["status"] for f in views.frame_list(ad, ex)}
    assert statuses[8] == "cancelled"
    assert image(ad, done[0]).mean() > 0  # still downloadable


def test_a_lost_status_message_is_made_up_for_by_the_watchdog():
    ad = adapters()
    ex = start(ad, frames="1-5")
    ad.bus.publish_status = lambda message: None  # every status message lost
    run(ad)
    assert not ad.store.execution("s", ex.id).final
    for _ in range(10):
        report = watchdog.sweep(ad)
        run(ad)
        if ad.store.execution("s", ex.id).final:
            break
    assert report["frames"] >= 1
    assert ad.store.execution("s", ex.id).status == Status.DONE
    assert len(animation.done_frames(ad, ex)) == 5


def test_the_preview_video_has_every_finished_frame_and_is_cached():
    ad = adapters(scene={"width": 33, "height": 17, "nao_samples": 1})
    ex = start(ad, frames="1-3", tile=None)
    run(ad)
    ex = ad.store.execution("s", ex.id)
    name = video.of_animation(ad, ex)
    data = ad.blobs.get_result(name)
    probe = video.probe(data)
    assert probe["frames"] == 3 and probe["size"] == (34, 18) and probe["fps"] == 12
    assert probe["pix_fmt"].startswith("yuv420p") and probe["codec"].startswith("h264")
    puts = []
    put = ad.blobs.put_result
    ad.blobs.put_result = lambda *a: (puts.append(a), put(*a))
    assert video.of_animation(ad, ex) == name and not puts  # not encoded again


class Dying(animated.Flipbook):
    """Renders die now and then (the instance is gone: the message comes back)."""

    name = "flipbook-dying"

    def __init__(self, seed: int):
        super().__init__()
        self.rng = __import__("random").Random(seed)

    def render(self, scene, tile, seed, resources=None):
        if self.rng.random() < 0.2:
            raise errors.TransientError("the instance died")
        return super().render(scene, tile, seed, resources)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_frame_recovers_as_a_single_image_does(seed):
    """Deliveries shuffled and duplicated, renders dying, status messages lost now and
    then (the watchdog makes up for them): every frame ends done, with the very image
    of a clean run (same execution id, same seeds)."""
    import random

    from francine import producers

    def images(ad):
        ex = ad.store.execution("s", animation_id)
        assert ex.status == Status.DONE, ex.error
        return {e.frame: ad.blobs.get_result(e.result) for e in animation.done_frames(ad, ex)}

    clean = adapters()
    animation_id = executions.start(clean, "u", "s", {"parallel": 3, "tile": 16,
                                                      "frames": "1-5"}, "key")[0].id
    run(clean)
    producers.register(Dying(seed))
    ad = adapters(producer="flipbook-dying")
    assert executions.start(ad, "u", "s", {"parallel": 3, "tile": 16, "frames": "1-5"},
                            "key")[0].id == animation_id
    rng = random.Random(seed)
    publish = ad.bus.publish_status
    ad.bus.publish_status = lambda m: rng.random() < 0.3 or publish(m)

    def chaos(batch):
        rng.shuffle(batch)
        return batch + rng.sample(batch, len(batch) // 3)  # duplicates

    worker, reducer = Worker(ad), Reducer(ad)
    for _ in range(30):
        pump(ad, worker, reducer, order=chaos)
        if ad.store.execution("s", animation_id).final:
            break
        watchdog.sweep(ad, stall_s=0.0)
    assert images(ad) == images(clean)


def test_with_farm_admission_frames_queue_in_order_on_one_reservation():
    """The animation reserves its fair share once, for every frame (one write of its
    user's account, not one per frame), and each frame's tasks queue after those of
    the frames before it: the farm serves the earliest frame first."""
    ad = adapters(farm_slots=2)
    ex = start(ad, frames="1-6")
    frames = ad.store.frames_of("s", ex.id)
    assert len(frames) == ex.frame_window >= 2
    tags = [sorted(d["tag"] for d in ad.store.tasks[("s", f.id)].values() if "tag" in d)
            for f in frames]
    assert all(a[-1] < b[0] for a, b in zip(tags, tags[1:], strict=False))
    run(ad)
    assert ad.store.execution("s", ex.id).status == Status.DONE
    accounts = [len(times) for path, times in ad.store.meter.writes.items()
                if path.startswith("farms/") and "/users/" in path]
    assert accounts == [1]
    # End-game copies only in the first window and the last.
    w = ex.frame_window
    assert w < 3
    assert [f.endgame for f in ad.store.frames_of("s", ex.id)] == \
        [i < w or i >= 6 - w for i in range(6)]
