"""A plain-Python reference of the ``ao`` kernel: aobench as its C source reads.

Slow (a few microseconds per ray) and meant for tests only. It renders exactly what
``kernel.render_tile`` renders, with the same random numbers, in float64 and the
classic formulation (world-space AO rays, ``t = -B - sqrt(B² - C)`` for spheres,
``math.cos``/``math.sin``), so the two agree except where float32 rounding moves an AO
ray across an occluder's silhouette.

Random numbers (shared with the kernel):

* ``mix64`` is splitmix64's output function and ``hash64(x) = mix64(x + GAMMA)``;
* pixel (x, y) of a ``width``-wide image starts at
  ``state = hash64(seed ^ hash64(y * width + x))``;
* its k-th draw (k = 1, 2, ...) is ``z = mix64(state + k * GAMMA)``, the splitmix64
  stream from ``state``; AO ray ``a`` (0 <= a < nao²) of subsample ``s = v * n + u``
  uses ``k = s * nao² + a + 1``; whether a subsample hits or not, the numbering stays;
* from a draw, ``r1 = (z >> 40) / 2**24`` and ``r2 = ((z >> 16) & 0xFFFFFF) / 2**24``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from francine.producers.ao.scene import scene_arrays

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
EPS = 1.0e-4
FAR = 1.0e17


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def hash64(x: int) -> int:
    return mix64((x + GAMMA) & MASK64)


def pixel_state(seed: int, x: int, y: int, width: int) -> int:
    return hash64((seed & MASK64) ^ hash64(y * width + x))


def draw(state: int, k: int) -> tuple[float, float]:
    """The k-th pair (r1, r2) of a pixel's stream, both in [0, 1)."""
    z = mix64((state + k * GAMMA) & MASK64)
    return (z >> 40) / 16777216.0, ((z >> 16) & 0xFFFFFF) / 16777216.0


def _dot(a, b) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _normalize(v):
    length = math.sqrt(_dot(v, v))
    if abs(length) > 1.0e-17:
        return (v[0] / length, v[1] / length, v[2] / length)
    return v


def _cross(a, b):
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


class _Isect:
    def __init__(self):
        self.t = FAR
        self.hit = False
        self.p = (0.0, 0.0, 0.0)
        self.n = (0.0, 0.0, 0.0)
        self.kind = 0  # 1 sphere, 2 plane (for readers; aobench does not need it)


def ray_sphere(isect: _Isect, org, dir_, center, radius) -> None:
    rs = (org[0] - center[0], org[1] - center[1], org[2] - center[2])
    b = _dot(rs, dir_)
    c = _dot(rs, rs) - radius * radius
    d = b * b - c
    if d > 0.0:
        t = -b - math.sqrt(d)
        if 0.0 < t < isect.t:
            isect.t = t
            isect.hit = True
            isect.kind = 1
            isect.p = (org[0] + dir_[0] * t, org[1] + dir_[1] * t, org[2] + dir_[2] * t)
            p = isect.p
            isect.n = _normalize((p[0] - center[0], p[1] - center[1], p[2] - center[2]))


def ray_plane(isect: _Isect, org, dir_, point, normal) -> None:
    d = -_dot(point, normal)
    v = _dot(dir_, normal)
    if abs(v) < 1.0e-17:
        return
    t = -(_dot(org, normal) + d) / v
    if 0.0 < t < isect.t:
        isect.t = t
        isect.hit = True
        isect.kind = 2
        isect.p = (org[0] + dir_[0] * t, org[1] + dir_[1] * t, org[2] + dir_[2] * t)
        isect.n = normal


def ortho_basis(n):
    a = [0.0, 0.0, 0.0]
    if -0.6 < n[0] < 0.6:
        a[0] = 1.0
    elif -0.6 < n[1] < 0.6:
        a[1] = 1.0
    elif -0.6 < n[2] < 0.6:
        a[2] = 1.0
    else:
        a[0] = 1.0
    b0 = _normalize(_cross(a, n))
    b1 = _normalize(_cross(n, b0))
    return b0, b1, n


def intersect(org, dir_, spheres, point, normal) -> _Isect:
    isect = _Isect()
    for cx, cy, cz, r in spheres:
        ray_sphere(isect, org, dir_, (cx, cy, cz), r)
    ray_plane(isect, org, dir_, point, normal)
    return isect


def ambient_occlusion(isect: _Isect, state: int, first: int, nao: int, scene_geo) -> float:
    """The shade of a hit: 1 - the fraction of its nao² AO rays that hit anything."""
    spheres, point, normal = scene_geo
    n = isect.n
    org = (isect.p[0] + EPS * n[0], isect.p[1] + EPS * n[1], isect.p[2] + EPS * n[2])
    b0, b1, b2 = ortho_basis(n)
    occluded = 0
    for a in range(nao * nao):
        r1, r2 = draw(state, first + a + 1)
        theta = math.sqrt(r1)
        phi = 2.0 * math.pi * r2
        x = math.cos(phi) * theta
        y = math.sin(phi) * theta
        z = math.sqrt(1.0 - theta * theta)
        dir_ = (
            x * b0[0] + y * b1[0] + z * b2[0],
            x * b0[1] + y * b1[1] + z * b2[1],
            x * b0[2] + y * b1[2] + z * b2[2],
        )
        if intersect(org, dir_, spheres, point, normal).hit:
            occluded += 1
    return (nao * nao - occluded) / (nao * nao)


def render_tile(
    scene: dict[str, Any], x0: int, y0: int, tile_width: int, tile_height: int, seed: int
) -> np.ndarray:
    """float64 (tile_height, tile_width): one sample pass, as the kernel renders it."""
    spheres_arr, plane_arr = scene_arrays(scene)
    spheres = [tuple(float(c) for c in row) for row in spheres_arr]
    point = tuple(float(c) for c in plane_arr[:3])
    normal = tuple(float(c) for c in plane_arr[3:])
    geo = (spheres, point, normal)
    w, h = scene["width"], scene["height"]
    nsub, nao = scene["nsubsamples"], scene["nao_samples"]
    out = np.zeros((tile_height, tile_width), np.float64)
    for row in range(tile_height):
        y = y0 + row
        for col in range(tile_width):
            x = x0 + col
            state = pixel_state(seed, x, y, w)
            total = 0.0
            for v in range(nsub):
                for u in range(nsub):
                    px = (x + (u / nsub) - (w / 2.0)) / (w / 2.0)
                    py = -(y + (v / nsub) - (h / 2.0)) / (h / 2.0)
                    dir_ = _normalize((px, py, -1.0))
                    isect = intersect((0.0, 0.0, 0.0), dir_, spheres, point, normal)
                    if isect.hit:
                        first = (v * nsub + u) * nao * nao
                        total += ambient_occlusion(isect, state, first, nao, geo)
            out[row, col] = total / (nsub * nsub)
    return out
