"""Compile every producer's numba kernels into numba's on-disk cache.

The render image runs this at build time (Dockerfile: ``RUN python warm_cache.py``), with
the same ``NUMBA_CACHE_DIR`` as the service will have at run time, so that a fresh Cloud
Run instance loads compiled kernels (a fraction of a second) instead of compiling them
(seconds) before its first task.

Numba keys cached code by the CPU it was compiled for, and Cloud Build and Cloud Run
machines differ. With ``FRANCINE_NUMBA_LEVELS`` set (as in the image, e.g.
``generic,x86-64-v2,x86-64-v3,x86-64-v4``), one cache is built per x86-64 level, each
in ``$NUMBA_CACHE_DIR/<level>`` and compiled for that named CPU without host features,
and the service loads the best one its CPU supports (``cpu_levels.apply``). Levels the
build machine can run are warmed by rendering a small tile of each producer; the
others (typically x86-64-v4 on a machine without AVX-512) are compiled without running,
for the argument types that the rendering recorded. Without the variable, one cache is
built for whatever ``NUMBA_CPU_NAME`` says, directly in ``NUMBA_CACHE_DIR``.

Exit status 1 when a producer or a level could not be warmed: an image that ships cold
kernels is the very thing this script is here to prevent.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import pickle
import subprocess
import sys
import time

import cpu_levels

PRODUCERS_PACKAGE = "francine.producers"


def _cache_files(cache_dir: str | None) -> int:
    if not cache_dir:
        return 0
    return sum(1 for _ in pathlib.Path(cache_dir).rglob("*.nbi"))


def warm(names: list[str] | None = None) -> list[str]:
    """Render a small tile of each producer's default scene; the names that failed."""
    from francine.domain import producer as base
    from francine.producers import get
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


def dispatchers() -> dict[str, object]:
    """``module:name`` → every numba dispatcher of the loaded producer modules."""
    from numba.core.dispatcher import Dispatcher

    found = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith(PRODUCERS_PACKAGE):
            continue
        for attr, value in vars(module).items():
            if isinstance(value, Dispatcher) and value.__module__ == module_name:
                found[f"{module_name}:{attr}"] = value
    return found


def record_signatures(path: pathlib.Path) -> int:
    """Write the argument types each dispatcher was compiled for; their count."""
    signatures = {key: list(d.signatures) for key, d in dispatchers().items() if d.signatures}
    path.write_bytes(pickle.dumps(signatures))
    return sum(len(s) for s in signatures.values())


def compile_recorded(path: pathlib.Path) -> int:
    """Compile (without running) each recorded signature; the number compiled."""
    signatures = pickle.loads(path.read_bytes())
    count = 0
    for key, sigs in signatures.items():
        module_name, _, attr = key.partition(":")
        dispatcher = getattr(importlib.import_module(module_name), attr)
        for sig in sigs:
            dispatcher.compile(sig)  # cache=True: saved to NUMBA_CACHE_DIR
            count += 1
    return count


def warm_levels(levels: list[str], root: str, names: list[str] | None,
                cpuinfo: str | None = None) -> list[str]:
    """Build one cache per level under ``root``, each in a fresh process (numba reads
    its CPU target once); the levels that failed."""
    runnable = set(cpu_levels.supported_levels(
        cpu_levels.cpu_flags(cpu_levels.read_cpuinfo() if cpuinfo is None else cpuinfo)))
    signatures = pathlib.Path(root) / "signatures.pickle"
    ordered = [lv for lv in levels if lv in runnable] + [lv for lv in levels
                                                       if lv not in runnable]
    failed = []
    for index, level in enumerate(ordered):
        if level in runnable:
            # The last runnable level records the argument types for the others.
            mode = ["--record", str(signatures)] if index == len(runnable & set(levels)) - 1 \
                else []
        elif signatures.exists():
            mode = ["--compile", str(signatures)]
        else:
            print(f"warm_cache: {level}: FAILED: no level runs here to record types from",
                  file=sys.stderr)
            failed.append(level)
            continue
        env = {**os.environ, **cpu_levels.level_environment(level, root)}
        env.pop(cpu_levels.LEVELS_ENV, None)
        env.pop(cpu_levels.CHOSEN_ENV, None)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--child", *mode, *(names or [])],
                              env=env, check=False)
        how = "compiled without running" if "--compile" in mode else "rendered"
        if done.returncode:
            print(f"warm_cache: {level}: FAILED", file=sys.stderr)
            failed.append(level)
        else:
            print(f"warm_cache: {level}: {how} in {time.perf_counter() - started:.1f} s, "
                  f"{_cache_files(env['NUMBA_CACHE_DIR'])} cache index files")
    signatures.unlink(missing_ok=True)
    return failed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="producers (default: all)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--record", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--compile", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv[1:])
    cache_dir = os.environ.get("NUMBA_CACHE_DIR")

    if args.child and args.compile:
        print(f"warm_cache: {compile_recorded(args.compile)} kernels compiled")
        return 0
    if args.child:
        failed = warm(args.names or None)
        if args.record and not failed:
            print(f"warm_cache: recorded {record_signatures(args.record)} signatures")
        return 1 if failed else 0

    levels = cpu_levels.parse_levels(os.environ.get(cpu_levels.LEVELS_ENV))
    if cache_dir:
        pathlib.Path(cache_dir).mkdir(parents=True, exist_ok=True)
        print(f"warm_cache: NUMBA_CACHE_DIR={cache_dir}")
    else:
        print(
            "warm_cache: NUMBA_CACHE_DIR is not set: the cache goes to __pycache__ "
            "folders next to the installed sources"
        )
    if levels and cache_dir:
        failed = warm_levels(levels, cache_dir, args.names or None)
    else:
        failed = warm(args.names or None)
    if cache_dir:
        print(f"warm_cache: {_cache_files(cache_dir)} cache index files in {cache_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
