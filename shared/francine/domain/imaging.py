"""Partial images, their reduction, tone mapping and encoding. Pure NumPy, no I/O.

A partial covers a rectangle of the image that is a union of tiles. It holds the *sum*
of the sample passes it has seen and, per tile cell, how many passes that is; so
combining partials is addition, whatever mix of tiles and passes they hold, and the
final image is sum / count. Counts per tile rather than per pixel keep a partial at the
size of its pixels.

*Fixed point.* Each pass's values are rounded to multiples of 2^-30 (``quantize``) and
summed as 64-bit integers, so a sum is exact: partials add up to the same bits in any
order and grouping (a reduction tree of any fan-in, a task's folded passes, an
extension's passes added to a finished render's), and an image of N passes is the same
bytes however its passes were cut. A pass value beyond ±``LIMIT`` is clipped (65,536
passes of it still fit in 64 bits).

*Noise.* Beside the sum a partial holds, per pixel, the sum of the squares of each
pass's luminance (``sq``, float32: it only estimates the variance across passes, so
that ``relative_error`` tells how noisy the mean is and a render can stop when it is
good enough).
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np

from francine.domain.producer import Tile

FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "exr": "image/x-exr"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "exr": "exr"}

FIXED_BITS = 30
SCALE = float(1 << FIXED_BITS)
#: The most passes one pixel's sum may hold.
MAX_PASSES_SUMMED = 1 << 16
#: A pass's values are clipped to ±LIMIT (131,072) so that MAX_PASSES_SUMMED fit.
LIMIT = float(1 << (63 - FIXED_BITS - 16))
#: Rec. 709 luminance weights: the noise of an RGB(A) pixel is its luminance's.
LUMA = (0.2126, 0.7152, 0.0722)


def quantize(pixels: np.ndarray) -> np.ndarray:
    """A pass's float values as fixed-point int64 (NaN as 0, clipped to ±LIMIT)."""
    x = np.nan_to_num(np.asarray(pixels, np.float64), nan=0.0, posinf=LIMIT, neginf=-LIMIT)
    np.clip(x, -LIMIT, LIMIT, out=x)
    return np.rint(x * SCALE).astype(np.int64)


def luminance(pixels: np.ndarray) -> np.ndarray:
    """(h, w, 1) float64: Rec. 709 luminance of the first three channels (RGB, RGBA and
    the denoiser's extra channels after them), or the one channel of a gray image."""
    x = np.asarray(pixels, np.float64)
    if x.shape[2] < 3:
        return x[:, :, :1]
    return (LUMA[0] * x[:, :, 0] + LUMA[1] * x[:, :, 1] + LUMA[2] * x[:, :, 2])[:, :, None]


def squared_luminance(total: np.ndarray) -> np.ndarray:
    """(h, w, 1) float32: the square of the luminance of a fixed-point sum of one pass
    (computed in float32, a channel at a time: it only feeds the noise estimate)."""
    weights = LUMA if total.shape[2] >= 3 else (1.0,)
    lum = np.zeros(total.shape[:2], np.float32)
    for c, weight in enumerate(weights):
        lum += total[:, :, c].astype(np.float32) * np.float32(weight / SCALE)
    return np.square(lum, out=lum)[:, :, None]


class PassSum:
    """The passes of one tile (or band) added as the producer hands them over: their
    fixed-point sum and the sum of their luminances' squares."""

    def __init__(self) -> None:
        self.sum: np.ndarray | None = None
        self.sq: np.ndarray | None = None

    def add(self, pixels: np.ndarray) -> None:
        fixed, square = quantize(pixels), np.square(luminance(pixels)).astype(np.float32)
        if self.sum is None:
            self.sum, self.sq = fixed, square
        else:
            self.sum += fixed
            self.sq += square


@dataclass
class Partial:
    x0: int
    y0: int
    tile: int  # edge of the tile grid that counts refer to
    sum: np.ndarray  # int64 (h, w, channels): fixed point, SCALE per unit
    count: np.ndarray  # float32 (ceil(h / tile), ceil(w / tile)): passes per tile cell
    sq: np.ndarray  # float32 (h, w, 1): sum over passes of the luminance squared

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

    def mean(self, uncovered: float | None = None) -> np.ndarray:
        """sum / count as float32, computed in bands of rows (a float64 band at a time);
        pixels no pass covered are ``uncovered``, or a ValueError when it is None."""
        counts = self.pixel_counts()
        if uncovered is None and np.any(counts == 0):
            raise ValueError("partial has pixels that no pass has covered")
        out = np.empty(self.sum.shape, np.float32)
        for y in range(0, self.height, BAND):
            c = counts[y: y + BAND].astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                band = self.sum[y: y + BAND] / (SCALE * c)
            if uncovered is not None:
                band[np.broadcast_to(c == 0, band.shape)] = uncovered
            out[y: y + BAND] = band
        return out


