"""Compile every producer's numba kernels into numba's on-disk cache.

The render image runs this at build time (Dockerfile: ``RUN python warm_cache.py``), with
the same ``NUMBA_CACHE_DIR`` as the service will have at run time, so that a fresh Cloud
Run instance loads compiled kernels (a fraction of a second) instead of compiling them
(seconds) before its first task.

Numba keys cached code by the CPU it was compiled for (name and features). An image
built on one CPU model and run on another recompiles at its first task unless both set
``NUMBA_CPU_NAME`` (and ``NUMBA_CPU_FEATURES``) to a common target, for instance
``NUMBA_CPU_NAME=x86-64-v3 NUMBA_CPU_FEATURES=""``: set them in the image's environment
for the build step and the service alike.

Exit status 1 when a producer could not be warmed: an image that ships cold kernels is
the very thing this script is here to prevent.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time


def _cache_files(cache_dir: str | None) -> int:
    if not cache_dir:
        return 0
    return sum(1 for _ in pathlib.Path(cache_dir).rglob("*.nbi"))


def warm(names: list[str] | None = None) -> list[str]:
    """Render a small tile of each producer's default scene; the names that failed."""
    from francine.producers import base, get
    from francine.producers import names as producer_names

    failed = []
    for name in names or producer_names():
        started = time.perf_counter()
        try:
            producer = get(name)
            scene = producer.validate(producer.default_scene(), None)
            width, height = producer.image_size(scene)
            tile = base.Tile(0, 0, min(8, width), min(8, height))
            resources = base.Resources(infos={}, fetch=None)
            producer.render(scene, tile, 0, resources)
        except Exception as e:  # report every producer, then fail the build
            print(f"warm_cache: {name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(name)
            continue
        print(f"warm_cache: {name}: ready in {time.perf_counter() - started:.1f} s")
    return failed


def main(argv: list[str]) -> int:
    cache_dir = os.environ.get("NUMBA_CACHE_DIR")
    if cache_dir:
        pathlib.Path(cache_dir).mkdir(parents=True, exist_ok=True)
        print(f"warm_cache: NUMBA_CACHE_DIR={cache_dir}")
    else:
        print(
            "warm_cache: NUMBA_CACHE_DIR is not set: the cache goes to __pycache__ "
            "folders next to the installed sources"
        )
    failed = warm(argv[1:] or None)
    if cache_dir:
        print(f"warm_cache: {_cache_files(cache_dir)} cache index files in {cache_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
