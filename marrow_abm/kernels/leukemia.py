"""Lattice kernels of the leukemia niche: neighbour census, cycle transitions, division into a
neighbouring voxel, movement up the OPN gradient. Each ``@njit`` kernel has a plain-Python/numpy
``_ref`` twin below it, tested equal.

Conventions: voxels are flat indices into the (ny, nx) lattice; neighbours are the 8 Moore
neighbours (a 10 µm voxel is one cell, so diagonal cells touch); ``free`` is a uint8 map, 1 on a
marrow voxel holding no cell agent (normal haematopoietic tissue, MODEL.md section 2). Kernels
draw no random numbers: the caller passes uniforms drawn beforehand from a named stream, and
cells that compete for voxels are processed in the order given (the caller shuffles it).
Cycle phases: 0 = G0 (Ki67-), 1 = G1, 2 = S-G2-M.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .hill import (
    PER_CELL,
    behaviour_active,
    behaviour_base_value,
    behaviour_value,
    behaviour_value_ref,
)

G0, G1, SG2M = 0, 1, 2
_DY = np.array([-1, -1, -1, 0, 0, 1, 1, 1], dtype=np.int64)
_DX = np.array([-1, 0, 1, -1, 1, -1, 0, 1], dtype=np.int64)


@njit(cache=True)
def neighbour_census(voxels, occupant, kind, alive, nx, ny, code_blc, code_msc, code_lsc,
                     code_blast, out_blc, out_msc, out_leuk):
    """Count BLC, MSC and leukemic (LSC or blast) cells among each cell's 8 neighbours.

    Args:
        voxels: (m,) flat voxel of each queried cell.
        occupant: (ny*nx,) row index of the cell on each voxel, -1 if none.
        kind, alive: per-row cell kind codes and alive flags of the table.
        nx, ny: lattice shape.
        code_*: kind codes.
        out_blc, out_msc, out_leuk: (m,) float64 counts (0..8), written.
    """
    for i in range(voxels.shape[0]):
        y0 = voxels[i] // nx
        x0 = voxels[i] % nx
        nb = 0.0
        nm = 0.0
        nl = 0.0
        for k in range(8):
            y = y0 + _DY[k]
            x = x0 + _DX[k]
            if y < 0 or y >= ny or x < 0 or x >= nx:
                continue
            row = occupant[y * nx + x]
            if row < 0 or not alive[row]:
                continue
            c = kind[row]
            if c == code_blc:
                nb += 1.0
            elif c == code_msc:
                nm += 1.0
            elif c == code_lsc or c == code_blast:
                nl += 1.0
        out_blc[i] = nb
        out_msc[i] = nm
        out_leuk[i] = nl


def neighbour_census_ref(voxels, occupant, kind, alive, nx, ny, code_blc, code_msc, code_lsc,
                         code_blast, out_blc, out_msc, out_leuk):
    """Numpy twin of ``neighbour_census``."""
    y0, x0 = voxels // nx, voxels % nx
    out_blc[:] = 0.0
    out_msc[:] = 0.0
    out_leuk[:] = 0.0
    for dy, dx in zip(_DY, _DX):
        y, x = y0 + dy, x0 + dx
        ok = (y >= 0) & (y < ny) & (x >= 0) & (x < nx)
        row = np.full(voxels.shape, -1, dtype=np.int64)
        row[ok] = occupant[(y * nx + x)[ok]]
        has = row >= 0
        has[has] = alive[row[has]]
        c = np.full(voxels.shape, -1, dtype=np.int64)
        c[has] = kind[row[has]]
        out_blc += c == code_blc
        out_msc += c == code_msc
        out_leuk += (c == code_lsc) | (c == code_blast)


@njit(cache=True, inline="always")
def _add_around(voxels, nx, ny, out_map, delta):
    """Add ``delta`` on each lattice voxel of the 8 Moore neighbours of each given voxel."""
    for i in range(voxels.shape[0]):
        y0 = voxels[i] // nx
        x0 = voxels[i] % nx
        for k in range(8):
            y = y0 + _DY[k]
            x = x0 + _DX[k]
            if 0 <= y < ny and 0 <= x < nx:
                out_map[y * nx + x] += delta


def neighbour_count_map_ref(voxels, nx, ny, out_map):
    """Add 1 on each lattice voxel of the 8 Moore neighbours of each given voxel (plain numpy).

    With the living BLC's voxels and ``out_map`` from zeros, ``out_map[v]`` is the number of BLC
    among the neighbours of v, what ``neighbour_census`` counts for a cell on v: the map
    ``neighbour_count_move`` keeps (tested against this)."""
    y0, x0 = voxels // nx, voxels % nx
    for dy, dx in zip(_DY, _DX):
        y, x = y0 + dy, x0 + dx
        ok = (y >= 0) & (y < ny) & (x >= 0) & (x < nx)
        np.add.at(out_map, (y * nx + x)[ok], 1)


@njit(cache=True)
def neighbour_count_move(old_voxels, new_voxels, nx, ny, out_map):
    """Turn ``out_map`` from the contact map of ``old_voxels`` (``neighbour_count_map_ref``)
    into that of ``new_voxels``: subtract 1 around each old voxel, add 1 around each new one.
    The counts are a sum over the voxels, so this is the map built from zeros, without touching
    the rest of the lattice (the BLC contact map is kept this way from step to step; from an
    empty ``old_voxels`` it builds the map).

    Args:
        old_voxels, new_voxels: flat voxels (one cell each).
        nx, ny: lattice shape.
        out_map: (ny*nx,) uint8 neighbour counts of ``old_voxels``; modified.
    """
    _add_around(old_voxels, nx, ny, out_map, -1)
    _add_around(new_voxels, nx, ny, out_map, 1)


def neighbour_count_move_ref(old_voxels, new_voxels, nx, ny, out_map):
    """Numpy twin of ``neighbour_count_move``: the map of ``new_voxels`` built from zeros."""
    out_map[:] = 0
    neighbour_count_map_ref(new_voxels, nx, ny, out_map)


def cycle_transitions_ref(phase, p_enter_g0, p_exit_g0, p_g1_to_s, p_divide, u, out_phase,
                          out_divide):
    """One step of the G0 / G1 / S-G2-M Markov cycle (Ki67- = G0).

    G1 cells enter G0 with probability ``p_enter_g0``, else move to S-G2-M with ``p_g1_to_s``
    (competing events, G0 entry first); G0 cells return to G1 with ``p_exit_g0``; S-G2-M cells
    finish mitosis with ``p_divide`` (the caller places the daughter; both restart in G1).
    Plain numpy: the transitions ``cycle_step`` makes, as its twin computes them.

    Args:
        phase: (n,) int8 current phase.
        p_enter_g0, p_exit_g0, p_g1_to_s, p_divide: (n,) per-step probabilities.
        u: (n,) uniforms in [0, 1).
        out_phase: (n,) int8 new phase, written.
        out_divide: (n,) bool, written True where a cell divides this step.
    """
    g0, g1, s = phase == 0, phase == 1, phase == 2
    to_g0 = g1 & (u < p_enter_g0)
    to_s = g1 & ~to_g0 & (u < p_enter_g0 + (1.0 - p_enter_g0) * p_g1_to_s)
    wake = g0 & (u < p_exit_g0)
    div = s & (u < p_divide)
    out_phase[:] = phase
    out_phase[to_g0] = 0
    out_phase[to_s] = 2
    out_phase[wake] = 1
    out_phase[div] = 1
    out_divide[:] = div


@njit(cache=True, inline="always")
def _pick_free(v, free, nx, ny, radius, u, cand):
    """A uniformly chosen free voxel at the smallest Chebyshev distance 1..``radius`` from
    voxel ``v`` that has one (``u`` a uniform, ``cand`` scratch of 8·radius), or -1."""
    y0 = v // nx
    x0 = v % nx
    for r in range(1, radius + 1):
        m = 0
        for y in range(y0 - r, y0 + r + 1):
            for x in range(x0 - r, x0 + r + 1):
                if max(abs(y - y0), abs(x - x0)) != r:
                    continue
                if 0 <= y < ny and 0 <= x < nx and free[y * nx + x] == 1:
                    cand[m] = y * nx + x
                    m += 1
        if m > 0:
            return cand[min(int(u * m), m - 1)]
    return -1


@njit(cache=True)
def place_daughters(src_voxels, free, nx, ny, radius, u, out_target):
    """Pick a free voxel near each dividing cell for its daughter, in the given order.

    The daughter takes a uniformly chosen free voxel at Chebyshev distance 1 (the 8 neighbours);
    if there is none, at distance 2, ... up to ``radius`` (the daughter pushes the tissue
    between aside: normal haematopoiesis is displaced, MODEL.md hypothesis 6). A cell with no
    free voxel within ``radius`` does not divide this step (contact inhibition). ``free`` is
    updated as voxels are taken.

    Args:
        src_voxels: (m,) voxel of each dividing cell, in processing order.
        free: (ny*nx,) uint8, 1 on free marrow voxels; modified.
        nx, ny: lattice shape.
        radius: largest Chebyshev distance searched (≥ 1).
        u: (m,) uniforms in [0, 1).
        out_target: (m,) int64 daughter voxel, -1 where there was no room; written.
    """
    cand = np.empty(8 * radius, dtype=np.int64)
    for i in range(src_voxels.shape[0]):
        t = _pick_free(src_voxels[i], free, nx, ny, radius, u[i], cand)
        out_target[i] = t
        if t >= 0:
            free[t] = 0


def place_daughters_ref(src_voxels, free, nx, ny, radius, u, out_target):
    """Plain-Python twin of ``place_daughters``."""
    for i, v in enumerate(src_voxels):
        y0, x0 = divmod(int(v), nx)
        out_target[i] = -1
        for r in range(1, radius + 1):
            cand = [y * nx + x for y in range(y0 - r, y0 + r + 1) for x in range(x0 - r, x0 + r + 1)
                    if max(abs(y - y0), abs(x - x0)) == r and 0 <= y < ny and 0 <= x < nx
                    and free[y * nx + x] == 1]
            if cand:
                j = min(int(u[i] * len(cand)), len(cand) - 1)
                out_target[i] = cand[j]
                free[cand[j]] = 0
                break


@njit(**PER_CELL)
def _move_target(v, chemotaxis, opn, free, nx, ny, u, cand):
    """Where a cell on voxel ``v`` moves (``move_cells``, ``act_step``), or -1 with no free
    neighbour: with ``chemotaxis`` the free neighbour with the most OPN if that beats ``v``,
    else a uniformly chosen free neighbour (``u`` a uniform, ``cand`` scratch of at least 8).

    Compiled once and inlined by LLVM (``PER_CELL``): as an IR-inlined helper it made
    ``move_step`` 20–25% slower than the search written out in ``move_cells``; this way
    ``move_step`` runs as fast as with that copy and ``act_step`` 6–10% faster (interleaved
    old/new in one process, same bits; docs/performance.md, "Compile time")."""
    y0 = v // nx
    x0 = v % nx
    m = 0
    for k in range(8):
        y = y0 + _DY[k]
        x = x0 + _DX[k]
        if 0 <= y < ny and 0 <= x < nx and free[y * nx + x] == 1:
            cand[m] = y * nx + x
            m += 1
    if m == 0:
        return -1
    target = -1
    if chemotaxis:
        best = opn[v]
        for j in range(m):
            if opn[cand[j]] > best:
                best = opn[cand[j]]
                target = cand[j]
    if target < 0:
        target = cand[min(int(u * m), m - 1)]
    return target


@njit(cache=True)
def move_cells(voxels, wants, chemotaxis, opn, free, nx, ny, u, out_voxel):
    """Move cells one voxel into free neighbours, in the given order.

    A moving cell that senses OPN chemotactically (``chemotaxis`` true) steps to the free
    neighbour with the highest OPN if that is higher than its own voxel's (drift up the OPN
    gradient, MODEL.md hypothesis 2; Nilsson 2005 Blood: OPN directs HSC to the endosteum);
    otherwise it steps to a uniformly chosen free neighbour. Normal tissue swaps place with it
    (the voxel it leaves becomes free).

    Args:
        voxels: (m,) current voxel of each cell, in processing order.
        wants: (m,) bool, whether the cell moves this step.
        chemotaxis: (m,) bool, whether the move follows the OPN gradient.
        opn: (ny*nx,) OPN concentration (normalised).
        free: (ny*nx,) uint8 free-marrow map; modified.
        nx, ny: lattice shape.
        u: (m,) uniforms in [0, 1) for the random choice.
        out_voxel: (m,) int64 new voxel (unchanged when the cell stays); written.
    """
    cand = np.empty(8, dtype=np.int64)
    for i in range(voxels.shape[0]):
        v = voxels[i]
        out_voxel[i] = v
        if not wants[i]:
            continue
        target = _move_target(v, chemotaxis[i], opn, free, nx, ny, u[i], cand)
        if target < 0:
            continue
        free[v] = 1
        free[target] = 0
        out_voxel[i] = target


def move_cells_ref(voxels, wants, chemotaxis, opn, free, nx, ny, u, out_voxel):
    """Plain-Python twin of ``move_cells``."""
    for i, v in enumerate(voxels):
        v = int(v)
        out_voxel[i] = v
        if not wants[i]:
            continue
        y0, x0 = divmod(v, nx)
        cand = [(y0 + dy) * nx + x0 + dx for dy, dx in zip(_DY, _DX)
                if 0 <= y0 + dy < ny and 0 <= x0 + dx < nx and free[(y0 + dy) * nx + x0 + dx] == 1]
        if not cand:
            continue
        target = -1
        if chemotaxis[i]:
            best = opn[v]
            for c in cand:
                if opn[c] > best:
                    best, target = opn[c], c
        if target < 0:
            target = cand[min(int(u[i] * len(cand)), len(cand) - 1)]
        free[v] = 1
        free[target] = 0
        out_voxel[i] = target


# ---------------------------------------------------------------------------------------------
# Fused phase steps of ``biology.leukemia``: each reads the cells' rows and columns of the cell
# table, evaluates the behaviours it needs (rule table, ``RuleSet.table``), turns them into
# per-step probabilities, decides, and writes the outcome back into the table in one call, so
# no gathered copy, mask or compacted index array is made in numpy between them. The per-cell
# part is independent from cell to cell (uniforms drawn beforehand, one output element per
# cell), so it runs on numba's threads with the same results; what depends on order (killing,
# listing the survivors, dividers or movers, placing, moving) is a serial pass after it. A
# probability is 1 - exp(-r dt), the expression of ``biology.leukemia._p``; numba's exp and
# numpy's are libm's exp here, elementwise (tested bit for bit against the unfused path).
# Behaviour indices ``b_*`` are rows of the table; a "matrix column" is a cell's column in the
# (signals × cells) matrix ``rules_step`` fills, kept for the step's later phases.

@njit(cache=True, inline="always")
def _prob(rate, dt_h):
    return 1.0 - math.exp(-rate * dt_h)


@njit(cache=True, inline="always")
def _base_probs(tab, dt_h):
    """Per-step probability of every behaviour's base rate (row b of the table)."""
    out = np.empty(tab.shape[0])
    for b in range(tab.shape[0]):
        out[b] = _prob(tab[b, 0], dt_h)
    return out


