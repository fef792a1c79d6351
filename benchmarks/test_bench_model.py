"""Whole-model hourly step at several section sizes and thread counts (issue 7).

Each case builds ``aml_progression`` (or ``MARROW_BENCH_MODEL_SCENARIO``) on an ``n x n``
femur section (``marrow_abm.bench_model.size_overrides``: 145 is the default mouse section,
1001 a human-biopsy field), runs ``WARMUP`` untimed steps (numba cache load, first field
solves), then times single ``Engine.step`` calls — every phase, field and cell. Group
``model step n``; ``extra_info`` carries the mean ms per phase over the timed rounds, the cell
count and the state's bytes per (voxel + cell/2) (the issue's memory budget is 200). Sizes
from ``MARROW_BENCH_MODEL_SIZES`` (default ``145,501,1001``), threads from
``MARROW_BENCH_MODEL_THREADS`` (default ``1,2``; the engine sets numba's count for each
step). Under ``--benchmark-disable`` every case runs one step, as a smoke test.
Run with ``pytest benchmarks/test_bench_model.py --benchmark-only``; figures go to
docs/performance.md. ``marrow-abm bench --model`` prints the same measurements as tables.
"""

from __future__ import annotations

import os

import pytest

from marrow_abm.bench_model import size_overrides, state_bytes
from marrow_abm.engine import Engine
from marrow_abm.scenario import load_scenario

SCENARIO = os.environ.get("MARROW_BENCH_MODEL_SCENARIO", "aml_progression")
SIZES = [int(s) for s in os.environ.get("MARROW_BENCH_MODEL_SIZES", "145,501,1001").split(",")]
THREADS = [int(s) for s in os.environ.get("MARROW_BENCH_MODEL_THREADS", "1,2").split(",")]
WARMUP = 2
ROUNDS = int(os.environ.get("MARROW_BENCH_MODEL_ROUNDS", "5"))

_ENGINES: dict[int, Engine] = {}


def _engine(n: int) -> Engine:
    # one engine per size, shared by the thread counts: results do not depend on threads
    if n not in _ENGINES:
        _ENGINES.clear()            # keep one large section in memory at a time
        eng = Engine(load_scenario(SCENARIO, size_overrides(n)))
        for _ in range(WARMUP):
            eng.step()
        _ENGINES[n] = eng
    return _ENGINES[n]


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("n", SIZES)
def test_model_step(benchmark, n, threads):
    eng = _engine(n)
    eng.n_threads = threads
    eng.fields.n_threads = threads
    benchmark.group = f"model step {n}"
    before = dict(eng.phase_wall_s)
    steps_before = eng.step_index
    benchmark.pedantic(eng.step, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    done = eng.step_index - steps_before
    assert done >= 1
    grid = int(eng.geometry.labels.size)
    cells = int(eng.cells.n)
    sb = state_bytes(eng)["total"]
    benchmark.extra_info.update({
        "scenario": SCENARIO, "threads": threads, "grid_voxels": grid,
        "cells": cells,
        "phase_ms": {k: (eng.phase_wall_s[k] - before[k]) / done * 1e3 for k in before},
        "state_bytes_per_voxel_plus_half_cell": sb / (grid + 0.5 * cells),
    })
