"""Whole-model step benchmark: time per hourly step by phase, memory and scaling with size.

``marrow-abm bench --model`` and ``benchmarks/test_bench_model.py`` use this module. A *size*
is a femur-diaphysis section whose marrow radius is chosen so that the lattice is about
``n x n`` voxels (dx = 10 µm, cortex 160 µm, as in ``default``): ``n = 145`` is the default
mouse section (6,867 marrow voxels), ``n = 1001`` a human-biopsy-sized field (~5x10^5 marrow
voxels in a 10^6-voxel lattice). Every phase, field and cell of the scenario runs; the engine's
phase timer (``Engine.phase_wall_s``) gives the breakdown.

Method: build the engine (not timed), run ``warmup`` steps (numba cache load, the first
field solves from the initial condition), then time ``steps`` steps one by one
(``time.perf_counter``) and report the median step and the per-phase mean. Several thread
counts of one size get one engine each, stepped in turn (:func:`bench_size_threads`), so
that their ratio is not the machine's drift between two runs. Memory is measured two ways:
``state_bytes`` sums the numpy arrays the engine holds (fields, solver scratch, sources,
geometry, zone tables, cell columns), and ``traced_peak_bytes`` is tracemalloc's peak over
building the engine and its warm-up steps (numpy reports its allocations to tracemalloc;
numba kernels' temporaries do not); the timed steps run untraced.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numba
import numpy as np

DX_UM = 10.0
CORTEX_UM = 160.0
#: Default sizes: the mouse section, 500 x 500 and 1000 x 1000 (human biopsy field).
DEFAULT_SIZES = (145, 501, 1001)
#: Sizes for the scaling fit (>= 4).
FIT_SIZES = (145, 301, 501, 701, 1001)


def radius_for(n: int, dx_um: float = DX_UM, cortex_um: float = CORTEX_UM) -> float:
    """Marrow radius (µm) whose femur-diaphysis lattice is ``n x n`` (n odd)."""
    if n < 5 or n % 2 == 0:
        raise ValueError(f"size must be an odd number >= 5, got {n}")
    return (n - 1) / 2 * dx_um - cortex_um


def size_overrides(n: int) -> list[str]:
    """Scenario overrides (``--set``) giving an ``n x n`` section of the default geometry."""
    return [f"geometry.marrow_radius_um={radius_for(n)}", f"geometry.dx_um={DX_UM}",
            f"geometry.cortex_thickness_um={CORTEX_UM}"]


def state_bytes(engine) -> dict[str, int]:
    """Bytes of the numpy arrays an engine holds, by owner (each array counted once).

    Walks the engine's attributes (and those of its fields, cells, geometry, zones,
    recorder and modules) through dicts, lists, tuples and objects, summing ``nbytes`` of
    each distinct array buffer. Returns owner -> bytes plus ``"total"``.
    """
    seen: set[int] = set()
    out: dict[str, int] = {}

    def walk(obj, owner, depth):
        if depth > 6:
            return
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in seen:
                seen.add(id(base))
                out[owner] = out.get(owner, 0) + int(base.nbytes)
            return
        if isinstance(obj, dict):
            for v in obj.values():
                walk(v, owner, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, owner, depth + 1)
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("marrow_abm"):
            for v in vars(obj).values():
                walk(v, owner, depth + 1)

    for name, value in vars(engine).items():
        if name in ("engine", "scenario", "streams"):
            continue
        walk(value, name, 0)
    out["total"] = sum(out.values())
    return out


@dataclass
class SizeResult:
    """One size of the whole-model benchmark."""

    n: int
    scenario: str
    threads: int
    grid_voxels: int
    marrow_voxels: int
    cells: int
    cells_by_kind: dict
    steps: int
    step_s: list
    median_step_s: float
    day_s: float                     # 24 h of steps at the median step time
    phase_ms: dict                   # mean wall ms per step, by phase
    cg_iterations: dict              # last CG iterations of backward-Euler fields
    state_bytes: dict
    traced_peak_bytes: int
    build_s: float
    bytes_per_voxel_plus_cell: float = field(default=0.0)


def bench_size(scenario: str, n: int, steps: int = 5, warmup: int = 2, threads: int = 1,
               extra: Sequence[str] = (), trace_memory: bool = True) -> SizeResult:
    """Run ``scenario`` on an ``n x n`` section and time ``steps`` steps after ``warmup``.

    Args:
        scenario: bundled scenario name or path.
        n: lattice side (odd); see :func:`radius_for`.
        steps: timed steps (hourly with the bundled scenarios).
        warmup: untimed steps first.
        threads: numba threads for the engine (``Engine(n_threads=...)``).
        extra: further ``--set`` overrides.
        trace_memory: measure tracemalloc's peak over the build and the warm-up steps.
    """
    return bench_size_threads(scenario, n, (threads,), steps=steps, warmup=warmup,
                              extra=extra, trace_memory=trace_memory)[0]


def bench_size_threads(scenario: str, n: int, threads: Sequence[int] = (1,), steps: int = 5,
                       warmup: int = 2, extra: Sequence[str] = (),
                       trace_memory: bool = True) -> list[SizeResult]:
    """:func:`bench_size` for several thread counts at once, their steps interleaved.

    One engine per thread count (same scenario and seed, so every engine does the same work
    at each step: results do not depend on the thread count); each timed step runs once on
    every engine, the order alternating from step to step. Why: on a shared 2-core machine
    the speed drifts by ±30% over tens of seconds, so timing the thread counts one after the
    other gave 1-vs-2-thread ratios of 1.3-1.9 for the same code; interleaved, both see the
    same drift. ``traced_peak_bytes`` of an engine is the larger of its build's peak and its
    memory after the build plus the largest increase within one of its warm-up steps; the
    timed steps run without tracemalloc, whose allocation hooks added ~3 ms per step at
    1001² to the phases that allocate many small numpy arrays (rules, cycle), on any number
    of threads.

    Returns:
        one :class:`SizeResult` per entry of ``threads``, in that order.
    """
    from marrow_abm.engine import Engine
    from marrow_abm.scenario import load_scenario

    scen = load_scenario(scenario, [*size_overrides(n), *extra])
    engines, build_s, held, peaks = [], [], [], []
    for th in threads:
        if trace_memory:
            tracemalloc.start()
        t0 = time.perf_counter()
        engines.append(Engine(scen, n_threads=th))
        build_s.append(time.perf_counter() - t0)
        if trace_memory:
            cur, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            held.append(cur)
            peaks.append(peak)
        else:
            held.append(0)
            peaks.append(0)
    rises = [0] * len(engines)
    times: list[list[float]] = [[] for _ in engines]
    before: list[dict] = []

    def one_step(k: int, traced: bool) -> float:
        if traced:
            cur0 = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        t0 = time.perf_counter()
        engines[k].step()
        dt = time.perf_counter() - t0
        if traced:
            rises[k] = max(rises[k], tracemalloc.get_traced_memory()[1] - cur0)
        return dt

    if trace_memory and warmup:
        tracemalloc.start()
    try:
        for i in range(warmup + steps):
            if i == warmup:
                tracemalloc.stop()
                before = [dict(eng.phase_wall_s) for eng in engines]
            order = range(len(engines)) if i % 2 == 0 else reversed(range(len(engines)))
            for k in order:
                dt = one_step(k, trace_memory and i < warmup)
                if i >= warmup:
                    times[k].append(dt)
    finally:
        if trace_memory:
            tracemalloc.stop()
    if not before:
        before = [dict(eng.phase_wall_s) for eng in engines]
    results = []
    for k, (eng, th) in enumerate(zip(engines, threads)):
        phase_ms = {p: (eng.phase_wall_s[p] - before[k][p]) / steps * 1e3 for p in before[k]}
        info = eng.fields.info()
        counts = {c: int(v) for c, v in eng.cells.count_by_kind().items()}
        sb = state_bytes(eng)
        marrow = int(np.count_nonzero(eng.geometry.labels == 0))
        med = statistics.median(times[k])
        res = SizeResult(
            n=n, scenario=scenario, threads=th, grid_voxels=int(eng.geometry.labels.size),
            marrow_voxels=marrow, cells=int(sum(counts.values())), cells_by_kind=counts,
            steps=steps, step_s=times[k], median_step_s=med, day_s=med * 24.0 / eng.dt_h,
            phase_ms=phase_ms,
            cg_iterations={f: r.get("last_cg_iterations") for f, r in info.items()
                           if r["method"] == "backward_euler"},
            state_bytes=sb,
            traced_peak_bytes=int(max(peaks[k], held[k] + rises[k])) if trace_memory else 0,
            build_s=build_s[k])
        # the memory budget: 200 bytes per voxel + 100 per cell; report the state's
        # bytes per (voxel + cell/2) so that <= 200 meets it
        res.bytes_per_voxel_plus_cell = sb["total"] / (res.grid_voxels + 0.5 * max(res.cells, 0))
        results.append(res)
    return results


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict:
    """Least-squares y = intercept + slope x with R²."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    pred = intercept + slope * x
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {"slope": float(slope), "intercept": float(intercept),
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan}


