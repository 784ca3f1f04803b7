"""Bounding volume hierarchy over triangles: binned-SAH build and closest-hit traversal.

The build (``build_sah``) is a top-down binned surface-area-heuristic split over all
three axes, done once per mesh. ``pack`` collapses that binary tree into a 4-wide one
(each node takes the children of its largest children until it has four), stored as
one 128-byte row a node, aligned to cache lines:

    columns 0-3 / 4-7     the four children's box: lo x / hi x
            8-11 / 12-15  lo y / hi y
           16-19 / 20-23  lo z / hi z
           24-27          the children's references (int32, through a view)

A reference >= 0 is a node row; a negative one is a leaf, ``-1 - (first << 4 | count)``,
a range of triangles stored in leaf order as (v0, e1 = v1 - v0, e2 = v2 - v0) float32
rows. An empty slot has the box (+inf, -inf), which every ray misses.

Why 4-wide in scalar code: half the node visits of a binary tree (each a dependent
memory load), the four slab tests are independent work the CPU overlaps, and the four
children are ordered by a branch-free sorting network, since on incoherent rays the
branches of an insertion sort mispredict.

``closest_hit`` and ``any_hit`` trace one ray and are what the renderer calls;
``trace_closest`` does it for arrays of rays (arrays in, hit arrays out) and is what
the tests and the benchmark use. ``reference.py`` holds brute-force versions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

#: Bumped whenever the packed layout changes, so that cached .npz files are rebuilt.
LAYOUT_VERSION = 2
MAX_LEAF = 15  # a leaf reference packs (first << 4) | count
_INF = np.inf
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_FINF = np.float32(np.inf)
# Fast math without "nnan"/"ninf": misses are carried as inf and must stay inf.
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}


def aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """An uninitialized array whose data starts on a cache-line boundary (NumPy only
    promises 16 bytes), so that a node row is two whole cache lines."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + size].view(dtype).reshape(shape)


@dataclass(frozen=True)
class PackedBVH:
    """A mesh ready for traversal (see the module docstring for the layout)."""

    nodes: np.ndarray  # float32 (n_nodes, 32), 64-byte aligned; columns 24-27 int32
    tris: np.ndarray  # float32 (n_tris, 9): v0, e1, e2 in leaf order
    prim: np.ndarray  # int32 (n_tris,): original triangle index of each row of tris
    root: int  # reference of the root (a leaf reference if the mesh is one leaf)
    bounds: np.ndarray  # float64 (2, 3): the mesh's box, lo and hi
    depth: int  # nodes on the longest root-to-leaf path

    @property
    def nodes_i(self) -> np.ndarray:
        return self.nodes.view(np.int32)

    @property
    def stack_size(self) -> int:
        """Stack entries a traversal needs: three pushed per level, and slack."""
        return stack_size(self.depth)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "nodes": self.nodes,
            "tris": self.tris,
            "prim": self.prim,
            "root": np.array([self.root], dtype=np.int64),
            "bounds": self.bounds,
            "depth": np.array([self.depth], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, a) -> PackedBVH:
        nodes = aligned_empty(a["nodes"].shape, np.float32)
        nodes[...] = a["nodes"]
        return cls(
            nodes=nodes,
            tris=np.ascontiguousarray(a["tris"], dtype=np.float32),
            prim=np.ascontiguousarray(a["prim"], dtype=np.int32),
            root=int(a["root"][0]),
            bounds=np.asarray(a["bounds"], dtype=np.float64),
            depth=int(a["depth"][0]),
        )


def stack_size(depth: int) -> int:
    return 3 * depth + 4


