"""Scenario batches: scenarios × sweep points × replicates, run on an executor, written resumably.

A batch is a list of ``RunSpec`` (one scenario at one sweep point, one replicate). Each run is a
pure function of (resolved scenario, root seed, replicate): ``execute_run`` builds an ``Engine``,
runs it and returns the records, so the executor — serial, local processes or a Dask cluster —
and the worker count never change a number. Replicate *i* of every scenario and sweep point gets
the same named streams (``Streams(root_seed, i)``: ``SeedSequence(root_seed, spawn_key=(i,
crc32(name)))``), so differences between scenarios are paired (common random numbers).

Only the parent process writes: each finished run becomes one Parquet part, written atomically
(``marrow_abm.output``); a rerun of the same batch skips the parts that exist. The layout is
documented in ``docs/outputs.md``.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import MarrowError, ScenarioError
from .scenario import Scenario, load_scenario, parse_override

__all__ = [
    "BatchResult", "Point", "RunResult", "RunSpec", "execute_run", "expand_points",
    "parse_sweep_arg", "run_batch", "summarise",
]

#: Seconds to wait for a Dask scheduler before giving up (distributed retries until then).
SCHEDULER_TIMEOUT_S = 10.0
#: Times at which summary.csv reports replicate statistics: every this many hours, plus the end.
SUMMARY_EVERY_H = 24.0


# ---------------------------------------------------------------------------------------------
# What to run

@dataclass(frozen=True)
class Point:
    """One scenario at one sweep point.

    Args:
        point_id: file-safe identifier: the scenario name, or ``<name>-p<k>`` inside a sweep.
        scenario: the resolved scenario with the point's values set and no ``[sweep]`` table.
        index: position of the point in its scenario's sweep (0 without a sweep).
        values: swept dotted key -> value at this point (empty without a sweep).
    """

    point_id: str
    scenario: Scenario
    index: int = 0
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How plots and messages name the point: ``default`` or ``default (zones.d_endo_um=30)``."""
        if not self.values:
            return self.scenario.name
        inner = ", ".join(f"{k}={_fmt_value(v)}" for k, v in self.values.items())
        return f"{self.scenario.name} ({inner})"


@dataclass(frozen=True)
class RunSpec:
    """One run: a point, the batch's root seed and a replicate index.

    Args:
        point: the scenario at its sweep point.
        seed: root seed shared by every run of the batch.
        replicate: replicate index (>= 0).
        snapshot_every_h: save the fields and cells every this many simulated hours (None: never).
        threads: numba threads the run may use.
    """

    point: Point
    seed: int
    replicate: int
    snapshot_every_h: float | None = None
    threads: int = 1

    @property
    def run_id(self) -> str:
        return f"{self.point.point_id}/r{self.replicate:04d}"

    def describe(self) -> str:
        """Scenario, point, replicate and seed, as a failure message names a run."""
        return (f"scenario {self.point.scenario.name}, point {self.point.point_id}"
                + (f" ({', '.join(f'{k}={_fmt_value(v)}' for k, v in self.point.values.items())})"
                   if self.point.values else "")
                + f", replicate {self.replicate}, seed {self.seed}")


