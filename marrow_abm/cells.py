"""Structure-of-arrays cell table: one row per cell, one column per attribute. No biology here.

Invariants the rest of the engine relies on:
- at most one cell per marrow voxel (``occupant`` maps flat voxel index -> row, -1 when empty:
  a marrow voxel without a cell is normal haematopoietic tissue, MODEL.md section 2);
- rows ``[0, n)`` are in use; a killed cell stays as a row with ``alive = False`` until
  ``compact()``, so per-step kernels can index rows stably within a step;
- ``compact()`` keeps the surviving rows in their original order (deterministic).

``add`` writes only the base columns and the ones it is given; see the note there.
"""

from __future__ import annotations

from collections.abc import Mapping

import numba
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


# -- kernels (each beside its plain-numpy twin, tested against it) ------------------------------

#: ``claim_voxels`` outcomes.
CLAIMED, OCCUPIED, REPEATED, OUTSIDE = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True)
def claim_voxels(voxels, rows, occupant):
    """Write ``occupant[voxels] = rows`` if every voxel is inside the grid, free, and given once.

    One pass: a voxel whose occupant is already one of ``rows`` was given twice. On any failure
    the voxels claimed so far are released, so ``occupant`` is unchanged.

    Returns:
        ``CLAIMED``, or ``OCCUPIED`` / ``REPEATED`` / ``OUTSIDE`` for the first bad voxel.
    """
    size = occupant.size
    first = rows[0] if rows.size else 0
    for i in range(voxels.size):
        v = voxels[i]
        code = CLAIMED
        if v < 0 or v >= size:
            code = OUTSIDE
        elif occupant[v] >= first and occupant[v] < first + rows.size:
            code = REPEATED
        elif occupant[v] >= 0:
            code = OCCUPIED
        if code != CLAIMED:
            for j in range(i):
                occupant[voxels[j]] = -1
            return code
        occupant[v] = rows[i]
    return CLAIMED


def claim_voxels_numpy(voxels: np.ndarray, rows: np.ndarray, occupant: np.ndarray) -> int:
    """Plain-numpy twin of ``claim_voxels`` (same result; on failure ``occupant`` unchanged).

    When several voxels are bad, reports the problem of the first bad one, as the kernel does.
    """
    size = occupant.size
    outside = (voxels < 0) | (voxels >= size)
    inside = np.where(outside, 0, voxels)
    occupied = ~outside & (occupant[inside] >= 0)
    _, first_seen = np.unique(inside, return_index=True)
    repeated = ~outside & ~occupied
    repeated[first_seen] = False
    # a repeat of an outside or occupied voxel is reported at that voxel's first occurrence
    code = np.where(outside, OUTSIDE, np.where(occupied, OCCUPIED,
                                               np.where(repeated, REPEATED, CLAIMED)))
    bad = np.flatnonzero(code != CLAIMED)
    if bad.size:
        return int(code[bad[0]])
    occupant[voxels] = rows
    return CLAIMED


@numba.njit(cache=True, nogil=True)
def gather_into(values, voxels, out):
    """``out[i] = values[voxels[i]]`` in one pass (a cell reads the field in its voxel)."""
    for i in range(voxels.size):
        out[i] = values[voxels[i]]


def gather_into_numpy(values: np.ndarray, voxels: np.ndarray, out: np.ndarray) -> None:
    """Plain-numpy twin of ``gather_into``."""
    out[:] = values[voxels]


@numba.njit(cache=True, nogil=True)
def gather_many_into(values, voxels, outs):
    """``outs[k][i] = values[k][voxels[i]]`` for every k, in one pass over the cells: each cell's
    voxel is read once for all fields (the ``sense`` phase; ``values`` and ``outs`` are tuples
    of equally typed arrays)."""
    for i in range(voxels.size):
        v = voxels[i]
        for k in range(len(values)):
            outs[k][i] = values[k][v]


def gather_many_into_numpy(values, voxels: np.ndarray, outs) -> None:
    """Plain-numpy twin of ``gather_many_into``."""
    for val, out in zip(values, outs):
        out[:] = val[voxels]


