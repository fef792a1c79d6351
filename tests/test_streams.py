import numpy as np

from marrow_abm.streams import Streams


def test_streams_same_seed_same_draws():
    a, b = Streams(7), Streams(7)
    assert np.array_equal(a["x"].random(5), b["x"].random(5))


def test_streams_independent_of_first_use_order():
    a, b = Streams(7), Streams(7)
    a["geometry"].random(3)           # a uses another stream first, and draws from it
    xa = a["placement.blc"].random(5)
    xb = b["placement.blc"].random(5)
    assert np.array_equal(xa, xb)


def test_streams_differ_by_name_seed_and_replicate():
    base = Streams(7)["x"].random(4)
    assert not np.array_equal(base, Streams(7)["y"].random(4))
    assert not np.array_equal(base, Streams(8)["x"].random(4))
    assert not np.array_equal(base, Streams(7, replicate=1)["x"].random(4))


def test_streams_names_lists_used_streams():
    s = Streams(1)
    s["b"], s["a"]
    assert s.names() == ("a", "b")