def build(vertices: np.ndarray, triangles: np.ndarray, max_leaf: int = 4) -> PackedBVH:
    """Build and pack the BVH of a triangle mesh (float64 vertices, int triangles)."""
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    t = np.ascontiguousarray(triangles, dtype=np.int64)
    if len(t) == 0:
        raise ValueError("a BVH needs at least one triangle")
    p0, p1, p2 = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    lo = np.minimum(np.minimum(p0, p1), p2)
    hi = np.maximum(np.maximum(p0, p1), p2)
    tree = build_sah(lo, hi, max_leaf, 32)
    packed_nodes, root, depth = pack(*tree[:6])
    nodes = aligned_empty(packed_nodes.shape, np.float32)
    nodes[...] = packed_nodes
    order = tree[6]
    tris = np.empty((len(t), 9), dtype=np.float32)
    tris[:, 0:3] = p0[order]
    tris[:, 3:6] = (p1 - p0)[order]
    tris[:, 6:9] = (p2 - p0)[order]
    bounds = np.stack([lo.min(axis=0), hi.max(axis=0)])
    return PackedBVH(nodes, tris, order.astype(np.int32), int(root), bounds, int(depth))


@nb.njit(cache=True)
def _area(ex, ey, ez):
    if ex < 0.0:
        return 0.0
    return ex * ey + ey * ez + ez * ex


@nb.njit(cache=True)
def build_sah(lo, hi, max_leaf, n_bins, c_trav=1.0):
    """Binned SAH build over primitive boxes ``lo``/``hi`` (n, 3).

    Returns node arrays (lo, hi, left, right, first, count) with the root at index 0
    (``left == -1`` for a leaf, whose primitives are ``order[first:first + count]``)
    and the primitive order.
    """
    n = lo.shape[0]
    cen = (lo + hi) * 0.5
    order = np.arange(n)
    cap = 2 * n
    n_lo = np.empty((cap, 3))
    n_hi = np.empty((cap, 3))
    left = np.full(cap, -1, dtype=np.int64)
    right = np.full(cap, -1, dtype=np.int64)
    first = np.zeros(cap, dtype=np.int64)
    count = np.zeros(cap, dtype=np.int64)
    bin_n = np.zeros(n_bins, dtype=np.int64)
    bin_lo = np.empty((n_bins, 3))
    bin_hi = np.empty((n_bins, 3))
    right_area = np.empty(n_bins)
    right_n = np.empty(n_bins, dtype=np.int64)
    stack = np.empty((n + 2, 3), dtype=np.int64)  # depth + 1 at most
    stack[0, 0] = 0
    stack[0, 1] = 0
    stack[0, 2] = n
    sp = 1
    n_nodes = 1
    while sp > 0:
        sp -= 1
        node = stack[sp, 0]
        start = stack[sp, 1]
        end = stack[sp, 2]
        m = end - start
        blo = np.full(3, _INF)
        bhi = np.full(3, -_INF)
        clo = np.full(3, _INF)
        chi = np.full(3, -_INF)
        for i in range(start, end):
            p = order[i]
            for a in range(3):
                blo[a] = min(blo[a], lo[p, a])
                bhi[a] = max(bhi[a], hi[p, a])
                clo[a] = min(clo[a], cen[p, a])
                chi[a] = max(chi[a], cen[p, a])
        n_lo[node] = blo
        n_hi[node] = bhi
        first[node] = start
        count[node] = m
        if m <= 1:
            continue
        best_cost = _INF
        best_axis = -1
        best_bin = -1
        for a in range(3):
            extent = chi[a] - clo[a]
            if extent <= 0.0:
                continue
            scale = n_bins / extent
            bin_n[:] = 0
            bin_lo[:] = _INF
            bin_hi[:] = -_INF
            for i in range(start, end):
                p = order[i]
                b = min(int((cen[p, a] - clo[a]) * scale), n_bins - 1)
                bin_n[b] += 1
                for k in range(3):
                    bin_lo[b, k] = min(bin_lo[b, k], lo[p, k])
                    bin_hi[b, k] = max(bin_hi[b, k], hi[p, k])
            # Sweep from the right: area and count of bins b..n_bins-1.
            rx0 = ry0 = rz0 = _INF
            rx1 = ry1 = rz1 = -_INF
            rn = 0
            for b in range(n_bins - 1, 0, -1):
                rn += bin_n[b]
                rx0 = min(rx0, bin_lo[b, 0])
                ry0 = min(ry0, bin_lo[b, 1])
                rz0 = min(rz0, bin_lo[b, 2])
                rx1 = max(rx1, bin_hi[b, 0])
                ry1 = max(ry1, bin_hi[b, 1])
                rz1 = max(rz1, bin_hi[b, 2])
                right_n[b] = rn
                right_area[b] = _area(rx1 - rx0, ry1 - ry0, rz1 - rz0)
            lx0 = ly0 = lz0 = _INF
            lx1 = ly1 = lz1 = -_INF
            ln = 0
            for b in range(n_bins - 1):
                ln += bin_n[b]
                lx0 = min(lx0, bin_lo[b, 0])
                ly0 = min(ly0, bin_lo[b, 1])
                lz0 = min(lz0, bin_lo[b, 2])
                lx1 = max(lx1, bin_hi[b, 0])
                ly1 = max(ly1, bin_hi[b, 1])
                lz1 = max(lz1, bin_hi[b, 2])
                if ln == 0 or right_n[b + 1] == 0:
                    continue
                cost = (
                    _area(lx1 - lx0, ly1 - ly0, lz1 - lz0) * ln + right_area[b + 1] * right_n[b + 1]
                )
                if cost < best_cost:
                    best_cost = cost
                    best_axis = a
                    best_bin = b
        # SAH with intersection cost 1 and traversal cost c_trav, relative to this node.
        node_area = _area(bhi[0] - blo[0], bhi[1] - blo[1], bhi[2] - blo[2])
        split_cost = c_trav + best_cost / node_area if node_area > 0.0 else _INF
        if m <= max_leaf and m <= split_cost:
            continue
        mid = start
        if best_axis >= 0:
            a = best_axis
            scale = n_bins / (chi[a] - clo[a])
            j = end - 1
            while mid <= j:
                p = order[mid]
                b = min(int((cen[p, a] - clo[a]) * scale), n_bins - 1)
                if b <= best_bin:
                    mid += 1
                else:
                    order[mid] = order[j]
                    order[j] = p
                    j -= 1
        if mid <= start or mid >= end:
            if m <= MAX_LEAF:
                continue
            mid = start + m // 2  # identical centroids: any split will do
        left[node] = n_nodes
        right[node] = n_nodes + 1
        stack[sp, 0] = n_nodes
        stack[sp, 1] = start
        stack[sp, 2] = mid
        stack[sp + 1, 0] = n_nodes + 1
        stack[sp + 1, 1] = mid
        stack[sp + 1, 2] = end
        sp += 2
        n_nodes += 2
    return (
        n_lo[:n_nodes].copy(),
        n_hi[:n_nodes].copy(),
        left[:n_nodes].copy(),
        right[:n_nodes].copy(),
        first[:n_nodes].copy(),
        count[:n_nodes].copy(),
        order,
    )


