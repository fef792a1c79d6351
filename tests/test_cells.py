import numpy as np
import pytest

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
