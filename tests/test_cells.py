import numpy as np
import pytest

from marrow_abm import cells as C
from marrow_abm.cells import KINDS, CellTable


def test_cells_add_sets_occupancy_and_columns():
    t = CellTable((4, 5), capacity=2)
    rows = t.add("blc", [3, 7, 11], time_h=2.0)
    assert list(rows) == [0, 1, 2]
    assert list(t["kind"]) == [KINDS["blc"]] * 3
    assert t.occupant[7] == 1 and t.occupant[0] == -1
    assert np.all(t["birth_h"] == 2.0)


def test_cells_one_cell_per_voxel():
    t = CellTable((3, 3))
    t.add("msc", [4])
    with pytest.raises(ValueError, match="occupied"):
        t.add("blc", [4])
    with pytest.raises(ValueError, match="twice"):
        t.add("blc", [1, 1])
    with pytest.raises(ValueError, match="unknown cell kind"):
        t.add("osteoclast", [2])


def test_cells_grow_beyond_capacity_keeps_data():
    t = CellTable((100, 100), capacity=16)
    t.add_column("opn_at", np.float64)
    t.add("blc", np.arange(10), opn_at=1.5)
    t.add("msc", np.arange(10, 1000))
    assert len(t) == 1000
    assert np.all(t["opn_at"][:10] == 1.5) and np.all(t["opn_at"][10:] == 0.0)
    assert t.count_by_kind()["msc"] == 990


def test_cells_kill_then_compact_keeps_order_and_remaps():
    t = CellTable((3, 4))
    t.add("blc", [0, 5, 6, 11])
    t.kill(np.array([1, 1, 2]))            # duplicates and repeats are harmless
    assert t.occupant[5] == -1 and t.occupant[6] == -1
    assert len(t) == 4                      # rows stay until compact
    t.compact()
    assert list(t["voxel"]) == [0, 11]
    assert t.occupant[11] == 1 and t.occupant[0] == 0
    t.add("msc", [5])                       # a freed voxel can be reused
    assert t.occupant[5] == 2


def test_cells_rows_of_and_frame():
    t = CellTable((2, 2))
    t.add("blc", [0])
    t.add("msc", [1, 2])
    t.kill(np.array([1]))
    assert list(t.rows_of("msc")) == [2]
    df = t.to_frame()
    assert list(df["kind"].astype(str)) == ["blc", "msc", "msc"]


# -- kernels against their numpy twins --------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_claim_voxels_matches_twin_and_leaves_occupant_unchanged_on_failure(seed):
    rng = np.random.default_rng(seed)
    size = 40
    for _ in range(50):
        occ = np.full(size, -1, dtype=np.int64)
        occ[rng.choice(size, 10, replace=False)] = np.arange(10)
        m = int(rng.integers(0, 12))
        vox = rng.integers(-2 if seed % 2 else 0, size + (2 if seed % 3 == 0 else 0), m)
        rows = np.arange(10, 10 + m, dtype=np.int64)
        a, b = occ.copy(), occ.copy()
        ca = C.claim_voxels(vox, rows, a)
        cb = C.claim_voxels_numpy(vox, rows, b)
        assert ca == cb
        assert np.array_equal(a, b)
        if ca != C.CLAIMED:
            assert np.array_equal(a, occ)


def test_cells_add_rejects_voxels_outside_the_grid_and_bad_attributes_unchanged():
    t = CellTable((3, 3))
    t.add("msc", [4])
    before = t.occupant.copy()
    with pytest.raises(ValueError, match="outside"):
        t.add("blc", [1, 9])
    with pytest.raises(ValueError, match="outside"):
        t.add("blc", [-1])
    with pytest.raises(ValueError, match="twice"):
        t.add("blc", [1, 2, 1])
    with pytest.raises(KeyError, match="no column"):
        t.add("blc", [1], nonsense=1.0)
    t.add_column("x", np.float64)
    with pytest.raises(ValueError):
        t.add("blc", [1, 2], x=np.zeros(3))      # wrong length: nothing claimed
    assert np.array_equal(t.occupant, before) and len(t) == 1
    t.add("blc", [1, 2])                          # the voxels are still free
    assert list(t.occupant[[1, 2]]) == [1, 2]


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int64, np.bool_, np.float64])
def test_compact_column_matches_twin_and_keeps_the_tail(dtype):
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100):
        for _ in range(20):
            dead = np.flatnonzero(rng.random(n) < 0.3)
            if dead.size == 0:
                continue
            col = rng.integers(0, 100, n + 5).astype(dtype)
            a, b = col.copy(), col.copy()
            C.compact_column(a, dead, n)
            C.compact_column_numpy(b, dead, n)
            assert np.array_equal(a, b)
            assert np.array_equal(a[n - dead.size:], col[n - dead.size:])   # tail untouched


