"""``leukemia.update_order = "random_sequential"``: the two kernels against their twins and the
rules, hand-built cases, thread-count independence, and the engine under both schedules."""

import copy

import numba
import numpy as np
import pytest
from test_leukemia import (
    SMALL,
    _fused_case,
    _p,
    _same_state,
    _signal_sources_for,
    _state,
    _table_for,
    _unfused,
)

from marrow_abm.biology.leukemia import LeukemiaModule, find_module
from marrow_abm.engine import Engine
from marrow_abm.kernels import leukemia_sequential as L
from marrow_abm.kernels.counter_rng import uniforms_ref
from marrow_abm.scenario import load_scenario

SEQ = "leukemia.update_order=random_sequential"


@pytest.mark.parametrize("kind,drug", [("lsc", "cytarabine"), ("blast", "doxorubicin"),
                                       ("lsc", None)])
def test_decide_step_matches_twin_and_the_rules(kind, drug):
    rs, names, behs, tab, sig, rng = _fused_case(3000, 5, kind)
    n = sig.shape[1]
    for d in ("cytarabine", "doxorubicin"):
        sig[names.index(d)] = 0.0
    if drug:
        sig[names.index(drug)] = 3.0
    t, rows, _ = _table_for(sig, rng)
    sources = _signal_sources_for(t, rows, names, sig)
    bix = np.array([behs.index(b) for b in L.BEHAVIOURS])
    key, offset = np.uint64(0xC0FFEE), 17
    outs = []
    for kern, threads in ((L.decide_step, 1), (L.decide_step, 2), (L.decide_step_ref, 1)):
        tk = copy.deepcopy(t)
        mat = np.full(sig.shape, np.nan)
        act = np.full(n, 255, np.uint8)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            kern(rows, tk["voxel"], *sources(tk), tab, bix, names.index("contact_blc"), 0.8,
                 0.6, 1.0, key, offset, tk["phase"], tk["divisions_left"], kind == "blast",
                 mat, tk["tgfb_secretion_per_h"], act)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        outs.append((act, mat, _state(tk, np.zeros(1))))
    for act, mat, st in outs[1:]:
        assert np.array_equal(act, outs[0][0]) and np.array_equal(mat, outs[0][1])
        assert _same_state(st, outs[0][2])
    act, mat, st = outs[0]
    assert np.array_equal(mat, sig)

    # The verdicts from the rules (``RuleSet.evaluate``) and the draws, by hand.
    ref = _unfused(rs, names, kind, behs, sig, np.arange(n))
    ctr = (np.uint64(offset) + np.arange(n, dtype=np.uint64)) * np.uint64(L.DRAWS)
    u = [uniforms_ref(key, ctr + np.uint64(d)) for d in range(L.DRAWS)]
    ph = t["phase"][rows]
    hazard = (ref["death_per_h"] + np.where(ph == 2, ref["s_phase_death_per_h"], 0.0)
              + np.where(ph != 0, ref["cycling_death_per_h"], 0.0))
    dies = u[L.D_DEATH] < _p(hazard)
    assert np.array_equal(act == L.DIE, dies)
    assert np.array_equal(st["tgfb_secretion_per_h"][rows], ref["tgfb_secretion_per_h"])
    bound = st["bound"][rows]
    assert not (bound & (sig[names.index("contact_blc")] == 0)).any()
    assert not ((act & L.MOVE) != 0)[bound].any()            # bound cells stay
    divides = (act & L.DIVIDE) != 0
    assert (ph[divides] == 2).all() and (st["phase"][rows][divides] == 1).all()
    leave = act == L.LEAVE
    if kind == "blast":
        assert leave.any() and (t["divisions_left"][rows][leave] <= 0).all()
        assert not (divides & (t["divisions_left"][rows] <= 0)).any()
    else:
        assert not leave.any()
    chemo = (act & L.CHEMO) != 0
    assert ((act & L.MOVE) != 0)[chemo].all()
    moving = ~dies & ~leave & ~bound
    assert np.array_equal((act & L.MOVE) != 0, moving & (u[L.D_MIGRATE]
                                                         < _p(ref["migration_per_h"])))
    if drug:
        extra = (ph == 2) if drug == "cytarabine" else (ph != 0)
        assert dies[extra].mean() > 5 * dies[~extra].mean()


