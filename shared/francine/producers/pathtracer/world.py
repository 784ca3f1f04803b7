"""A validated scene turned into the flat arrays that the kernel reads.

Each mesh keeps its BVH in its own (object) space, shared by every instance of it; an
instance carries the world-to-object transform and its world box, and the kernel
transforms the ray instead of the mesh. So moving a mesh in an update (a new transform)
rebuilds nothing. Emitters (emissive spheres and every triangle of an emissive mesh)
become the light list, chosen in proportion to power.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from francine.producers.pathtracer import bvh

MATERIAL_CODES = {"diffuse": 0, "mirror": 1, "glass": 2}


@dataclass
class World:
    cam: np.ndarray  # (4, 3): position, forward, right * tan * aspect, up * tan
    env: np.ndarray  # (3,)
    mats: tuple  # kind, albedo, emission, ior
    geom: tuple  # see kernel.intersect
    lights: tuple  # kind, ref, material, area, cdf, pmf, triangles
    stack_size: int


def camera_rows(camera: dict[str, Any], width: int, height: int) -> np.ndarray:
    pos = np.array(camera["position"], dtype=np.float64)
    forward = np.array(camera["look_at"], dtype=np.float64) - pos
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array(camera["up"], dtype=np.float64))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    tan = math.tan(math.radians(camera["fov"]) / 2)
    return np.stack([pos, forward, right * tan * width / height, up * tan])


def object_to_world(transform: dict[str, Any]) -> np.ndarray:
    """The 4×4 matrix of a validated transform."""
    if "matrix" in transform:
        return np.array(transform["matrix"], dtype=np.float64)
    rx, ry, rz = np.radians(transform["rotate"])
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rot_z @ rot_y @ rot_x @ np.diag(transform["scale"])
    m[:3, 3] = transform["translate"]
    return m


def _luminance(rgb) -> float:
    return float(np.mean(rgb))


def build_world(scene: dict[str, Any], mesh: Callable[[int], bvh.PackedBVH]) -> World:
    """Arrays for a validated scene; ``mesh(i)`` gives the BVH of ``scene["meshes"][i]``."""
    names = list(scene["materials"])
    index = {name: i for i, name in enumerate(names)}
    mats = scene["materials"]
    mat_kind = np.array([MATERIAL_CODES[mats[n]["type"]] for n in names], dtype=np.int32)
    mat_albedo = np.array([mats[n]["albedo"] for n in names], dtype=np.float64).reshape(-1, 3)
    mat_emit = np.array([mats[n]["emission"] for n in names], dtype=np.float64).reshape(-1, 3)
    mat_ior = np.array([mats[n].get("ior", 1.0) for n in names], dtype=np.float64)
    emissive = mat_emit.max(axis=1) > 0 if len(names) else np.zeros(0, bool)

    spheres = scene["spheres"]
    sph = np.array([[*s["center"], s["radius"]] for s in spheres], dtype=np.float64).reshape(-1, 4)
    sph_mat = np.array([index[s["material"]] for s in spheres], dtype=np.int32)
    sph_light = np.full(len(spheres), -1, dtype=np.int32)

    # Meshes: one copy of each distinct BVH, concatenated, references shifted.
    packed: list[bvh.PackedBVH] = []
    slot: dict[int, int] = {}  # id of a PackedBVH -> its index in packed
    inst_bvh = []
    for i in range(len(scene["meshes"])):
        b = mesh(i)
        if id(b) not in slot:
            slot[id(b)] = len(packed)
            packed.append(b)
        inst_bvh.append(slot[id(b)])
    nodes, tris, prim, roots, tri_offsets, depth = _concatenate(packed)

    n_inst = len(scene["meshes"])
    inst_root = np.zeros(n_inst, dtype=np.int64)
    inst_xf = np.zeros((n_inst, 12), dtype=np.float64)
    inst_bounds = np.zeros((n_inst, 2, 3), dtype=np.float64)
    inst_mat = np.zeros(n_inst, dtype=np.int32)
    inst_light = np.full(n_inst, -1, dtype=np.int32)
    to_world = []
    for i, m in enumerate(scene["meshes"]):
        b = packed[inst_bvh[i]]
        inst_root[i] = roots[inst_bvh[i]]
        m2w = object_to_world(m["transform"])
        w2o = np.linalg.inv(m2w)
        inst_xf[i, :9] = w2o[:3, :3].ravel()
        inst_xf[i, 9:] = w2o[:3, 3]
        corners = np.array(
            [[x, y, z] for x in b.bounds[:, 0] for y in b.bounds[:, 1] for z in b.bounds[:, 2]]
        )
        world = corners @ m2w[:3, :3].T + m2w[:3, 3]
        pad = 1e-6 * (np.abs(world).max() + 1e-30)
        inst_bounds[i, 0] = world.min(axis=0) - pad
        inst_bounds[i, 1] = world.max(axis=0) + pad
        inst_mat[i] = index[m["material"]]
        to_world.append(m2w)

    # Lights.
    kinds, refs, lmats, areas, powers = [], [], [], [], []
    light_tris = []
    n_light_tris = 0
    for s, sphere in enumerate(spheres):
        m = sph_mat[s]
        if emissive[m]:
            area = 4 * math.pi * sphere["radius"] ** 2
            sph_light[s] = len(kinds)
            kinds.append(np.zeros(1, np.int32))
            refs.append(np.array([s], np.int32))
            lmats.append(np.array([m], np.int32))
            areas.append(np.array([area]))
            powers.append(np.array([area * _luminance(mat_emit[m])]))
    for i in range(n_inst):
        m = inst_mat[i]
        if not emissive[m]:
            continue
        b = packed[inst_bvh[i]]
        n = len(b.prim)
        # World-space triangles in the mesh's original order (prim maps rows to it).
        v0 = b.tris[:, 0:3].astype(np.float64)
        corners = np.stack([v0, v0 + b.tris[:, 3:6], v0 + b.tris[:, 6:9]], axis=1)
        world = corners @ to_world[i][:3, :3].T + to_world[i][:3, 3]
        ordered = np.empty_like(world)
        ordered[b.prim] = world
        area = 0.5 * np.linalg.norm(
            np.cross(ordered[:, 1] - ordered[:, 0], ordered[:, 2] - ordered[:, 0]), axis=1
        )
        inst_light[i] = sum(len(k) for k in kinds)
        kinds.append(np.ones(n, np.int32))
        refs.append(np.arange(n_light_tris, n_light_tris + n, dtype=np.int32))
        lmats.append(np.full(n, m, np.int32))
        areas.append(area)
        powers.append(area * _luminance(mat_emit[m]))
        light_tris.append(ordered.reshape(n, 9))
        n_light_tris += n
    cat = np.concatenate
    power = cat(powers) if powers else np.zeros(0)
    total = power.sum()
    if total > 0:
        pmf = power / total
        cdf = np.cumsum(pmf)
        cdf[np.flatnonzero(pmf > 0)[-1] :] = 1.0  # the last light that can be chosen
    else:  # emitters of zero area or power: nothing to sample
        pmf = cdf = np.zeros(0)
        sph_light[:] = -1
        inst_light[:] = -1
        kinds, refs, lmats, areas, light_tris = [], [], [], [], []
    lights = (
        cat(kinds) if kinds else np.zeros(0, np.int32),
        cat(refs) if refs else np.zeros(0, np.int32),
        cat(lmats) if lmats else np.zeros(0, np.int32),
        cat(areas) if areas else np.zeros(0),
        cdf,
        pmf,
        cat(light_tris) if light_tris else np.zeros((0, 9)),
    )
    geom = (
        sph,
        sph_mat,
        sph_light,
        nodes,
        nodes.view(np.int32),
        tris,
        prim,
        inst_root,
        inst_xf,
        inst_bounds,
        inst_mat,
        inst_light,
    )
    return World(
        cam=camera_rows(scene["camera"], scene["width"], scene["height"]),
        env=np.array(scene["environment"], dtype=np.float64),
        mats=(mat_kind, mat_albedo, mat_emit, mat_ior),
        geom=geom,
        lights=lights,
        stack_size=bvh.stack_size(depth),
    )


def _concatenate(packed: list[bvh.PackedBVH]):
    """One node table and one triangle table for several BVHs, with shifted references."""
    if not packed:
        return (
            np.zeros((0, 32), np.float32),
            np.zeros((0, 9), np.float32),
            np.zeros(0, np.int32),
            [],
            [],
            0,
        )
    nodes, tris, prims, roots, offsets = [], [], [], [], []
    node_off = tri_off = 0
    depth = 0
    for b in packed:
        n = b.nodes.copy()
        refs = n.view(np.int32)[:, 24:28]
        refs[...] = _shift(refs, node_off, tri_off)
        nodes.append(n)
        tris.append(b.tris)
        prims.append(b.prim)
        roots.append(int(_shift(np.array([b.root]), node_off, tri_off)[0]))
        offsets.append(tri_off)
        depth = max(depth, b.depth)
        node_off += len(b.nodes)
        tri_off += len(b.tris)
    all_nodes = bvh.aligned_empty((node_off, 32), np.float32)
    np.concatenate(nodes, out=all_nodes)
    return all_nodes, np.concatenate(tris), np.concatenate(prims), roots, offsets, depth


def _shift(refs: np.ndarray, node_off: int, tri_off: int) -> np.ndarray:
    refs = refs.astype(np.int64)
    code = -1 - refs
    leaf = -1 - (((code >> 4) + tri_off) << 4 | (code & 15))
    return np.where(refs >= 0, refs + node_off, leaf)