@njit(cache=True, inline="always")
def _base_values(tab):
    """Every behaviour's value at base (``behaviour_base_value``), row b of the table."""
    out = np.empty(tab.shape[0])
    for b in range(tab.shape[0]):
        out[b] = behaviour_base_value(tab, b)
    return out


@njit(cache=True, inline="always")
def _value(tab, v_base, b, sig, i):
    """``behaviour_value`` of behaviour ``b`` for cell ``i``, taken from ``v_base`` (the same
    bits) when none of its rule signals is positive."""
    if behaviour_active(tab, b, sig, i):
        return behaviour_value(tab, b, sig, i)
    return v_base[b]


@njit(cache=True, inline="always")
def _rate_prob(tab, p_base, b, sig, i, dt_h):
    """Per-step probability of rate behaviour ``b`` for cell ``i``. A cell none of whose rule
    signals is positive has the base rate exactly (``behaviour_active``), so its probability is
    ``p_base[b]``, the same expression on the same value computed once per call."""
    if behaviour_active(tab, b, sig, i):
        return _prob(behaviour_value(tab, b, sig, i), dt_h)
    return p_base[b]


# -- one cell's decisions, shared by the phased kernels and ``leukemia_sequential`` -----------

@njit(cache=True, inline="always")
def _bound_after(tab, p_base, v_base, b_adhesion, b_detachment, was_bound, touching, sig, i, u,
                 adhesion_factor, dt_h):
    """Whether cell ``i`` is bound to a BLC after this step's adhesion rule (MODEL.md hyp. 2):
    a bound cell lets go when no BLC touches it, else with p(detachment); an unbound cell
    touching a BLC binds with p(adhesion × ``adhesion_factor``). ``u``: its uniform."""
    if was_bound:
        if touching:
            return not u < _rate_prob(tab, p_base, b_detachment, sig, i, dt_h)
        return False
    if touching:
        return u < _prob(_value(tab, v_base, b_adhesion, sig, i) * adhesion_factor, dt_h)
    return False


