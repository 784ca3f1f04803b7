"""Reducing with bounded memory: a reduction's children are fetched a few at a time,
in order, and added into one running sum over the node's rectangle as they arrive, so a
reducer holds its node's image plus at most ``WINDOW`` children, whatever its fan-in.

The same accounting lets the planner refuse, up front, an image that the reducer could
not hold (``check_fits``).
"""

from __future__ import annotations

from collections.abc import Iterable

from francine.base import errors
from francine.domain import imaging, planning

#: Children held at once: the one being added (its pixels are not copied) and the next
#: one downloading. Memory stays at the node's image plus ``WINDOW`` children.
WINDOW = 2
#: What a reducer instance holds besides images (interpreter, NumPy, Google clients),
#: measured by bench/reducer_memory.py.
BASE_BYTES = 160 << 20


def region(shape: planning.Shape, node: str) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the rectangle covered by the production tasks under ``node``."""
    level, index = planning.parse_node(node)
    span = shape.fan_in ** level
    first = index * span
    last = min(first + span, shape.productions) - 1
    if last < first:
        raise ValueError(f"{node} has no production task under it")
    t0 = shape.grid_index(first // shape.tasks_per_tile)
    t1 = shape.grid_index(last // shape.tasks_per_tile)
    (r0, c0), (r1, c1) = divmod(t0, shape.tiles_x), divmod(t1, shape.tiles_x)
    x0, x1 = (c0, c1 + 1) if r0 == r1 else (0, shape.tiles_x)
    return (x0 * shape.tile, r0 * shape.tile, min(x1 * shape.tile, shape.width),
            min((r1 + 1) * shape.tile, shape.height))


def accumulate(shape: planning.Shape, node: str,
               children: Iterable[bytes]) -> imaging.Partial:
    """The sum of ``node``'s children (their bytes, e.g. ``Blobs.stream_partials``),
    added one by one as they arrive; the channels are the children's."""
    acc = None
    for data in children:
        partial = imaging.view_partial(data)
        del data
        if acc is None:
            acc = imaging.Accumulator(*region(shape, node), shape.tile, partial.sum.shape[2])
        acc.add(partial)
        del partial
    if acc is None:
        raise ValueError(f"{node} has no children")
    return acc.partial()


def peak_bytes(shape: planning.Shape, channels: int, window: int = WINDOW) -> int:
    """A reducer's peak memory for this execution: at the root, the image's running sum
    plus ``window`` children (each at most the whole image), over what the instance
    holds anyway (the root's sum as stored, and its mean, come after the children are
    let go). A partial's pixel is 8 bytes a channel (fixed point) and 4 for its sum of
    squares."""
    image = shape.width * shape.height * (channels * 8 + 4)
    return BASE_BYTES + image * (1 + window)


def check_fits(shape: planning.Shape, channels: int, limit: int) -> None:
    """A 400 for an image the reducer could not hold (``limit``: its memory in bytes)."""
    need = peak_bytes(shape, channels)
    if limit and need > limit:
        raise errors.BadRequest(
            f"scene: an image of {shape.width}×{shape.height} pixels with {channels} "
            f"channel(s) needs about {need >> 20} MiB in the reducer, more than its "
            f"{limit >> 20} MiB: render a smaller image", "image_too_large")
