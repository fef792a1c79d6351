"""Conjugate gradients for the backward-Euler field step, preconditioned by exact solves on
the marrow's compartments.

Why: with a Jacobi preconditioner the CG iteration count of a backward-Euler step grows like
sqrt(8 r) (r = D dt / dx^2): ~150 iterations per hourly TGF-β1 solve and ~200-250 for the
mitogen (r = 360) whatever the warm start (docs/performance.md, "Faster fields"). A 2x2-
aggregation multigrid V-cycle (the former kernels/multigrid.py, commit e99c1e7) only brought
that to ~50, each costing ~3 Jacobi iterations, and no smoother or prolongation change got it
much below ~25: diffusion never crosses bone or sinusoid lumen, and the 1-voxel sinusoid walls
cut the marrow into closed compartments (aml_progression at 1001²: 12 320 of them, at most 103 voxels and
15 voxels across, an envelope of ~6 per voxel). The matrix is block diagonal, one small block
per compartment, and the error left to CG is each compartment's nearly constant mode, which
structured coarse grids, mixing compartments across the walls, cannot represent. A block that
small is cheap to solve exactly: ~31 multiply-adds per voxel.

So each solve

1. partitions the marrow into its connected components (4-neighbours through open faces;
   :func:`cp_subdomains`, serial, redone only when the geometry changes). A component with at
   most :data:`CP_MAX_VOXELS` voxels whose bounding box has a short side of at most
   :data:`CP_MAX_BAND` is a *subdomain*; larger ones are left to step 3;
2. solves every subdomain's block exactly (:func:`cp_block_solve`: an envelope Cholesky
   factorisation in float64, voxels numbered along the box's short side so the envelope is
   at most that side, made afresh each solve: nothing is stored). As the subdomains are whole
   components, this is one CG step with M^-1 = A^-1 on them, and it leaves their residual at
   rounding level;
3. if some component was too large, continues by Jacobi-preconditioned CG (M^-1 = diag^-1),
   warm-started from step 2: the subdomains are decoupled and already solved, so its
   iterations are those Jacobi-PCG needs on the large components alone. On such geometry the
   cost is that of Jacobi-PCG plus step 2.

Stopping rule (||residual||_2 <= tol ||rhs||_2 over the whole grid), tolerance, warm start
and final clip at 0 are those of :func:`marrow_abm.kernels.diffusion.backward_euler_solve`,
so both solve the same system to the same relative residual. Every parallel kernel writes
each output element in one iteration (one row, or one group of subdomains) and adds partial
sums in a fixed order, so the result is bitwise independent of the thread count.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from marrow_abm.kernels.diffusion import EAST, NORTH, SOUTH, WEST, _be_matvec_row, be_voxel

#: A connected marrow component is solved directly when it has at most this many voxels ...
CP_MAX_VOXELS = 4096
#: ... and the short side of its bounding box (which bounds its factor's envelope, so the
#: cost per voxel is at most ~CP_MAX_BAND² / 2) is at most this.
CP_MAX_BAND = 32
#: Subdomains per parallel task of the block solve (each task allocates its own scratch).
CP_GROUP = 64
#: ``ids`` value of marrow voxels in components too large to solve directly.
CP_LARGE = -2


class CompartmentScratch:
    """Scratch of :func:`backward_euler_solve_cp`, shared by every field of a grid.

    ``ids``: int32 (ny, nx), each marrow voxel's subdomain (:data:`CP_LARGE` in a component
    too large, -1 outside marrow); ``faces``: int8 (ny, nx), the open faces the partition was
    built from; ``sub``, ``n_large``: :func:`cp_subdomains`'s result (None before the first
    solve). The partition is rebuilt only when the marrow mask or the faces change. 5 B per
    voxel in all.
    """

    def __init__(self, shape):
        self.shape = (int(shape[0]), int(shape[1]))
        self.ids = np.full(self.shape, -1, np.int32)
        self.faces = np.zeros(self.shape, np.int8)
        self.sub = None
        self.n_large = 0

    def partition(self, labels, faces):
        """``(ids, sub, n_large)`` for this geometry, rebuilt if it changed."""
        if self.sub is None or not _same_geometry(labels, faces, self.ids, self.faces):
            self.sub, self.n_large = cp_subdomains(labels, faces, self.ids)
            np.copyto(self.faces, faces)
        return self.ids, self.sub, self.n_large


def cp_work(shape):
    """Scratch for :func:`backward_euler_solve_cp` on a ``shape`` grid (:class:`CompartmentScratch`)."""
    return CompartmentScratch(shape)


# --------------------------------------------------------------------------------------------
# Subdomains
# --------------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _push_open(faces, ids, i, j, nx, to_id, queue, tail):
    """Append the unvisited (id -1) open-face neighbours of (i, j) to ``queue``, labelled
    ``to_id``; returns the new tail."""
    f = faces[i, j]
    for q in range(4):
        if q == 0:
            bit, ii, jj = WEST, i, j - 1
        elif q == 1:
            bit, ii, jj = EAST, i, j + 1
        elif q == 2:
            bit, ii, jj = NORTH, i - 1, j
        else:
            bit, ii, jj = SOUTH, i + 1, j
        if f & bit and ids[ii, jj] == -1:
            ids[ii, jj] = to_id
            queue[tail] = ii * nx + jj
            tail += 1
    return tail


@njit(cache=True, error_model="numpy")
def _append(sub, n, i0, j0, h, w):
    if n == sub.shape[0]:
        grown = np.empty((2 * sub.shape[0], 4), np.int32)
        grown[:n] = sub[:n]
        sub = grown
    sub[n, 0] = i0
    sub[n, 1] = j0
    sub[n, 2] = h
    sub[n, 3] = w
    return sub


@njit(cache=True, parallel=True, error_model="numpy")
def _same_geometry(labels, faces, ids, faces_seen):
    """Whether ``ids`` (marrow where != -1) and ``faces_seen`` still describe the grid.

    Checked at every ``FieldSet.step``, so it is one row per parallel iteration, counting the
    row's mismatches without a branch (vectorised) rather than stopping at the first.
    """
    ny, nx = labels.shape
    bad = np.empty(ny, np.int64)
    for i in prange(ny):
        n = 0
        for j in range(nx):
            n += ((labels[i, j] == 0) != (ids[i, j] != -1)) | (faces[i, j] != faces_seen[i, j])
        bad[i] = n
    for i in range(ny):
        if bad[i] != 0:
            return False
    return True


def _same_geometry_ref(labels, faces, ids, faces_seen):
    """Plain-numpy twin of :func:`_same_geometry`."""
    return bool(np.array_equal(labels == 0, ids != -1) and np.array_equal(faces, faces_seen))


@njit(cache=True, error_model="numpy")
def cp_subdomains(labels, faces, ids):
    """Label the connected components of marrow (serial; numbered in the order a row-major
    scan meets them).

    Args:
        labels: int8 (ny, nx), 0 on marrow.
        faces: int8 (ny, nx) open-face bits.
        ids: int32 (ny, nx), receives each marrow voxel's subdomain, :data:`CP_LARGE` in a
            component too large to be one, and -1 outside marrow.

    Returns:
        ``(sub, n_large)``: int32 (n_sub, 4) holding each subdomain's bounding box (first
        row, first column, height, width), and the number of marrow voxels in components too
        large.
    """
    ny, nx = labels.shape
    for i in range(ny):
        for j in range(nx):
            ids[i, j] = -1 if labels[i, j] == 0 else -3
    queue = np.empty(ny * nx, np.int32)
    sub = np.empty((256, 4), np.int32)
    n = 0
    n_large = 0
    for i0 in range(ny):
        for j0 in range(nx):
            if ids[i0, j0] != -1:
                continue
            ids[i0, j0] = n
            queue[0] = i0 * nx + j0
            head, tail = 0, 1
            imin, imax, jmin, jmax = i0, i0, j0, j0
            while head < tail:
                v = queue[head]
                head += 1
                i = v // nx
                j = v - i * nx
                imin = min(imin, i)
                imax = max(imax, i)
                jmin = min(jmin, j)
                jmax = max(jmax, j)
                tail = _push_open(faces, ids, i, j, nx, n, queue, tail)
            h = imax - imin + 1
            w = jmax - jmin + 1
            if tail <= CP_MAX_VOXELS and min(h, w) <= CP_MAX_BAND:
                sub = _append(sub, n, imin, jmin, h, w)
                n += 1
            else:
                n_large += tail
                for k in range(tail):
                    v = queue[k]
                    ids[v // nx, v % nx] = CP_LARGE
    for i in range(ny):
        for j in range(nx):
            if ids[i, j] == -3:
                ids[i, j] = -1
    return sub[:n].copy(), n_large


# --------------------------------------------------------------------------------------------
# Exact subdomain solves
# --------------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _solve_block(s, i0, j0, h, w, nx, t, diag, faces, r, ids, z, line, vox, first, ptr,
                 env, inv):
    """z = A_ss^-1 t on subdomain ``s`` with bounding box (i0, j0, h, w) of a grid with
    ``nx`` columns; the arrays are flat views.

    The subdomain's voxels are numbered in scan order along the box's short side, so each
    couples only to the previous one on its line and to one on the previous line; the
    Cholesky factor of the block keeps that envelope (row k from column ``first[k]``), stored
    row after row in ``env`` from ``ptr[k]``, with 1 / L_kk in ``inv``. ``reassoc`` lets the
    short dot products vectorise (fixed at compile time, so the result does not depend on the
    thread count)."""
    col_major = w > h
    if col_major:
        n_out, n_in, step_out, step_in = w, h, 1, nx
        prev_in, prev_out = NORTH, WEST
    else:
        n_out, n_in, step_out, step_in = h, w, nx, 1
        prev_in, prev_out = WEST, NORTH
    # number the voxels and lay out the envelope; line[0/1] = numbers on the previous /
    # current line (-1 off the subdomain)
    k = 0
    total = 0
    for b in range(n_in):
        line[b] = -1
    for a in range(n_out):
        cur = (a & 1) * n_in
        prv = n_in - cur
        v = (i0 * nx + j0) + a * step_out
        for b in range(n_in):
            if ids[v] != s:
                line[cur + b] = -1
                v += step_in
                continue
            f = faces[v]
            fk = k
            in_open = f & prev_in and b > 0 and line[cur + b - 1] >= 0
            if in_open:
                fk = k - 1
            out_open = f & prev_out and a > 0 and line[prv + b] >= 0
            if out_open:
                fk = line[prv + b]
            line[cur + b] = k
            vox[k] = v
            first[k] = fk
            ptr[k] = total
            for m in range(total, total + k - fk):
                env[m] = 0.0
            if in_open:
                env[total + k - 1 - fk] = -r
            if out_open:
                env[total] = -r
            env[total + k - fk] = diag[v]
            total += k - fk + 1
            k += 1
            v += step_in
    n = k
    # factor row by row, forward substitution fused (rhs in inv's second half)
    for k in range(n):
        fk = first[k]
        pk = ptr[k] - fk           # L[k, m] = env[pk + m]
        for c in range(fk, k):
            fc = first[c]
            pc = ptr[c] - fc
            sv = env[pk + c]
            for m in range(max(fk, fc), c):
                sv -= env[pk + m] * env[pc + m]
            env[pk + c] = sv * inv[c]
        sv = env[pk + k]
        yv = t[vox[k]]
        for m in range(fk, k):
            lv = env[pk + m]
            sv -= lv * lv
            yv -= lv * inv[n + m]
        ik = 1.0 / math.sqrt(sv)
        inv[k] = ik
        inv[n + k] = yv * ik
    # back substitution, column by column
    for k in range(n - 1, -1, -1):
        xv = inv[n + k] * inv[k]
        inv[n + k] = xv
        fk = first[k]
        pk = ptr[k] - fk
        for m in range(fk, k):
            inv[n + m] -= env[pk + m] * xv
    for k in range(n):
        z[vox[k]] = inv[n + k]


@njit(cache=True, parallel=True, error_model="numpy")
def cp_block_solve(t, diag, faces, r, ids, sub, z):
    """z = A_ss^-1 t on every subdomain s (the exact inverse of its block of the matrix:
    ``diag`` on the diagonal, -r on open faces). Writes the subdomains' voxels only."""
    ny, nx = ids.shape
    n_sub = sub.shape[0]
    n_groups = (n_sub + CP_GROUP - 1) // CP_GROUP
    tf = t.reshape(ny * nx)
    zf = z.reshape(ny * nx)
    df = diag.reshape(ny * nx)
    ff = faces.reshape(ny * nx)
    idf = ids.reshape(ny * nx)
    for g in prange(n_groups):
        s0 = g * CP_GROUP
        s1 = min(s0 + CP_GROUP, n_sub)
        n_max = 1
        band = 1
        for s in range(s0, s1):
            n_max = max(n_max, min(sub[s, 2] * sub[s, 3], CP_MAX_VOXELS))
            band = max(band, min(sub[s, 2], sub[s, 3]))
        line = np.empty(2 * band, np.int64)
        vox = np.empty(n_max, np.int64)
        first = np.empty(n_max, np.int64)
        ptr = np.empty(n_max, np.int64)
        env = np.empty(n_max * (band + 1))
        inv = np.empty(2 * n_max)
        for s in range(s0, s1):
            _solve_block(s, sub[s, 0], sub[s, 1], sub[s, 2], sub[s, 3], nx, tf, df, ff,
                         r, idf, zf, line, vox, first, ptr, env, inv)