@njit(cache=True, inline="always")
def _death_base_probs(tab, b_death, b_s_death, b_c_death, dt_h):
    """(G1, S-G2-M) per-step death probabilities of a cell at base rates (no positive rule
    signal): the summed hazards ``_dies`` uses, computed once per call of a kernel."""
    return (_prob(tab[b_death, 0] + tab[b_c_death, 0], dt_h),
            _prob(tab[b_death, 0] + tab[b_s_death, 0] + tab[b_c_death, 0], dt_h))


@njit(cache=True, inline="always")
def _dies(tab, p_base, p_base_g1, p_base_sg2m, b_death, b_s_death, b_c_death, ph, sig, i, u,
          dt_h):
    """Whether cell ``i`` in phase ``ph`` dies this step: death in any phase, plus S-phase
    death in S-G2-M, plus cycling-cell death in G1 and S-G2-M; the hazards add in that order.
    ``p_base_g1`` / ``p_base_sg2m``: the summed hazards' probabilities at base rates.

    One evaluation site per phase: a loop over the hazards with one site ran ``death_step`` 12%
    and ``cycle_step``'s equivalent 31% slower (measured). The sites no longer cost much compile
    time since the rule functions are inlined by LLVM (``kernels.hill.PER_CELL``)."""
    if ph == 0:
        # The hazard is death + 0.0 + 0.0, which is death exactly.
        return u < _rate_prob(tab, p_base, b_death, sig, i, dt_h)
    if ph == 1:
        if behaviour_active(tab, b_death, sig, i) or behaviour_active(tab, b_c_death, sig, i):
            return u < _prob(behaviour_value(tab, b_death, sig, i)
                             + behaviour_value(tab, b_c_death, sig, i), dt_h)
        return u < p_base_g1
    if (behaviour_active(tab, b_death, sig, i) or behaviour_active(tab, b_s_death, sig, i)
            or behaviour_active(tab, b_c_death, sig, i)):
        return u < _prob(behaviour_value(tab, b_death, sig, i)
                         + behaviour_value(tab, b_s_death, sig, i)
                         + behaviour_value(tab, b_c_death, sig, i), dt_h)
    return u < p_base_sg2m


