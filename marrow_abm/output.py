"""Batch output folders: every file written whole or not at all, the folder describing its batch.

Layout of ``DIR`` (``docs/outputs.md`` documents every column)::

    manifest.json              the batch: scenarios resolved, sweep, seeds, versions, command,
                               status, per-run timings, failures
    timeseries.parquet         every finished run's records, combined
    summary.csv                mean, sd and 95% CI across replicates per point/zone/metric/time
    scenarios/<point>.toml     each point's resolved scenario (re-runnable on its own)
    runs/<point>/r0000.parquet one part per run; its key-value metadata holds the run's timings
    snapshots/<point>/r0000.npz field and cell snapshots with the geometry (--snapshot-every)

Each file is written to a hidden temporary file in its folder and renamed into place, so a
killed batch leaves finished parts intact and no half-written file under a real name. A part's
existence is what "this run is finished" means on a rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .errors import MarrowError

if TYPE_CHECKING:
    from .batch import Point

DEPENDENCIES = ("numpy", "numba", "scipy", "pandas", "pyarrow", "mesa", "matplotlib",
                "dask", "distributed")
#: What the manifest says this folder is; a folder whose manifest says otherwise is not ours.
MANIFEST_KIND = "marrow-abm batch"
#: Files and folders a batch owns (``--force`` removes only these).
OWNED = ("manifest.json", "timeseries.parquet", "summary.csv", "scenarios", "runs",
         "snapshots", "report")
#: Key of a part's Parquet metadata holding the run's timings and counts (JSON).
RUN_INFO_KEY = b"marrow_abm.run"
_TMP_PREFIX = ".tmp-"


def package_version() -> str:
    """This package's version (``marrow_abm.__version__``, looked up on first use)."""
    from . import __version__

    return __version__


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
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(obj) -> str:
    """Indented JSON of ``obj`` (numpy scalars and paths converted)."""
    return json.dumps(_jsonable(obj), indent=2, ensure_ascii=False) + "\n"


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    The rename is atomic on one file system, so readers (and a rerun after a kill) see either
    the old file, or none, or the whole new one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _run_info_json(info: dict) -> str:
    return json.dumps(_jsonable(info))


