"""Rendering passes of one tile with Cycles through ``bpy``; runs in a Blender process
(``child``), never in the worker itself (``isolation`` says why).

A Blender process keeps one ``.blend`` open: a task of the same file (same resources,
by SHA-256) only sets the frame, camera, render border and each pass's seed and
renders. The file is opened from a directory that mirrors the session's resources by
name (symbolic links to the fetched files, made by the worker), so that its relative
paths (``//textures/wood.png``) resolve to the session's resources and nothing else.
Before the first render of a frame, every file Blender reads for that frame must be
there (``external``): a missing one fails the task instead of rendering magenta.

The tile is a render border cropped to it, rendered to an uncompressed float EXR that
is read back: Cycles samples each pixel from its absolute position and the seed, so a
pixel's value does not depend on the border. Settings that would make a pass depend on
its neighbours or bias the mean of passes are turned off: adaptive sampling, per-pass
denoising, the animated seed, compositing and the sequencer. Persistent data stays on:
the scene's sync and BVH are paid once per file and frame, not once per pass.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field

import numpy as np

from francine.domain.producer import SceneError, Tile
from francine.producers.blender import external

#: Cycles' seed is a non-negative C int.
SEED_MASK = 0x7FFFFFFF


def threads() -> int:
    for var in ("FRANCINE_BLENDER_THREADS", "NUMBA_NUM_THREADS"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) > 0:
            return int(os.environ[var])
    return os.cpu_count() or 1


@dataclass
class OpenFile:
    key: str
    path: pathlib.Path
    #: Camera transforms and actions as the file has them, restored before each task.
    matrices: dict = field(default_factory=dict)
    actions: dict = field(default_factory=dict)
    #: Frames whose external files were found complete (the mirror does not change
    #: under a key: its files are the session's, by content).
    checked: set = field(default_factory=set)


#: The file this process has open.
CURRENT: list[OpenFile] = []


def open_file(root: pathlib.Path, blend: str, key: str) -> OpenFile:
    """The opened ``.blend`` of ``key``, opening it if another one (or none) is open."""
    import bpy

    path = root / blend
    if CURRENT and CURRENT[0].key == key and CURRENT[0].path == path \
            and bpy.data.filepath == str(path):
        return CURRENT[0]
    bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False)
    opened = OpenFile(key, path)
    for obj in bpy.data.objects:
        if obj.type == "CAMERA":
            opened.matrices[obj.name] = obj.matrix_world.copy()
            opened.actions[obj.name] = obj.animation_data.action if obj.animation_data else None
    CURRENT[:] = [opened]
    return opened


def set_camera(f: OpenFile, sc, scene: dict) -> None:
    import bpy
    import mathutils

    for name, matrix in f.matrices.items():
        obj = bpy.data.objects[name]
        if obj.animation_data is not None:
            obj.animation_data.action = f.actions[name]
        obj.matrix_world = matrix
    cam = bpy.data.objects.get(scene["camera"])
    if cam is None or cam.type != "CAMERA":
        raise SceneError("camera", f"no camera object {scene['camera']!r}")
    sc.camera = cam
    sc.frame_set(scene["frame"])
    if scene.get("camera_matrix") is not None:
        if cam.animation_data is not None:
            cam.animation_data.action = None  # or the render would re-apply the animation
        cam.matrix_world = mathutils.Matrix(scene["camera_matrix"])


def configure(sc, scene: dict, tile: Tile, seed: int, out: pathlib.Path) -> None:
    """Every setting of a pass. All of them again for each pass: setting the seed alone
    (an add-on property) does not tag the scene, and the render would keep the last
    pass's seed; the render settings do."""
    r = sc.render
    r.engine = "CYCLES"
    c = sc.cycles
    c.device = "CPU"
    c.samples = scene["samples"]
    c.use_adaptive_sampling = False
    c.use_animated_seed = False
    c.seed = seed & SEED_MASK
    width, height = scene["width"], scene["height"]
    r.resolution_x, r.resolution_y, r.resolution_percentage = width, height, 100
    r.use_border = True
    r.use_crop_to_border = True
    # Blender truncates border × size to pixels: aim at the middle of the pixel edge so
    # float rounding cannot move it. Its y axis points up, the tile's down.
    r.border_min_x = min(1.0, (tile.x0 + 0.5) / width) if tile.x0 else 0.0
    r.border_max_x = min(1.0, (tile.x0 + tile.width + 0.5) / width)
    bottom = height - tile.y0 - tile.height
    r.border_min_y = min(1.0, (bottom + 0.5) / height) if bottom else 0.0
    r.border_max_y = min(1.0, (height - tile.y0 + 0.5) / height)
    r.threads_mode = "FIXED"
    r.threads = threads()
    r.use_compositing = False
    r.use_sequencer = False
    r.use_persistent_data = True
    denoise = bool(scene.get("denoise"))
    # Cycles stores the denoising albedo and normal only while denoising is on for the
    # scene; off for every view layer, the colour itself stays as sampled.
    c.use_denoising = denoise
    for layer in sc.view_layers:
        layer.cycles.use_denoising = False
        layer.cycles.denoising_store_passes = denoise
    fmt = r.image_settings
    # Blender 5 chooses multilayer EXR by media type (4.x by file format).
    fmt.media_type = "MULTI_LAYER_IMAGE" if denoise else "IMAGE"
    fmt.file_format = "OPEN_EXR_MULTILAYER" if denoise else "OPEN_EXR"
    fmt.color_mode = "RGBA"
    fmt.color_depth = "32"
    fmt.exr_codec = "NONE"
    r.filepath = str(out)
    r.use_file_extension = False


