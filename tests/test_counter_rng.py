"""Counter-based uniforms (``kernels/counter_rng.py``): the SplitMix64 recurrence, the numpy
twins, and uniformity and independence with stated tests."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from marrow_abm.kernels import counter_rng as C

_MASK = (1 << 64) - 1


def _splitmix64(seed, n):
    """The sequential SplitMix64 generator (Steele, Lea & Flood 2014), in Python integers."""
    s, out = seed, []
    for _ in range(n):
        s = (s + C.GAMMA) & _MASK
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        out.append(z ^ (z >> 31))
    return out


def test_counter_k_is_the_kth_output_of_splitmix64():
    # The published first outputs for seed 1234567 (Vigna's splitmix64.c).
    assert _splitmix64(1234567, 3) == [6457827717110365317, 3203168211198807973,
                                       9817491932198370423]
    for key in (0, 1234567, _MASK, 0x0123456789ABCDEF):
        ctr = np.arange(1, 65, dtype=np.uint64)
        assert [int(x) for x in C.bits_ref(key, ctr)] == _splitmix64(key, 64)
        out = np.empty(64)
        assert np.array_equal(C.uniforms(np.uint64(key), ctr, out), C.uniforms_ref(key, ctr))


def test_uniforms_are_in_unit_interval_and_53_bit():
    u = C.uniforms_ref(7, np.arange(100_000, dtype=np.uint64))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert np.all(u * 2.0 ** 53 == np.floor(u * 2.0 ** 53))


@pytest.mark.parametrize("key", [0, 1, 0xDEADBEEF, _MASK])
def test_uniforms_pass_ks_and_have_no_lag_or_key_correlation(key):
    """KS against U(0, 1) at n = 2·10^5, and |Pearson r| of draws at lag 1, 8 (the kernels' draws
    per cell) and between keys k and k + 1 below 0.01 (≈ 4.5 standard errors at this n). The
    inputs are fixed, so this either always passes or shows a broken generator."""
    n = 200_000
    ctr = np.arange(n, dtype=np.uint64)
    u = C.uniforms_ref(key, ctr)
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    for lag in (1, 8):
        assert abs(np.corrcoef(u[:-lag], u[lag:])[0, 1]) < 0.01
    v = C.uniforms_ref((key + 1) & _MASK, ctr)
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.01


def test_shuffle_matches_twin_and_is_uniform_over_permutations():
    """Chi-square over the 24 orders of 4 items from 24,000 keys (α = 10^-3)."""
    counts = dict.fromkeys(itertools.permutations(range(4)), 0)
    for key in range(24_000):
        a = np.arange(4)
        C.shuffle(a, 4, np.uint64(key))
        counts[tuple(a)] += 1
    obs = np.array(list(counts.values()))
    assert stats.chisquare(obs).pvalue > 1e-3
    for n in (0, 1, 2, 7, 1000):
        a, b = np.arange(n) * 3, np.arange(n) * 3
        C.shuffle(a, n, np.uint64(99))
        C.shuffle_ref(b, n, 99)
        assert np.array_equal(a, b) and sorted(a) == list(np.arange(n) * 3)
    # only the first n items move
    a = np.arange(10)
    C.shuffle(a, 5, np.uint64(3))
    assert np.array_equal(a[5:], np.arange(5, 10)) and sorted(a[:5]) == list(range(5))


def test_draws_depend_only_on_key_and_counter():
    ctr = np.array([5, 5, 2 ** 63, 0], dtype=np.uint64)
    u = C.uniforms_ref(11, ctr)
    assert u[0] == u[1] and len(set(u[1:])) == 3
    assert not math.isclose(C.uniforms_ref(12, ctr)[0], u[0])
