"""A counter-based random number generator for numba kernels (SplitMix64).

Each pixel's generator starts from a hash of (seed, pixel index), so a pixel's samples
depend on neither the tile cut nor the thread that renders it, and no kernel touches
global random state. The state is a uint64 passed in and out explicitly.
"""

from __future__ import annotations

import numba as nb
import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@nb.njit(cache=True, inline="always")
def mix(z):
    """The SplitMix64 finalizer: a bijective hash of a uint64."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@nb.njit(cache=True, inline="always")
def pixel_state(seed, pixel):
    """The starting state of the generator of pixel ``pixel`` (a uint64) for ``seed``."""
    return mix(mix(seed ^ GOLDEN) + np.uint64(pixel) * GOLDEN)


@nb.njit(cache=True, inline="always")
def uniform(state):
    """(next state, a float64 uniform in [0, 1))."""
    state = state + GOLDEN
    return state, np.float64(mix(state) >> _S11) * _TO_UNIT


# Plain-Python versions of the above: the reference the kernels are tested against.
_MASK = (1 << 64) - 1


def mix_py(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def pixel_state_py(seed: int, pixel: int) -> int:
    return mix_py((mix_py(seed ^ 0x9E3779B97F4A7C15) + pixel * 0x9E3779B97F4A7C15) & _MASK)


def uniform_py(state: int) -> tuple[int, float]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK
    return state, (mix_py(state) >> 11) * 2.0**-53
