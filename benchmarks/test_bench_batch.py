"""A 32-run batch of a small scenario: serial against 2 local processes, as a user runs it.

Each case is one ``marrow-abm run ... --replicates 32 --workers K`` in a fresh process, so both
pay what a user pays: start-up, imports and the numba cache load (about 1.5-2 s per process),
the runs, writing the parts, combining. With ``--workers 2`` the command's own process runs
simulations beside one spawned worker (``marrow_abm.batch.LocalPool``). Group
``batch 32 runs``; ``extra_info`` of the two-worker case carries the parallel efficiency
T_serial / (2 · T_parallel), and the serial case the per-run overhead of the batch machinery
(wall time minus the engines' own wall time, per run: start-up, preflight, Parquet parts,
combining, summary, manifest). Both carry ``cpu_s``, the CPU seconds of the command and its
workers: on a machine shared with other jobs the wall times swing with their load, and
``cpu_efficiency`` = CPU_serial / CPU_parallel shows what the second process costs in
duplicated start-up whatever the load. ``MARROW_BENCH_BATCH_DAYS`` sets the simulated days per
run (default 14: about 0.35-0.4 s of engine time per run on the 200 µm section). Run with
``pytest benchmarks/test_bench_batch.py --benchmark-only``; figures go to docs/performance.md.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

N_RUNS = 32
DAYS = float(os.environ.get("MARROW_BENCH_BATCH_DAYS", "14"))
SMALL = ["geometry.marrow_radius_um=200", "geometry.cortex_thickness_um=60", f"run.days={DAYS}"]
_WALL: dict[int, float] = {}
_CPU: dict[int, float] = {}


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _cli(out, replicates: int, workers: int) -> float:
    """Run the command; return the CPU seconds of it and its workers (which it waits for)."""
    sets = [a for s in SMALL for a in ("--set", s)]
    before = _children_cpu_s()
    subprocess.run([sys.executable, "-m", "marrow_abm.cli", "run", "default", *sets,
                    "--replicates", str(replicates), "--workers", str(workers),
                    "--out", str(out), "--quiet"], check=True)
    return _children_cpu_s() - before


@pytest.fixture(scope="module", autouse=True)
def warm_cache(tmp_path_factory):
    """One tiny batch first, so a stale numba cache is recompiled outside the timings."""
    _cli(tmp_path_factory.mktemp("warm"), 1, 1)


@pytest.mark.parametrize("workers", [1, 2])
def test_bench_batch(benchmark, tmp_path_factory, workers):
    benchmark.group = f"batch {N_RUNS} runs"
    outs, cpus = [], []

    def once():
        out = tmp_path_factory.mktemp(f"batch{workers}-")
        outs.append(out)
        cpus.append(_cli(out, N_RUNS, workers))

    benchmark.pedantic(once, rounds=1, iterations=1)
    wall = benchmark.stats.stats.min
    _WALL[workers] = wall
    _CPU[workers] = cpus[-1]
    man = json.loads((outs[-1] / "manifest.json").read_text())
    assert man["status"] == "complete" and len(man["runs"]) == N_RUNS
    engine_s = sum(r["wall_s"] for r in man["runs"])
    benchmark.extra_info.update({"workers": workers, "days_per_run": DAYS,
                                 "engine_s_per_run": engine_s / N_RUNS, "cpu_s": cpus[-1],
                                 "load_average_1min": os.getloadavg()[0]})
    if workers == 1:
        benchmark.extra_info["overhead_s_per_run"] = (wall - engine_s) / N_RUNS
    elif 1 in _WALL:
        benchmark.extra_info["parallel_efficiency"] = _WALL[1] / (2 * wall)
        benchmark.extra_info["cpu_efficiency"] = _CPU[1] / _CPU[2]
