"""Waves over the twins (the real api start, render worker, reducer and watchdog): a
noise target stops when the image is good enough, tile by tile; a spending cap stops a
render with the passes it finished; an extension adds passes to a finished render and
gives the bytes of one render of all the passes. References are the ao producer's own
passes rendered here, pass by pass, and a high-sample render."""

from __future__ import annotations

import dataclasses
import io

import animated
import numpy as np
import pytest
from PIL import Image

from francine import producers
from francine.base import errors
from francine.base.config import Settings
from francine.domain import imaging, planning
from francine.domain.producer import Tile
from francine.domain.records import Session, Status
from francine.handlers import watchdog
from francine.handlers.reducer import Reducer
from francine.handlers.worker import Worker
from francine.services import estimates, executions, quotas, views, waves
from francine.twins import pump, twin_adapters

SCENE = {"width": 32, "height": 32, "nao_samples": 2}


def adapters(scene=SCENE, producer="ao", fmt="exr", **settings):
    settings = {"min_task_s": 0.0, "max_render_instances": 2, **settings}
    ad = twin_adapters(dataclasses.replace(Settings(), **settings))
    ad.store.create_session(Session("s", "u", producer, fmt, scene))
    return ad


def start(ad, **body):
    return executions.start(ad, "u", "s", {"tile": 16, **body},
                            admit=quotas.admission(ad, "u"))[0]


def run(ad, ex):
    pump(ad, Worker(ad), Reducer(ad))
    return ad.store.execution("s", ex.id)


def linear(ad, ex) -> np.ndarray:
    """The render's image as stored: the linear mean of its passes."""
    return waves.load_sum(ad, ex, ex.waves or 0).mean() if ex.waves else \
        waves.load_sum(ad, ex).mean()


def passes_image(scene, basis: str, passes: range, size=(32, 32)) -> np.ndarray:
    """The mean of the ao producer's own passes over the whole frame (float64)."""
    w, h = size
    ao = producers.get("ao")
    return np.mean([ao.render(scene, Tile(0, 0, w, h), planning.seed_for(basis, p), None)
                    for p in passes], axis=0)


def relative_rms(image: np.ndarray, reference: np.ndarray) -> float:
    lum, ref = imaging.luminance(image)[:, :, 0], imaging.luminance(reference)[:, :, 0]
    lit = ref > waves.NEAR_BLACK * ref.mean()
    return float(np.sqrt(np.mean(((lum[lit] - ref[lit]) / ref[lit]) ** 2)))


# --- extending --------------------------------------------------------------------------

def test_an_extended_render_is_byte_for_byte_one_render_of_all_its_passes():
    ad = adapters(fmt="png")
    ex = run(ad, start(ad, parallel=3, seed=7))
    assert ex.status == Status.DONE and views.view(ad, ex)["passes"] == 3
    first = ad.blobs.get_result(ex.result)
    tasks_before = {t.id for t in ad.store.tasks_in("s", ex.id, ("done",))}

    ex = waves.extend(ad, ex, {"passes": 5})
    assert views.view(ad, ex)["status"] == "running"  # in flight again
    ex = run(ad, ex)
    assert ex.status == Status.DONE
    status = views.view(ad, ex)
    assert status["passes"] == 8 and status["waves"] == 1
    # Only the new passes were rendered: one wave of 5 passes of each of the 4 tiles.
    (wave,) = waves.waves_of(ad, ex)
    assert wave.first_pass == 3 and planning.Shape.from_dict(wave.shape).passes == 5
    assert {t.id for t in ad.store.tasks_in("s", ex.id, ("done",))} == tasks_before
    assert status["tasks"]["done"] == status["tasks"]["total"] > len(tasks_before)

    # One render of 8 passes with the same seed, cut into other tiles: the same bytes.
    other = adapters(fmt="png")
    whole = run(other, start(other, parallel=8, seed=7, tile=8))
    assert ad.blobs.get_result(ex.result) == other.blobs.get_result(whole.result)
    assert ad.blobs.get_result(ex.result) != first
    # and the image is the mean of the producer's own 8 passes
    np.testing.assert_allclose(linear(ad, ex), passes_image(SCENE, "seed:7", range(8)),
                               rtol=1e-6, atol=1e-7)


