"""Structure-of-arrays cell table: one row per cell, one column per attribute. No biology here.

Invariants the rest of the engine relies on:
- at most one cell per marrow voxel (``occupant`` maps flat voxel index -> row, -1 when empty:
  a marrow voxel without a cell is normal haematopoietic tissue, MODEL.md section 2);
- rows ``[0, n)`` are in use; a killed cell stays as a row with ``alive = False`` until
  ``compact()``, so per-step kernels can index rows stably within a step;
- ``compact()`` keeps the surviving rows in their original order (deterministic).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Cell kinds and their integer codes. Later biology adds to the vocabulary, never renumbers
#: (codes are stored in outputs and snapshots).
KINDS: dict[str, int] = {"blc": 0, "msc": 1, "lsc": 2, "blast": 3, "mkp": 4, "mk": 5}
KIND_NAMES: tuple[str, ...] = tuple(sorted(KINDS, key=KINDS.get))

_BASE_COLUMNS: dict[str, np.dtype] = {
    "kind": np.dtype(np.int8),
    "voxel": np.dtype(np.int64),   # flat index into the (ny, nx) grid
    "alive": np.dtype(np.bool_),
    "birth_h": np.dtype(np.float64),
}


class CellTable:
    """Cells as parallel numpy arrays with an occupancy map of the lattice.

    Args:
        shape: (ny, nx) of the lattice.
        capacity: initial number of rows allocated (grows by doubling).
    """

    def __init__(self, shape: tuple[int, int], capacity: int = 1024):
        self.shape = (int(shape[0]), int(shape[1]))
        self.n = 0
        self._cap = max(int(capacity), 16)
        self._cols: dict[str, np.ndarray] = {
            name: np.zeros(self._cap, dtype=dt) for name, dt in _BASE_COLUMNS.items()
        }
        self.occupant = np.full(self.shape[0] * self.shape[1], -1, dtype=np.int64)

    # -- columns -------------------------------------------------------------------------------
    def add_column(self, name: str, dtype, fill=0) -> None:
        """Declare an extra per-cell attribute (e.g. ``opn_at``, ``phase``)."""
        if name in self._cols:
            raise ValueError(f"column {name!r} already exists")
        self._cols[name] = np.full(self._cap, fill, dtype=np.dtype(dtype))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self._cols)

    def __getitem__(self, name: str) -> np.ndarray:
        """A view of the live rows ``[0, n)`` of a column (writes go to the table)."""
        return self._cols[name][: self.n]

    def __len__(self) -> int:
        return self.n

    # -- add / kill / compact ------------------------------------------------------------------
    def _grow(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = self._cap
        while cap < need:
            cap *= 2
        for name, col in self._cols.items():
            new = np.zeros(cap, dtype=col.dtype)
            new[: self.n] = col[: self.n]
            self._cols[name] = new
        self._cap = cap

    def add(self, kind: str, voxels: np.ndarray, time_h: float = 0.0,
            **attrs: np.ndarray | float) -> np.ndarray:
        """Add cells of one kind on the given flat voxel indices; returns their row indices.

        Raises:
            ValueError: unknown kind, a voxel already occupied, or a voxel given twice.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown cell kind {kind!r}; known: {', '.join(KIND_NAMES)}")
        voxels = np.asarray(voxels, dtype=np.int64).ravel()
        if voxels.size and (self.occupant[voxels] >= 0).any():
            raise ValueError("voxel already occupied: at most one cell per marrow voxel")
        if np.unique(voxels).size != voxels.size:
            raise ValueError("the same voxel was given twice")
        start, stop = self.n, self.n + voxels.size
        self._grow(stop)
        rows = np.arange(start, stop, dtype=np.int64)
        self._cols["kind"][start:stop] = KINDS[kind]
        self._cols["voxel"][start:stop] = voxels
        self._cols["alive"][start:stop] = True
        self._cols["birth_h"][start:stop] = time_h
        for name, value in attrs.items():
            self._cols[name][start:stop] = value
        self.occupant[voxels] = rows
        self.n = stop
        return rows

    def kill(self, rows: np.ndarray) -> None:
        """Mark cells dead and free their voxels (rows stay until ``compact``)."""
        rows = np.asarray(rows, dtype=np.int64)
        alive = self._cols["alive"]
        rows = rows[alive[rows]]
        alive[rows] = False
        self.occupant[self._cols["voxel"][rows]] = -1

    def compact(self) -> None:
        """Drop dead rows, keeping survivors in order, and rebuild the occupancy map."""
        keep = np.flatnonzero(self._cols["alive"][: self.n])
        if keep.size == self.n:
            return
        for col in self._cols.values():
            col[: keep.size] = col[keep]
        self.n = keep.size
        self.occupant[:] = -1
        self.occupant[self._cols["voxel"][: self.n]] = np.arange(self.n, dtype=np.int64)

    # -- queries -------------------------------------------------------------------------------
    def rows_of(self, kind: str) -> np.ndarray:
        """Row indices of the living cells of ``kind``."""
        return np.flatnonzero((self["kind"] == KINDS[kind]) & self["alive"])

    def count_by_kind(self) -> Mapping[str, int]:
        counts = np.bincount(self["kind"][self["alive"]], minlength=len(KINDS))
        return {name: int(counts[code]) for name, code in KINDS.items()}

    def to_frame(self):
        """The live table as a pandas DataFrame (for notebooks and tests)."""
        import pandas as pd

        df = pd.DataFrame({name: self[name].copy() for name in self._cols})
        df["kind"] = pd.Categorical.from_codes(df["kind"], categories=list(KIND_NAMES))
        return df
