"""Multigrid-preconditioned conjugate gradients for the backward-Euler field step.

Why: with a Jacobi preconditioner the CG iteration count of a backward-Euler step grows like
sqrt(8 r) (r = D dt / dx^2): ~150 iterations per hourly TGF-β1 solve (r = 360) when leukemic
cells move its sources, whatever the warm start (docs/performance.md, "Faster fields"). The
smooth error those iterations are spent on is what a coarse grid removes. Here each CG
iteration is preconditioned by one symmetric V-cycle of aggregation multigrid:

- coarse levels aggregate 2x2 voxels (piecewise-constant prolongation P, restriction P^T) and
  carry the Galerkin operator P^T A P, rebuilt every solve (uptake changes the diagonal);
  coarsening stops at :data:`MG_COARSEST_VOXELS` unknowns;
- the smoother is one damped-Jacobi sweep (weight :data:`MG_OMEGA`) before and one after the
  coarse correction. Damped Jacobi is point-local, so each level's pre-smoothing, residual and
  restriction are one fused pass over memory, and prolongation with post-smoothing another;
- the coarsest level gets :data:`MG_COARSE_SWEEPS` symmetric Gauss-Seidel sweep pairs (serial,
  a few hundred unknowns), and levels below :data:`MG_SERIAL_VOXELS` run serial kernels;
- coarse levels are float32: a preconditioner need not be exact, only fixed, symmetric and
  positive definite. With the same smoother before and after (damped Jacobi is symmetric and,
  for weight < 1 on these diagonally dominant M-matrices, convergent) and a fixed number of
  coarsest sweeps in forward-then-backward order, the V-cycle is such an operator.

The CG iteration itself (stopping rule, tolerance, warm start, final clip at 0) is that of
:func:`marrow_abm.kernels.diffusion.backward_euler_solve`; only the preconditioner differs, so
both solve the same system to the same relative residual. Every kernel parallelises over rows
with each output element written by one iteration and row sums added in a fixed order, so the
result is bitwise independent of the thread count.

Level operators are stored as ``d`` (diagonal), ``ce`` (coupling to the east neighbour) and
``cs`` (coupling to the south neighbour): (A x)_ij = d x_ij - ce_ij x_i,j+1 - ce_i,j-1 x_i,j-1 -
cs_ij x_i+1,j - cs_i-1,j x_i-1,j. Points outside the domain have d = 1, no couplings and a
zero right-hand side. On the fine level the operator is the one of ``backward_euler_solve``:
``diag`` and r on every open face.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from marrow_abm.kernels.diffusion import EAST, SOUTH, _be_matvec_row

#: Damped-Jacobi weight. On the bench section (145², r = 360) PCG takes 57 / 50 / 122
#: iterations with weights 0.6 / 0.8 / 1.0 (1.0 does not damp the checkerboard mode).
MG_OMEGA = 0.8
#: Coarsening stops once a level has at most this many voxels.
MG_COARSEST_VOXELS = 400
#: Coarse levels with fewer voxels than this run serial copies of the level kernels: a
#: parallel region costs more than their work, and far more when a worker is descheduled.
MG_SERIAL_VOXELS = 128 * 128
#: Symmetric Gauss-Seidel sweep pairs (forward, then backward) on the coarsest level.
MG_COARSE_SWEEPS = 4


def mg_plan(shape):
    """Shapes and flat offsets of the coarse levels (level 1 onwards) of a ``shape`` grid.

    Each level halves both sides (rounding up) until it has at most
    :data:`MG_COARSEST_VOXELS` voxels.

    Returns:
        int64 array (n_coarse_levels, 3): ny, nx and offset of each coarse level in a flat
        buffer of length ``offset + ny * nx`` of the last row.
    """
    ny, nx = int(shape[0]), int(shape[1])
    rows, off = [], 0
    while ny * nx > MG_COARSEST_VOXELS and (ny > 1 or nx > 1):
        ny, nx = (ny + 1) // 2, (nx + 1) // 2
        rows.append((ny, nx, off))
        off += ny * nx
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def mg_work(shape):
    """Coarse-level scratch for :func:`backward_euler_solve_mg`, shared by every field.

    Returns ``(levels, op, vec, mask)``: ``levels`` from :func:`mg_plan`; ``op`` float32
    (4, total) holding d, ce, cs and omega / d of every coarse level; ``vec``
    float32 (2, total) holding
    each level's right-hand side b and correction x; ``mask`` int8 (total,), 1 on domain
    points. About a third of the fine grid's voxels in all: 25 B per coarse voxel, ~8.3 B
    per fine voxel.
    """
    levels = mg_plan(shape)
    total = int(levels[-1, 2] + levels[-1, 0] * levels[-1, 1]) if len(levels) else 0
    return (levels, np.zeros((4, total), np.float32), np.zeros((2, total), np.float32),
            np.zeros(total, np.int8))


@njit(cache=True, error_model="numpy")
def _lv(flat, levels, k):
    ny, nx, off = levels[k, 0], levels[k, 1], levels[k, 2]
    return flat[off:off + ny * nx].reshape((ny, nx))


# --------------------------------------------------------------------------------------------
# Setup: Galerkin coarse operators
# --------------------------------------------------------------------------------------------

# Galerkin coarsening sums, for each aggregate, the children's row sums (the loss term
# 1 + dt lambda on the fine level: ``mass``) and the couplings that cross to the east and
# south neighbour aggregates; the diagonal is then mass + the four couplings. Forming it as
# "sum of diagonals - twice the internal couplings" instead cancels catastrophically when
# r >> 1 + dt lambda (float32 coarse levels would lose positivity at r = 1e6).

@njit(cache=True, parallel=True, error_model="numpy")
def _mg_coarsen_fine(diag, labels, faces, r, mc, cec, csc, maskc):
    """Row sums, couplings and mask of P^T A P for 2x2 aggregates of the fine operator."""
    ny, nx = diag.shape
    cy, cx = mc.shape
    for bi in prange(cy):
        for bj in range(cx):
            sm = 0.0
            se = 0.0
            ss = 0.0
            m = 0
            for i in range(2 * bi, min(2 * bi + 2, ny)):
                for j in range(2 * bj, min(2 * bj + 2, nx)):
                    if labels[i, j] != 0:
                        continue
                    m = 1
                    f = faces[i, j]
                    n_open = (f & 1) + ((f >> 1) & 1) + ((f >> 2) & 1) + ((f >> 3) & 1)
                    sm += diag[i, j] - r * n_open
                    if j & 1 == 1 and f & EAST:
                        se += r
                    if i & 1 == 1 and f & SOUTH:
                        ss += r
            maskc[bi, bj] = m
            mc[bi, bj] = sm
            cec[bi, bj] = se
            csc[bi, bj] = ss


@njit(cache=True, parallel=True, error_model="numpy")
def _mg_coarsen(mf, ce, cs, mask, mc, cec, csc, maskc):
    """As :func:`_mg_coarsen_fine` for a coarse level (row sums ``mf``; float64 sums)."""
    ny, nx = mf.shape
    cy, cx = mc.shape
    for bi in prange(cy):
        for bj in range(cx):
            sm = 0.0
            se = 0.0
            ss = 0.0
            m = 0
            for i in range(2 * bi, min(2 * bi + 2, ny)):
                for j in range(2 * bj, min(2 * bj + 2, nx)):
                    if mask[i, j] == 0:
                        continue
                    m = 1
                    sm += mf[i, j]
                    if j & 1 == 1:
                        se += ce[i, j]
                    if i & 1 == 1:
                        ss += cs[i, j]
            maskc[bi, bj] = m
            mc[bi, bj] = sm
            cec[bi, bj] = se
            csc[bi, bj] = ss


@njit(cache=True, parallel=True, error_model="numpy")
def _mg_diagonal(mc, ce, cs, mask, omega, d, inv_d):
    """d = row sum + the four couplings (1 outside the domain), inv_d = omega / d."""
    ny, nx = mc.shape
    for i in prange(ny):
        for j in range(nx):
            if mask[i, j] == 0:
                dv = 1.0
            else:
                dv = mc[i, j] + ce[i, j] + cs[i, j]
                if j > 0:
                    dv += ce[i, j - 1]
                if i > 0:
                    dv += cs[i - 1, j]
            d[i, j] = dv
            inv_d[i, j] = omega / dv


# --------------------------------------------------------------------------------------------
# V-cycle: fused passes
# --------------------------------------------------------------------------------------------

#: Fine rows per parallel chunk of the fused fine-level passes (an even number; each chunk
#: recomputes the smoothed values of one halo row on each side).
_CHUNK_ROWS = 32


@njit(cache=True, error_model="numpy")
def _x0_fine_row(res, inv_d, labels, xc, i, xrow, row):
    """row[1:nx+1] = inv_d res (+ P xc on marrow when ``xc`` has rows; ``xrow`` is scratch
    for xc's row spread to fine columns, so the main loop is a plain vector loop); zero
    outside the grid's rows. ``inv_d`` = omega / diag."""
    ny, nx = res.shape
    if i < 0 or i >= ny:
        for j in range(nx + 2):
            row[j] = 0.0
        return
    if xc.shape[0] == 0:
        for j in range(nx):
            row[j + 1] = inv_d[i, j] * res[i, j]
    else:
        ci = i >> 1
        cx = xc.shape[1]
        for bj in range(cx):
            v = xc[ci, bj]
            xrow[2 * bj] = v
            xrow[2 * bj + 1] = v
        for j in range(nx):
            m = xrow[j] if labels[i, j] == 0 else 0.0
            row[j + 1] = inv_d[i, j] * res[i, j] + m


@njit(cache=True, parallel=True, error_model="numpy")
def _mg_down_fine(res, diag, inv_d, labels, r, bc):
    """bc = P^T (res - A x0) with x0 = inv_d res (damped Jacobi from 0), in one pass.

    x0 is never stored: a chunk of rows keeps it for three rows in a ring and recomputes one
    halo row on each side. res is 0 outside marrow, so x0 is too and the open-face sum is
    the plain 4-neighbour sum (times r on marrow, 0 elsewhere: identity rows).
    """
    ny, nx = res.shape
    cx = bc.shape[1]
    n_chunks = (ny + _CHUNK_ROWS - 1) // _CHUNK_ROWS
    no_xc = np.zeros((0, 0), dtype=bc.dtype)
    for k in prange(n_chunks):
        i0 = k * _CHUNK_ROWS
        i1 = min(i0 + _CHUNK_ROWS, ny)
        t = np.zeros((3, nx + 2))
        rowres = np.zeros(nx + 1)
        acc = np.zeros(cx)
        _x0_fine_row(res, inv_d, labels, no_xc, i0 - 1, rowres, t[(i0 - 1) % 3])
        _x0_fine_row(res, inv_d, labels, no_xc, i0, rowres, t[i0 % 3])
        for i in range(i0, i1):
            _x0_fine_row(res, inv_d, labels, no_xc, i + 1, rowres, t[(i + 1) % 3])
            tu = t[(i - 1) % 3]
            tm = t[i % 3]
            td = t[(i + 1) % 3]
            for j in range(nx):
                rm = r if labels[i, j] == 0 else 0.0
                nb = tm[j] + tm[j + 2] + tu[j + 1] + td[j + 1]
                rowres[j] = res[i, j] - diag[i, j] * tm[j + 1] + rm * nb
            if i & 1 == 0:
                for bj in range(cx):
                    acc[bj] = rowres[2 * bj] + rowres[2 * bj + 1]
            else:
                for bj in range(cx):
                    acc[bj] += rowres[2 * bj] + rowres[2 * bj + 1]
            if i & 1 == 1 or i == ny - 1:
                ci = i >> 1
                for bj in range(cx):
                    bc[ci, bj] = acc[bj]


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _up_fine_row(res, diag, inv_d, labels, r, tu, tm, td, z):
    """One row of :func:`_mg_up_fine`; returns the row's sum of res * z. ``reassoc`` lets
    the sum vectorise (fixed at compile time, so still independent of the thread count)."""
    nx = res.shape[0]
    s = 0.0
    for j in range(nx):
        # outside marrow res = y = 0 and rm = 0, so z = 0 there without a branch
        rm = r if labels[j] == 0 else 0.0
        nb = tm[j] + tm[j + 2] + tu[j + 1] + td[j + 1]
        y = tm[j + 1]
        zv = y + inv_d[j] * (res[j] - diag[j] * y + rm * nb)
        z[j] = zv
        s += res[j] * zv
    return s


@njit(cache=True, parallel=True, error_model="numpy")
def _mg_up_fine(res, diag, inv_d, labels, r, xc, z, part):
    """z = y + inv_d (res - A y) with y = inv_d res + P xc, in one pass; part[i] = row i's
    sum of res * z (for CG's rho). ``xc`` with no rows: no coarse correction."""
    ny, nx = res.shape
    n_chunks = (ny + _CHUNK_ROWS - 1) // _CHUNK_ROWS
    for k in prange(n_chunks):
        i0 = k * _CHUNK_ROWS
        i1 = min(i0 + _CHUNK_ROWS, ny)
        t = np.zeros((3, nx + 2))
        xrow = np.zeros(nx + 1)
        _x0_fine_row(res, inv_d, labels, xc, i0 - 1, xrow, t[(i0 - 1) % 3])
        _x0_fine_row(res, inv_d, labels, xc, i0, xrow, t[i0 % 3])
        for i in range(i0, i1):
            _x0_fine_row(res, inv_d, labels, xc, i + 1, xrow, t[(i + 1) % 3])
            part[i] = _up_fine_row(res[i], diag[i], inv_d[i], labels[i], r, t[(i - 1) % 3],
                                   t[i % 3], t[(i + 1) % 3], z[i])


@njit(cache=True, error_model="numpy")
def _x0_row(b, inv_d, mask, xc, i, row):
    """Coarse-level twin of :func:`_x0_fine_row` (``mask`` marks domain points)."""
    ny, nx = b.shape
    if i < 0 or i >= ny:
        for j in range(nx + 2):
            row[j] = 0.0
        return
    if xc.shape[0] == 0:
        for j in range(nx):
            row[j + 1] = inv_d[i, j] * b[i, j]
    else:
        ci = i >> 1
        for j in range(nx):
            m = 1.0 if mask[i, j] != 0 else 0.0
            row[j + 1] = inv_d[i, j] * b[i, j] + m * xc[ci, j >> 1]


@njit(cache=True, error_model="numpy")
def _residual_row(b, d, ce, cs, i, tu, tm, td, zero, out):
    """out[j] = (b - A y)[i, j] for y given on rows i-1, i, i+1 (zero-padded ``tu, tm, td``).

    Couplings to points beyond the grid are 0 (ce in the last column, cs in the last row)
    and the padded y there is 0, so only j = 0 needs its own line."""
    nx = b.shape[1]
    csu = cs[i - 1] if i > 0 else zero
    out[0] = (b[i, 0] - d[i, 0] * tm[1] + ce[i, 0] * tm[2] + cs[i, 0] * td[1]
              + csu[0] * tu[1])
    for j in range(1, nx):
        out[j] = (b[i, j] - d[i, j] * tm[j + 1] + ce[i, j] * tm[j + 2] + ce[i, j - 1] * tm[j]
                  + cs[i, j] * td[j + 1] + csu[j] * tu[j + 1])


@njit(cache=True, parallel=True, error_model="numpy")
def _mg_down(b, d, ce, cs, inv_d, mask, bc):
    """bc = P^T (b - A x0), x0 = inv_d b, on a coarse level, in one pass (as
    :func:`_mg_down_fine`)."""
    ny, nx = b.shape
    cx = bc.shape[1]
    n_chunks = (ny + _CHUNK_ROWS - 1) // _CHUNK_ROWS
    no_xc = np.zeros((0, 0), dtype=bc.dtype)
    zero = np.zeros(nx, dtype=cs.dtype)
    for k in prange(n_chunks):
        i0 = k * _CHUNK_ROWS
        i1 = min(i0 + _CHUNK_ROWS, ny)
        t = np.zeros((3, nx + 2))
        rowres = np.zeros(nx + 1)
        acc = np.zeros(cx)
        _x0_row(b, inv_d, mask, no_xc, i0 - 1, t[(i0 - 1) % 3])
        _x0_row(b, inv_d, mask, no_xc, i0, t[i0 % 3])
        for i in range(i0, i1):
            _x0_row(b, inv_d, mask, no_xc, i + 1, t[(i + 1) % 3])
            _residual_row(b, d, ce, cs, i, t[(i - 1) % 3], t[i % 3], t[(i + 1) % 3], zero,
                          rowres)
            if i & 1 == 0:
                for bj in range(cx):
                    acc[bj] = rowres[2 * bj] + rowres[2 * bj + 1]
            else:
                for bj in range(cx):
                    acc[bj] += rowres[2 * bj] + rowres[2 * bj + 1]
            if i & 1 == 1 or i == ny - 1:
                ci = i >> 1
                for bj in range(cx):
                    bc[ci, bj] = acc[bj]


@njit(cache=True, parallel=True, error_model="numpy")
def _mg_up(b, d, ce, cs, inv_d, mask, xc, x):
    """x = y + inv_d (b - A y) with y = inv_d b + P xc on a coarse level, in one pass.
    Outside the domain b = 0, y = 0 and there are no couplings, so x = 0 there."""
    ny, nx = b.shape
    n_chunks = (ny + _CHUNK_ROWS - 1) // _CHUNK_ROWS
    zero = np.zeros(nx, dtype=cs.dtype)
    for k in prange(n_chunks):
        i0 = k * _CHUNK_ROWS
        i1 = min(i0 + _CHUNK_ROWS, ny)
        t = np.zeros((3, nx + 2))
        rowres = np.zeros(nx + 1)
        _x0_row(b, inv_d, mask, xc, i0 - 1, t[(i0 - 1) % 3])
        _x0_row(b, inv_d, mask, xc, i0, t[i0 % 3])
        for i in range(i0, i1):
            _x0_row(b, inv_d, mask, xc, i + 1, t[(i + 1) % 3])
            tm = t[i % 3]
            _residual_row(b, d, ce, cs, i, t[(i - 1) % 3], tm, t[(i + 1) % 3], zero, rowres)
            for j in range(nx):
                x[i, j] = tm[j + 1] + inv_d[i, j] * rowres[j]


# Serial copies (``prange`` runs as ``range``); same arithmetic, so the same results.
_mg_coarsen_serial = njit(cache=True, error_model="numpy")(_mg_coarsen.py_func)
_mg_diagonal_serial = njit(cache=True, error_model="numpy")(_mg_diagonal.py_func)
_mg_down_serial = njit(cache=True, error_model="numpy")(_mg_down.py_func)
_mg_up_serial = njit(cache=True, error_model="numpy")(_mg_up.py_func)


@njit(cache=True, error_model="numpy")
def _mg_coarsest(b, d, ce, cs, x, n_pairs):
    """x from 0 by ``n_pairs`` lexicographic Gauss-Seidel sweeps forward then backward
    (a fixed symmetric positive definite approximation of A^-1; serial: a few hundred
    unknowns, copied into zero-padded float64 arrays so the sweeps need no edge tests).
    Outside the domain b = 0 and there are no couplings, so x stays 0."""
    ny, nx = b.shape
    xp = np.zeros((ny + 2, nx + 2))
    ep = np.zeros((ny + 2, nx + 2))
    sp = np.zeros((ny + 2, nx + 2))
    for i in range(ny):
        for j in range(nx):
            ep[i + 1, j + 1] = ce[i, j]
            sp[i + 1, j + 1] = cs[i, j]
    for _ in range(n_pairs):
        for i in range(1, ny + 1):
            for j in range(1, nx + 1):
                xp[i, j] = (b[i - 1, j - 1] + ep[i, j] * xp[i, j + 1] + ep[i, j - 1] * xp[i, j - 1]
                            + sp[i, j] * xp[i + 1, j] + sp[i - 1, j] * xp[i - 1, j]) / d[i - 1, j - 1]
        for i in range(ny, 0, -1):
            for j in range(nx, 0, -1):
                xp[i, j] = (b[i - 1, j - 1] + ep[i, j] * xp[i, j + 1] + ep[i, j - 1] * xp[i, j - 1]
                            + sp[i, j] * xp[i + 1, j] + sp[i - 1, j] * xp[i - 1, j]) / d[i - 1, j - 1]
    for i in range(ny):
        for j in range(nx):
            x[i, j] = xp[i + 1, j + 1]


@njit(cache=True, parallel=True, error_model="numpy")
def _scaled_inverse(d, omega, inv_d):
    ny, nx = d.shape
    for i in prange(ny):
        for j in range(nx):
            inv_d[i, j] = omega / d[i, j]


@njit(cache=True, error_model="numpy")
def mg_setup(diag, inv_d, labels, faces, r, levels, op, vec, mask_all):
    """Build every coarse level's Galerkin operator from the fine one (``diag``, r on open
    faces), and omega / d on every level (``inv_d`` on the fine one). The row sums are built
    in the levels' correction vectors (``vec[1]``), free until the first V-cycle."""
    _scaled_inverse(diag, MG_OMEGA, inv_d)
    for k in range(levels.shape[0]):
        mc = _lv(vec[1], levels, k)
        cec = _lv(op[1], levels, k)
        csc = _lv(op[2], levels, k)
        maskc = _lv(mask_all, levels, k)
        serial = levels[k, 0] * levels[k, 1] < MG_SERIAL_VOXELS
        if k == 0:
            _mg_coarsen_fine(diag, labels, faces, r, mc, cec, csc, maskc)
        elif serial:
            _mg_coarsen_serial(_lv(vec[1], levels, k - 1), _lv(op[1], levels, k - 1),
                               _lv(op[2], levels, k - 1), _lv(mask_all, levels, k - 1),
                               mc, cec, csc, maskc)
        else:
            _mg_coarsen(_lv(vec[1], levels, k - 1), _lv(op[1], levels, k - 1),
                        _lv(op[2], levels, k - 1), _lv(mask_all, levels, k - 1),
                        mc, cec, csc, maskc)
        if serial:
            _mg_diagonal_serial(mc, cec, csc, maskc, MG_OMEGA, _lv(op[0], levels, k),
                                _lv(op[3], levels, k))
        else:
            _mg_diagonal(mc, cec, csc, maskc, MG_OMEGA, _lv(op[0], levels, k),
                         _lv(op[3], levels, k))


@njit(cache=True, error_model="numpy")
def mg_vcycle(res, diag, inv_d, labels, r, levels, op, vec, mask_all, z, part):
    """z = M^-1 res by one symmetric V-cycle (after :func:`mg_setup`); returns sum(res * z)
    with rows added in a fixed order. ``part``: float64 scratch of ny values."""
    n_lv = levels.shape[0]
    if n_lv == 0:
        # a grid of a few hundred voxels: the two smoothing sweeps alone
        _mg_up_fine(res, diag, inv_d, labels, r, np.zeros((0, 0), np.float32), z, part)
    else:
        _mg_down_fine(res, diag, inv_d, labels, r, _lv(vec[0], levels, 0))
        for k in range(n_lv - 1):
            args = (_lv(vec[0], levels, k), _lv(op[0], levels, k), _lv(op[1], levels, k),
                    _lv(op[2], levels, k), _lv(op[3], levels, k), _lv(mask_all, levels, k),
                    _lv(vec[0], levels, k + 1))
            if levels[k, 0] * levels[k, 1] < MG_SERIAL_VOXELS:
                _mg_down_serial(*args)
            else:
                _mg_down(*args)
        k = n_lv - 1
        _mg_coarsest(_lv(vec[0], levels, k), _lv(op[0], levels, k), _lv(op[1], levels, k),
                     _lv(op[2], levels, k), _lv(vec[1], levels, k), MG_COARSE_SWEEPS)
        for k in range(n_lv - 2, -1, -1):
            args = (_lv(vec[0], levels, k), _lv(op[0], levels, k), _lv(op[1], levels, k),
                    _lv(op[2], levels, k), _lv(op[3], levels, k), _lv(mask_all, levels, k),
                    _lv(vec[1], levels, k + 1), _lv(vec[1], levels, k))
            if levels[k, 0] * levels[k, 1] < MG_SERIAL_VOXELS:
                _mg_up_serial(*args)
            else:
                _mg_up(*args)
        _mg_up_fine(res, diag, inv_d, labels, r, _lv(vec[1], levels, 0), z, part)
    rz = 0.0
    for i in range(res.shape[0]):
        rz += part[i]
    return rz


# --------------------------------------------------------------------------------------------
# Conjugate gradients with the V-cycle
# --------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True, error_model="numpy")
def _cg_init(c, out, labels, faces, n_sinus, source_per_h, uptake_per_h, decay_per_h,
             clearance_per_h, dt_h, r, diag, res, part_b, part_c):
    """diag, res = rhs - A c, out = c; row sums of rhs^2 and res^2 (as the Jacobi solver)."""
    ny, nx = c.shape
    for i in prange(ny):
        sb = 0.0
        sc = 0.0
        for j in range(nx):
            f = faces[i, j]
            if labels[i, j] != 0:
                diag[i, j] = 1.0
                res[i, j] = 0.0
                out[i, j] = 0.0
                continue
            lam = decay_per_h + clearance_per_h * n_sinus[i, j] + uptake_per_h[i, j]
            nb = 0.0
            n_open = 0
            if f & 1:
                nb += c[i, j - 1]
                n_open += 1
            if f & 2:
                nb += c[i, j + 1]
                n_open += 1
            if f & 4:
                nb += c[i - 1, j]
                n_open += 1
            if f & 8:
                nb += c[i + 1, j]
                n_open += 1
            m = 1.0 + dt_h * lam + r * n_open
            rhs = c[i, j] + dt_h * source_per_h[i, j]
            rv = rhs - (m * c[i, j] - r * nb)
            diag[i, j] = m
            res[i, j] = rv
            out[i, j] = c[i, j]
            sb += rhs * rhs
            sc += rv * rv
        part_b[i] = sb
        part_c[i] = sc


@njit(cache=True, parallel=True, error_model="numpy")
def _cg_matvec(p, q, diag, labels, r, part):
    ny = p.shape[0]
    zero = np.zeros(p.shape[1], dtype=p.dtype)
    for i in prange(ny):
        up = p[i - 1] if i > 0 else zero
        down = p[i + 1] if i + 1 < ny else zero
        part[i] = _be_matvec_row(up, p[i], down, diag[i], labels[i], r, q[i])


@njit(cache=True, parallel=True, error_model="numpy")
def _cg_update(out, res, p, q, alpha, part):
    ny, nx = out.shape
    for i in prange(ny):
        sc = 0.0
        for j in range(nx):
            out[i, j] += alpha * p[i, j]
            rv = res[i, j] - alpha * q[i, j]
            res[i, j] = rv
            sc += rv * rv
        part[i] = sc


@njit(cache=True, parallel=True, error_model="numpy")
def _cg_direction(p, z, beta):
    ny, nx = p.shape
    for i in prange(ny):
        for j in range(nx):
            p[i, j] = z[i, j] + beta * p[i, j]


@njit(cache=True, parallel=True, error_model="numpy")
def _clip0(out):
    ny, nx = out.shape
    for i in prange(ny):
        for j in range(nx):
            out[i, j] = max(out[i, j], 0.0)


@njit(cache=True, error_model="numpy")
def _sum(part, n):
    s = 0.0
    for i in range(n):
        s += part[i]
    return s


@njit(cache=True, error_model="numpy")
def _solve_mg_jit(c, out, labels, faces, n_sinus, source_per_h, uptake_per_h, decay_per_h,
                  clearance_per_h, dt_h, r, tol, max_iter, work, levels, op, vec, mask_all):
    ny = c.shape[0]
    diag = work[0]
    inv_d = work[1]
    res = work[2]
    p = work[3]
    # A p is dead once the residual is updated: the V-cycle writes z over it
    q = work[4]
    z = work[4]
    part_a = np.zeros(ny)
    part_b = np.zeros(ny)
    _cg_init(c, out, labels, faces, n_sinus, source_per_h, uptake_per_h, decay_per_h,
             clearance_per_h, dt_h, r, diag, res, part_a, part_b)
    bb = _sum(part_a, ny)
    rr = _sum(part_b, ny)
    stop = tol * tol * bb
    it = 0
    if rr > stop:
        mg_setup(diag, inv_d, labels, faces, r, levels, op, vec, mask_all)
        rz = mg_vcycle(res, diag, inv_d, labels, r, levels, op, vec, mask_all, z, part_a)
        p[:, :] = z
        while rr > stop and it < max_iter and rz > 0.0:
            it += 1
            _cg_matvec(p, q, diag, labels, r, part_a)
            pq = _sum(part_a, ny)
            if pq <= 0.0:
                break
            alpha = rz / pq
            _cg_update(out, res, p, q, alpha, part_a)
            rr = _sum(part_a, ny)
            if rr <= stop:
                # converged: the next preconditioning would be unused
                break
            rz_new = mg_vcycle(res, diag, inv_d, labels, r, levels, op, vec, mask_all, z,
                               part_a)
            beta = rz_new / rz
            rz = rz_new
            _cg_direction(p, z, beta)
    _clip0(out)
    return it


def backward_euler_solve_mg(c, out, labels, faces, n_sinus, source_per_h, uptake_per_h,
                            decay_per_h, clearance_per_h, dt_h, r, tol, max_iter, work,
                            mg_scratch):
    """One backward-Euler step by multigrid-preconditioned CG.

    Same system, arguments, stopping rule and return value as
    :func:`marrow_abm.kernels.diffusion.backward_euler_solve`; ``work`` (5, ny, nx) holds the
    diagonal, the preconditioned residual, the residual, the direction and A p;
    ``mg_scratch`` is :func:`mg_work` of the grid's shape.
    """
    levels, op, vec, mask_all = mg_scratch
    return _solve_mg_jit(c, out, labels, faces, n_sinus, source_per_h, uptake_per_h,
                         float(decay_per_h), float(clearance_per_h), float(dt_h), float(r),
                         float(tol), int(max_iter), work, levels, op, vec, mask_all)


# --------------------------------------------------------------------------------------------
# Plain-numpy twins
# --------------------------------------------------------------------------------------------

def _apply_ref(d, ce, cs, x):
    y = d * x
    y[:, :-1] -= ce[:, :-1] * x[:, 1:]
    y[:, 1:] -= ce[:, :-1] * x[:, :-1]
    y[:-1] -= cs[:-1] * x[1:]
    y[1:] -= cs[:-1] * x[:-1]
    return y


def _aggregate_ref(a, shape):
    cy, cx = shape
    p = np.zeros((2 * cy, 2 * cx))
    p[:a.shape[0], :a.shape[1]] = a
    return p.reshape(cy, 2, cx, 2).sum(axis=(1, 3))


def mg_levels_ref(diag, labels, faces, r):
    """Operators (d, ce, cs, mask) of every level, fine first; coarse ones rounded to float32
    as :func:`mg_work` stores them."""
    f = faces.astype(np.int64)
    mask = labels == 0
    ce = np.where(f & EAST, r, 0.0)
    cs = np.where(f & SOUTH, r, 0.0)
    n_open = (f & 1) + ((f >> 1) & 1) + ((f >> 2) & 1) + ((f >> 3) & 1)
    mass = np.where(mask, diag - r * n_open, 0.0)
    levels = [(diag.astype(np.float64), ce, cs, mask)]
    for ny, nx, _ in mg_plan(diag.shape):
        cross_e = ce.copy()
        cross_e[:, 0::2] = 0.0
        cross_s = cs.copy()
        cross_s[0::2] = 0.0
        mass = _aggregate_ref(mass, (ny, nx)).astype(np.float32).astype(np.float64)
        ce = _aggregate_ref(cross_e, (ny, nx)).astype(np.float32).astype(np.float64)
        cs = _aggregate_ref(cross_s, (ny, nx)).astype(np.float32).astype(np.float64)
        mask = _aggregate_ref(mask, (ny, nx)) > 0
        d = mass + ce + cs
        d[:, 1:] += ce[:, :-1]
        d[1:] += cs[:-1]
        d = np.where(mask, d, 1.0).astype(np.float32).astype(np.float64)
        levels.append((d, ce, cs, mask))
    return levels


def _gs_sweep_ref(d, ce, cs, x, b, order):
    ny, nx = d.shape
    for i in order(ny):
        for j in order(nx):
            s = b[i, j]
            if j + 1 < nx:
                s += ce[i, j] * x[i, j + 1]
            if j > 0:
                s += ce[i, j - 1] * x[i, j - 1]
            if i + 1 < ny:
                s += cs[i, j] * x[i + 1, j]
            if i > 0:
                s += cs[i - 1, j] * x[i - 1, j]
            x[i, j] = s / d[i, j]


def mg_vcycle_ref(res, levels, k=0):
    """Plain-numpy twin of :func:`mg_vcycle`: z = M^-1 res (``levels`` from
    :func:`mg_levels_ref`)."""
    d, ce, cs, mask = levels[k]
    b = np.where(mask, res, 0.0)
    if k == len(levels) - 1 and k > 0:
        x = np.zeros(b.shape)
        for _ in range(MG_COARSE_SWEEPS):
            _gs_sweep_ref(d, ce, cs, x, b, range)
            _gs_sweep_ref(d, ce, cs, x, b, lambda n: range(n - 1, -1, -1))
        return x
    x0 = MG_OMEGA * b / d
    y = x0
    if k + 1 < len(levels):
        shape = levels[k + 1][0].shape
        bc = _aggregate_ref(b - _apply_ref(d, ce, cs, x0), shape).astype(np.float32)
        xc = mg_vcycle_ref(bc.astype(np.float64), levels, k + 1).astype(np.float32)
        y = x0 + np.where(mask, np.repeat(np.repeat(xc, 2, 0), 2, 1)[:b.shape[0], :b.shape[1]],
                          0.0)
    return np.where(mask, y + MG_OMEGA * (b - _apply_ref(d, ce, cs, y)) / d, 0.0)


def backward_euler_solve_mg_ref(c, out, labels, faces, n_sinus, source_per_h, uptake_per_h,
                                decay_per_h, clearance_per_h, dt_h, r, tol, max_iter):
    """Plain-numpy twin of :func:`backward_euler_solve_mg` (same arguments, no scratch)."""
    f = faces.astype(np.int64)
    n_open = (f & 1) + ((f >> 1) & 1) + ((f >> 2) & 1) + ((f >> 3) & 1)
    lam = decay_per_h + clearance_per_h * n_sinus.astype(np.float64) + uptake_per_h
    marrow = labels == 0
    diag = np.where(marrow, 1.0 + dt_h * lam + r * n_open, 1.0)
    rhs = np.where(marrow, c + dt_h * source_per_h, 0.0)
    levels = mg_levels_ref(diag, labels, faces, r)
    d, ce, cs, _ = levels[0]
    x = np.where(marrow, c, 0.0).astype(np.float64)
    res = rhs - _apply_ref(d, ce, cs, x)
    rr = float(np.sum(res * res))
    stop = tol * tol * float(np.sum(rhs * rhs))
    it = 0
    if rr > stop:
        z = mg_vcycle_ref(res, levels)
        p = z.copy()
        rz = float(np.sum(res * z))
        while rr > stop and it < max_iter and rz > 0.0:
            it += 1
            q = _apply_ref(d, ce, cs, p)
            pq = float(np.sum(p * q))
            if pq <= 0.0:
                break
            alpha = rz / pq
            x = x + alpha * p
            res = res - alpha * q
            rr = float(np.sum(res * res))
            if rr <= stop:
                break
            z = mg_vcycle_ref(res, levels)
            rz_new = float(np.sum(res * z))
            p = z + (rz_new / rz) * p
            rz = rz_new
    out[...] = np.maximum(x, 0.0)
    return it
