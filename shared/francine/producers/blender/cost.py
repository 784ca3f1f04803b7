"""How long Cycles takes per pixel: an estimate from the file, corrected by measurement.

Before anything of a session has run, the estimate is samples × (seconds per sample per
pixel on one vCPU), the latter growing with the scene's geometry (log of the polygon
count: ray traversal is logarithmic in it) and object count. Once executions of the
session have finished, their measured CPU seconds per pixel-sample replace the guess
(with a margin), because shaders, lights and volumes matter more than any quick
measure of the file can tell. The planner uses the result to size tiles and to refuse
tasks that could not finish before Pub/Sub's deadline.
"""

from __future__ import annotations

import math
from typing import Any

from francine.domain.records import Execution, Status

#: Seconds per sample per pixel on one vCPU for a trivial scene, and per doubling of the
#: polygon count; calibrated on the demo scenes by bench/blender_pipeline.py
#: (conservative: a few times what it measures there).
BASE = 4e-6
PER_LOG2_POLYGON = 0.5e-6
PER_OBJECT = 2e-8
#: How far above the measured CPU the estimate from the file is on the demo scenes
#: (bench/estimates.py: 5 to 7 times): a price (``francine.services.quotes``) divides it
#: out. The file tells polygons and objects, not shaders, lights or how much of the
#: frame is sky, so a price from the file alone is a rough guess either way; the scout
#: (``scout``) measures the scene instead.
SAFETY = 6.0
#: Before a scout or an execution measured a file: a render's fixed CPU seconds besides
#: its samples (a pass of a tile: the settings, the render's set-up, its EXR written and
#: read back; 0.008–0.015 s measured on the demo scene), and what a Blender process
#: costs once per instance and file (importing bpy, about 0.5 CPU-s; opening a small
#: file, a few hundredths).
PASS_SECONDS = 0.015
SETUP_SECONDS = 0.55
#: The root's denoising (Open Image Denoise, quality "high"), CPU seconds per pixel of
#: the image: 2.0 CPU-s for 1024² on this 2-core box.
DENOISE_PIXEL_SECONDS = 2e-6
#: The measured rate is scaled by this before it is used: a new camera or frame may be
#: costlier than what was measured.
MARGIN = 1.5
#: Finished executions taken into account (the most recent ones).
HISTORY = 8


def sample_seconds(meta: dict | None) -> float:
    """Estimated seconds per sample per pixel on one vCPU, from the file's complexity."""
    if not meta:
        return BASE * 4
    polygons = max(0, int(meta.get("polygons", 0)))
    objects = max(0, int(meta.get("objects", 0)))
    return BASE + PER_LOG2_POLYGON * math.log2(1 + polygons) + PER_OBJECT * objects


def pixel_seconds(scene: dict[str, Any], meta: dict | None) -> float:
    return scene.get("samples", 16) * sample_seconds(meta)


def measured_sample_seconds(history: list[Execution]) -> float | None:
    """CPU seconds per pixel-sample of the session's finished executions, or None."""
    total_cpu, total_work = 0.0, 0.0
    # An animation's own summary is its frames', which are executions of the history.
    history = [ex for ex in history if not ex.frames]
    for ex in history[-HISTORY:]:
        summary, shape, scene = ex.summary or {}, ex.shape, ex.scene
        cpu = (summary.get("time") or {}).get("cpu")
        if not (cpu and shape and scene and ex.status == Status.DONE):
            continue
        work = shape["width"] * shape["height"] * shape["passes"] * scene.get("samples", 16)
        total_cpu += cpu
        total_work += work
    return total_cpu / total_work if total_work else None


def corrected(scene: dict[str, Any], meta: dict | None, history: list[Execution]) -> float:
    measured = measured_sample_seconds(history)
    if measured is None:
        return pixel_seconds(scene, meta)
    return scene.get("samples", 16) * measured * MARGIN