def test_an_extension_is_refused_unless_the_render_is_done_and_an_image():
    ad = adapters()
    ex = start(ad, parallel=2)
    with pytest.raises(errors.Conflict) as e:
        waves.extend(ad, ex, {"passes": 2})
    assert e.value.code == "not_done"
    ex = run(ad, ex)
    for body in ({}, {"passes": 2, "until": {"noise": 0.1}}, {"passes": 4095},
                 {"passes": 0}, {"until": {"noise": 0.1, "max_passes": 2}}):
        with pytest.raises(errors.BadRequest):
            waves.extend(ad, ex, body)
    assert ad.store.execution("s", ex.id).status == Status.DONE  # nothing changed
    animated.register()
    anim = adapters(producer="flipbook")
    shot = run(anim, start(anim, parallel=1, frames="1-2"))
    with pytest.raises(errors.BadRequest, match="animation"):
        waves.extend(anim, shot, {"passes": 1})


def test_an_extension_twice_and_with_a_noise_target_adds_up():
    ad = adapters(fmt="png")
    ex = run(ad, start(ad, parallel=2, seed=3))
    ex = run(ad, waves.extend(ad, ex, {"passes": 2}))
    ex = run(ad, waves.extend(ad, ex, {"passes": 4}))
    assert views.view(ad, ex)["passes"] == 8
    other = adapters(fmt="png")
    whole = run(other, start(other, parallel=8, seed=3))
    assert ad.blobs.get_result(ex.result) == other.blobs.get_result(whole.result)
    ex = run(ad, waves.extend(ad, ex, {"until": {"noise": 0.05, "max_passes": 64}}))
    status = views.view(ad, ex)
    assert ex.status == Status.DONE and status["stopped"] in ("noise", "max_passes")
    assert status["noise"] is not None and status["passes"] > 8


# --- a noise target ---------------------------------------------------------------------

def noise_render(scene, target):
    ad = adapters(scene)
    ex = start(ad, until={"noise": target, "max_passes": 256}, seed=11)
    status = views.view(ad, ad.store.execution("s", ex.id))  # its first wave started
    assert status["passes"] == 0 and status["noise"] is None and status["waves"] == 1
    return ad, run(ad, ex)


def test_a_noise_target_stops_sooner_on_an_easy_scene_and_meets_the_target():
    """ao's nao_samples² rays a pixel and pass: 64 (easy) or 4 (hard). The error is
    measured against a render of 16,384 rays a pixel."""
    target = 0.1
    reference = passes_image({**SCENE, "nao_samples": 16}, "reference", range(64))
    results = {}
    for name, samples in (("easy", 8), ("hard", 2)):
        scene = {**SCENE, "nao_samples": samples}
        ad, ex = noise_render(scene, target)
        status = views.view(ad, ex)
        assert ex.status == Status.DONE and status["stopped"] == "noise", name
        assert status["noise"] <= target
        error = relative_rms(linear(ad, ex), reference)
        assert error <= 1.5 * target, (name, error)
        results[name] = status["passes"]
    assert results["easy"] * 4 < results["hard"]


def test_each_tile_stops_at_its_own_count_and_the_image_weights_it_by_that():
    """The ao scene's sky is white in every pass (no noise): its tiles stop after the
    first wave, the ground's go on; each tile of the image is the mean of its own
    passes, the producer's, pass by pass."""
    scene = {"width": 32, "height": 32, "nao_samples": 2}
    ad, ex = noise_render(scene, 0.04)
    total = waves.load_sum(ad, ex, ex.waves)
    counts = total.count.astype(int)
    assert counts.min() < counts.max()  # tiles stopped at different counts
    image = total.mean()
    for ty in range(2):
        for tx in range(2):
            n = counts[ty, tx]
            want = passes_image(scene, ex.seed_basis, range(n))
            tile = (slice(ty * 16, ty * 16 + 16), slice(tx * 16, tx * 16 + 16))
            np.testing.assert_allclose(image[tile], want[tile], rtol=1e-6, atol=1e-7)
    assert views.view(ad, ex)["passes"] == counts.max()