@njit(cache=True, inline="always")
def _transition(tab, p_base, b_enter, b_exit, b_g1_exit, b_divide, ph, sig, i, u, dt_h):
    """(new phase, divides) of cell ``i`` in phase ``ph`` (``cycle_transitions_ref``), each
    probability computed only in the phase that reads it; a cell that divides restarts in G1.
    ``cycle_step`` writes the same branches out in its loop (faster there, see the comment)."""
    if ph == 0:
        return (1 if u < _rate_prob(tab, p_base, b_exit, sig, i, dt_h) else 0), False
    if ph == 1:
        pe = _rate_prob(tab, p_base, b_enter, sig, i, dt_h)
        if u < pe:
            return 0, False
        to_s = u < pe + (1.0 - pe) * _rate_prob(tab, p_base, b_g1_exit, sig, i, dt_h)
        return (2 if to_s else 1), False
    if u < _rate_prob(tab, p_base, b_divide, sig, i, dt_h):
        return 1, True
    return 2, False


@njit(cache=True, inline="always")
def _wants_move(tab, p_base, v_base, b_migration, b_chemotaxis, is_bound, sig, i, u_move,
                u_chemo, chemotaxis_factor, dt_h):
    """(moves, follows OPN) of cell ``i``: an unbound cell moves with p(migration); a mover
    follows OPN with probability ``chemotaxis_opn`` × ``chemotaxis_factor``."""
    w = (not is_bound) and u_move < _rate_prob(tab, p_base, b_migration, sig, i, dt_h)
    return w, w and (u_chemo < _value(tab, v_base, b_chemotaxis, sig, i) * chemotaxis_factor)


