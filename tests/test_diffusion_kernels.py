"""Diffusion kernels against their plain-numpy twins, and the invariants each must keep."""

import numba
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from marrow_abm.kernels import diffusion as kern
from marrow_abm.kernels import multigrid as mg

DTYPES = [np.float64, np.float32]
# Same operations in the same order; float32 differs only by the rounding of the twin's
# float32 temporaries against numba's, so a few ulps after several steps.
RTOL = {np.float64: 1e-12, np.float32: 2e-5}


def _random_problem(shape=(37, 53), dtype=np.float64, seed=0, p_marrow=0.7):
    rng = np.random.default_rng(seed)
    u = rng.random(shape)
    labels = np.where(u < p_marrow, 0, np.where(u < p_marrow + 0.15, 1, 2)).astype(np.int8)
    marrow = labels == 0
    c = np.where(marrow, rng.random(shape) * 3.0, 0.0).astype(dtype)
    source = rng.random(shape) * 2.0
    uptake = rng.random(shape) * 0.5
    return labels, c, source, uptake


def _coefficients(labels, source, uptake, h, dtype, decay=0.7, clearance=1.3):
    retain = np.empty(labels.shape, dtype)
    gain = np.empty(labels.shape, dtype)
    kern.reaction_coefficients(labels, kern.sinusoid_neighbours(labels), source, uptake,
                               decay, clearance, h, retain, gain)
    return retain, gain


def _conserving(labels, dtype):
    """Coefficients with no source and no loss: pure diffusion."""
    m = labels == 0
    return m.astype(dtype), np.zeros(labels.shape, dtype)


# ------------------------------------------------------------------------------------------
def test_open_faces_pairs_are_symmetric():
    labels, *_ = _random_problem()
    f = kern.open_faces(labels)
    assert np.array_equal((f[:, 1:] & kern.WEST) != 0, (f[:, :-1] & kern.EAST) != 0)
    assert np.array_equal((f[1:, :] & kern.NORTH) != 0, (f[:-1, :] & kern.SOUTH) != 0)
    assert not f[labels != 0].any()
    assert not (f[:, 0] & kern.WEST).any() and not (f[-1] & kern.SOUTH).any()


