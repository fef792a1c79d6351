"""Megakaryocyte-lineage kernels (MODEL.md §3, §6 hypotheses 7–9), each beside its numpy twin.

Kernels take arrays and scalars only, write into ``out`` arrays, and draw no random numbers: the
caller (``marrow_abm.biology.megakaryocytes``) draws the per-cell uniforms from named streams
first. The placement kernels visit cells in row order and update an occupancy copy as they go,
so two cells never claim one voxel and the result is deterministic; their twins run the same
loop in plain Python (the order *is* the rule, so it is not vectorised).

Stage codes of ``mk_stage``: ``CYCLING`` (MKP dividing, or MK in endomitotic cycles),
``MATURING`` (no more cycles: cytoplasmic maturation while drifting to a sinusoid),
``SHEDDING`` (at a sinusoid, releasing proplatelets).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

CYCLING, MATURING, SHEDDING = 0, 1, 2
#: Events returned by ``mk_advance``.
EV_NONE, EV_MITOSIS, EV_START_SHEDDING, EV_DIE_IMMATURE, EV_DIE_SHED = 0, 1, 2, 3, 4
#: Smallest kinase activity entering the log-odds: full inhibition means "no cytokinesis drive"
#: without taking log(0).
_MIN_ACTIVITY = 1e-6

# ---------------------------------------------------------------------------------------------
# Cytokinesis versus endomitosis


@njit(cache=True)
def endomitosis_probability(ploidy_n, act_aurka, act_aurkb, act_plk1, logit_base,
                            logit_per_doubling, w_aurka, w_aurkb, w_plk1, out):
    """Probability that a mitosis ends in endomitosis rather than cytokinesis.

    logit p = logit_base + logit_per_doubling * log2(ploidy/2)
              - w_aurka ln a_A - w_aurkb ln a_B - w_plk1 ln a_P

    where a_k = genotype multiplier × (1 − drug inhibition) is the effective activity of each
    mitotic kinase (1 = healthy, uninhibited). Aurora A/B and PLK1 drive cytokinesis: their
    inhibition polyploidises MK (Wen 2012 Cell 150:575; Kobayashi 2025 Leukemia), their
    over-expression in MDS (E2F/mitosis signature) favours cytokinesis. Commitment raises the
    endomitosis odds with each doubling (hypothesis 7).

    Args:
        ploidy_n: (n,) ploidy in N (2, 4, ... 128).
        act_aurka, act_aurkb, act_plk1: effective activities (dimensionless, ≥ 0).
        logit_base: log-odds of endomitosis of a 2N cell at unit activities.
        logit_per_doubling: added log-odds per ploidy doubling.
        w_aurka, w_aurkb, w_plk1: weight of each kinase's log-activity.
        out: (n,) float64, receives the probabilities.
    """
    drive = (w_aurka * math.log(max(act_aurka, _MIN_ACTIVITY))
             + w_aurkb * math.log(max(act_aurkb, _MIN_ACTIVITY))
             + w_plk1 * math.log(max(act_plk1, _MIN_ACTIVITY)))
    for i in range(ploidy_n.shape[0]):
        z = logit_base + logit_per_doubling * math.log2(ploidy_n[i] / 2.0) - drive
        out[i] = 1.0 / (1.0 + math.exp(-z))
    return out


def endomitosis_probability_ref(ploidy_n, act_aurka, act_aurkb, act_plk1, logit_base,
                                logit_per_doubling, w_aurka, w_aurkb, w_plk1, out):
    """Plain-numpy twin of ``endomitosis_probability``."""
    drive = sum(w * np.log(max(a, _MIN_ACTIVITY)) for w, a in
                ((w_aurka, act_aurka), (w_aurkb, act_aurkb), (w_plk1, act_plk1)))
    z = logit_base + logit_per_doubling * np.log2(np.asarray(ploidy_n, np.float64) / 2.0) - drive
    out[:] = 1.0 / (1.0 + np.exp(-z))
    return out


# ---------------------------------------------------------------------------------------------
# Clocks: cycling, maturation, shedding


@njit(cache=True)
def mk_advance(stage, clock_h, ploidy_n, shed_left, at_sinusoid, u_complete, dt_h,
               shedding_h, platelets_per_n, complete_half_n, complete_hill,
               out_stage, out_clock_h, out_shed_left, out_shed, out_event):
    """Advance each MK-lineage cell's clock by ``dt_h`` and report what happens.

    - ``CYCLING``: the clock counts down to the next mitosis (``EV_MITOSIS`` when it runs out;
      the caller decides cytokinesis/endomitosis and resets the clock).
    - ``MATURING``: the clock counts down the cytoplasmic maturation. When it has run out and the
      cell sits beside a sinusoid it completes maturation with probability
      p = P^h / (P^h + P50^h) in its ploidy P (Levine 1982 Blood 60:1122: 95% of platelet-shedding
      MK are 16N–32N, 80% of 4N–8N MK are immature) and starts shedding
      ``platelets_per_n × P`` platelets (∝ ploidy: Winkelmann 1987; ``EV_START_SHEDDING``), or
      dies immature (``EV_DIE_IMMATURE``). Away from a sinusoid it waits (and drifts).
    - ``SHEDDING``: releases platelets at a constant rate over ``shedding_h``; when none are left
      the remaining nucleus dies (``EV_DIE_SHED``).

    Args:
        stage, clock_h, ploidy_n, shed_left: (n,) current state (stage code, h, N, platelets).
        at_sinusoid: (n,) bool, the cell's voxel touches a sinusoid.
        u_complete: (n,) uniforms in [0, 1) for the maturation-completion draw.
        dt_h: step (h). shedding_h: duration of shedding (h).
        platelets_per_n: platelets released per N of ploidy.
        complete_half_n, complete_hill: ploidy (N) at which half the MK complete maturation,
            and the Hill power.
        out_stage, out_clock_h, out_shed_left: (n,) new state.
        out_shed: (n,) platelets released this step. out_event: (n,) int8 event code.
    """
    for i in range(stage.shape[0]):
        s = stage[i]
        c = clock_h[i] - dt_h
        left = shed_left[i]
        shed = 0.0
        ev = EV_NONE
        if s == CYCLING:
            if c <= 0.0:
                ev = EV_MITOSIS
        elif s == MATURING:
            if c <= 0.0:
                c = 0.0
                if at_sinusoid[i]:
                    ph = ploidy_n[i] ** complete_hill
                    p = ph / (ph + complete_half_n ** complete_hill)
                    if u_complete[i] < p:
                        s = SHEDDING
                        left = platelets_per_n * ploidy_n[i]
                        c = shedding_h
                        ev = EV_START_SHEDDING
                    else:
                        ev = EV_DIE_IMMATURE
        else:
            total = platelets_per_n * ploidy_n[i]
            rate = total / shedding_h if shedding_h > 0.0 else total / dt_h
            shed = min(left, rate * dt_h)
            left -= shed
            if left <= 1e-9 * max(total, 1.0):
                left = 0.0
                ev = EV_DIE_SHED
        out_stage[i] = s
        out_clock_h[i] = c
        out_shed_left[i] = left
        out_shed[i] = shed
        out_event[i] = ev


def mk_advance_ref(stage, clock_h, ploidy_n, shed_left, at_sinusoid, u_complete, dt_h,
                   shedding_h, platelets_per_n, complete_half_n, complete_hill,
                   out_stage, out_clock_h, out_shed_left, out_shed, out_event):
    """Plain-numpy twin of ``mk_advance`` (vectorised by stage)."""
    stage = np.asarray(stage)
    ploidy = np.asarray(ploidy_n, np.float64)
    c = np.asarray(clock_h, np.float64) - dt_h
    left = np.asarray(shed_left, np.float64).copy()
    s = stage.copy()
    ev = np.zeros(stage.shape, np.int8)
    shed = np.zeros(stage.shape, np.float64)

    cyc = stage == CYCLING
    ev[cyc & (c <= 0.0)] = EV_MITOSIS

    done = (stage == MATURING) & (c <= 0.0)
    c[done] = 0.0
    ph = ploidy ** complete_hill
    p = ph / (ph + complete_half_n ** complete_hill)
    ready = done & np.asarray(at_sinusoid, bool)
    start = ready & (np.asarray(u_complete) < p)
    s[start] = SHEDDING
    left[start] = platelets_per_n * ploidy[start]
    c[start] = shedding_h
    ev[start] = EV_START_SHEDDING
    ev[ready & ~start] = EV_DIE_IMMATURE

    sh = stage == SHEDDING
    total = platelets_per_n * ploidy
    rate = total / shedding_h if shedding_h > 0.0 else total / dt_h
    shed[sh] = np.minimum(left[sh], rate[sh] * dt_h)
    left[sh] -= shed[sh]
    empty = sh & (left <= 1e-9 * np.maximum(total, 1.0))
    left[empty] = 0.0
    ev[empty] = EV_DIE_SHED

    out_stage[:] = s
    out_clock_h[:] = c
    out_shed_left[:] = left
    out_shed[:] = shed
    out_event[:] = ev


# ---------------------------------------------------------------------------------------------
# Space: a free neighbour for a cytokinesis daughter; drift toward sinusoids


@njit(cache=True, inline="always")
def _face_neighbour(v, x, d, nx):
    """Flat index of face-neighbour ``d`` (0 up, 1 down, 2 left, 3 right) of voxel ``v`` in
    column ``x``, or -1 across the left/right edge (up/down may fall outside: callers check)."""
    if d == 0:
        return v - nx
    if d == 1:
        return v + nx
    if d == 2:
        return v - 1 if x > 0 else -1
    return v + 1 if x < nx - 1 else -1


@njit(cache=True)
def choose_free_neighbour(voxels, occupant, marrow, nx, u, out):
    """For each cell (in row order), a free marrow face-neighbour chosen by ``u``, or -1.

    A chosen voxel is marked taken (``occupant`` is updated in place with -2), so later cells in
    the same call cannot choose it. Pass a copy if the real occupancy must not change.

    Args:
        voxels: (n,) flat voxel of each dividing cell.
        occupant: (ny*nx,) int64, row index or -1 when free; updated in place.
        marrow: (ny*nx,) bool, marrow voxels.
        nx: lattice width (voxels).
        u: (n,) uniforms in [0, 1) choosing among the free neighbours.
        out: (n,) int64, receives the chosen voxel or -1 when none is free.
    """
    size = occupant.shape[0]
    cand = np.empty(4, np.int64)
    for i in range(voxels.shape[0]):
        v = voxels[i]
        x = v % nx
        k = 0
        for d in range(4):
            w = _face_neighbour(v, x, d, nx)
            if 0 <= w < size and marrow[w] and occupant[w] == -1:
                cand[k] = w
                k += 1
        if k == 0:
            out[i] = -1
        else:
            j = min(int(u[i] * k), k - 1)
            out[i] = cand[j]
            occupant[cand[j]] = -2
    return out


def choose_free_neighbour_ref(voxels, occupant, marrow, nx, u, out):
    """Plain-Python twin of ``choose_free_neighbour`` (same visiting order)."""
    size = occupant.shape[0]
    for i, v in enumerate(np.asarray(voxels)):
        x = v % nx
        neigh = [v - nx, v + nx, v - 1 if x > 0 else -1, v + 1 if x < nx - 1 else -1]
        cand = [w for w in neigh if 0 <= w < size and marrow[w] and occupant[w] == -1]
        if not cand:
            out[i] = -1
            continue
        w = cand[min(int(u[i] * len(cand)), len(cand) - 1)]
        out[i] = w
        occupant[w] = -2
    return out


@njit(cache=True)
def drift_step(voxels, dist, occupant, marrow, nx, out):
    """One step of drift down a distance map: each cell (in row order) moves to its free marrow
    face-neighbour of smallest ``dist`` if that is smaller than its own, else stays.

    Mature MK migrate to sinusoids to release proplatelets (Junt 2007 Science 317:1767; MODEL.md
    §3); this is the deterministic, lattice version of that drift. ``occupant`` is updated in
    place (vacated voxel -1, new voxel the cell's old row value), so cells moved earlier in the
    call free or take voxels for the later ones.

    Args:
        voxels: (n,) flat voxel of each drifting cell.
        dist: (ny*nx,) float, distance to the target (µm; e.g. to the nearest sinusoid).
        occupant: (ny*nx,) int64, row index or -1; updated in place.
        marrow: (ny*nx,) bool.
        nx: lattice width.
        out: (n,) int64, receives the new voxel (the old one when the cell stays).
    """
    size = occupant.shape[0]
    for i in range(voxels.shape[0]):
        v = voxels[i]
        x = v % nx
        best = v
        best_d = dist[v]
        for d in range(4):
            w = _face_neighbour(v, x, d, nx)
            if 0 <= w < size and marrow[w] and occupant[w] == -1 and dist[w] < best_d:
                best = w
                best_d = dist[w]
        if best != v:
            occupant[best] = occupant[v]
            occupant[v] = -1
        out[i] = best
    return out


def drift_step_ref(voxels, dist, occupant, marrow, nx, out):
    """Plain-Python twin of ``drift_step``."""
    size = occupant.shape[0]
    for i, v in enumerate(np.asarray(voxels)):
        x = v % nx
        best, best_d = v, dist[v]
        for w in (v - nx, v + nx, v - 1 if x > 0 else -1, v + 1 if x < nx - 1 else -1):
            if 0 <= w < size and marrow[w] and occupant[w] == -1 and dist[w] < best_d:
                best, best_d = w, dist[w]
        if best != v:
            occupant[best] = occupant[v]
            occupant[v] = -1
        out[i] = best
    return out


__all__ = [
    "CYCLING",
    "EV_DIE_IMMATURE",
    "EV_DIE_SHED",
    "EV_MITOSIS",
    "EV_NONE",
    "EV_START_SHEDDING",
    "MATURING",
    "SHEDDING",
    "choose_free_neighbour",
    "choose_free_neighbour_ref",
    "drift_step",
    "drift_step_ref",
    "endomitosis_probability",
    "endomitosis_probability_ref",
    "mk_advance",
    "mk_advance_ref",
]