@numba.njit(cache=True, parallel=True)
def reset_and_add_rates(values, old_voxels, voxel, kind, alive, rates):
    """Zero ``values[k]`` at ``old_voxels``, then add ``rates[kind[r], k]`` at the voxel of
    every living row r (the ``secrete`` phase's constant per-kind rates, one array per
    field's source or uptake).

    Why: the lattices are 0 except where cells secreted last step, so zeroing those voxels
    (~3% of a 1001² lattice) replaces filling six whole lattices (48 MB) every step, and one
    pass over the table replaces a mask and a fancy-indexed add per kind and rate.

    Args:
        values: tuple of equally typed flat lattice arrays, written.
        old_voxels: flat voxels, each at most once, outside which every ``values[k]`` is 0.
        voxel, kind, alive: the table's columns; living rows are on distinct voxels.
        rates: float64 (kind codes, len(values)); 0 where a kind has no rate for an array
            (0 + 0 is 0, so skipping it changes nothing).

    Each voxel is written by one iteration of each loop (old voxels distinct, one living
    cell per voxel), so the result does not depend on the thread count.
    """
    for i in numba.prange(old_voxels.size):
        v = old_voxels[i]
        for k in range(len(values)):
            values[k][v] = 0
    for r in numba.prange(voxel.size):
        if alive[r]:
            v = voxel[r]
            c = kind[r]
            for k in range(len(values)):
                x = rates[c, k]
                if x != 0.0:
                    values[k][v] += x


def reset_and_add_rates_numpy(values, old_voxels: np.ndarray, voxel: np.ndarray,
                              kind: np.ndarray, alive: np.ndarray, rates: np.ndarray) -> None:
    """Plain-numpy twin of ``reset_and_add_rates``."""
    for val in values:
        val[old_voxels] = 0
    for k, val in enumerate(values):
        rate = rates[kind, k]
        take = alive & (rate != 0.0)
        val[voxel[take]] += rate[take]


@numba.njit(cache=True, nogil=True)
def rows_of_codes(kind, alive, codes, out_rows, out_counts):
    """The living rows of each kind code in one pass over the table, ascending.

    Args:
        kind, alive: the table's ``kind`` and ``alive`` columns (rows ``[0, n)``).
        codes: (c,) int kind codes, each at most once.
        out_rows: (c, n) int64; row k's first ``out_counts[k]`` entries are written.
        out_counts: (c,) int64, written.
    """
    out_counts[:] = 0
    for r in range(kind.size):
        if not alive[r]:
            continue
        c = kind[r]
        for k in range(codes.size):
            if c == codes[k]:
                out_rows[k, out_counts[k]] = r
                out_counts[k] += 1
                break


def rows_of_codes_numpy(kind: np.ndarray, alive: np.ndarray, codes: np.ndarray,
                        out_rows: np.ndarray, out_counts: np.ndarray) -> None:
    """Plain-numpy twin of ``rows_of_codes``."""
    for k, c in enumerate(codes):
        rows = np.flatnonzero((kind == c) & alive)
        out_counts[k] = rows.size
        out_rows[k, :rows.size] = rows


@numba.njit(cache=True, nogil=True)
def compact_column(col, dead, n):
    """Move the rows of ``col[:n]`` that are not in ``dead`` (sorted row indices, at least one)
    down over the dead ones, in order, in place; slots from the new end on keep their values.

    Rows before the first dead one are not touched; each run of living rows between two dead
    ones is one forward copy (the destination is below the source, so forward is safe).
    """
    # Unsigned indices: numba then skips its negative-index check and the copy vectorises
    # (3x faster than signed indices or slice copies, which allocate for overlapping slices).
    one = numba.uintp(1)
    dst = numba.uintp(dead[0])
    for k in range(dead.size):
        i = numba.uintp(dead[k] + 1)
        stop = numba.uintp(dead[k + 1] if k + 1 < dead.size else n)
        while i < stop:
            col[dst] = col[i]
            dst += one
            i += one


def compact_column_numpy(col: np.ndarray, dead: np.ndarray, n: int) -> None:
    """Plain-numpy twin of ``compact_column``."""
    keep = np.setdiff1d(np.arange(n), dead)
    col[: keep.size] = col[keep]


_WARM: set[np.dtype] = set()