def run_model_bench(scenarios: Sequence[str] = ("aml_progression",),
                    sizes: Sequence[int] = DEFAULT_SIZES, steps: int = 5, warmup: int = 2,
                    threads: Sequence[int] = (1,), fit: bool = True) -> dict:
    """Whole-model benchmark over scenarios x sizes x thread counts (the thread counts of a
    size interleaved step by step: :func:`bench_size_threads`).

    Returns a JSON-ready dict: machine, ``results`` (one :class:`SizeResult` dict each) and,
    with ``fit`` and at least 4 sizes, a linear fit of the median step time against lattice
    voxels and against voxels + cells per scenario and thread count.
    """
    results = []
    for scen in scenarios:
        for n in sizes:
            results += [asdict(r) for r in bench_size_threads(scen, n, tuple(threads),
                                                              steps=steps, warmup=warmup)]
    fits = {}
    if fit and len(set(sizes)) >= 4:
        for scen in scenarios:
            for th in threads:
                rows = [r for r in results if r["scenario"] == scen and r["threads"] == th]
                fits[f"{scen}/{th}"] = {
                    "step_s_vs_grid_voxels": linear_fit([r["grid_voxels"] for r in rows],
                                                        [r["median_step_s"] for r in rows]),
                    "step_s_vs_marrow_voxels": linear_fit([r["marrow_voxels"] for r in rows],
                                                          [r["median_step_s"] for r in rows]),
                    "step_s_vs_cells": linear_fit([r["cells"] for r in rows],
                                                  [r["median_step_s"] for r in rows]),
                }
    return {"machine": _machine(), "steps": steps, "warmup": warmup, "results": results,
            "fits": fits}