def stored_run_info(info: dict) -> dict:
    """A run's info as ``BatchFolder.run_info`` reads it back from its part (JSON types)."""
    return json.loads(_run_info_json(info))


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def batch_identity(points: Sequence[Point], seed: int, snapshot_every_h: float | None) -> str:
    """sha256 naming what a batch computes: its points (resolved digests and swept values),
    root seed and snapshot interval. The replicate count is not part of it: asking for more
    replicates extends a batch."""
    doc = {"seed": int(seed), "snapshot_every_h": snapshot_every_h,
           "points": [[p.point_id, p.scenario.digest(), _jsonable(p.values)] for p in points]}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def check_batch_folder(out_dir: Path, batch_id: str, force: bool) -> None:
    """Refuse an output folder that cannot hold this batch; write nothing.

    Accepted: a missing folder, an empty folder, or one holding this same batch (it resumes).
    A folder holding a different batch, or other files, needs ``force``.

    Raises:
        MarrowError: the path is a file, cannot be created or written, or holds something else.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MarrowError(f"--out {out_dir} is a file, not a folder; choose a folder path")
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise MarrowError(f"--out {out_dir}: {probe} is a file, so the folder cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise MarrowError(f"--out {out_dir}: no permission to write in {probe}")
    if not out_dir.exists() or force:
        return
    entries = [p.name for p in out_dir.iterdir()]
    if not entries:
        return
    manifest = out_dir / "manifest.json"
    try:
        old = json.loads(manifest.read_text())
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or old.get("kind") != MANIFEST_KIND:
        raise MarrowError(f"--out {out_dir} is not empty and holds no marrow-abm batch "
                          f"({', '.join(sorted(entries)[:5])}{', ...' if len(entries) > 5 else ''}"
                          "); choose a new folder, or pass --force to write into it anyway")
    if old.get("batch_id") != batch_id:
        raise MarrowError(f"--out {out_dir} holds a different batch (other scenarios, sweep "
                          "values, seed or snapshot interval); choose another folder, or pass "
                          "--force to replace it")


def batch_manifest(points: Sequence[Point], replicates: int, seed: int, batch_id: str,
                   snapshot_every_h: float | None, command: list[str] | None) -> dict:
    """Everything that identifies a batch: scenarios, sweep, seeds, versions, command line."""
    scenarios: dict[str, dict] = {}
    for p in points:
        sc = p.scenario
        entry = scenarios.setdefault(sc.name, {
            "path": str(sc.path), "chain": [str(c) for c in sc.chain],
            "overrides": [o for o in sc.overrides if not _is_point_override(o, p)],
            "sweep": {}})
        for key, value in p.values.items():
            values = entry["sweep"].setdefault(key, [])
            if value not in values:
                values.append(value)
    return {
        "kind": MANIFEST_KIND,
        "format_version": 1,
        "batch_id": batch_id,
        "package": "marrow-abm",
        "package_version": package_version(),
        "dependencies": dependency_versions(),
        "platform": platform.platform(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else sys.argv,
        "root_seed": int(seed),
        "replicates": int(replicates),
        "seeds": {
            "root_seed": int(seed),
            "replicates": list(range(int(replicates))),
            "derivation": "replicate i of every point draws stream NAME from "
                          "SeedSequence(entropy=root_seed, spawn_key=(i, crc32(NAME)))",
        },
        "snapshot_every_h": snapshot_every_h,
        "scenarios": scenarios,
        "points": [{
            "point": p.point_id, "scenario": p.scenario.name, "index": p.index,
            "values": p.values, "label": p.label, "digest": p.scenario.digest(),
            "scenario_file": f"scenarios/{p.point_id}.toml", "resolved": p.scenario.to_dict(),
            "rules": _rules_in_english(p.scenario),
        } for p in points],
    }


def _rules_in_english(scenario) -> list[str]:
    """The point's signal -> behaviour rules as English sentences (PhysiCell-style read-back)."""
    from .rules import scenario_rules

    return list(scenario_rules(scenario).describe())


def _is_point_override(text: str, point: Point) -> bool:
    return text.partition("=")[0].strip() in point.values