@nb.njit(cache=True)
def _leaf_ref(first, count):
    return -1 - ((first << 4) | count)


@nb.njit(cache=True)
def _node_area(lo, hi, i):
    ex = hi[i, 0] - lo[i, 0]
    ey = hi[i, 1] - lo[i, 1]
    ez = hi[i, 2] - lo[i, 2]
    return ex * ey + ey * ez + ez * ex


@nb.njit(cache=True)
def pack(n_lo, n_hi, left, right, first, count):
    """Collapse the binary tree into 4-wide rows: (nodes, root reference, depth)."""
    n = n_lo.shape[0]
    if left[0] < 0:  # a single leaf
        return np.zeros((0, 32), dtype=np.float32), _leaf_ref(first[0], count[0]), 0
    nodes = np.zeros((n, 32), dtype=np.float32)
    refs = nodes.view(np.int32)
    level = np.zeros(n, dtype=np.int64)
    stack = np.empty((n + 1, 2), dtype=np.int64)  # (binary node, row)
    stack[0, 0] = 0
    stack[0, 1] = 0
    sp = 1
    rows = 1
    deepest = 1
    level[0] = 1
    kids = np.empty(4, dtype=np.int64)
    while sp > 0:
        sp -= 1
        b = stack[sp, 0]
        row = stack[sp, 1]
        kids[0] = left[b]
        kids[1] = right[b]
        n_kids = 2
        while n_kids < 4:  # open the inner child of largest area
            best = -1
            best_area = -1.0
            for k in range(n_kids):
                c = kids[k]
                if left[c] >= 0:
                    area = _node_area(n_lo, n_hi, c)
                    if area > best_area:
                        best_area = area
                        best = k
            if best < 0:
                break
            c = kids[best]
            kids[best] = left[c]
            kids[n_kids] = right[c]
            n_kids += 1
        for k in range(4):
            if k >= n_kids:
                for a in range(3):
                    nodes[row, 8 * a + k] = np.inf
                    nodes[row, 8 * a + 4 + k] = -np.inf
                refs[row, 24 + k] = _leaf_ref(0, 0)
                continue
            c = kids[k]
            for a in range(3):
                # Rounded outwards, so that the float32 box holds the float64 one.
                nodes[row, 8 * a + k] = np.nextafter(np.float32(n_lo[c, a]), np.float32(-np.inf))
                nodes[row, 8 * a + 4 + k] = np.nextafter(np.float32(n_hi[c, a]), np.float32(np.inf))
            if left[c] >= 0:
                refs[row, 24 + k] = rows
                level[rows] = level[row] + 1
                deepest = max(deepest, level[rows])
                stack[sp, 0] = c
                stack[sp, 1] = rows
                sp += 1
                rows += 1
            else:
                refs[row, 24 + k] = _leaf_ref(first[c], count[c])
    return nodes[:rows].copy(), 0, deepest