@njit(cache=True, parallel=True, error_model="numpy")
def _precondition(res, diag, labels, ids, large, z, part, p, copy_p):
    """Complete z after :func:`cp_block_solve` (``large`` False: z = 0 off the subdomains)
    or make it Jacobi on the large components (``large`` True: z = res / diag on
    :data:`CP_LARGE` voxels, 0 elsewhere); part[i] = row i's sum of res * z. With ``copy_p``
    also p = z (the first search direction), in the same pass."""
    ny, nx = z.shape
    for i in prange(ny):
        sv = 0.0
        for j in range(nx):
            if labels[i, j] != 0:
                z[i, j] = 0.0
            elif ids[i, j] == CP_LARGE:
                z[i, j] = res[i, j] / diag[i, j] if large else 0.0
            elif large:
                z[i, j] = 0.0
            sv += res[i, j] * z[i, j]
        part[i] = sv
        if copy_p:
            for j in range(nx):
                p[i, j] = z[i, j]


# --------------------------------------------------------------------------------------------
# Conjugate gradients
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
            if labels[i, j] != 0:
                diag[i, j] = 1.0
                res[i, j] = 0.0
                out[i, j] = 0.0
                continue
            m, rhs, rv = be_voxel(c, faces, n_sinus, source_per_h, uptake_per_h, decay_per_h,
                                  clearance_per_h, dt_h, r, i, j)
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


