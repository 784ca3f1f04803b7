"""The progressive preview of a running execution, assembled on demand by the api.

Nothing is rendered or reduced for it: it reads what the pipeline stored anyway. For
every region of the frame it takes the highest finished node of the reduction tree
(a node whose parent is not finished yet: a production partial, or a reduction that
already holds several), sums them (different tiles land side by side, passes of one
tile add up), divides by the passes each tile holds, and encodes the frame as PNG with
black where nothing is rendered yet. The workers and the reducer do exactly the same
work whether anyone watches or not: a preview costs the api a few reads, never the
critical path of the final image (``bench/preview_cost.py`` measures it).

Previews are cached per execution by the set of nodes they show, so a viewer that asks
again before anything new finished costs one query.
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from francine.base import errors
from francine.domain import imaging, planning
from francine.domain.records import Execution, Status
from francine.services import views

#: Concurrent downloads of a preview's partials.
FETCHERS = 8
#: Previews kept in memory (per api instance).
CACHE_SIZE = 32
#: A running execution's preview is rebuilt at most this often; askers in between get
#: the last one. Previews read the same storage as the render, so an unbounded rate of
#: them (a viewer asks on every finished task) would slow the render down.
MIN_INTERVAL_S = 0.5
#: Bytes of decoded partials kept: a finished node's partial never changes, so the next
#: preview of the same execution downloads only the nodes that finished since.
PARTIALS_BYTES = 256 << 20


@dataclass(frozen=True)
class Preview:
    png: bytes
    passes: int  # the fewest sample passes that any tile holds (0: some tile is black)
    final: bool


def covering_nodes(shape: planning.Shape, done: set[str]) -> list[str]:
    """The finished nodes that no finished ancestor already contains: together they hold
    every finished production partial exactly once."""
    chosen = []
    for node in done:
        up = planning.parent(shape, node)
        while up is not None and up not in done:
            up = planning.parent(shape, up)
        if up is None:
            chosen.append(node)
    return sorted(chosen)


def assemble(shape: planning.Shape, partials: list[imaging.Partial]) -> tuple[np.ndarray, int]:
    """Linear image of the whole frame (black where no pass has landed) and the fewest
    passes any tile holds."""
    channels = partials[0].sum.shape[2]
    frame = imaging.Partial(
        0, 0, shape.tile, np.zeros((shape.height, shape.width, channels), np.int64),
        np.zeros((shape.tiles_y, shape.tiles_x), np.float32),
        np.zeros((shape.height, shape.width, 1), np.float32))
    total = imaging.combine([frame, *partials])
    return total.mean(uncovered=0.0), int(total.count.min())


def nbytes(p: imaging.Partial) -> int:
    return p.sum.nbytes + p.count.nbytes + p.sq.nbytes


def png_of_result(data: bytes, fmt: str, display: str) -> bytes:
    """The final image as PNG (the stored result is in the session's format)."""
    if fmt == "png":
        return data
    if fmt == "exr":
        return imaging.encode(exr_pixels(data), "png", display)
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, format="PNG")
    return buf.getvalue()


def exr_pixels(data: bytes) -> np.ndarray:
    """(h, w, 1 | 3 | 4) float32 linear pixels of an EXR result.

    Channels are read one by one: grouped, the binding names them after what it found
    ("RGBA", "RGB", or each apart when their pixel types differ, a half alpha beside
    float colour), so reading by name is the one way that holds for every layout. Grey
    with alpha becomes RGBA, the layout ``imaging.encode`` knows for alpha."""
    import tempfile

    import OpenEXR

    # Read from a file: older bindings read files only.
    with tempfile.NamedTemporaryFile(suffix=".exr") as f:
        f.write(data)
        f.flush()
        with OpenEXR.File(f.name, separate_channels=True) as exr:
            channels = {name: np.asarray(c.pixels, np.float32)
                        for name, c in exr.channels().items()}
    for names in (("R", "G", "B", "A"), ("R", "G", "B"), ("Y", "Y", "Y", "A"), ("Y",)):
        if set(names) <= channels.keys():
            return np.stack([channels[n] for n in names], axis=-1)
    raise ValueError(f"EXR result with channels {sorted(channels)}: expected R, G, B "
                     "(and A) or Y (and A)")


