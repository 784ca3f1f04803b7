"""The producers' cost estimates count what drives their cost, and measured times of
the session's finished executions correct them (bench/estimates.py measures how close
they are; these tests check the models' form and the correction's wiring)."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import math

import pytest

from francine import producers
from francine.base.config import Settings
from francine.domain.records import Execution, Session, Status
from francine.handlers.reducer import Reducer
from francine.handlers.worker import Worker
from francine.producers.ao import cost as ao_cost
from francine.producers.pathtracer import cost as pt_cost
from francine.services import estimates, executions
from francine.twins import pump, twin_adapters

AO = producers.get("ao")
PT = producers.get("pathtracer")


def ao_scene(**changes):
    return AO.validate({**AO.default_scene(), **changes})


def test_ao_counts_rays_and_the_objects_each_ray_is_tested_against():
    base = ao_scene()
    # Rays: n² primary per pixel, each casting m² AO rays.
    assert AO.pixel_seconds(ao_scene(nsubsamples=2)) == pytest.approx(
        4 * AO.pixel_seconds(base))
    assert AO.pixel_seconds(ao_scene(nao_samples=16)) / AO.pixel_seconds(base) == (
        pytest.approx((1 + 16 ** 2) / (1 + 8 ** 2)))
    # More spheres, a costlier ray: linear in the objects (3 spheres and a plane here).
    many = ao_scene(spheres=base["spheres"] * 10)
    assert ao_cost.objects(base) == 4 and ao_cost.objects(many) == 31
    per_object = ao_cost.SAFETY * ao_cost.rays_per_pixel(base) * ao_cost.PER_OBJECT
    assert AO.pixel_seconds(many) - AO.pixel_seconds(base) == pytest.approx(27 * per_object)


def pt_scene(**changes):
    return PT.validate({**PT.default_scene(), **changes}, None)


def mesh_records(triangles: int, name="m.obj") -> list[dict]:
    return [{"name": name, "sha256": "0" * 64, "size": 1,
             "meta": {"vertices": triangles, "triangles": triangles}}]


def test_pathtracer_counts_samples_depth_spheres_and_lights():
    base = pt_scene()
    assert PT.pixel_seconds(pt_scene(samples_per_pixel=32)) == pytest.approx(
        2 * PT.pixel_seconds(base))
    # Deeper paths cost more, up to where Russian roulette ends them anyway.
    assert PT.pixel_seconds(pt_scene(max_depth=2)) < PT.pixel_seconds(pt_scene(max_depth=4))
    dim = copy.deepcopy(PT.default_scene())
    dim["materials"] = {k: {**v, "type": "diffuse", "albedo": [0.5, 0.5, 0.5]}
                        for k, v in dim["materials"].items() if k != "glass"}
    dim["spheres"] = [s for s in dim["spheres"] if s["material"] != "glass"]
    dim = PT.validate(dim, None)
    # albedo 0.5: 3 bounces, then on average 1 / (1 - 0.5) more
    assert pt_cost.segments({**dim, "max_depth": 100}) == pytest.approx(5.0)
    assert pt_cost.segments({**base, "max_depth": 100}) == pytest.approx(23.0)  # glass
    # Every query tests every sphere.
    more = pt_scene(spheres=base["spheres"] + [
        {"center": [0.0, 0.3 * i, -0.5], "radius": 0.1, "material": "white"}
        for i in range(10)])
    assert pt_cost.segment_seconds(more) - pt_cost.segment_seconds(base) == pytest.approx(
        10 * pt_cost.PER_SPHERE)
    # Lights: a search over their number.
    lit = pt_scene(spheres=base["spheres"] + [
        {"center": [0.5, 1.8, -0.5 + 0.1 * i], "radius": 0.05, "material": "light"}
        for i in range(7)])
    assert pt_cost.segment_seconds(lit) - pt_cost.segment_seconds(base) == pytest.approx(
        7 * pt_cost.PER_SPHERE + pt_cost.PER_LIGHT_LEVEL * (math.log2(9) - math.log2(2)))


def test_pathtracer_counts_mesh_triangles_through_the_bvh():
    scene = copy.deepcopy(PT.default_scene())
    scene["meshes"] = [{"resource": "m.obj", "material": "white"}]
    scene = PT.validate(scene, None)
    small = PT.scene_pixel_seconds(scene, mesh_records(1_000))
    large = PT.scene_pixel_seconds(scene, mesh_records(1_000_000))
    # log2: a thousand times the triangles adds ten levels, not a thousand times the cost
    levels = math.log2(1_000_001) - math.log2(1_001)
    expected = (pt_cost.SAFETY * scene["samples_per_pixel"] * pt_cost.segments(scene)
                * pt_cost.PER_BVH_LEVEL * levels)
    assert large - small == pytest.approx(expected)
    assert large < 2 * small
    # Before the resource is attached, a mesh counts as a large one.
    assert PT.pixel_seconds(scene) >= large
    # An emissive mesh: each of its triangles is a light.
    scene["meshes"][0]["material"] = "light"
    assert PT.scene_pixel_seconds(scene, mesh_records(1_000)) > small


def finished(producer: str, scene: dict, producing: float, w=64, h=64, passes=2,
             status=Status.DONE, summary=True) -> Execution:
    return Execution(
        id="e", session_id="s", user="u", created=dt.datetime.now(dt.UTC),
        producer=producer, format="png", display="linear", channels=1, scene=scene,
        shape={"width": w, "height": h, "passes": passes, "tile": w, "fan_in": 2},
        parallel=passes, status=status,
        summary={"time": {"producing": producing, "cpu": 99.0}} if summary else None)


def test_measured_times_correct_the_estimate_of_every_producer():
    scene = ao_scene()
    guess = AO.pixel_seconds(scene)
    assert estimates.corrected(AO, scene, [], []) == guess
    # The model was 4× too high: measured a quarter of 64×64×2 pixels at the guess.
    history = [finished("ao", scene, 64 * 64 * 2 * guess / 4)]
    assert estimates.measured_ratio(AO, history, []) == pytest.approx(0.25)
    assert estimates.corrected(AO, scene, [], history) == pytest.approx(
        guess * 0.25 * estimates.MARGIN)
    # The ratio carries over to another scene of the session (more rays here).
    other = ao_scene(nao_samples=16)
    assert estimates.corrected(AO, other, [], history) == pytest.approx(
        AO.pixel_seconds(other) * 0.25 * estimates.MARGIN)
    # Another producer's executions, failed ones and unmeasured ones do not count.
    noise = [finished("pathtracer", scene, 1e6),
             finished("ao", scene, 1e6, status=Status.FAILED),
             finished("ao", scene, 0.0, summary=False)]
    assert estimates.measured_ratio(AO, noise + history, []) == pytest.approx(0.25)
    # A broken measurement is bounded.
    assert estimates.measured_ratio(AO, [finished("ao", scene, 1e9)], []) == (
        estimates.RATIO_BOUNDS[1])
    # The path tracer's correction reads the mesh counts of the records too.
    pt = pt_scene()
    pt_guess = PT.scene_pixel_seconds(pt, [])
    history = [finished("pathtracer", pt, 64 * 64 * 2 * pt_guess * 2)]
    assert estimates.corrected(PT, pt, [], history) == pytest.approx(
        pt_guess * 2 * estimates.MARGIN)


def test_the_execution_start_reads_the_sessions_finished_executions():
    """Over the store and the pipeline (twins of the emulators): a finished execution's
    measured time corrects the next one's estimate."""
    ad = twin_adapters(dataclasses.replace(Settings(), min_task_s=0.0))
    scene = {"width": 32, "height": 32, "nao_samples": 2}
    ad.store.create_session(Session("s", "u", "ao", "png", scene))
    valid = AO.validate(scene)
    assert estimates.pixel_seconds(ad, "s", AO, valid, []) == AO.pixel_seconds(valid)
    ex, _ = executions.start(ad, "u", "s", {"parallel": 2}, idempotency_key="k")
    pump(ad, Worker(ad), Reducer(ad))
    done = ad.store.execution("s", ex.id)
    assert done.status == Status.DONE
    producing = done.summary["time"]["producing"]
    assert producing > 0
    ratio = producing / (32 * 32 * 2 * AO.pixel_seconds(valid))
    low, high = estimates.RATIO_BOUNDS
    assert estimates.pixel_seconds(ad, "s", AO, valid, []) == pytest.approx(
        AO.pixel_seconds(valid) * min(high, max(low, ratio)) * estimates.MARGIN)
