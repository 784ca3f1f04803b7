"""Reducing with bounded memory: a reduction's children are fetched a few at a time,
in order, and added into one running sum over the node's rectangle as they arrive, so a
reducer holds its node's image plus at most ``WINDOW`` children, whatever its fan-in.

The same accounting lets the planner refuse, up front, an image that the reducer could
not hold (``check_fits``).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from francine import errors, imaging, planning

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
    t0, t1 = first // shape.tasks_per_tile, last // shape.tasks_per_tile
    (r0, c0), (r1, c1) = divmod(t0, shape.tiles_x), divmod(t1, shape.tiles_x)
    x0, x1 = (c0, c1 + 1) if r0 == r1 else (0, shape.tiles_x)
    return (x0 * shape.tile, r0 * shape.tile, min(x1 * shape.tile, shape.width),
            min((r1 + 1) * shape.tile, shape.height))


def fetched_in_order(get: Callable[[str], bytes], nodes: list[str],
                     window: int = WINDOW) -> Iterator[bytes]:
    """The bytes of each node, in order, with at most ``window`` of them downloaded or
    downloading at any time (the one being used counts): the next download starts
    only when the caller is done with one."""
    with ThreadPoolExecutor(max_workers=max(1, window)) as pool:
        todo = iter(nodes)
        pending: deque = deque(pool.submit(get, n) for n in itertools.islice(todo, window))
        while pending:
            data = pending.popleft().result()
            yield data
            del data
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(get, nxt))


def accumulate(shape: planning.Shape, node: str, channels: int,
               get: Callable[[str], bytes], window: int = WINDOW) -> imaging.Partial:
    """The sum of ``node``'s children, added one by one as they arrive."""
    acc = imaging.Accumulator(*region(shape, node), shape.tile, channels)
    for data in fetched_in_order(get, planning.children(shape, node), window):
        partial = imaging.view_partial(data)
        del data
        acc.add(partial)
        del partial
    return acc.partial()


def peak_bytes(shape: planning.Shape, channels: int, window: int = WINDOW) -> int:
    """A reducer's peak memory for this execution: at the root, the image's running sum
    plus ``window`` children (each at most the whole image), over what the instance
    holds anyway."""
    image = shape.width * shape.height * channels * 4
    return BASE_BYTES + image * (1 + window)


def check_fits(shape: planning.Shape, channels: int, limit: int) -> None:
    """A 400 for an image the reducer could not hold (``limit``: its memory in bytes)."""
    need = peak_bytes(shape, channels)
    if limit and need > limit:
        raise errors.BadRequest(
            f"scene: an image of {shape.width}×{shape.height} pixels with {channels} "
            f"channel(s) needs about {need >> 20} MiB in the reducer, more than its "
            f"{limit >> 20} MiB: render a smaller image", "image_too_large")
