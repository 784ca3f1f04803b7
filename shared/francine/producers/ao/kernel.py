"""The ``ao`` producer's numba kernel: one sample pass of aobench over one tile.

The algorithm is the classic aobench (see ``reference.py`` for it written plainly);
this module computes the same decisions faster:

* Randomness is counter-based per pixel (see ``reference.py``): pixel (x, y) of a
  ``width``-wide image starts from ``hash64(seed ^ hash64(y * width + x))`` and its
  k-th draw (k = 1, 2, ...) is ``mix64(state + k * GAMMA)``, i.e. the splitmix64
  stream. AO ray ``a`` of subsample ``s`` uses draw ``k = s * nao² + a + 1``, and one
  draw gives both of its numbers (its top and middle 24 bits). A pixel's value thus
  depends on (seed, x, y) only, never on the tile cut or on other pixels.
* Primary rays and the per-hit set-up run in float64 (so that the 1e-4 offset along
  the normal stays meaningful far from the camera); the ambient-occlusion rays, the
  hot loop, run in float32.
* Every occluder becomes one test of the same form in the hit's local frame. With
  ``m = c - p`` an AO ray ``d`` hits sphere (c, r) at some t > 0 exactly when
  ``w = d·m > 0 and w² > |m|² - r²`` (aobench's ``D = B² - C > 0`` and
  ``-B - sqrt(D) > 0`` with B = -w, given C = |m|² - r² > 0; when C <= 0 aobench never
  counts the sphere). It hits the plane exactly when ``w = -sign(q)·(d·n) > 0`` and
  ``w² > max(1e-17, 1e-17|q|)²``, ``q = p·n + d0`` (aobench's ``|d·n| >= 1e-17``,
  ``t > 0`` and ``t < 1e17``). With ``d = lx b0 + ly b1 + lz n``, ``w`` is
  ``lx mx + ly my + lz mz`` for m expressed once per hit in the basis: an AO ray costs
  three multiply-adds and two comparisons per occluder, no square root and no branch,
  and LLVM vectorises the loop over a hit's rays (AVX/AVX-512 where the CPU has it).
  Occluders that no ray of the hemisphere can reach (behind the tangent plane; the
  plane for a point on the plane) are left out.
* cos and sin of 2π·r2 come from a short polynomial (error < 5e-7).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_U = np.uint64
_F = np.float32

GAMMA = _U(0x9E3779B97F4A7C15)
_MIX1 = _U(0xBF58476D1CE4E5B9)
_MIX2 = _U(0x94D049BB133111EB)
_S16, _S27, _S30, _S31, _S40 = _U(16), _U(27), _U(30), _U(31), _U(40)
_LOW24 = _U(0xFFFFFF)
_INV24 = _F(1.0 / 16777216.0)

EPS = 1.0e-4  # aobench's offset of AO ray origins along the normal
FAR = 1.0e17  # aobench's "no hit yet" distance

_ONE = _F(1.0)
_HALF = _F(0.5)
_PI = _F(math.pi)
# Taylor coefficients of sin and cos, enough for |x| <= π/2 in float32.
_S3, _S5, _S7 = _F(-1 / 6), _F(1 / 120), _F(-1 / 5040)
_S9, _S11 = _F(1 / 362880), _F(-1 / 39916800)
_C2, _C4, _C6 = _F(-1 / 2), _F(1 / 24), _F(-1 / 720)
_C8, _C10, _C12 = _F(1 / 40320), _F(-1 / 3628800), _F(1 / 479001600)

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT)
def mix64(z):
    """The splitmix64 output function (a bijection of 64-bit integers)."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(**_JIT)
def pixel_state(seed, index):
    """The start of a pixel's random stream: hash64(seed ^ hash64(index))."""
    return mix64((seed ^ mix64(index + GAMMA)) + GAMMA)


@njit(**_JIT)
def cos_sin_2pi(r):
    """(cos 2πr, sin 2πr) for float32 r in [0, 1), without a branch (it vectorises).

    With x = π(r - 1/2) in [-π/2, π/2): 2πr = 2x + π, so cos 2πr = -(cos²x - sin²x)
    and sin 2πr = -2 sin x cos x, from Taylor polynomials of sin x and cos x.
    """
    x = (r - _HALF) * _PI
    x2 = x * x
    s = x * (_ONE + x2 * (_S3 + x2 * (_S5 + x2 * (_S7 + x2 * (_S9 + x2 * _S11)))))
    c = _ONE + x2 * (_C2 + x2 * (_C4 + x2 * (_C6 + x2 * (_C8 + x2 * (_C10 + x2 * _C12)))))
    return s * s - c * c, _F(-2.0) * s * c


