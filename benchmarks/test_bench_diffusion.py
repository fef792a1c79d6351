"""Field kernels against their numpy twins on 256², 1024² and 2048², float64 and float32.

Each group is one kernel at one size and dtype with its two implementations; ``extra_info``
carries voxel updates per second. ``marrow-abm bench`` prints the same figures with the
memory-bandwidth bound beside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from marrow_abm.bench import bench_problem
from marrow_abm.kernels import diffusion as kern

SIZES = (256, 1024, 2048)
DTYPES = ("float64", "float32")
IMPLS = ("numba", "numpy")
R_EXPLICIT = 0.25          # the explicit stencil at its stability limit
R_IMPLICIT = 360.0         # D dt / dx^2 at the default hourly step (D = 10 µm²/s, dx = 10 µm)
CG_ITERATIONS = 10


@dataclass
class Problem:
    """Arrays for one grid size and dtype, shared by every benchmark of that size."""

    n: int
    labels: np.ndarray
    c: np.ndarray
    out: np.ndarray
    source: np.ndarray
    uptake: np.ndarray
    faces: np.ndarray
    n_open: np.ndarray
    n_sinus: np.ndarray
    retain: np.ndarray
    gain: np.ndarray
    lod_plan: tuple
    work: np.ndarray


_CACHE: dict[tuple[int, str], Problem] = {}


def get_problem(n: int, dtype: str) -> Problem:
    """Build (once per session) a marrow-like n x n problem in the given dtype."""
    key = (n, dtype)
    if key not in _CACHE:
        _CACHE.clear()                      # keep one size in memory at a time (2048² x 10)
        dt = np.dtype(dtype).type
        labels, c, source, uptake, faces, ns = bench_problem(n, dtype)
        retain, gain = np.empty_like(c), np.empty_like(c)
        kern.reaction_coefficients(labels, ns, source, uptake, 0.7, 1.0, 1.0 / 1440,
                                   retain, gain)
        _CACHE[key] = Problem(n, labels, c, np.empty_like(c), source, uptake, faces,
                              kern.open_face_count(faces), ns, retain, gain,
                              kern.lod_plan(faces, R_IMPLICIT, dt), np.empty((5, n, n), dt))
    return _CACHE[key]


def rounds_for(n: int, impl: str) -> int:
    """Timed rounds: fewer for the slow numpy twins on large grids."""
    if impl == "numpy":
        return {256: 10, 1024: 3}.get(n, 1)
    return {256: 50, 1024: 10}.get(n, 5)


def _run(benchmark, group, n, impl, fn, updates_per_voxel=1):
    benchmark.group = group
    benchmark.extra_info["voxels"] = n * n
    result = benchmark.pedantic(fn, rounds=rounds_for(n, impl), iterations=1,
                                warmup_rounds=1)          # warm-up compiles the kernel
    # with --benchmark-disable the call runs once, untimed, and there are no statistics
    if benchmark.stats is not None:
        best = benchmark.stats.stats.min
        benchmark.extra_info["updates_per_s"] = n * n * updates_per_voxel / best
    return result


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_bench_explicit_step(benchmark, n, dtype, impl):
    p = get_problem(n, dtype)
    f = kern.ftcs_steps if impl == "numba" else kern.ftcs_steps_ref
    r = p.c.dtype.type(R_EXPLICIT)
    _run(benchmark, f"explicit 1 step {n}² {dtype}", n, impl,
         lambda: f(p.c, p.out, p.n_open, p.retain, p.gain, r, 1))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_bench_explicit_fused_8_steps(benchmark, n, dtype, impl):
    p = get_problem(n, dtype)
    f = kern.ftcs_steps if impl == "numba" else kern.ftcs_steps_ref
    r = p.c.dtype.type(R_EXPLICIT)
    _run(benchmark, f"explicit 8 steps {n}² {dtype}", n, impl,
         lambda: f(p.c, p.out, p.n_open, p.retain, p.gain, r, 8), updates_per_voxel=8)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_bench_lod_step(benchmark, n, dtype, impl):
    p = get_problem(n, dtype)
    f = kern.lod_step if impl == "numba" else kern.lod_step_ref
    r = p.c.dtype.type(R_IMPLICIT)
    _run(benchmark, f"lod step {n}² {dtype}", n, impl,
         lambda: f(p.c, p.out, p.retain, p.gain, r, *p.lod_plan))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_bench_backward_euler_cg(benchmark, n, dtype, impl):
    p = get_problem(n, dtype)
    args = (p.labels, p.faces, p.n_sinus, p.source, p.uptake, 0.7, 1.0, 1.0, R_IMPLICIT,
            0.0, CG_ITERATIONS)
    if impl == "numba":
        fn = lambda: kern.backward_euler_solve(p.c, p.out, *args, p.work)
    else:
        fn = lambda: kern.backward_euler_solve_ref(p.c, p.out, *args)
    _run(benchmark, f"backward euler {CG_ITERATIONS} CG iterations {n}² {dtype}", n, impl, fn,
         updates_per_voxel=CG_ITERATIONS)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_bench_reaction_coefficients(benchmark, n, dtype, impl):
    p = get_problem(n, dtype)
    f = kern.reaction_coefficients if impl == "numba" else kern.reaction_coefficients_ref
    _run(benchmark, f"reaction coefficients {n}² {dtype}", n, impl,
         lambda: f(p.labels, p.n_sinus, p.source, p.uptake, 0.7, 1.0, 1.0 / 1440,
                   p.retain, p.gain))
