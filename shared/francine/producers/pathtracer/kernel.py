"""The path tracing kernel: unidirectional, with next-event estimation and MIS.

Pure array code (numba): a compiled ``World`` in, a float32 tile out. Per sample, a
camera path is extended by BSDF sampling up to ``max_depth`` segments, with Russian
roulette from the third bounce. At every diffuse vertex one emitter (sphere or triangle,
chosen in proportion to its power) is sampled and connected by a shadow ray; that light
sample and the BSDF sample that happens to hit an emitter are combined with the power
heuristic, so small and large lights are both handled well. The constant environment is
reached only by BSDF sampling (it is not an emitter in the light list).

Each pixel has its own counter-based generator seeded from (seed, pixel index), so a
pixel's value depends neither on the tile cut nor on the thread that renders it.

Materials: diffuse (Lambertian ``albedo``), mirror (perfect specular tinted by
``albedo``) and glass (smooth dielectric with index ``ior``: Fresnel-weighted choice
of reflection or refraction, transmission tinted by ``albedo``). Any material may also
emit ``emission`` (radiance, from both sides of a surface).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from francine.producers.pathtracer.bvh import any_hit, box_entry, closest_hit
from francine.producers.pathtracer.rng import pixel_state, uniform

DIFFUSE = 0
MIRROR = 1
GLASS = 2
RR_DEPTH = 3  # Russian roulette from this many bounces on
_INF = np.inf
_INV_PI = 1.0 / math.pi


@nb.njit(cache=True, inline="always")
def sphere_t(cx, cy, cz, r, ox, oy, oz, dx, dy, dz, tmin, tmax):
    """Nearest t in (tmin, tmax) where the ray meets the sphere, else inf.

    The numerically careful form of the quadratic (Haines et al., Ray Tracing Gems,
    ch. 7) keeps huge spheres (floors of radius 1e3 around a 0.1-unit model) exact.
    """
    fx = ox - cx
    fy = oy - cy
    fz = oz - cz
    a = dx * dx + dy * dy + dz * dz
    fd = fx * dx + fy * dy + fz * dz
    k = fd / a
    lx = fx - k * dx
    ly = fy - k * dy
    lz = fz - k * dz
    disc = a * (r * r - (lx * lx + ly * ly + lz * lz))
    if disc < 0.0:
        return _INF
    c = fx * fx + fy * fy + fz * fz - r * r
    q = -fd - math.sqrt(disc) if fd > 0.0 else -fd + math.sqrt(disc)
    if q == 0.0:
        return _INF
    t0 = c / q
    t1 = q / a
    if t0 > t1:
        t0, t1 = t1, t0
    if t0 > tmin and t0 < tmax:
        return t0
    if t1 > tmin and t1 < tmax:
        return t1
    return _INF


@nb.njit(cache=True, inline="always")
def _to_mesh_space(m, ox, oy, oz, dx, dy, dz):
    """The ray in a mesh's own space (``m``: its inverse transform, 3×3 then the
    translation). d is not renormalized, so distances t carry over unchanged."""
    return (m[0] * ox + m[1] * oy + m[2] * oz + m[9],
            m[3] * ox + m[4] * oy + m[5] * oz + m[10],
            m[6] * ox + m[7] * oy + m[8] * oz + m[11],
            m[0] * dx + m[1] * dy + m[2] * dz,
            m[3] * dx + m[4] * dy + m[5] * dz,
            m[6] * dx + m[7] * dy + m[8] * dz)


@nb.njit(cache=True)
def intersect(geom, ox, oy, oz, dx, dy, dz, tmax, stack, stack_t):
    """Closest hit in the world: (t, kind, index, instance).

    kind is -1 for a miss, 0 for sphere ``index``, 1 for row ``index`` of the triangle
    table of mesh instance ``instance``.
    """
    sph = geom[0]
    nodes = geom[3]
    refs = geom[4]
    tris = geom[5]
    inst_root = geom[7]
    inst_xf = geom[8]
    inst_bounds = geom[9]
    best_t = tmax
    kind = -1
    index = -1
    instance = -1
    for s in range(sph.shape[0]):
        t = sphere_t(
            sph[s, 0], sph[s, 1], sph[s, 2], sph[s, 3], ox, oy, oz, dx, dy, dz, 0.0, best_t
        )
        if t < best_t:
            best_t = t
            kind = 0
            index = s
    for i in range(inst_root.shape[0]):
        if box_entry(inst_bounds[i], ox, oy, oz, dx, dy, dz, 0.0, best_t) == _INF:
            continue
        lox, loy, loz, ldx, ldy, ldz = _to_mesh_space(inst_xf[i], ox, oy, oz, dx, dy, dz)
        t, row, u, v = closest_hit(
            nodes,
            refs,
            tris,
            inst_root[i],
            lox,
            loy,
            loz,
            ldx,
            ldy,
            ldz,
            0.0,
            best_t,
            stack,
            stack_t,
        )
        if row >= 0:
            best_t = t
            kind = 1
            index = row
            instance = i
    return best_t, kind, index, instance


@nb.njit(cache=True)
def occluded(geom, ox, oy, oz, dx, dy, dz, tmax, stack):
    """Whether anything lies on the ray before ``tmax`` (shadow rays)."""
    sph = geom[0]
    nodes = geom[3]
    refs = geom[4]
    tris = geom[5]
    inst_root = geom[7]
    inst_xf = geom[8]
    inst_bounds = geom[9]
    for s in range(sph.shape[0]):
        if (
            sphere_t(sph[s, 0], sph[s, 1], sph[s, 2], sph[s, 3], ox, oy, oz, dx, dy, dz, 0.0, tmax)
            < _INF
        ):
            return True
    for i in range(inst_root.shape[0]):
        if box_entry(inst_bounds[i], ox, oy, oz, dx, dy, dz, 0.0, tmax) == _INF:
            continue
        lox, loy, loz, ldx, ldy, ldz = _to_mesh_space(inst_xf[i], ox, oy, oz, dx, dy, dz)
        if any_hit(nodes, refs, tris, inst_root[i], lox, loy, loz, ldx, ldy, ldz, 0.0, tmax, stack):
            return True
    return False


@nb.njit(cache=True, inline="always")
def _basis(nx, ny, nz):
    """Two unit vectors completing n to an orthonormal basis (Duff et al. 2017)."""
    s = 1.0 if nz >= 0.0 else -1.0
    a = -1.0 / (s + nz)
    b = nx * ny * a
    return (1.0 + s * nx * nx * a, s * b, -s * nx), (b, s + ny * ny * a, -ny)


@nb.njit(cache=True)
def _sphere_light_pdf(sph, s, ox, oy, oz, dist, cos_l):
    """Solid-angle density of sampling a point of sphere ``s`` seen from o (see below)."""
    cx = sph[s, 0] - ox
    cy = sph[s, 1] - oy
    cz = sph[s, 2] - oz
    r = sph[s, 3]
    d2 = cx * cx + cy * cy + cz * cz
    if d2 > r * r:
        sin2 = r * r / d2
        one_minus_cos = sin2 / (1.0 + math.sqrt(max(0.0, 1.0 - sin2)))
        return 1.0 / (2.0 * math.pi * one_minus_cos)
    if cos_l <= 0.0:
        return 0.0
    return dist * dist / (4.0 * math.pi * r * r * cos_l)


@nb.njit(cache=True)
def light_pdf(geom, lights, light, ox, oy, oz, dist, cos_l):
    """Density (solid angle at o, selection included) of light sampling reaching
    ``light`` at distance ``dist`` with cosine ``cos_l`` at the light."""
    kind = lights[0]
    ref = lights[1]
    area = lights[3]
    pmf = lights[5]
    if pmf[light] == 0.0:
        return 0.0
    if kind[light] == 0:
        return pmf[light] * _sphere_light_pdf(geom[0], ref[light], ox, oy, oz, dist, cos_l)
    if cos_l <= 0.0:
        return 0.0
    return pmf[light] * dist * dist / (area[light] * cos_l)


@nb.njit(cache=True)
def sample_light(geom, lights, ox, oy, oz, u0, u1, u2):
    """One light sample from o: (wx, wy, wz, dist, light, pdf); pdf 0 if it failed.

    A sphere seen from outside is sampled uniformly in the cone it subtends; from inside
    (or on) it, and for triangles, points are sampled uniformly by area.
    """
    kind = lights[0]
    ref = lights[1]
    area = lights[3]
    cdf = lights[4]
    pmf = lights[5]
    tri = lights[6]
    n = cdf.shape[0]
    # The first light whose cumulative probability exceeds u0.
    lo = 0
    hi = n - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cdf[mid] > u0:
            hi = mid
        else:
            lo = mid + 1
    light = lo
    p_sel = pmf[light]
    if p_sel == 0.0:
        return 0.0, 0.0, 0.0, 0.0, light, 0.0
    if kind[light] == 0:
        sph = geom[0]
        s = ref[light]
        cx = sph[s, 0]
        cy = sph[s, 1]
        cz = sph[s, 2]
        r = sph[s, 3]
        wx = cx - ox
        wy = cy - oy
        wz = cz - oz
        d2 = wx * wx + wy * wy + wz * wz
        if d2 > r * r:
            d = math.sqrt(d2)
            wx /= d
            wy /= d
            wz /= d
            sin2 = r * r / d2
            one_minus_cos = sin2 / (1.0 + math.sqrt(max(0.0, 1.0 - sin2)))
            cos_t = 1.0 - u1 * one_minus_cos
            sin_t = math.sqrt(max(0.0, 1.0 - cos_t * cos_t))
            phi = 2.0 * math.pi * u2
            (tx, ty, tz), (bx, by, bz) = _basis(wx, wy, wz)
            a = sin_t * math.cos(phi)
            b = sin_t * math.sin(phi)
            dx = tx * a + bx * b + wx * cos_t
            dy = ty * a + by * b + wy * cos_t
            dz = tz * a + bz * b + wz * cos_t
            t = sphere_t(cx, cy, cz, r, ox, oy, oz, dx, dy, dz, 0.0, _INF)
            if t == _INF:
                return 0.0, 0.0, 0.0, 0.0, light, 0.0  # a grazing direction, lost to rounding
            return dx, dy, dz, t, light, p_sel / (2.0 * math.pi * one_minus_cos)
        z = 1.0 - 2.0 * u1
        rr = math.sqrt(max(0.0, 1.0 - z * z))
        phi = 2.0 * math.pi * u2
        nx = rr * math.cos(phi)
        ny = rr * math.sin(phi)
        nz = z
        qx = cx + r * nx
        qy = cy + r * ny
        qz = cz + r * nz
        a_light = 4.0 * math.pi * r * r
    else:
        row = ref[light]
        su = math.sqrt(u1)
        b0 = 1.0 - su
        b1 = u2 * su
        b2 = 1.0 - b0 - b1
        qx = b0 * tri[row, 0] + b1 * tri[row, 3] + b2 * tri[row, 6]
        qy = b0 * tri[row, 1] + b1 * tri[row, 4] + b2 * tri[row, 7]
        qz = b0 * tri[row, 2] + b1 * tri[row, 5] + b2 * tri[row, 8]
        e1x = tri[row, 3] - tri[row, 0]
        e1y = tri[row, 4] - tri[row, 1]
        e1z = tri[row, 5] - tri[row, 2]
        e2x = tri[row, 6] - tri[row, 0]
        e2y = tri[row, 7] - tri[row, 1]
        e2z = tri[row, 8] - tri[row, 2]
        nx = e1y * e2z - e1z * e2y
        ny = e1z * e2x - e1x * e2z
        nz = e1x * e2y - e1y * e2x
        ln = math.sqrt(nx * nx + ny * ny + nz * nz)
        nx /= ln
        ny /= ln
        nz /= ln
        a_light = area[light]
    dx = qx - ox
    dy = qy - oy
    dz = qz - oz
    dist = math.sqrt(dx * dx + dy * dy + dz * dz)
    if dist == 0.0:
        return 0.0, 0.0, 0.0, 0.0, light, 0.0
    dx /= dist
    dy /= dist
    dz /= dist
    cos_l = abs(nx * dx + ny * dy + nz * dz)  # emitters emit from both sides
    if cos_l <= 0.0:
        return 0.0, 0.0, 0.0, 0.0, light, 0.0
    return dx, dy, dz, dist, light, p_sel * dist * dist / (a_light * cos_l)


@nb.njit(cache=True, inline="always")
def _eps(px, py, pz, t):
    """How far to push a new ray's origin off a surface: above the rounding of the hit
    point (float32 triangles, a float64 t) at that position and distance."""
    return 1e-5 * (max(abs(px), abs(py), abs(pz)) + t) + 1e-9


@nb.njit(cache=True)
def trace_path(cam_o, dx, dy, dz, state, max_depth, env, mats, geom, lights, nee, stack, stack_t):
    """Radiance along one camera ray: ((r, g, b), generator state)."""
    mat_kind = mats[0]
    mat_albedo = mats[1]
    mat_emit = mats[2]
    mat_ior = mats[3]
    sph = geom[0]
    sph_mat = geom[1]
    sph_light = geom[2]
    tris = geom[5]
    prim = geom[6]
    inst_xf = geom[8]
    inst_mat = geom[10]
    inst_light = geom[11]
    light_mat = lights[2]
    n_lights = lights[0].shape[0]
    ox = cam_o[0]
    oy = cam_o[1]
    oz = cam_o[2]
    tr = 1.0
    tg = 1.0
    tb = 1.0
    lr = 0.0
    lg = 0.0
    lb = 0.0
    # Solid-angle density with which the last bounce chose this direction; 0 after the
    # camera or a specular bounce, when light sampling could not have found the emitter.
    prev_pdf = 0.0
    for depth in range(max_depth):
        t, kind, index, instance = intersect(geom, ox, oy, oz, dx, dy, dz, _INF, stack, stack_t)
        if kind < 0:
            lr += tr * env[0]
            lg += tg * env[1]
            lb += tb * env[2]
            break
        px = ox + t * dx
        py = oy + t * dy
        pz = oz + t * dz
        if kind == 0:
            r = sph[index, 3]
            nx = (px - sph[index, 0]) / r
            ny = (py - sph[index, 1]) / r
            nz = (pz - sph[index, 2]) / r
            m = sph_mat[index]
            light = sph_light[index]
        else:
            e1x = tris[index, 3]
            e1y = tris[index, 4]
            e1z = tris[index, 5]
            e2x = tris[index, 6]
            e2y = tris[index, 7]
            e2z = tris[index, 8]
            ax = e1y * e2z - e1z * e2y
            ay = e1z * e2x - e1x * e2z
            az = e1x * e2y - e1y * e2x
            # Normals go to world space by the transpose of the world-to-object matrix.
            xf = inst_xf[instance]
            nx = xf[0] * ax + xf[3] * ay + xf[6] * az
            ny = xf[1] * ax + xf[4] * ay + xf[7] * az
            nz = xf[2] * ax + xf[5] * ay + xf[8] * az
            ln = math.sqrt(nx * nx + ny * ny + nz * nz)
            if ln > 0.0:
                nx /= ln
                ny /= ln
                nz /= ln
            else:  # a sliver hit through float32 rounding: face the ray
                nx = -dx
                ny = -dy
                nz = -dz
            m = inst_mat[instance]
            light = inst_light[instance]
            if light >= 0:
                light += prim[index]
        cos_o = nx * dx + ny * dy + nz * dz  # < 0 when the ray meets the outer side
        er = mat_emit[m, 0]
        eg = mat_emit[m, 1]
        eb = mat_emit[m, 2]
        if er > 0.0 or eg > 0.0 or eb > 0.0:
            w = 1.0
            if prev_pdf > 0.0 and light >= 0:
                p_light = light_pdf(geom, lights, light, ox, oy, oz, t, abs(cos_o))
                w = prev_pdf * prev_pdf / (prev_pdf * prev_pdf + p_light * p_light)
            lr += tr * er * w
            lg += tg * eg * w
            lb += tb * eb * w
        if depth + 1 >= max_depth:
            break  # no segment left for a light sample or a bounce
        eps = _eps(px, py, pz, t)
        ar = mat_albedo[m, 0]
        ag = mat_albedo[m, 1]
        ab = mat_albedo[m, 2]
        mk = mat_kind[m]
        if mk == DIFFUSE:
            if cos_o > 0.0:  # shade the side the ray came from
                nx = -nx
                ny = -ny
                nz = -nz
            ox = px + eps * nx
            oy = py + eps * ny
            oz = pz + eps * nz
            if nee and n_lights > 0:
                state, u0 = uniform(state)
                state, u1 = uniform(state)
                state, u2 = uniform(state)
                wx, wy, wz, dist, lt, p_light = sample_light(geom, lights, ox, oy, oz, u0, u1, u2)
                cos_i = wx * nx + wy * ny + wz * nz
                shadow_t = dist * (1.0 - 1e-6) - eps
                if (
                    p_light > 0.0
                    and cos_i > 0.0
                    and not occluded(geom, ox, oy, oz, wx, wy, wz, shadow_t, stack)
                ):
                    p_bsdf = cos_i * _INV_PI
                    w = p_light * p_light / (p_light * p_light + p_bsdf * p_bsdf)
                    f = p_bsdf * w / p_light  # albedo/pi * cos / pdf * weight
                    lm = light_mat[lt]
                    lr += tr * ar * f * mat_emit[lm, 0]
                    lg += tg * ag * f * mat_emit[lm, 1]
                    lb += tb * ab * f * mat_emit[lm, 2]
            # Cosine-weighted bounce: albedo/pi * cos / (cos/pi) = albedo.
            state, u1 = uniform(state)
            state, u2 = uniform(state)
            rad = math.sqrt(u1)
            phi = 2.0 * math.pi * u2
            a = rad * math.cos(phi)
            b = rad * math.sin(phi)
            c = math.sqrt(max(0.0, 1.0 - u1))
            (sx, sy, sz), (bx, by, bz) = _basis(nx, ny, nz)
            dx = sx * a + bx * b + nx * c
            dy = sy * a + by * b + ny * c
            dz = sz * a + bz * b + nz * c
            prev_pdf = c * _INV_PI if nee else 0.0
        elif mk == MIRROR:
            k = 2.0 * cos_o
            dx -= k * nx
            dy -= k * ny
            dz -= k * nz
            side = -eps if cos_o > 0.0 else eps
            ox = px + side * nx
            oy = py + side * ny
            oz = pz + side * nz
            prev_pdf = 0.0
        else:
            # Smooth dielectric; n is the outward normal, f the one facing the ray.
            entering = cos_o < 0.0
            cos_i = -cos_o if entering else cos_o
            eta = 1.0 / mat_ior[m] if entering else mat_ior[m]
            fx = nx if entering else -nx
            fy = ny if entering else -ny
            fz = nz if entering else -nz
            sin2_t = eta * eta * max(0.0, 1.0 - cos_i * cos_i)
            reflect = 1.0
            cos_t = 0.0
            if sin2_t < 1.0:
                cos_t = math.sqrt(1.0 - sin2_t)
                rs = (eta * cos_i - cos_t) / (eta * cos_i + cos_t)
                rp = (cos_i - eta * cos_t) / (cos_i + eta * cos_t)
                reflect = 0.5 * (rs * rs + rp * rp)
            state, u = uniform(state)
            if u < reflect:
                k = 2.0 * cos_i
                dx += k * fx
                dy += k * fy
                dz += k * fz
                ox = px + eps * fx
                oy = py + eps * fy
                oz = pz + eps * fz
            else:
                k = eta * cos_i - cos_t
                dx = eta * dx + k * fx
                dy = eta * dy + k * fy
                dz = eta * dz + k * fz
                ln = math.sqrt(dx * dx + dy * dy + dz * dz)
                dx /= ln
                dy /= ln
                dz /= ln
                ox = px - eps * fx
                oy = py - eps * fy
                oz = pz - eps * fz
            prev_pdf = 0.0
        tr *= ar
        tg *= ag
        tb *= ab
        if depth + 1 >= RR_DEPTH:
            q = min(max(tr, tg, tb), 0.95)
            state, u = uniform(state)
            if u >= q:
                break
            tr /= q
            tg /= q
            tb /= q
    return (lr, lg, lb), state


@nb.njit(cache=True, parallel=True)
def render_tile(
    cam,
    width,
    height,
    x0,
    y0,
    tw,
    th,
    spp,
    max_depth,
    seed,
    env,
    mats,
    geom,
    lights,
    nee,
    stack_size,
):
    """Mean radiance of ``spp`` samples for each pixel of a tile: float32 (th, tw, 3).

    ``cam`` is the camera as 4 rows: position, forward, right and up, with right and up
    scaled by the tangent of half the field of view (right also by the aspect ratio).
    """
    out = np.zeros((th, tw, 3), dtype=np.float32)
    seed64 = np.uint64(seed)
    for j in nb.prange(th):
        stack = np.empty(stack_size, dtype=np.int32)
        stack_t = np.empty(stack_size, dtype=np.float32)
        gy = y0 + j
        for i in range(tw):
            gx = x0 + i
            state = pixel_state(seed64, np.uint64(gy) * np.uint64(width) + np.uint64(gx))
            sr = 0.0
            sg = 0.0
            sb = 0.0
            for _ in range(spp):
                state, jx = uniform(state)
                state, jy = uniform(state)
                a = 2.0 * (gx + jx) / width - 1.0
                b = 1.0 - 2.0 * (gy + jy) / height
                dx = cam[1, 0] + a * cam[2, 0] + b * cam[3, 0]
                dy = cam[1, 1] + a * cam[2, 1] + b * cam[3, 1]
                dz = cam[1, 2] + a * cam[2, 2] + b * cam[3, 2]
                ln = math.sqrt(dx * dx + dy * dy + dz * dz)
                (r, g, bl), state = trace_path(
                    cam[0],
                    dx / ln,
                    dy / ln,
                    dz / ln,
                    state,
                    max_depth,
                    env,
                    mats,
                    geom,
                    lights,
                    nee,
                    stack,
                    stack_t,
                )
                # A sample lost to rounding (NaN, inf) counts as black rather than
                # poisoning the pixel and every pass it is averaged with.
                if math.isfinite(r) and math.isfinite(g) and math.isfinite(bl):
                    sr += r
                    sg += g
                    sb += bl
            out[j, i, 0] = sr / spp
            out[j, i, 1] = sg / spp
            out[j, i, 2] = sb / spp
    return out