def test_a_noise_target_stops_at_max_passes():
    ad = adapters()
    ex = run(ad, start(ad, until={"noise": 0.001, "max_passes": 12}, parallel=4))
    status = views.view(ad, ex)
    assert status["stopped"] == "max_passes" and status["passes"] == 12
    assert status["noise"] > 0.001


def test_every_frame_of_an_animation_meets_the_noise_target():
    animated.register()
    ad = adapters({**SCENE, "nao_samples": 4}, producer="flipbook", fmt="png")
    ex = run(ad, start(ad, frames="3-4", until={"noise": 0.1, "max_passes": 128}))
    assert ex.status == Status.DONE
    frames = [f for f in ad.store.frames_of("s", ex.id)]
    assert [f.frame for f in frames] == [3, 4]
    for f in frames:
        view = views.view(ad, f)
        assert f.status == Status.DONE and view["stopped"] == "noise"
        assert view["noise"] <= 0.1 and view["passes"] > 8 and f.waves >= 2
        assert Image.open(io.BytesIO(ad.blobs.get_result(f.result))).size == (32, 32)


def test_a_lost_wave_status_is_made_up_by_the_watchdog():
    ad = adapters({**SCENE, "nao_samples": 4})
    ad.bus.publish_status = lambda message: None  # every status message lost
    # A fixed seed: with some seeds this scene's noisiest tile needs more than 64 passes.
    ex = run(ad, start(ad, until={"noise": 0.1, "max_passes": 64}, seed=2))
    assert views.view(ad, ex)["status"] == "running" and ex.waves == 1
    for _ in range(20):
        watchdog.sweep(ad)
        ex = run(ad, ex)
        if ex.final:
            break
    assert views.view(ad, ex)["stopped"] == "noise" and ex.waves > 1


# --- a spending cap ---------------------------------------------------------------------

def test_a_cap_below_the_estimate_is_refused_and_records_nothing():
    ad = adapters()
    ao = producers.get("ao")
    cpu, usd = estimates.price(ad, "s", planning.make_shape(32, 32, 8, 16), ao,
                               ao.validate(SCENE))
    for cap in ({"max_cpu_seconds": cpu / 2}, {"max_cost_usd": usd / 2}):
        with pytest.raises(errors.BadRequest) as e:
            start(ad, parallel=8, **cap)
        assert e.value.code == "over_cap"
    assert ad.store.list_executions("s") == []
    assert start(ad, parallel=8, max_cost_usd=usd * 2).max_cost_usd == usd * 2


def test_a_render_that_reaches_its_cap_stops_with_the_passes_it_finished(monkeypatch):
    """The estimate is far too low (as a wrong one would be): the render measures its
    first waves and stops, done, with whole passes, rather than overspend. Each render
    task is made to measure 0.25 CPU-seconds, so that the test does not depend on this
    machine's speed."""
    ad = adapters(fmt="png")
    clock = iter(range(1 << 30))
    monkeypatch.setattr(Worker, "cpu_seconds", staticmethod(lambda ex: next(clock) * 0.25))
    ex = run(ad, start(ad, parallel=64, max_cpu_seconds=48, seed=5))
    status = views.view(ad, ex)
    assert ex.status == Status.DONE and status["stopped"] == "budget"
    # 4 tiles of 0.25 s: 1 CPU-second a pass. A quarter first (16 passes), then waves
    # sized to 80% of what is left at the measured rate (25, 5, 1), until not one pass
    # fits: 47 passes, 47 CPU-seconds (and the reductions' few milliseconds)
    assert status["passes"] == 47 and status["waves"] == 4
    assert 47 <= status["spent"]["cpu_seconds"] <= 48
    counts = waves.load_sum(ad, ex, ex.waves).count
    assert (counts == counts.flat[0]).all()  # every tile has the same whole passes
    np.testing.assert_allclose(linear(ad, ex), passes_image(SCENE, "seed:5",
                                                            range(int(counts.flat[0]))),
                               rtol=1e-6, atol=1e-7)


