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

from .hill import behaviour_active, behaviour_value, behaviour_value_ref

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


@njit(cache=True)
def neighbour_count_map(voxels, nx, ny, out_map):
    """Add 1 on each lattice voxel of the 8 Moore neighbours of each given voxel.

    With the voxels of the living BLC, ``out_map[v]`` is then the number of BLC among the
    neighbours of v: what ``neighbour_census`` counts for a cell on v, from one read per cell
    instead of 8 scattered look-ups into the cell table (BLC are a few hundred, cells many).

    Args:
        voxels: (m,) flat voxels (one cell each).
        nx, ny: lattice shape.
        out_map: (ny*nx,) uint8 counts, incremented (start from zeros).
    """
    for i in range(voxels.shape[0]):
        y0 = voxels[i] // nx
        x0 = voxels[i] % nx
        for k in range(8):
            y = y0 + _DY[k]
            x = x0 + _DX[k]
            if 0 <= y < ny and 0 <= x < nx:
                out_map[y * nx + x] += 1


def neighbour_count_map_ref(voxels, nx, ny, out_map):
    """Numpy twin of ``neighbour_count_map``."""
    y0, x0 = voxels // nx, voxels % nx
    for dy, dx in zip(_DY, _DX):
        y, x = y0 + dy, x0 + dx
        ok = (y >= 0) & (y < ny) & (x >= 0) & (x < nx)
        np.add.at(out_map, (y * nx + x)[ok], 1)


@njit(cache=True)
def cycle_transitions(phase, p_enter_g0, p_exit_g0, p_g1_to_s, p_divide, u, out_phase,
                      out_divide):
    """One step of the G0 / G1 / S-G2-M Markov cycle (Ki67- = G0).

    G1 cells enter G0 with probability ``p_enter_g0``, else move to S-G2-M with ``p_g1_to_s``
    (competing events, G0 entry first); G0 cells return to G1 with ``p_exit_g0``; S-G2-M cells
    finish mitosis with ``p_divide`` (the caller places the daughter; both restart in G1).

    Args:
        phase: (n,) int8 current phase.
        p_enter_g0, p_exit_g0, p_g1_to_s, p_divide: (n,) per-step probabilities.
        u: (n,) uniforms in [0, 1).
        out_phase: (n,) int8 new phase, written.
        out_divide: (n,) bool, written True where a cell divides this step.
    """
    for i in range(phase.shape[0]):
        ph = phase[i]
        out_divide[i] = False
        if ph == 0:
            out_phase[i] = 1 if u[i] < p_exit_g0[i] else 0
        elif ph == 1:
            if u[i] < p_enter_g0[i]:
                out_phase[i] = 0
            elif u[i] < p_enter_g0[i] + (1.0 - p_enter_g0[i]) * p_g1_to_s[i]:
                out_phase[i] = 2
            else:
                out_phase[i] = 1
        else:
            if u[i] < p_divide[i]:
                out_divide[i] = True
                out_phase[i] = 1
            else:
                out_phase[i] = 2


def cycle_transitions_ref(phase, p_enter_g0, p_exit_g0, p_g1_to_s, p_divide, u, out_phase,
                          out_divide):
    """Numpy twin of ``cycle_transitions``."""
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
        y0 = src_voxels[i] // nx
        x0 = src_voxels[i] % nx
        out_target[i] = -1
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
                j = min(int(u[i] * m), m - 1)
                out_target[i] = cand[j]
                free[cand[j]] = 0
                break


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
            continue
        target = -1
        if chemotaxis[i]:
            best = opn[v]
            for j in range(m):
                if opn[cand[j]] > best:
                    best = opn[cand[j]]
                    target = cand[j]
        if target < 0:
            target = cand[min(int(u[i] * m), m - 1)]
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
# Fused rule steps: behaviours (rule table, ``RuleSet.table``), per-step probabilities and the
# decision of each cell in one pass. Each cell is independent (uniforms drawn beforehand, one
# output element per cell), so the loops run on numba's threads with the same results. A probability is 1 - exp(-r dt), the expression of
# ``biology.leukemia._p``; numba's exp and numpy's are libm's exp here, elementwise (tested bit
# for bit against the unfused path). Behaviour indices ``b_*`` are rows of the table.

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
def _rate_prob(tab, p_base, b, sig, i, dt_h):
    """Per-step probability of rate behaviour ``b`` for cell ``i``. A cell none of whose rule
    signals is positive has the base rate exactly (``behaviour_active``), so its probability is
    ``p_base[b]``, the same expression on the same value computed once per call."""
    if behaviour_active(tab, b, sig, i):
        return _prob(behaviour_value(tab, b, sig, i), dt_h)
    return p_base[b]


