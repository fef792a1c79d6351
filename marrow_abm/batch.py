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
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MarrowError, ScenarioError

if TYPE_CHECKING:
    # numpy, pandas and the scenario loader are imported where they are used: the CLI imports
    # this module to start its worker processes, and every 0.1 s before they start is paid by
    # the whole batch.
    import numpy as np
    import pandas as pd

    from .scenario import Scenario

__all__ = [
    "BatchResult", "LocalPool", "Point", "RunResult", "RunSpec", "execute_run", "expand_points",
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
    from .scenario import parse_override
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
    from .scenario import load_scenario

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

        eng = Engine(spec.point.scenario, seed=spec.seed, replicate=spec.replicate,
                     n_threads=spec.threads)
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
        import numpy as np

        eng = self.engine
        self.times.append(float(eng.time_h))
        for f in self.fields:
            # float32 halves the size; a redrawn figure needs no more precision.
            self.fields[f].append(eng.fields.values[f].astype(np.float32))
        alive = eng.cells["alive"]
        self.cell_voxel.append(eng.cells["voxel"][alive].astype(np.int32))
        self.cell_kind.append(eng.cells["kind"][alive].astype(np.int8))

    def to_bytes(self) -> bytes:
        import numpy as np

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
    """Worker set-up: Ctrl-C left to the parent, exit with it, ``threads`` numba threads."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        # A worker whose parent was killed (SIGKILL leaves no chance to clean up) would run
        # its current run to the end for nothing: leave as soon as the parent is gone.
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


def limit_own_thread_pools(threads: int) -> bool:
    """Size this process's numba and BLAS pools to ``threads``, as a worker's are, if they do
    not exist yet (numba and numpy not imported). The CLI calls it first thing: its process
    runs simulations beside its workers. Returns whether it could."""
    import sys

    if "numba" in sys.modules or "numpy" in sys.modules:
        return False
    os.environ.update({k: str(threads) for k in WORKER_ENV})
    return True


@contextmanager
def _without_main_module() -> Iterator[None]:
    """Spawn workers that do not re-import ``__main__``.

    A spawned child first re-imports its parent's main module (the ``marrow-abm`` script: the
    CLI and rich, 0.2 s of each worker's start-up) so that functions defined there can be
    unpickled; the workers run ``_worker_main`` from this module and need nothing from it. It
    also keeps a user's script without an ``if __name__ == "__main__"`` guard from running again
    in every worker. multiprocessing reads ``sys.modules["__main__"]`` when a process starts.
    """
    import sys
    import types

    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")   # neither __spec__ nor __file__
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


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


def _worker_main(conn, threads: int, parent_pid: int) -> None:
    """A spawned worker: import the engine, then ask for a run, run it, send it back, repeat.

    Each message it sends (None when ready, then each RunResult) asks for the next run; the
    parent answers with a RunSpec, or None when there is nothing left.
    """
    _init_worker(threads, parent_pid)
    # The imports (numpy, pandas, scipy, numba: about 1.5 s) happen before the first request,
    # while the parent resolves the scenarios; a worker asks for work only when it can start.
    from . import engine  # noqa: F401

    conn.send(None)
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):   # the parent closed the pipe: nothing more to do
            spec = None
        if spec is None:
            break
        conn.send(execute_run(spec))
    fast_exit()


def fast_exit() -> None:
    """Let this process exit in 0.1 s instead of 0.3-1.3 s: the interpreter's final garbage
    collections walk the ~100,000 objects of numpy, pandas, scipy and numba (measured: 1.0-1.6 s
    on the loaded 2-core machine, 0.12 s frozen). Call it only when nothing is left to do:
    objects alive now are never collected, so an open file must already be closed (standard
    output and error are still flushed at exit)."""
    import gc

    gc.freeze()


class LocalPool:
    """This process and ``workers - 1`` spawned worker processes taking runs from one queue.

    Create it first thing, before the batch is resolved: the spawned workers import the engine
    (about 2 s per process with the numba cache load) while this process imports, resolves the
    scenarios and checks the output folder. Then this process runs simulations too, so
    ``workers`` processes compute and none only waits. Runs are handed out one at a time to
    whoever is free (a worker asks for its next run when it sends a result; this process takes
    one between writing results), so a worker that starts late, a slow run or a busy core never
    leaves another process idle while runs remain; at the end at most one run is left over.

    Workers are spawned, not forked (numba's OpenMP threads and Dask do not survive a fork),
    with one-thread numba/BLAS pools (``WORKER_ENV``). A worker that dies fails the run it
    held (reported like any failed run); this process runs the ones it never took.

    Args:
        workers: processes computing runs: this one and ``workers - 1`` spawned ones (1 spawns
            none and runs everything here).
        threads: numba threads per process.
        run_here: False spawns ``workers`` processes and keeps this one to dispatching and
            writing (it still takes over the runs if every worker died).
    """

    def __init__(self, workers: int, threads: int = 1, *, run_here: bool = True):
        import multiprocessing

        if workers < 1:
            raise MarrowError(f"--workers must be >= 1 (got {workers})")
        ctx = multiprocessing.get_context("spawn")
        self.workers, self.threads, self.run_here = int(workers), int(threads), run_here
        n_spawn = self.workers - 1 if run_here else self.workers
        self.description = (f"{self.workers} local processes (this one and {n_spawn} spawned)"
                            if run_here else f"{n_spawn} spawned local processes")
        self._lock = threading.Lock()
        self._todo: deque[RunSpec] = deque()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._n_live = 0
        self._dispatcher: threading.Thread | None = None
        self._closed = False
        self._procs, self._conns = [], []
        with _worker_environment(threads), _without_main_module():
            for k in range(n_spawn):
                here, there = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(there, threads, os.getpid()),
                                   name=f"marrow-abm worker {k + 1}", daemon=True)
                proc.start()
                there.close()   # so that the worker's death reads as end-of-file here
                self._procs.append(proc)
                self._conns.append(here)
        self._n_live = len(self._procs)

    def submit(self, specs: Sequence[RunSpec]) -> LocalPool:
        """Queue ``specs`` (once) and start handing them to the workers as they ask."""
        if self._dispatcher is not None or self._closed:
            raise RuntimeError("a LocalPool runs one batch")
        self._todo.extend(specs)
        self._n_submitted = len(specs)
        self._dispatcher = threading.Thread(target=self._dispatch, name="marrow-abm dispatch",
                                            daemon=True)
        self._dispatcher.start()
        return self

    def _take(self) -> RunSpec | None:
        with self._lock:
            return self._todo.popleft() if self._todo else None

    def _dispatch(self) -> None:
        """Answer the workers' requests until each has been told to stop or has died."""
        from multiprocessing.connection import wait

        live = dict(zip(self._conns, self._procs))
        held: dict[Any, RunSpec] = {}
        try:
            while live:
                for conn in wait(list(live)):
                    proc = live[conn]
                    try:
                        msg = conn.recv()
                    except (EOFError, OSError):   # the worker died
                        del live[conn]
                        self._worker_lost(proc, held.pop(conn, None))
                        continue
                    if msg is not None:
                        self._done.put((held.pop(conn), msg))
                    spec = self._take()
                    try:
                        conn.send(spec)
                    except (OSError, ValueError):  # died between its message and our answer
                        del live[conn]
                        self._worker_lost(proc, None)
                        if spec is not None:
                            with self._lock:
                                self._todo.appendleft(spec)
                        continue
                    if spec is None:
                        del live[conn]
                        with self._lock:
                            self._n_live -= 1
                    else:
                        held[conn] = spec
        except BaseException as exc:  # noqa: BLE001 - never leave the parent waiting forever
            for conn, spec in held.items():
                self._done.put((spec, RunResult(spec.run_id, None, {},
                                                error=f"worker dispatch failed: {exc!r}")))
            with self._lock:
                self._n_live = 0

    def _worker_lost(self, proc, spec: RunSpec | None) -> None:
        with self._lock:
            self._n_live -= 1
        if spec is not None and not self._closed:
            proc.join(timeout=1.0)
            self._done.put((spec, RunResult(
                spec.run_id, None, {},
                error=f"worker failed: process {proc.pid} died (exit code {proc.exitcode}) "
                      "during this run")))

    def results(self) -> Iterator[tuple[RunSpec, RunResult]]:
        """Each submitted run with its result, as they finish; this process runs some itself."""
        n_left = self._n_submitted
        finished = False
        try:
            while n_left:
                try:
                    item = self._done.get_nowait()
                except queue.Empty:
                    item = None
                if item is None and (self.run_here or self._n_live == 0):
                    spec = self._take()
                    if spec is not None:
                        item = (spec, execute_run(spec))
                while item is None:   # every remaining run is on a worker
                    try:
                        item = self._done.get(timeout=0.2)
                    except queue.Empty:
                        with self._lock:
                            if self._n_live == 0 and self._todo:
                                break   # the workers are gone: run the rest here
                if item is None:
                    continue
                n_left -= 1
                yield item
            finished = True
        finally:
            if not finished:   # interrupted: do not wait for the runs still going
                self.abort()
            self.close()

    def abort(self) -> None:
        """Stop every worker now (their current runs are lost): ``close`` without waiting for
        results first, which is all ``close`` does anyway, named for the interrupted path."""
        self.close()

    def close(self) -> None:
        """End the workers (those still starting up are stopped) and wait for them."""
        self._closed = True
        with self._lock:
            self._todo.clear()
        for proc in self._procs:
            # After the last result, a live worker is either told to stop already or still
            # importing (it never asked): neither has a run to lose.
            if proc.is_alive():
                proc.terminate()
        for proc in self._procs:
            proc.join()
        # Every worker has exited, so every pipe reads end-of-file and the dispatcher ends;
        # the pipes are closed only then (closing one it waits on would be an error there).
        if self._dispatcher is not None and self._dispatcher is not threading.current_thread():
            self._dispatcher.join()
        for conn in self._conns:
            conn.close()


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
              command: list[str] | None = None, listener: Listener | None = None,
              pool: LocalPool | None = None) -> BatchResult:
    """Run every point × replicate and write the batch folder (resuming an unfinished one).

    Args:
        points: from ``expand_points``.
        replicates: replicates per point (>= 1).
        out_dir: batch folder; created if missing.
        seed: root seed of every run.
        workers: processes computing runs, this one included (``LocalPool``); 1 runs
            everything in this process; None uses every core.
        scheduler: address of a Dask distributed scheduler (replaces ``workers``).
        snapshot_every_h: save field and cell snapshots every this many simulated hours.
        threads: numba threads per worker (1 unless you know the machine is idle).
        force: replace a folder that holds a different batch.
        command: the command line recorded in the manifest.
        listener: progress hooks.
        pool: local processes the caller started earlier (the CLI starts them before it
            resolves the scenarios, so they start up meanwhile); used instead of ``workers``
            and closed when the runs are done.

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
    if (workers is not None or pool is not None) and scheduler:
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
    elif pool is not None:
        executor = pool.submit(todo)
    elif n_workers <= 1:
        executor = _Serial(todo)
    else:
        executor = LocalPool(n_workers, threads).submit(todo)
    # Runs finished now, kept for combining: reading the parts back costs 0.1 s per 30 runs.
    fresh: dict[tuple[str, int], tuple[pd.DataFrame, dict]] = {}
    try:
        try:
            preflight(points, seed)   # while the workers start (and take their first runs)
            layout.prepare(batch_id, force)
            manifest = output.batch_manifest(points, replicates, seed, batch_id,
                                             snapshot_every_h, command)
            layout.write_scenarios(points)
            manifest["executor"] = executor.description
            manifest["status"] = "running"
            layout.write_manifest(manifest)
        except BaseException:
            executor.abort()
            raise
        listener.start(len(specs), len(specs) - len(todo), executor.description)

        failures: list[dict] = []
        for spec, result in executor.results():
            if result.ok:
                layout.write_run(spec.point.point_id, spec.replicate, result.frame,
                                 result.info, result.snapshot)
                fresh[(spec.point.point_id, spec.replicate)] = (
                    result.frame, output.stored_run_info(result.info))
            else:
                failures.append({
                    "scenario": spec.point.scenario.name, "point": spec.point.point_id,
                    "values": spec.point.values, "replicate": spec.replicate,
                    "seed": spec.seed, "error": result.error})
            listener.finished(spec, result)

        done = [(s.point.point_id, s.replicate) for s in specs
                if (s.point.point_id, s.replicate) in fresh
                or layout.part_path(s.point.point_id, s.replicate).exists()]
        frame = layout.combine(done, points, {k: f for k, (f, _) in fresh.items()})
        layout.write_table("timeseries.parquet", frame)
        layout.write_summary(summarise(frame, points))
        manifest.update({
            "status": "complete" if not failures else "incomplete",
            "wall_s_last_invocation": time.perf_counter() - t0,
            "runs": [fresh[k][1] if k in fresh else layout.run_info(*k) for k in done],
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


def local_process_count(workers: int | None) -> int:
    """Processes a local batch computes on: ``workers``, or every core when None."""
    return _cpu_count() if workers is None else int(workers)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# Replicate statistics

def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric metric columns of a batch frame (everything after the identifiers)."""
    import pandas as pd

    start = list(frame.columns).index("zone") + 1
    return [c for c in frame.columns[start:] if pd.api.types.is_numeric_dtype(frame[c])]


def summary_times(times: np.ndarray, every_h: float = SUMMARY_EVERY_H) -> np.ndarray:
    """Recorded times that are multiples of ``every_h`` hours, plus the last one."""
    import numpy as np

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
    import numpy as np
    import pandas as pd
    from scipy.special import stdtrit  # = scipy.stats.t.ppf's numbers, see below

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
        # stdtrit(df, p) is the t quantile scipy.stats.t.ppf evaluates (t._ppf calls it), without
        # importing scipy.stats: 0.6 s on a quiet machine, paid at the end of every batch.
        half = stdtrit(n - 1, 0.975) * out["std"].to_numpy() / np.sqrt(n)
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
