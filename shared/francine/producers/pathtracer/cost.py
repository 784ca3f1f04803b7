"""How long the path tracer takes per pixel, from what drives it.

A sample is a path of at most ``max_depth`` segments; each segment is a closest-hit
query and, at a diffuse vertex, one light sample with its shadow ray. Russian roulette
ends paths from the third bounce on with the probability of their throughput (at most
0.95), so a path through dim materials is shorter than ``max_depth``. A query tests
every sphere (they are few and huge: walls of radius 1e3), then the BVH of each mesh
instance it enters: logarithmic in the mesh's triangles. Picking the light is a search
in the cumulative power of the emitters (logarithmic in their number).

The constants come from ``bench/estimates.py`` (docs/performance.md), taken ``SAFETY``
times over: the planner must not cut a task that outlasts Pub/Sub's deadline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

#: Seconds on one vCPU, as bench/estimates.py measures them: per sample (the camera
#: ray, the first hit), per segment (sampling, shading, the shadow ray), per sphere a
#: query tests, per mesh instance, per level of a mesh's BVH, per level of the light
#: search ...
PER_SAMPLE = 8.4e-7
PER_SEGMENT = 1.6e-7
PER_SPHERE = 2e-8
PER_INSTANCE = 4e-9
PER_BVH_LEVEL = 1e-8
PER_LIGHT_LEVEL = 1e-8
#: ... times this, for slower machines, busier neighbours and shaders the model does
#: not see (an open scene's paths escape early: it is then further on the safe side).
SAFETY = 2.5
#: A mesh whose triangle count is not known yet (its resource is not attached).
UNKNOWN_TRIANGLES = 1_000_000
#: The kernel's Russian roulette: from this bounce on, paths survive with their
#: throughput, at most ``SURVIVAL``.
RR_DEPTH = 3
SURVIVAL = 0.95


def triangle_counts(resources: Iterable[Any] | Mapping[str, Any] | None) -> dict[str, int]:
    """{resource name: triangles} from the session's resource records (dicts with
    ``name`` and ``meta``) or ``ResourceInfo`` objects."""
    if resources is None:
        return {}
    items = resources.values() if isinstance(resources, Mapping) else resources
    counts = {}
    for r in items:
        name, meta = (r.get("name"), r.get("meta")) if isinstance(r, dict) else (r.name, r.meta)
        if meta and "triangles" in meta:
            counts[name] = int(meta["triangles"])
    return counts


def _largest(color) -> float:
    return float(max(color) if isinstance(color, list | tuple) else color)


def segments(scene: dict[str, Any]) -> float:
    """Expected segments per path, bounded by ``max_depth``: after ``RR_DEPTH`` a path
    survives each bounce with about the largest albedo of the scene's materials."""
    albedo = 0.0
    for m in (scene.get("materials") or {}).values():
        albedo = max(albedo, 1.0 if m.get("type") == "glass" else _largest(m.get("albedo", 1.0)))
    survive = min(albedo, SURVIVAL)
    return min(float(scene["max_depth"]), RR_DEPTH + 1 / (1 - survive))


def segment_seconds(scene: dict[str, Any], resources=None) -> float:
    counts = triangle_counts(resources)
    materials = scene.get("materials") or {}

    def emissive(name: str) -> bool:
        return _largest((materials.get(name) or {}).get("emission", 0.0)) > 0

    spheres = scene.get("spheres") or ()
    meshes = scene.get("meshes") or ()
    lights = sum(1 for s in spheres if emissive(s.get("material", "")))
    levels = 0.0
    for mesh in meshes:
        triangles = counts.get(mesh.get("resource"), UNKNOWN_TRIANGLES)
        levels += math.log2(1 + triangles)
        if emissive(mesh.get("material", "")):
            lights += triangles
    return (PER_SEGMENT + PER_SPHERE * len(spheres) + PER_INSTANCE * len(meshes)
            + PER_BVH_LEVEL * levels + PER_LIGHT_LEVEL * math.log2(1 + lights))


def pixel_seconds(scene: dict[str, Any], resources=None) -> float:
    sample = PER_SAMPLE + segments(scene) * segment_seconds(scene, resources)
    return SAFETY * scene["samples_per_pixel"] * sample