# -- the rules phase: signal matrix, TGF-β1 secretion and adhesion in one pass ---------------

@njit(cache=True, inline="always")
def _fill_signals(rows, voxel, fcols, fscale, frow, maps, mrow, bound, brow, consts, crow,
                  percell, prow, out_sig):
    """The signal matrix of ``rules_step``, one signal row at a time: an array is taken out of
    a tuple once per row (taking it per cell costs a reference count each time, measured 8x
    slower), and each row of the matrix is written contiguously."""
    n = rows.shape[0]
    for k in range(frow.shape[0]):
        col = fcols[k]
        scale = fscale[k]
        dst = out_sig[frow[k]]
        for i in prange(n):
            dst[i] = col[rows[i]] * scale
    for k in range(mrow.shape[0]):
        m = maps[k]
        dst = out_sig[mrow[k]]
        for i in prange(n):
            dst[i] = m[voxel[rows[i]]]
    if brow >= 0:
        dst = out_sig[brow]
        for i in prange(n):
            dst[i] = 1.0 if bound[rows[i]] else 0.0
    for k in range(crow.shape[0]):
        out_sig[crow[k]] = consts[k]
    for k in range(prow.shape[0]):
        out_sig[prow[k]] = percell[k]


@njit(cache=True, parallel=True)
def rules_step(rows, voxel, fcols, fscale, frow, maps, mrow, bound, brow, consts, crow, percell,
               prow, tab, b_secretion, b_adhesion, b_detachment, contact_row, u,
               adhesion_factor, dt_h, out_sig, secretion):
    """The ``rules`` phase of one leukemic kind in one pass: each cell's signals straight from
    the cell table and lattice maps into the signal matrix, its TGF-β1 secretion behaviour, and
    letting go of or binding to BLC (MODEL.md hyp. 2), written back into the table.

    A bound cell lets go when no BLC touches it, else with p(detachment); an unbound cell
    touching a BLC binds with p(adhesion × ``adhesion_factor``). One uniform per cell. The
    ``bound`` signal is the flag before this step (read before it is written).

    Signal rows come from five sources (each ``*row`` array names the matrix rows it fills;
    a source with no rows is ignored): ``fcols[k][row] * fscale[k]`` (the ``<field>_at``
    columns; the scale is the OPN-receptor factor for ``opn``, else 1.0, which is exact);
    ``maps[k][voxel]`` (uint8 lattice maps: BLC contacts, zones); the ``bound`` column as 0/1
    (``brow``, -1 for none); ``consts[k]`` (drugs, burden); ``percell[k, i]`` (precomputed,
    e.g. the neighbour census).

    Args:
        rows: (n,) cell rows of the kind; voxel: the table's ``voxel`` column.
        fcols, maps: tuples of equally typed arrays (at least one each, unused ones allowed).
        bound: the table's ``bound`` column; read, then written with the new flags.
        tab: rule table; b_*: its rows for the three behaviours; contact_row: the matrix row
            of ``contact_blc``.
        u: (n,) uniforms; adhesion_factor: 1 − OPN-receptor block; dt_h: step (h).
        out_sig: (k, n) signal matrix, written.
        secretion: the table's ``tgfb_secretion_per_h`` column; rows written.
    """
    _fill_signals(rows, voxel, fcols, fscale, frow, maps, mrow, bound, brow, consts, crow,
                  percell, prow, out_sig)
    p_base = _base_probs(tab, dt_h)
    v_base = _base_values(tab)
    for i in prange(rows.shape[0]):
        r = rows[i]
        secretion[r] = _value(tab, v_base, b_secretion, out_sig, i)
        bound[r] = _bound_after(tab, p_base, v_base, b_adhesion, b_detachment, bound[r],
                                out_sig[contact_row, i] > 0, out_sig, i, u[i], adhesion_factor,
                                dt_h)


def fill_signals_ref(rows, voxel, fcols, fscale, frow, maps, mrow, bound, brow, consts, crow,
                     percell, prow, out_sig):
    """Numpy twin of the signal-matrix part of ``rules_step``."""
    vox = voxel[rows]
    for k, j in enumerate(frow):
        out_sig[j] = fcols[k][rows] * fscale[k]
    for k, j in enumerate(mrow):
        out_sig[j] = maps[k][vox].astype(np.float64)
    if brow >= 0:
        out_sig[brow] = bound[rows].astype(np.float64)
    for k, j in enumerate(crow):
        out_sig[j] = np.full(rows.size, consts[k])
    for k, j in enumerate(prow):
        out_sig[j] = percell[k]