@njit(cache=True, parallel=True, error_model="numpy")
def _jacobi_start(res, diag, ids, inv, z, part):
    """inv = 1 / diag on marrow and 0 elsewhere; z = inv res; part[i] = row i's sum of
    res * z."""
    ny, nx = res.shape
    for i in prange(ny):
        sv = 0.0
        for j in range(nx):
            iv = 1.0 / diag[i, j] if ids[i, j] != -1 else 0.0
            inv[i, j] = iv
            zv = iv * res[i, j]
            z[i, j] = zv
            sv += res[i, j] * zv
        part[i] = sv


@njit(cache=True, parallel=True, error_model="numpy")
def _cg_update_jacobi(out, res, p, q, alpha, inv, z, part_r, part_z):
    """out += alpha p, res -= alpha q, z = inv res (z may be q); row sums of res^2 and
    res * z."""
    ny, nx = out.shape
    for i in prange(ny):
        sr = 0.0
        sz = 0.0
        for j in range(nx):
            out[i, j] += alpha * p[i, j]
            rv = res[i, j] - alpha * q[i, j]
            res[i, j] = rv
            zv = inv[i, j] * rv
            z[i, j] = zv
            sr += rv * rv
            sz += rv * zv
        part_r[i] = sr
        part_z[i] = sz