def test_sinusoid_neighbours_counts_four_neighbours():
    labels = np.zeros((3, 3), np.int8)
    labels[0, 1] = labels[1, 0] = labels[1, 2] = 2
    labels[2, 1] = 1
    n = kern.sinusoid_neighbours(labels)
    assert n[1, 1] == 3 and n[0, 0] == 2 and n[2, 2] == 1 and n[0, 1] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_reaction_coefficients_match_ref(dtype):
    labels, _, source, uptake = _random_problem(dtype=dtype)
    uptake[0, :5] = 0.0                          # lambda = 0 path (with decay 0 below)
    ns = kern.sinusoid_neighbours(labels)
    for decay, clearance in [(0.7, 1.3), (0.0, 0.0)]:
        a, b = (np.empty(labels.shape, dtype) for _ in range(2))
        a_ref, b_ref = (np.empty(labels.shape, dtype) for _ in range(2))
        kern.reaction_coefficients(labels, ns, source, uptake, decay, clearance, 0.25, a, b)
        kern.reaction_coefficients_ref(labels, ns, source, uptake, decay, clearance, 0.25,
                                       a_ref, b_ref)
        np.testing.assert_allclose(a, a_ref, rtol=RTOL[dtype], atol=0)
        np.testing.assert_allclose(b, b_ref, rtol=RTOL[dtype], atol=0)
        assert np.all(a[labels != 0] == 0) and np.all(b[labels != 0] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_steps", [1, 3, 8])
def test_ftcs_steps_match_ref(dtype, n_steps):
    labels, c, source, uptake = _random_problem(dtype=dtype, seed=n_steps)
    faces = kern.open_faces(labels)
    retain, gain = _coefficients(labels, source, uptake, 0.01, dtype)
    r = dtype(0.23)
    out = np.empty_like(c)
    ref = np.empty_like(c)
    kern.ftcs_steps(c, out, kern.open_face_count(faces), retain, gain, r, n_steps)
    kern.ftcs_steps_ref(c, ref, kern.open_face_count(faces), retain, gain, r, n_steps)
    np.testing.assert_allclose(out, ref, rtol=RTOL[dtype], atol=1e-30)
    assert out.dtype == dtype


@pytest.mark.parametrize("shape", [(1, 9), (7, 1), (2, 2), (5, 3)])
def test_ftcs_steps_match_ref_on_degenerate_shapes(shape):
    labels, c, source, uptake = _random_problem(shape=shape, p_marrow=0.9)
    n_open = kern.open_face_count(kern.open_faces(labels))
    retain, gain = _coefficients(labels, source, uptake, 0.01, np.float64)
    out, ref = np.empty_like(c), np.empty_like(c)
    kern.ftcs_steps(c, out, n_open, retain, gain, 0.25, 4)
    kern.ftcs_steps_ref(c, ref, n_open, retain, gain, 0.25, 4)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-300)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_kernels_are_bitwise_independent_of_thread_count():
    labels, c, source, uptake = _random_problem(shape=(97, 61))
    faces = kern.open_faces(labels)
    ns = kern.sinusoid_neighbours(labels)
    retain, gain = _coefficients(labels, source, uptake, 0.01, np.float64)
    plan = kern.lod_plan(faces, 40.0)
    results = []
    previous = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            f, lod, be = (np.empty_like(c) for _ in range(3))
            kern.ftcs_steps(c, f, kern.open_face_count(faces), retain, gain, 0.2, 3)
            kern.lod_step(c, lod, retain, gain, 40.0, *plan)
            kern.backward_euler_solve(c, be, labels, faces, ns, source, uptake, 0.7, 1.3, 1.0,
                                      40.0, 1e-10, 1000, np.empty((5,) + c.shape))
            results.append((f, lod, be))
    finally:
        numba.set_num_threads(previous)
    for one, two in zip(*results):
        assert np.array_equal(one, two)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lod_factor_matches_ref(dtype):
    labels, *_ = _random_problem()
    faces = kern.open_faces(labels)
    got = [np.empty(labels.shape, dtype) for _ in range(2)]
    ref = [np.empty(labels.shape, dtype) for _ in range(2)]
    kern.lod_factor(faces, 57.0, *got)
    kern.lod_factor_ref(faces, 57.0, *ref)
    for g, e in zip(got, ref):
        np.testing.assert_allclose(g, e, rtol=RTOL[dtype])
        assert np.all((g > 0) & (g <= 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_lod_step_matches_ref(dtype):
    labels, c, source, uptake = _random_problem(dtype=dtype, seed=3)
    faces = kern.open_faces(labels)
    retain, gain = _coefficients(labels, source, uptake, 1.0, dtype)
    r = dtype(36.0)
    plan = kern.lod_plan(faces, r, dtype)
    out, ref = np.empty_like(c), np.empty_like(c)
    kern.lod_step(c, out, retain, gain, r, *plan)
    kern.lod_step_ref(c, ref, retain, gain, r, *plan)
    np.testing.assert_allclose(out, ref, rtol=RTOL[dtype] * 10, atol=1e-30)
    inplace = c.copy()
    kern.lod_step(inplace, inplace, retain, gain, r, *plan)
    assert np.array_equal(inplace, out)


@pytest.mark.parametrize("shape", [(1, 9), (7, 1), (2, 2), (5, 3), (17, 5), (33, 6), (16, 4),
                                   (48, 13)])
def test_lod_step_matches_ref_on_degenerate_shapes(shape):
    # one row, one column, widths that are not a multiple of the 4 vector lanes, partial and
    # single bands (16 rows each), and no upper half at all (fewer than two bands)
    labels, c, source, uptake = _random_problem(shape=shape, p_marrow=0.9, seed=sum(shape))
    faces = kern.open_faces(labels)
    retain, gain = _coefficients(labels, source, uptake, 1.0, np.float64)
    plan = kern.lod_plan(faces, 36.0)
    out, ref = np.empty_like(c), np.empty_like(c)
    kern.lod_step(c, out, retain, gain, 36.0, *plan)
    kern.lod_step_ref(c, ref, retain, gain, 36.0, *plan)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-300)
    assert np.all(out[labels != 0] == 0)


def _lod_line_matrix(faces, r, axis):
    """(I - r L) along one axis over all voxels (non-marrow voxels are identity rows)."""
    ny, nx = faces.shape
    idx = np.arange(ny * nx).reshape(ny, nx)
    f = faces.ravel()
    bits = ((kern.WEST, -1), (kern.EAST, 1)) if axis == 1 else ((kern.NORTH, -nx), (kern.SOUTH, nx))
    rows, cols, vals = [], [], []
    for k in idx.ravel():
        diag = 1.0
        for bit, step in bits:
            if f[k] & bit:
                diag += r
                rows.append(k); cols.append(k + step); vals.append(-r)
        rows.append(k); cols.append(k); vals.append(diag)
    return sp.csc_matrix((vals, (rows, cols)), shape=(ny * nx, ny * nx))


@pytest.mark.parametrize("shape", [(37, 53), (70, 21)])
def test_lod_step_solves_the_two_tridiagonal_systems(shape):
    # an oracle that shares nothing with the plan: x then y implicit solves by scipy
    labels, c, source, uptake = _random_problem(shape=shape, seed=11)
    faces = kern.open_faces(labels)
    retain, gain = _coefficients(labels, source, uptake, 1.0, np.float64)
    r = 360.0
    out = np.empty_like(c)
    kern.lod_step(c, out, retain, gain, r, *kern.lod_plan(faces, r))
    half = spla.spsolve(_lod_line_matrix(faces, r, 1), (retain * c + gain).ravel())
    exact = spla.spsolve(_lod_line_matrix(faces, r, 0), half).reshape(shape)
    np.testing.assert_allclose(out, exact, rtol=1e-9, atol=1e-12 * np.abs(exact).max())


@numba.njit
def _x_band(u, ivx, tile, su, nxp, r):
    kern.lod_x_band(u, ivx, tile, su, nxp, r)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lod_x_band_matches_a_plain_thomas_sweep(dtype):
    # the hand-vectorised x solve alone, on a row stride that is neither the width nor a
    # multiple of the vector length; the padding columns of each row must stay untouched
    lines, nx, su = kern.LOD_LINES, 12, 15
    labels, *_ = _random_problem(shape=(lines, nx), seed=12)
    inv_x = np.empty((lines, nx), dtype)
    kern.lod_factor(kern.open_faces(labels), 7.0, inv_x, np.empty_like(inv_x))
    signed = np.where((kern.open_faces(labels) & kern.WEST) != 0, -inv_x, inv_x)
    rng = np.random.default_rng(13)
    u = rng.random((lines, su)).astype(dtype)
    expected = u[:, :nx].astype(np.float64)
    p, w = np.abs(signed).astype(np.float64), np.where(signed < 0, 7.0, 0.0)
    expected[:, 0] *= p[:, 0]
    for j in range(1, nx):
        expected[:, j] = (expected[:, j] + w[:, j] * expected[:, j - 1]) * p[:, j]
    for j in range(nx - 2, -1, -1):
        expected[:, j] += w[:, j + 1] * p[:, j] * expected[:, j + 1]
    got = u.copy()
    _x_band(got.reshape(-1), np.ascontiguousarray(signed.T).reshape(-1),
            np.empty(nx * lines, dtype), su, nx, dtype(7.0))
    np.testing.assert_allclose(got[:, :nx], expected, rtol=RTOL[dtype] * 10)
    assert np.array_equal(got[:, nx:], u[:, nx:])


def _be_matrix(labels, faces, ns, uptake, decay, clearance, dt, r):
    """The backward-Euler system as a scipy sparse matrix (marrow voxels only)."""
    ny, nx = labels.shape
    idx = np.flatnonzero(labels.ravel() == 0)
    pos = -np.ones(ny * nx, np.int64)
    pos[idx] = np.arange(idx.size)
    f = faces.ravel()
    lam = decay + clearance * ns.ravel() + uptake.ravel()
    rows, cols, vals = [], [], []
    for k in idx:
        n_open = 0
        for bit, nb in ((kern.WEST, k - 1), (kern.EAST, k + 1), (kern.NORTH, k - nx),
                        (kern.SOUTH, k + nx)):
            if f[k] & bit:
                n_open += 1
                rows.append(pos[k]); cols.append(pos[nb]); vals.append(-r)
        rows.append(pos[k]); cols.append(pos[k]); vals.append(1 + dt * lam[k] + r * n_open)
    return sp.csr_matrix((vals, (rows, cols)), shape=(idx.size, idx.size)), idx


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_euler_solve_matches_ref_and_direct_solve(dtype):
    labels, c, source, uptake = _random_problem(dtype=dtype, seed=4)
    faces, ns = kern.open_faces(labels), kern.sinusoid_neighbours(labels)
    args = (labels, faces, ns, source, uptake, 0.7, 1.3, 1.0, 36.0)
    tol = 1e-10 if dtype is np.float64 else 1e-5
    out, ref = np.empty_like(c), np.empty_like(c)
    n_it = kern.backward_euler_solve(c, out, *args, tol, 2000, np.empty((5,) + c.shape, dtype))
    n_ref = kern.backward_euler_solve_ref(c, ref, *args, tol, 2000)
    assert 0 < n_it < 2000 and abs(n_it - n_ref) <= 2
    A, idx = _be_matrix(labels, faces, ns, uptake, 0.7, 1.3, 1.0, 36.0)
    exact = spla.spsolve(A.tocsc(), c.ravel()[idx].astype(np.float64) + source.ravel()[idx])
    scale = np.abs(exact).max()
    err_tol = 1e-8 if dtype is np.float64 else 1e-4
    np.testing.assert_allclose(out.ravel()[idx], exact, atol=err_tol * scale)
    np.testing.assert_allclose(ref.ravel()[idx], exact, atol=err_tol * scale)
    assert np.all(out[labels != 0] == 0)


# ------------------------------------------------------------------------------------------
# backward Euler with the multigrid preconditioner
def _mg_problem(shape, seed, r=360.0):
    labels, _, _, uptake = _random_problem(shape=shape, seed=seed)
    faces = kern.open_faces(labels)
    f = faces.astype(np.int64)
    n_open = (f & 1) + ((f >> 1) & 1) + ((f >> 2) & 1) + ((f >> 3) & 1)
    lam = 0.7 + 1.3 * kern.sinusoid_neighbours(labels) + uptake
    diag = np.where(labels == 0, 1.0 + lam + r * n_open, 1.0)
    return labels, faces, diag


def _vcycle(labels, faces, diag, res, r=360.0):
    levels, op, vec, mask = mg.mg_work(labels.shape)
    inv_d, z, part = np.empty_like(diag), np.empty_like(diag), np.empty(labels.shape[0])
    mg.mg_setup(diag, inv_d, labels, faces, r, levels, op, vec, mask)
    rz = mg.mg_vcycle(res, diag, inv_d, labels, r, levels, op, vec, mask, z, part)
    return z, rz


def test_mg_plan_halves_until_a_few_hundred_voxels():
    plan = mg.mg_plan((1001, 1001))
    assert [tuple(row[:2]) for row in plan] == [(501, 501), (251, 251), (126, 126), (63, 63),
                                                (32, 32), (16, 16)]
    assert plan[-1, 0] * plan[-1, 1] <= mg.MG_COARSEST_VOXELS < plan[-2, 0] * plan[-2, 1]
    assert len(mg.mg_plan((12, 30))) == 0


@pytest.mark.parametrize("shape", [(37, 53), (145, 145), (6, 7)])
def test_mg_vcycle_matches_ref(shape):
    labels, faces, diag = _mg_problem(shape, seed=11)
    res = np.where(labels == 0, np.random.default_rng(12).standard_normal(shape), 0.0)
    z, rz = _vcycle(labels, faces, diag, res)
    ref = mg.mg_vcycle_ref(res, mg.mg_levels_ref(diag, labels, faces, 360.0))
    # coarse levels are float32 in both; numba and numpy round their sums differently
    np.testing.assert_allclose(z, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    assert rz == pytest.approx(float(np.sum(res * ref)), rel=1e-6)
    assert np.all(z[labels != 0] == 0)


def test_mg_preconditioner_is_symmetric_positive_definite():
    labels, faces, diag = _mg_problem((61, 45), seed=13)
    rng = np.random.default_rng(14)
    u, v = (np.where(labels == 0, rng.standard_normal(labels.shape), 0.0) for _ in range(2))
    mu, _ = _vcycle(labels, faces, diag, u)
    mv, _ = _vcycle(labels, faces, diag, v)
    scale = np.sqrt(np.sum(u * mu) * np.sum(v * mv))
    assert abs(np.sum(v * mu) - np.sum(u * mv)) < 1e-6 * scale
    for w, mw in ((u, mu), (v, mv), (u - v, mu - mv)):
        assert np.sum(w * mw) > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_euler_mg_matches_ref_jacobi_and_direct_solve(dtype):
    labels, c, source, uptake = _random_problem(shape=(57, 71), dtype=dtype, seed=15)
    faces, ns = kern.open_faces(labels), kern.sinusoid_neighbours(labels)
    args = (labels, faces, ns, source, uptake, 0.7, 1.3, 1.0, 360.0)
    tol = 1e-10 if dtype is np.float64 else 1e-5
    out, ref, jac = np.empty_like(c), np.empty_like(c), np.empty_like(c)
    n_mg = mg.backward_euler_solve_mg(c, out, *args, tol, 2000,
                                      np.empty((5,) + c.shape, dtype), mg.mg_work(c.shape))
    n_ref = mg.backward_euler_solve_mg_ref(c, ref, *args, tol, 2000)
    n_jac = kern.backward_euler_solve(c, jac, *args, tol, 2000,
                                      np.empty((5,) + c.shape, dtype))
    assert 0 < n_mg and abs(n_mg - n_ref) <= 2
    # the point of the preconditioner: far fewer iterations than Jacobi at r = 360
    assert n_mg * 3 < n_jac
    A, idx = _be_matrix(labels, faces, ns, uptake, 0.7, 1.3, 1.0, 360.0)
    exact = spla.spsolve(A.tocsc(), c.ravel()[idx].astype(np.float64) + source.ravel()[idx])
    scale = np.abs(exact).max()
    err_tol = 1e-8 if dtype is np.float64 else 1e-4
    for got in (out, ref, jac):
        np.testing.assert_allclose(got.ravel()[idx], exact, atol=err_tol * scale)
    assert np.all(out[labels != 0] == 0)


def test_backward_euler_mg_is_bitwise_independent_of_thread_count():
    labels, c, source, uptake = _random_problem(shape=(203, 97), seed=16)
    faces, ns = kern.open_faces(labels), kern.sinusoid_neighbours(labels)
    outs = []
    previous = numba.get_num_threads()
    try:
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            out = np.empty_like(c)
            mg.backward_euler_solve_mg(c, out, labels, faces, ns, source, uptake, 0.7, 1.3,
                                       1.0, 360.0, 1e-10, 2000, np.empty((5,) + c.shape),
                                       mg.mg_work(c.shape))
            outs.append(out)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_backward_euler_mg_conserves_mass_without_sources_or_sinks():
    labels, c, *_ = _random_problem(shape=(41, 59), seed=17)
    zero = np.zeros(c.shape)
    out = np.empty_like(c)
    mg.backward_euler_solve_mg(c, out, labels, kern.open_faces(labels),
                               kern.sinusoid_neighbours(labels), zero, zero, 0.0, 0.0, 1.0,
                               360.0, 1e-12, 5000, np.empty((5,) + c.shape),
                               mg.mg_work(c.shape))
    assert out.sum() == pytest.approx(c.sum(), rel=1e-9)


# ------------------------------------------------------------------------------------------
# invariants
def test_ftcs_conserves_mass_without_sources_or_sinks():
    labels, c, *_ = _random_problem(shape=(41, 59), seed=5)
    retain, gain = _conserving(labels, np.float64)
    out = np.empty_like(c)
    kern.ftcs_steps(c, out, kern.open_face_count(kern.open_faces(labels)), retain, gain, 0.25, 8)
    assert out.sum() == pytest.approx(c.sum(), rel=1e-13)
    assert np.all(out[labels != 0] == 0)


def test_lod_conserves_mass_without_sources_or_sinks():
    labels, c, *_ = _random_problem(shape=(41, 59), seed=6)
    faces = kern.open_faces(labels)
    retain, gain = _conserving(labels, np.float64)
    out = np.empty_like(c)
    kern.lod_step(c, out, retain, gain, 360.0, *kern.lod_plan(faces, 360.0))
    assert out.sum() == pytest.approx(c.sum(), rel=1e-12)


def test_backward_euler_conserves_mass_without_sources_or_sinks():
    labels, c, *_ = _random_problem(shape=(41, 59), seed=7)
    zero = np.zeros(c.shape)
    out = np.empty_like(c)
    kern.backward_euler_solve(c, out, labels, kern.open_faces(labels),
                              kern.sinusoid_neighbours(labels), zero, zero, 0.0, 0.0, 1.0,
                              360.0, 1e-12, 5000, np.empty((5,) + c.shape))
    assert out.sum() == pytest.approx(c.sum(), rel=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_stay_finite_and_non_negative_under_extreme_rates(dtype):
    labels, c, *_ = _random_problem(shape=(33, 47), dtype=dtype, seed=8)
    rng = np.random.default_rng(9)
    # sources and uptakes spanning 12 orders of magnitude, sparse spikes included
    source = 10.0 ** rng.uniform(-6, 6, c.shape) * (rng.random(c.shape) < 0.5)
    uptake = 10.0 ** rng.uniform(-6, 6, c.shape) * (rng.random(c.shape) < 0.5)
    faces, ns = kern.open_faces(labels), kern.sinusoid_neighbours(labels)
    retain, gain = _coefficients(labels, source, uptake, 1.0, dtype, decay=0.0)
    r_big = dtype(1e6)
    outs = [np.empty_like(c) for _ in range(3)]
    kern.ftcs_steps(c, outs[0], kern.open_face_count(faces), retain, gain, dtype(0.25), 8)
    kern.lod_step(c, outs[1], retain, gain, r_big, *kern.lod_plan(faces, r_big, dtype))
    kern.backward_euler_solve(c, outs[2], labels, faces, ns, source, uptake, 0.0, 0.0, 1.0,
                              1e6, 1e-6, 3000, np.empty((5,) + c.shape, dtype))
    outs.append(np.empty_like(c))
    n_mg = mg.backward_euler_solve_mg(c, outs[3], labels, faces, ns, source, uptake, 0.0, 0.0,
                                      1.0, 1e6, 1e-6, 3000, np.empty((5,) + c.shape, dtype),
                                      mg.mg_work(c.shape))
    assert n_mg < 3000
    for out in outs:
        assert np.all(np.isfinite(out)) and np.all(out >= 0)
        assert np.all(out[labels != 0] == 0)


# ------------------------------------------------------------------------------------------
# the benchmark harness behind `marrow-abm bench`
def test_stream_triad_matches_numpy():
    from marrow_abm.bench import stream_triad

    rng = np.random.default_rng(10)
    a, b, c = np.empty(1001), rng.random(1001), rng.random(1001)
    stream_triad(a, b, c, 3.0)
    np.testing.assert_array_equal(a, b + 3.0 * c)


def test_run_bench_reports_every_solver_and_writes_json(tmp_path):
    import json

    from marrow_abm.bench import print_bench, run_bench

    path = tmp_path / "bench.json"
    result = run_bench(sizes=(48,), dtypes=("float64",), json_path=str(path))
    assert json.loads(path.read_text()) == json.loads(json.dumps(result))
    assert result["threads"] == 1
    (row,) = result["sizes"]
    assert set(row["solvers"]) >= {"explicit", "lod", "backward_euler_cg_iter"}
    for s in row["solvers"].values():
        assert s["updates_per_s"] > 0 and s["speedup_vs_numpy"] > 0
        assert s["fraction_of_triad"] == pytest.approx(s["updates_per_s"]
                                                       / row["triad_updates_per_s"])
    assert "ratio_to_biofvm" in row["solvers"]["lod"]
    be = row["be_solve"]
    assert 0 < be["multigrid"]["iterations"] < be["jacobi"]["iterations"]
    assert be["multigrid"]["seconds"] > 0 and be["jacobi"]["seconds"] > 0
    default = result["default_step"]
    assert default["available"] is False or default["median_step_ms"] > 0
    print_bench(result)
