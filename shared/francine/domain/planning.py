"""Planning an execution: production tasks, the reduction tree, seeds. Pure code.

An execution of ``passes`` sample passes over an image cut into ``tiles`` becomes
N = tiles × ⌈passes / fold⌉ production tasks, ordered tile-major (the passes of one tile
are neighbours, so that early reductions combine passes of the same region and stay
small). A task renders ``fold`` consecutive passes of its tile (fewer for the last one)
when one pass alone is too small to be worth a task; every pass keeps its own seed, so
the image does not depend on the folding.
Reduction is a tree of fan-in f = ⌈√N⌉: level 1 combines runs of f production partials,
level 2 runs of f level-1 results, and so on up to a single root, which also tone-maps
and encodes the final image. There is always a root, even for N = 1.

Everything here is a function of a small ``Shape`` that the execution document stores,
so any worker can tell a node's parent and group size without reading the others.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

from francine.domain.producer import Tile

MAX_SEED = (1 << 63) - 1


#: The most passes one execution asks for, and the smallest tile edge (the REST
#: contract's limits; the scheduler itself has none).
MAX_PARALLEL = 4096
MIN_TILE = 8

@dataclass(frozen=True)
class Shape:
    width: int
    height: int
    passes: int
    tile: int  # edge of the square tiles, in pixels
    fan_in: int
    fold: int = 1  # passes per production task
    # The tiles rendered, by index in the grid (row-major), ascending; empty: all of
    # them. A wave of a render with a noise target renders only its noisy tiles.
    only: tuple[int, ...] = ()

    @property
    def tasks_per_tile(self) -> int:
        return -(-self.passes // self.fold)

    @property
    def tiles_x(self) -> int:
        return math.ceil(self.width / self.tile)

    @property
    def tiles_y(self) -> int:
        return math.ceil(self.height / self.tile)

    @property
    def tiles(self) -> int:
        """The tiles rendered (all of the grid's, or those ``only`` names)."""
        return len(self.only) if self.only else self.tiles_x * self.tiles_y

    def grid_index(self, rendered: int) -> int:
        """The grid index of the ``rendered``-th tile rendered."""
        return self.only[rendered] if self.only else rendered

    @property
    def productions(self) -> int:
        return self.tiles * self.tasks_per_tile

    def level_sizes(self) -> list[int]:
        """Number of nodes per level: level 0 are the production tasks."""
        sizes = [self.productions]
        while True:
            sizes.append(math.ceil(sizes[-1] / self.fan_in))
            if sizes[-1] == 1:
                return sizes

    @property
    def root(self) -> str:
        return node_name(len(self.level_sizes()) - 1, 0)

    @property
    def total_tasks(self) -> int:
        return sum(self.level_sizes())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        if self.only:
            d["only"] = list(self.only)
        else:
            del d["only"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shape:
        return cls(**{k: int(d[k]) for k in ("width", "height", "passes", "tile", "fan_in")},
                   fold=int(d.get("fold", 1)), only=tuple(int(t) for t in d.get("only", ())))


def largest_tile(width: int, height: int, pixel_seconds: float, budget_s: float) -> int:
    """The edge of the largest square tile (a multiple of 8, at least 8) whose one pass
    is estimated to take at most ``budget_s``; the whole image if it fits."""
    whole = max(width, height)
    if pixel_seconds <= 0 or width * height * pixel_seconds <= budget_s:
        return whole
    edge = int(math.sqrt(budget_s / pixel_seconds)) // 8 * 8
    return min(whole, max(8, edge))


def task_seconds(shape: Shape, pixel_seconds: float) -> float:
    """Estimated seconds of the largest production task (all its folded passes)."""
    return min(shape.tile, shape.width) * min(shape.tile, shape.height) * pixel_seconds \
        * shape.fold


#: A task's fixed cost (``overhead_s``: the producer's per-task setup, the handler's
#: round trips) is kept under this share of the task by folding passes.
OVERHEAD_SHARE = 0.2


def passes_per_task(pass_seconds: float, passes: int, min_task_s: float,
                    max_task_s: float, overhead_s: float = 0.0, tiles: int = 1,
                    instances: int = 0) -> int:
    """How many passes of a tile one task renders: enough to reach ``min_task_s`` when
    one pass is shorter, and enough that the task's fixed cost ``overhead_s`` stays
    under ``OVERHEAD_SHARE`` of it; never more than fit in ``max_task_s``, never more
    than exist, and never so many that fewer tasks than the farm's ``instances`` remain
    (when there are that many tile-passes): an idle instance costs more than overhead."""
    if pass_seconds <= 0:
        return max(1, passes) if min_task_s > 0 or overhead_s > 0 else 1
    wanted = 1
    if min_task_s > 0 and pass_seconds < min_task_s:
        wanted = math.ceil(min_task_s / pass_seconds)
    if overhead_s > 0:
        share = overhead_s / OVERHEAD_SHARE - overhead_s  # render time that makes it the share
        wanted = max(wanted, math.ceil(share / pass_seconds))
    fold = max(1, min(passes, wanted, int(max_task_s // pass_seconds)))
    floor = min(instances, tiles * passes)
    while fold > 1 and tiles * -(-passes // fold) < floor:
        fold -= 1
    # As many tasks per tile, evened out: 4 passes are 2 + 2, not 3 + 1.
    return -(-passes // -(-passes // fold))


def make_shape(width: int, height: int, passes: int, tile: int | None,
               fold: int = 1, only: tuple[int, ...] = ()) -> Shape:
    edge = max(width, height) if tile is None else tile
    fold = max(1, min(fold, passes))
    tiles = len(only) if only else math.ceil(width / edge) * math.ceil(height / edge)
    n = tiles * -(-passes // fold)
    return Shape(width, height, passes, edge, max(2, math.isqrt(n - 1) + 1), fold,
                 tuple(sorted(only)))


def node_name(level: int, index: int) -> str:
    return f"p{index}" if level == 0 else f"r{level}.{index}"


def parse_node(node: str) -> tuple[int, int]:
    """(level, index) of a node name; ValueError if it is not one."""
    if node.startswith("p") and node[1:].isdigit():
        return 0, int(node[1:])
    if node.startswith("r"):
        level, _, index = node[1:].partition(".")
        if level.isdigit() and index.isdigit() and int(level) > 0:
            return int(level), int(index)
    raise ValueError(f"not a task node: {node!r}")


def parent(shape: Shape, node: str) -> str | None:
    level, index = parse_node(node)
    if level >= len(shape.level_sizes()) - 1:
        return None
    return node_name(level + 1, index // shape.fan_in)


def children(shape: Shape, node: str) -> list[str]:
    level, index = parse_node(node)
    if level == 0:
        return []
    below = shape.level_sizes()[level - 1]
    first = index * shape.fan_in
    return [node_name(level - 1, i) for i in range(first, min(first + shape.fan_in, below))]


def all_nodes(shape: Shape) -> list[str]:
    return [node_name(level, i)
            for level, size in enumerate(shape.level_sizes()) for i in range(size)]


def tile_of(shape: Shape, production_index: int) -> Tile:
    t = shape.grid_index(production_index // shape.tasks_per_tile)
    tx, ty = t % shape.tiles_x, t // shape.tiles_x
    x0, y0 = tx * shape.tile, ty * shape.tile
    return Tile(x0, y0, min(shape.tile, shape.width - x0), min(shape.tile, shape.height - y0))


def band(tile: Tile, piece: int, pieces: int) -> Tile:
    """Band ``piece`` of ``pieces`` of ``tile``: its rows cut into nearly equal bands
    (a speculative copy cut into pieces renders one band each)."""
    if not 0 <= piece < pieces <= tile.height:
        raise ValueError(f"no band {piece} of {pieces} in a tile of {tile.height} rows")
    top = tile.y0 + tile.height * piece // pieces
    bottom = tile.y0 + tile.height * (piece + 1) // pieces
    return Tile(tile.x0, top, tile.width, bottom - top)


def band_name(node: str, piece: int, pieces: int, generation: int = 0) -> str:
    """The name a band's pixels are stored under, beside the task's partial (a
    replaced task's bands, rendered with fresh seeds, have names of their own)."""
    suffix = f"~{generation}" if generation else ""
    return f"{node}.band{piece}of{pieces}{suffix}"


def pass_of(shape: Shape, production_index: int) -> int:
    """The first pass that production task renders."""
    return production_index % shape.tasks_per_tile * shape.fold


def passes_of(shape: Shape, production_index: int) -> range:
    """Every pass that production task renders."""
    first = pass_of(shape, production_index)
    return range(first, min(first + shape.fold, shape.passes))


def pass_seeds(basis: str, passes: range, generation: int = 0) -> list[int]:
    """The seeds of consecutive passes (``seed_for``)."""
    return [seed_for(basis, p, generation) for p in passes]


def seed_for(execution_id: str, pass_index: int, generation: int = 0) -> int:
    """The seed of one sample pass: every tile of a pass shares it (the producers
    derive per-pixel streams from it), and the same execution always gets the same.
    A replaced pass (``generation`` > 0: an earlier render of it failed) gets a fresh
    seed, so that its noise is independent of whatever the failed one produced."""
    suffix = f"~{generation}" if generation else ""
    digest = hashlib.sha256(f"{execution_id}:{pass_index}{suffix}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & MAX_SEED


def task_id(execution_id: str, node: str) -> str:
    """Document id of a task: deterministic, but spread over the key space (a hash
    prefix) so that thousands of tasks written together do not hot-spot one tablet."""
    prefix = hashlib.sha1(f"{execution_id}/{node}".encode()).hexdigest()[:8]
    return f"{prefix}-{node}"


@dataclass(frozen=True)
class PlannedTask:
    node: str
    kind: str  # "produce" or "reduce"
    parent: str | None
    tile: Tile | None = None
    pass_index: int | None = None
    seed: int | None = None
    children: int = 0
    passes: int = 1


def planned_tasks(basis: str, shape: Shape, first_pass: int = 0) -> list[PlannedTask]:
    """Every task of an execution, production tasks first in publication order
    (``basis``: where the seeds come from, ``Execution.seed_basis``; the passes are
    numbered from ``first_pass``, a wave's first)."""
    tasks = []
    for i in range(shape.productions):
        node = node_name(0, i)
        p = pass_of(shape, i)
        tasks.append(PlannedTask(node, "produce", parent(shape, node), tile_of(shape, i), p,
                                 seed_for(basis, first_pass + p),
                                 passes=len(passes_of(shape, i))))
    for level, size in enumerate(shape.level_sizes()[1:], start=1):
        for i in range(size):
            node = node_name(level, i)
            tasks.append(PlannedTask(node, "reduce", parent(shape, node),
                                     children=len(children(shape, node))))
    return tasks
