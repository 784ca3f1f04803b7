"""How long the ``ao`` kernel takes per pixel, from what drives it.

Every pixel casts ``nsubsamples²`` primary rays; each one that hits casts
``nao_samples²`` ambient-occlusion rays. Every ray is tested against every sphere and
the plane (no acceleration structure: the scenes are a handful of objects), so a ray
costs a fixed part (sampling, shading, the random numbers) plus a part per object.
Calibrated by ``bench/estimates.py`` (docs/performance.md), then taken ``SAFETY`` times
over, because the planner must not cut tasks that outlast Pub/Sub's deadline.
"""

from __future__ import annotations

from typing import Any

#: Seconds per ray on one vCPU, and per object (sphere or plane) a ray is tested
#: against: what bench/estimates.py measures (3 and 35 objects) ...
PER_RAY = 3.4e-9
PER_OBJECT = 0.24e-9
#: ... times this, for slower machines and busier neighbours.
SAFETY = 2.5

def rays_per_pixel(scene: dict[str, Any]) -> int:
    """Primary rays and, at most, their AO rays (a miss casts none)."""
    return scene["nsubsamples"] ** 2 * (1 + scene["nao_samples"] ** 2)


def objects(scene: dict[str, Any]) -> int:
    return len(scene.get("spheres") or ()) + 1  # and the plane


def pixel_seconds(scene: dict[str, Any]) -> float:
    return SAFETY * rays_per_pixel(scene) * (PER_RAY + PER_OBJECT * objects(scene))
