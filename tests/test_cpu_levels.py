"""The render service's choice of numba cache: the best x86-64 level the CPU runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "functions" / "renderer"))

import cpu_levels  # noqa: E402

V2 = "fpu sse sse2 cx16 lahf_lm popcnt sse4_1 sse4_2 ssse3"
V3 = V2 + " avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
V4 = V3 + " avx512f avx512bw avx512cd avx512dq avx512vl"
ALL = ",".join(cpu_levels.LEVELS)


def cpuinfo(flags: str) -> str:
    return f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n"


@pytest.mark.parametrize("flags, best", [
    ("fpu sse sse2", "generic"),
    (V2, "x86-64-v2"),
    (V3, "x86-64-v3"),
    (V4, "x86-64-v4"),
    # AVX-512 without AVX2's companions is not v4: each level needs the one below.
    (V2 + " avx512f avx512bw avx512cd avx512dq avx512vl", "x86-64-v2"),
    (V3.replace(" movbe", ""), "x86-64-v2"),
])
def test_best_level_of_a_cpu(flags, best):
    flags_set = cpu_levels.cpu_flags(cpuinfo(flags))
    assert cpu_levels.best_level(flags_set, cpu_levels.LEVELS) == best
    assert cpu_levels.supported_levels(flags_set)[-1] == best


def test_only_levels_the_image_has_are_chosen():
    flags = cpu_levels.cpu_flags(cpuinfo(V4))
    assert cpu_levels.best_level(flags, ["generic", "x86-64-v3"]) == "x86-64-v3"
    assert cpu_levels.best_level(cpu_levels.cpu_flags(cpuinfo(V2)), ["x86-64-v3"]) == "generic"


def test_apply_points_numba_at_the_level_cache():
    env = {"NUMBA_CACHE_DIR": "/var/cache/numba", cpu_levels.LEVELS_ENV: ALL,
           "NUMBA_CPU_NAME": "generic", "NUMBA_CPU_FEATURES": ""}
    assert cpu_levels.apply(env, cpuinfo(V3)) == "x86-64-v3"
    assert env["NUMBA_CPU_NAME"] == "x86-64-v3"
    assert env["NUMBA_CPU_FEATURES"] == ""
    assert env["NUMBA_CACHE_DIR"] == "/var/cache/numba/x86-64-v3"
    # Applied once: a second call (a re-imported module) changes nothing.
    assert cpu_levels.apply(env, cpuinfo(V4)) == "x86-64-v3"
    assert env["NUMBA_CACHE_DIR"] == "/var/cache/numba/x86-64-v3"


def test_apply_does_nothing_outside_the_image():
    env = {"NUMBA_CACHE_DIR": "/tmp/x"}
    assert cpu_levels.apply(env, cpuinfo(V4)) is None
    assert env == {"NUMBA_CACHE_DIR": "/tmp/x"}
    assert cpu_levels.apply({cpu_levels.LEVELS_ENV: ALL}, cpuinfo(V4)) is None
    # No flags line (not Linux, or not x86): the generic cache.
    env = {"NUMBA_CACHE_DIR": "/c", cpu_levels.LEVELS_ENV: ALL}
    assert cpu_levels.apply(env, "") == "generic"


def test_unknown_levels_are_refused():
    with pytest.raises(ValueError, match="x86-64-v9"):
        cpu_levels.parse_levels("generic,x86-64-v9")
    assert cpu_levels.parse_levels(" x86-64-v4, generic ") == ["generic", "x86-64-v4"]
    assert cpu_levels.parse_levels("") == []


def test_the_image_builds_every_level():
    dockerfile = (ROOT / "functions" / "renderer" / "Dockerfile").read_text()
    (line,) = [ln for ln in dockerfile.splitlines() if ln.startswith("ARG FRANCINE_NUMBA_LEVELS=")]
    assert cpu_levels.parse_levels(line.split("=", 1)[1]) == list(cpu_levels.LEVELS)
    assert "functions/renderer/cpu_levels.py" in dockerfile


LOAD_AND_RENDER = """
import json, sys
sys.path.insert(0, {renderer!r})
import cpu_levels
level = cpu_levels.apply()
from numba.core.dispatcher import Dispatcher
from francine.producers.ao import PRODUCER, kernel
from francine.domain.producer import Tile
scene = PRODUCER.validate({{"width": 16, "height": 16, "nao_samples": 2}}, None)
PRODUCER.render(scene, Tile(0, 0, 16, 16), 0, None)
stats = [v.stats for v in vars(kernel).values() if isinstance(v, Dispatcher)]
print(json.dumps({{"level": level,
                  "hits": sum(sum(s.cache_hits.values()) for s in stats),
                  "misses": sum(sum(s.cache_misses.values()) for s in stats)}}))
"""


def test_a_level_compiled_without_running_is_loaded_without_compiling(tmp_path, monkeypatch):
    """The build machine may lack a level's instructions (AVX-512): its cache is compiled
    from recorded argument types, and an instance of that level loads it as is."""
    import json
    import os
    import subprocess

    import warm_cache

    root = tmp_path / "numba"
    # Pretend the build machine runs only generic code: x86-64-v3 (which this test's
    # machine may run) is then compiled without running.
    assert warm_cache.warm_levels(["generic", "x86-64-v3"], str(root), ["ao"],
                                  cpuinfo=cpuinfo("fpu sse sse2")) == []
    assert any((root / "x86-64-v3").rglob("*.nbi"))
    assert not (root / "signatures.pickle").exists()
    if cpu_levels.best_level(cpu_levels.cpu_flags(cpu_levels.read_cpuinfo()),
                             ["x86-64-v3"]) != "x86-64-v3":
        pytest.skip("this machine cannot run x86-64-v3 code")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(root),
           cpu_levels.LEVELS_ENV: "generic,x86-64-v3"}
    env.pop(cpu_levels.CHOSEN_ENV, None)
    script = LOAD_AND_RENDER.format(renderer=str(ROOT / "functions" / "renderer"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["level"] == "x86-64-v3"
    assert result["hits"] >= 1 and result["misses"] == 0, result
