"""Per-step summaries by zone -> a tidy pandas DataFrame.

One row per recorded time and zone (``all``, ``endosteal``, ``intermediate``, ``central``,
``perivascular``); columns ``scenario, replicate, seed, time_h, zone`` followed by the metrics.
Every metric is documented in ``docs/outputs.md``. Biology issues add metric functions to
``Recorder.metrics``; each returns one value per report zone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .cells import KINDS
from .geometry import REPORT_ZONES

if TYPE_CHECKING:
    from .engine import Engine

ID_COLUMNS = ("scenario", "replicate", "seed", "time_h", "zone")


class Recorder:
    """Collects per-zone metrics of an engine at record times.

    Args:
        engine: the engine whose state is summarised (geometry, cells, fields).
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        geom = engine.geometry
        masks = geom.zone_masks()
        self.zones: tuple[str, ...] = tuple(REPORT_ZONES)
        # Flat voxel indices per zone, computed once: zones are fixed for a run.
        self._zone_voxels = {z: np.flatnonzero(masks[z].ravel()) for z in self.zones}
        # Per-voxel membership table (n_zones, n_voxels) to count cells per zone by indexing.
        self._member = np.stack([masks[z].ravel() for z in self.zones])
        self._rows: list[dict[str, np.ndarray]] = []
        self._times: list[float] = []
        self.metrics: dict[str, Callable[[], np.ndarray]] = {"n_voxels": self._n_voxels}
        for kind in ("blc", "msc"):
            self.metrics[f"n_{kind}"] = self._count_kind(kind)
        for field in engine.fields.names:
            self.metrics[f"mean_{field}"] = self._mean_field(field)

    # -- metric builders (each returns an array with one value per zone) -----------------------
    def _n_voxels(self) -> np.ndarray:
        return np.array([v.size for v in self._zone_voxels.values()], dtype=np.float64)

    def _count_kind(self, kind: str) -> Callable[[], np.ndarray]:
        code = KINDS[kind]

        def count() -> np.ndarray:
            cells = self.engine.cells
            vox = cells["voxel"][(cells["kind"] == code) & cells["alive"]]
            return self._member[:, vox].sum(axis=1).astype(np.float64)

        return count

    def _mean_field(self, field: str) -> Callable[[], np.ndarray]:
        def mean() -> np.ndarray:
            flat = self.engine.fields.values[field].ravel()
            return np.array([flat[v].mean() if v.size else np.nan
                             for v in self._zone_voxels.values()])

        return mean

    # -- recording -----------------------------------------------------------------------------
    def record(self, time_h: float) -> None:
        """Take one per-zone summary of the current state at ``time_h``."""
        self._times.append(float(time_h))
        self._rows.append({name: fn() for name, fn in self.metrics.items()})

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