@nb.njit(cache=True, inline="always")
def _safe_inverse(d):
    # A zero component gives a huge finite inverse instead of inf, so that slab tests
    # never compute 0 * inf = NaN.
    if abs(d) < np.float32(1e-30):
        return np.float32(1e30) if d >= _F0 else np.float32(-1e30)
    return _F1 / d


@nb.njit(cache=True, inline="always")
def _slab_setup(dx, dy, dz):
    """Inverse direction, and which bound of a node's box the ray meets first per axis
    (offset 0 for min, 4 for max in the node layout)."""
    ix = _safe_inverse(dx)
    iy = _safe_inverse(dy)
    iz = _safe_inverse(dz)
    return ix, iy, iz, 0 if ix >= _F0 else 4, 0 if iy >= _F0 else 4, 0 if iz >= _F0 else 4


@nb.njit(cache=True, inline="always")
def _intersect_leaf(tris, ref, ox, oy, oz, dx, dy, dz, tmin, best_t, best_i, best_u, best_v):
    code = -1 - ref
    start = code >> 4
    for j in range(start, start + (code & 15)):
        # Möller–Trumbore.
        e1x = tris[j, 3]
        e1y = tris[j, 4]
        e1z = tris[j, 5]
        e2x = tris[j, 6]
        e2y = tris[j, 7]
        e2z = tris[j, 8]
        px = dy * e2z - dz * e2y
        py = dz * e2x - dx * e2z
        pz = dx * e2y - dy * e2x
        det = e1x * px + e1y * py + e1z * pz
        if det == _F0:
            continue
        inv = _F1 / det
        sx = ox - tris[j, 0]
        sy = oy - tris[j, 1]
        sz = oz - tris[j, 2]
        u = (sx * px + sy * py + sz * pz) * inv
        if u < _F0 or u > _F1:
            continue
        qx = sy * e1z - sz * e1y
        qy = sz * e1x - sx * e1z
        qz = sx * e1y - sy * e1x
        v = (dx * qx + dy * qy + dz * qz) * inv
        if v < _F0 or u + v > _F1:
            continue
        t = (e2x * qx + e2y * qy + e2z * qz) * inv
        if t > tmin and t < best_t:
            best_t = t
            best_i = j
            best_u = u
            best_v = v
    return best_t, best_i, best_u, best_v