def rules_step_ref(rows, voxel, fcols, fscale, frow, maps, mrow, bound, brow, consts, crow,
                   percell, prow, tab, b_secretion, b_adhesion, b_detachment, contact_row, u,
                   adhesion_factor, dt_h, out_sig, secretion):
    """Numpy twin of ``rules_step``."""
    fill_signals_ref(rows, voxel, fcols, fscale, frow, maps, mrow, bound, brow, consts, crow,
                     percell, prow, out_sig)
    everyone = np.arange(rows.shape[0])
    secretion[rows] = behaviour_value_ref(tab, b_secretion, out_sig, everyone)
    touching = out_sig[contact_row] > 0
    was = bound[rows]
    p_det = 1.0 - np.exp(-behaviour_value_ref(tab, b_detachment, out_sig, everyone) * dt_h)
    p_adh = 1.0 - np.exp(-behaviour_value_ref(tab, b_adhesion, out_sig, everyone)
                         * adhesion_factor * dt_h)
    let_go = was & (~touching | (u < p_det))
    bind = ~was & touching & (u < p_adh)
    bound[rows] = (was & ~let_go) | bind


# -- the cycle phase: death, transitions, division -----------------------------------------

@njit(cache=True, inline="always")
def _kill(r, alive, voxel, occupant, free):
    """``CellTable.kill`` of one row (a row already dead is left alone) and its voxel marked
    free in the free-marrow map (as the caller always did, dead or not)."""
    if alive[r]:
        alive[r] = False
        occupant[voxel[r]] = -1
    free[voxel[r]] = 1


@njit(cache=True, parallel=True)
def death_step(rows, phase, sig, tab, b_death, b_s_death, b_c_death, u, dt_h, alive, voxel,
               occupant, free, out_keep):
    """Death in any phase, plus S-phase-specific death in S-G2-M (cytarabine-like), plus
    cycling-cell death in G1 and S-G2-M (anthracycline-like; G0 spared); the hazards add, in
    that order. The dead are killed in the table (``alive``, ``occupant``) and their voxels
    marked free; the survivors' matrix columns are listed in order.

    Args:
        rows: (n,) cell rows (matrix column i is row ``rows[i]``); phase: the table's column.
        sig, tab: as for ``rules_step``; b_death, b_s_death, b_c_death: table rows of
            ``death_per_h``, ``s_phase_death_per_h`` and ``cycling_death_per_h``.
        u: (n,) uniforms.
        alive, voxel, occupant: the table's columns and occupancy map; free: free-marrow map.
        out_keep: (n,) int64; the first m entries are written with the survivors' columns.

    Returns:
        m, the number of survivors.
    """
    n = rows.shape[0]
    dies = np.empty(n, dtype=np.bool_)
    p_base = _base_probs(tab, dt_h)
    # The hazards at their base rates (no positive rule signal): computed once per phase.
    p_base_g1, p_base_sg2m = _death_base_probs(tab, b_death, b_s_death, b_c_death, dt_h)
    for i in prange(n):
        dies[i] = _dies(tab, p_base, p_base_g1, p_base_sg2m, b_death, b_s_death, b_c_death,
                        phase[rows[i]], sig, i, u[i], dt_h)
    m = 0
    for i in range(n):
        out_keep[m] = i           # branch-free listing (deaths are rare)
        m += 1 - dies[i]
        if dies[i]:
            _kill(rows[i], alive, voxel, occupant, free)
    return m


def _kill_ref(rows, alive, voxel, occupant, free):
    """``CellTable.kill`` on the columns (the caller marks the voxels free)."""
    rows = rows[alive[rows]]
    alive[rows] = False
    occupant[voxel[rows]] = -1


def death_step_ref(rows, phase, sig, tab, b_death, b_s_death, b_c_death, u, dt_h, alive, voxel,
                   occupant, free, out_keep):
    """Numpy twin of ``death_step``."""
    everyone = np.arange(rows.shape[0])
    ph = phase[rows]
    hazard = behaviour_value_ref(tab, b_death, sig, everyone) + np.where(
        ph == 2, behaviour_value_ref(tab, b_s_death, sig, everyone), 0.0)
    hazard = hazard + np.where(ph != 0, behaviour_value_ref(tab, b_c_death, sig, everyone), 0.0)
    dies = u < 1.0 - np.exp(-hazard * dt_h)
    _kill_ref(rows[dies], alive, voxel, occupant, free)
    free[voxel[rows[dies]]] = 1
    keep = np.flatnonzero(~dies)
    out_keep[:keep.size] = keep
    return keep.size