@njit(cache=True, error_model="numpy")
def _direct(res, diag, labels, faces, r, ids, sub, z, part, p, copy_p):
    """z = the subdomains' exact solve of res, 0 elsewhere (and p = z with ``copy_p``);
    returns sum(res * z)."""
    cp_block_solve(res, diag, faces, r, ids, sub, z)
    _precondition(res, diag, labels, ids, False, z, part, p, copy_p)
    return _sum(part, res.shape[0])


@njit(cache=True, error_model="numpy")
def _solve_cp_jit(c, out, labels, faces, n_sinus, source_per_h, uptake_per_h, decay_per_h,
                  clearance_per_h, dt_h, r, tol, max_iter, work, ids, sub, n_large):
    ny = c.shape[0]
    diag = work[0]
    res = work[2]
    p = work[3]
    # A p is dead once the residual is updated: the preconditioner writes z over it
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
    if rr <= stop:
        _clip0(out)
        return it
    # the subdomains: PCG with M^-1 = their exact inverse (0 elsewhere). Without large
    # components that is A^-1, so the first step converges (more only for a tol near
    # rounding); with them, one step, which solves the subdomains
    large = n_large > 0
    rz = _direct(res, diag, labels, faces, r, ids, sub, z, part_a, p, True)
    while rr > stop and it < max_iter and rz > 0.0:
        it += 1
        _cg_matvec(p, q, diag, labels, r, part_a)
        pq = _sum(part_a, ny)
        if pq <= 0.0:
            break
        _cg_update(out, res, p, q, rz / pq, part_a)
        rr = _sum(part_a, ny)
        if rr <= stop or large:
            break
        rz_new = _direct(res, diag, labels, faces, r, ids, sub, z, part_a, p, False)
        _cg_direction(p, z, rz_new / rz)
        rz = rz_new
    if large and rr > stop:
        # the large components: Jacobi-PCG from there on (z = res / diag on all marrow: the
        # subdomains' residual is at rounding level, but in float32 that can exceed tol)
        inv = work[1]
        _jacobi_start(res, diag, ids, inv, z, part_a)
        rz = _sum(part_a, ny)
        p[:, :] = z
        while rr > stop and it < max_iter and rz > 0.0:
            it += 1
            _cg_matvec(p, q, diag, labels, r, part_a)
            pq = _sum(part_a, ny)
            if pq <= 0.0:
                break
            _cg_update_jacobi(out, res, p, q, rz / pq, inv, z, part_a, part_b)
            rr = _sum(part_a, ny)
            if rr <= stop:
                break
            rz_new = _sum(part_b, ny)
            _cg_direction(p, z, rz_new / rz)
            rz = rz_new
    _clip0(out)
    return it


