"""``marrow-abm bench``: field-solver throughput against numpy and against memory bandwidth.

For each grid size this measures, in one run, the voxel updates per second of every field
kernel and of its plain-numpy twin, and the rate a STREAM-style triad ``a = b + s * c`` allows
on arrays of that size (24 bytes per float64 update: two reads, one write) — the memory-
bandwidth bound a one-pass stencil cannot beat. It then times one hourly step of all fields of
the default scenario. All timings are the best of several repeats (``time.perf_counter``),
after a warm-up call that compiles the kernels.

Threads: numba uses ``threads`` threads (default 1). numba's OpenMP/TBB workers spin while
they wait, so a 2-thread kernel on a 2-core machine with another busy process was measured up
to 300x slower; one thread per simulation process is the safe default (docs/performance.md).
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Sequence

import numba
import numpy as np
from numba import njit, prange

from marrow_abm.geometry import BONE, SINUSOID, touching
from marrow_abm.kernels import diffusion as kern
from marrow_abm.kernels import compartments as cp

#: BioFVM's C++ LOD solver (PhysiCell), 2 fields on 1024², measured on this machine type:
#: field-voxel updates per second for 1 and 2 threads (from the project issue).
BIOFVM_LOD_UPDATES_PER_S = {1: 4.7e7, 2: 7.9e7}

# Diffusion numbers used by the timed kernels: the explicit stencil at its stability limit,
# LOD and backward Euler at the default hourly step (D = 10 µm²/s, dx = 10 µm, dt = 1 h).
_R_EXPLICIT = 0.25
_R_IMPLICIT = 360.0
_CG_ITERATIONS = 10
_EXPLICIT_FUSED = 8


@njit(cache=True, parallel=True)
def stream_triad(a, b, c, s):
    """STREAM triad a = b + s * c (McCalpin), the memory-bandwidth yardstick.

    Args:
        a: output array (n,).
        b: input array (n,).
        c: input array (n,).
        s: scalar.
    """
    for i in prange(a.shape[0]):
        a[i] = b[i] + s * c[i]


def bench_labels(n: int) -> np.ndarray:
    """A deterministic marrow-like label grid of n x n voxels for benchmarking.

    A bone border two voxels wide and two families of wavy sinusoid lines (~15% of the area),
    so line solves break into segments and the stencil meets closed faces as in a real section
    while branches stay as predictable as they are there.

    Args:
        n: voxels per side.
    """
    i, j = np.mgrid[0:n, 0:n]
    labels = np.zeros((n, n), np.int8)
    sinus = (((i + 5 * np.sin(j / 11.0)) % 23 < 1.5) | ((j + 5 * np.sin(i / 13.0)) % 29 < 1.5))
    labels[sinus] = 2
    labels[:2] = labels[-2:] = 1
    labels[:, :2] = labels[:, -2:] = 1
    return labels


def _best_time(fn: Callable[[], object], repeats: int, budget_s: float = 2.0) -> float:
    fn()                                                  # compile / warm caches
    best = math.inf
    spent = 0.0
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        spent += dt
        if spent > budget_s:
            break
    return best


def bench_problem(n: int, dtype):
    """A marrow-like n×n problem (labels, c, source, uptake, open faces, sinusoid neighbours),
    the same for ``marrow-abm bench`` and ``benchmarks/``."""
    labels = bench_labels(n)
    rng = np.random.default_rng(0)
    marrow = labels == 0
    c = np.where(marrow, rng.random((n, n)), 0.0).astype(dtype)
    source = np.where(marrow & (rng.random((n, n)) < 0.05), 1.0, 0.0)
    uptake = np.where(marrow & (rng.random((n, n)) < 0.05), 0.5, 0.0)
    faces = kern.open_faces(labels)
    ns = kern.sinusoid_neighbours(labels)
    return labels, c, source, uptake, faces, ns


def _size_results(n: int, dtype, threads: int) -> dict:
    labels, c, source, uptake, faces, ns = bench_problem(n, dtype)
    N = n * n
    out = np.empty_like(c)
    retain = np.empty_like(c)
    gain = np.empty_like(c)
    kern.reaction_coefficients(labels, ns, source, uptake, 0.7, 1.0, 1.0 / 1440, retain, gain)
    r_e = dtype(_R_EXPLICIT)
    r_i = dtype(_R_IMPLICIT)
    plan = kern.lod_plan(faces, r_i, dtype)
    n_open = kern.open_face_count(faces)
    work = np.empty((5, n, n), dtype)
    big = n >= 2048
    reps_fast, reps_ref = (5, 1) if big else (20, 3)

    kernels = {
        "reaction_coefficients": (
            lambda: kern.reaction_coefficients(labels, ns, source, uptake, 0.7, 1.0, 0.5,
                                               retain, gain),
            lambda: kern.reaction_coefficients_ref(labels, ns, source, uptake, 0.7, 1.0, 0.5,
                                                   retain, gain), 1),
        "explicit": (
            lambda: kern.ftcs_steps(c, out, n_open, retain, gain, r_e, 1),
            lambda: kern.ftcs_steps_ref(c, out, n_open, retain, gain, r_e, 1), 1),
        f"explicit_x{_EXPLICIT_FUSED}": (
            lambda: kern.ftcs_steps(c, out, n_open, retain, gain, r_e, _EXPLICIT_FUSED),
            lambda: kern.ftcs_steps_ref(c, out, n_open, retain, gain, r_e, _EXPLICIT_FUSED),
            _EXPLICIT_FUSED),
        "lod": (
            lambda: kern.lod_step(c, out, retain, gain, r_i, *plan),
            lambda: kern.lod_step_ref(c, out, retain, gain, r_i, *plan), 1),
        "backward_euler_cg_iter": (
            lambda: kern.backward_euler_solve(c, out, labels, faces, ns, source, uptake, 0.7,
                                              1.0, 1.0, _R_IMPLICIT, 0.0, _CG_ITERATIONS, work),
            lambda: kern.backward_euler_solve_ref(c, out, labels, faces, ns, source, uptake,
                                                  0.7, 1.0, 1.0, _R_IMPLICIT, 0.0,
                                                  _CG_ITERATIONS),
            _CG_ITERATIONS),
    }
    res: dict = {"n": n, "voxels": N, "dtype": np.dtype(dtype).name, "solvers": {}}
    for name, (fast, ref, updates_per_voxel) in kernels.items():
        t_fast = _best_time(fast, reps_fast)
        t_ref = _best_time(ref, reps_ref, budget_s=4.0)
        ups = N * updates_per_voxel / t_fast
        ups_ref = N * updates_per_voxel / t_ref
        res["solvers"][name] = {"seconds": t_fast, "seconds_ref": t_ref,
                                "updates_per_s": ups, "updates_per_s_ref": ups_ref,
                                "speedup_vs_numpy": t_ref / t_fast}
    res["be_solve"] = _be_solve_results(labels, c, source, uptake, faces, ns, work, out,
                                        reps_fast)
    a, b, cc = np.zeros(N), np.ones(N), np.ones(N)
    t_triad = _best_time(lambda: stream_triad(a, b, cc, 3.0), reps_fast * 2)
    res["triad_updates_per_s"] = N / t_triad
    res["triad_bytes_per_s"] = 24.0 * N / t_triad
    for name, row in res["solvers"].items():
        row["fraction_of_triad"] = row["updates_per_s"] / res["triad_updates_per_s"]
    biofvm = BIOFVM_LOD_UPDATES_PER_S.get(threads)
    if biofvm:
        res["solvers"]["lod"]["ratio_to_biofvm"] = res["solvers"]["lod"]["updates_per_s"] / biofvm
    return res


def _be_solve_results(labels, c, source, uptake, faces, ns, work, out, repeats) -> dict:
    """One whole backward-Euler solve (r = 360, the TGF-β1 step; tolerance as ``FieldSet``)
    per preconditioner, timed alternately so that both see the same machine load."""
    tol = 1e-8 if c.dtype == np.float64 else 1e-5
    scratch = cp.cp_work(c.shape)
    args = (labels, faces, ns, source, uptake, 2.5, 1.0, 1.0, _R_IMPLICIT, tol, 5000, work)
    solvers = {"jacobi": lambda: kern.backward_euler_solve(c, out, *args),
               "compartments": lambda: cp.backward_euler_solve_cp(c, out, *args, scratch)}
    rows = {name: {"iterations": int(fn()), "seconds": math.inf} for name, fn in solvers.items()}
    for _ in range(max(2, repeats // 4)):
        for name, fn in solvers.items():
            rows[name]["seconds"] = min(rows[name]["seconds"], _best_time(fn, 1))
    return rows


def _synthetic_inputs(fieldset) -> tuple[dict, dict]:
    """Bone-lining and perivascular sources (one per surface voxel) for every field."""
    labels = fieldset.labels
    src = (np.where(touching(labels, BONE), 1.0, 0.0)
           + np.where(touching(labels, SINUSOID), 0.3, 0.0))
    return {name: src for name in fieldset.names}, {}


def _default_step(n_warm_h: int = 24, n_timed: int = 10) -> dict:
    """Time one hourly step of all fields of the default scenario."""
    try:
        from marrow_abm.engine import default_fieldset        # written by the engine module
    except Exception as exc:                                 # noqa: BLE001 - report any cause
        return {"available": False,
                "message": f"marrow_abm.engine.default_fieldset is not importable yet ({exc}); "
                           "default-scenario step not timed"}
    made = default_fieldset()
    if isinstance(made, tuple):
        fieldset, sources, uptake = made
        what = "default scenario sources"
    else:
        fieldset = made
        sources, uptake = _synthetic_inputs(fieldset)
        what = "synthetic bone-surface and perivascular sources"
    t0 = time.perf_counter()
    fieldset.step(sources, uptake)
    first = time.perf_counter() - t0
    for _ in range(n_warm_h):
        fieldset.step(sources, uptake)
    times = []
    for _ in range(n_timed):
        t0 = time.perf_counter()
        fieldset.step(sources, uptake)
        times.append(time.perf_counter() - t0)
    return {"available": True, "inputs": what, "grid": list(fieldset.labels.shape),
            "marrow_voxels": int((fieldset.labels == 0).sum()),
            "fields": {k: v["method"] for k, v in fieldset.info().items()},
            "first_step_ms": first * 1e3, "median_step_ms": float(np.median(times)) * 1e3,
            "max_step_ms": float(np.max(times)) * 1e3}


def run_bench(sizes: Sequence[int] = (256, 1024, 2048), threads: int | None = None,
              json_path: str | None = None, dtypes: Sequence[str] = ("float64", "float32")
              ) -> dict:
    """Measure field-solver throughput and the default hourly step.

    Args:
        sizes: grid sizes n (n x n voxels).
        threads: numba threads for the kernels and the triad (default 1, see module doc).
        json_path: if given, also write the result there as JSON.
        dtypes: field dtypes to measure.

    Returns:
        dict with ``machine``, ``threads``, ``sizes`` (one entry per size and dtype, with per
        solver ``updates_per_s``, ``updates_per_s_ref``, ``speedup_vs_numpy``,
        ``fraction_of_triad`` and for LOD ``ratio_to_biofvm``; plus ``triad_updates_per_s``)
        and ``default_step``.
    """
    n_threads = 1 if threads is None else int(threads)
    n_threads = max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS))
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        rows = [_size_results(int(n), getattr(np, d), n_threads) for n in sizes for d in dtypes]
        default = _default_step()
    finally:
        numba.set_num_threads(previous)
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": _cpu_count(), "numba": numba.__version__,
                    "numpy": np.__version__, "threading_layer": _threading_layer()},
        "threads": n_threads,
        "sizes": rows,
        "default_step": default,
    }
    if json_path:
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return result


def print_bench(result: dict) -> None:
    """Print :func:`run_bench` results as rich tables.

    Args:
        result: the dict returned by :func:`run_bench`.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Field kernels, {result['threads']} numba thread(s) "
                        "(voxel updates per second, best of repeats)")
    for col in ("grid", "dtype", "solver", "numba /s", "numpy /s", "× numpy",
                "÷ triad", "× BioFVM"):
        table.add_column(col, justify="right" if col not in ("solver", "dtype") else "left")
    for row in result["sizes"]:
        first = True
        for name, s in row["solvers"].items():
            table.add_row(f"{row['n']}²" if first else "", row["dtype"] if first else "", name,
                          f"{s['updates_per_s']:.3g}", f"{s['updates_per_s_ref']:.3g}",
                          f"{s['speedup_vs_numpy']:.1f}", f"{s['fraction_of_triad']:.2f}",
                          f"{s['ratio_to_biofvm']:.1f}" if "ratio_to_biofvm" in s else "")
            first = False
        table.add_row("", "", "[dim]STREAM triad[/dim]", f"{row['triad_updates_per_s']:.3g}",
                      "", "", "1.00", "", end_section=True)
    console.print(table)
    for row in result["sizes"]:
        be = row.get("be_solve")
        if be:
            j, m = be["jacobi"], be["compartments"]
            console.print(f"{row['n']}² {row['dtype']}: one backward-Euler solve (r = 360): "
                          f"Jacobi-PCG {j['iterations']} iterations {1e3 * j['seconds']:.1f} ms, "
                          f"compartment-PCG {m['iterations']} iterations "
                          f"{1e3 * m['seconds']:.1f} ms ({j['seconds'] / m['seconds']:.2f}x)")
    d = result["default_step"]
    if d.get("available"):
        methods = ", ".join(f"{k}: {v}" for k, v in d["fields"].items())
        console.print(f"Default scenario, one hourly step of all fields ({methods}; "
                      f"{d['grid'][0]}×{d['grid'][1]} grid, {d['marrow_voxels']} marrow voxels, "
                      f"{d['inputs']}): median {d['median_step_ms']:.2f} ms, "
                      f"max {d['max_step_ms']:.2f} ms, first (cold) {d['first_step_ms']:.1f} ms")
    else:
        console.print(f"[yellow]{d['message']}[/yellow]")
    console.print("[dim]x8 rows fuse 8 stencil steps per memory pass; cg_iter rows count one "
                  "CG iteration as one update. BioFVM C++ LOD reference: 4.7e7 /s (1 thread), "
                  "7.9e7 /s (2 threads).[/dim]")


def _cpu_count() -> int:
    import os
    return os.cpu_count() or 1


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:                 # no parallel kernel has run yet
        return "not initialised"
