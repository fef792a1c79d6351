"""The LSC quiescence/adhesion rules: idiomatic Mesa 3.5 beside ours on the 200×200 section
(``marrow_abm.bench_mesa``; issue 7). One group, two cases: Mesa (``CellAgent.step`` with
``shuffle_do``) and ours, the production path: the engine's own phases (``LeukemiaModule`` and
its fused kernels) on numba's threads (see ``conftest.py``), under both values of
``leukemia.update_order``. Every round starts from the same 30% LSC density
and runs ``HOURS`` hourly steps; building the model is set-up, not timed. Cell-steps per round
are in ``extra_info`` (cell-steps/s = cell_steps / mean). Nothing here asserts a speed; the
speed figures and the G0 agreement come from ``marrow-abm bench`` (``run_mesa_comparison``).
"""

from __future__ import annotations

import numba
import pytest

from marrow_abm import bench_mesa as bm

SIZE, HOURS, FRAC = 200, 12, 0.3
GROUP = f"lsc_rules_{SIZE}x{SIZE}_{HOURS}h"


@pytest.fixture(scope="module")
def section():
    sec = bm.relaxed_section(SIZE, 7.0)
    bm.run_ours(sec, bm.initial_lsc_voxels(sec, 0.5, 0), 2, 0,
                threads=numba.get_num_threads())               # compile before timing
    return sec


@pytest.fixture(scope="module")
def voxels(section):
    return bm.initial_lsc_voxels(section, FRAC, 0)


@pytest.mark.benchmark(group=GROUP)
def test_mesa_rules(benchmark, section, voxels):
    def setup():
        return (bm.LSCNicheModel(section, voxels, rng=1),), {}

    def run(model):
        for _ in range(HOURS):
            model.step()
        return model

    model = benchmark.pedantic(run, setup=setup, rounds=2, iterations=1)
    benchmark.extra_info["cell_steps"] = model.cell_steps
    assert model.observe()[0] > 0


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("update_order", ["phased", "random_sequential"])
def test_ours_rules(benchmark, section, voxels, numba_threads, update_order):
    ours = bm.with_update_order(section, update_order)
    bm.run_ours(ours, voxels, 2, 0, threads=numba_threads)          # compile before timing

    def setup():
        return (bm._engine_for(ours, voxels, 0, n_threads=numba_threads),), {}

    cell_steps = []

    def run(eng):
        n = 0
        for _ in range(HOURS):
            n += eng.cells.rows_of("lsc").size
            eng.step()
        cell_steps.append(n)
        return eng

    eng = benchmark.pedantic(run, setup=setup, rounds=10, iterations=1)
    benchmark.extra_info["cell_steps"] = cell_steps[-1]
    benchmark.extra_info["numba_threads"] = numba_threads
    assert eng.cells.rows_of("lsc").size > 0