@dataclass
class RunResult:
    """What a worker returns: the records or the error, never both.

    Args:
        run_id: ``<point_id>/r<replicate>``.
        frame: tidy records (``Recorder.frame`` plus the point's columns), None if it failed.
        info: wall and CPU seconds, CPU per phase, steps, final cell counts, worker host.
        snapshot: compressed ``.npz`` bytes of the field snapshots (None if not requested).
        error: the traceback of a failed run.
    """

    run_id: str
    frame: pd.DataFrame | None
    info: dict
    snapshot: bytes | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _fmt_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _toml_value(value: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def parse_sweep_arg(text: str) -> tuple[str, list]:
    """Parse ``--sweep KEY=v1,v2,...`` into the dotted key and its values (TOML values).

    Raises:
        ScenarioError: malformed text, a key that is not a single value of the schema, or a
            value that is not TOML (``file`` is ``--sweep``).
    """
    from .schema import UNSWEEPABLE, Key, schema_node_at

    if "=" not in text:
        raise ScenarioError(f"expected KEY=v1,v2,..., got {text!r}", file="--sweep",
                            suggestion="zones.d_endo_um=30,50,80")
    key, _, values_text = text.partition("=")
    key = key.strip()
    items = [v.strip() for v in values_text.split(",")]
    if not values_text.strip() or any(v == "" for v in items):
        raise ScenarioError(f"empty value in {text!r}", file="--sweep", key=key,
                            suggestion=f"{key}=30,50,80")
    values = []
    for item in items:
        try:
            _, value = parse_override(f"{key}={item}")
        except ScenarioError as exc:
            raise ScenarioError(exc.message, file="--sweep", key=exc.key,
                                suggestion=exc.suggestion) from None
        values.append(value)
    if key in UNSWEEPABLE:
        raise ScenarioError(f"{key} cannot be swept"
                            + (" (replicates vary the seed: use --replicates)"
                               if key == "run.seed" else ""), file="--sweep", key=key)
    if not isinstance(schema_node_at(tuple(key.split("."))), Key):
        raise ScenarioError("is a table, not a single value; sweep one of its keys",
                            file="--sweep", key=key)
    if len({repr(v) for v in values}) != len(values):
        raise ScenarioError(f"repeated value in {values_text!r}", file="--sweep", key=key)
    return key, values


def expand_points(names: Sequence[str], overrides: Sequence[str] = (),
                  sweeps: Sequence[tuple[str, list]] = (), seed: int | None = None
                  ) -> tuple[list[Point], int]:
    """Load every scenario and expand its sweep into points; choose the batch's root seed.

    Every scenario runs with the same root seed (``seed``, else the first scenario's
    ``run.seed``), so replicate *i* of every point shares its random streams.

    Args:
        names: bundled scenario names or TOML paths.
        overrides: ``KEY=VALUE`` strings applied to every scenario (``--set``).
        sweeps: ``(key, values)`` from ``--sweep``; they add to or replace the scenario's
            ``[sweep]`` keys.
        seed: root seed (non-negative); None takes the first scenario's ``run.seed``.

    Returns:
        The points in scenario order, then sweep order, and the root seed.

    Raises:
        ScenarioError: a bad scenario, override, sweep key or sweep value.
    """
    if not names:
        raise MarrowError("no scenario given")
    overrides = list(overrides)
    if seed is None:
        seed = int(load_scenario(names[0], overrides).data["run"]["seed"])
    base_overrides = [*overrides, f"run.seed={int(seed)}"]
    points: list[Point] = []
    seen: dict[str, Path] = {}
    for name in names:
        sc = load_scenario(name, base_overrides)
        if sc.name in seen:
            raise ScenarioError(f"two scenarios of the batch are named {sc.name!r} "
                                f"({seen[sc.name]} and {sc.path}); outputs are named by "
                                "scenario, so rename one file", file=str(sc.path))
        seen[sc.name] = sc.path
        sweep = dict(sc.data.get("sweep", {}))
        sweep.update({key: list(values) for key, values in sweeps})
        keys = list(sweep)
        combos = list(itertools.product(*(sweep[k] for k in keys))) if keys else [()]
        for k, combo in enumerate(combos):
            values = dict(zip(keys, combo))
            point_sets = [f"{key}={_toml_value(v)}" for key, v in values.items()]
            try:
                pt = load_scenario(name, [*base_overrides, *point_sets])
            except ScenarioError as exc:
                swept = exc.key in values if exc.key else False
                raise ScenarioError(exc.message, file="--sweep" if swept else exc.file,
                                    key=f"sweep.{exc.key}" if swept else exc.key,
                                    suggestion=exc.suggestion) from None
            # The validated values (ints widened to float where the key is a float).
            values = {key: pt.get(key) for key in values}
            data = {key: v for key, v in pt.data.items() if key != "sweep"}
            pt = dataclasses.replace(pt, data=data)
            point_id = f"{sc.name}-p{k}" if keys else sc.name
            points.append(Point(point_id=point_id, scenario=pt, index=k, values=values))
    return points, int(seed)


# ---------------------------------------------------------------------------------------------
# One run (executed in a worker)

def _limit_threads(n: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def _point_columns(frame: pd.DataFrame, point: Point) -> pd.DataFrame:
    """Insert ``point`` and one column per swept key after ``scenario``."""
    frame.insert(1, "point", point.point_id)
    for i, (key, value) in enumerate(point.values.items()):
        frame.insert(2 + i, key, value)
    return frame


def execute_run(spec: RunSpec) -> RunResult:
    """Run one scenario replicate; a pure function of the spec (safe on any worker).

    Exceptions are caught and returned as ``RunResult.error`` so one crashing run never stops
    the batch.
    """
    import platform

    t_wall, t_cpu = time.perf_counter(), time.process_time()
    try:
        _limit_threads(spec.threads)
        from .engine import Engine

        eng = Engine(spec.point.scenario, seed=spec.seed, replicate=spec.replicate)
        days = float(spec.point.scenario.data["run"]["days"])
        snaps = _Snapshots(eng, spec.snapshot_every_h) if spec.snapshot_every_h else None
        frame = eng.run(days, progress=snaps.maybe_take if snaps else None)
        frame = _point_columns(frame, spec.point)
        info = {
            "run_id": spec.run_id, "scenario": spec.point.scenario.name,
            "point": spec.point.point_id, "replicate": spec.replicate, "seed": spec.seed,
            "n_steps": eng.step_index, "days": days,
            "wall_s": time.perf_counter() - t_wall, "cpu_s": time.process_time() - t_cpu,
            "phase_cpu_s": eng.phase_cpu_s, "final_cell_counts": eng.cell_counts(),
            "random_streams": list(eng.streams.names()), "host": platform.node(),
            "pid": os.getpid(),
        }
        return RunResult(spec.run_id, frame, info, snaps.to_bytes() if snaps else None)
    except Exception as exc:  # noqa: BLE001 - a crashing run is reported, the batch goes on
        text = "".join(traceback.format_exception(exc))
        return RunResult(spec.run_id, None, {"wall_s": time.perf_counter() - t_wall},
                         error=text)


class _Snapshots:
    """Field values and cell positions every ``every_h`` hours, with the geometry to redraw them."""

    def __init__(self, engine, every_h: float):
        self.engine, self.every_h = engine, float(every_h)
        self.times: list[float] = []
        self.fields: dict[str, list[np.ndarray]] = {f: [] for f in engine.fields.names}
        self.cell_voxel: list[np.ndarray] = []
        self.cell_kind: list[np.ndarray] = []
        self.take()

    def maybe_take(self, step: int, total: int) -> None:
        t = self.engine.time_h
        n = round(t / self.every_h)
        if abs(t - n * self.every_h) < 1e-9 * max(1.0, t) or step == total:
            if not self.times or self.times[-1] != t:
                self.take()

    def take(self) -> None:
        eng = self.engine
        self.times.append(float(eng.time_h))
        for f in self.fields:
            # float32 halves the size; a redrawn figure needs no more precision.
            self.fields[f].append(eng.fields.values[f].astype(np.float32))
        alive = eng.cells["alive"]
        self.cell_voxel.append(eng.cells["voxel"][alive].astype(np.int32))
        self.cell_kind.append(eng.cells["kind"][alive].astype(np.int8))

    def to_bytes(self) -> bytes:
        from .cells import KIND_NAMES

        geom = self.engine.geometry
        arrays: dict[str, np.ndarray] = {
            "time_h": np.asarray(self.times), "dx_um": np.asarray(geom.dx_um),
            "labels": geom.labels.astype(np.int8),
            "field_names": np.asarray(list(self.fields)),
            "field_labels": np.asarray([self.engine.scenario.data["fields"][f]["label"]
                                        for f in self.fields]),
            "kind_names": np.asarray(KIND_NAMES),
            "cell_voxel": np.concatenate(self.cell_voxel),
            "cell_kind": np.concatenate(self.cell_kind),
            "cell_offsets": np.cumsum([0, *(v.size for v in self.cell_voxel)]),
        }
        for zone, mask in geom.zone_masks().items():
            arrays[f"zone_{zone}"] = mask
        for f, frames in self.fields.items():
            arrays[f"field_{f}"] = np.stack(frames)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Executors: each yields (spec, RunResult) as runs finish, in any order.

def _init_worker(threads: int, parent_pid: int) -> None:
    """Process-pool initializer: one numba thread, Ctrl-C left to the parent, exit with it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        # A worker whose parent was killed (SIGKILL leaves no chance to clean up) would wait
        # on the task queue forever: leave as soon as the parent is gone.
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    _limit_threads(threads)


#: Thread-pool sizes for worker processes. They must be in the environment when a worker
#: starts (numba and OpenBLAS size their pools at import): idle pool threads spin, and two
#: processes with two spinning pools each on a 2-core machine ran each run 1.6-2.7x slower.
WORKER_ENV = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def _worker_environment(threads: int) -> Iterator[None]:
    """Set the thread-pool variables while workers are spawned; restore them afterwards."""
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update({k: str(threads) for k in WORKER_ENV})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Serial:
    """Runs in this process, one after another, as they are iterated."""

    description = "serial (this process)"

    def __init__(self, specs: Sequence[RunSpec]):
        self.specs = specs

    def results(self) -> Iterator[tuple[RunSpec, RunResult]]:
        for spec in self.specs:
            yield spec, execute_run(spec)

    def abort(self) -> None:
        pass


class _Processes:
    """Spawn-context worker processes; every run is submitted at once, so the workers start
    (interpreter, imports, numba cache) while this process checks the scenarios."""

    def __init__(self, specs: Sequence[RunSpec], workers: int, threads: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.description = f"{workers} local processes"
        self.pool = ProcessPoolExecutor(max_workers=workers,
                                        mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker,
                                        initargs=(threads, os.getpid()))
        with _worker_environment(threads):   # spawn-context workers start on the first submit
            self.futures = {self.pool.submit(execute_run, spec): spec for spec in specs}

    def results(self) -> Iterator[tuple[RunSpec, RunResult]]:
        from concurrent.futures import as_completed

        finished = False
        try:
            for fut in as_completed(self.futures):
                spec = self.futures[fut]
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker process died (e.g. killed)
                    result = RunResult(spec.run_id, None, {}, error=f"worker failed: {exc!r}")
                yield spec, result
            finished = True
        finally:
            if not finished:  # interrupted: do not wait for the runs still going
                self.abort()
            self.pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
            proc.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


def connect_scheduler(address: str, timeout_s: float | None = None):
    """A ``distributed.Client`` for ``address``; a MarrowError if it cannot be reached."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise MarrowError("--scheduler needs dask.distributed: pip install 'dask[distributed]'"
                          ) from exc
    try:
        timeout_s = SCHEDULER_TIMEOUT_S if timeout_s is None else timeout_s
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise MarrowError(f"cannot reach the Dask scheduler at {address!r} ({exc}); start one "
                          "with `dask scheduler` or use --workers") from None


class _Dask:
    """Runs on a Dask distributed cluster; submitted at once, gathered as they finish."""

    def __init__(self, specs: Sequence[RunSpec], client, address: str):
        self.description = f"dask scheduler {address}"
        self.client = client
        self.futures = {client.submit(execute_run, spec, pure=False): spec for spec in specs}

    def results(self) -> Iterator[tuple[RunSpec, RunResult]]:
        from distributed import as_completed

        finished = False
        try:
            for fut in as_completed(list(self.futures), loop=self.client.loop):
                spec = self.futures[fut]
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker died (KilledWorker, lost)
                    result = RunResult(spec.run_id, None, {}, error=f"worker failed: {exc!r}")
                yield spec, result
            finished = True
        finally:
            if not finished:
                self.abort()

    def abort(self) -> None:
        self.client.cancel(list(self.futures))


# ---------------------------------------------------------------------------------------------
# The batch

@dataclass
class BatchResult:
    """What ``run_batch`` did.

    Args:
        out_dir: the batch folder.
        n_runs: runs in the batch.
        n_skipped: runs already finished by an earlier invocation.
        n_ran: runs finished now.
        failures: one dict per failed run (scenario, point, values, replicate, seed, error).
        wall_s: wall time of this invocation, in seconds.
    """

    out_dir: Path
    n_runs: int
    n_skipped: int
    n_ran: int
    failures: list[dict]
    wall_s: float

    @property
    def ok(self) -> bool:
        return not self.failures


class Listener:
    """Hooks for progress display; the default does nothing."""

    def start(self, n_total: int, n_done: int, executor: str) -> None:
        """Called once before any run: runs in the batch, runs already done, executor text."""

    def finished(self, spec: RunSpec, result: RunResult) -> None:
        """Called after each run's output is written (or its failure recorded)."""


def run_batch(points: Sequence[Point], replicates: int, out_dir: str | os.PathLike, *,
              seed: int, workers: int | None = None, scheduler: str | None = None,
              snapshot_every_h: float | None = None, threads: int = 1, force: bool = False,
              command: list[str] | None = None, listener: Listener | None = None
              ) -> BatchResult:
    """Run every point × replicate and write the batch folder (resuming an unfinished one).

    Args:
        points: from ``expand_points``.
        replicates: replicates per point (>= 1).
        out_dir: batch folder; created if missing.
        seed: root seed of every run.
        workers: local worker processes; 1 runs in this process; None uses every core.
        scheduler: address of a Dask distributed scheduler (replaces ``workers``).
        snapshot_every_h: save field and cell snapshots every this many simulated hours.
        threads: numba threads per worker (1 unless you know the machine is idle).
        force: replace a folder that holds a different batch.
        command: the command line recorded in the manifest.
        listener: progress hooks.

    Returns:
        A BatchResult; failed runs are listed there and in the manifest, never raised.

    Raises:
        MarrowError: bad arguments, an unusable or foreign output folder, an unreachable
            scheduler — before anything is written.
    """
    from . import output

    if replicates < 1:
        raise MarrowError(f"--replicates must be >= 1 (got {replicates})")
    if workers is not None and workers < 1:
        raise MarrowError(f"--workers must be >= 1 (got {workers})")
    if workers is not None and scheduler:
        raise MarrowError("--workers and --scheduler exclude each other: the Dask cluster "
                          "decides how many workers run")
    if snapshot_every_h is not None and not snapshot_every_h > 0:
        raise MarrowError(f"--snapshot-every must be > 0 hours (got {snapshot_every_h})")
    listener = listener or Listener()
    out_dir = Path(out_dir)
    specs = [RunSpec(p, seed, r, snapshot_every_h, threads)
             for p in points for r in range(replicates)]
    batch_id = output.batch_identity(points, seed, snapshot_every_h)
    output.check_batch_folder(out_dir, batch_id, force)   # raises before writing anything
    layout = output.BatchFolder(out_dir)
    resuming = layout.stored_batch_id() == batch_id
    todo = [s for s in specs
            if not (resuming and layout.part_path(s.point.point_id, s.replicate).exists())]
    client = connect_scheduler(scheduler) if scheduler else None

    t0 = time.perf_counter()
    n_workers = min(workers if workers is not None else _cpu_count(), len(todo))
    if client is not None:
        executor = _Dask(todo, client, scheduler)
    elif n_workers <= 1:
        executor = _Serial(todo)
    else:
        executor = _Processes(todo, n_workers, threads)
    try:
        try:
            preflight(points, seed)   # while the workers start
        except BaseException:
            executor.abort()
            raise
        layout.prepare(batch_id, force)
        manifest = output.batch_manifest(points, replicates, seed, batch_id, snapshot_every_h,
                                         command)
        layout.write_scenarios(points)
        manifest["executor"] = executor.description
        manifest["status"] = "running"
        layout.write_manifest(manifest)
        listener.start(len(specs), len(specs) - len(todo), executor.description)

        failures: list[dict] = []
        for spec, result in executor.results():
            if result.ok:
                layout.write_run(spec.point.point_id, spec.replicate, result.frame,
                                 result.info, result.snapshot)
            else:
                failures.append({
                    "scenario": spec.point.scenario.name, "point": spec.point.point_id,
                    "values": spec.point.values, "replicate": spec.replicate,
                    "seed": spec.seed, "error": result.error})
            listener.finished(spec, result)

        done = [s for s in specs if layout.part_path(s.point.point_id, s.replicate).exists()]
        frame = layout.combine([(s.point.point_id, s.replicate) for s in done], points)
        layout.write_table("timeseries.parquet", frame)
        layout.write_summary(summarise(frame, points))
        manifest.update({
            "status": "complete" if not failures else "incomplete",
            "wall_s_last_invocation": time.perf_counter() - t0,
            "runs": [layout.run_info(s.point.point_id, s.replicate) for s in done],
            "failures": failures,
        })
        layout.write_manifest(manifest)
    finally:
        if client is not None:
            client.close()
    return BatchResult(out_dir, len(specs), len(specs) - len(todo),
                       len(todo) - len(failures), failures, time.perf_counter() - t0)


def preflight(points: Sequence[Point], seed: int) -> None:
    """Build each distinct geometry once, so an unreadable image or an impossible section is a
    ScenarioError before anything is written, not a failure of every run.

    Raises:
        ScenarioError: naming the scenario file and the geometry key.
    """
    import json

    from .engine import build_scenario_geometry
    from .streams import Streams

    seen: set[str] = set()
    for p in points:
        data = p.scenario.data
        key = json.dumps([str(p.scenario.base_dir()), data["geometry"], data["zones"]],
                         sort_keys=True)
        if key not in seen:
            seen.add(key)
            build_scenario_geometry(p.scenario, Streams(seed, 0))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# Replicate statistics

def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric metric columns of a batch frame (everything after the identifiers)."""
    start = list(frame.columns).index("zone") + 1
    return [c for c in frame.columns[start:] if pd.api.types.is_numeric_dtype(frame[c])]


def summary_times(times: np.ndarray, every_h: float = SUMMARY_EVERY_H) -> np.ndarray:
    """Recorded times that are multiples of ``every_h`` hours, plus the last one."""
    times = np.unique(np.asarray(times, dtype=np.float64))
    if times.size == 0:
        return times
    k = np.round(times / every_h)
    keep = np.abs(times - k * every_h) < 1e-9 * np.maximum(1.0, times)
    return np.unique(np.append(times[keep], times[-1]))


def summarise(frame: pd.DataFrame, points: Sequence[Point] = (), *,
              every_h: float = SUMMARY_EVERY_H) -> pd.DataFrame:
    """Mean, standard deviation and 95% confidence interval across replicates.

    One row per point, zone, metric and summary time. The interval is Student's t:
    mean ± t(0.975, n-1) · sd / √n (NaN with fewer than two replicates).

    Args:
        frame: the combined records (``timeseries.parquet``).
        points: the batch's points (for the swept-value columns, in order); optional.
        every_h: summary interval in hours (the last recorded time is always included).
    """
    from scipy import stats

    metrics = metric_columns(frame)
    times = summary_times(frame["time_h"].to_numpy(), every_h)
    sub = frame[frame["time_h"].isin(times)]
    long = sub.melt(id_vars=["point", "zone", "time_h", "replicate"], value_vars=metrics,
                    var_name="metric", value_name="value")
    long["metric"] = pd.Categorical(long["metric"], categories=metrics)
    g = long.groupby(["point", "zone", "metric", "time_h"], observed=True, sort=True)["value"]
    out = g.agg(n="count", mean="mean", std="std").reset_index()
    n = out["n"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.975, n - 1) * out["std"].to_numpy() / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    out["ci95_low"] = out["mean"] - half
    out["ci95_high"] = out["mean"] + half
    by_point = frame.drop_duplicates("point").set_index("point")
    sweep_keys = list(dict.fromkeys(k for p in points for k in p.values))
    lead = pd.DataFrame({"scenario": by_point.loc[out["point"], "scenario"].astype(str).to_numpy()})
    for key in sweep_keys:
        if key in by_point:
            lead[key] = by_point.loc[out["point"], key].to_numpy()
    out = pd.concat([lead, out.reset_index(drop=True)], axis=1)
    out["point"] = out["point"].astype(str)
    out["zone"] = out["zone"].astype(str)
    out["metric"] = out["metric"].astype(str)
    return out