@njit(**_JIT)
def trace_primary(dx, dy, dz, spheres, plane):
    """aobench's nearest hit of the ray (origin 0, direction d): (kind, t, sphere).

    kind: 0 no hit, 1 a sphere (index ``sphere``), 2 the plane.
    """
    t_best = FAR
    kind = 0
    hit_sphere = -1
    for k in range(spheres.shape[0]):
        rsx = -spheres[k, 0]
        rsy = -spheres[k, 1]
        rsz = -spheres[k, 2]
        r = spheres[k, 3]
        b = rsx * dx + rsy * dy + rsz * dz
        c = rsx * rsx + rsy * rsy + rsz * rsz - r * r
        disc = b * b - c
        if disc > 0.0:
            t = -b - math.sqrt(disc)
            if t > 0.0 and t < t_best:
                t_best = t
                kind = 1
                hit_sphere = k
    d0 = -(plane[0] * plane[3] + plane[1] * plane[4] + plane[2] * plane[5])
    v = dx * plane[3] + dy * plane[4] + dz * plane[5]
    if abs(v) >= 1.0e-17:
        t = -d0 / v  # the origin is 0, so dot(org, n) is 0
        if t > 0.0 and t < t_best:
            t_best = t
            kind = 2
    return kind, t_best, hit_sphere


@njit(**_JIT)
def ortho_basis(nx, ny, nz):
    """aobench's orthoBasis: (b0, b1) completing the unit normal n."""
    ax = 0.0
    ay = 0.0
    az = 0.0
    if -0.6 < nx < 0.6:
        ax = 1.0
    elif -0.6 < ny < 0.6:
        ay = 1.0
    elif -0.6 < nz < 0.6:
        az = 1.0
    else:
        ax = 1.0
    # b0 = normalize(a × n); b1 = normalize(n × b0)
    b0x = ay * nz - az * ny
    b0y = az * nx - ax * nz
    b0z = ax * ny - ay * nx
    inv = 1.0 / math.sqrt(b0x * b0x + b0y * b0y + b0z * b0z)
    b0x *= inv
    b0y *= inv
    b0z *= inv
    b1x = ny * b0z - nz * b0y
    b1y = nz * b0x - nx * b0z
    b1z = nx * b0y - ny * b0x
    # aobench normalises b1 too, but n × b0 of two orthogonal unit vectors is one.
    return b0x, b0y, b0z, b1x, b1y, b1z


@njit(**_JIT)
def setup_occluders(px, py, pz, nx, ny, nz, kind, spheres, plane, occ):
    """Fill ``occ`` with the occlusion tests of the hit (p, n); returns their count.

    A row (mx, my, mz, c) of ``occ`` means: AO ray l (in the hit's local frame
    (b0, b1, n)) is blocked when ``w = l·m > 0 and w² > c``. Occluders that no ray of
    the hemisphere can reach are left out.
    """
    b0x, b0y, b0z, b1x, b1y, b1z = ortho_basis(nx, ny, nz)
    ox = px + EPS * nx
    oy = py + EPS * ny
    oz = pz + EPS * nz
    count = 0
    for k in range(spheres.shape[0]):
        mx = spheres[k, 0] - ox
        my = spheres[k, 1] - oy
        mz = spheres[k, 2] - oz
        r = spheres[k, 3]
        c = mx * mx + my * my + mz * mz - r * r
        if c <= 0.0:
            continue  # inside the sphere: aobench never counts it
        lz = mx * nx + my * ny + mz * nz
        if lz < 0.0 and lz * lz >= r * r:
            continue  # wholly behind the tangent plane
        occ[count, 0] = mx * b0x + my * b0y + mz * b0z
        occ[count, 1] = mx * b1x + my * b1y + mz * b1z
        occ[count, 2] = lz
        occ[count, 3] = c
        count += 1
    q = ox * plane[3] + oy * plane[4] + oz * plane[5]
    q -= plane[0] * plane[3] + plane[1] * plane[4] + plane[2] * plane[5]
    # A hit on the plane itself is never occluded by it (its AO rays leave it).
    if kind != 2 and q != 0.0:
        s = -1.0 if q > 0.0 else 1.0
        mx = s * (plane[3] * b0x + plane[4] * b0y + plane[5] * b0z)
        my = s * (plane[3] * b1x + plane[4] * b1y + plane[5] * b1z)
        mz = s * (plane[3] * nx + plane[4] * ny + plane[5] * nz)
        thr = max(1.0e-17, abs(q) * 1.0e-17)
        if mz >= 0.0 or mx * mx + my * my > thr * thr:
            occ[count, 0] = mx
            occ[count, 1] = my
            occ[count, 2] = mz
            occ[count, 3] = thr * thr
            count += 1
    return count


