"""Closest-hit rays per second per core: the path tracer's BVH against Intel Embree.

    .venv/bin/python bench/trace_speed.py [--mesh OBJ] [--repeat 5]

(``--mesh`` default: the Stanford bunny, data/bunny.obj beside the checkout.)

Both tracers run on one thread over the same rays in the same process: primary rays of
a 512×512 pinhole camera framing the mesh, and incoherent rays (origins on the surface,
cosine-distributed directions about the normal: a path tracer's diffuse bounces).
Embree (through the ``embreex`` package: one ``rtcIntersect1`` call per ray, returning
t, primitive, u, v and the normal) is the yardstick; the ratio ours/Embree is printed
for both kinds, with the agreement of the two tracers' answers and the BVH build times.
Rates are rays per second of CPU time of this process (equal to wall time when one
thread works), best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

import numpy as np

from francine.producers.pathtracer import bvh
from francine.producers.pathtracer.obj import load_obj

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUNNY = ROOT.parent / "shared" / "data" / "bunny.obj"


def primary_rays(lo, hi, size=512):
    """A pinhole camera in front of the box (looking down -z, 40° field of view) whose
    view is 10% wider than the box."""
    center = (lo + hi) / 2
    fov = np.radians(40.0)
    half = 0.55 * max(hi[0] - lo[0], hi[1] - lo[1])
    eye = center + np.array([0.0, 0.0, (hi[2] - lo[2]) / 2 + half / np.tan(fov / 2)])
    y, x = np.mgrid[0:size, 0:size] + 0.5
    t = np.tan(fov / 2)
    d = np.stack([(2 * x / size - 1) * t, (1 - 2 * y / size) * t, -np.ones_like(x)], -1)
    d = d.reshape(-1, 3)
    d /= np.linalg.norm(d, axis=1)[:, None]
    o = np.broadcast_to(eye, d.shape)
    return np.ascontiguousarray(o, np.float32), np.ascontiguousarray(d, np.float32)


def incoherent_rays(vertices, triangles, n, seed=1):
    """Points on the surface (area-weighted), offset off it, cosine-weighted directions."""
    rng = np.random.default_rng(seed)
    p0, p1, p2 = (vertices[triangles[:, k]] for k in range(3))
    normal = np.cross(p1 - p0, p2 - p0)
    area = np.linalg.norm(normal, axis=1)
    pick = rng.choice(len(triangles), size=n, p=area / area.sum())
    a, b = rng.random((2, n))
    s = np.sqrt(a)
    point = (1 - s)[:, None] * p0[pick] + (s * (1 - b))[:, None] * p1[pick]
    point += (s * b)[:, None] * p2[pick]
    nrm = normal[pick] / area[pick][:, None]
    nrm *= np.where(rng.random(n) < 0.5, -1.0, 1.0)[:, None]  # either side
    # Cosine-weighted direction about nrm.
    u1, u2 = rng.random((2, n))
    r, phi = np.sqrt(u1), 2 * np.pi * u2
    helper = np.where(np.abs(nrm[:, :1]) > 0.9, [[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]])
    tx = np.cross(helper, nrm)
    tx /= np.linalg.norm(tx, axis=1)[:, None]
    ty = np.cross(nrm, tx)
    local = [r * np.cos(phi), r * np.sin(phi), np.sqrt(np.maximum(0, 1 - u1))]
    d = tx * local[0][:, None] + ty * local[1][:, None] + nrm * local[2][:, None]
    scale = np.abs(vertices).max()
    o = point + nrm * 1e-5 * scale
    return o.astype(np.float32), d.astype(np.float32)


def best_rate(fn, n, repeat):
    best = np.inf
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mesh", default=str(BUNNY))
    parser.add_argument("--rays", type=int, default=500_000, help="incoherent rays")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    t0 = time.perf_counter()
    mesh = load_obj(pathlib.Path(args.mesh))
    t_parse = time.perf_counter() - t0
    v, f = mesh.vertices, mesh.triangles
    bvh.build(v[:3], np.array([[0, 1, 2]]))  # compile outside the timing
    builds = []
    for _ in range(3):
        t0 = time.perf_counter()
        ours = bvh.build(v, f)
        builds.append(time.perf_counter() - t0)
    print(f"mesh: {args.mesh}: {len(v)} vertices, {len(f)} triangles, parsed in {t_parse:.3f} s")
    refs = ours.nodes_i[:, 24:28]
    leaves = int(((refs < 0) & (((-1 - refs) & 15) > 0)).sum())
    print(
        f"our BVH build (binned SAH, 1 thread): {min(builds) * 1e3:.1f} ms, best of 3 "
        f"({len(ours.nodes)} 4-wide nodes, depth {ours.depth}, {leaves} leaves, "
        f"{len(f) / leaves:.2f} triangles a leaf)"
    )

    from embreex import mesh_construction, rtcore, rtcore_scene

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    scene = rtcore_scene.EmbreeScene(rtcore.EmbreeDevice())
    t0 = time.perf_counter()
    mesh_construction.TriangleMesh(scene, v.astype(np.float32), f.astype(np.int32))
    scene.run(np.zeros((1, 3), np.float32), np.ones((1, 3), np.float32))  # commits
    t_embree = time.perf_counter() - t0
    print(f"Embree scene build (its own threads): {t_embree * 1e3:.1f} ms")

    kinds = {
        "primary": primary_rays(v.min(axis=0), v.max(axis=0)),
        "incoherent": incoherent_rays(v, f, args.rays),
    }
    bvh.trace(ours, *(a[:8] for a in kinds["primary"]))  # compile outside the timing
    print(
        f"{'rays':<11} {'count':>8} {'hit':>6} {'ours Mray/s':>12} {'Embree Mray/s':>14} "
        f"{'ours/Embree':>11} {'agree':>7}"
    )
    for kind, (o, d) in kinds.items():
        n = len(o)
        result = {}

        def run_ours(o=o, d=d, result=result):
            result["ours"] = bvh.trace(ours, o, d)

        def run_embree(o=o, d=d, result=result):
            result["embree"] = scene.run(o, d, output=1)

        r_ours = best_rate(run_ours, n, args.repeat)
        r_embree = best_rate(run_embree, n, args.repeat)
        agree = np.mean(result["ours"][1] == result["embree"]["primID"])
        hit = np.mean(result["ours"][1] >= 0)
        print(
            f"{kind:<11} {n:>8} {hit:>6.1%} {r_ours / 1e6:>12.2f} {r_embree / 1e6:>14.2f} "
            f"{r_ours / r_embree:>11.2f} {agree:>7.2%}"
        )


if __name__ == "__main__":
    main()
