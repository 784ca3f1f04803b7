"""The scout: a few renders of a scene, small and short, that measure what Cycles takes
per sample of this file at this frame and camera, before any task of it has run.

The estimate from the file alone (``cost``) counts polygons and objects; it cannot see
shaders, lights, volumes or how much of the frame is sky, and is several times off
either way. The scout renders the whole frame scaled down (the same camera, so the
same mix of sky and geometry as the full image: a pixel-sample's cost does not depend
on the resolution), in a Blender process of its own (``isolation.Child``, killed
afterwards), and reads that process's CPU time. A render of p pixels at s samples
costs about a + c·p + b·p·s: a fixed part (the settings, the render's set-up), a part
per pixel whatever the samples (the film, the tile's EXR written and read back: about
one sample's worth, more with the denoising passes) and the samples. So it renders the
frame at about ``PIXELS`` (small) and four times that (large) pixels:

1. small, one sample: opens the file and builds the scene for the frame (its BVH);
2. small and large, one sample, twice each (the cheaper of each pair is kept);
3. large, ``PROBE_SAMPLES`` samples, to size the last render;
4. large, as many samples as make about ``TARGET_CPU_S`` of CPU (at most
   ``MAX_SAMPLES``).

b is the difference of 4 and 2-large over their samples; c the difference of 2-large
and 2-small over their pixels, less b; a what is left of 2-small; opening is 1 less
2-small; importing ``bpy`` is what the process had used when it said it was ready. CPU
seconds do not depend on how many threads render (each thread's time is counted), so
the measure is the render service's per-vCPU figure whatever cores this machine has.

What it costs: importing ``bpy`` (about 0.5 CPU-s), opening the file, then about
``TARGET_CPU_S`` and a few renders of 4,096 and 16,384 pixels: two to four seconds of
wall time on two cores for a small scene, bounded by ``BUDGET_S`` (the last render
takes fewer samples to fit). Nothing here reads or writes the cloud: the caller
fetches the files (``Resources``) and keeps the result.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any

from francine.domain.producer import Resources, SceneError

#: Pixels of the scaled-down frame the scout renders.
PIXELS = 64 * 64
PROBE_SAMPLES = 8
#: CPU seconds the last render aims at: enough that the 10 ms resolution of the CPU
#: clock and the noise of a shared machine stay around a percent.
TARGET_CPU_S = 1.0
MAX_SAMPLES = 1024
#: Wall seconds the renders may take, the opening included (``bpy``'s import apart).
BUDGET_S = 8.0
#: The scene's fields that change what a sample costs; width, height and samples do
#: not change the cost of one pixel-sample, so a new size or sample count reuses it.
KEY_FIELDS = ("scene", "frame", "camera", "camera_matrix", "denoise")
#: Bumped when what is measured changes: older results are not reused.
VERSION = 2


@dataclass(frozen=True)
class Measurement:
    """What the scout measured, in CPU seconds (one vCPU's)."""

    sample_seconds: float  # per pixel-sample (b)
    pass_seconds: float  # one render (one pass of a tile), whatever its size (a)
    pass_pixel_seconds: float  # one render, per pixel, whatever its samples (c)
    open_seconds: float  # opening the file and building the frame, once per process
    import_seconds: float  # importing bpy in a new Blender process
    wall_seconds: float  # the scout's own wall time, bpy's import included
    width: int  # of the large renders
    height: int
    samples: tuple[int, ...]  # of each render, in order
    version: int = VERSION

    def pixel_seconds(self, samples: int) -> float:
        """CPU seconds of one pixel of one pass of ``samples`` samples, besides the
        render's fixed part."""
        return samples * self.sample_seconds + self.pass_pixel_seconds

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["samples"] = list(self.samples)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement | None:
        """The measurement ``d`` holds, or None if it is of another version or form."""
        try:
            if int(d.get("version", 0)) != VERSION:
                return None
            return cls(float(d["sample_seconds"]), float(d["pass_seconds"]),
                       float(d["pass_pixel_seconds"]), float(d["open_seconds"]),
                       float(d["import_seconds"]), float(d["wall_seconds"]),
                       int(d["width"]), int(d["height"]), tuple(int(s) for s in d["samples"]))
        except (KeyError, TypeError, ValueError):
            return None


def available() -> bool:
    """Whether this process can start Blender (``bpy`` is installed), without importing it."""
    return importlib.util.find_spec("bpy") is not None


def key(scene: dict[str, Any], blend_sha256: str) -> str:
    """What a measurement is kept under: the ``.blend``'s content and the fields of the
    (validated) scene that change a sample's cost."""
    state = {k: scene.get(k) for k in KEY_FIELDS}
    text = json.dumps({"blend": blend_sha256, "scene": state, "v": VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def scaled_size(width: int, height: int, pixels: int = PIXELS) -> tuple[int, int]:
    """The frame scaled to about ``pixels`` pixels, its aspect kept (never larger)."""
    if width * height <= pixels:
        return width, height
    f = math.sqrt(pixels / (width * height))
    return max(1, round(width * f)), max(1, round(height * f))


def fit(lo_cpu: float, lo_samples: int, hi_cpu: float, hi_samples: int,
        pixels: int) -> tuple[float, float]:
    """(CPU seconds per pixel-sample, CPU seconds of a render besides its samples) from
    two renders of the same pixels at two sample counts."""
    per_sample = max(0.0, (hi_cpu - lo_cpu) / ((hi_samples - lo_samples) * pixels))
    if per_sample == 0.0:  # below the clock's resolution: an upper bound
        per_sample = max(hi_cpu, 0.01) / (hi_samples * pixels)
    return per_sample, max(0.0, lo_cpu - lo_samples * pixels * per_sample)


def thread_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of the live threads of process ``pid`` to the nanosecond (the
    scheduler's own account, ``/proc/PID/task/*/schedstat``); None where the kernel
    does not keep it. ``/proc/PID/stat`` counts in 10 ms ticks, too coarse for renders
    of a few hundredths of a second."""
    total = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(os.path.join(task.path, "schedstat")) as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def split(small_cpu: float, small_pixels: int, large_cpu: float, large_pixels: int,
          per_sample: float) -> tuple[float, float]:
    """(fixed CPU seconds of a render, CPU seconds per pixel besides the samples) from
    renders of one sample at two sizes."""
    if large_pixels <= small_pixels:  # a tiny frame: no second size to tell them apart
        return max(0.0, small_cpu - small_pixels * per_sample), 0.0
    per_pixel = max(0.0, (large_cpu - small_cpu) / (large_pixels - small_pixels) - per_sample)
    return max(0.0, small_cpu - small_pixels * (per_pixel + per_sample)), per_pixel


def run(scene: dict[str, Any], resources: Resources, budget_s: float = BUDGET_S
        ) -> Measurement:
    """Scout ``scene`` (validated; its files in ``resources``) in a Blender process of
    its own. Raises ``SceneError`` for what Blender refuses (the execution would fail
    the same way), ``isolation.BlenderDied`` or ``BlenderFailed`` otherwise."""
    from francine.producers.blender import isolation

    t0 = time.perf_counter()
    large = scaled_size(scene["width"], scene["height"], 4 * PIXELS)
    small = scaled_size(scene["width"], scene["height"], large[0] * large[1] // 4)
    root = isolation.mirror(resources)
    file_key = isolation.file_key(resources, scene["blend"])
    child = isolation.Child.start()
    try:
        imported = child.cpu_seconds()
        t_open = time.perf_counter()
        done: list[int] = []

        def render(size: tuple[int, int], samples: int) -> float:
            """CPU seconds of one render of the scaled frame at ``samples``."""
            width, height = size
            before, before_ns = child.cpu_seconds(), thread_cpu_seconds(child.proc.pid)
            request = {"root": str(root), "key": file_key,
                       "scene": {**scene, "width": width, "height": height,
                                 "samples": samples},
                       "tile": (0, 0, width, height), "seeds": [1]}
            reply = child.request(request, f"scouting {scene['blend']}", root)
            unread = isolation.unread_images(child.output(), root)
            if unread:
                raise SceneError("blend", f"Blender could not load {'; '.join(unread)}")
            if reply[0] != "ok":
                _, kind, field, message = reply
                message = message.replace(f"{root}/", "")
                if kind == "scene":
                    raise SceneError(field, message)
                raise isolation.BlenderFailed(message)
            done.append(samples)
            ticks = child.cpu_seconds() - before
            after_ns = thread_cpu_seconds(child.proc.pid)
            if before_ns is None or after_ns is None:
                return ticks
            # A thread that ended meanwhile takes its time out of the precise sum: then
            # the ticks, whose sum keeps ended threads, are the measure.
            precise = after_ns - before_ns
            return precise if abs(precise - ticks) <= 0.02 + 0.1 * ticks else ticks

        small_px, large_px = small[0] * small[1], large[0] * large[1]
        first = render(small, 1)
        lo_small = min(render(small, 1), render(small, 1))
        lo_large = min(render(large, 1), render(large, 1))
        probe = render(large, PROBE_SAMPLES)
        per_sample, _ = fit(lo_large, 1, probe, PROBE_SAMPLES, large_px)
        # The last render: about TARGET_CPU_S, within what is left of the budget (wall
        # seconds per CPU second as the renders so far took them).
        spent = time.perf_counter() - t_open
        so_far = first + 2 * lo_small + 2 * lo_large + probe
        room_cpu = max(0.0, budget_s - spent) * max(so_far, 1e-3) / max(spent, 1e-3)
        want = min(TARGET_CPU_S, room_cpu)
        hi_samples = min(MAX_SAMPLES, max(PROBE_SAMPLES, round(want / (per_sample * large_px))))
        if hi_samples > 2 * PROBE_SAMPLES:
            hi = render(large, hi_samples)
        else:  # the probe was long enough (or the budget is spent): it is the measure
            hi, hi_samples = probe, PROBE_SAMPLES
        per_sample, _ = fit(lo_large, 1, hi, hi_samples, large_px)
        fixed, per_pixel = split(lo_small, small_px, lo_large, large_px, per_sample)
        return Measurement(
            sample_seconds=per_sample, pass_seconds=fixed, pass_pixel_seconds=per_pixel,
            open_seconds=max(0.0, first - lo_small), import_seconds=imported,
            wall_seconds=time.perf_counter() - t0, width=large[0], height=large[1],
            samples=tuple(done))
    finally:
        child.kill()
        shutil.rmtree(root, ignore_errors=True)  # links into the caller's folder
