"""Partial images, their reduction, tone mapping and encoding. Pure NumPy, no I/O.

A partial covers a rectangle of the image that is a union of tiles. It holds the *sum*
of the sample passes it has seen and, per tile cell, how many passes that is; so
combining partials is addition, whatever mix of tiles and passes they hold, and the
final image is sum / count. Counts per tile rather than per pixel keep a partial at the
size of its pixels (a gray 512×512 pass is 1 MiB, not 2).
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from francine.producers.base import Tile

FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "exr": "image/x-exr"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "exr": "exr"}


@dataclass
class Partial:
    x0: int
    y0: int
    tile: int  # edge of the tile grid that counts refer to
    sum: np.ndarray  # float32 (h, w, channels)
    count: np.ndarray  # float32 (ceil(h / tile), ceil(w / tile)): passes per tile cell

    @property
    def width(self) -> int:
        return self.sum.shape[1]

    @property
    def height(self) -> int:
        return self.sum.shape[0]

    def pixel_counts(self) -> np.ndarray:
        """Counts expanded to pixels: (h, w, 1)."""
        full = np.repeat(np.repeat(self.count, self.tile, axis=0), self.tile, axis=1)
        return full[: self.height, : self.width, None]

    def mean(self) -> np.ndarray:
        counts = self.pixel_counts()
        if np.any(counts == 0):
            raise ValueError("partial has pixels that no pass has covered")
        return self.sum / counts


def from_pass(tile: Tile, grid: int, pixels: np.ndarray) -> Partial:
    """The partial of one production task: one pass over one tile."""
    if pixels.ndim != 3 or pixels.shape[:2] != (tile.height, tile.width):
        raise ValueError(f"producer returned {pixels.shape}, expected "
                         f"({tile.height}, {tile.width}, channels)")
    count = np.ones((-(-tile.height // grid), -(-tile.width // grid)), np.float32)
    return Partial(tile.x0, tile.y0, grid, np.ascontiguousarray(pixels, np.float32), count)


def combine(partials) -> Partial:
    """Sum partials into one over their union.

    Two passes of the same tile add up; different tiles land side by side.
    """
    items = list(partials)
    if not items:
        raise ValueError("nothing to combine")
    grid = items[0].tile
    x0 = min(p.x0 for p in items)
    y0 = min(p.y0 for p in items)
    x1 = max(p.x0 + p.width for p in items)
    y1 = max(p.y0 + p.height for p in items)
    channels = items[0].sum.shape[2]
    total = np.zeros((y1 - y0, x1 - x0, channels), np.float32)
    count = np.zeros((-(-(y1 - y0) // grid), -(-(x1 - x0) // grid)), np.float32)
    for p in items:
        if p.tile != grid or p.sum.shape[2] != channels or (p.x0 - x0) % grid or (p.y0 - y0) % grid:
            raise ValueError("partials of different grids or channels cannot be combined")
        ys, xs = p.y0 - y0, p.x0 - x0
        total[ys: ys + p.height, xs: xs + p.width] += p.sum
        gy, gx = ys // grid, xs // grid
        count[gy: gy + p.count.shape[0], gx: gx + p.count.shape[1]] += p.count
    return Partial(x0, y0, grid, total, count)


def dump_partial(p: Partial) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, origin=np.array([p.x0, p.y0, p.tile], np.int64), sum=p.sum, count=p.count)
    return buf.getvalue()


def load_partial(data: bytes) -> Partial:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        x0, y0, tile = (int(v) for v in z["origin"])
        return Partial(x0, y0, tile, z["sum"], z["count"])


# --- display and encoding --------------------------------------------------------------

def srgb_encode(linear: np.ndarray) -> np.ndarray:
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def to_8bit(linear: np.ndarray, display: str) -> np.ndarray:
    """Map linear values to 8 bits: "linear" clamps as the classic aobench does
    (``(int)(v * 255.5)``), "srgb" applies the sRGB transfer curve first."""
    if display == "srgb":
        v = srgb_encode(linear)
    elif display == "linear":
        v = np.clip(linear, 0.0, 1.0)
    else:
        raise ValueError(f"unknown display transform {display!r}")
    return np.clip(v * 255.5, 0, 255).astype(np.uint8)


def rgba_to_8bit(linear: np.ndarray, display: str, keep_alpha: bool) -> np.ndarray:
    """Premultiplied linear RGBA (as renderers give it) to 8 bits: straight alpha, kept
    linear, when it is kept (PNG); otherwise the colour over black (JPEG)."""
    alpha = np.clip(linear[:, :, 3:4], 0.0, 1.0)
    if not keep_alpha:
        return to_8bit(linear[:, :, :3], display)
    rgb = np.where(alpha > 0, linear[:, :, :3] / np.maximum(alpha, 1e-12), 0.0)
    return np.concatenate([to_8bit(rgb, display), to_8bit(alpha, "linear")], axis=2)


def encode(linear: np.ndarray, fmt: str, display: str) -> bytes:
    """Encode a (h, w, channels) linear image as png, jpeg (8-bit, display-mapped) or
    exr (float32, linear: EXR keeps the radiance, tone mapping is the viewer's job)."""
    if fmt == "exr":
        return _encode_exr(np.ascontiguousarray(linear, np.float32))
    from PIL import Image

    if linear.shape[2] == 4:
        pixels = rgba_to_8bit(linear, display, keep_alpha=fmt == "png")
    else:
        pixels = to_8bit(linear, display)
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG")
    elif fmt == "jpeg":
        image.save(buf, format="JPEG", quality=95)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return buf.getvalue()


def _encode_exr(linear: np.ndarray) -> bytes:
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    channels = ({"Y": linear[:, :, 0]} if linear.shape[2] == 1 else
                {"RGBA": linear[:, :, :4]} if linear.shape[2] == 4 else {"RGB": linear[:, :, :3]})
    # The OpenEXR binding writes files only.
    fd, path = tempfile.mkstemp(suffix=".exr")
    os.close(fd)
    try:
        with OpenEXR.File(header, channels) as f:
            f.write(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)
