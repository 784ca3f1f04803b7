"""The path tracer against analytic answers, itself, and its caching contract.

Tolerances: every test image is the mean of many independent samples, so it is compared
with the analytic value within a few standard errors (stated with each test).
"""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import pytest

from francine.domain.producer import ResourceInfo, Resources, Tile
from francine.producers.pathtracer import PRODUCER, bvh, reference, rng, shapes
from francine.producers.pathtracer.render import render_world, world_for


class CountingResources(Resources):
    """Local files as session resources, counting fetches like a worker would."""

    @classmethod
    def of(cls, files: dict[str, bytes], folder: pathlib.Path, memo: dict | None = None):
        infos = {}
        for name, data in files.items():
            (folder / name).write_bytes(data)
            infos[name] = ResourceInfo(name, hashlib.sha256(data).hexdigest(), len(data))
        fetched: list[str] = []

        def fetch(info: ResourceInfo) -> pathlib.Path:
            fetched.append(info.name)
            return folder / info.name

        res = cls(infos, fetch, memo if memo is not None else {})
        res.fetched = fetched
        return res


def render(scene, resources=None, seed=0, tile=None, nee=True):
    resources = resources or Resources({}, None)
    scene = PRODUCER.validate(scene, resources.infos)
    w, h = PRODUCER.image_size(scene)
    tile = tile or Tile(0, 0, w, h)
    if nee:
        return PRODUCER.render(scene, tile, seed, resources)
    world = world_for(scene, resources)
    return render_world(
        world, w, h, tile, seed, scene["samples_per_pixel"], scene["max_depth"], nee
    )


def camera_inside(size=8, spp=1024, depth=64):
    return {
        "width": size,
        "height": size,
        "samples_per_pixel": spp,
        "max_depth": depth,
        "camera": {"position": [0, 0, 0], "look_at": [0, 0, -1], "fov": 120},
    }


def test_white_furnace_sphere():
    # A diffuse sphere in a uniform environment L: albedo 1 gives L in every pixel; a
    # convex sphere sees only the sky, so albedo a gives exactly a·L on it.
    env = 0.7
    scene = {
        "width": 24,
        "height": 24,
        "samples_per_pixel": 4,
        "environment": env,
        "camera": {"position": [0, 0, 3], "look_at": [0, 0, 0], "fov": 50},
        "materials": {"white": {"albedo": 1.0}},
        "spheres": [{"center": [0, 0, 0], "radius": 1, "material": "white"}],
    }
    image = render(scene)
    assert image.dtype == np.float32 and image.shape == (24, 24, 3)
    assert np.allclose(image, env, rtol=1e-6)
    scene["materials"]["white"]["albedo"] = 0.4
    image = render(scene)
    center = image[12, 12]
    assert np.allclose(center, 0.4 * env, rtol=1e-6)
    assert np.allclose(image[0, 0], env)


def test_white_furnace_concave_mesh(tmp_path):
    # A bumpy, non-convex sphere mesh of albedo 1 reflects light onto itself many
    # times, so Russian roulette and the instance transform are exercised: still L.
    from test_bvh import bumpy_sphere

    res = CountingResources.of({"bumpy.obj": shapes.to_obj(*bumpy_sphere())}, tmp_path)
    env = 0.5
    scene = {
        "width": 16,
        "height": 16,
        "samples_per_pixel": 256,
        "max_depth": 64,
        "environment": env,
        "camera": {"position": [0, 0, 4], "fov": 45},
        "materials": {"white": {"albedo": 1.0}},
        "meshes": [
            {
                "resource": "bumpy.obj",
                "material": "white",
                "transform": {"rotate": [30, 40, 0], "scale": 1.1},
            }
        ],
    }
    image = render(scene, res)
    # Per pixel: 256 samples whose spread comes from roulette weights (1/0.95^k):
    # within 2% of L; over the image within 0.5%.
    assert np.abs(image / env - 1).max() < 0.02
    assert image.mean() == pytest.approx(env, rel=0.005)


