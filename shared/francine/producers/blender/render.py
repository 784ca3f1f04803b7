"""Rendering one tile of one pass with Cycles through ``bpy``; imported by workers only.

A worker instance keeps one ``.blend`` open: a task of the same file (same resources,
by SHA-256) only sets the pass's seed, samples, frame, camera and render border and
renders. The file is opened from a directory that mirrors the session's resources by
name (symbolic links to the fetched files), so that its relative paths
(``//textures/wood.png``) resolve to the session's resources and nothing else.

The tile is a render border cropped to it, rendered to an uncompressed float EXR that
is read back: Cycles samples each pixel from its absolute position and the seed, so a
pixel's value does not depend on the border. Settings that would make a pass depend on
its neighbours or bias the mean of passes are turned off: adaptive sampling, per-pass
denoising, the animated seed, compositing and the sequencer.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import threading
from dataclasses import dataclass, field

import numpy as np

from francine.producers.base import Resources, SceneError, Tile

#: Cycles' seed is a non-negative C int.
SEED_MASK = 0x7FFFFFFF
MEMO_KEY = "blender.open"
#: bpy is one Blender: one file open and one render at a time per process.
LOCK = threading.Lock()


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
    opened: int = 0  # how many times this instance opened a file (for tests and logs)


def mirror(resources: Resources) -> pathlib.Path:
    """A directory holding every resource of the session under its name (symlinks to
    the fetched files), named by the digest of the whole set."""
    digest = hashlib.sha256("\n".join(
        f"{n}\0{resources.sha256(n)}" for n in sorted(resources.infos)).encode()).hexdigest()
    first = resources.path(next(iter(sorted(resources.infos))))
    root = first.parent / "blender" / digest[:32]
    if (root / ".complete").exists():
        return root
    for name in sorted(resources.infos):
        target = resources.path(name)
        link = root / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            tmp = link.with_name(f".{link.name}.{os.getpid()}")
            if tmp.is_symlink():
                tmp.unlink()
            tmp.symlink_to(target)
            os.replace(tmp, link)
    (root / ".complete").touch()
    return root


def open_file(resources: Resources, blend: str) -> OpenFile:
    """The opened ``.blend`` of this session, opening it if another one is open."""
    import bpy

    key = hashlib.sha256("\n".join(
        [blend] + [f"{n}\0{resources.sha256(n)}" for n in sorted(resources.infos)]
    ).encode()).hexdigest()
    current: OpenFile | None = resources.memo.get(MEMO_KEY)
    if current is not None and current.key == key and bpy.data.filepath == str(current.path):
        return current
    path = mirror(resources) / blend
    bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False)
    opened = OpenFile(key, path, opened=(current.opened if current else 0) + 1)
    for obj in bpy.data.objects:
        if obj.type == "CAMERA":
            opened.matrices[obj.name] = obj.matrix_world.copy()
            opened.actions[obj.name] = obj.animation_data.action if obj.animation_data else None
    resources.memo[MEMO_KEY] = opened
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


def render_tile(scene: dict, tile: Tile, seed: int, resources: Resources) -> np.ndarray:
    """(tile.height, tile.width, 4) linear RGBA of one pass; with ``denoise`` 10 channels:
    RGBA, then the denoising albedo (3) and normal (3), averaged over passes like colour
    so that the root can denoise the mean."""
    import bpy

    with LOCK:
        f = open_file(resources, scene["blend"])
        sc = bpy.data.scenes.get(scene["scene"])
        if sc is None:
            raise SceneError("scene", f"no scene {scene['scene']!r}")
        set_camera(f, sc, scene)
        fd, tmp = tempfile.mkstemp(suffix=".exr", prefix="francine-tile-")
        os.close(fd)
        out = pathlib.Path(tmp)
        try:
            configure(sc, scene, tile, seed, out)
            bpy.ops.render.render(write_still=True, scene=sc.name)
            pixels = read_exr(out, bool(scene.get("denoise")))
        except (RuntimeError, TypeError, AttributeError) as e:
            # What Blender refuses (a setting, the render itself) fails the same way on
            # every delivery: a ValueError ends the execution now, with Blender's reason.
            raise ValueError(f"Blender: {e}") from e
        finally:
            out.unlink(missing_ok=True)
    if pixels.shape[:2] != (tile.height, tile.width):
        raise ValueError(f"Blender rendered {pixels.shape[1]}×{pixels.shape[0]} pixels for a "
                         f"{tile.width}×{tile.height} tile")
    return pixels


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