def relative_error(p: Partial, near_black: float) -> np.ndarray:
    """Per pixel (h, w) float64: the estimated relative standard error of the mean of
    its passes' luminance, from the variance across passes (sum and sum of squares);
    NaN where the mean is below ``near_black`` or no pass covered it, inf where one
    pass did (no variance to estimate yet)."""
    n = p.pixel_counts()[:, :, 0].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = luminance(p.sum / SCALE)[:, :, 0] / n
        var = (p.sq[:, :, 0] / n - mean * mean) * n / (n - 1)
        error = np.sqrt(np.maximum(var, 0.0) / n) / mean
    error[n == 1] = np.inf
    error[(n == 0) | ~(mean >= near_black)] = np.nan
    return error


def noise_of(errors: np.ndarray, share: float = 0.99) -> float:
    """The error that ``share`` of the pixels (those with one) are at or below: 0 for
    none (all near-black)."""
    values = errors[~np.isnan(errors)]
    if values.size == 0:
        return 0.0
    return float(np.quantile(values, share, method="higher"))


def checked_pass(tile: Tile, pixels: np.ndarray) -> np.ndarray:
    """A producer's pixels for ``tile`` as float32 (height, width, channels)."""
    if pixels.ndim != 3 or pixels.shape[:2] != (tile.height, tile.width):
        raise ValueError(f"producer returned {pixels.shape}, expected "
                         f"({tile.height}, {tile.width}, channels)")
    return np.ascontiguousarray(pixels, np.float32)


