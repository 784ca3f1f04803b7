"""The ``ao`` kernel against its plain-Python reference, and the producer's contract."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from francine.domain.producer import SceneError, Tile
from francine.producers import get
from francine.producers.ao import PRODUCER, reference

SMALL = {"width": 24, "height": 16, "nsubsamples": 2, "nao_samples": 4}

# Exercises what the default scene does not: a tilted plane normal (not unit length),
# a sphere cut by the plane, one that contains the camera (aobench never sees it), a
# big one behind, and normals that take each branch of orthoBasis.
ODD = {
    "width": 20,
    "height": 14,
    "nsubsamples": 2,
    "nao_samples": 3,
    "spheres": [
        {"center": [-0.6, -0.4, -2.5], "radius": 0.45},
        {"center": [0.0, 0.0, 0.0], "radius": 0.2},
        {"center": [0.7, 0.3, -3.0], "radius": 0.6},
        {"center": [0.0, 1.0, -9.0], "radius": 4.0},
    ],
    "plane": {"point": [0.0, -0.6, 0.0], "normal": [0.2, 1.0, 0.1]},
}


def render(scene: dict, tile: Tile, seed: int) -> np.ndarray:
    return PRODUCER.render(PRODUCER.validate(scene, None), tile, seed, None)[:, :, 0]


def assert_matches_reference(got: np.ndarray, want: np.ndarray, scene: dict) -> None:
    """Equal up to float32 rounding, except where rounding moved a single AO ray across
    an occluder's silhouette: such a pixel is off by one ray's weight, and rare."""
    one_ray = 1.0 / (scene["nao_samples"] ** 2 * scene["nsubsamples"] ** 2)
    diff = np.abs(got.astype(np.float64) - want)
    assert diff.max() <= one_ray + 1e-6
    assert np.count_nonzero(diff > 1e-6) <= max(1, diff.size // 100)


@pytest.mark.parametrize(
    "scene, tile, seed",
    [
        (SMALL, Tile(0, 0, 24, 16), 1),
        (SMALL, Tile(5, 3, 11, 9), 2**63 + 12345),
        (SMALL, Tile(16, 8, 8, 8), 7),
        (ODD, Tile(0, 0, 20, 14), 3),
        (ODD, Tile(7, 2, 13, 12), 99),
    ],
)
def test_kernel_matches_reference(scene, tile, seed):
    full = PRODUCER.validate(scene, None)
    got = render(scene, tile, seed)
    want = reference.render_tile(full, tile.x0, tile.y0, tile.width, tile.height, seed)
    assert got.shape == want.shape
    assert_matches_reference(got, want, full)
    assert want.max() > 0.5  # the tile shows something


def test_render_shape_and_type():
    out = PRODUCER.render(PRODUCER.validate(SMALL, None), Tile(3, 2, 5, 4), 0, None)
    assert out.shape == (4, 5, 1)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous


def test_tiles_assemble_to_the_whole_image():
    scene = {"width": 37, "height": 23, "nsubsamples": 2, "nao_samples": 3}
    whole = render(scene, Tile(0, 0, 37, 23), 42)
    assembled = np.full_like(whole, -1.0)
    for y0 in range(0, 23, 5):
        for x0 in range(0, 37, 8):
            tile = Tile(x0, y0, min(8, 37 - x0), min(5, 23 - y0))
            assembled[y0 : y0 + tile.height, x0 : x0 + tile.width] = render(scene, tile, 42)
    np.testing.assert_array_equal(assembled, whole)


def test_same_seed_same_image_other_seed_other_noise():
    a = render(SMALL, Tile(0, 0, 24, 16), 5)
    np.testing.assert_array_equal(a, render(SMALL, Tile(0, 0, 24, 16), 5))
    b = render(SMALL, Tile(0, 0, 24, 16), 6)
    hit = a > 0
    assert np.count_nonzero(a[hit] != b[hit]) > hit.sum() // 2
    np.testing.assert_array_equal(a[~hit], b[~hit])  # the sky is 0 whatever the seed


def test_render_rejects_a_tile_outside_the_image():
    with pytest.raises(SceneError) as err:
        render(SMALL, Tile(20, 0, 5, 4), 0)
    assert err.value.field == "tile"


def test_random_stream_matches_reference():
    from francine.producers.ao import kernel

    for seed, index in [(0, 0), (1, 2), (2**64 - 1, 123456789), (0xDEADBEEF, 2**40)]:
        got = kernel.pixel_state(np.uint64(seed), np.uint64(index))
        want = reference.hash64(seed ^ reference.hash64(index))
        assert int(got) == want
    assert int(kernel.mix64(np.uint64(1))) == reference.mix64(1)


def test_cos_sin_polynomial():
    from francine.producers.ao import kernel

    for r in np.linspace(0.0, 1.0, 4097, dtype=np.float32)[:-1]:
        c, s = kernel.cos_sin_2pi(r)
        assert abs(c - np.cos(2 * np.pi * float(r))) < 5e-7
        assert abs(s - np.sin(2 * np.pi * float(r))) < 5e-7


def test_registry_and_contract():
    assert get("ao") is PRODUCER
    assert (PRODUCER.name, PRODUCER.display, PRODUCER.channels) == ("ao", "linear", 1)
    scene = PRODUCER.default_scene()
    assert scene == {
        "width": 512,
        "height": 512,
        "nsubsamples": 1,
        "nao_samples": 8,
        "spheres": [
            {"center": [-2.0, 0.0, -3.5], "radius": 0.5},
            {"center": [-0.5, 0.0, -3.0], "radius": 0.5},
            {"center": [1.0, 0.0, -2.2], "radius": 0.5},
        ],
        "plane": {"point": [0.0, -0.5, 0.0], "normal": [0.0, 1.0, 0.0]},
    }
    assert PRODUCER.validate({}, None) == scene
    assert PRODUCER.validate({"width": 64}, None)["width"] == 64
    assert PRODUCER.image_size(PRODUCER.validate({"width": 64, "height": 32}, None)) == (64, 32)
    schema = PRODUCER.json_schema()
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(scene)
    scene["width"] = 1  # the default is a fresh copy each time
    assert PRODUCER.default_scene()["width"] == 512


def test_importing_the_producer_loads_no_numba():
    code = (
        "import sys, francine.producers as p; p.get('ao').validate({}, None); "
        "assert 'numba' not in sys.modules, 'numba imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "scene, field",
    [
        ([1, 2], "scene"),
        ({"colour": 1}, "colour"),
        ({"width": 0}, "width"),
        ({"width": 16385}, "width"),
        ({"height": 1.5}, "height"),
        ({"height": "512"}, "height"),
        ({"width": True}, "width"),
        ({"nsubsamples": 17}, "nsubsamples"),
        ({"nao_samples": 65}, "nao_samples"),
        ({"nao_samples": -1}, "nao_samples"),
        ({"spheres": {}}, "spheres"),
        ({"spheres": [{"center": [0, 0, 0], "radius": 1}] * 65}, "spheres"),
        ({"spheres": [{"center": [0, 0, 0], "radius": 1}, 3]}, "spheres[1]"),
        (
            {"spheres": [{"center": [0, 0, 0], "radius": 1}, {"center": [0, 0, 0]}]},
            "spheres[1].radius",
        ),
        (
            {"spheres": [{"center": [0, 0, 0], "radius": 1}, {"center": [0, 0, 0], "radius": 0}]},
            "spheres[1].radius",
        ),
        ({"spheres": [{"center": [0, 0], "radius": 1}]}, "spheres[0].center"),
        ({"spheres": [{"center": [0, "a", 0], "radius": 1}]}, "spheres[0].center[1]"),
        ({"spheres": [{"center": [0, float("nan"), 0], "radius": 1}]}, "spheres[0].center[1]"),
        ({"spheres": [{"center": [0, 0, 1e300], "radius": 1}]}, "spheres[0].center[2]"),
        ({"spheres": [{"center": [0, 0, 0], "radius": 1, "colour": 1}]}, "spheres[0].colour"),
        ({"plane": None}, "plane"),
        ({"plane": {"point": [0, 0, 0]}}, "plane.normal"),
        ({"plane": {"point": [0, 0, 0], "normal": [0, 0, 0]}}, "plane.normal"),
        ({"plane": {"point": [0, 0, 0], "normal": [0, 1, 0], "up": 1}}, "plane.up"),
    ],
)
def test_validate_names_the_bad_field(scene, field):
    with pytest.raises(SceneError) as err:
        PRODUCER.validate(scene, None)
    assert err.value.field == field
    assert err.value.message


def test_validate_accepts_a_full_custom_scene_and_normalises_numbers():
    scene = PRODUCER.validate(ODD, None)
    assert scene["spheres"][1] == {"center": [0.0, 0.0, 0.0], "radius": 0.2}
    assert scene["plane"]["normal"] == [0.2, 1.0, 0.1]  # normalised only for the kernel
    assert PRODUCER.validate({"spheres": []}, None)["spheres"] == []