@njit(cache=True, parallel=True)
def cycle_step(keep, rows, phase, sig, tab, b_enter, b_exit, b_g1_exit, b_divide, u, dt_h,
               divisions_left, differentiate, alive, voxel, occupant, free, out_rows):
    """The cycle transitions (``cycle_transitions_ref``) with the probabilities computed from the
    rules in the same pass, each only in the phase that reads it; new phases written into the table, and the rows that
    divide listed in order.

    With ``differentiate`` (blasts) a dividing cell with no divisions left differentiates and
    leaves the marrow instead: it is killed (``death_step``'s bookkeeping) and not listed.

    Args:
        keep: (m,) matrix columns of the cells (the survivors of ``death_step``); cell j is
            row ``rows[keep[j]]``.
        rows: (n,) cell rows of the matrix columns; phase: the table's column (read, written).
        sig, tab: as for ``rules_step``; b_enter, b_exit, b_g1_exit, b_divide: table rows of G0
            entry, G0 exit, G1 exit and division rates.
        u: (m,) uniforms; dt_h: step (h).
        divisions_left: the table's column (read with ``differentiate``).
        alive, voxel, occupant, free: as for ``death_step``.
        out_rows: (m,) int64; the first k entries are written with the dividing rows.

    Returns:
        k, the number of dividing cells.
    """
    m = keep.shape[0]
    divide = np.empty(m, dtype=np.bool_)
    p_base = _base_probs(tab, dt_h)
    for j in prange(m):
        i = keep[j]
        r = rows[i]
        # ``_transition`` written out: returning the phase from the IR-inlined helper measured
        # ≈ 6% slower here (interleaved old/new, 145 rounds), and from the helper compiled with
        # ``PER_CELL`` 0.7–7.7% slower (five runs of 100–200 rounds, same bits).
        ph = phase[r]
        uj = u[j]
        divide[j] = False
        if ph == 0:
            phase[r] = 1 if uj < _rate_prob(tab, p_base, b_exit, sig, i, dt_h) else 0
        elif ph == 1:
            pe = _rate_prob(tab, p_base, b_enter, sig, i, dt_h)
            if uj < pe:
                phase[r] = 0
                continue
            to_s = uj < pe + (1.0 - pe) * _rate_prob(tab, p_base, b_g1_exit, sig, i, dt_h)
            phase[r] = 2 if to_s else 1
        else:
            if uj < _rate_prob(tab, p_base, b_divide, sig, i, dt_h):
                divide[j] = True
                phase[r] = 1
            else:
                phase[r] = 2
    k = 0
    for j in range(m):
        if divide[j]:
            r = rows[keep[j]]
            if differentiate and divisions_left[r] <= 0:
                _kill(r, alive, voxel, occupant, free)
            else:
                out_rows[k] = r
                k += 1
    return k


def cycle_step_ref(keep, rows, phase, sig, tab, b_enter, b_exit, b_g1_exit, b_divide, u, dt_h,
                   divisions_left, differentiate, alive, voxel, occupant, free, out_rows):
    """Numpy twin of ``cycle_step`` (through ``cycle_transitions_ref``)."""
    p = [1.0 - np.exp(-behaviour_value_ref(tab, b, sig, keep) * dt_h)
         for b in (b_enter, b_exit, b_g1_exit, b_divide)]
    r = rows[keep]
    new_phase = np.empty(keep.size, dtype=phase.dtype)
    divide = np.empty(keep.size, dtype=np.bool_)
    cycle_transitions_ref(phase[r], *p, u, new_phase, divide)
    phase[r] = new_phase
    drows = r[divide]
    if differentiate:
        done = divisions_left[drows] <= 0
        _kill_ref(drows[done], alive, voxel, occupant, free)
        free[voxel[drows[done]]] = 1
        drows = drows[~done]
    out_rows[:drows.size] = drows
    return drows.size


@njit(cache=True)
def divide_step(drows, order, voxel, phase, divisions_left, count_divisions, free, nx, ny,
                radius, u, out_target, out_left):
    """``place_daughters`` for the dividing rows, in the given order, with the bookkeeping:
    a cell with no room stays in S-G2-M (contact inhibition); with ``count_divisions``
    (blasts) a cell that divides has one division fewer left, which its daughter inherits.

    Args:
        drows: (d,) dividing rows; order: (d,) permutation, cell i is ``drows[order[i]]``.
        voxel, phase, divisions_left: the table's columns (``phase`` and ``divisions_left``
            written).
        free, nx, ny, radius: as for ``place_daughters``; u: (d,) uniforms.
        out_target: (d,) int64, the first k entries written with the daughters' voxels.
        out_left: (d,) int64, the first k entries written with the mothers' divisions left
            after dividing (with ``count_divisions``; untouched otherwise).

    Returns:
        k, the number of daughters placed.
    """
    cand = np.empty(8 * radius, dtype=np.int64)
    k = 0
    for i in range(drows.shape[0]):
        r = drows[order[i]]
        t = _pick_free(voxel[r], free, nx, ny, radius, u[i], cand)
        if t < 0:
            phase[r] = 2
            continue
        free[t] = 0
        out_target[k] = t
        if count_divisions:
            left = divisions_left[r] - 1
            divisions_left[r] = left
            out_left[k] = left
        k += 1
    return k


def divide_step_ref(drows, order, voxel, phase, divisions_left, count_divisions, free, nx, ny,
                    radius, u, out_target, out_left):
    """Numpy twin of ``divide_step`` (through ``place_daughters_ref``)."""
    drows = drows[order]
    target = np.empty(drows.size, dtype=np.int64)
    place_daughters_ref(voxel[drows], free, nx, ny, radius, u, target)
    ok = target >= 0
    phase[drows[~ok]] = 2
    drows, target = drows[ok], target[ok]
    out_target[:target.size] = target
    if count_divisions:
        left = divisions_left[drows] - 1
        divisions_left[drows] = left
        out_left[:left.size] = left
    return target.size