def backward_euler_solve_cp(c, out, labels, faces, n_sinus, source_per_h, uptake_per_h,
                            decay_per_h, clearance_per_h, dt_h, r, tol, max_iter, work,
                            cp_scratch, partition=None):
    """One backward-Euler step by CG preconditioned with exact solves on the compartments.

    Same system, arguments, stopping rule and return value as
    :func:`marrow_abm.kernels.diffusion.backward_euler_solve` (the direct step counts as one
    iteration; ``out`` may be ``c`` likewise: ``_cg_init`` is the only reader of ``c``);
    ``work`` (5, ny, nx) holds the diagonal, (unused), the residual, the direction and A p
    (the preconditioned residual); ``cp_scratch`` is :func:`cp_work` of the grid's shape.
    ``partition``: ``cp_scratch.partition(labels, faces)`` when the caller has just
    computed it (``FieldSet.step`` checks the grid once for all its fields).
    """
    if partition is None:
        partition = cp_scratch.partition(labels, faces)
    ids, sub, n_large = partition
    return _solve_cp_jit(c, out, labels, faces, n_sinus, source_per_h, uptake_per_h,
                         float(decay_per_h), float(clearance_per_h), float(dt_h), float(r),
                         float(tol), int(max_iter), work, ids, sub, int(n_large))


# --------------------------------------------------------------------------------------------
# Plain-numpy twins
# --------------------------------------------------------------------------------------------

def cp_subdomains_ref(labels, faces):
    """Plain-Python twin of :func:`cp_subdomains`: ``(ids, sub, n_large)``."""
    ny, nx = labels.shape
    f = faces.astype(np.int64)
    ids = np.where(labels == 0, -1, -3).astype(np.int64)
    steps = ((int(WEST), 0, -1), (int(EAST), 0, 1), (int(NORTH), -1, 0), (int(SOUTH), 1, 0))
    sub, n_large = [], 0
    for i0 in range(ny):
        for j0 in range(nx):
            if ids[i0, j0] != -1:
                continue
            ids[i0, j0] = len(sub)
            queue, head = [(i0, j0)], 0
            while head < len(queue):
                i, j = queue[head]
                head += 1
                for bit, di, dj in steps:
                    if f[i, j] & bit and ids[i + di, j + dj] == -1:
                        ids[i + di, j + dj] = len(sub)
                        queue.append((i + di, j + dj))
            rows = [q[0] for q in queue]
            cols = [q[1] for q in queue]
            h, w = max(rows) - min(rows) + 1, max(cols) - min(cols) + 1
            if len(queue) <= CP_MAX_VOXELS and min(h, w) <= CP_MAX_BAND:
                sub.append((min(rows), min(cols), h, w))
            else:
                n_large += len(queue)
                ids[tuple(np.array(queue).T)] = CP_LARGE
    ids[ids == -3] = -1
    return ids, np.array(sub, dtype=np.int64).reshape(-1, 4), n_large