class Previews:
    """Builds previews from the store and the partials bucket, with a small cache."""

    def __init__(self, adapters):
        self.ad = adapters
        self._cache: OrderedDict[tuple, Preview] = OrderedDict()
        self._latest: OrderedDict[tuple, tuple[float, Preview]] = OrderedDict()
        self._partials: OrderedDict[tuple, imaging.Partial] = OrderedDict()
        self._partials_bytes = 0
        self._lock = threading.Lock()

    def get(self, ex: Execution) -> Preview:
        sid, eid = ex.session_id, ex.id
        shape = planning.Shape.from_dict(ex.shape)
        # A render with waves has an image after each (and an extended one its image
        # from before): the last one stays until the next.
        final = (sid, eid, "final", str(ex.status), ex.waves or 0, ex.imaged, ex.passes_done)
        if ex.status == Status.DONE or (ex.waved and ex.result):
            return self._cached(final, lambda: self._final(ex, shape))
        if ex.waved:
            waves = views.waves_of(self.ad, ex)
            if not waves or ex.final:
                raise errors.Conflict(f"execution {eid} has no finished task yet",
                                      "not_ready")
            return self.get(waves[-1])
        with self._lock:
            recent = self._latest.get((sid, eid))
        if recent is not None and time.monotonic() - recent[0] < MIN_INTERVAL_S:
            return recent[1]
        done = set(self.ad.store.done_nodes(sid, eid))
        if shape.root in done:  # stored, the execution ends this instant
            return self._cached(final, lambda: self._final(ex, shape))
        nodes = covering_nodes(shape, done)
        if not nodes:
            raise errors.Conflict(f"execution {eid} has no finished task yet", "not_ready")
        preview = self._cached((sid, eid, *nodes), lambda: self._partial(ex, shape, nodes))
        with self._lock:
            self._latest[(sid, eid)] = (time.monotonic(), preview)
            self._latest.move_to_end((sid, eid))
            while len(self._latest) > CACHE_SIZE:
                self._latest.popitem(last=False)
        return preview

    def _final(self, ex: Execution, shape: planning.Shape) -> Preview:
        name = ex.result or self.ad.blobs.result_name(
            ex.session_id, ex.id, imaging.EXTENSIONS[ex.format])
        data = self.ad.blobs.get_result(name)
        passes = ex.passes_done if ex.passes_done is not None else shape.passes
        return Preview(png_of_result(data, ex.format, ex.display), passes, ex.final)

    def _partial(self, ex: Execution, shape: planning.Shape, nodes: list[str]) -> Preview:
        sid, eid = ex.session_id, ex.id
        with ThreadPoolExecutor(max_workers=min(FETCHERS, len(nodes))) as pool:
            partials = list(pool.map(lambda n: self._load(sid, eid, n), nodes))
        image, passes = assemble(shape, partials)
        return Preview(imaging.encode(image, "png", ex.display), passes, False)

    def _load(self, sid: str, eid: str, node: str) -> imaging.Partial:
        key = (sid, eid, node)
        with self._lock:
            hit = self._partials.get(key)
            if hit is not None:
                self._partials.move_to_end(key)
                return hit
        partial = imaging.load_partial(self.ad.blobs.get_partial(sid, eid, node))
        with self._lock:
            if key not in self._partials:
                self._partials[key] = partial
                self._partials_bytes += nbytes(partial)
            while self._partials_bytes > PARTIALS_BYTES and len(self._partials) > 1:
                _, old = self._partials.popitem(last=False)
                self._partials_bytes -= nbytes(old)
        return partial

    def _cached(self, key: tuple, build) -> Preview:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        value = build()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return value
