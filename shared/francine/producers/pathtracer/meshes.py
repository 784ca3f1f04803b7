"""Mesh resources to BVHs, built once per mesh and kept per worker instance.

A mesh is identified by its resource's SHA-256. The packed BVH is kept in
``resources.memo`` (lives as long as the worker instance), so a warm worker's next task
touches neither the resource (no fetch) nor the builder. On a memo miss it is also
looked for as an ``.npz`` file next to the fetched resource, which survives a worker
process restart on the same disk; writing that file is best effort.

The memo holds at most ``MEMO_BUDGET_BYTES`` of BVHs (least recently used go first),
so that a long-lived worker that sees many sessions' meshes does not run out of memory.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections import OrderedDict

import numpy as np

from francine.domain.producer import Resources, SceneError
from francine.producers.pathtracer import bvh
from francine.producers.pathtracer.obj import ObjError, load_obj

_MEMO_KEY = "pathtracer.bvh"
MEMO_BUDGET_BYTES = 1 << 30  # the bunny takes 5 MB


def cache_file(path: pathlib.Path, sha256: str) -> pathlib.Path:
    return path.with_name(f"{path.name}.{sha256[:16]}.bvh{bvh.LAYOUT_VERSION}.npz")


def mesh_bvh(resources: Resources, name: str, field: str = "") -> bvh.PackedBVH:
    """The packed BVH of OBJ resource ``name`` (``field`` names it in errors)."""
    sha = resources.sha256(name)
    key = (bvh.LAYOUT_VERSION, sha)
    memo: OrderedDict = resources.memo.setdefault(_MEMO_KEY, OrderedDict())
    found = memo.get(key)
    if found is not None:
        memo.move_to_end(key)
        return found
    path = pathlib.Path(resources.path(name))
    packed = _load_cached(cache_file(path, sha), sha)
    if packed is None:
        try:
            mesh = load_obj(path)
        except ObjError as e:
            raise SceneError(field, f"resource {name!r} is a malformed OBJ: {e}") from None
        packed = bvh.build(mesh.vertices, mesh.triangles)
        _save_cached(cache_file(path, sha), sha, packed)
    memo[key] = packed
    while len(memo) > 1 and sum(_nbytes(b) for b in memo.values()) > MEMO_BUDGET_BYTES:
        memo.popitem(last=False)
    return packed


def _nbytes(packed: bvh.PackedBVH) -> int:
    return packed.nodes.nbytes + packed.tris.nbytes + packed.prim.nbytes


def _load_cached(file: pathlib.Path, sha: str) -> bvh.PackedBVH | None:
    try:
        with np.load(file) as data:
            if str(data["sha256"]) != sha:
                return None
            return bvh.PackedBVH.from_arrays(data)
    except (OSError, KeyError, ValueError):
        return None


def _save_cached(file: pathlib.Path, sha: str, packed: bvh.PackedBVH) -> None:
    # Written under a temporary name and renamed, so that a concurrent reader (another
    # worker process) never sees half a file.
    try:
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=file.name, suffix=".tmp")
    except OSError:
        return  # a read-only cache directory: the memo alone will do
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, sha256=np.array(sha), **packed.arrays())
        os.replace(tmp, file)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
