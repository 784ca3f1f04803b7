"""The BVH against brute force: build invariants, closest hits and shadow rays."""

from __future__ import annotations

import numpy as np
import pytest

from francine.producers.pathtracer import bvh, reference


def bumpy_sphere(n_theta=24, n_phi=48, seed=0):
    """A closed, non-convex mesh: a sphere with random radial bumps (2,208 triangles)."""
    rng = np.random.default_rng(seed)
    theta = np.linspace(0, np.pi, n_theta + 1)
    phi = np.linspace(0, 2 * np.pi, n_phi, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    r = 1 + 0.25 * rng.random(t.shape)
    r[0, :] = r[0, 0]
    r[-1, :] = r[-1, 0]
    v = np.stack([r * np.sin(t) * np.cos(p), r * np.cos(t), r * np.sin(t) * np.sin(p)], -1)
    v = v.reshape(-1, 3)
    idx = np.arange(len(v)).reshape(n_theta + 1, n_phi)
    tris = []
    for i in range(n_theta):
        for j in range(n_phi):
            a, b = idx[i, j], idx[i, (j + 1) % n_phi]
            c, d = idx[i + 1, j], idx[i + 1, (j + 1) % n_phi]
            tris += [(a, c, b), (b, c, d)]
    return v, np.array(tris)


def triangle_soup(n=1500, seed=1):
    """Random, overlapping triangles of very different sizes (a hard case for SAH)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n, 1, 3)) * 2
    size = np.exp(rng.normal(size=(n, 1, 1)) - 1.5)
    v = (centers + size * rng.normal(size=(n, 3, 3))).reshape(-1, 3)
    return v, np.arange(3 * n).reshape(n, 3)


def random_rays(n, bounds, seed=2):
    """Rays from a box around the mesh towards points inside it, plus fully random ones."""
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(bounds[0]), np.asarray(bounds[1])
    span = hi - lo
    o = lo - span + 3 * span * rng.random((n, 3))
    target = lo + span * rng.random((n, 3))
    d = target - o
    d[: n // 4] = rng.normal(size=(n // 4, 3))  # a quarter point anywhere
    d[n // 4 : n // 4 + 8] = [[1, 0, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]] * 2  # axis-aligned
    d /= np.linalg.norm(d, axis=1)[:, None]
    return o, d


MESHES = {"bumpy_sphere": bumpy_sphere, "triangle_soup": triangle_soup}


@pytest.mark.parametrize("name", list(MESHES))
def test_build_invariants(name):
    v, f = MESHES[name]()
    p = v[f]
    lo, hi = p.min(axis=1), p.max(axis=1)
    tree = bvh.build_sah(lo, hi, 4, 32)
    reference.check_tree(*tree, lo, hi)
    assert tree[5][tree[2] < 0].max() <= bvh.MAX_LEAF


@pytest.mark.parametrize("name", list(MESHES))
def test_closest_hit_agrees_with_brute_force(name):
    v, f = MESHES[name]()
    packed = bvh.build(v, f)
    o, d = random_rays(3000, packed.bounds)
    t, i, u, w = bvh.trace(packed, o, d)
    # The reference runs in float64 on the float32-rounded rays and triangles the BVH sees.
    o32, d32 = o.astype(np.float32), d.astype(np.float32)
    rt, ri, ru, rw = reference.closest_hits(v.astype(np.float32), f, o32, d32)
    hit = ri >= 0
    assert 0.2 < hit.mean() < 0.95
    agree = i == ri
    # Disagreements may only be near-ties (rays through shared edges or overlaps) where
    # float32 rounding decides; both must then report the same distance.
    assert agree.mean() > 0.998
    close = np.isclose(t, rt, rtol=1e-4, atol=1e-6) | (np.isinf(t) & np.isinf(rt))
    assert close.all()
    assert np.allclose(t[agree & hit], rt[agree & hit], rtol=1e-4, atol=1e-6)
    assert np.allclose(u[agree & hit], ru[agree & hit], atol=1e-3)
    assert np.allclose(w[agree & hit], rw[agree & hit], atol=1e-3)


def test_tmax_and_any_hit_agree_with_brute_force():
    import numba as nb

    v, f = bumpy_sphere()
    packed = bvh.build(v, f)
    o, d = random_rays(2000, packed.bounds, seed=5)
    o, d = o.astype(np.float32), d.astype(np.float32)
    rt, _, _, _ = reference.closest_hits(v.astype(np.float32), f, o, d)
    tmax = np.where(np.isfinite(rt), rt, 10.0) * np.where(np.arange(len(o)) % 2, 0.999, 1.001)

    @nb.njit
    def shadow(nodes, refs, tris, root, o, d, tmax, size):
        stack = np.empty(size, dtype=np.int32)
        out = np.zeros(len(o), dtype=np.bool_)
        for k in range(len(o)):
            out[k] = bvh.any_hit(
                nodes,
                refs,
                tris,
                root,
                o[k, 0],
                o[k, 1],
                o[k, 2],
                d[k, 0],
                d[k, 1],
                d[k, 2],
                0.0,
                tmax[k],
                stack,
            )
        return out

    blocked = shadow(
        packed.nodes, packed.nodes_i, packed.tris, packed.root, o, d, tmax, packed.stack_size
    )
    expected = np.isfinite(rt) & (rt < tmax)
    assert (blocked == expected).mean() > 0.998
    assert expected.any() and (~expected).any()


def test_degenerate_meshes():
    # One triangle: the root is a leaf.
    packed = bvh.build(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.0]]), np.array([[0, 1, 2]]))
    t, i, _, _ = bvh.trace(packed, [[0.2, 0.2, 1.0], [2, 2, 1]], [[0, 0, -1.0], [0, 0, -1]])
    assert i.tolist() == [0, -1] and t[0] == pytest.approx(1.0)
    # Many copies of the same triangle (identical centroids) and zero-area triangles.
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.5, 0.5, 0.0]])
    f = np.array([[0, 1, 2]] * 40 + [[0, 0, 1]] * 10 + [[0, 1, 3]] * 5)
    packed = bvh.build(v, f)
    t, i, _, _ = bvh.trace(packed, [[0.2, 0.2, 1.0]], [[0, 0, -1.0]])
    assert not 40 <= i[0] < 50 and i[0] >= 0 and t[0] == pytest.approx(1.0)


def test_pack_round_trips_through_arrays():
    v, f = bumpy_sphere(8, 12)
    packed = bvh.build(v, f)
    again = bvh.PackedBVH.from_arrays(packed.arrays())
    o, d = random_rays(200, packed.bounds)
    for a, b in zip(bvh.trace(packed, o, d), bvh.trace(again, o, d), strict=True):
        assert np.array_equal(a, b)
