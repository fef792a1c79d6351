"""Kernels added or changed for the 2-thread scaling at 1001² (issue 7): each against its
plain-numpy twin, on 1 and 2 numba threads, and the solvers' in-place use."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from marrow_abm.cells import KINDS, reset_and_add_rates, reset_and_add_rates_numpy
from marrow_abm.kernels import compartments as cp
from marrow_abm.kernels import diffusion as kd

THREADS = sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)})


def _threads(n):
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    return previous


def _table(rng, size=4000, n=600, dtype=np.float64):
    """A lattice of ``size`` voxels with ``n`` cells on distinct voxels (some dead), per-kind
    rates with zeros, and lattice arrays that are 0 except at ``old`` voxels."""
    voxel = rng.choice(size, n, replace=False).astype(np.int64)
    kind = rng.integers(0, len(KINDS), n).astype(np.int8)
    alive = rng.random(n) < 0.9
    rates = np.where(rng.random((len(KINDS), 3)) < 0.5, 0.0, rng.random((len(KINDS), 3)) * 5)
    old = rng.choice(size, 300, replace=False).astype(np.int64)
    values = tuple(np.zeros(size, dtype) for _ in range(3))
    for v in values:
        v[old] = rng.random(old.size)
    return values, old, voxel, kind, alive, rates


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threads", THREADS)
def test_reset_and_add_rates_matches_numpy_twin(dtype, threads):
    rng = np.random.default_rng(7)
    values, old, voxel, kind, alive, rates = _table(rng, dtype=dtype)
    ref = tuple(v.copy() for v in values)
    reset_and_add_rates_numpy(ref, old, voxel, kind, alive, rates)
    previous = _threads(threads)
    try:
        reset_and_add_rates(values, old, voxel, kind, alive, rates)
    finally:
        numba.set_num_threads(previous)
    for got, want in zip(values, ref):
        np.testing.assert_array_equal(got, want)
    # only living cells' voxels with a non-zero rate are non-zero
    nonzero = set(np.flatnonzero(sum(np.abs(v) for v in values)))
    assert nonzero <= set(voxel[alive])


def test_reset_and_add_rates_is_the_full_fill_and_add():
    """Zeroing the old voxels and adding gives the arrays a full fill(0) and add give."""
    rng = np.random.default_rng(8)
    values, old, voxel, kind, alive, rates = _table(rng)
    reset_and_add_rates(values, old, voxel, kind, alive, rates)
    for k, v in enumerate(values):
        want = np.zeros_like(v)
        for code in range(len(KINDS)):
            if rates[code, k] != 0.0:
                want[voxel[(kind == code) & alive]] += rates[code, k]
        np.testing.assert_array_equal(v, want)


@pytest.mark.parametrize("threads", THREADS)
def test_copy_into_matches_twin(threads):
    rng = np.random.default_rng(3)
    src = rng.random((37, 53))
    dst, ref = np.zeros_like(src), np.zeros_like(src)
    previous = _threads(threads)
    try:
        kd.copy_into(dst, src)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(dst, kd.copy_into_ref(ref, src))


def _compartment_grid(shape=(61, 83), seed=5):
    """Marrow cut by sinusoid walls every 9 voxels, some bone: closed compartments."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int8)
    labels[::9, :] = 2
    labels[:, ::11] = 2
    labels[rng.random(shape) < 0.05] = 1
    faces = kd.open_faces(labels)
    return labels, faces, rng


@pytest.mark.parametrize("threads", THREADS)
def test_same_geometry_matches_twin(threads):
    labels, faces, _ = _compartment_grid()
    scratch = cp.cp_work(labels.shape)
    scratch.partition(labels, faces)
    ids, seen = scratch.ids, scratch.faces
    cases = [(labels, faces)]
    changed = labels.copy()
    changed[30, 40] = 1 - changed[30, 40] if changed[30, 40] < 2 else 0
    cases.append((changed, faces))
    other = faces.copy()
    other[-1, -1] ^= kd.WEST
    cases.append((labels, other))
    previous = _threads(threads)
    try:
        got = [cp._same_geometry(lab, fac, ids, seen) for lab, fac in cases]
    finally:
        numba.set_num_threads(previous)
    assert got == [cp._same_geometry_ref(lab, fac, ids, seen) for lab, fac in cases]
    assert got == [True, False, False]


@pytest.mark.parametrize("threads", THREADS)
def test_precondition_copies_the_direction_in_the_same_pass(threads):
    labels, faces, rng = _compartment_grid()
    scratch = cp.cp_work(labels.shape)
    ids, sub, _ = scratch.partition(labels, faces)
    res = np.where(labels == 0, rng.random(labels.shape), 0.0)
    diag = 1.0 + rng.random(labels.shape)
    z = rng.random(labels.shape)
    p = np.full(labels.shape, 7.0)
    part = np.zeros(labels.shape[0])
    previous = _threads(threads)
    try:
        cp._precondition(res, diag, labels, ids, False, z, part, p, False)
        np.testing.assert_array_equal(p, 7.0)                  # untouched without copy_p
        cp._precondition(res, diag, labels, ids, False, z, part, p, True)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(p, z)


@pytest.mark.parametrize("solver", ["compartments", "jacobi"])
@pytest.mark.parametrize("threads", THREADS)
def test_backward_euler_in_place_gives_the_same_bits(solver, threads):
    """``FieldSet`` solves with out = c: the same values as into a separate array."""
    labels, faces, rng = _compartment_grid(seed=9)
    marrow = labels == 0
    c = np.where(marrow, rng.random(labels.shape), 0.0)
    source = np.where(rng.random(labels.shape) < 0.1, 3.0, 0.0)
    uptake = np.where(rng.random(labels.shape) < 0.1, 0.5, 0.0)
    n_sinus = kd.sinusoid_neighbours(labels)
    args = (labels, faces, n_sinus, source, uptake, 2.5, 1.0, 1.0, 360.0, 1e-10, 5000)
    previous = _threads(threads)
    try:
        outs = []
        for in_place in (False, True):
            work = np.zeros((5,) + labels.shape)
            start = c.copy()
            out = start if in_place else np.empty_like(c)
            if solver == "compartments":
                it = cp.backward_euler_solve_cp(start, out, *args, work,
                                                cp.cp_work(labels.shape))
            else:
                it = kd.backward_euler_solve(start, out, *args, work)
            outs.append((out.copy(), it))
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    assert outs[0][1] == outs[1][1]
