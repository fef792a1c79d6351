"""Counter-based uniforms for kernels that draw their own random numbers in parallel.

A uniform is a pure function of a 64-bit ``key`` and a 64-bit counter: the SplitMix64 output
for state ``key + ctr·γ`` (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number
generators", OOPSLA; the finaliser is Stafford's Mix13, γ = 0x9E3779B97F4A7C15). Counter ``ctr``
of key ``k`` is the ``ctr``-th output of a SplitMix64 generator seeded with ``k``, so a draw
depends only on (key, counter), never on which thread computes it or in which order: a kernel
that numbers its draws (cell position × draws per cell + draw) gives the same numbers on any
thread count. The key comes from a named numpy stream (``marrow_abm.streams``), one per use per
step, so the named-stream discipline holds.

Each ``@njit`` function has a numpy twin (``*_ref``), tested equal, and the generator is
checked against the sequential SplitMix64 recurrence and for uniformity (``tests/test_counter_rng.py``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

#: SplitMix64's increment (2^64 / golden ratio, odd).
GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
#: 2^-53: a 53-bit integer times this is a double in [0, 1) with every value equally likely.
_TWO_M53 = 1.0 / 9007199254740992.0


@njit(cache=True, inline="always")
def bits(key, ctr):
    """The 64 random bits for counter ``ctr`` of ``key`` (both uint64)."""
    z = uint64(key) + uint64(ctr) * uint64(GAMMA)
    z = (z ^ (z >> uint64(30))) * uint64(_M1)
    z = (z ^ (z >> uint64(27))) * uint64(_M2)
    return z ^ (z >> uint64(31))


@njit(cache=True, inline="always")
def uniform(key, ctr):
    """A uniform double in [0, 1) for counter ``ctr`` of ``key``: the top 53 bits."""
    return float(bits(key, ctr) >> uint64(11)) * _TWO_M53


@njit(cache=True)
def uniforms(key, ctr, out):
    """``out[i] = uniform(key, ctr[i])`` (for tests and callers outside kernels)."""
    for i in range(ctr.shape[0]):
        out[i] = uniform(key, ctr[i])
    return out


def bits_ref(key, ctr):
    """Numpy twin of ``bits`` for an array of counters (uint64 arithmetic wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + np.asarray(ctr, dtype=np.uint64) * np.uint64(GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        return z ^ (z >> np.uint64(31))


def uniforms_ref(key, ctr):
    """Numpy twin of ``uniforms``."""
    return (bits_ref(key, ctr) >> np.uint64(11)).astype(np.float64) * _TWO_M53


@njit(cache=True)
def shuffle(items, n, key):
    """Shuffle ``items[:n]`` in place (Fisher–Yates, Durstenfeld's form): position j, from the
    last down to 1, swaps with a position drawn uniformly from 0..j with counter j of ``key``.
    Every permutation is equally likely (up to the 2^-53 resolution of the uniform)."""
    for j in range(n - 1, 0, -1):
        # u < 1, so t <= j; min() guards the rounding of u * (j + 1) for j near 2^53
        t = min(int(uniform(key, uint64(j)) * (j + 1)), j)
        items[j], items[t] = items[t], items[j]


def shuffle_ref(items, n, key):
    """Plain-Python twin of ``shuffle``."""
    if n < 2:
        return
    u = uniforms_ref(key, np.arange(n, dtype=np.uint64))
    for j in range(n - 1, 0, -1):
        t = min(int(u[j] * (j + 1)), j)
        items[j], items[t] = items[t], items[j]


__all__ = ["GAMMA", "bits", "bits_ref", "shuffle", "shuffle_ref", "uniform", "uniforms",
           "uniforms_ref"]