@pytest.mark.parametrize("radius", [1, 2])
def test_act_step_matches_twin_and_keeps_one_cell_per_voxel(radius):
    rng = np.random.default_rng(radius)
    n = 2500
    sig = np.zeros((1, n))
    t, rows, free = _table_for(sig, rng, ny=80, nx=80)
    n_lsc = 1800
    t["phase"][rows[t["phase"][rows] == 1]] = 2
    act = rng.choice([0, L.DIE, L.LEAVE, L.DIVIDE, L.MOVE, L.MOVE | L.CHEMO,
                      L.DIVIDE | L.MOVE], n, p=[.3, .05, .05, .2, .2, .1, .1]).astype(np.uint8)
    opn = rng.random(t.occupant.size)
    outs = []
    for kern in (L.act_step, L.act_step_ref):
        tk, fk = copy.deepcopy(t), free.copy()
        target = np.full(n, -9, np.int64)
        blast = np.zeros(n, np.bool_)
        left = np.full(n, -9, np.int64)
        k = kern(rows, act, n_lsc, tk["voxel"], tk["phase"], tk["divisions_left"], tk["alive"],
                 tk.occupant, fk, opn, 80, 80, radius, 0.4, 4, np.uint64(5), np.uint64(6),
                 target, blast, left)
        outs.append((target[:k], blast[:k], left[:k], _state(tk, fk)))
    for a, b in zip(outs[0][:3], outs[1][:3]):
        assert np.array_equal(a, b)
    assert _same_state(outs[0][3], outs[1][3])
    target, blast, left, st = outs[0]
    gone = (act & (L.DIE | L.LEAVE)) != 0
    assert not st["alive"][rows[gone]].any() and st["alive"][rows[~gone]].all()
    # daughters on voxels free before (or freed this step), one per voxel, none on a cell
    assert np.unique(target).size == target.size
    live = st["alive"]
    assert not np.isin(target, st["voxel"][live]).any()
    assert (st["free"][target] == 0).all()
    assert (st["occupant"][st["voxel"][live]] == np.flatnonzero(live)).all()
    assert (st["occupant"] >= 0).sum() == live.sum()
    # movers moved at most one voxel (Chebyshev), the others stayed
    v0, v1 = t["voxel"][rows], st["voxel"][rows]
    step = np.maximum(abs(v0 // 80 - v1 // 80), abs(v0 % 80 - v1 % 80))
    moves = (act & L.MOVE) != 0
    assert (step[~moves] == 0).all() and (step[moves] <= 1).all() and (step[moves] == 1).any()
    # LSC daughters: LSC with p 0.4 else blasts with 4 divisions; blast daughters inherit
    divided = (act & L.DIVIDE) != 0
    placed_blast = divided[n_lsc:].sum() - (st["phase"][rows[n_lsc:]][divided[n_lsc:]] == 2).sum()
    assert (blast.sum() >= placed_blast) and 0 < (~blast).sum() < target.size
    assert (left[~blast] == 4).all()
    stuck = divided & (st["phase"][rows] == 2)
    if radius == 1:
        assert stuck.any()
    assert np.array_equal(st["divisions_left"][rows[:n_lsc]], t["divisions_left"][rows[:n_lsc]])


def _run(extra=(), threads=1, seed=3):
    sc = load_scenario("aml_progression", [*SMALL, SEQ, *extra])
    eng = Engine(sc, seed=seed, n_threads=threads)
    return eng, eng.run()


def test_random_sequential_engine_is_reproducible_and_thread_independent():
    e1, r1 = _run()
    assert set(find_module(e1, LeukemiaModule).phase_handlers()) == {"pk", "secrete", "rules"}
    _, r1b = _run()
    _, r2 = _run(threads=2)
    assert r1.equals(r1b) and r1.equals(r2)
    cells = e1.cells
    live = cells["alive"]
    assert (cells.occupant[cells["voxel"][live]] == np.flatnonzero(live)).all()
    last = r1[(r1.time_h == r1.time_h.max()) & (r1.zone == "all")].iloc[0]
    assert last.n_lsc > 40 and last.n_blast > 0 and 0 < last.frac_lsc_g0 < 1
    _, r3 = _run(seed=4)
    assert not r1.equals(r3)


def test_fork_under_the_other_schedule_switches_schedule():
    eng, _ = _run()
    phased = load_scenario("aml_progression", [*SMALL, "leukemia.update_order=phased"])
    fork = eng.fork(phased)
    handlers = find_module(fork, LeukemiaModule).phase_handlers()
    assert {"cycle", "move"} <= set(handlers)
    assert "move" in {name for name, _ in fork.phases}
    fork.step()
    assert set(find_module(eng, LeukemiaModule).phase_handlers()) == {"pk", "secrete", "rules"}
