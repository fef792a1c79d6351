"""Per-step summaries by zone -> a tidy pandas DataFrame.

One row per recorded time and zone (``all``, ``endosteal``, ``intermediate``, ``central``,
``perivascular``); columns ``scenario, replicate, seed, time_h, zone`` followed by the metrics.
Every metric is documented in ``docs/outputs.md``. The core records zone sizes and field means;
biology modules add theirs (``BiologyModule.metrics``), each a function returning one value per
report zone, usually built with the ``ZoneIndex`` helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .geometry import REPORT_ZONES, Geometry

if TYPE_CHECKING:
    from .engine import Engine

ID_COLUMNS = ("scenario", "replicate", "seed", "time_h", "zone")


class ZoneIndex:
    """Which report zone each marrow voxel belongs to, with per-zone reductions.

    Zones overlap (``all`` holds every marrow voxel, ``perivascular`` overlaps the radial zones),
    so membership is a (n_zones, n_voxels) boolean table rather than one label per voxel.

    Args:
        geometry: the section; zones are fixed for a run.
    """

    def __init__(self, geometry: Geometry):
        masks = geometry.zone_masks()
        self.names: tuple[str, ...] = tuple(REPORT_ZONES)
        # int32 indices where the lattice allows (half the memory of int64: 5.8 MB at 1001²,
        # which keeps the whole model under 200 B per voxel + 100 B per cell, issue 7)
        index = np.int32 if geometry.labels.size < 2**31 else np.int64
        self.voxels: dict[str, np.ndarray] = {z: np.flatnonzero(masks[z].ravel()).astype(index)
                                              for z in self.names}
        self.member = np.stack([masks[z].ravel() for z in self.names])

    def size(self) -> np.ndarray:
        """Marrow voxels per zone."""
        return np.array([v.size for v in self.voxels.values()], dtype=np.float64)

    def count(self, voxels: np.ndarray) -> np.ndarray:
        """Number of the given (cell) voxels in each zone."""
        return self.member[:, voxels].sum(axis=1).astype(np.float64)

    def count_where(self, flat_map: np.ndarray) -> np.ndarray:
        """Number of each zone's voxels where the flat lattice map is non-zero (a count, so
        exact whichever way it is summed). One gather per zone: ``count`` of the map's
        non-zero voxels indexes the (zones, voxels) table with every one of them, ≈ 40 ms per
        record at 1001² for the free-marrow map (~500,000 voxels)."""
        return np.array([np.count_nonzero(flat_map[v]) for v in self.voxels.values()],
                        dtype=np.float64)

    def total(self, voxels: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Sum of per-cell ``values`` over the cells in each zone."""
        return (self.member[:, voxels] * np.asarray(values, dtype=np.float64)).sum(axis=1)

    def cell_mean(self, voxels: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Mean of per-cell ``values`` over the cells in each zone (NaN where a zone has none)."""
        n = self.count(voxels)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, self.total(voxels, values) / np.maximum(n, 1), np.nan)

    def field_mean(self, field: np.ndarray) -> np.ndarray:
        """Mean of a full-grid field over each zone's marrow voxels (NaN for an empty zone)."""
        flat = field.ravel()
        return np.array([flat[v].mean() if v.size else np.nan for v in self.voxels.values()])


class Recorder:
    """Collects per-zone metrics of an engine at record times.

    Args:
        engine: the engine whose state is summarised.
        extra: metric name -> per-zone function, from the biology modules (names must be new).
    """

    def __init__(self, engine: Engine, extra: Mapping[str, Callable[[], np.ndarray]] = ()):
        self.engine = engine
        self.zones: tuple[str, ...] = engine.zones.names
        self.metrics: dict[str, Callable[[], np.ndarray]] = {"n_voxels": engine.zones.size}
        for field in engine.fields.names:
            self.metrics[f"mean_{field}"] = self._mean_field(field)
        for name, fn in dict(extra).items():
            if name in self.metrics or name in ID_COLUMNS:
                raise ValueError(f"metric {name!r} is defined twice")
            self.metrics[name] = fn
        self._rows: list[dict[str, np.ndarray]] = []
        self._times: list[float] = []

    def rebind(self, engine: Engine, extra: Mapping[str, Callable[[], np.ndarray]] = ()
               ) -> Recorder:
        """A recorder of ``engine`` (a copy of this one's, ``Engine.fork``) with the records so
        far; ``extra`` are that engine's module metrics, which must be the ones recorded here.

        Raises:
            ValueError: the metrics differ from this recorder's (the records would not line up).
        """
        new = Recorder(engine, extra)
        if list(new.metrics) != list(self.metrics):
            raise ValueError("the engine's metrics differ from the recorded ones: "
                             f"{sorted(set(new.metrics) ^ set(self.metrics))}")
        # Records are never modified once taken, so the lists are copied, not their arrays.
        new._rows, new._times = list(self._rows), list(self._times)
        return new

    def _mean_field(self, field: str) -> Callable[[], np.ndarray]:
        return lambda: self.engine.zones.field_mean(self.engine.fields.values[field])

    # -- recording -----------------------------------------------------------------------------
    def record(self, time_h: float) -> None:
        """Take one per-zone summary of the current state at ``time_h``."""
        self._times.append(float(time_h))
        self._rows.append({name: np.asarray(fn(), dtype=np.float64) for name, fn in self.metrics.items()})

    @property
    def times(self) -> tuple[float, ...]:
        """Record times so far (h)."""
        return tuple(self._times)

    @property
    def n_records(self) -> int:
        return len(self._times)

    def latest(self) -> tuple[float, dict[str, np.ndarray]] | None:
        """The newest record as (time_h, metric name -> one value per zone), or None."""
        return (self._times[-1], self._rows[-1]) if self._times else None

    def frame(self) -> pd.DataFrame:
        """All records as a tidy DataFrame (rows: time × zone)."""
        eng = self.engine
        n_z, n_t = len(self.zones), len(self._times)
        data: dict[str, object] = {
            "scenario": pd.Categorical([eng.scenario.name] * (n_t * n_z)),
            "replicate": np.full(n_t * n_z, eng.replicate, dtype=np.int32),
            "seed": np.full(n_t * n_z, eng.seed, dtype=np.int64),
            "time_h": np.repeat(np.asarray(self._times, dtype=np.float64), n_z),
            "zone": pd.Categorical(list(self.zones) * n_t, categories=list(self.zones)),
        }
        for name in self.metrics:
            data[name] = (np.concatenate([row[name] for row in self._rows])
                          if n_t else np.empty(0))
        return pd.DataFrame(data)