@pytest.mark.parametrize("nee", [True, False])
def test_emissive_enclosure_sphere(nee):
    # Inside a closed diffuse emitter (emission E, albedo a) the radiance is E/(1-a)
    # everywhere. A small sphere of the same stuff inside changes nothing; it is lit by
    # cone sampling from outside, the enclosure by area sampling from inside.
    e, a = 0.5, 0.6
    scene = camera_inside()
    scene["materials"] = {"glow": {"albedo": a, "emission": e}}
    scene["spheres"] = [
        {"center": [0, 0, 0], "radius": 3, "material": "glow"},
        {"center": [0.3, 0.2, -1.2], "radius": 0.5, "material": "glow"},
    ]
    image = render(scene, nee=nee)
    expected = e / (1 - a)
    # 1024 paths a pixel give a relative standard deviation of about 1.5% a pixel and
    # 0.2% for the mean of 64 pixels: the mean within 1%, every pixel within 8%.
    assert image.mean() == pytest.approx(expected, rel=0.01)
    assert np.abs(image / expected - 1).max() < 0.08


@pytest.mark.parametrize("nee", [True, False])
def test_emissive_enclosure_mesh(tmp_path, nee):
    # The same with an icosphere mesh (320 emissive triangles, light-sampled by area
    # with MIS) around the camera, scaled and moved by its transform.
    e, a = 1.0, 0.5
    res = CountingResources.of({"ico.obj": shapes.to_obj(*shapes.icosphere(2))}, tmp_path)
    scene = camera_inside()
    scene["materials"] = {"glow": {"albedo": a, "emission": e}}
    scene["meshes"] = [
        {
            "resource": "ico.obj",
            "material": "glow",
            "transform": {"scale": [3, 2.5, 3.5], "translate": [0.2, 0, 0]},
        }
    ]
    scene["spheres"] = [{"center": [0.3, 0.2, -1.2], "radius": 0.5, "material": "glow"}]
    image = render(scene, res, nee=nee)
    expected = e / (1 - a)
    assert image.mean() == pytest.approx(expected, rel=0.01)
    assert np.abs(image / expected - 1).max() < 0.08


@pytest.mark.parametrize("kind", ["mirror", "glass"])
def test_mirror_and_glass_in_a_furnace(kind):
    # Lossless specular spheres in a uniform environment: every pixel is L (glass: the
    # Fresnel split between reflection and refraction conserves energy; only the
    # roulette weights of long internal paths spread the samples).
    env = 0.8
    scene = {
        "width": 16,
        "height": 16,
        "samples_per_pixel": 64,
        "max_depth": 64,
        "environment": env,
        "camera": {"position": [0, 0, 3], "fov": 50},
        "materials": {"m": {"type": kind, "albedo": 1.0}},
        "spheres": [{"center": [0, 0, 0], "radius": 1, "material": "m"}],
    }
    image = render(scene)
    assert image.mean() == pytest.approx(env, rel=0.005)
    assert np.abs(image / env - 1).max() < 0.05


def test_glass_refracts_a_light_behind_it():
    # Seen through a glass sphere (a lens), a light behind it is magnified; with
    # ior 1 the sphere is invisible and the light looks as it does without it. (One
    # sample a pixel: later samples' jitter depends on how many numbers the glass drew.)
    light = {"center": [0, 0, -5], "radius": 0.2, "material": "lamp"}
    scene = {
        "width": 32,
        "height": 32,
        "samples_per_pixel": 1,
        "max_depth": 8,
        "camera": {"position": [0, 0, 4], "fov": 30},
        "materials": {"lamp": {"albedo": 0, "emission": 1}, "g": {"type": "glass", "ior": 1.0}},
        "spheres": [light, {"center": [0, 0, 0], "radius": 1, "material": "g"}],
    }
    invisible = render(scene)
    scene["spheres"] = [light]
    assert np.array_equal(invisible, render(scene))
    assert 0 < (invisible > 0.5).sum() < 40
    scene["materials"]["g"]["ior"] = 1.5
    scene["spheres"].append({"center": [0, 0, 0], "radius": 1, "material": "g"})
    lens = render(scene)
    assert (lens > 0.5).sum() > 2 * (invisible > 0.5).sum()


def cornell(tmp_path, size=32, spp=16):
    scene, files = shapes.cornell_box(size, spp)
    return scene, CountingResources.of(files, tmp_path)


def test_cornell_box_is_finite_and_non_negative(tmp_path):
    scene, res = cornell(tmp_path)
    image = render(scene, res, seed=3)
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    assert np.isfinite(image).all()
    assert (image >= 0).all()
    # Plausible light: the light itself is seen (emission 17), the walls are lit.
    assert image.max() >= 17 - 1e-3
    assert 0.02 < np.median(image) < 1
    # The left wall is red, the right wall green.
    left, right = image[8:24, 1].mean(axis=0), image[8:24, -2].mean(axis=0)
    assert left[0] > 3 * left[1] and right[1] > 1.5 * right[0]