@nb.njit(cache=True, inline="always")
def _slab(nodes, row, k, near_x, near_y, near_z, ox, oy, oz, ix, iy, iz, tmin, tmax):
    """Entry distance into the box of child ``k`` of node ``row``; inf on a miss.

    ``near_*`` are the column offsets (0 or 4 within each axis' 8) of the planes the
    ray meets first, chosen once per ray by the signs of its direction.
    """
    t0 = max(
        max((nodes[row, near_x + k] - ox) * ix, (nodes[row, 8 + near_y + k] - oy) * iy),
        max((nodes[row, 16 + near_z + k] - oz) * iz, tmin),
    )
    t1 = min(
        min((nodes[row, 4 - near_x + k] - ox) * ix, (nodes[row, 12 - near_y + k] - oy) * iy),
        min((nodes[row, 20 - near_z + k] - oz) * iz, tmax),
    )
    return t0 if t0 <= t1 else _FINF


@nb.njit(cache=True, inline="always")
def _order(ta, ra, tb, rb):
    """A compare-exchange of the sorting network (selects, not branches)."""
    swap = tb < ta
    return (tb if swap else ta), (rb if swap else ra), (ta if swap else tb), (ra if swap else rb)


@nb.njit(cache=True, fastmath=_FAST)
def closest_hit(nodes, refs, tris, root, ox, oy, oz, dx, dy, dz, tmin, tmax, stack, stack_t):
    """Closest triangle hit with ``tmin < t < tmax``: (t, row in tris or -1, u, v).

    ``stack``/``stack_t`` are scratch arrays of ``stack_size(depth)`` entries (the
    caller owns them, so that tracing allocates nothing). Computes in float32.
    """
    ox = np.float32(ox)
    oy = np.float32(oy)
    oz = np.float32(oz)
    dx = np.float32(dx)
    dy = np.float32(dy)
    dz = np.float32(dz)
    tmin = np.float32(tmin)
    best_t = np.float32(tmax)
    best_i = -1
    best_u = _F0
    best_v = _F0
    ix, iy, iz, near_x, near_y, near_z = _slab_setup(dx, dy, dz)
    sp = 0
    ref = root
    while True:
        if ref < 0:
            best_t, best_i, best_u, best_v = _intersect_leaf(
                tris, ref, ox, oy, oz, dx, dy, dz, tmin, best_t, best_i, best_u, best_v
            )
        else:
            t0 = _slab(nodes, ref, 0, near_x, near_y, near_z, ox, oy, oz, ix, iy, iz, tmin, best_t)
            t1 = _slab(nodes, ref, 1, near_x, near_y, near_z, ox, oy, oz, ix, iy, iz, tmin, best_t)
            t2 = _slab(nodes, ref, 2, near_x, near_y, near_z, ox, oy, oz, ix, iy, iz, tmin, best_t)
            t3 = _slab(nodes, ref, 3, near_x, near_y, near_z, ox, oy, oz, ix, iy, iz, tmin, best_t)
            r0 = refs[ref, 24]
            r1 = refs[ref, 25]
            r2 = refs[ref, 26]
            r3 = refs[ref, 27]
            # Sort the four by entry distance; misses (inf) sink to the end.
            t0, r0, t1, r1 = _order(t0, r0, t1, r1)
            t2, r2, t3, r3 = _order(t2, r2, t3, r3)
            t0, r0, t2, r2 = _order(t0, r0, t2, r2)
            t1, r1, t3, r3 = _order(t1, r1, t3, r3)
            t1, r1, t2, r2 = _order(t1, r1, t2, r2)
            # Push the three farther ones, farthest first, unconditionally: a miss
            # pushed is an inf that the pop below skips, cheaper than a branch.
            stack[sp] = r3
            stack_t[sp] = t3
            stack[sp + 1] = r2
            stack_t[sp + 1] = t2
            stack[sp + 2] = r1
            stack_t[sp + 2] = t1
            sp += 3
            if t0 < _FINF:
                ref = r0
                continue
        # Pop the next subtree that may still hold a closer hit.
        while sp > 0:
            sp -= 1
            if stack_t[sp] < best_t:
                break
        else:
            break
        ref = stack[sp]
    return best_t, best_i, best_u, best_v