class BatchFolder:
    """Reads and writes the files of one batch folder (layout in the module docstring)."""

    def __init__(self, out_dir: Path):
        self.dir = Path(out_dir)

    def prepare(self, batch_id: str, force: bool) -> None:
        """Create the folder; with ``force`` and a different batch, remove that batch's files;
        remove temporary files an interrupted run left behind."""
        self.dir.mkdir(parents=True, exist_ok=True)
        stored = self.stored_batch_id()
        # Only files of a batch we recognise are removed: a foreign folder keeps its files.
        if force and stored is not None and stored != batch_id:
            for name in OWNED:
                path = self.dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        for tmp in self.dir.rglob(f"{_TMP_PREFIX}*"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)

    def stored_batch_id(self) -> str | None:
        """The ``batch_id`` of the manifest in the folder, None if there is none."""
        try:
            return json.loads((self.dir / "manifest.json").read_text()).get("batch_id")
        except (OSError, ValueError, AttributeError):
            return None

    # -- paths ----------------------------------------------------------------------------
    def part_path(self, point_id: str, replicate: int) -> Path:
        return self.dir / "runs" / point_id / f"r{replicate:04d}.parquet"

    def snapshot_path(self, point_id: str, replicate: int) -> Path:
        return self.dir / "snapshots" / point_id / f"r{replicate:04d}.npz"

    # -- writing --------------------------------------------------------------------------
    def write_manifest(self, manifest: dict) -> None:
        write_bytes_atomic(self.dir / "manifest.json", to_json(manifest).encode())

    def write_scenarios(self, points: Sequence[Point]) -> None:
        for p in points:
            write_bytes_atomic(self.dir / "scenarios" / f"{p.point_id}.toml",
                               p.scenario.to_toml().encode())

    def write_run(self, point_id: str, replicate: int, frame: pd.DataFrame, info: dict,
                  snapshot: bytes | None) -> None:
        """Write one run: its snapshot first, then its part (whose existence marks it done)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if snapshot is not None:
            write_bytes_atomic(self.snapshot_path(point_id, replicate), snapshot)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[RUN_INFO_KEY] = _run_info_json(info).encode()
        table = table.replace_schema_metadata(meta)
        with atomic_path(self.part_path(point_id, replicate)) as tmp:
            pq.write_table(table, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        with atomic_path(self.dir / name) as tmp:
            frame.to_parquet(tmp, index=False)

    def write_summary(self, summary: pd.DataFrame) -> None:
        with atomic_path(self.dir / "summary.csv") as tmp:
            summary.to_csv(tmp, index=False)

    # -- reading --------------------------------------------------------------------------
    def run_info(self, point_id: str, replicate: int) -> dict:
        """A finished run's timings and counts, from its part's metadata."""
        import pyarrow.parquet as pq

        meta = pq.read_schema(self.part_path(point_id, replicate)).metadata or {}
        return json.loads(meta.get(RUN_INFO_KEY, b"{}"))

    def combine(self, runs: Sequence[tuple[str, int]], points: Sequence[Point],
                frames: Mapping[tuple[str, int], pd.DataFrame] | None = None) -> pd.DataFrame:
        """The parts of ``runs`` as one frame, in batch order whatever order they finished in.

        Args:
            runs: ``(point_id, replicate)`` of each run, in batch order.
            points: the batch's points (for the category orders and swept columns).
            frames: records already in memory, by run (the frames just written as parts);
                the other runs are read from their parts. Either gives the same result.
        """
        from .geometry import REPORT_ZONES

        in_memory = frames or {}
        frames = [in_memory[key].copy() if key in in_memory
                  else pd.read_parquet(self.part_path(*key)) for key in runs]
        if not frames:
            return pd.DataFrame(columns=["scenario", "point", "replicate", "seed", "time_h",
                                         "zone"])
        for f in frames:   # categories differ per part; restore them after concatenating
            for col in ("scenario", "point", "zone"):
                f[col] = f[col].astype(str)
        frame = pd.concat(frames, ignore_index=True)
        # Identifier columns first (scenario, point, swept keys, replicate, seed, time_h, zone),
        # then metrics in first-seen order: a metric only some scenarios record is NaN elsewhere.
        sweep_keys = list(dict.fromkeys(k for p in points for k in p.values))
        ids = ["scenario", "point", *sweep_keys, "replicate", "seed", "time_h", "zone"]
        rest = [c for c in frame.columns if c not in ids]
        frame = frame[ids + rest]
        frame["scenario"] = pd.Categorical(frame["scenario"], categories=list(
            dict.fromkeys(p.scenario.name for p in points)))
        frame["point"] = pd.Categorical(frame["point"], categories=[p.point_id for p in points])
        frame["zone"] = pd.Categorical(frame["zone"], categories=list(REPORT_ZONES))
        return frame.reset_index(drop=True)


def read_manifest(out_dir: Path) -> dict:
    """The manifest of a batch folder.

    Raises:
        MarrowError: there is none, or it is not a marrow-abm batch manifest.
    """
    path = Path(out_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise MarrowError(f"{out_dir} holds no batch (no manifest.json); run "
                          "`marrow-abm run SCENARIO --out DIR` first") from None
    except (OSError, ValueError) as exc:
        raise MarrowError(f"{path} cannot be read ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        raise MarrowError(f"{path} is not a marrow-abm batch manifest")
    return manifest
