"""Run output folders: written whole or not at all, each describing its own run.

``DIR/<scenario>/`` holds ``timeseries.parquet`` (the recorder's tidy frame), ``manifest.json``
(resolved scenario, digest, seed, package and dependency versions, command line, geometry
summary, solver choice, CPU time per phase) and ``scenario.toml`` (the resolved scenario, so the
run can be repeated with ``marrow-abm run DIR/<scenario>/scenario.toml``).
Everything is first written to a hidden temporary folder beside the target and renamed into
place, so an interrupted or failed run leaves no partial output.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .errors import MarrowError

DEPENDENCIES = ("numpy", "numba", "scipy", "pandas", "pyarrow", "mesa", "matplotlib")


def dependency_versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on."""
    out = {"python": platform.python_version()}
    for name in DEPENDENCIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def check_output_target(run_dir: Path, digest: str, seed: int, force: bool) -> None:
    """Refuse to replace a folder that holds a different run unless ``force``.

    A folder with the same scenario digest and seed is the same run and is replaced.
    """
    if not run_dir.exists():
        return
    manifest = run_dir / "manifest.json"
    if force:
        return
    try:
        old = json.loads(manifest.read_text())
        same = old.get("scenario_digest") == digest and old.get("seed") == seed
    except (OSError, ValueError):
        same = False
    if not same:
        raise MarrowError(
            f"{run_dir} already holds a different run (other scenario values or seed); "
            "choose another --out folder or pass --force to replace it")


def write_run(run_dir: Path, frame: pd.DataFrame, manifest: dict, scenario_toml: str) -> Path:
    """Write one run's folder atomically; returns the folder."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.tmp-", dir=run_dir.parent))
    try:
        frame.to_parquet(tmp / "timeseries.parquet", index=False)
        (tmp / "manifest.json").write_text(json.dumps(_jsonable(manifest), indent=2,
                                                      ensure_ascii=False) + "\n")
        (tmp / "scenario.toml").write_text(scenario_toml)
        if run_dir.exists():
            trash = run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}")
            os.replace(run_dir, trash)
            os.replace(tmp, run_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


def base_manifest(engine, command: list[str] | None = None) -> dict:
    """Everything that identifies a run: scenario, seed, versions, command, geometry, solvers."""
    sc = engine.scenario
    return {
        "package": "marrow-abm",
        "package_version": __version__,
        "dependencies": dependency_versions(),
        "platform": platform.platform(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else sys.argv,
        "scenario": sc.name,
        "scenario_path": str(sc.path),
        "scenario_chain": [str(p) for p in sc.chain],
        "scenario_digest": sc.digest(),
        "scenario_resolved": sc.to_dict(),
        "seed": engine.seed,
        "replicate": engine.replicate,
        "random_streams": list(engine.streams.names()),
        "geometry": engine.geometry.summary(),
        "fields": engine.fields.info(),
        "phase_order": [name for name, _ in engine.phases],
    }