def _warm_compact(dtype: np.dtype) -> None:
    """Compile (or load from numba's cache) ``compact_column`` for a column type when the
    column is declared, so the first compaction inside a timed step does not pay for it."""
    if dtype not in _WARM:
        compact_column(np.zeros(2, dtype=dtype), np.zeros(1, dtype=np.int64), 2)
        _WARM.add(dtype)


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
        #: the value a new cell gets in each declared column it is not given (``add``)
        self._fill: dict[str, object] = {}
        for col in self._cols.values():
            _warm_compact(col.dtype)

    # -- columns -------------------------------------------------------------------------------
    def add_column(self, name: str, dtype, fill=0) -> None:
        """Declare an extra per-cell attribute (e.g. ``opn_at``, ``phase``)."""
        if name in self._cols:
            raise ValueError(f"column {name!r} already exists")
        self._cols[name] = np.full(self._cap, fill, dtype=np.dtype(dtype))
        self._fill[name] = self._cols[name].dtype.type(fill)
        _warm_compact(self._cols[name].dtype)

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

        The base columns and ``attrs`` are written; every other declared column gets the fill
        value it was declared with (``add_column``). A slot reused after ``compact()`` still
        holds a moved-down row's data, which a newborn must never inherit: daughters used to
        start with a dead cell's ``bound`` flag this way.

        Raises:
            ValueError: unknown kind, a voxel already occupied, outside the grid or given
                twice, or an attribute that does not fit (the table is then unchanged).
            KeyError: an attribute that is not a column.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown cell kind {kind!r}; known: {', '.join(KIND_NAMES)}")
        voxels = np.ascontiguousarray(voxels, dtype=np.int64).ravel()
        unknown = [name for name in attrs if name not in self._cols]
        if unknown:
            raise KeyError(f"no column {unknown[0]!r}; add it with add_column")
        start, stop = self.n, self.n + voxels.size
        rows = np.arange(start, stop, dtype=np.int64)
        code = claim_voxels(voxels, rows, self.occupant)
        if code != CLAIMED:
            raise ValueError({OCCUPIED: "voxel already occupied: at most one cell per marrow voxel",
                              REPEATED: "the same voxel was given twice",
                              OUTSIDE: "voxel outside the grid"}[code])
        try:
            self._grow(stop)
            self._cols["kind"][start:stop] = KINDS[kind]
            self._cols["voxel"][start:stop] = voxels
            self._cols["alive"][start:stop] = True
            self._cols["birth_h"][start:stop] = time_h
            for name, fill in self._fill.items():
                if name not in attrs:
                    self._cols[name][start:stop] = fill
            for name, value in attrs.items():
                self._cols[name][start:stop] = value
        except BaseException:
            self.occupant[voxels] = -1     # rows past n are unused: releasing is enough
            raise
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
        """Drop dead rows, keeping survivors in order, and rebuild the occupancy map.

        Rows before the first dead one stay where they are; each later run of living rows moves
        down in one copy per column (``compact_column``). The slots past the new end keep their
        old values; ``add`` overwrites every column of the slots it uses.
        """
        dead = np.flatnonzero(~self._cols["alive"][: self.n])
        if dead.size == 0:
            return
        for col in self._cols.values():
            compact_column(col, dead, self.n)
        self.n -= dead.size
        self.occupant.fill(-1)
        self.occupant[self._cols["voxel"][: self.n]] = np.arange(self.n, dtype=np.int64)

    # -- queries -------------------------------------------------------------------------------
    def rows_of(self, kind: str) -> np.ndarray:
        """Row indices of the living cells of ``kind``."""
        return np.flatnonzero((self["kind"] == KINDS[kind]) & self["alive"])

    def rows_of_kinds(self, kinds: tuple[str, ...]) -> tuple[np.ndarray, ...]:
        """``rows_of`` of each kind, from one pass over the table (``rows_of_codes``)."""
        codes = np.array([KINDS[k] for k in kinds], dtype=np.int64)
        out = np.empty((codes.size, self.n), dtype=np.int64)
        counts = np.empty(codes.size, dtype=np.int64)
        rows_of_codes(self["kind"], self["alive"], codes, out, counts)
        return tuple(out[k, :counts[k]] for k in range(codes.size))

    def count_by_kind(self) -> Mapping[str, int]:
        counts = np.bincount(self["kind"][self["alive"]], minlength=len(KINDS))
        return {name: int(counts[code]) for name, code in KINDS.items()}

    def to_frame(self):
        """The live table as a pandas DataFrame (for notebooks and tests)."""
        import pandas as pd

        df = pd.DataFrame({name: self[name].copy() for name in self._cols})
        df["kind"] = pd.Categorical.from_codes(df["kind"], categories=list(KIND_NAMES))
        return df
