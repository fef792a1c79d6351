"""Hill-rule kernel: a behaviour of every cell of one kind from its signals, at once.

PhysiCell's combination (rules grammar, PhysiCell 1.12 ``signal_behavior``): the up-regulating
signals make one multivariate Hill response U = X/(1+X), X = sum_r (s_r/h_r)^n_r, the
down-regulating ones D likewise, and

    b = b0 + (M_up - b0) U,   then   b <- b + (M_down - b) D.

Signals below or at zero contribute nothing (a Hill term of a non-positive signal is 0).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: How the per-cell helpers that kernels call at many sites are compiled: the two rule
#: functions below and ``kernels.leukemia._move_target``. Each leukemic kernel reaches the
#: rule functions at dozens of sites once its own helpers are inlined. With numba's
#: ``inline="always"`` their IR was copied into every site, and the parfor passes of a
#: ``prange`` kernel cost superlinearly in the IR's size: ``decide_step`` took ≈ 3 min to
#: compile from a cold cache, the phased leukemic kernels ≈ 1 min. Compiled once each and
#: inlined by LLVM instead (``forceinline`` marks them ``alwaysinline``), the leukemic kernels
#: of either schedule compile in ≈ 20–25 s. The helpers allocate nothing, so they need no
#: reference counting (``_nrt=False``, a private numba option: numba is pinned in
#: constraints.txt, and an option numba does not know fails at the first compile), and they
#: use the ``numpy`` error model that the ``prange`` bodies they are inlined into already have
#: (their only divisions are by positive table values and lattice widths). Same operations,
#: same bits; the speed is in docs/performance.md ("Compile time").
PER_CELL = dict(cache=True, forceinline=True, _nrt=False, error_model="numpy")


@njit(cache=True)
def hill_behaviour(base, up_sig, up_half, up_pow, up_max, dn_sig, dn_half, dn_pow, dn_min, out):
    """Behaviour values of ``n`` cells from their signals.

    Args:
        base: (n,) base value per cell (behaviour units).
        up_sig: (k_up, n) signals of the "increases" rules (signal units).
        up_half: (k_up,) half-max of each up rule (signal units).
        up_pow: (k_up,) Hill power of each up rule.
        up_max: value at saturating up-signal (behaviour units).
        dn_sig, dn_half, dn_pow: the same for the "decreases" rules.
        dn_min: value at saturating down-signal (behaviour units).
        out: (n,) written with the behaviour values.
    """
    n = base.shape[0]
    k_up = up_sig.shape[0]
    k_dn = dn_sig.shape[0]
    for i in range(n):
        x = 0.0
        for r in range(k_up):
            s = up_sig[r, i]
            if s > 0.0:
                x += (s / up_half[r]) ** up_pow[r]
        b = base[i] + (up_max - base[i]) * (x / (1.0 + x))
        y = 0.0
        for r in range(k_dn):
            s = dn_sig[r, i]
            if s > 0.0:
                y += (s / dn_half[r]) ** dn_pow[r]
        out[i] = b + (dn_min - b) * (y / (1.0 + y))
    return out


def _multivariate(sig: np.ndarray, half: np.ndarray, power: np.ndarray) -> np.ndarray:
    if sig.shape[0] == 0:
        return np.zeros(sig.shape[1])
    pos = np.where(sig > 0.0, sig, 0.0)
    terms = np.where(sig > 0.0, (pos / half[:, None]) ** power[:, None], 0.0)
    x = terms.sum(axis=0)
    return x / (1.0 + x)


def hill_behaviour_ref(base, up_sig, up_half, up_pow, up_max, dn_sig, dn_half, dn_pow, dn_min,
                       out):
    """Plain-numpy twin of ``hill_behaviour`` (same arguments)."""
    u = _multivariate(up_sig, up_half, up_pow)
    b = base + (up_max - base) * u
    d = _multivariate(dn_sig, dn_half, dn_pow)
    out[:] = b + (dn_min - b) * d
    return out


# ---------------------------------------------------------------------------------------------
# A rule table: every behaviour of one kind, for kernels that need several behaviours per cell

@njit(**PER_CELL)
def behaviour_value(tab, b, sig, i):
    """Behaviour ``b`` of cell ``i`` from a rule table (``RuleSet.table``) and a signal matrix.

    The same operations in the same order as ``hill_behaviour`` for that cell, so the same bits
    (tested): fused kernels call this instead of running ``hill_behaviour`` once per behaviour.

    Args:
        tab: (B, 5 + 6W) rule table: per behaviour base, n_up, up saturation, n_down, down
            saturation, then W (signal row, half-max, power) up triples and W down triples.
        b: behaviour row in the table.
        sig: (k, n) signal matrix (signal units).
        i: cell column in ``sig``.
    """
    down = 5 + (tab.shape[1] - 5) // 2
    x = 0.0
    for r in range(int(tab[b, 1])):
        c = 5 + 3 * r
        s = sig[int(tab[b, c]), i]
        if s > 0.0:
            x += _hill_term(s / tab[b, c + 1], tab[b, c + 2])
    b0 = tab[b, 0]
    v = b0 + (tab[b, 2] - b0) * (x / (1.0 + x))
    y = 0.0
    for r in range(int(tab[b, 3])):
        c = down + 3 * r
        s = sig[int(tab[b, c]), i]
        if s > 0.0:
            y += _hill_term(s / tab[b, c + 1], tab[b, c + 2])
    return v + (tab[b, 4] - v) * (y / (1.0 + y))


@njit(cache=True, inline="always")
def _hill_term(ratio, power):
    """``ratio ** power``, without calling ``pow`` for a power of exactly 1, where the result
    is ``ratio`` bit for bit: the exact result is a double, glibc's pow is within 0.52 ULP of
    it, and the nearest other doubles are 1 ULP away except below a power of two, where every
    case is tested (with random doubles and subnormals: ``test_leukemia``). A pow call costs
    ~20 ns; the OPN chemotaxis and drug rules have power 1."""
    if power == 1.0:
        return ratio
    return ratio ** power


@njit(cache=True, inline="always")
def behaviour_base_value(tab, b):
    """``behaviour_value`` of a cell none of whose rule signals is positive (every Hill sum 0):
    the same expression on the same values, so the same bits; a kernel computes it once per
    call and uses it for every cell ``behaviour_active`` says is at base."""
    x = 0.0
    b0 = tab[b, 0]
    v = b0 + (tab[b, 2] - b0) * (x / (1.0 + x))
    return v + (tab[b, 4] - v) * (x / (1.0 + x))


@njit(**PER_CELL)
def behaviour_active(tab, b, sig, i):
    """Whether some signal of behaviour ``b``'s rules is positive for cell ``i``. If not, every
    Hill term is 0 and ``behaviour_value`` is the base value exactly (b0 + (M − b0)·0, then
    b + (m − b)·0), so a caller may use a quantity computed once from the base value."""
    down = 5 + (tab.shape[1] - 5) // 2
    for r in range(int(tab[b, 1])):
        if sig[int(tab[b, 5 + 3 * r]), i] > 0.0:
            return True
    for r in range(int(tab[b, 3])):
        if sig[int(tab[b, down + 3 * r]), i] > 0.0:
            return True
    return False


def behaviour_value_ref(tab, b, sig, idx):
    """Plain-numpy twin of ``behaviour_value`` for the cells ``idx`` at once."""
    w = (tab.shape[1] - 5) // 6
    k_up, k_dn = int(tab[b, 1]), int(tab[b, 3])
    up = tab[b, 5:5 + 3 * w].reshape(w, 3)[:k_up]
    dn = tab[b, 5 + 3 * w:].reshape(w, 3)[:k_dn]
    out = np.empty(len(idx))
    hill_behaviour_ref(np.full(len(idx), tab[b, 0]), sig[up[:, 0].astype(np.int64)][:, idx],
                       up[:, 1], up[:, 2], tab[b, 2], sig[dn[:, 0].astype(np.int64)][:, idx],
                       dn[:, 1], dn[:, 2], tab[b, 4], out)
    return out
