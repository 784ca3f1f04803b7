"""A price before rendering: ``POST .../executions`` with ``"dry_run": true`` answers
200 with the estimate, plans exactly what the real request would (the same planner)
and starts nothing; a body the real request refuses is refused the same way. For
blender files the first price runs a scout, whose measurement the next price and the
planner use. Against the local stack (the emulators); the choice of basis on the
in-memory twins."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest
from test_api_contract import assert_error, call

from francine import producers
from francine.base.config import Settings
from francine.domain.records import Session
from francine.producers.blender import cost as blender_cost
from francine.services import estimates, quotes
from francine.twins import twin_adapters

FIELDS = {"dry_run", "producer", "basis", "basis_detail", "scout", "width", "height",
          "parallel", "tile", "passes_per_task", "frames", "tasks", "cpu_seconds",
          "task_seconds", "instances", "wall_seconds", "cost_usd", "usage", "prices",
          "machine", "admission", "cap", "until"}


def dry_run(client, sid: str, **body):
    return call(client, "POST", f"/v1/sessions/{sid}/executions", json={**body, "dry_run": True})


def assert_nothing_started(client, adapters, sid: str) -> None:
    assert client.executions(sid) == []
    assert adapters.store.list_executions(sid) == []  # no execution, so no task document
    assert [o.name for o in adapters.blobs.list_objects("partials", f"partials/{sid}/")] == []


def test_dry_run_answers_the_estimate_and_starts_nothing(client, adapters, small_ao):
    sid = client.create_session("ao", small_ao)["id"]
    resp = dry_run(client, sid, parallel=8, tile=32)
    assert resp.status_code == 200, resp.text
    q = resp.json()
    assert set(q) == FIELDS
    assert q["dry_run"] is True and q["producer"] == "ao" and q["basis"] == "model"
    assert q["scout"] is None
    assert (q["width"], q["height"], q["parallel"], q["tile"], q["frames"]) == (96, 64, 8, 32, 1)
    tasks = q["tasks"]
    assert tasks["production"] == 3 * 2 * 8 // q["passes_per_task"]
    assert tasks["total"] == tasks["production"] + tasks["reduction"] and tasks["reduction"] >= 1
    assert q["cpu_seconds"] > 0
    assert 0 < q["task_seconds"]["expected"] < q["task_seconds"]["bound"]
    assert 0 < q["wall_seconds"]["warm"] < q["wall_seconds"]["cold"]
    assert q["wall_seconds"]["cold_start"] > 5
    assert 0 < q["cost_usd"]["warm"] < q["cost_usd"]["cold"]
    assert set(q["cost_usd"]["by_service"]) == {"compute", "requests", "firestore", "pubsub",
                                                "storage"}
    assert q["cost_usd"]["warm"] == pytest.approx(sum(q["cost_usd"]["by_service"].values()),
                                                  rel=1e-3)
    usage = q["usage"]
    assert usage["firestore_reads"] > usage["firestore_writes"] > tasks["total"]
    assert usage["requests"] > tasks["production"] and usage["pubsub_bytes"] >= 2000
    assert q["prices"]["vcpu_second"] == 0.000024
    assert q["instances"] >= 1 and q["machine"]["render_cpu"] == 1.0
    assert q["admission"] == {"ok": True}
    assert_nothing_started(client, adapters, sid)


def test_the_price_is_of_the_render_the_request_would_start(client, small_ao):
    """The same planner: the real execution has the tasks and tile of the price; once
    it finished, the next price is measured from it."""
    sid = client.create_session("ao", small_ao)["id"]
    body = {"parallel": 4, "update": {"width": 80}}
    q = dry_run(client, sid, **body).json()
    assert client.get_session(sid)["scene"]["width"] == 96  # the update did not persist
    ex = client.execute(sid, **body)
    assert (ex["tile"], ex["width"]) == (None, 80)
    done = client.wait(sid, ex["id"])
    assert done["status"] == "done"
    assert done["tasks"]["total"] == q["tasks"]["total"]
    again = dry_run(client, sid, parallel=4).json()
    assert again["basis"] == "measured"
    assert again["tasks"] == q["tasks"]


BAD = [
    ({"parallel": 0}, "invalid_field"),
    ({"parallel": "8"}, "invalid_field"),
    ({"tile": 4}, "invalid_field"),
    ({"colour": "red"}, "invalid_field"),
    ({"update": {"nao_samples": -1}}, "invalid_scene"),
    ({"update": {"width": 4096, "height": 4096, "nao_samples": 64}, "tile": 4096},
     "tile_too_large"),
    ({"parallel": 4096, "tile": 8}, "too_many_tasks"),
    ({"notify_url": "ftp://example.com/hook"}, "invalid_field"),
    ({"frames": "1-3"}, "invalid_field"),  # ao renders still images
]


@pytest.mark.parametrize(("body", "code"), BAD)
def test_a_bad_body_is_refused_like_a_real_request(client, adapters, small_ao, body, code):
    sid = client.create_session("ao", small_ao)["id"]
    real = call(client, "POST", f"/v1/sessions/{sid}/executions", json=body)
    error = assert_error(real, 400, code)
    priced = assert_error(dry_run(client, sid, **body), 400, code)
    assert priced == error
    assert_nothing_started(client, adapters, sid)


def test_a_dry_run_of_another_users_session_is_404(client, stack, small_ao):
    from francine.tools.client import Client
    from francine.tools.local.stack import create_user_in

    sid = client.create_session("ao", small_ao)["id"]
    other = Client(stack.info["api_url"],
                   create_user_in(stack.info["env"], stack.info["project"], "quote-other"))
    assert_error(dry_run(other, sid), 404, "not_found")
    assert_error(dry_run(client, "0" * 20), 404, "not_found")


def test_a_render_over_the_budget_is_priced_and_said_to_be_refused(client, adapters):
    sid = client.create_session("ao", {"width": 2048, "height": 2048, "nao_samples": 48})["id"]
    q = dry_run(client, sid, parallel=2000).json()
    assert q["admission"]["ok"] is False
    assert (q["admission"]["status"], q["admission"]["code"]) == (400, "over_budget")
    assert q["cpu_seconds"] > 36_000
    assert_nothing_started(client, adapters, sid)


# --- blender: the scout ----------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> pathlib.Path:
    pytest.importorskip("bpy")
    from francine.producers.blender import examples

    root = tmp_path_factory.mktemp("quote-blender")
    examples.checker_png(root / "textures" / "checker.png")
    examples.build(root / "demo.blend", 160, 120, texture="textures/checker.png")
    return root


def blender_session(client, demo: pathlib.Path, **scene) -> str:
    sid = client.create_session("blender", {"blend": "demo.blend", **scene})["id"]
    client.put_resource(sid, "textures/checker.png",
                        (demo / "textures" / "checker.png").read_bytes())
    client.put_resource(sid, "demo.blend", (demo / "demo.blend").read_bytes())
    return sid


def test_the_first_price_of_a_blender_scene_scouts_it(client, adapters, demo):
    sid = blender_session(client, demo, samples=8)
    q = dry_run(client, sid, parallel=4).json()
    assert q["scout"]["ran"] is True, q["scout"]
    assert q["basis"] == "measured" and "scout" in q["basis_detail"]
    assert 0 < q["scout"]["seconds"] < 60
    assert 1e-8 < q["scout"]["cpu_seconds_per_sample"] < 1e-4
    # Kept beside the session's results: the next price and the planner find it.
    records = adapters.store.list_resources(sid)
    scene = producers.get("blender").validate(
        {"blend": "demo.blend", "samples": 8},
        {r["name"]: _info(r) for r in records})
    assert estimates.cached_scout(adapters, sid, scene, records) is not None
    again = dry_run(client, sid, parallel=4, update={"samples": 32}).json()
    assert again["scout"] == {"ran": False, "cached": True,
                              "reason": "a scout of this scene ran before"}
    # four times the samples; the same set-up (importing bpy, opening the file)
    assert again["cpu_seconds"] > 1.5 * q["cpu_seconds"]
    assert adapters.store.list_executions(sid) == []
    # The render is planned as priced, and costs about what was said.
    ex = client.execute(sid, parallel=4)
    assert ex["tile"] is None
    done = client.wait(sid, ex["id"])
    assert done["status"] == "done"
    assert done["tasks"]["total"] == q["tasks"]["total"]
    # bench/estimates.py measures how close; here, within a factor of two
    assert 0.5 < done["time"]["cpu"] / q["cpu_seconds"] < 2.0


def test_a_scene_state_is_scouted_once(client, demo):
    sid = blender_session(client, demo, samples=4)
    first = dry_run(client, sid).json()
    assert first["scout"]["ran"] is True
    # Another size and sample count: the same cost per pixel-sample, no new scout.
    resized = dry_run(client, sid, update={"width": 80, "height": 60, "samples": 2}).json()
    assert resized["scout"]["cached"] is True
    # Another camera position: another scene state.
    moved = [[1, 0, 0, 0.5], [0, 0, -1, -6.5], [0, 1, 0, 3.2], [0, 0, 0, 1]]
    other = dry_run(client, sid, update={"camera_matrix": moved}).json()
    assert other["scout"]["ran"] is True


def _info(record: dict):
    from francine.domain.producer import ResourceInfo

    return ResourceInfo(record["name"], record["sha256"], record["size"], record.get("meta"))


# --- the basis, on the twins ------------------------------------------------------------

def test_a_blender_price_without_a_scout_is_the_files_model():
    ad = twin_adapters(dataclasses.replace(Settings(), min_task_s=0.0))
    meta = {"blend": {"polygons": 1000, "objects": 5}}
    records = [{"name": "a.blend", "sha256": "a" * 64, "size": 10, "meta": meta}]
    scene = {"blend": "a.blend", "samples": 16, "scene": "S", "frame": 1, "camera": "C",
             "width": 64, "height": 48, "denoise": False}
    ad.store.create_session(Session("s", "u", "blender", "png", scene))
    exp = estimates.expected(ad, "s", producers.get("blender"), scene, records)
    assert exp.basis == "model"
    assert exp.pixel_seconds == pytest.approx(
        blender_cost.pixel_seconds(scene, meta["blend"]) / blender_cost.SAFETY)
    assert (exp.pass_seconds, exp.setup_seconds) == (
        blender_cost.PASS_SECONDS, blender_cost.SETUP_SECONDS)
    # A scout's measurement, kept where the planner looks: measured, and the planner's
    # estimate is it with the margin.
    from francine.producers.blender import scout

    m = scout.Measurement(2e-6, 0.01, 1e-6, 0.02, 0.5, 3.0, 64, 48, (1, 1, 1, 1, 1, 8, 100))
    name = estimates.scout_name(ad, "s", scene, records)
    ad.blobs.put_result(name, json.dumps(m.to_dict()).encode(), "application/json")
    exp = estimates.expected(ad, "s", producers.get("blender"), scene, records)
    assert exp.basis == "measured"
    assert (exp.pixel_seconds, exp.pass_seconds, exp.setup_seconds) == pytest.approx(
        (16 * 2e-6 + 1e-6, 0.01, 0.52))
    assert estimates.pixel_seconds(ad, "s", producers.get("blender"), scene, records) == \
        pytest.approx((16 * 2e-6 + 1e-6) * blender_cost.MARGIN)
    # Another camera is another scene state: not that measurement.
    assert estimates.cached_scout(ad, "s", {**scene, "camera": "D"}, records) is None


def test_an_ao_price_is_the_model_without_its_safety_factor():
    from francine.producers.ao import cost as ao_cost

    ad = twin_adapters()
    ao = producers.get("ao")
    scene = ao.validate(ao.default_scene())
    ad.store.create_session(Session("s", "u", "ao", "png", scene))
    exp = estimates.expected(ad, "s", ao, scene, [])
    assert exp.basis == "model"
    assert exp.pixel_seconds == pytest.approx(ao.pixel_seconds(scene) / ao_cost.SAFETY)
    assert quotes.sig(0.000123456) == 0.0001235


def test_a_dry_run_says_whether_a_cap_takes_it_and_prices_a_noise_targets_first_wave(
        client, adapters, small_ao):
    sid = client.create_session("ao", small_ao)["id"]
    q = dry_run(client, sid, parallel=8, max_cost_usd=1e-9).json()
    assert q["cap"] == {"ok": False, "max_cost_usd": 1e-9, "max_cpu_seconds": None}
    assert dry_run(client, sid, parallel=8, max_cpu_seconds=1e6).json()["cap"]["ok"] is True
    waved = dry_run(client, sid, until={"noise": 0.05, "max_passes": 64}).json()
    assert waved["parallel"] == 8 and waved["until"] == {"noise": 0.05, "max_passes": 64}
    assert dry_run(client, sid, parallel=8).json()["cpu_seconds"] == waved["cpu_seconds"]
    assert_nothing_started(client, adapters, sid)