def test_compact_is_the_fancy_index_compaction_including_the_tail():
    # compact() must leave exactly what "col[:k] = col[keep]" left, stale tail included,
    # because CellTable.add does not overwrite columns it is not given (module docstring).
    rng = np.random.default_rng(5)
    t = CellTable((30, 30), capacity=16)
    t.add_column("x", np.float64)
    t.add("msc", rng.choice(900, 300, replace=False), x=rng.random(300))
    for _ in range(5):
        t.kill(rng.choice(t.n, 40))
        ref = {name: t._cols[name].copy() for name in t.columns}
        keep = np.flatnonzero(ref["alive"][: t.n])
        for col in ref.values():
            col[: keep.size] = col[keep]
        t.compact()
        assert t.n == keep.size
        for name in t.columns:
            assert np.array_equal(t._cols[name], ref[name]), name
        occ = np.full(900, -1)
        occ[t["voxel"]] = np.arange(t.n)
        assert np.array_equal(t.occupant, occ)
        free = np.setdiff1d(np.arange(900), t["voxel"])
        t.add("blc", rng.choice(free, 20, replace=False))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_into_matches_twin(dtype):
    rng = np.random.default_rng(4)
    values = rng.random(500).astype(dtype)
    vox = rng.integers(0, 500, 300)
    a, b = np.empty(300), np.empty(300)
    C.gather_into(values, vox, a)
    C.gather_into_numpy(values, vox, b)
    assert np.array_equal(a, b) and np.array_equal(a, values[vox].astype(np.float64))


def test_new_cells_get_declared_fill_not_a_dead_slots_values():
    """A slot freed by compact() holds a moved-down row's data; a newborn must start from the
    column's declared fill (daughters once inherited a dead cell's ``bound`` flag this way)."""
    t = CellTable((4, 4), capacity=16)
    t.add_column("bound", np.bool_, fill=False)
    t.add_column("phase", np.int8, fill=1)
    rows = t.add("lsc", np.array([0, 1, 2]), bound=np.array([True, True, True]),
                 phase=np.array([3, 3, 3], dtype=np.int8))
    t.kill(rows[:1])
    t.compact()                       # slot 2 now holds stale copies of row 2's values
    new = t.add("lsc", np.array([5]))
    assert t["bound"][new[0]] == False   # noqa: E712 - numpy bool
    assert t["phase"][new[0]] == 1
    given = t.add("lsc", np.array([6]), phase=2)
    assert t["phase"][given[0]] == 2 and t["bound"][given[0]] == False   # noqa: E712


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_many_into_matches_twin_and_gather_into(dtype):
    rng = np.random.default_rng(6)
    values = tuple(rng.random(500).astype(dtype) for _ in range(3))
    vox = rng.integers(0, 500, 300)
    a = tuple(np.empty(300) for _ in range(3))
    b = tuple(np.empty(300) for _ in range(3))
    C.gather_many_into(values, vox, a)
    C.gather_many_into_numpy(values, vox, b)
    for val, x, y in zip(values, a, b):
        one = np.empty(300)
        C.gather_into(val, vox, one)
        assert np.array_equal(x, y) and np.array_equal(x, one)


def test_rows_of_codes_matches_twin_and_rows_of():
    rng = np.random.default_rng(8)
    t = CellTable((30, 30))
    vox = rng.choice(900, 600, replace=False)
    for k, part in zip(("blc", "lsc", "blast", "msc", "lsc"), np.array_split(vox, 5)):
        t.add(k, part)
    t.kill(rng.choice(600, 50, replace=False))
    codes = np.array([KINDS["lsc"], KINDS["blast"], KINDS["blc"], KINDS["mk"]])
    got, twin = np.empty((4, t.n), np.int64), np.full((4, t.n), -7, np.int64)
    ng, nt = np.empty(4, np.int64), np.empty(4, np.int64)
    C.rows_of_codes(t["kind"], t["alive"], codes, got, ng)
    C.rows_of_codes_numpy(t["kind"], t["alive"], codes, twin, nt)
    assert np.array_equal(ng, nt) and ng[3] == 0
    for k in range(4):
        assert np.array_equal(got[k, :ng[k]], twin[k, :nt[k]])
    kinds = ("lsc", "blast", "blc", "mk")
    for kind, rows in zip(kinds, t.rows_of_kinds(kinds)):
        assert np.array_equal(rows, t.rows_of(kind))