def test_cornell_box_light_sampling_agrees_with_bsdf_sampling(tmp_path):
    # Two estimators of one image: NEE + MIS, and BSDF sampling alone. With a larger
    # light (so that BSDF sampling alone converges) and without the specular spheres,
    # the mean images of 16×16 pixels × 1024 paths agree within 2.5%: the standard
    # deviation of their difference is about 0.6% here.
    scene, files = shapes.cornell_box(16, 1024)
    files["light.obj"] = shapes.to_obj(*shapes.quad([-0.6, 1.98, 0.6], [1.2, 0, 0], [0, 0, -1.2]))
    res = CountingResources.of(files, tmp_path)
    scene["spheres"] = []
    with_nee = render(scene, res)
    without = render(scene, res, nee=False)
    assert with_nee.mean() == pytest.approx(without.mean(), rel=0.025)
    # And light sampling is the better estimator: less noise between two passes, below
    # the rows that see the light itself (whose edges are noisy from pixel jitter).
    nee_noise = np.std((with_nee - render(scene, res, seed=1))[3:])
    bsdf_noise = np.std((without - render(scene, res, seed=1, nee=False))[3:])
    assert nee_noise < 0.7 * bsdf_noise


def test_same_seed_same_image_and_tiles_do_not_matter(tmp_path):
    scene, res = cornell(tmp_path, size=20, spp=2)
    whole = render(scene, res, seed=42)
    assert np.array_equal(whole, render(scene, res, seed=42))
    assert not np.array_equal(whole, render(scene, res, seed=43))
    assembled = np.zeros_like(whole)
    for y0 in range(0, 20, 7):
        for x0 in range(0, 20, 6):
            tile = Tile(x0, y0, min(6, 20 - x0), min(7, 20 - y0))
            part = render(scene, res, seed=42, tile=tile)
            assembled[y0 : y0 + tile.height, x0 : x0 + tile.width] = part
    assert np.array_equal(whole, assembled)


def test_transform_matches_pretransformed_mesh(tmp_path):
    v, f = shapes.icosphere(1)
    xf = {"translate": [0.3, -0.2, 0.1], "rotate": [10, 20, 30], "scale": [1.2, 0.8, 1.0]}
    from francine.producers.pathtracer.world import object_to_world

    m = object_to_world(xf)
    moved = v @ m[:3, :3].T + m[:3, 3]
    res = CountingResources.of(
        {"a.obj": shapes.to_obj(v, f), "b.obj": shapes.to_obj(moved, f)}, tmp_path
    )
    scene = {
        "width": 24,
        "height": 24,
        "samples_per_pixel": 4,
        "environment": 1,
        "camera": {"position": [1, 2, 4], "look_at": [0.3, -0.2, 0.1], "fov": 40},
        "materials": {"d": {"albedo": 0.5}, "lamp": {"emission": 5}},
        "spheres": [{"center": [2, 3, 1], "radius": 0.3, "material": "lamp"}],
        "meshes": [{"resource": "a.obj", "material": "d", "transform": xf}],
    }
    a = render(scene, res)
    scene["meshes"] = [{"resource": "b.obj", "material": "d"}]
    b = render(scene, res)
    # The same random numbers meet (up to rounding) the same geometry.
    assert np.mean(np.isclose(a, b, rtol=1e-3)) > 0.98