def _fine_apply_ref(diag, labels, faces, r, x):
    """A x (identity rows off marrow)."""
    f = faces.astype(np.int64)
    y = diag * x
    y[:, 1:] -= np.where(f[:, 1:] & WEST, r * x[:, :-1], 0.0)
    y[:, :-1] -= np.where(f[:, :-1] & EAST, r * x[:, 1:], 0.0)
    y[1:] -= np.where(f[1:] & NORTH, r * x[:-1], 0.0)
    y[:-1] -= np.where(f[:-1] & SOUTH, r * x[1:], 0.0)
    return np.where(labels == 0, y, x)


def cp_block_solve_ref(t, diag, faces, r, ids):
    """Plain-numpy twin of :func:`cp_block_solve`: a dense solve per subdomain, 0 elsewhere."""
    f = faces.astype(np.int64)
    z = np.zeros(t.shape)
    for s in range(int(ids.max()) + 1):
        ii, jj = np.nonzero(ids == s)
        index = {(a, b): k for k, (a, b) in enumerate(zip(ii, jj))}
        a_ss = np.diag(diag[ii, jj].astype(np.float64))
        for k, (a, b) in enumerate(zip(ii, jj)):
            for bit, da, db in ((int(EAST), 0, 1), (int(SOUTH), 1, 0)):
                m = index.get((a + da, b + db))
                if f[a, b] & bit and m is not None:
                    a_ss[k, m] = a_ss[m, k] = -r
        z[ii, jj] = np.linalg.solve(a_ss, t[ii, jj].astype(np.float64))
    return z


def backward_euler_solve_cp_ref(c, out, labels, faces, n_sinus, source_per_h, uptake_per_h,
                                decay_per_h, clearance_per_h, dt_h, r, tol, max_iter):
    """Plain-numpy twin of :func:`backward_euler_solve_cp` (same arguments, no scratch)."""
    f = faces.astype(np.int64)
    n_open = (f & 1) + ((f >> 1) & 1) + ((f >> 2) & 1) + ((f >> 3) & 1)
    lam = decay_per_h + clearance_per_h * n_sinus.astype(np.float64) + uptake_per_h
    marrow = labels == 0
    diag = np.where(marrow, 1.0 + dt_h * lam + r * n_open, 1.0)
    rhs = np.where(marrow, c + dt_h * source_per_h, 0.0)
    ids, _, n_large = cp_subdomains_ref(labels, faces)
    x = np.where(marrow, c, 0.0).astype(np.float64)
    res = rhs - _fine_apply_ref(diag, labels, faces, r, x)
    rr = float(np.sum(res * res))
    stop = tol * tol * float(np.sum(rhs * rhs))
    it = 0
    if rr <= stop:
        out[...] = np.maximum(x, 0.0)
        return it

    def direct(v):
        return cp_block_solve_ref(v, diag, faces, r, ids)

    def jacobi(v):
        return np.where(marrow, v / diag, 0.0)

    for precondition, n_steps in ((direct, 1 if n_large else max_iter),
                                  (jacobi, max_iter if n_large else 0)):
        z = precondition(res)
        p = z.copy()
        rz = float(np.sum(res * z))
        done = 0
        while rr > stop and it < max_iter and rz > 0.0 and done < n_steps:
            it += 1
            done += 1
            q = _fine_apply_ref(diag, labels, faces, r, p)
            pq = float(np.sum(p * q))
            if pq <= 0.0:
                break
            alpha = rz / pq
            x = x + alpha * p
            res = res - alpha * q
            rr = float(np.sum(res * res))
            if rr <= stop or done == n_steps:
                break
            z = precondition(res)
            rz_new = float(np.sum(res * z))
            p = z + (rz_new / rz) * p
            rz = rz_new
    out[...] = np.maximum(x, 0.0)
    return it
