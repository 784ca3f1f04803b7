"""Many passes of the ``ao`` producer converge to what the geometry says.

Every expectation here is computed from the scene analytically, never from the kernel:
which pixels see a sphere, the plane or nothing; the ambient occlusion of the plane
(1 minus the form factors of the spheres above it); the ambient occlusion of a sphere
point that sees no other sphere ((1 + n_y) / 2, the part of its hemisphere above the
plane's horizon).
"""

from __future__ import annotations

import numpy as np
import pytest

from francine.domain.producer import Tile
from francine.producers.ao import PRODUCER

SIZE = 64
PASSES = 8
NAO = 32  # 1024 AO rays per hit and pass
SCENE = PRODUCER.validate({"width": SIZE, "height": SIZE, "nao_samples": NAO}, None)
CENTERS = np.array([s["center"] for s in SCENE["spheres"]])
RADII = np.array([s["radius"] for s in SCENE["spheres"]])
PLANE_Y = -0.5  # the plane y = -0.5, normal +y
SAMPLES = PASSES * NAO * NAO


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    tile = Tile(0, 0, SIZE, SIZE)
    passes = [PRODUCER.render(SCENE, tile, seed, None)[:, :, 0] for seed in range(PASSES)]
    return np.mean(np.asarray(passes, np.float64), axis=0)


@pytest.fixture(scope="module")
def geometry():
    """Per pixel: what its (single, nsubsamples 1) primary ray hits, where, and the normal."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    half = SIZE / 2.0
    d = np.stack([(xs - half) / half, -(ys - half) / half, -np.ones_like(xs)], axis=-1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    t_best = np.full(xs.shape, np.inf)
    kind = np.zeros(xs.shape, int)  # 0 sky, 1 + k sphere k, -1 plane
    for k, (c, r) in enumerate(zip(CENTERS, RADII, strict=True)):
        b = -(d @ c)  # rs = origin - center = -c
        disc = b * b - (c @ c - r * r)
        t = np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
        closer = (t > 0) & (t < t_best)
        t_best[closer] = t[closer]
        kind[closer] = 1 + k
    with np.errstate(divide="ignore"):
        t_plane = np.where(d[..., 1] < 0, PLANE_Y / d[..., 1], np.inf)
    closer = t_plane < t_best
    t_best[closer] = t_plane[closer]
    kind[closer] = -1
    points = d * np.where(np.isfinite(t_best), t_best, 0)[..., None]
    normals = np.zeros_like(points)
    normals[kind == -1] = (0.0, 1.0, 0.0)
    for k, (c, r) in enumerate(zip(CENTERS, RADII, strict=True)):
        normals[kind == 1 + k] = (points[kind == 1 + k] - c) / r
    return kind, points, normals


def tolerance(expected: np.ndarray) -> np.ndarray:
    """Five standard deviations of a mean of SAMPLES Bernoulli draws, plus slack."""
    p = np.clip(expected, 0.0, 1.0)
    return 5.0 * np.sqrt(p * (1.0 - p) / SAMPLES) + 2e-3


def test_hits_are_where_the_geometry_puts_them(image, geometry):
    kind, _, _ = geometry
    np.testing.assert_array_equal(image > 0, kind != 0)
    assert np.all(image[kind == 0] == 0.0)  # the sky is exactly black
    assert np.all(image[: SIZE // 2][kind[: SIZE // 2] == 0] == 0.0)
    assert np.all(kind[SIZE // 2 + 1 :] != 0)  # below the horizon everything is hit
    # Sphere silhouettes: several hundred sphere pixels in three separate blobs.
    for k in range(3):
        assert np.count_nonzero(kind == 1 + k) > 40


def test_sphere_centers_project_onto_their_spheres(image, geometry):
    kind, _, _ = geometry
    for k, c in enumerate(CENTERS):
        # pinhole at the origin, image plane z = -1
        x = int(round(c[0] / -c[2] * SIZE / 2 + SIZE / 2))
        y = int(round(-c[1] / -c[2] * SIZE / 2 + SIZE / 2))
        assert kind[y, x] == 1 + k
        assert image[y, x] > 0.2


def _form_factor_cones(point: np.ndarray):
    """Unit directions, angular radii and form factors of the spheres seen from a plane
    point (each sphere rests on the plane, so it lies wholly above the point's horizon)."""
    to_c = CENTERS - point
    dist = np.linalg.norm(to_c, axis=1)
    cos_beta = to_c[:, 1] / dist  # angle to the plane's normal +y
    return to_c / dist[:, None], np.arcsin(RADII / dist), (RADII / dist) ** 2 * cos_beta


def test_plane_occlusion_is_one_minus_the_spheres_form_factors(image, geometry):
    kind, points, _ = geometry
    checked = 0
    errors = []
    for y, x in zip(*np.nonzero(kind == -1), strict=True):
        dirs, radii, factors = _form_factor_cones(points[y, x])
        # Where two spheres' cones overlap the union is not the sum: skip those points.
        overlap = any(
            np.arccos(np.clip(dirs[i] @ dirs[j], -1, 1)) < radii[i] + radii[j]
            for i in range(3)
            for j in range(i + 1, 3)
        )
        if overlap:
            continue
        expected = 1.0 - factors.sum()
        assert abs(image[y, x] - expected) < tolerance(expected), (y, x, expected)
        errors.append(image[y, x] - expected)
        checked += 1
    assert checked > np.count_nonzero(kind == -1) // 2
    assert abs(np.mean(errors)) < 1e-3  # no bias either


def test_open_plane_near_the_horizon_is_almost_white(image, geometry):
    kind, _, _ = geometry
    row = SIZE // 2 + 1  # first row below the horizon: plane points far away
    assert np.all(kind[row, :4] == -1) and np.all(kind[row, -4:] == -1)
    assert image[row, :4].min() > 0.98 and image[row, -4:].min() > 0.98


def test_contact_shadow_under_a_sphere(image, geometry):
    kind, points, _ = geometry
    # The plane pixel nearest to where the front sphere (k = 2) touches the plane.
    contact = np.array([CENTERS[2][0], PLANE_Y, CENTERS[2][2]])
    plane_pixels = np.argwhere(kind == -1)
    dist = np.linalg.norm(points[kind == -1] - contact, axis=1)
    y, x = plane_pixels[np.argmin(dist)]
    assert dist.min() < 0.2  # the contact point itself hides behind the sphere
    assert image[y, x] < 0.4
    assert image[y, x] < np.median(image[kind == -1]) - 0.25


def test_sphere_points_that_see_no_other_sphere(image, geometry):
    """(1 + n_y) / 2: the plane hides the part of the hemisphere below the horizon."""
    kind, points, normals = geometry
    checked = 0
    for k in range(3):
        others = [j for j in range(3) if j != k]
        for y, x in zip(*np.nonzero(kind == 1 + k), strict=True):
            p, n = points[y, x], normals[y, x]
            # Every other sphere wholly behind this point's tangent plane?
            if all(n @ (CENTERS[j] - p) < -RADII[j] for j in others):
                expected = (1.0 + n[1]) / 2.0
                assert abs(image[y, x] - expected) < tolerance(expected), (k, y, x)
                checked += 1
    assert checked > 30