@njit(cache=True, parallel=True)
def adhesion_step(sig, tab, b_secretion, b_adhesion, b_detachment, contact_row, bound, u,
                  adhesion_factor, dt_h, out_secretion, out_bound):
    """TGF-β1 secretion behaviour, then letting go of or binding to BLC (MODEL.md hyp. 2).

    A bound cell lets go when no BLC touches it, else with p(detachment); an unbound cell
    touching a BLC binds with p(adhesion × ``adhesion_factor``). One uniform per cell.

    Args:
        sig: (k, n) signals of the n cells; row ``contact_row`` is the BLC contact count.
        tab: rule table; b_*: its rows for the three behaviours.
        bound: (n,) bool bound flags before the step.
        u: (n,) uniforms.
        adhesion_factor: 1 − OPN-receptor block.
        dt_h: step (h).
        out_secretion: (n,) TGF-β1 secretion behaviour, written.
        out_bound: (n,) bool bound flags after the step, written.
    """
    p_base = _base_probs(tab, dt_h)
    for i in prange(bound.shape[0]):
        out_secretion[i] = behaviour_value(tab, b_secretion, sig, i)
        touching = sig[contact_row, i] > 0
        if bound[i]:
            if touching:
                out_bound[i] = not (u[i] < _rate_prob(tab, p_base, b_detachment, sig, i,
                                                      dt_h))
            else:
                out_bound[i] = False
        elif touching:
            out_bound[i] = u[i] < _prob(behaviour_value(tab, b_adhesion, sig, i)
                                        * adhesion_factor, dt_h)
        else:
            out_bound[i] = False


def adhesion_step_ref(sig, tab, b_secretion, b_adhesion, b_detachment, contact_row, bound, u,
                      adhesion_factor, dt_h, out_secretion, out_bound):
    """Numpy twin of ``adhesion_step``."""
    everyone = np.arange(bound.shape[0])
    out_secretion[:] = behaviour_value_ref(tab, b_secretion, sig, everyone)
    touching = sig[contact_row] > 0
    p_det = 1.0 - np.exp(-behaviour_value_ref(tab, b_detachment, sig, everyone) * dt_h)
    p_adh = 1.0 - np.exp(-behaviour_value_ref(tab, b_adhesion, sig, everyone)
                         * adhesion_factor * dt_h)
    let_go = bound & (~touching | (u < p_det))
    bind = ~bound & touching & (u < p_adh)
    out_bound[:] = (bound & ~let_go) | bind


@njit(cache=True, parallel=True)
def death_step(phase, sig, tab, b_death, b_s_death, b_c_death, u, dt_h, out_dies):
    """Death in any phase, plus S-phase-specific death in S-G2-M (cytarabine-like), plus
    cycling-cell death in G1 and S-G2-M (anthracycline-like; G0 spared). The hazards add, in
    that order.

    Args:
        phase: (n,) int8 phases; sig, tab: as for ``adhesion_step``.
        b_death, b_s_death, b_c_death: table rows of ``death_per_h``, ``s_phase_death_per_h``
            and ``cycling_death_per_h``.
        u: (n,) uniforms.
        out_dies: (n,) bool, written.
    """
    p_base = _base_probs(tab, dt_h)
    # The hazards at their base rates (no positive rule signal): computed once per phase.
    p_base_g1 = _prob(tab[b_death, 0] + tab[b_c_death, 0], dt_h)
    p_base_sg2m = _prob(tab[b_death, 0] + tab[b_s_death, 0] + tab[b_c_death, 0], dt_h)
    for i in prange(phase.shape[0]):
        ph = phase[i]
        if ph == 0:
            # The unfused hazard is death + 0.0 + 0.0, which is death exactly.
            out_dies[i] = u[i] < _rate_prob(tab, p_base, b_death, sig, i, dt_h)
        elif ph == 1:
            if behaviour_active(tab, b_death, sig, i) or behaviour_active(tab, b_c_death, sig, i):
                out_dies[i] = u[i] < _prob(behaviour_value(tab, b_death, sig, i)
                                           + behaviour_value(tab, b_c_death, sig, i), dt_h)
            else:
                out_dies[i] = u[i] < p_base_g1
        elif (behaviour_active(tab, b_death, sig, i) or behaviour_active(tab, b_s_death, sig, i)
              or behaviour_active(tab, b_c_death, sig, i)):
            out_dies[i] = u[i] < _prob(behaviour_value(tab, b_death, sig, i)
                                       + behaviour_value(tab, b_s_death, sig, i)
                                       + behaviour_value(tab, b_c_death, sig, i), dt_h)
        else:
            out_dies[i] = u[i] < p_base_sg2m