def tile_partial(tile: Tile, grid: int, passes_sum: PassSum, passes: int = 1) -> Partial:
    """The partial of one production task: the sum of ``passes`` passes over one tile."""
    if passes_sum.sum is None or passes_sum.sq is None:
        raise ValueError("no pass was rendered")
    if passes_sum.sum.shape[:2] != (tile.height, tile.width):
        raise ValueError(f"passes of {passes_sum.sum.shape}, expected a tile of "
                         f"({tile.height}, {tile.width})")
    count = np.full((-(-tile.height // grid), -(-tile.width // grid)), passes, np.float32)
    return Partial(tile.x0, tile.y0, grid, passes_sum.sum, count, passes_sum.sq)


def from_pass(tile: Tile, grid: int, pixels: np.ndarray) -> Partial:
    """The partial of one production task: one pass over one tile."""
    one = PassSum()
    one.add(checked_pass(tile, pixels))
    return tile_partial(tile, grid, one, 1)


def dump_band(band: PassSum) -> bytes:
    """A band of a tile's pass sums (a piece of a speculative copy), as stored."""
    buf = io.BytesIO()
    np.savez(buf, sum=band.sum, sq=band.sq)
    return buf.getvalue()


def load_bands(data: list[bytes]) -> PassSum:
    """The bands of a tile, top to bottom, as one tile's pass sums."""
    sums, squares = [], []
    for d in data:
        with np.load(io.BytesIO(d), allow_pickle=False) as z:
            sums.append(z["sum"])
            squares.append(z["sq"])
    out = PassSum()
    out.sum, out.sq = np.concatenate(sums, axis=0), np.concatenate(squares, axis=0)
    return out


def combine(partials) -> Partial:
    """Sum partials into one over their union.

    Two passes of the same tile add up; different tiles land side by side.
    """
    items = list(partials)
    if not items:
        raise ValueError("nothing to combine")
    x0 = min(p.x0 for p in items)
    y0 = min(p.y0 for p in items)
    x1 = max(p.x0 + p.width for p in items)
    y1 = max(p.y0 + p.height for p in items)
    acc = Accumulator(x0, y0, x1, y1, items[0].tile, items[0].sum.shape[2])
    for p in items:
        acc.add(p)
    return acc.partial()


class Accumulator:
    """A running sum over a known rectangle: partials are added one at a time as they
    arrive, so memory is the rectangle's, whatever the number of partials."""

    def __init__(self, x0: int, y0: int, x1: int, y1: int, grid: int, channels: int):
        self.x0, self.y0, self.grid, self.channels = x0, y0, grid, channels
        self.total = np.zeros((y1 - y0, x1 - x0, channels), np.int64)
        self.sq = np.zeros((y1 - y0, x1 - x0, 1), np.float32)
        self.count = np.zeros((-(-(y1 - y0) // grid), -(-(x1 - x0) // grid)), np.float32)
        self.added = 0

    @classmethod
    def wrap(cls, p: Partial) -> Accumulator:
        """An accumulator that adds into ``p``'s own (writable) arrays: no copy."""
        acc = cls.__new__(cls)
        if p.sum.dtype != np.int64 or not p.sum.flags.writeable:
            p.sum = p.sum.astype(np.int64)
        if not p.sq.flags.writeable:
            p.sq = p.sq.copy()
        acc.x0, acc.y0, acc.grid, acc.channels = p.x0, p.y0, p.tile, p.sum.shape[2]
        acc.total, acc.sq, acc.count, acc.added = p.sum, p.sq, p.count, 1
        return acc

    def add(self, p: Partial) -> None:
        h, w = self.total.shape[:2]
        ys, xs = p.y0 - self.y0, p.x0 - self.x0
        if (p.tile != self.grid or p.sum.shape[2] != self.channels or xs % self.grid
                or ys % self.grid):
            raise ValueError("partials of different grids or channels cannot be combined")
        if xs < 0 or ys < 0 or xs + p.width > w or ys + p.height > h:
            raise ValueError("partial outside the rectangle being reduced")
        self.total[ys: ys + p.height, xs: xs + p.width] += p.sum
        self.sq[ys: ys + p.height, xs: xs + p.width] += p.sq
        gy, gx = ys // self.grid, xs // self.grid
        self.count[gy: gy + p.count.shape[0], gx: gx + p.count.shape[1]] += p.count
        self.added += 1

    def partial(self) -> Partial:
        if not self.added:
            raise ValueError("nothing to combine")
        return Partial(self.x0, self.y0, self.grid, self.total, self.count, self.sq)


def dump_partial(p: Partial) -> bytes:
    """A partial as stored: its sum in 32 bits when it fits (a pass or two of ordinary
    values), and no sum of squares where every tile holds one pass (it is then the
    square of the sum's luminance, computed again when read): a task's partial is then
    4 bytes a value, as a float32 one would be."""
    total = p.sum
    if total.size and int(np.abs(total).max()) < 1 << 31:
        total = total.astype(np.int32)
    arrays = {"origin": np.array([p.x0, p.y0, p.tile], np.int64), "sum": total,
              "count": p.count}
    if not (p.count == 1).all():
        arrays["sq"] = p.sq
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def stored(x0: int, y0: int, tile: int, total: np.ndarray, count: np.ndarray,
           sq: np.ndarray | None) -> Partial:
    """The partial that ``dump_partial`` stored (or the float32 format before it)."""
    if total.dtype.kind == "f":  # written before partials were in fixed point
        return from_float(x0, y0, tile, total, count)
    if sq is None:  # one pass a tile: the square of its luminance
        sq = squared_luminance(total)
    return Partial(x0, y0, tile, total, count, sq)


def load_partial(data: bytes) -> Partial:
    """A stored partial with its own, writable, 64-bit arrays."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        x0, y0, tile = (int(v) for v in z["origin"])
        total = z["sum"]
        if total.dtype.kind == "i":
            total = total.astype(np.int64)
        return stored(x0, y0, tile, total, z["count"], z["sq"] if "sq" in z.files else None)


def from_float(x0: int, y0: int, tile: int, total: np.ndarray, count: np.ndarray) -> Partial:
    """A partial of the float32 format that came before fixed point (a render in flight
    while a new version deployed): its sum in fixed point; no squares (no noise
    estimate: as if no pass varied)."""
    counts = np.repeat(np.repeat(count, tile, axis=0), tile, axis=1)
    counts = counts[: total.shape[0], : total.shape[1], None].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(counts > 0, total / counts, 0.0)
    sq = (np.square(luminance(mean)) * counts).astype(np.float32)
    return Partial(x0, y0, tile, quantize(total), count, sq)


def view_partial(data: bytes) -> Partial:
    """A partial over the bytes of ``dump_partial`` without copying its pixels (read-only
    arrays that keep ``data`` alive): the reducer adds it, then lets both go."""
    view = memoryview(data)
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                return load_partial(data)
            local = info.header_offset
            name_len, extra_len = struct.unpack("<HH", view[local + 26: local + 30])
            start = local + 30 + name_len + extra_len
            head = io.BytesIO(view[start: start + min(info.file_size, 4096)].tobytes())
            version = np.lib.format.read_magic(head)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(head)
            if fortran or dtype.hasobject:
                return load_partial(data)
            count = int(np.prod(shape)) if shape else 1
            arrays[info.filename.removesuffix(".npy")] = np.frombuffer(
                view, dtype, count=count, offset=start + head.tell()).reshape(shape)
    x0, y0, tile = (int(v) for v in arrays["origin"])
    return stored(x0, y0, tile, arrays["sum"], arrays["count"], arrays.get("sq"))


# --- display and encoding --------------------------------------------------------------

#: Rows converted at once when encoding.
BAND = 256


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def to_8bit(linear: np.ndarray, display: str) -> np.ndarray:
    """Map linear values to 8 bits: "linear" clamps as the classic aobench does
    (``(int)(v * 255.5)``), "srgb" applies the sRGB transfer curve first."""
    if display not in ("srgb", "linear"):
        raise ValueError(f"unknown display transform {display!r}")
    out = np.empty(linear.shape, np.uint8)
    # In bands of rows: the float temporaries stay small whatever the image.
    for y in range(0, linear.shape[0], BAND):
        part = linear[y: y + BAND]
        v = srgb_encode(part) if display == "srgb" else np.clip(part, 0.0, 1.0)
        out[y: y + BAND] = np.clip(v * 255.5, 0, 255).astype(np.uint8)
    return out


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