def test_second_task_on_a_warm_worker_neither_fetches_nor_builds(tmp_path, monkeypatch):
    scene, res = cornell(tmp_path, size=8, spp=1)
    builds = []
    real_build = bvh.build
    monkeypatch.setattr(bvh, "build", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    first = render(scene, res, seed=1, tile=Tile(0, 0, 4, 8))
    n_meshes = len(scene["meshes"])
    assert sorted(res.fetched) == sorted(m["resource"] for m in scene["meshes"])
    assert len(builds) == n_meshes
    # The next task of the session on the same instance: same memo.
    again = render(scene, res, seed=1, tile=Tile(0, 0, 4, 8))
    render(scene, res, seed=2, tile=Tile(4, 0, 4, 8))
    assert len(res.fetched) == n_meshes and len(builds) == n_meshes
    assert np.array_equal(first, again)
    # A new worker process on the same disk: fetches (the files are there) but loads
    # the BVHs from the .npz files written next to them instead of building.
    fresh = CountingResources(res.infos, res.fetch, {})
    assert np.array_equal(render(scene, fresh, seed=1, tile=Tile(0, 0, 4, 8)), first)
    assert len(builds) == n_meshes
    assert len(list(tmp_path.glob("*.npz"))) == n_meshes


def test_rng_matches_its_python_reference():
    import numba as nb

    @nb.njit
    def draws(seed, pixel, n):
        state = rng.pixel_state(seed, pixel)
        out = np.empty(n)
        for i in range(n):
            state, out[i] = rng.uniform(state)
        return out

    for seed, pixel in [(0, 0), (1, 12345), (2**63 + 5, 2**40)]:
        state = rng.pixel_state_py(seed, pixel)
        expected = []
        for _ in range(5):
            state, u = rng.uniform_py(state)
            expected.append(u)
        assert draws(np.uint64(seed), np.uint64(pixel), 5).tolist() == expected
    u = draws(np.uint64(7), np.uint64(3), 100_000)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.005


def test_sphere_intersection_matches_reference():
    import numba as nb

    from francine.producers.pathtracer.kernel import sphere_t

    @nb.njit
    def hits(c, r, o, d):
        out = np.empty(len(o))
        for k in range(len(o)):
            out[k] = sphere_t(
                c[0],
                c[1],
                c[2],
                r,
                o[k, 0],
                o[k, 1],
                o[k, 2],
                d[k, 0],
                d[k, 1],
                d[k, 2],
                0.0,
                np.inf,
            )
        return out

    gen = np.random.default_rng(0)
    o = gen.normal(size=(2000, 3)) * 3
    d = gen.normal(size=(2000, 3))
    c = np.array([0.1, -0.2, 0.3])
    ours, ref = hits(c, 1.5, o, d), reference.sphere_hits(c, 1.5, o, d)
    assert np.array_equal(np.isinf(ours), np.isinf(ref))
    assert np.allclose(ours[np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-9)
    # A floor sphere of radius 1e3 stays exact near its top, where the textbook form
    # loses digits.
    o = np.array([[0.01, 0.2, 0.0]])
    d = np.array([[0.0, -1.0, 0.0]])
    t = hits(np.array([0.0, -1000.0, 0.0]), 1000.0, o, d)[0]
    assert t == pytest.approx(0.2 + (1000 - np.sqrt(1000**2 - 0.01**2)), abs=1e-12)


BUNNY = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "bunny.obj"


@pytest.mark.skipif(not BUNNY.exists(), reason="the shared bunny is not here")
def test_bunny_example_renders_at_low_resolution():
    import json

    from francine.producers.pathtracer import EXAMPLES, standalone

    scene = json.loads((EXAMPLES / "bunny.json").read_text())
    scene.update(width=40, height=30, samples_per_pixel=4)
    image = standalone.render(scene, {"bunny.obj": BUNNY})
    assert image.shape == (30, 40, 3) and np.isfinite(image).all() and (image >= 0).all()
    # The bunny (warm albedo) fills the middle of the frame: redder than blue there.
    middle = image[10:20, 15:25].mean(axis=(0, 1))
    assert middle[0] > 1.2 * middle[2] and middle.mean() > 0.05


def test_memo_keeps_the_most_recently_used_meshes_within_its_budget(tmp_path, monkeypatch):
    from francine.producers.pathtracer import meshes

    v, f = shapes.icosphere(2)
    files = {f"m{i}.obj": shapes.to_obj(v * (i + 1), f) for i in range(3)}  # equal sizes
    res = CountingResources.of(files, tmp_path)
    one = meshes.mesh_bvh(res, "m0.obj")
    size = one.nodes.nbytes + one.tris.nbytes + one.prim.nbytes
    monkeypatch.setattr(meshes, "MEMO_BUDGET_BYTES", int(2.5 * size))  # room for two
    for name in ("m1.obj", "m0.obj", "m2.obj"):
        meshes.mesh_bvh(res, name)
    kept = {sha for _, sha in res.memo["pathtracer.bvh"]}
    assert kept == {res.sha256("m0.obj"), res.sha256("m2.obj")}
