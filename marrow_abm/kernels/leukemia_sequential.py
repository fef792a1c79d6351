"""The leukemic step under ``leukemia.update_order = "random_sequential"``: two kernels instead of
the phased ``rules`` / ``cycle`` / ``move`` kernels of ``kernels.leukemia``, with the same rule
arithmetic (the per-cell helpers there) and counter-based uniforms (``kernels.counter_rng``).

1. ``decide_step`` (parallel over cells, one call per kind): from its signals at the start of the
   step each cell sets its TGF-β1 secretion, binds to or lets go of BLC, dies or not, makes its
   cycle transition and decides whether it divides, moves, and follows OPN. Every uniform is
   counter ``(offset + i)·DRAWS + d`` of the step's key, so the outcome does not depend on the
   thread count or on which thread takes which cell.
2. ``act_step`` (serial): the dead and the blasts out of divisions leave; then the cells that
   divide or move act one at a time in one uniformly random order (a Fisher–Yates shuffle on a
   second key), each placing its daughter, then moving: Mesa's ``shuffle_do`` activation for
   the only part of the step where cells interact (competing for free voxels).

Each kernel has a numpy twin below it, tested equal. Cycle phases as in ``kernels.leukemia``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

from .counter_rng import shuffle, shuffle_ref, uniform, uniforms_ref
from .hill import behaviour_value_ref
from .leukemia import (
    SG2M,
    _base_probs,
    _base_values,
    _bound_after,
    _death_base_probs,
    _dies,
    _fill_signals,
    _kill,
    _move_target,
    _pick_free,
    _transition,
    _value,
    _wants_move,
    cycle_transitions_ref,
    fill_signals_ref,
    move_cells_ref,
    place_daughters_ref,
)

#: The behaviours ``decide_step`` reads, in the order of its ``bix`` argument (table rows).
BEHAVIOURS = ("tgfb_secretion_per_h", "adhesion_per_h", "detachment_per_h", "death_per_h",
              "s_phase_death_per_h", "cycling_death_per_h", "g0_entry_per_h", "g0_exit_per_h",
              "g1_exit_per_h", "division_per_h", "migration_per_h", "chemotaxis_opn")
(_SEC, _ADH, _DET, _DEATH, _S_DEATH, _C_DEATH, _ENTER, _EXIT, _G1_EXIT, _DIVIDE, _MIGRATE,
 _CHEMO) = range(len(BEHAVIOURS))

#: Uniforms per cell per step, and which is which (counter = cell position · DRAWS + draw).
DRAWS = 8
D_ADHESION, D_DEATH, D_CYCLE, D_MIGRATE, D_CHEMO, D_PLACE, D_RENEW, D_MOVE = range(DRAWS)

#: ``decide_step``'s verdict per cell, as bits.
DIE, LEAVE, DIVIDE, MOVE, CHEMO = 1, 2, 4, 8, 16


@njit(cache=True, parallel=True)
def decide_step(rows, voxel, fcols, fscale, frow, maps, mrow, bound, brow, consts, crow,
                percell, prow, tab, bix, contact_row, adhesion_factor, chemotaxis_factor, dt_h,
                key, offset, phase, divisions_left, differentiate, out_sig, secretion, out_act):
    """Every decision of one leukemic kind's cells for this step, in one parallel pass.

    Per cell ``i`` (row ``rows[i]``), with uniforms ``uniform(key, (offset + i)·DRAWS + d)``:
    TGF-β1 secretion (written to ``secretion``); adhesion (``_bound_after``, ``bound``
    written); death (``_dies``: verdict ``DIE``); the cycle transition (``_transition``,
    ``phase`` written; a divider is set to G1 and marked ``DIVIDE``; with ``differentiate``
    (blasts) a divider with no divisions left is marked ``LEAVE`` instead); and, for a cell
    still there, moving (``_wants_move`` on the new bound flag: ``MOVE``, and ``CHEMO`` when it
    follows OPN). Signals are read at the start of the step (the ``bound`` signal is the flag
    before adhesion), as in the phased step.

    Args:
        rows ... prow: the cells and their signal sources, as for ``kernels.leukemia.rules_step``.
        tab: rule table; bix: (len(BEHAVIOURS),) int64 table rows of ``BEHAVIOURS``.
        contact_row: matrix row of ``contact_blc``.
        adhesion_factor, chemotaxis_factor: 1 − OPN-receptor block.
        dt_h: step (h); key: uint64 key of the step's draws; offset: this kind's first cell
            position among all leukemic cells of the step.
        phase, divisions_left: the table's columns (``phase`` written).
        differentiate: blasts (out of divisions -> leave).
        out_sig: (k, n) signal matrix, written; secretion: the table's column, rows written.
        out_act: (n,) uint8, written with the verdict bits.
    """
    _fill_signals(rows, voxel, fcols, fscale, frow, maps, mrow, bound, brow, consts, crow,
                  percell, prow, out_sig)
    p_base = _base_probs(tab, dt_h)
    v_base = _base_values(tab)
    p_base_g1, p_base_sg2m = _death_base_probs(tab, bix[_DEATH], bix[_S_DEATH], bix[_C_DEATH],
                                               dt_h)
    for i in prange(rows.shape[0]):
        out_act[i] = _decide_cell(rows[i], i, tab, bix, p_base, v_base, p_base_g1, p_base_sg2m,
                                  out_sig, contact_row, adhesion_factor, chemotaxis_factor, dt_h,
                                  uint64(key), (uint64(offset) + uint64(i)) * uint64(DRAWS),
                                  bound, phase, divisions_left, differentiate, secretion)


@njit(cache=True, inline="always")
def _decide_cell(r, i, tab, bix, p_base, v_base, p_base_g1, p_base_sg2m, sig, contact_row,
                 adhesion_factor, chemotaxis_factor, dt_h, key, c0, bound, phase,
                 divisions_left, differentiate, secretion):
    """``decide_step`` for the cell in matrix column ``i`` (row ``r``); returns its verdict."""
    secretion[r] = _value(tab, v_base, bix[_SEC], sig, i)
    b = _bound_after(tab, p_base, v_base, bix[_ADH], bix[_DET], bound[r], sig[contact_row, i] > 0,
                     sig, i, uniform(key, c0 + uint64(D_ADHESION)), adhesion_factor, dt_h)
    bound[r] = b
    ph = phase[r]
    if _dies(tab, p_base, p_base_g1, p_base_sg2m, bix[_DEATH], bix[_S_DEATH], bix[_C_DEATH], ph,
             sig, i, uniform(key, c0 + uint64(D_DEATH)), dt_h):
        return DIE
    new, div = _transition(tab, p_base, bix[_ENTER], bix[_EXIT], bix[_G1_EXIT], bix[_DIVIDE],
                           ph, sig, i, uniform(key, c0 + uint64(D_CYCLE)), dt_h)
    phase[r] = new
    act = 0
    if div:
        # A blast with no divisions left differentiates and leaves the marrow.
        if differentiate and divisions_left[r] <= 0:
            return LEAVE
        act = DIVIDE
    moves, chemo = _wants_move(tab, p_base, v_base, bix[_MIGRATE], bix[_CHEMO], b, sig, i,
                               uniform(key, c0 + uint64(D_MIGRATE)),
                               uniform(key, c0 + uint64(D_CHEMO)), chemotaxis_factor, dt_h)
    if moves:
        act |= MOVE | (CHEMO if chemo else 0)
    return act


def decide_step_ref(rows, voxel, fcols, fscale, frow, maps, mrow, bound, brow, consts, crow,
                    percell, prow, tab, bix, contact_row, adhesion_factor, chemotaxis_factor,
                    dt_h, key, offset, phase, divisions_left, differentiate, out_sig, secretion,
                    out_act):
    """Numpy twin of ``decide_step`` (every behaviour for every cell, then masks)."""
    fill_signals_ref(rows, voxel, fcols, fscale, frow, maps, mrow, bound, brow, consts, crow,
                     percell, prow, out_sig)
    n = rows.size
    everyone = np.arange(n)
    ctr = (np.uint64(offset) + everyone.astype(np.uint64)) * np.uint64(DRAWS)
    u = {d: uniforms_ref(key, ctr + np.uint64(d)) for d in range(DRAWS)}

    def value(j):
        return behaviour_value_ref(tab, bix[j], out_sig, everyone)

    def prob(rate):
        return 1.0 - np.exp(-rate * dt_h)

    secretion[rows] = value(_SEC)
    touching = out_sig[contact_row] > 0
    was = bound[rows]
    let_go = was & (~touching | (u[D_ADHESION] < prob(value(_DET))))
    bind = ~was & touching & (u[D_ADHESION] < prob(value(_ADH) * adhesion_factor))
    now = (was & ~let_go) | bind
    bound[rows] = now
    ph = phase[rows]
    hazard = value(_DEATH) + np.where(ph == 2, value(_S_DEATH), 0.0)
    hazard = hazard + np.where(ph != 0, value(_C_DEATH), 0.0)
    dies = u[D_DEATH] < prob(hazard)
    new = np.empty(n, dtype=phase.dtype)
    div = np.empty(n, dtype=np.bool_)
    cycle_transitions_ref(ph, prob(value(_ENTER)), prob(value(_EXIT)), prob(value(_G1_EXIT)),
                          prob(value(_DIVIDE)), u[D_CYCLE], new, div)
    phase[rows[~dies]] = new[~dies]
    leave = ~dies & div & (differentiate & (divisions_left[rows] <= 0))
    stays = ~dies & ~leave
    moves = stays & ~now & (u[D_MIGRATE] < prob(value(_MIGRATE)))
    chemo = moves & (u[D_CHEMO] < value(_CHEMO) * chemotaxis_factor)
    act = np.where(stays & div, DIVIDE, 0) | np.where(moves, MOVE, 0) | np.where(chemo, CHEMO, 0)
    act = np.where(dies, DIE, np.where(leave, LEAVE, act))
    out_act[:] = act


@njit(cache=True)
def act_step(rows, act, n_lsc, voxel, phase, divisions_left, alive, occupant, free, opn, nx, ny,
             radius, p_symmetric, blast_divisions, key, key_order, out_target, out_blast,
             out_left):
    """The serial part of the step, for every leukemic cell of the step at once.

    The cells marked ``DIE`` or ``LEAVE`` are killed (table and occupancy) and their voxels
    freed. Then the cells marked ``DIVIDE`` or ``MOVE`` act one at a time in a uniformly
    random order (``shuffle`` with ``key_order``): a divider places its daughter
    (``_pick_free`` within ``radius``; no room: it stays in S-G2-M, contact inhibition); an
    LSC's daughter is an LSC with ``p_symmetric``, else a blast with ``blast_divisions``
    left; a blast's daughter is a blast with one division fewer left, as its mother now has;
    then a mover moves (``_move_target``, OPN gradient with ``CHEMO``). Uniforms: counters
    ``i·DRAWS + D_PLACE / D_RENEW / D_MOVE`` of ``key`` for the cell at position i.

    Args:
        rows: (n,) the step's leukemic rows, LSC first (positions 0..n_lsc-1) then blasts, in
            the positions ``decide_step`` numbered; act: (n,) its verdicts.
        voxel, phase, divisions_left, alive, occupant: the table's columns and occupancy map
            (written).
        free: free-marrow map (written); opn: flat OPN field; nx, ny: lattice shape.
        radius, p_symmetric, blast_divisions: ``[leukemia]`` settings.
        key, key_order: uint64 keys (the decisions', and the activation order's).
        out_target, out_blast, out_left: (n,) written for the first k daughters: voxel, whether
            a blast, and divisions left.

    Returns:
        k, the number of daughters placed (in activation order).
    """
    n = rows.shape[0]
    key = uint64(key)
    for i in range(n):
        if act[i] & (DIE | LEAVE):
            _kill(rows[i], alive, voxel, occupant, free)
    order = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(n):
        if act[i] & (DIVIDE | MOVE):
            order[k] = i
            k += 1
    shuffle(order, k, uint64(key_order))
    cand = np.empty(8 * max(radius, 1), dtype=np.int64)
    nd = 0
    for j in range(k):
        i = order[j]
        r = rows[i]
        a = act[i]
        c0 = uint64(i) * uint64(DRAWS)
        if a & DIVIDE:
            t = _pick_free(voxel[r], free, nx, ny, radius, uniform(key, c0 + uint64(D_PLACE)),
                           cand)
            if t < 0:
                phase[r] = SG2M
            else:
                free[t] = 0
                out_target[nd] = t
                if i < n_lsc:
                    out_blast[nd] = not uniform(key, c0 + uint64(D_RENEW)) < p_symmetric
                    out_left[nd] = blast_divisions
                else:
                    left = divisions_left[r] - 1
                    divisions_left[r] = left
                    out_blast[nd] = True
                    out_left[nd] = left
                nd += 1
        if a & MOVE:
            v = voxel[r]
            t = _move_target(v, (a & CHEMO) != 0, opn, free, nx, ny,
                             uniform(key, c0 + uint64(D_MOVE)), cand)
            if t >= 0:
                free[v] = 1
                free[t] = 0
                occupant[v] = -1
                occupant[t] = r
                voxel[r] = t
    return nd


def act_step_ref(rows, act, n_lsc, voxel, phase, divisions_left, alive, occupant, free, opn, nx,
                 ny, radius, p_symmetric, blast_divisions, key, key_order, out_target, out_blast,
                 out_left):
    """Plain-Python twin of ``act_step`` (through ``place_daughters_ref`` and
    ``move_cells_ref`` one cell at a time)."""
    gone = (act & (DIE | LEAVE)) != 0
    for r in rows[gone]:
        if alive[r]:
            alive[r] = False
            occupant[voxel[r]] = -1
        free[voxel[r]] = 1
    order = np.flatnonzero((act & (DIVIDE | MOVE)) != 0)
    shuffle_ref(order, order.size, key_order)

    def u(i, d):
        return float(uniforms_ref(key, np.array([i * DRAWS + d], dtype=np.uint64))[0])

    nd = 0
    target = np.empty(1, dtype=np.int64)
    for i in order:
        r, a = rows[i], act[i]
        if a & DIVIDE:
            place_daughters_ref(voxel[[r]], free, nx, ny, radius, [u(i, D_PLACE)], target)
            if target[0] < 0:
                phase[r] = SG2M
            else:
                out_target[nd] = target[0]
                if i < n_lsc:
                    out_blast[nd] = not u(i, D_RENEW) < p_symmetric
                    out_left[nd] = blast_divisions
                else:
                    divisions_left[r] -= 1
                    out_blast[nd] = True
                    out_left[nd] = divisions_left[r]
                nd += 1
        if a & MOVE:
            v = voxel[r]
            move_cells_ref(np.array([v]), [True], [(a & CHEMO) != 0], opn, free, nx, ny,
                           [u(i, D_MOVE)], target)
            if target[0] != v:
                occupant[v] = -1
                occupant[target[0]] = r
                voxel[r] = target[0]
    return nd


__all__ = ["BEHAVIOURS", "CHEMO", "DIE", "DIVIDE", "DRAWS", "LEAVE", "MOVE", "act_step",
           "act_step_ref", "decide_step", "decide_step_ref"]