@nb.njit(cache=True, fastmath=_FAST)
def any_hit(nodes, refs, tris, root, ox, oy, oz, dx, dy, dz, tmin, tmax, stack):
    """Whether any triangle is hit with ``tmin < t < tmax`` (for shadow rays)."""
    ox = np.float32(ox)
    oy = np.float32(oy)
    oz = np.float32(oz)
    dx = np.float32(dx)
    dy = np.float32(dy)
    dz = np.float32(dz)
    tmin = np.float32(tmin)
    tmax = np.float32(tmax)
    ix, iy, iz, near_x, near_y, near_z = _slab_setup(dx, dy, dz)
    sp = 0
    ref = root
    while True:
        if ref < 0:
            t, i, u, v = _intersect_leaf(
                tris, ref, ox, oy, oz, dx, dy, dz, tmin, tmax, -1, _F0, _F0
            )
            if i >= 0:
                return True
        else:
            for k in range(4):
                if (
                    _slab(nodes, ref, k, near_x, near_y, near_z, ox, oy, oz, ix, iy, iz, tmin, tmax)
                    < _FINF
                ):
                    stack[sp] = refs[ref, 24 + k]
                    sp += 1
        if sp == 0:
            return False
        sp -= 1
        ref = stack[sp]


@nb.njit(cache=True)
def box_entry(bounds, ox, oy, oz, dx, dy, dz, tmin, tmax):
    """Entry distance of a ray into an axis-aligned box (2, 3); inf on a miss."""
    ix = _safe_inverse(dx)
    iy = _safe_inverse(dy)
    iz = _safe_inverse(dz)
    t0 = (bounds[0, 0] - ox) * ix
    t1 = (bounds[1, 0] - ox) * ix
    lo = max(min(t0, t1), tmin)
    hi = min(max(t0, t1), tmax)
    t0 = (bounds[0, 1] - oy) * iy
    t1 = (bounds[1, 1] - oy) * iy
    lo = max(lo, min(t0, t1))
    hi = min(hi, max(t0, t1))
    t0 = (bounds[0, 2] - oz) * iz
    t1 = (bounds[1, 2] - oz) * iz
    lo = max(lo, min(t0, t1))
    hi = min(hi, max(t0, t1))
    return lo if lo <= hi else _INF


@nb.njit(cache=True)
def trace_closest(nodes, refs, tris, prim, root, origins, directions, tmax, stack_size):
    """Closest hits of many rays: t (inf on a miss), original triangle index (-1), u, v."""
    n = origins.shape[0]
    t_out = np.full(n, _INF)
    i_out = np.full(n, -1, dtype=np.int32)
    u_out = np.zeros(n)
    v_out = np.zeros(n)
    stack = np.empty(stack_size, dtype=np.int32)
    stack_t = np.empty(stack_size, dtype=np.float32)
    for k in range(n):
        t, i, u, v = closest_hit(
            nodes,
            refs,
            tris,
            root,
            origins[k, 0],
            origins[k, 1],
            origins[k, 2],
            directions[k, 0],
            directions[k, 1],
            directions[k, 2],
            0.0,
            tmax,
            stack,
            stack_t,
        )
        if i >= 0:
            t_out[k] = t
            i_out[k] = prim[i]
            u_out[k] = u
            v_out[k] = v
    return t_out, i_out, u_out, v_out


def trace(bvh: PackedBVH, origins: np.ndarray, directions: np.ndarray, tmax: float = np.inf):
    """``trace_closest`` on a ``PackedBVH`` with float32 (n, 3) rays."""
    return trace_closest(
        bvh.nodes,
        bvh.nodes_i,
        bvh.tris,
        bvh.prim,
        bvh.root,
        np.ascontiguousarray(origins, dtype=np.float32),
        np.ascontiguousarray(directions, dtype=np.float32),
        np.float32(min(tmax, 3.0e38)),
        bvh.stack_size,
    )
