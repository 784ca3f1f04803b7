"""Planning an execution: production tasks, the reduction tree, seeds. Pure code.

An execution of ``passes`` sample passes over an image cut into ``tiles`` becomes
N = tiles × passes production tasks, ordered tile-major (the passes of one tile are
neighbours, so that early reductions combine passes of the same region and stay small).
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

from francine.producers.base import Tile

MAX_SEED = (1 << 63) - 1


@dataclass(frozen=True)
class Shape:
    width: int
    height: int
    passes: int
    tile: int  # edge of the square tiles, in pixels
    fan_in: int

    @property
    def tiles_x(self) -> int:
        return math.ceil(self.width / self.tile)

    @property
    def tiles_y(self) -> int:
        return math.ceil(self.height / self.tile)

    @property
    def tiles(self) -> int:
        return self.tiles_x * self.tiles_y

    @property
    def productions(self) -> int:
        return self.tiles * self.passes

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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Shape:
        return cls(**{k: int(d[k]) for k in ("width", "height", "passes", "tile", "fan_in")})


def largest_tile(width: int, height: int, pixel_seconds: float, budget_s: float) -> int:
    """The edge of the largest square tile (a multiple of 8, at least 8) whose one pass
    is estimated to take at most ``budget_s``; the whole image if it fits."""
    whole = max(width, height)
    if pixel_seconds <= 0 or width * height * pixel_seconds <= budget_s:
        return whole
    edge = int(math.sqrt(budget_s / pixel_seconds)) // 8 * 8
    return min(whole, max(8, edge))


def task_seconds(shape: Shape, pixel_seconds: float) -> float:
    """Estimated seconds of the largest production task."""
    return min(shape.tile, shape.width) * min(shape.tile, shape.height) * pixel_seconds


def make_shape(width: int, height: int, passes: int, tile: int | None) -> Shape:
    edge = max(width, height) if tile is None else tile
    n = math.ceil(width / edge) * math.ceil(height / edge) * passes
    return Shape(width, height, passes, edge, max(2, math.isqrt(n - 1) + 1))


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
    t = production_index // shape.passes
    tx, ty = t % shape.tiles_x, t // shape.tiles_x
    x0, y0 = tx * shape.tile, ty * shape.tile
    return Tile(x0, y0, min(shape.tile, shape.width - x0), min(shape.tile, shape.height - y0))


def pass_of(shape: Shape, production_index: int) -> int:
    return production_index % shape.passes


def seed_for(execution_id: str, pass_index: int) -> int:
    """The seed of one sample pass: every tile of a pass shares it (the producers
    derive per-pixel streams from it), and the same execution always gets the same."""
    digest = hashlib.sha256(f"{execution_id}:{pass_index}".encode()).digest()
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


def plan(execution_id: str, shape: Shape) -> list[PlannedTask]:
    """Every task of an execution, production tasks first in publication order."""
    tasks = []
    for i in range(shape.productions):
        node = node_name(0, i)
        p = pass_of(shape, i)
        tasks.append(PlannedTask(node, "produce", parent(shape, node), tile_of(shape, i), p,
                                 seed_for(execution_id, p)))
    for level, size in enumerate(shape.level_sizes()[1:], start=1):
        for i in range(size):
            node = node_name(level, i)
            tasks.append(PlannedTask(node, "reduce", parent(shape, node),
                                     children=len(children(shape, node))))
    return tasks


# --- the scheduler: from an event and what the store says, to actions ---------------

@dataclass(frozen=True)
class Reduce:
    """Combine the children of ``node``; only the invocation that claims it does."""

    node: str


@dataclass(frozen=True)
class Admit:
    """Publish the production task with this index (admission control)."""

    index: int


def on_done(shape: Shape, node: str, done_siblings: int, admission_limit: int = 0) -> list:
    """Actions after ``node`` finished, given how many children of its parent are done.

    With an admission limit K, production task i's completion admits task i + K, so
    that at most K production tasks of the execution are in flight at once.
    """
    actions: list = []
    level, index = parse_node(node)
    if level == 0 and admission_limit and index + admission_limit < shape.productions:
        actions.append(Admit(index + admission_limit))
    up = parent(shape, node)
    if up is not None and done_siblings >= len(children(shape, up)):
        actions.append(Reduce(up))
    return actions