def render_passes(root: pathlib.Path, key: str, scene: dict, tile: Tile, seeds: list[int],
                  out: pathlib.Path) -> list[np.ndarray]:
    """One (tile.height, tile.width, 4) linear RGBA array per seed; with ``denoise`` 10
    channels: RGBA, then the denoising albedo (3) and normal (3), averaged over passes
    like colour so that the root can denoise the mean. The passes of a folded task share
    the frame, camera and file check, which are set once for all of them."""
    import bpy

    f = open_file(root, scene["blend"], key)
    sc = bpy.data.scenes.get(scene["scene"])
    if sc is None:
        raise SceneError("scene", f"no scene {scene['scene']!r}")
    set_camera(f, sc, scene)
    if scene["frame"] not in f.checked:
        external.check(root, scene["blend"], scene["frame"])
        f.checked.add(scene["frame"])
    passes = []
    try:
        for seed in seeds:
            configure(sc, scene, tile, seed, out)
            bpy.ops.render.render(write_still=True, scene=sc.name)
            passes.append(read_exr(out, bool(scene.get("denoise"))))
    except (RuntimeError, TypeError, AttributeError) as e:
        # What Blender refuses (a setting, the render itself) fails the same way on
        # every delivery: a ValueError ends the execution now, with Blender's reason.
        raise ValueError(f"Blender: {e}") from e
    finally:
        out.unlink(missing_ok=True)
    for pixels in passes:
        if pixels.shape[:2] != (tile.height, tile.width):
            raise ValueError(f"Blender rendered {pixels.shape[1]}×{pixels.shape[0]} pixels "
                             f"for a {tile.width}×{tile.height} tile")
    return passes


def read_exr(path: pathlib.Path, denoise: bool) -> np.ndarray:
    import OpenEXR

    with OpenEXR.File(str(path), separate_channels=True) as f:
        # A multilayer file holds one part per pass.
        channels = {name: np.asarray(c.pixels, np.float32)
                    for part in f.parts for name, c in part.channels.items()}

    def pick(suffixes: list[str]) -> np.ndarray:
        found = []
        for s in suffixes:
            match = [n for n in channels if n == s or n.endswith("." + s)]
            if not match:
                raise ValueError(f"the render has no channel {s!r} (has {sorted(channels)})")
            found.append(channels[sorted(match, key=len)[0]])
        return np.stack(found, axis=-1)

    if not denoise:
        return pick(["R", "G", "B", "A"])
    return np.concatenate([
        pick(["Combined.R", "Combined.G", "Combined.B", "Combined.A"]),
        pick(["Denoising Albedo.R", "Denoising Albedo.G", "Denoising Albedo.B"]),
        pick(["Denoising Normal.X", "Denoising Normal.Y", "Denoising Normal.Z"]),
    ], axis=-1)