# -- the move phase --------------------------------------------------------------------------

@njit(cache=True)
def alive_columns(rows, alive, out_idx):
    """The matrix columns i whose row ``rows[i]`` is still alive, in order, into ``out_idx``;
    returns their number."""
    m = 0
    for i in range(rows.shape[0]):
        if alive[rows[i]]:
            out_idx[m] = i
            m += 1
    return m


def alive_columns_ref(rows, alive, out_idx):
    """Numpy twin of ``alive_columns``."""
    idx = np.flatnonzero(alive[rows])
    out_idx[:idx.size] = idx
    return idx.size


@njit(cache=True, parallel=True)
def move_choice(idx, rows, bound, sig, tab, b_migration, b_chemotaxis, u, chemotaxis_factor,
                dt_h, out_rows, out_chemo, start):
    """Which cells move this step, and which of those follow the OPN gradient; the movers are
    appended to ``out_rows`` / ``out_chemo`` from position ``start``, in order.

    An unbound cell moves with p(migration); a mover follows OPN with probability
    ``chemotaxis_opn`` × ``chemotaxis_factor`` (1 − OPN-receptor block).

    Args:
        idx: (m,) matrix columns of the cells; cell j is row ``rows[idx[j]]``.
        rows: cell rows of the matrix columns; bound: the table's ``bound`` column.
        sig, tab: as for ``rules_step``; b_*: table rows.
        u: (2, m) uniforms (row 0 decides moving, row 1 chemotaxis).
        out_rows: int64 movers' rows; out_chemo: bool, whether each follows OPN.
        start: first position written.

    Returns:
        the position after the last mover written.
    """
    m = idx.shape[0]
    wants = np.empty(m, dtype=np.bool_)
    chemo = np.empty(m, dtype=np.bool_)
    p_base = _base_probs(tab, dt_h)
    v_base = _base_values(tab)
    for j in prange(m):
        i = idx[j]
        wants[j], chemo[j] = _wants_move(tab, p_base, v_base, b_migration, b_chemotaxis,
                                         bound[rows[i]], sig, i, u[0, j], u[1, j],
                                         chemotaxis_factor, dt_h)
    k = start
    for j in range(m):
        if wants[j]:
            out_rows[k] = rows[idx[j]]
            out_chemo[k] = chemo[j]
            k += 1
    return k


def move_choice_ref(idx, rows, bound, sig, tab, b_migration, b_chemotaxis, u, chemotaxis_factor,
                    dt_h, out_rows, out_chemo, start):
    """Numpy twin of ``move_choice``."""
    p = 1.0 - np.exp(-behaviour_value_ref(tab, b_migration, sig, idx) * dt_h)
    wants = ~bound[rows[idx]] & (u[0] < p)
    chemo = wants & (u[1] < behaviour_value_ref(tab, b_chemotaxis, sig, idx) * chemotaxis_factor)
    movers = rows[idx][wants]
    out_rows[start:start + movers.size] = movers
    out_chemo[start:start + movers.size] = chemo[wants]
    return start + movers.size


@njit(cache=True)
def move_step(movers, chemotaxis, order, voxel, occupant, opn, free, nx, ny, u):
    """``move_cells`` for the given rows in the given order, moving them in the table.

    The movers' voxels are gathered in one tight loop, ``move_cells`` moves them in order, and
    rows, voxels and occupancy are written in the same order (a voxel left by one mover and
    taken by a later one ends with the later one).

    Args:
        movers: (k,) rows that move; chemotaxis: (k,) bool, whether each follows OPN;
            order: (k,) permutation, cell i is ``movers[order[i]]`` with ``chemotaxis[order[i]]``.
        voxel, occupant: the table's column and occupancy map (written).
        opn, free, nx, ny: as for ``move_cells``; u: (k,) uniforms.
    """
    k = order.shape[0]
    rows = np.empty(k, dtype=np.int64)
    vox = np.empty(k, dtype=np.int64)
    chemo = np.empty(k, dtype=np.bool_)
    for i in range(k):
        j = order[i]
        rows[i] = movers[j]
        vox[i] = voxel[movers[j]]
        chemo[i] = chemotaxis[j]
    new = np.empty(k, dtype=np.int64)
    move_cells(vox, np.ones(k, dtype=np.bool_), chemo, opn, free, nx, ny, u, new)
    for i in range(k):
        if new[i] != vox[i]:
            # One cell per voxel: the voxel left is free (-1) until a later mover takes it.
            occupant[vox[i]] = -1
            occupant[new[i]] = rows[i]
            voxel[rows[i]] = new[i]


def move_step_ref(movers, chemotaxis, order, voxel, occupant, opn, free, nx, ny, u):
    """Numpy twin of ``move_step`` (through ``move_cells_ref``)."""
    rows = movers[order]
    new = np.empty(rows.size, dtype=np.int64)
    move_cells_ref(voxel[rows], np.ones(rows.size, dtype=np.bool_), chemotaxis[order], opn,
                   free, nx, ny, u, new)
    occupant[voxel[rows]] = -1
    voxel[rows] = new
    occupant[new] = rows
