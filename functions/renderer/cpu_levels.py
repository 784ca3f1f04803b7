"""Which x86-64 level this CPU runs, and the numba cache compiled for it.

Numba compiles for one CPU target and keys its on-disk cache by it. The render image
cannot know which machine Cloud Run will start it on, so it ships one cache per
microarchitecture level (``warm_cache.py`` builds them into
``$NUMBA_CACHE_DIR/<level>``), and the service picks the best level this CPU supports
before numba is imported (``main.py`` calls ``apply``): a generic x86-64 kernel is
about 3x slower than one compiled for an AVX2 machine.

The levels are those of the x86-64 psABI (also LLVM's CPU names):

- ``x86-64-v2``: SSE4.2, SSSE3, POPCNT, CMPXCHG16B;
- ``x86-64-v3``: v2 + AVX, AVX2, BMI1/2, F16C, FMA, LZCNT, MOVBE, XSAVE;
- ``x86-64-v4``: v3 + AVX-512 F, BW, CD, DQ, VL.

Pure functions of the flags line of ``/proc/cpuinfo``; ``apply`` is the only one that
touches the environment.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, MutableMapping

GENERIC = "generic"
#: level → the /proc/cpuinfo flags it needs beyond the previous level.
LEVEL_FLAGS: dict[str, frozenset[str]] = {
    "x86-64-v2": frozenset({"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}),
    "x86-64-v3": frozenset(
        {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
    ),
    "x86-64-v4": frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
}
#: From the least to the most capable.
LEVELS: tuple[str, ...] = (GENERIC, *LEVEL_FLAGS)
#: The image's variable that lists the levels it has caches for (comma-separated).
LEVELS_ENV = "FRANCINE_NUMBA_LEVELS"
#: Set by ``apply`` to the level it chose (and read back: it applies once).
CHOSEN_ENV = "FRANCINE_NUMBA_LEVEL"


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor in a /proc/cpuinfo text (empty if none)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def supported_levels(flags: Iterable[str]) -> list[str]:
    """The levels a CPU with ``flags`` runs, from generic up (each needs the one before)."""
    flags = frozenset(flags)
    levels = [GENERIC]
    for level, needed in LEVEL_FLAGS.items():
        if not needed <= flags:
            break
        levels.append(level)
    return levels


def best_level(flags: Iterable[str], available: Iterable[str]) -> str:
    """The most capable of ``available`` that a CPU with ``flags`` runs (generic if none)."""
    available = set(available)
    usable = [level for level in supported_levels(flags) if level in available]
    return usable[-1] if usable else GENERIC


def parse_levels(value: str | None) -> list[str]:
    """``"generic,x86-64-v3"`` → the known levels it names, in LEVELS order."""
    names = {part.strip() for part in (value or "").split(",") if part.strip()}
    unknown = names - set(LEVELS)
    if unknown:
        raise ValueError(f"{LEVELS_ENV}: unknown level(s) {sorted(unknown)}; known: {LEVELS}")
    return [level for level in LEVELS if level in names]


def level_environment(level: str, cache_root: str) -> dict[str, str]:
    """The numba variables that compile for (and cache under) ``level``."""
    return {
        "NUMBA_CPU_NAME": level,
        # No host features on top of the named CPU: the cache key is the name alone.
        "NUMBA_CPU_FEATURES": "",
        "NUMBA_CACHE_DIR": str(pathlib.Path(cache_root) / level),
    }


def read_cpuinfo(path: str = "/proc/cpuinfo") -> str:
    try:
        return pathlib.Path(path).read_text()
    except OSError:
        return ""


def apply(env: MutableMapping[str, str] | None = None, cpuinfo: str | None = None) -> str | None:
    """Point numba at the best cache of the image for this CPU (before numba is
    imported). Does nothing, and returns None, unless ``FRANCINE_NUMBA_LEVELS`` lists
    the levels the image has caches for, under ``NUMBA_CACHE_DIR``."""
    env = os.environ if env is None else env
    if env.get(CHOSEN_ENV):  # already applied in this environment
        return env[CHOSEN_ENV]
    available = parse_levels(env.get(LEVELS_ENV))
    root = env.get("NUMBA_CACHE_DIR")
    if not available or not root:
        return None
    flags = cpu_flags(read_cpuinfo() if cpuinfo is None else cpuinfo)
    level = best_level(flags, available)
    env.update(level_environment(level, root), **{CHOSEN_ENV: level})
    return level