def _machine() -> dict:
    import os
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "numba": numba.__version__, "numpy": np.__version__,
            "threading_layer": numba.config.THREADING_LAYER, "loadavg": load}


def print_model_bench(result: dict, console=None) -> None:
    """Print the tables of :func:`run_model_bench` (rich)."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    con.print(f"machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs, "
              f"load {result['machine']['loadavg']}; {result['steps']} timed steps after "
              f"{result['warmup']} warm-up")
    phases: list[str] = []
    for r in result["results"]:
        for p in r["phase_ms"]:
            if p not in phases:
                phases.append(p)
    t = Table(title="whole-model step (median of the timed steps)")
    for col in ("scenario", "n", "threads", "marrow voxels", "cells", "step ms", "day s",
                "state MB", "B/(voxel+cell/2)", "traced peak MB"):
        t.add_column(col, justify="right")
    for r in result["results"]:
        t.add_row(r["scenario"], str(r["n"]), str(r["threads"]), f"{r['marrow_voxels']:,}",
                  f"{r['cells']:,}", f"{r['median_step_s'] * 1e3:.1f}", f"{r['day_s']:.2f}",
                  f"{r['state_bytes']['total'] / 1e6:.1f}",
                  f"{r['bytes_per_voxel_plus_cell']:.0f}", f"{r['traced_peak_bytes'] / 1e6:.1f}")
    con.print(t)
    p = Table(title="mean wall ms per step by phase (engine phase timer)")
    p.add_column("phase")
    for r in result["results"]:
        p.add_column(f"{r['scenario']} {r['n']}² {r['threads']}t", justify="right")
    for ph in phases:
        p.add_row(ph, *[f"{r['phase_ms'].get(ph, 0.0):.2f}" for r in result["results"]])
    con.print(p)
    for key, fits in result.get("fits", {}).items():
        for what, f in fits.items():
            con.print(f"{key}: {what}: step_s = {f['intercept']:.4g} + {f['slope']:.4g} x, "
                      f"R² = {f['r2']:.4f}")


__all__ = ["DEFAULT_SIZES", "FIT_SIZES", "bench_size", "bench_size_threads", "linear_fit", "print_model_bench",
           "radius_for", "run_model_bench", "size_overrides", "state_bytes"]