# --- what the status and the other handlers see ------------------------------------------

def test_one_pass_has_no_noise_estimate_and_the_status_is_json():
    import json

    ad = adapters()
    ex = run(ad, start(ad, parallel=1))
    status = views.view(ad, ex)
    assert status["noise"] is None and status["passes"] == 1
    json.dumps(status, allow_nan=False)
    ex = run(ad, start(ad, parallel=4))
    assert views.view(ad, ex)["noise"] > 0  # four passes: a variance to measure


def test_an_extension_whose_status_message_is_lost_is_finished_by_the_watchdog():
    ad = adapters()
    ex = run(ad, start(ad, parallel=2))
    ad.bus.publish_status = lambda message: None
    waves.extend(ad, ex, {"passes": 2})
    assert any(e.id == ex.id for e in ad.store.active_executions())
    for _ in range(5):
        watchdog.sweep(ad)
        ex = run(ad, ex)
    assert ex.status == Status.DONE and views.view(ad, ex)["passes"] == 4


def test_a_late_event_of_the_first_render_does_not_end_its_extension():
    ad = adapters()
    ex = run(ad, start(ad, parallel=2))
    ex = waves.extend(ad, ex, {"passes": 2})
    root = planning.Shape.from_dict(ex.shape).root
    ad.bus.publish_done("s", ex.id, root)  # a redelivered event of its finished root
    ex = run(ad, ex)
    assert ex.status == Status.DONE and views.view(ad, ex)["passes"] == 4


def test_a_cancelled_or_failed_extension_keeps_the_image_and_the_render_extends_again():
    from francine.services import scheduling

    ad = adapters(fmt="png")
    ex = run(ad, start(ad, parallel=2, seed=9))
    image = ad.blobs.get_result(ex.result)
    ex = waves.extend(ad, ex, {"passes": 2})
    waves.advance(ad, ex)  # its wave starts (as the reducer does on its status)
    waves.cancel(ad, ex)
    ex = ad.store.execution("s", ex.id)
    status = views.view(ad, ex)
    assert status["status"] == "done" and status["stopped"] == "cancelled"
    assert status["passes"] == 2 and ad.blobs.get_result(ex.result) == image

    ex = waves.extend(ad, ex, {"passes": 2})  # its wave fails (its tasks did)
    waves.advance(ad, ex)
    (wave,) = [w for w in waves.waves_of(ad, ex) if not w.final]
    scheduling.end(ad, wave, Status.FAILED, {"code": "failed", "message": "renders died"})
    ex = run(ad, ex)
    status = views.view(ad, ex)
    assert status["status"] == "done" and status["stopped"] == "failed"
    assert "renders died" in status["error"]["message"] and status["passes"] == 2

    ex = run(ad, waves.extend(ad, ex, {"passes": 6}))
    assert views.view(ad, ex)["passes"] == 8 and views.view(ad, ex)["stopped"] is None
    other = adapters(fmt="png")
    whole = run(other, start(other, parallel=8, seed=9))
    assert ad.blobs.get_result(ex.result) == other.blobs.get_result(whole.result)


def test_cancelling_an_animation_with_a_noise_target_cancels_its_frames_waves():
    from francine.services import animation

    animated.register()
    ad = adapters({**SCENE, "nao_samples": 4}, producer="flipbook", fmt="png")
    ex = start(ad, frames="1-4", until={"noise": 0.1, "max_passes": 64})
    pump(ad, Worker(ad), Reducer(ad), limit=40)  # the first waves under way
    animation.cancel(ad, ad.store.execution("s", ex.id))
    run(ad, ex)
    watchdog.sweep(ad)
    run(ad, ex)
    everything = ad.store.list_executions("s")
    assert all(e.final for e in everything)
    frames = ad.store.frames_of("s", ex.id)
    assert frames and all(f.status in (Status.DONE, Status.CANCELLED) for f in frames)
    assert ad.store.execution("s", ex.id).status == Status.CANCELLED
    assert not ad.store.active_executions()
