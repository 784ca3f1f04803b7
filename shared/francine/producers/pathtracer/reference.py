"""Plain NumPy references that the numba kernels are tested against.

Slow and obvious on purpose: every ray against every triangle (in float64), the sphere
quadratic in its textbook form, and a BVH checker.
"""

from __future__ import annotations

import numpy as np


def closest_hits(vertices, triangles, origins, directions, tmin=0.0, tmax=np.inf):
    """Brute force: (t, triangle index, u, v) per ray; inf and -1 on a miss."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(triangles)
    o = np.asarray(origins, dtype=np.float64)
    d = np.asarray(directions, dtype=np.float64)
    p0 = v[f[:, 0]]
    e1 = v[f[:, 1]] - p0
    e2 = v[f[:, 2]] - p0
    n = len(o)
    best_t = np.full(n, np.inf)
    best_i = np.full(n, -1)
    best_u = np.zeros(n)
    best_v = np.zeros(n)
    for k in range(n):  # Möller–Trumbore against all triangles at once
        p = np.cross(d[k], e2)
        det = np.einsum("ij,ij->i", e1, p)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / det
            s = o[k] - p0
            u = np.einsum("ij,ij->i", s, p) * inv
            q = np.cross(s, e1)
            w = (q @ d[k]) * inv
            t = np.einsum("ij,ij->i", e2, q) * inv
            ok = (
                (det != 0) & (u >= 0) & (u <= 1) & (w >= 0) & (u + w <= 1) & (t > tmin) & (t < tmax)
            )
        if ok.any():
            i = np.flatnonzero(ok)[np.argmin(t[ok])]
            best_t[k], best_i[k], best_u[k], best_v[k] = t[i], i, u[i], w[i]
    return best_t, best_i, best_u, best_v


def sphere_hits(center, radius, origins, directions, tmin=0.0, tmax=np.inf):
    """Nearest t in (tmin, tmax) of each ray on one sphere, textbook quadratic."""
    o = np.asarray(origins, dtype=np.float64) - np.asarray(center, dtype=np.float64)
    d = np.asarray(directions, dtype=np.float64)
    a = np.einsum("ij,ij->i", d, d)
    b = 2 * np.einsum("ij,ij->i", o, d)
    c = np.einsum("ij,ij->i", o, o) - radius * radius
    disc = b * b - 4 * a * c
    root = np.sqrt(np.maximum(disc, 0))
    t0 = (-b - root) / (2 * a)
    t1 = (-b + root) / (2 * a)
    t = np.where((t0 > tmin) & (t0 < tmax), t0, np.where((t1 > tmin) & (t1 < tmax), t1, np.inf))
    return np.where(disc >= 0, t, np.inf)


def check_tree(lo, hi, left, right, first, count, order, prim_lo, prim_hi):
    """Assert the invariants of a build: a binary tree over every primitive exactly once,
    whose boxes contain their children's and their primitives'."""
    n_prims = len(prim_lo)
    assert sorted(order.tolist()) == list(range(n_prims))
    seen = np.zeros(n_prims, dtype=int)
    stack = [0]
    visited = 0
    while stack:
        i = stack.pop()
        visited += 1
        if left[i] < 0:
            prims = order[first[i] : first[i] + count[i]]
            assert len(prims) >= 1
            seen[prims] += 1
            assert (prim_lo[prims] >= lo[i]).all() and (prim_hi[prims] <= hi[i]).all()
            continue
        for c in (left[i], right[i]):
            assert (lo[c] >= lo[i]).all() and (hi[c] <= hi[i]).all()
            assert count[c] >= 1
            stack.append(c)
        assert count[left[i]] + count[right[i]] == count[i]
    assert visited == len(lo)
    assert (seen == 1).all()
