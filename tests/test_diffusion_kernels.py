"""Diffusion kernels against their plain-numpy twins, and the invariants each must keep."""

import numba
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from marrow_abm.kernels import diffusion as kern
from marrow_abm.kernels import compartments as cp

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
# backward Euler with the multigrid preconditioner (exact solves on the compartments)
def _compartments(shape=(61, 75), seed=20, pitch=(7, 9)):
    """Marrow cut by 1-voxel sinusoid walls into closed compartments (as the bundled
    geometry), with some bone; returns the arguments of a solve."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int8)
    labels[::pitch[0]] = 2
    labels[:, ::pitch[1]] = 2
    labels[rng.random(shape) < 0.08] = 1
    marrow = labels == 0
    c = np.where(marrow, rng.random(shape) * 3.0, 0.0)
    source = np.where(rng.random(shape) < 0.05, 20.0, 0.0)
    uptake = rng.random(shape) * 0.5
    return labels, c, source, uptake


def _geometry(kind, dtype=np.float64, shape=(57, 71), seed=15):
    if kind == "compartments":
        labels, c, source, uptake = _compartments(shape, seed)
        return labels, c.astype(dtype), source, uptake
    # 70% marrow at random percolates: one large component and small ones
    return _random_problem(shape=shape, dtype=dtype, seed=seed)


def _cp_solve(labels, c, source, uptake, tol=1e-10, r=360.0, scratch=None):
    faces, ns = kern.open_faces(labels), kern.sinusoid_neighbours(labels)
    out = np.empty_like(c)
    scratch = cp.cp_work(c.shape) if scratch is None else scratch
    n = cp.backward_euler_solve_cp(c, out, labels, faces, ns, source, uptake, 0.7, 1.3, 1.0, r,
                                   tol, 2000, np.empty((5,) + c.shape, c.dtype), scratch)
    return out, n


@pytest.mark.parametrize("kind", ["compartments", "random"])
def test_cp_subdomains_match_ref_and_are_whole_components(kind):
    labels, *_ = _geometry(kind, shape=(83, 97), seed=21)
    faces = kern.open_faces(labels)
    ids = np.empty(labels.shape, np.int32)
    sub, n_large = cp.cp_subdomains(labels, faces, ids)
    ids_ref, sub_ref, n_large_ref = cp.cp_subdomains_ref(labels, faces)
    np.testing.assert_array_equal(ids, ids_ref)
    np.testing.assert_array_equal(sub, sub_ref)
    assert n_large == n_large_ref
    assert (n_large == 0) == (kind == "compartments")
    assert np.count_nonzero(ids == cp.CP_LARGE) == n_large
    np.testing.assert_array_equal(ids == -1, labels != 0)
    # a subdomain is one whole connected component inside its bounding box
    import scipy.ndimage as ndi
    comp, _ = ndi.label(labels == 0)
    for s, (i0, j0, h, w) in enumerate(sub):
        member = ids == s
        assert len(np.unique(comp[member])) == 1
        np.testing.assert_array_equal(member, comp == comp[member][0])
        rows, cols = np.nonzero(member)
        assert (rows.min(), cols.min(), rows.max() - i0 + 1, cols.max() - j0 + 1) == (i0, j0, h, w)
        assert member.sum() <= cp.CP_MAX_VOXELS and min(h, w) <= cp.CP_MAX_BAND


@pytest.mark.parametrize("kind", ["compartments", "random"])
def test_cp_block_solve_matches_ref(kind):
    labels, _, _, uptake = _geometry(kind, seed=11)
    faces = kern.open_faces(labels)
    f = faces.astype(np.int64)
    n_open = (f & 1) + ((f >> 1) & 1) + ((f >> 2) & 1) + ((f >> 3) & 1)
    diag = np.where(labels == 0, 1.7 + uptake + 360.0 * n_open, 1.0)
    t = np.random.default_rng(12).standard_normal(labels.shape)
    scratch = cp.cp_work(labels.shape)
    ids, sub, _ = scratch.partition(labels, faces)
    z = np.full(labels.shape, np.nan)
    cp.cp_block_solve(t, diag, faces, 360.0, ids, sub, z)
    ref = cp.cp_block_solve_ref(t, diag, faces, 360.0, ids)
    inside = ids >= 0
    np.testing.assert_allclose(z[inside], ref[inside], rtol=1e-10, atol=1e-13)
    assert np.all(np.isnan(z[~inside]))          # writes the subdomains only


def test_cp_preconditioner_is_symmetric_positive_definite():
    labels, _, _, uptake = _compartments((61, 45), seed=13)
    faces = kern.open_faces(labels)
    f = faces.astype(np.int64)
    n_open = (f & 1) + ((f >> 1) & 1) + ((f >> 2) & 1) + ((f >> 3) & 1)
    diag = np.where(labels == 0, 1.7 + uptake + 360.0 * n_open, 1.0)
    ids, sub, _ = cp.cp_work(labels.shape).partition(labels, faces)
    rng = np.random.default_rng(14)
    u, v = (np.where(labels == 0, rng.standard_normal(labels.shape), 0.0) for _ in range(2))
    mu, mv = np.zeros(labels.shape), np.zeros(labels.shape)
    cp.cp_block_solve(u, diag, faces, 360.0, ids, sub, mu)
    cp.cp_block_solve(v, diag, faces, 360.0, ids, sub, mv)
    scale = np.sqrt(np.sum(u * mu) * np.sum(v * mv))
    assert abs(np.sum(v * mu) - np.sum(u * mv)) < 1e-12 * scale
    for w, mw in ((u, mu), (v, mv), (u - v, mu - mv)):
        assert np.sum(w * mw) > 0


@pytest.mark.parametrize("kind", ["compartments", "random"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_euler_mg_matches_ref_jacobi_and_direct_solve(dtype, kind):
    labels, c, source, uptake = _geometry(kind, dtype)
    faces, ns = kern.open_faces(labels), kern.sinusoid_neighbours(labels)
    args = (labels, faces, ns, source, uptake, 0.7, 1.3, 1.0, 360.0)
    tol = 1e-10 if dtype is np.float64 else 1e-5
    ref, jac = np.empty_like(c), np.empty_like(c)
    out, n_mg = _cp_solve(labels, c, source, uptake, tol)
    n_ref = cp.backward_euler_solve_cp_ref(c, ref, *args, tol, 2000)
    n_jac = kern.backward_euler_solve(c, jac, *args, tol, 2000,
                                      np.empty((5,) + c.shape, dtype))
    assert 0 < n_mg and abs(n_mg - n_ref) <= 2
    if kind == "compartments":
        # every component solved directly: one step where Jacobi needs ~150 (float32: a
        # second one, as A p rounds to ~1e-4 of the residual there)
        assert n_mg == (1 if dtype is np.float64 else 2) and n_jac > 50
    else:
        # then Jacobi-PCG, which has only the large component left to solve
        assert n_mg <= n_jac + 2
    A, idx = _be_matrix(labels, faces, ns, uptake, 0.7, 1.3, 1.0, 360.0)
    exact = spla.spsolve(A.tocsc(), c.ravel()[idx].astype(np.float64) + source.ravel()[idx])
    scale = np.abs(exact).max()
    err_tol = 1e-8 if dtype is np.float64 else 1e-4
    for got in (out, ref, jac):
        np.testing.assert_allclose(got.ravel()[idx], exact, atol=err_tol * scale)
    assert np.all(out[labels != 0] == 0)


def test_cp_partition_is_reused_and_rebuilt_when_the_geometry_changes():
    labels, c, source, uptake = _compartments()
    scratch = cp.cp_work(labels.shape)
    _cp_solve(labels, c, source, uptake, scratch=scratch)
    sub = scratch.sub
    _cp_solve(labels, c, source, uptake, scratch=scratch)
    assert scratch.sub is sub
    opened = labels.copy()
    opened[opened == 2] = 0                     # the walls become marrow: one large component
    c2 = np.where(opened == 0, 1.0, 0.0)
    out, n = _cp_solve(opened, c2, source, uptake, scratch=scratch)
    assert scratch.sub is not sub and scratch.n_large > 0
    ids_ref, _, _ = cp.cp_subdomains_ref(opened, kern.open_faces(opened))
    np.testing.assert_array_equal(scratch.ids, ids_ref)
    fresh, n_fresh = _cp_solve(opened, c2, source, uptake)
    np.testing.assert_array_equal(out, fresh)
    assert n == n_fresh


@pytest.mark.parametrize("kind", ["compartments", "random"])
def test_backward_euler_mg_is_bitwise_independent_of_thread_count(kind):
    labels, c, source, uptake = _geometry(kind, shape=(203, 97), seed=16)
    outs = []
    previous = numba.get_num_threads()
    try:
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            outs.append(_cp_solve(labels, c, source, uptake)[0])
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("kind", ["compartments", "random"])
def test_backward_euler_mg_conserves_mass_without_sources_or_sinks(kind):
    labels, c, *_ = _geometry(kind, shape=(41, 59), seed=17)
    zero = np.zeros(c.shape)
    out = np.empty_like(c)
    cp.backward_euler_solve_cp(c, out, labels, kern.open_faces(labels),
                               kern.sinusoid_neighbours(labels), zero, zero, 0.0, 0.0, 1.0,
                               360.0, 1e-12, 5000, np.empty((5,) + c.shape),
                               cp.cp_work(c.shape))
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
    n_mg = cp.backward_euler_solve_cp(c, outs[3], labels, faces, ns, source, uptake, 0.0, 0.0,
                                      1.0, 1e6, 1e-6, 3000, np.empty((5,) + c.shape, dtype),
                                      cp.cp_work(c.shape))
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
    assert 0 < be["compartments"]["iterations"] < be["jacobi"]["iterations"]
    assert be["compartments"]["seconds"] > 0 and be["jacobi"]["seconds"] > 0
    default = result["default_step"]
    assert default["available"] is False or default["median_step_ms"] > 0
    print_bench(result)