def death_step_ref(phase, sig, tab, b_death, b_s_death, b_c_death, u, dt_h, out_dies):
    """Numpy twin of ``death_step``."""
    everyone = np.arange(phase.shape[0])
    hazard = behaviour_value_ref(tab, b_death, sig, everyone) + np.where(
        phase == 2, behaviour_value_ref(tab, b_s_death, sig, everyone), 0.0)
    hazard = hazard + np.where(phase != 0, behaviour_value_ref(tab, b_c_death, sig, everyone),
                               0.0)
    out_dies[:] = u < 1.0 - np.exp(-hazard * dt_h)


@njit(cache=True, parallel=True)
def cycle_step(idx, phase, sig, tab, b_enter, b_exit, b_g1_exit, b_divide, u, dt_h, out_phase,
               out_divide):
    """``cycle_transitions`` with the probabilities computed from the rules in the same pass,
    each only in the phase that reads it.

    Args:
        idx: (m,) columns of ``sig`` of the cells (the survivors of ``death_step``).
        phase: (m,) int8 phases of those cells.
        sig, tab: as for ``adhesion_step``.
        b_enter, b_exit, b_g1_exit, b_divide: table rows of G0 entry, G0 exit, G1 exit and
            division rates.
        u: (m,) uniforms.
        out_phase: (m,) int8 new phase, written.
        out_divide: (m,) bool, written True where the cell divides.
    """
    p_base = _base_probs(tab, dt_h)
    for j in prange(idx.shape[0]):
        i = idx[j]
        ph = phase[j]
        out_divide[j] = False
        if ph == 0:
            out_phase[j] = 1 if u[j] < _rate_prob(tab, p_base, b_exit, sig, i, dt_h) else 0
        elif ph == 1:
            pe = _rate_prob(tab, p_base, b_enter, sig, i, dt_h)
            if u[j] < pe:
                out_phase[j] = 0
            elif u[j] < pe + (1.0 - pe) * _rate_prob(tab, p_base, b_g1_exit, sig, i, dt_h):
                out_phase[j] = 2
            else:
                out_phase[j] = 1
        else:
            if u[j] < _rate_prob(tab, p_base, b_divide, sig, i, dt_h):
                out_divide[j] = True
                out_phase[j] = 1
            else:
                out_phase[j] = 2


def cycle_step_ref(idx, phase, sig, tab, b_enter, b_exit, b_g1_exit, b_divide, u, dt_h,
                   out_phase, out_divide):
    """Numpy twin of ``cycle_step`` (through ``cycle_transitions_ref``)."""
    p = [1.0 - np.exp(-behaviour_value_ref(tab, b, sig, idx) * dt_h)
         for b in (b_enter, b_exit, b_g1_exit, b_divide)]
    cycle_transitions_ref(phase, *p, u, out_phase, out_divide)


@njit(cache=True, parallel=True)
def move_choice(idx, bound, sig, tab, b_migration, b_chemotaxis, u, chemotaxis_factor, dt_h,
                out_wants, out_chemo):
    """Which cells move this step, and which of those follow the OPN gradient.

    An unbound cell moves with p(migration); a mover follows OPN with probability
    ``chemotaxis_opn`` × ``chemotaxis_factor`` (1 − OPN-receptor block).

    Args:
        idx: (m,) columns of ``sig`` of the cells.
        bound: (m,) bool bound flags.
        sig, tab: as for ``adhesion_step``; b_*: table rows.
        u: (2, m) uniforms (row 0 decides moving, row 1 chemotaxis).
        out_wants, out_chemo: (m,) bool, written (``out_chemo`` False where not moving).
    """
    p_base = _base_probs(tab, dt_h)
    for j in prange(idx.shape[0]):
        i = idx[j]
        wants = (not bound[j]) and u[0, j] < _rate_prob(tab, p_base, b_migration, sig, i, dt_h)
        out_wants[j] = wants
        out_chemo[j] = wants and (u[1, j] < behaviour_value(tab, b_chemotaxis, sig, i)
                                  * chemotaxis_factor)


def move_choice_ref(idx, bound, sig, tab, b_migration, b_chemotaxis, u, chemotaxis_factor, dt_h,
                    out_wants, out_chemo):
    """Numpy twin of ``move_choice``."""
    p = 1.0 - np.exp(-behaviour_value_ref(tab, b_migration, sig, idx) * dt_h)
    out_wants[:] = ~bound & (u[0] < p)
    out_chemo[:] = out_wants & (u[1] < behaviour_value_ref(tab, b_chemotaxis, sig, idx)
                                * chemotaxis_factor)
