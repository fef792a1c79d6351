"""Diffusion-reaction kernels for the marrow fields, each beside its plain-numpy ``_ref`` twin.

Every field obeys dc/dt = D lap(c) - lambda c + s on the marrow voxels of a 2-D label grid
(0 marrow, 1 bone, 2 sinusoid), where lambda = decay + uptake + clearance x (number of sinusoid
neighbours) is a per-voxel loss rate (1/h) and s a per-voxel source (concentration/h).

Conventions shared by all kernels (the solver in ``marrow_abm.fields`` keeps them):

- Arrays are C-contiguous ``(ny, nx)``; fields are float64 or float32.
- ``faces`` (int8) holds one bit per open face of a marrow voxel: ``WEST``, ``EAST``, ``NORTH``
  (row i-1), ``SOUTH`` (row i+1). A face is open only between two marrow voxels, so bone,
  sinusoid lumen and the grid edge are all no-flux for diffusion (clearance at sinusoids is the
  separate first-order sink above). Non-marrow voxels have ``faces == 0``.
- Fields are exactly 0 outside marrow. The explicit stencil relies on it: the sum over open
  faces of c_neighbour equals the plain 4-neighbour sum, so the inner loop needs no branch.
- ``r`` is the dimensionless diffusion number D h / dx^2 of one (sub-)step of length h.

Reaction is integrated exactly per voxel over a step of length h,
c -> c_inf + (c - c_inf) exp(-lambda h) with c_inf = s / lambda, written as
c -> retain * c + gain. ``retain`` is in [0, 1] and ``gain`` >= 0 on marrow and both are 0
elsewhere, so no step can create a negative value however large the uptake.

Kernels write into ``out=``, draw no random numbers, and use ``prange`` only where every output
element is written by exactly one iteration, so results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from marrow_abm.kernels.lod_simd import X_BAND_LINES, lod_x_band

WEST = np.int8(1)
EAST = np.int8(2)
NORTH = np.int8(4)
SOUTH = np.int8(8)

#: Rows per band of the LOD x solve (fixed by the vector code in ``lod_simd``: four groups of
#: four lanes, enough independent recurrences to hide the multiply-add latency).
LOD_LINES = X_BAND_LINES
#: Extra values per band-buffer row (one 64-byte line in float64): see ``_lod_step_jit``.
_LOD_ROW_PAD = 8


# --------------------------------------------------------------------------------------------
# Geometry helpers (plain numpy: run once per label grid, not in the hot path)
# --------------------------------------------------------------------------------------------

def open_faces(labels: np.ndarray) -> np.ndarray:
    """Bit mask of the faces through which each marrow voxel exchanges by diffusion.

    Args:
        labels: int array (ny, nx); 0 marrow, 1 bone, 2 sinusoid.

    Returns:
        int8 array (ny, nx) of ``WEST | EAST | NORTH | SOUTH`` bits; 0 on non-marrow voxels.
    """
    m = labels == 0
    faces = np.zeros(labels.shape, dtype=np.int8)
    both_x = m[:, 1:] & m[:, :-1]      # face between (i, j-1) and (i, j)
    both_y = m[1:, :] & m[:-1, :]      # face between (i-1, j) and (i, j)
    faces[:, 1:] |= np.where(both_x, WEST, 0).astype(np.int8)
    faces[:, :-1] |= np.where(both_x, EAST, 0).astype(np.int8)
    faces[1:, :] |= np.where(both_y, NORTH, 0).astype(np.int8)
    faces[:-1, :] |= np.where(both_y, SOUTH, 0).astype(np.int8)
    return faces


def sinusoid_neighbours(labels: np.ndarray) -> np.ndarray:
    """Number of 4-neighbours that are sinusoid lumen, for each marrow voxel.

    Args:
        labels: int array (ny, nx); 0 marrow, 1 bone, 2 sinusoid.

    Returns:
        int8 array (ny, nx) with values 0..4 on marrow voxels and 0 elsewhere.
    """
    s = (labels == 2).astype(np.int8)
    n = np.zeros(labels.shape, dtype=np.int8)
    n[:, 1:] += s[:, :-1]
    n[:, :-1] += s[:, 1:]
    n[1:, :] += s[:-1, :]
    n[:-1, :] += s[1:, :]
    n[labels != 0] = 0
    return n


def open_face_count(faces: np.ndarray) -> np.ndarray:
    """Number of open faces (0..4) of each voxel, as int8.

    Args:
        faces: int8 (ny, nx) open-face bits from :func:`open_faces`.
    """
    f = faces.astype(np.int64)
    return ((f & 1) + ((f >> 1) & 1) + ((f >> 2) & 1) + ((f >> 3) & 1)).astype(np.int8)


# --------------------------------------------------------------------------------------------
# Exact per-voxel reaction coefficients
# --------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def reaction_coefficients(labels, n_sinus, source_per_h, uptake_per_h, decay_per_h,
                          clearance_per_h, h, retain_out, gain_out):
    """Coefficients of the exact reaction step c -> retain * c + gain over a step of h hours.

    Args:
        labels: int8 (ny, nx); 0 marrow, 1 bone, 2 sinusoid.
        n_sinus: int8 (ny, nx), sinusoid neighbours of each marrow voxel.
        source_per_h: (ny, nx) secretion into each voxel, concentration/h (>= 0).
        uptake_per_h: (ny, nx) first-order uptake rate, 1/h (>= 0).
        decay_per_h: first-order decay rate k, 1/h.
        clearance_per_h: sinusoid clearance rate per sinusoid neighbour, 1/h.
        h: step length, hours.
        retain_out: (ny, nx) float, receives exp(-lambda h) on marrow, 0 elsewhere.
        gain_out: (ny, nx) float, receives s (1 - exp(-lambda h)) / lambda, 0 elsewhere.
    """
    ny, nx = labels.shape
    for i in prange(ny):
        for j in range(nx):
            if labels[i, j] != 0:
                retain_out[i, j] = 0.0
                gain_out[i, j] = 0.0
                continue
            lam = decay_per_h + clearance_per_h * n_sinus[i, j] + uptake_per_h[i, j]
            x = lam * h
            # -expm1 keeps (1 - e^-x)/lam accurate when x is tiny; lam == 0 is pure accumulation.
            one_minus = -np.expm1(-x)
            retain_out[i, j] = 1.0 - one_minus
            if x > 0.0:
                gain_out[i, j] = source_per_h[i, j] * (one_minus / lam)
            else:
                gain_out[i, j] = source_per_h[i, j] * h


def reaction_coefficients_ref(labels, n_sinus, source_per_h, uptake_per_h, decay_per_h,
                              clearance_per_h, h, retain_out, gain_out):
    """Plain-numpy twin of :func:`reaction_coefficients` (same arguments)."""
    marrow = labels == 0
    lam = decay_per_h + clearance_per_h * n_sinus.astype(np.float64) + uptake_per_h
    x = lam * h
    one_minus = -np.expm1(-x)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(x > 0.0, source_per_h * (one_minus / lam), source_per_h * h)
    retain_out[...] = np.where(marrow, 1.0 - one_minus, 0.0)
    gain_out[...] = np.where(marrow, gain, 0.0)
    return retain_out, gain_out


@njit(cache=True, parallel=True)
def copy_into(dst, src):
    """``dst[...] = src`` for (ny, nx) arrays, one row per iteration: the explicit solver's
    copy of its result back into the field is then shared by the numba threads (numpy's copy
    runs on one core)."""
    ny, nx = src.shape
    for i in prange(ny):
        for j in range(nx):
            dst[i, j] = src[i, j]


def copy_into_ref(dst, src):
    """Plain-numpy twin of :func:`copy_into`."""
    np.copyto(dst, src)
    return dst


# --------------------------------------------------------------------------------------------
# Explicit 5-point stencil (FTCS), temporally blocked
# --------------------------------------------------------------------------------------------

@njit(cache=True)
def _ftcs_row(up, mid, down, n_open_row, retain_row, gain_row, r, out_row):
    """One stencil row: out = retain * (c + r * sum_open(c_n - c)) + gain."""
    nx = mid.shape[0]
    tp = out_row.dtype.type
    one = tp(1.0)
    if nx == 1:
        s = up[0] + down[0]
        out_row[0] = retain_row[0] * (mid[0] * (one - r * tp(n_open_row[0])) + r * s) \
            + gain_row[0]
        return
    s = up[0] + down[0] + mid[1]
    out_row[0] = retain_row[0] * (mid[0] * (one - r * tp(n_open_row[0])) + r * s) \
        + gain_row[0]
    for j in range(1, nx - 1):
        s = up[j] + down[j] + mid[j - 1] + mid[j + 1]
        out_row[j] = retain_row[j] * (mid[j] * (one - r * tp(n_open_row[j])) + r * s) \
            + gain_row[j]
    j = nx - 1
    s = up[j] + down[j] + mid[j - 1]
    out_row[j] = retain_row[j] * (mid[j] * (one - r * tp(n_open_row[j])) + r * s) \
        + gain_row[j]


@njit(cache=True)
def _ftcs_band(c, out, n_open, retain, gain, r, n_steps, row0, row1, ring, zero):
    """Advance rows [row0, row1) of ``out`` by ``n_steps`` stencil steps from ``c``.

    Wavefront temporal blocking: level t (t = 0 is ``c``, t = n_steps is ``out``) computes
    one row per sweep position, lagging level t-1 by one row; intermediate levels live in
    three-row ring buffers, so ``c`` is read and ``out`` written once for all n_steps steps.
    Halo rows a band needs from its neighbours are recomputed, not shared, so bands are
    independent and every output row is written by exactly one band.
    """
    ny = c.shape[0]
    n = n_steps
    lo0 = max(0, row0 - n)
    hi0 = min(ny, row1 + n)
    for i in range(lo0, hi0 + n):
        for t in range(1, n + 1):
            j = i - (t - 1)                      # row of level t computed at this position
            lo_t = max(0, row0 - (n - t))
            hi_t = min(ny, row1 + (n - t))
            if j < lo_t or j >= hi_t:
                continue
            if t == 1:
                up = c[j - 1] if j > 0 else zero
                mid = c[j]
                down = c[j + 1] if j + 1 < ny else zero
            else:
                up = ring[t - 2, (j - 1) % 3] if j > 0 else zero
                mid = ring[t - 2, j % 3]
                down = ring[t - 2, (j + 1) % 3] if j + 1 < ny else zero
            dst = out[j] if t == n else ring[t - 1, j % 3]
            _ftcs_row(up, mid, down, n_open[j], retain[j], gain[j], r, dst)


@njit(cache=True, parallel=True)
def _ftcs_steps_jit(c, out, n_open, retain, gain, r, n_steps, n_threads):
    ny, nx = c.shape
    n_bands = min(max(1, ny // max(4 * n_steps, 16)), n_threads)
    zero = np.zeros(nx, dtype=c.dtype)
    ring = np.empty((n_bands, max(n_steps - 1, 1), 3, nx), dtype=c.dtype)
    for b in prange(n_bands):
        row0 = (ny * b) // n_bands
        row1 = (ny * (b + 1)) // n_bands
        _ftcs_band(c, out, n_open, retain, gain, r, n_steps, row0, row1, ring[b], zero)


def ftcs_steps(c, out, n_open, retain, gain, r, n_steps):
    """``n_steps`` explicit steps of the masked 5-point stencil with exact reaction.

    Each step is c <- retain * (c + r * sum over open faces (c_neighbour - c)) + gain.
    Stable and non-negative for r <= 1/4 (the solver guarantees it, not the kernel).

    Args:
        c: (ny, nx) field at the start, 0 outside marrow; not modified.
        out: (ny, nx) array of ``c.dtype``, receives the field after n_steps; must not
            alias ``c``.
        n_open: int8 (ny, nx) number of open faces (:func:`open_face_count`); a count,
            not the face bits, because it converts to float in one vectorised instruction.
        retain: (ny, nx) ``c.dtype``, exact reaction retention exp(-lambda h) per step.
        gain: (ny, nx) ``c.dtype``, exact reaction gain per step.
        r: diffusion number D h / dx^2 of one step (dimensionless), as ``c.dtype``.
        n_steps: number of steps (>= 1) fused into one pass over memory.

    The rows are cut into one band per numba thread; the band cut changes which halo rows
    are recomputed, never a computed value, so the result is independent of the threads.
    """
    _ftcs_steps_jit(c, out, n_open, retain, gain, r, int(n_steps), get_num_threads())
    return out


def ftcs_steps_ref(c, out, n_open, retain, gain, r, n_steps):
    """Plain-numpy twin of :func:`ftcs_steps` (same arguments), one step at a time."""
    n_open = n_open.astype(c.dtype)
    one = c.dtype.type(1.0)
    cur = c.copy()
    for _ in range(n_steps):
        p = np.pad(cur, 1)                       # zero pad: outside the grid is outside marrow
        s = p[:-2, 1:-1] + p[2:, 1:-1]
        s = s + p[1:-1, :-2]
        s = s + p[1:-1, 2:]
        cur = retain * (cur * (one - r * n_open) + r * s) + gain
    out[...] = cur
    return out


# --------------------------------------------------------------------------------------------
# Implicit locally-one-dimensional step (Thomas algorithm along x, then along y)
# --------------------------------------------------------------------------------------------

@njit(cache=True)
def lod_factor(faces, r, inv_x_out, inv_y_out):
    """Inverse Thomas pivots of (I - r Lx) and (I - r Ly) for every voxel.

    Along a grid line the matrix has diagonal 1 + r (number of open faces along that
    direction) and -r between voxels sharing an open face, so each line splits by itself
    into independent segments at bone, sinusoid and the grid edge; non-marrow voxels are
    identity rows. The pivots depend only on the geometry and r, so the solver computes
    them once.

    Args:
        faces: int8 (ny, nx) open-face bits.
        r: diffusion number D dt / dx^2 of the implicit step (dimensionless).
        inv_x_out: (ny, nx) float, receives 1 / pivot along x.
        inv_y_out: (ny, nx) float, receives 1 / pivot along y.
    """
    ny, nx = faces.shape
    r2 = r * r
    for i in range(ny):
        prev = 0.0
        for j in range(nx):
            f = faces[i, j]
            w = f & WEST
            e = (f & EAST) >> 1
            piv = 1.0 + r * ((w != 0) + e)
            if w != 0:
                piv -= r2 * prev
            prev = 1.0 / piv
            inv_x_out[i, j] = prev
    for j in range(nx):
        prev = 0.0
        for i in range(ny):
            f = faces[i, j]
            nn = (f & NORTH) != 0
            ss = (f & SOUTH) != 0
            piv = 1.0 + r * (nn + ss)
            if nn:
                piv -= r2 * prev
            prev = 1.0 / piv
            inv_y_out[i, j] = prev


def lod_factor_ref(faces, r, inv_x_out, inv_y_out):
    """Plain-numpy twin of :func:`lod_factor`, vectorised across lines."""
    ny, nx = faces.shape
    w = (faces & WEST) != 0
    e = (faces & EAST) != 0
    n = (faces & NORTH) != 0
    s = (faces & SOUTH) != 0
    prev = np.zeros(ny)
    for j in range(nx):
        piv = 1.0 + r * (w[:, j].astype(np.float64) + e[:, j])
        piv = piv - np.where(w[:, j], r * r * prev, 0.0)
        prev = 1.0 / piv
        inv_x_out[:, j] = prev
    prev = np.zeros(nx)
    for i in range(ny):
        piv = 1.0 + r * (n[i].astype(np.float64) + s[i])
        piv = piv - np.where(n[i], r * r * prev, 0.0)
        prev = 1.0 / piv
        inv_y_out[i] = prev
    return inv_x_out, inv_y_out


def lod_plan(faces: np.ndarray, r: float, dtype=np.float64):
    """Everything :func:`lod_step` needs that depends only on the geometry and r.

    Each inverse pivot carries its line's coupling flag in its sign bit (pivots are positive,
    so ``abs`` recovers them exactly): one stream per direction instead of a pivot and a flag.
    The x pivots are stored per band of ``LOD_LINES`` rows in the order the x solve reads them
    (``[band, column, line]``), the columns padded to a multiple of 4 and the rows past the
    grid padded as closed, empty lines. The y solve runs from both ends: rows above ``m`` (the
    first row of the lower half of the bands) are eliminated downwards, rows from ``m`` on
    upwards, and the two meet between rows m - 1 and m.

    Args:
        faces: int8 (ny, nx) open-face bits.
        r: diffusion number D dt / dx^2 of the step (dimensionless).
        dtype: float dtype of the field (and of the pivots: float32 pivots for a float64
            field were tried and left out, see docs/performance.md).

    Returns:
        ``(inv_x_t, inv_y, meet)``: signed inverse pivots along x (n_bands, nxp, LOD_LINES),
        negative where the west face is open; signed inverse pivots along y (ny, nx), negative
        where the face towards the row eliminated before is open (north above m, south from m
        on); per column, -1 / (1 - alpha beta) where rows m - 1 and m are coupled, else 1.
    """
    ny, nx = faces.shape
    lines = LOD_LINES
    nxp = -(-nx // 4) * 4
    n_bands = -(-ny // lines)
    m = (n_bands // 2) * lines
    inv_x = np.empty((ny, nx), dtype)
    inv_down = np.empty((ny, nx), dtype)
    lod_factor(faces, r, inv_x, inv_down)
    # pivots of the upward elimination = the downward pivots of the grid turned upside down
    flipped = faces[::-1] & ~(NORTH | SOUTH)
    flipped |= (faces[::-1] & NORTH) << 1
    flipped |= (faces[::-1] & SOUTH) >> 1
    unused = np.empty((ny, nx), dtype)
    inv_up = np.empty((ny, nx), dtype)
    lod_factor(np.ascontiguousarray(flipped), r, unused, inv_up)
    inv_up = inv_up[::-1]
    inv_y = np.empty((ny, nx), dtype)
    inv_y[:m] = np.where((faces[:m] & NORTH) != 0, -inv_down[:m], inv_down[:m])
    inv_y[m:] = np.where((faces[m:] & SOUTH) != 0, -inv_up[m:], inv_up[m:])
    meet = np.ones(nx, dtype)
    if m > 0:
        rr = dtype(r)
        gamma = dtype(1.0) / (dtype(1.0) - (rr * inv_up[m]) * (rr * inv_down[m - 1]))
        meet = np.where((faces[m] & NORTH) != 0, -gamma, meet).astype(dtype)
    signed_x = np.ones((n_bands * lines, nxp), dtype)
    signed_x[:ny, :nx] = np.where((faces & WEST) != 0, -inv_x, inv_x)
    inv_x_t = np.ascontiguousarray(signed_x.reshape(n_bands, lines, nxp).transpose(0, 2, 1))
    return inv_x_t, inv_y, meet


def lod_step(c, out, retain, gain, r, inv_x_t, inv_y, meet):
    """One LOD step: exact reaction, then implicit diffusion along x, then along y.

    Solves out = (I - r Ly)^-1 (I - r Lx)^-1 (retain * c + gain), the scheme of BioFVM
    (Ghaffarizadeh et al. 2016, Bioinformatics 32:1256) with the reaction integrated exactly.
    Unconditionally stable and non-negative (both tridiagonal matrices are M-matrices), but
    first order in time: its steady state drifts from the true one as r grows.

    Loop order (two passes over memory): pass 1 takes bands of ``LOD_LINES`` rows. The
    reaction streams each row into a small band buffer; the x solve
    (:func:`marrow_abm.kernels.lod_simd.lod_x_band`) transposes 4 x 4 blocks in registers so
    its recurrences run across columns with one vector lane per row, and writes the solved
    rows back into the buffer; then each row is eliminated along y against the row before it
    (a contiguous, vectorised loop) and written out. Pass 2 is the y back substitution, row by
    row. The y solve runs from both ends (rows above the middle downwards, the rest upwards,
    meeting in the middle), so the two halves are independent: two threads each take one half,
    and one thread does the same work in the same order of operations. Results are therefore
    bitwise identical for any thread count.

    Args:
        c: (ny, nx) field at the start, 0 outside marrow; not modified unless ``out is c``.
        out: (ny, nx) ``c.dtype``, receives the field after the step; may alias ``c``.
        retain: (ny, nx) exact reaction retention over the whole step.
        gain: (ny, nx) exact reaction gain over the whole step.
        r: diffusion number D dt / dx^2 of the step (cast to ``c.dtype``).
        inv_x_t, inv_y, meet: the geometry plan from :func:`lod_plan`.
    """
    _lod_step_jit(c, out, retain, gain, inv_x_t, inv_y, meet, c.dtype.type(r))
    return out


@njit(cache=True, fastmath={"contract"})
def _lod_band(c, out, retain, gain, iv_x, inv_y, r, i0, nk, tile, rows, down):
    """Rows i0..i0+nk: reaction into ``rows``, x solve in place, y elimination into out.

    ``rows`` is the band buffer (LOD_LINES, nxp + pad); rows nk.. and the padding columns
    hold zeros so the x solve sees closed, empty lines there. ``down``: eliminate each row
    against the one above (top half) or, rows taken bottom-up, the one below (bottom half).
    """
    ny, nx = c.shape
    nxp = iv_x.shape[0]
    zero = c.dtype.type(0.0)
    for k in range(nk):
        ck = c[i0 + k]
        ak = retain[i0 + k]
        gk = gain[i0 + k]
        uk = rows[k]
        for j in range(nx):
            uk[j] = ak[j] * ck[j] + gk[j]
        for j in range(nx, nxp):
            uk[j] = zero
    for k in range(nk, rows.shape[0]):
        rows[k, :nxp] = zero
    lod_x_band(rows.reshape(rows.size), iv_x.reshape(iv_x.size), tile.reshape(tile.size),
               rows.shape[1], nxp, r)
    step = 1 if down else -1
    kk = 0
    while kk < nk:
        k = kk if down else nk - 1 - kk
        i = i0 + k
        o = out[i]
        v = inv_y[i]
        u = rows[k]
        if (i == 0) if down else (i == ny - 1):
            for j in range(nx):
                o[j] = u[j] * abs(v[j])
            kk += 1
        elif kk + 1 < nk:
            # two rows per pass: the second is eliminated against the first in registers
            prev = out[i - step]
            o1 = out[i + step]
            v1 = inv_y[i + step]
            u1 = rows[k + step]
            for j in range(nx):
                s0 = v[j]
                s1 = v1[j]
                rw0 = r if s0 < zero else zero
                rw1 = r if s1 < zero else zero
                y0 = (u[j] + rw0 * prev[j]) * abs(s0)
                o[j] = y0
                o1[j] = (u1[j] + rw1 * y0) * abs(s1)
            kk += 2
        else:
            prev = out[i - step]
            for j in range(nx):
                s = v[j]
                rw = r if s < zero else zero
                o[j] = (u[j] + rw * prev[j]) * abs(s)
            kk += 1


@njit(cache=True, fastmath={"contract"})
def _lod_back_row(cur, done, inv, coupled_inv, r):
    """Back substitution of one row from its finished neighbour, for many lines at once.

    Columns run in descending order: the whole back pass then streams through memory in one
    direction, which the hardware prefetcher follows (measured ~10% faster).
    """
    zero = cur.dtype.type(0.0)
    for j in range(cur.shape[0] - 1, -1, -1):
        rw = r if coupled_inv[j] < zero else zero
        cur[j] = cur[j] + rw * abs(inv[j]) * done[j]


@njit(cache=True, parallel=True, fastmath={"contract"})
def _lod_step_jit(c, out, retain, gain, inv_x_t, inv_y, meet, r):
    ny, nx = c.shape
    n_bands, nxp, nl = inv_x_t.shape
    half = n_bands // 2
    m = half * nl
    zero = c.dtype.type(0.0)
    tiles = np.empty((2, nxp * nl), c.dtype)
    # band buffers: a row stride that is not a multiple of 4 KB keeps the 16 rows, read
    # together by the x solve, in different L1 sets
    rows = np.empty((2, nl, nxp + _LOD_ROW_PAD), c.dtype)
    edge = np.empty((2, nx), c.dtype)          # rows m - 1 and m after elimination
    # each half is one task: bands top-down above m, bottom-up from m on
    for t in prange(2):
        if t == 0:
            for b in range(half):
                _lod_band(c, out, retain, gain, inv_x_t[b], inv_y, r, b * nl, nl, tiles[0],
                          rows[0], True)
            if m > 0:
                edge[0] = out[m - 1]
        else:
            for b in range(n_bands - 1, half - 1, -1):
                _lod_band(c, out, retain, gain, inv_x_t[b], inv_y, r, b * nl,
                          min(nl, ny - b * nl), tiles[1], rows[1], False)
            edge[1] = out[m]
    # solve the 2x2 system of rows m - 1 and m per column, then back-substitute outwards;
    # both tasks compute x_m the same way from the saved edge rows, each writes its own row
    for t in prange(2):
        if t == 0:          # lower half first: with one thread its rows are still in cache
            if m > 0:
                o = out[m]
                y = edge[0]
                z = edge[1]
                v = inv_y[m]
                for j in range(nx):
                    g = meet[j]
                    if g < zero:
                        o[j] = (z[j] + r * abs(v[j]) * y[j]) * abs(g)
            for i in range(m + 1, ny):
                _lod_back_row(out[i], out[i - 1], inv_y[i], inv_y[i - 1], r)
        else:
            if m > 0:
                o = out[m - 1]
                y = edge[0]
                z = edge[1]
                v = inv_y[m]
                vy = inv_y[m - 1]
                for j in range(nx):
                    g = meet[j]
                    if g < zero:
                        xm = (z[j] + r * abs(v[j]) * y[j]) * abs(g)
                        o[j] = y[j] + r * abs(vy[j]) * xm
            for i in range(m - 2, -1, -1):
                _lod_back_row(out[i], out[i + 1], inv_y[i], inv_y[i + 1], r)


def lod_step_ref(c, out, retain, gain, r, inv_x_t, inv_y, meet):
    """Plain-numpy twin of :func:`lod_step` (same arguments), vectorised across lines.

    Same operations in the same order; the kernel fuses multiply-adds, so the two differ by
    rounding only.
    """
    ny, nx = c.shape
    r = c.dtype.type(r)
    zero = c.dtype.type(0.0)
    n_bands, nxp, lines = inv_x_t.shape
    m = (n_bands // 2) * lines
    signed_x = inv_x_t.transpose(0, 2, 1).reshape(-1, nxp)[:ny, :nx]
    ix, wx = np.abs(signed_x), np.where(signed_x < 0, r, zero)
    iy, wy = np.abs(inv_y), np.where(inv_y < 0, r, zero)
    u = retain * c + gain
    u[:, 0] = u[:, 0] * ix[:, 0]
    for j in range(1, nx):
        u[:, j] = (u[:, j] + wx[:, j] * u[:, j - 1]) * ix[:, j]
    for j in range(nx - 2, -1, -1):
        u[:, j] = u[:, j] + wx[:, j + 1] * ix[:, j] * u[:, j + 1]
    for i in range(m):                                  # upper half: eliminate downwards
        u[i] = u[i] * iy[i] if i == 0 else (u[i] + wy[i] * u[i - 1]) * iy[i]
    for i in range(ny - 1, m - 1, -1):                  # lower half: eliminate upwards
        u[i] = u[i] * iy[i] if i == ny - 1 else (u[i] + wy[i] * u[i + 1]) * iy[i]
    if m > 0:                                           # the two halves meet
        y, z = u[m - 1].copy(), u[m].copy()
        x_m = (z + r * iy[m] * y) * np.abs(meet)
        u[m] = np.where(meet < 0, x_m, z)
        u[m - 1] = np.where(meet < 0, y + r * iy[m - 1] * x_m, y)
    for i in range(m + 1, ny):
        u[i] = u[i] + wy[i - 1] * iy[i] * u[i - 1]
    for i in range(m - 2, -1, -1):
        u[i] = u[i] + wy[i + 1] * iy[i] * u[i + 1]
    out[...] = u
    return out


# --------------------------------------------------------------------------------------------
# Fully implicit backward-Euler step, solved matrix-free by Jacobi-preconditioned CG
# --------------------------------------------------------------------------------------------

@njit(cache=True, fastmath={"reassoc"})
def _be_matvec_row(up, mid, down, diag_row, labels_row, r, q_row):
    """q = A p on one row; returns sum(p * q) for the row.

    p is 0 outside marrow (the preconditioner keeps it there), so the sum over open faces
    is the plain 4-neighbour sum on marrow voxels, and non-marrow rows are identity rows.
    ``reassoc`` lets the row's dot product vectorise; rows are still added in a fixed order.
    """
    nx = mid.shape[0]
    s = 0.0
    for j in range(nx):
        nb = up[j] + down[j]
        if j > 0:
            nb += mid[j - 1]
        if j + 1 < nx:
            nb += mid[j + 1]
        rm = r if labels_row[j] == 0 else 0.0
        qv = diag_row[j] * mid[j] - rm * nb
        q_row[j] = qv
        s += mid[j] * qv
    return s


@njit(cache=True, inline="always")
def be_voxel(c, faces, n_sinus, source_per_h, uptake_per_h, decay_per_h, clearance_per_h, dt_h,
             r, i, j):
    """The backward-Euler row of marrow voxel (i, j) at the start of a solve: its diagonal
    m = 1 + dt (decay + clearance x sinusoid neighbours + uptake) + r x open faces, the
    right-hand side c + dt s and the residual rhs - A c. Shared by every CG solver's
    initialisation, so they all solve the same system."""
    lam = decay_per_h + clearance_per_h * n_sinus[i, j] + uptake_per_h[i, j]
    f = faces[i, j]
    nb = 0.0
    n_open = 0
    if f & WEST:
        nb += c[i, j - 1]
        n_open += 1
    if f & EAST:
        nb += c[i, j + 1]
        n_open += 1
    if f & NORTH:
        nb += c[i - 1, j]
        n_open += 1
    if f & SOUTH:
        nb += c[i + 1, j]
        n_open += 1
    m = 1.0 + dt_h * lam + r * n_open
    rhs = c[i, j] + dt_h * source_per_h[i, j]
    return m, rhs, rhs - (m * c[i, j] - r * nb)


@njit(cache=True, parallel=True)
def backward_euler_solve(c, out, labels, faces, n_sinus, source_per_h, uptake_per_h,
                         decay_per_h, clearance_per_h, dt_h, r, tol, max_iter, work):
    """One backward-Euler step of the whole diffusion-reaction system, by PCG.

    Solves (I + dt Lambda - r L) out = c + dt s, where L is the masked 5-point Laplacian
    (in voxel units) and Lambda the per-voxel loss rate. The matrix is symmetric positive
    definite and an M-matrix, so the exact solution is non-negative, and its fixed point is
    exactly the discrete steady state D L c - Lambda c + s = 0 whatever dt: the relaxed
    field does not depend on the step size (unlike LOD splitting). The solve is warm-started
    from ``c``; a Jacobi preconditioner absorbs the large, uneven diagonal that strong uptake
    produces. The last iterate is clipped at 0, which moves it by at most the solver tolerance.

    Dot products are summed per row and the row sums added in a fixed order, so the result
    is bitwise independent of the thread count.

    Args:
        c: (ny, nx) field at the start, 0 outside marrow; not modified unless it is ``out``.
        out: (ny, nx) ``c.dtype``, receives the field after dt_h. It may be ``c`` (the solve
            is then in place): ``c`` is read only in the first pass, which sets out = c voxel
            by voxel, so every value read is still the start value.
        labels: int8 (ny, nx); 0 marrow, 1 bone, 2 sinusoid.
        faces: int8 (ny, nx) open-face bits (:func:`open_faces`).
        n_sinus: int8 (ny, nx) sinusoid neighbours of each marrow voxel.
        source_per_h: (ny, nx) secretion, concentration/h (>= 0).
        uptake_per_h: (ny, nx) uptake rate, 1/h (>= 0).
        decay_per_h: decay rate, 1/h.
        clearance_per_h: sinusoid clearance rate per sinusoid neighbour, 1/h.
        dt_h: step length, hours.
        r: diffusion number D dt / dx^2 (dimensionless).
        tol: stop when ||residual||_2 <= tol * ||right-hand side||_2.
        max_iter: iteration cap.
        work: (5, ny, nx) scratch array of ``c.dtype``.

    Returns:
        Number of CG iterations taken.
    """
    ny, nx = c.shape
    diag = work[0]
    inv_m = work[1]
    res = work[2]
    p = work[3]
    q = work[4]
    part_a = np.zeros(ny)
    part_b = np.zeros(ny)
    part_c = np.zeros(ny)
    zero = np.zeros(nx, dtype=c.dtype)
    for i in prange(ny):
        sa = 0.0
        sb = 0.0
        sc = 0.0
        for j in range(nx):
            if labels[i, j] != 0:
                # outside the domain: identity row with zero right-hand side keeps it at 0
                diag[i, j] = 1.0
                inv_m[i, j] = 1.0
                res[i, j] = 0.0
                p[i, j] = 0.0
                out[i, j] = 0.0
                continue
            m, rhs, rv = be_voxel(c, faces, n_sinus, source_per_h, uptake_per_h, decay_per_h,
                                  clearance_per_h, dt_h, r, i, j)
            diag[i, j] = m
            inv_m[i, j] = 1.0 / m
            res[i, j] = rv
            zv = rv / m
            p[i, j] = zv
            out[i, j] = c[i, j]
            sa += rv * zv
            sb += rhs * rhs
            sc += rv * rv
        part_a[i] = sa
        part_b[i] = sb
        part_c[i] = sc
    rz = 0.0
    bb = 0.0
    rr = 0.0
    for i in range(ny):
        rz += part_a[i]
        bb += part_b[i]
        rr += part_c[i]
    stop = tol * tol * bb
    it = 0
    while rr > stop and it < max_iter and rz > 0.0:
        it += 1
        for i in prange(ny):
            up = p[i - 1] if i > 0 else zero
            down = p[i + 1] if i + 1 < ny else zero
            part_a[i] = _be_matvec_row(up, p[i], down, diag[i], labels[i], r, q[i])
        pq = 0.0
        for i in range(ny):
            pq += part_a[i]
        if pq <= 0.0:
            break
        alpha = rz / pq
        for i in prange(ny):
            sa = 0.0
            sc = 0.0
            for j in range(nx):
                out[i, j] += alpha * p[i, j]
                rv = res[i, j] - alpha * q[i, j]
                res[i, j] = rv
                sa += rv * rv * inv_m[i, j]
                sc += rv * rv
            part_a[i] = sa
            part_c[i] = sc
        rz_new = 0.0
        rr = 0.0
        for i in range(ny):
            rz_new += part_a[i]
            rr += part_c[i]
        beta = rz_new / rz
        rz = rz_new
        for i in prange(ny):
            for j in range(nx):
                p[i, j] = inv_m[i, j] * res[i, j] + beta * p[i, j]
    for i in prange(ny):
        for j in range(nx):
            if out[i, j] < 0.0:
                out[i, j] = 0.0
    return it


def _masked_neighbour_sum_ref(x, faces):
    p = np.pad(x, 1)
    return (np.where(faces & WEST, p[1:-1, :-2], 0) + np.where(faces & EAST, p[1:-1, 2:], 0)
            + np.where(faces & NORTH, p[:-2, 1:-1], 0) + np.where(faces & SOUTH, p[2:, 1:-1], 0))


def backward_euler_solve_ref(c, out, labels, faces, n_sinus, source_per_h, uptake_per_h,
                             decay_per_h, clearance_per_h, dt_h, r, tol, max_iter, work=None):
    """Plain-numpy twin of :func:`backward_euler_solve` (same arguments; ``work`` unused)."""
    f = faces.astype(np.int64)
    n_open = (f & 1) + ((f >> 1) & 1) + ((f >> 2) & 1) + ((f >> 3) & 1)
    lam = decay_per_h + clearance_per_h * n_sinus.astype(np.float64) + uptake_per_h
    marrow = labels == 0
    diag = np.where(marrow, 1.0 + dt_h * lam + r * n_open, 1.0)
    rhs = np.where(marrow, c + dt_h * source_per_h, 0.0)

    def apply(x):
        return diag * x - r * _masked_neighbour_sum_ref(x, faces)

    x = np.where(marrow, c, 0.0)
    res = rhs - apply(x)
    z = res / diag
    p = z.copy()
    rz = float(np.sum(res * z))
    rr = float(np.sum(res * res))
    stop = tol * tol * float(np.sum(rhs * rhs))
    it = 0
    while rr > stop and it < max_iter and rz > 0.0:
        it += 1
        q = apply(p)
        pq = float(np.sum(p * q))
        if pq <= 0.0:
            break
        alpha = rz / pq
        x = x + alpha * p
        res = res - alpha * q
        rz_new = float(np.sum(res * res / diag))
        rr = float(np.sum(res * res))
        p = res / diag + (rz_new / rz) * p
        rz = rz_new
    out[...] = np.maximum(x, 0.0)
    return it