@njit(**_JIT)
def occluded_rays(state, first, nao2, occ, nocc, rays, hits):
    """How many of the hit's nao² AO rays (draws first+1 ... first+nao²) are blocked.

    ``rays``: float32 scratch (3, >= nao2) and ``hits``: int32 scratch (>= nao2). Three
    passes without branches, each vectorised by LLVM: make the rays' local directions;
    test them against every occluder; count.
    """
    base = state + _U(first) * GAMMA
    for a in range(nao2):
        z = mix64(base + _U(a + 1) * GAMMA)
        r1 = _F(np.int64(z >> _S40)) * _INV24
        r2 = _F(np.int64((z >> _S16) & _LOW24)) * _INV24
        theta = math.sqrt(r1)
        cphi, sphi = cos_sin_2pi(r2)
        rays[0, a] = cphi * theta
        rays[1, a] = sphi * theta
        rays[2, a] = math.sqrt(_ONE - theta * theta)
        hits[a] = 0
    for k in range(nocc):
        mx = occ[k, 0]
        my = occ[k, 1]
        mz = occ[k, 2]
        c = occ[k, 3]
        for a in range(nao2):
            w = rays[0, a] * mx + rays[1, a] * my + rays[2, a] * mz
            hits[a] |= (w > _F(0.0)) & (w * w > c)
    blocked = 0
    for a in range(nao2):
        blocked += hits[a]
    return blocked


@njit(**_JIT)
def row_stride(n):
    """A stride near n/φ, coprime with n: i -> (i * stride) % n visits every row once.

    numba cuts a prange into one contiguous block per thread; visiting rows in this
    order gives every block rows from the whole height, so that the empty sky and the
    busy floor of a frame are shared fairly between the threads.
    """
    if n <= 2:
        return 1
    stride = int(n * 0.6180339887) | 1
    while True:
        a = stride
        b = n
        while b:
            a, b = b, a % b
        if a == 1:
            return stride
        stride += 2


@njit(parallel=True, **_JIT)
def render_tile(out, x0, y0, width, height, nsub, nao, spheres, plane, seed):
    """One sample pass of aobench for the tile at (x0, y0) of a width×height image.

    ``out``: float32 (tile height, tile width), written with each pixel's mean shade.
    ``spheres``: float64 (n, 4); ``plane``: float64 (6,) with a unit normal;
    ``seed``: uint64. Rows run in parallel on numba's threads.
    """
    th, tw = out.shape
    nao2 = nao * nao
    half_w = width / 2.0
    half_h = height / 2.0
    scale = 1.0 / (nao2 * nsub * nsub)
    stride = row_stride(th)
    for step in prange(th):
        row = (step * stride) % th
        occ = np.empty((spheres.shape[0] + 1, 4), np.float32)
        rays = np.empty((3, nao2), np.float32)
        hits = np.empty(nao2, np.int32)
        y = y0 + row
        for col in range(tw):
            x = x0 + col
            state = pixel_state(seed, _U(y * width + x))
            unblocked = 0
            for v in range(nsub):
                for u in range(nsub):
                    dx = (x + u / nsub - half_w) / half_w
                    dy = -(y + v / nsub - half_h) / half_h
                    dz = -1.0
                    length = math.sqrt(dx * dx + dy * dy + dz * dz)
                    dx /= length
                    dy /= length
                    dz /= length
                    kind, t, k = trace_primary(dx, dy, dz, spheres, plane)
                    if kind == 0:
                        continue
                    hx = t * dx
                    hy = t * dy
                    hz = t * dz
                    if kind == 1:
                        nx = hx - spheres[k, 0]
                        ny = hy - spheres[k, 1]
                        nz = hz - spheres[k, 2]
                        inv = 1.0 / spheres[k, 3]  # |p - c| is the radius
                        nx *= inv
                        ny *= inv
                        nz *= inv
                    else:
                        nx = plane[3]
                        ny = plane[4]
                        nz = plane[5]
                    nocc = setup_occluders(hx, hy, hz, nx, ny, nz, kind, spheres, plane, occ)
                    first = (v * nsub + u) * nao2
                    unblocked += nao2 - occluded_rays(state, first, nao2, occ, nocc, rays, hits)
            out[row, col] = unblocked * scale
