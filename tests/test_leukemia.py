"""Leukemia niche: lattice kernels against their twins, rules on hand-built cell tables, PK and
interventions, and the engine with the AML modules on a small section."""

import copy

import numpy as np
import pytest
from numba import njit

from marrow_abm.biology import interventions as iv
from marrow_abm.biology.leukemia import LeukemiaModule, find_module
from marrow_abm.biology.niche_dynamics import NicheDynamicsModule
from marrow_abm.cells import KINDS, CellTable
from marrow_abm.engine import Engine
from marrow_abm.kernels import leukemia as K
from marrow_abm.scenario import load_scenario

SMALL = ["geometry.marrow_radius_um=200", "geometry.cortex_thickness_um=60", "run.days=2",
         "leukemia.n_lsc_initial=40"]


def _table():
    """A 5×5 lattice: BLC at the centre (12), an LSC beside it (13), a blast diagonal (6), an
    MSC far (0) and an LSC alone (24)."""
    t = CellTable((5, 5))
    for kind, v in (("blc", 12), ("lsc", 13), ("blast", 6), ("msc", 0), ("lsc", 24)):
        t.add(kind, [v])
    return t


def test_census_counts_moore_neighbours_and_matches_twin():
    t = _table()
    vox = t["voxel"].copy()
    outs = [np.empty(5) for _ in range(6)]
    args = (vox, t.occupant, t["kind"], t["alive"], 5, 5, KINDS["blc"], KINDS["msc"],
            KINDS["lsc"], KINDS["blast"])
    K.neighbour_census(*args, *outs[:3])
    K.neighbour_census_ref(*args, *outs[3:])
    for a, b in zip(outs[:3], outs[3:]):
        np.testing.assert_array_equal(a, b)
    blc, msc, leuk = outs[:3]
    assert blc.tolist() == [0, 1, 1, 0, 0]          # the LSC and the diagonal blast touch it
    assert leuk[0] == 2 and leuk[4] == 0


def test_census_ignores_dead_cells():
    t = _table()
    t.kill(np.array([0]))
    out = [np.empty(1) for _ in range(3)]
    K.neighbour_census(t["voxel"][1:2], t.occupant, t["kind"], t["alive"], 5, 5, 0, 1, 2, 3, *out)
    assert out[0][0] == 0


def test_cycle_g0_cells_never_divide_and_certain_entry_goes_to_g0():
    phase = np.array([0, 1, 2], np.int8)
    one, zero = np.ones(3), np.zeros(3)
    out, div = np.empty(3, np.int8), np.empty(3, bool)
    K.cycle_transitions_ref(phase, one, zero, one, one, np.full(3, 0.5), out, div)
    assert out.tolist() == [0, 0, 1] and div.tolist() == [False, False, True]


@pytest.mark.parametrize("radius", [1, 2])
def test_place_daughters_matches_twin_and_never_reuses_a_voxel(radius):
    rng = np.random.default_rng(radius)
    ny, nx = 13, 17
    free = (rng.random(ny * nx) < 0.3).astype(np.uint8)
    src = rng.choice(ny * nx, 40, replace=False)
    u = rng.random(40)
    fa, fb = free.copy(), free.copy()
    a, b = np.empty(40, np.int64), np.empty(40, np.int64)
    K.place_daughters(src, fa, nx, ny, radius, u, a)
    K.place_daughters_ref(src, fb, nx, ny, radius, u, b)
    np.testing.assert_array_equal(a, b)
    taken = a[a >= 0]
    assert np.unique(taken).size == taken.size and free[taken].all()
    ys, xs = np.divmod(taken, nx)
    sy, sx = np.divmod(src[a >= 0], nx)
    assert np.max(np.maximum(abs(ys - sy), abs(xs - sx))) <= radius


def test_move_kernel_matches_twin_and_follows_opn():
    rng = np.random.default_rng(5)
    ny, nx = 11, 11
    free = (rng.random(ny * nx) < 0.6).astype(np.uint8)
    vox = np.flatnonzero(free == 0)[:20]
    opn = rng.random(ny * nx)
    wants, chemo, u = rng.random(20) < 0.7, rng.random(20) < 0.5, rng.random(20)
    fa, fb = free.copy(), free.copy()
    a, b = np.empty(20, np.int64), np.empty(20, np.int64)
    K.move_cells(vox, wants, chemo, opn, fa, nx, ny, u, a)
    K.move_cells_ref(vox, wants, chemo, opn, fb, nx, ny, u, b)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fa, fb)
    # a lone chemotactic cell steps to its best neighbour
    free = np.ones(9, np.uint8)
    free[4] = 0
    opn = np.zeros(9)
    opn[2] = 1.0
    out = np.empty(1, np.int64)
    K.move_cells(np.array([4]), np.array([True]), np.array([True]), opn, free, 3, 3,
                 np.array([0.0]), out)
    assert out[0] == 2 and free[4] == 1 and free[2] == 0


def test_cytarabine_pk_step_mean_integrates_the_bolus():
    data = {"interventions": {"chemo": {"start_day": 0.0, "stop_day": 1.0, "every_h": 24.0,
                                        "dose_mg_per_kg": 100.0, "half_life_h": 0.4,
                                        "volume_l_per_kg": 1.0}}}
    auc = sum(iv.drug_step_mean_mg_per_l(data, "cytarabine", float(t), 1.0) for t in range(24))
    assert auc == pytest.approx(100.0 / (np.log(2) / 0.4), rel=1e-6)   # D/V / k
    assert iv.drug_step_mean_mg_per_l(data, "cytarabine", 24.0 * 1.5, 1.0) < 1e-12
    assert iv.dose_times_h(data["interventions"]["chemo"]) == [0.0]


def test_doxorubicin_pk_accumulates_over_daily_doses():
    """The '+3' of the 5+3: three daily boluses of a drug with t½ 24 h. Exposure over 30 days is
    3 D/V / k (each dose's full AUC), the level just before the 3rd dose is the sum of the first
    two decayed, and nothing is given from stop_day on."""
    item = {"start_day": 0.0, "stop_day": 3.0, "every_h": 24.0, "dose_mg_per_kg": 3.0,
            "half_life_h": 24.0, "volume_l_per_kg": 25.0}
    data = {"interventions": {"doxorubicin": item}}
    k = np.log(2) / 24.0
    auc = sum(iv.drug_step_mean_mg_per_l(data, "doxorubicin", float(t), 1.0)
              for t in range(24 * 30))
    assert auc == pytest.approx(3 * 0.12 / k * (1 - 2.0 ** -30), rel=1e-3)
    assert iv.dose_times_h(item) == [0.0, 24.0, 48.0]
    before_third = iv.bolus_step_mean_mg_per_l(item, 47.0, 1.0)
    exact = 0.12 * (np.exp(-k * 47) + np.exp(-k * 23)) * (1 - np.exp(-k)) / k
    assert before_third == pytest.approx(exact, rel=1e-12)
    assert iv.drug_step_mean_mg_per_l(data, "cytarabine", 0.0, 1.0) == 0.0   # no chemo table: none


def test_intervention_window_is_start_inclusive_stop_exclusive():
    data = {"interventions": {"opn_inhibition": {"start_day": 1.0, "stop_day": 2.0,
                                                 "inhibition": 0.9}}}
    assert iv.strength(data, "opn_inhibition", 23.0) == 0.0
    assert iv.strength(data, "opn_inhibition", 24.0) == 0.9
    assert iv.strength(data, "opn_inhibition", 48.0) == 0.0


@pytest.fixture(scope="module")
def engine():
    eng = Engine(load_scenario("aml_progression", SMALL))
    eng.run(2.0)
    return eng


def test_engine_runs_aml_and_records_every_metric(engine):
    df = engine.records()
    for col in ("n_lsc", "n_lsc_g0", "frac_lsc_g0", "n_blast", "n_leukemic", "frac_leukemic_g0",
                "frac_g0_leukemic_touching_blc", "n_blc", "n_msc", "mean_opn", "mean_tgfb",
                "mean_mitogen", "mean_blc_tgfbr2", "frac_blc_psmad",
                "mean_lsc_tgfb_secretion", "burden", "frac_normal"):
        assert col in df.columns
    last = df[(df.zone == "all") & (df.time_h == df.time_h.max())].iloc[0]
    assert last.n_leukemic == last.n_lsc + last.n_blast > 40
    assert last.burden + last.frac_normal <= 1.0
    assert last.mean_tgfb > 0


def test_engine_keeps_one_cell_per_voxel(engine):
    cells = engine.cells
    vox = cells["voxel"][cells["alive"]]
    assert np.unique(vox).size == vox.size
    assert (engine.geometry.labels.ravel()[vox] == 0).all()
    assert (cells.occupant[vox] == np.flatnonzero(cells["alive"])).all()


def test_bound_cells_touch_a_blc(engine):
    snap = find_module(engine, LeukemiaModule).snapshot()
    assert (snap.loc[snap.bound, "n_blc_neighbours"] > 0).all()


def test_engine_is_deterministic_for_a_seed():
    a = Engine(load_scenario("aml_progression", SMALL)).run(1.0)
    b = Engine(load_scenario("aml_progression", SMALL)).run(1.0)
    assert a.drop(columns="scenario").equals(b.drop(columns="scenario"))


def test_transwell_prevents_binding():
    eng = Engine(load_scenario("aml_transwell", SMALL))
    eng.run(1.0)
    assert not eng.cells["bound"].any()


def test_tgfb_raises_blc_psmad_and_opn_and_tgfbr2_inhibition_blocks_it():
    base = SMALL + ["leukemia.n_lsc_initial=0", "interventions.tgfb_supplement.start_day=0",
                    "interventions.tgfb_supplement.stop_day=10",
                    "interventions.tgfb_supplement.source_per_h=3.0"]
    on = Engine(load_scenario("aml_progression", base))
    on.run(1.0)
    off = Engine(load_scenario("aml_progression", base + [
        "interventions.tgfbr2_inhibition.start_day=0", "interventions.tgfbr2_inhibition."
        "stop_day=10", "interventions.tgfbr2_inhibition.inhibition=1.0"]))
    off.run(1.0)
    rows_on, rows_off = on.cells.rows_of("blc"), off.cells.rows_of("blc")
    assert on.cells["psmad"][rows_on].mean() > 0.5 > off.cells["psmad"][rows_off].mean()
    assert (on.cells["opn_secretion_per_h"][rows_on].mean()
            > 3 * off.cells["opn_secretion_per_h"][rows_off].mean())
    assert find_module(on, NicheDynamicsModule) is not None


def test_missing_behaviours_table_is_a_scenario_error(tmp_path):
    from marrow_abm.errors import ScenarioError

    sc = tmp_path / "s.toml"
    sc.write_text('description = "x"\nextends = "default"\n[leukemia]\nn_lsc_initial = 1\n'
                  'n_blast_initial = 0\np_symmetric_self_renewal = 0.3\n'
                  'division_radius_voxels = 1\nblast_divisions = 2\nblc_tgfbr2_relax_h = 1.0\n'
                  'blc_psmad_relax_h = 1.0\nblc_tgfb_uptake_per_h = 0.5\n'
                  'psmad_active_threshold = 0.5\nupdate_order = "phased"\n')
    with pytest.raises(ScenarioError, match=r"behaviours"):
        load_scenario(str(sc))


# -- fused rule kernels (issue 7): twins, and the same bits as the unfused path ------------------

def _fused_case(n=4000, seed=0, kind="lsc"):
    """The AML rules of ``kind`` as a table, and a random signal matrix with many zeros (so both
    the base-value shortcut and the Hill terms are exercised) and some negative values."""
    import marrow_abm.schemas.aml  # noqa: F401  (registers the AML vocabulary)
    from marrow_abm.rules import scenario_rules

    rs = scenario_rules(load_scenario("aml_progression"))
    names = sorted(rs.signals_needed(kind) | {"contact_blc"})
    behs = list(rs.bases[kind])
    rng = np.random.default_rng(seed)
    sig = rng.random((len(names), n)) * 2.0 - 0.1
    sig[rng.random(sig.shape) < 0.4] = 0.0
    sig[names.index("contact_blc")] = rng.integers(0, 3, n) * (rng.random(n) < 0.3)
    sig[names.index("bound")] = rng.random(n) < 0.2
    return rs, names, behs, rs.table(kind, behs, names), sig, rng


def _unfused(rs, names, kind, behs, sig, idx):
    """Each behaviour through ``RuleSet.evaluate`` (the unfused production path)."""
    d = {s: sig[j][idx] for j, s in enumerate(names)}
    return {b: rs.evaluate(kind, b, d, len(idx)) for b in behs}


def _p(rate, dt=1.0):
    return 1.0 - np.exp(-np.asarray(rate) * dt)


@pytest.mark.parametrize("kind", ["lsc", "blast"])
def test_rule_table_values_are_bit_identical_to_evaluate(kind):
    from marrow_abm.kernels.hill import behaviour_value, behaviour_value_ref

    rs, names, behs, tab, sig, _ = _fused_case(300, 1, kind)
    idx = np.arange(sig.shape[1])
    ref = _unfused(rs, names, kind, behs, sig, idx)
    for j, b in enumerate(behs):
        got = np.array([behaviour_value(tab, j, sig, i) for i in idx])
        assert np.array_equal(got, ref[b]), b                     # bit for bit
        np.testing.assert_allclose(behaviour_value_ref(tab, j, sig, idx), ref[b], rtol=1e-12)
        # evaluate_at on a subset gives the same bits as evaluate on all
        sub = idx[::3]
        d = {s: sig[k] for k, s in enumerate(names)}
        assert np.array_equal(rs.evaluate_at(kind, b, d, sub), ref[b][sub]), b
    with pytest.raises(ValueError, match="not in the signal matrix"):
        rs.table(kind, behs, ["contact_blc"])


def _table_for(sig, rng, ny=60, nx=70, lead=7):
    """A cell table holding one LSC per signal-matrix column (rows ``lead`` on, after a few
    BLC), the rows in matrix order, with random phases and bound flags; and its free map."""
    n = sig.shape[1]
    t = CellTable((ny, nx))
    t.add_column("phase", np.int8, fill=1)
    t.add_column("bound", np.bool_, fill=False)
    t.add_column("divisions_left", np.int16, fill=0)
    t.add_column("tgfb_secretion_per_h", np.float64, fill=0.0)
    vox = rng.choice(ny * nx, n + lead, replace=False)
    t.add("blc", vox[:lead])
    rows = t.add("lsc", vox[lead:], phase=rng.integers(0, 3, n).astype(np.int8),
                 bound=rng.random(n) < 0.3, divisions_left=rng.integers(0, 3, n))
    free = (t.occupant < 0).view(np.uint8).copy()
    return t, rows, free


def _state(t, free):
    return {name: t[name].copy() for name in t.columns} | {"occupant": t.occupant.copy(),
                                                           "free": free.copy()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _signal_sources_for(t, rows, names, sig, opn_scale=1.0):
    """Signal sources for the fused kernels (``rules_step``, ``decide_step``) that give the
    matrix ``sig``, from every source kind: the two fields as ``<field>_at`` columns (OPN
    scaled by ``opn_scale``, as the receptor block does; ``sig``'s OPN row is scaled to
    match), BLC contact from a lattice map, bound from the column (``sig``'s row set from
    it), the drugs as constants (their values in ``sig``'s first column). Returns a function
    of a (deep-copied) table giving the sources on that table's columns."""
    n = rows.size
    for f in ("opn", "mitogen"):
        t.add_column(f"{f}_at", np.float64)
        t[f"{f}_at"][rows] = sig[names.index(f)]
    sig[names.index("opn")] *= opn_scale
    contact = np.zeros(t.occupant.size, np.uint8)
    contact[t["voxel"][rows]] = sig[names.index("contact_blc")]
    sig[names.index("bound")] = t["bound"][rows]
    drugs = [sig[names.index(d), 0] for d in ("cytarabine", "doxorubicin")]
    for d, v in zip(("cytarabine", "doxorubicin"), drugs):
        sig[names.index(d)] = v
    return lambda tk: ((tk["opn_at"], tk["mitogen_at"]), np.array([opn_scale, 1.0]),
                       np.array([names.index("opn"), names.index("mitogen")]), (contact,),
                       np.array([names.index("contact_blc")]), tk["bound"],
                       names.index("bound"), np.array(drugs),
                       np.array([names.index("cytarabine"), names.index("doxorubicin")]),
                       np.empty((0, n)), np.empty(0, np.int64))


def test_rules_step_matches_twin_and_the_unfused_path():
    rs, names, behs, tab, sig, rng = _fused_case()
    b = {x: j for j, x in enumerate(behs)}
    n = sig.shape[1]
    t, rows, _ = _table_for(sig, rng)
    sig[names.index("cytarabine")] = 0.25
    sig[names.index("doxorubicin")] = 0.0
    sources = _signal_sources_for(t, rows, names, sig, opn_scale=0.6)
    bound_before = t["bound"][rows].copy()
    u = rng.random(n)
    behaviour = (b["tgfb_secretion_per_h"], b["adhesion_per_h"], b["detachment_per_h"],
                 names.index("contact_blc"), u, 0.7, 1.0)
    results = []
    for kern in (K.rules_step, K.rules_step_ref):
        tk = copy.deepcopy(t)
        mat = np.full(sig.shape, np.nan)
        kern(rows, tk["voxel"], *sources(tk), tab, *behaviour, mat, tk["tgfb_secretion_per_h"])
        results.append((mat, tk))
    (mat, tk), (mat_ref, tk_ref) = results
    assert np.array_equal(mat, sig) and np.array_equal(mat_ref, sig)
    ref = _unfused(rs, names, "lsc", behs, sig, np.arange(n))
    touching = sig[names.index("contact_blc")] > 0
    let_go = bound_before & (~touching | (u < _p(ref["detachment_per_h"])))
    bind = ~bound_before & touching & (u < _p(ref["adhesion_per_h"] * 0.7))
    assert np.array_equal(tk["tgfb_secretion_per_h"][rows], ref["tgfb_secretion_per_h"])
    assert np.array_equal(tk["bound"][rows], (bound_before & ~let_go) | bind)
    assert _same_state(_state(tk, np.zeros(1)), _state(tk_ref, np.zeros(1)))
    assert tk["bound"][rows][bound_before & touching].any()
    assert not tk["bound"][rows][bound_before & ~touching].any()


def test_fused_death_matches_unfused_path_and_twin():
    rs, names, behs, tab, sig, rng = _fused_case()
    b = {x: j for j, x in enumerate(behs)}
    n = sig.shape[1]
    idx = np.arange(n)
    death = (b["death_per_h"], b["s_phase_death_per_h"], b["cycling_death_per_h"])
    t, rows, free = _table_for(sig, rng)
    phase = t["phase"][rows]
    t.kill(rows[:5])                       # killed by another module this step: left alone
    for drug, u_scale, extra in (("cytarabine", 0.5, phase == 2), ("doxorubicin", 0.05,
                                                                    phase != 0)):
        sig[names.index("cytarabine")] = 0.0
        sig[names.index("doxorubicin")] = 0.0
        sig[names.index(drug)] = np.where(rng.random(n) < 0.5, 0.0, 2.0 if drug == "cytarabine"
                                          else 5.0)
        ref = _unfused(rs, names, "lsc", behs, sig, idx)
        sub = "s_phase_death_per_h" if drug == "cytarabine" else "cycling_death_per_h"
        hazard = ref["death_per_h"] + np.where(extra, ref[sub], 0.0)
        u = rng.random(n) * u_scale
        dies = u < _p(hazard)
        outs = []
        for kern in (K.death_step, K.death_step_ref):
            tk, fk = copy.deepcopy(t), free.copy()
            keep = np.full(n, -1, np.int64)
            m = kern(rows, tk["phase"], sig, tab, *death, u, 1.0, tk["alive"], tk["voxel"],
                     tk.occupant, fk, keep)
            outs.append((m, keep[:m], _state(tk, fk)))
        (m, keep, st), (m_ref, keep_ref, st_ref) = outs
        assert m == m_ref == n - dies.sum() and np.array_equal(keep, np.flatnonzero(~dies))
        assert np.array_equal(keep, keep_ref) and _same_state(st, st_ref)
        expect = copy.deepcopy(t)
        expect.kill(rows[dies])
        fexp = free.copy()
        fexp[t["voxel"][rows[dies]]] = 1
        assert _same_state(st, _state(expect, fexp))
        dosed = sig[names.index(drug)] > 0
        assert dies[extra & dosed].mean() > 5 * dies[extra & ~dosed].mean()


def test_fused_cycle_divide_and_move_match_unfused_path_and_twins():
    rs, names, behs, tab, sig, rng = _fused_case(seed=2)
    b = {x: j for j, x in enumerate(behs)}
    n = sig.shape[1]
    t, rows, free = _table_for(sig, rng, ny=90, nx=90)
    keep = np.sort(rng.choice(n, n // 2, replace=False))      # survivors of the death step
    ref = _unfused(rs, names, "lsc", behs, sig, keep)
    phase = t["phase"][rows[keep]]
    u = rng.random(keep.size)
    exp_phase, exp_div = np.empty_like(phase), np.empty(keep.size, bool)
    K.cycle_transitions_ref(phase, _p(ref["g0_entry_per_h"]), _p(ref["g0_exit_per_h"]),
                            _p(ref["g1_exit_per_h"]), _p(ref["division_per_h"]), u, exp_phase,
                            exp_div)
    rates = (b["g0_entry_per_h"], b["g0_exit_per_h"], b["g1_exit_per_h"], b["division_per_h"])
    for differentiate in (False, True):
        outs = []
        for kern in (K.cycle_step, K.cycle_step_ref):
            tk, fk = copy.deepcopy(t), free.copy()
            drows = np.full(keep.size, -1, np.int64)
            k = kern(keep, rows, tk["phase"], sig, tab, *rates, u, 1.0, tk["divisions_left"],
                     differentiate, tk["alive"], tk["voxel"], tk.occupant, fk, drows)
            outs.append((drows[:k], _state(tk, fk)))
        (drows, st), (drows_ref, st_ref) = outs
        assert np.array_equal(drows, drows_ref) and _same_state(st, st_ref)
        assert np.array_equal(st["phase"][rows[keep]], exp_phase)
        done = differentiate & (t["divisions_left"][rows[keep]] <= 0)
        assert np.array_equal(drows, rows[keep][exp_div & ~done])
        assert np.array_equal(~st["alive"][rows[keep]], exp_div & done)
    assert len(set(zip(phase.tolist(), exp_phase.tolist()))) >= 6 and exp_div.any()

    # division: daughters into free voxels in a random order; no room -> stay in S-G2-M
    free[rng.random(free.size) < 0.93] = 0
    order = rng.permutation(drows.size)
    ud = rng.random(drows.size)
    outs = []
    for kern in (K.divide_step, K.divide_step_ref):
        tk, fk = copy.deepcopy(t), free.copy()
        target, left = np.full(drows.size, -9, np.int64), np.full(drows.size, -9, np.int64)
        k = kern(drows, order, tk["voxel"], tk["phase"], tk["divisions_left"], True, fk, 90, 90,
                 1, ud, target, left)
        outs.append((target[:k], left[:k], _state(tk, fk)))
    assert all(np.array_equal(x, y) for x, y in zip(outs[0][:2], outs[1][:2]))
    assert _same_state(outs[0][2], outs[1][2])
    fexp, texp = free.copy(), np.empty(drows.size, np.int64)
    K.place_daughters(t["voxel"][drows[order]], fexp, 90, 90, 1, ud, texp)
    assert np.array_equal(outs[0][0], texp[texp >= 0]) and (texp < 0).any()
    assert (outs[0][2]["phase"][drows[order][texp < 0]] == 2).all()
    assert np.array_equal(outs[0][1], t["divisions_left"][drows[order][texp >= 0]] - 1)

    # movement: the movers of the surviving columns, then moved in the table in a given order
    bound = t["bound"]
    alive = t["alive"].copy()
    alive[rows[::7]] = False
    idx, idx_ref = np.empty(n, np.int64), np.empty(n, np.int64)
    m = K.alive_columns(rows, alive, idx)
    assert m == K.alive_columns_ref(rows, alive, idx_ref) and np.array_equal(idx[:m], idx_ref[:m])
    idx = idx[:m]
    ref = _unfused(rs, names, "lsc", behs, sig, idx)
    u2 = rng.random((2, m))
    wants = ~bound[rows[idx]] & (u2[0] < _p(ref["migration_per_h"]))
    chemo = wants & (u2[1] < ref["chemotaxis_opn"] * 0.5)
    outs = []
    for kern in (K.move_choice, K.move_choice_ref):
        movers, ch = np.full(n + 3, -1, np.int64), np.zeros(n + 3, bool)
        k = kern(idx, rows, bound, sig, tab, b["migration_per_h"], b["chemotaxis_opn"], u2, 0.5,
                 1.0, movers, ch, 3)
        outs.append((k, movers, ch))
    assert outs[0][0] == outs[1][0] == 3 + wants.sum()
    assert np.array_equal(outs[0][1], outs[1][1]) and np.array_equal(outs[0][2], outs[1][2])
    assert np.array_equal(outs[0][1][3:outs[0][0]], rows[idx][wants])
    assert np.array_equal(outs[0][2][3:outs[0][0]], chemo[wants])
    assert chemo.any() and (wants & ~chemo).any()
    movers, ch = outs[0][1][3:outs[0][0]], outs[0][2][3:outs[0][0]]
    order = rng.permutation(movers.size)
    opn = rng.random(t.occupant.size)
    um = rng.random(movers.size)
    states = []
    for kern in (K.move_step, K.move_step_ref):
        tk, fk = copy.deepcopy(t), free.copy()
        kern(movers, ch, order, tk["voxel"], tk.occupant, opn, fk, 90, 90, um)
        states.append(_state(tk, fk))
    assert _same_state(*states)
    fexp, vexp = free.copy(), np.empty(movers.size, np.int64)
    K.move_cells(t["voxel"][movers[order]], np.ones(movers.size, bool), ch[order], opn, fexp,
                 90, 90, um, vexp)
    assert np.array_equal(states[0]["voxel"][movers[order]], vexp)
    assert np.array_equal(states[0]["free"], fexp)
    live = states[0]["alive"]
    assert (states[0]["occupant"][states[0]["voxel"][live]] == np.flatnonzero(live)).all()
    assert (states[0]["occupant"] >= 0).sum() == live.sum()
    assert 100 < (vexp != t["voxel"][movers[order]]).sum() < movers.size     # some boxed in


def test_pow_of_power_one_is_the_base_exactly():
    """The premise of ``hill._hill_term``: pow(x, 1.0) == x for every positive double tried
    (each binade's ends, random bit patterns, subnormals)."""
    from marrow_abm.kernels.hill import _hill_term

    @njit
    def both(x, out_pow, out_term):
        for i in range(x.size):
            out_pow[i] = x[i] ** np.float64(1.0 + 0.0 * x[i])     # a runtime power: libm pow
            out_term[i] = _hill_term(x[i], 1.0)

    rng = np.random.default_rng(11)
    binades = 2.0 ** np.arange(-1074, 1024).astype(np.float64)
    bits = rng.integers(1, 0x7FF0000000000000, 2_000_000, dtype=np.int64).view(np.float64)
    x = np.concatenate([binades, np.nextafter(binades, np.inf), np.nextafter(binades, 0), bits])
    x = x[(x > 0) & np.isfinite(x)]
    a, t = np.empty_like(x), np.empty_like(x)
    both(x, a, t)
    assert np.array_equal(a, x) and np.array_equal(t, x)


def test_blc_neighbour_map_matches_census_and_twin():
    rng = np.random.default_rng(5)
    ny, nx = 30, 23
    t = CellTable((ny, nx))
    vox = rng.choice(ny * nx, 400, replace=False)
    t.add("blc", vox[:60])
    t.add("lsc", vox[60:])
    t.kill(np.array([3, 7]))                                   # dead BLC do not count
    got, twin = np.zeros(ny * nx, np.uint8), np.zeros(ny * nx, np.uint8)
    live_blc = t["voxel"][t.rows_of("blc")]
    K.neighbour_count_move(np.empty(0, np.int64), live_blc, nx, ny, got)  # as the module builds it
    K.neighbour_count_map_ref(live_blc, nx, ny, twin)
    assert np.array_equal(got, twin)
    rows = t.rows_of("lsc")
    nb, nm, nl = (np.empty(rows.size) for _ in range(3))
    K.neighbour_census(t["voxel"][rows], t.occupant, t["kind"], t["alive"], nx, ny, KINDS["blc"],
                       KINDS["msc"], KINDS["lsc"], KINDS["blast"], nb, nm, nl)
    assert np.array_equal(got[t["voxel"][rows]].astype(np.float64), nb) and nb.max() >= 2


def test_blc_map_moves_to_new_voxels_as_if_built_from_zeros():
    rng = np.random.default_rng(6)
    ny, nx = 25, 31
    counts = np.zeros(ny * nx, np.uint8)
    old = np.empty(0, np.int64)
    for _ in range(6):
        new = np.sort(rng.choice(ny * nx, rng.integers(0, 80), replace=False))
        twin = counts.copy()
        K.neighbour_count_move(old, new, nx, ny, counts)
        K.neighbour_count_move_ref(old, new, nx, ny, twin)
        scratch = np.zeros(ny * nx, np.uint8)
        K.neighbour_count_map_ref(new, nx, ny, scratch)
        assert np.array_equal(counts, scratch) and np.array_equal(twin, scratch)
        old = new


@pytest.mark.parametrize("scenario", ["aml_progression", "aml_transwell"])
@pytest.mark.parametrize("census", [False, True])
def test_rules_step_reads_the_signals_the_module_senses(scenario, census):
    """The matrix ``rules_step`` fills (``_signal_sources``) and ``LeukemiaModule.signals``
    both equal the signals built here by hand for every kind of signal: fields (OPN through
    the receptor block), BLC contact from the kept map or the census, MSC contact and leukemic
    density from the census, bound, burden, zones, drugs; and no contact through a transwell."""
    from marrow_abm.biology import aml_signals as S
    from marrow_abm.biology.leukemia import LEUKEMIC_KINDS

    eng = Engine(load_scenario(scenario, SMALL + [
        "interventions.opn_receptor_block.start_day=0",
        "interventions.opn_receptor_block.stop_day=5",
        "interventions.opn_receptor_block.inhibition=0.4"]))
    eng.run(0.5)
    mod = find_module(eng, LeukemiaModule)
    eng.drug_mg_per_l["cytarabine"] = 0.3
    names = sorted({*eng.fields.names, "contact_blc", "bound", "burden", *S.ZONE_SIGNALS,
                    *iv.DRUG_SIGNALS} | ({"contact_msc", "leukemic_density"} if census else set()))
    cells = eng.cells
    expect = {}
    for kind in LEUKEMIC_KINDS:
        rows = cells.rows_of(kind)
        vox = cells["voxel"][rows]
        nb, nm, nl = S.census(eng, rows)
        by_hand = {f: cells[f"{f}_at"][rows] * (0.6 if f == "opn" else 1.0)
                   for f in eng.fields.names}
        by_hand.update(contact_blc=nb * (scenario != "aml_transwell"), contact_msc=nm,
                       leukemic_density=nl / 8.0, bound=cells["bound"][rows].astype(float),
                       burden=np.full(rows.size, S.burden(eng)))
        by_hand.update({z: m[vox].astype(float) for z, m in S.zone_maps(eng).items()})
        by_hand.update({d: np.full(rows.size, c) for d, c in eng.drug_mg_per_l.items()})
        expect[kind] = np.stack([by_hand[name] for name in names])
        sig = mod.signals(kind, rows, set(names))
        assert sorted(sig) == names
        assert np.array_equal(np.stack([sig[name] for name in names]), expect[kind]), kind
        mod._sig_names[kind] = names
        mod._tables[kind] = mod.rules.table(kind, list(mod.rules.bases[kind]), names)
    assert expect["lsc"].shape[1] > 10 and expect["blast"].shape[1] > 0
    mod.apply_rules()
    for kind in LEUKEMIC_KINDS:
        got = mod._beh[kind].sig
        assert got.shape == expect[kind].shape and np.array_equal(got, expect[kind]), kind
    contact = expect["lsc"][names.index("contact_blc")]
    assert (contact == 0).all() if scenario == "aml_transwell" else contact.max() > 0


def test_frac_normal_counts_free_marrow_per_zone_exactly():
    """``frac_normal`` (ZoneIndex.count_where over the free map) is the count of free marrow
    voxels of each zone, as indexing the zone table with every free voxel gives it."""
    from marrow_abm.biology import aml_signals as S
    from marrow_abm.geometry import MARROW

    eng = Engine(load_scenario("aml_progression", SMALL))
    eng.run(1.0)
    z = eng.zones
    free = S.free_map(eng).astype(bool)
    marrow = np.flatnonzero(eng.geometry.labels.ravel() == MARROW)
    by_table = z.count(marrow[free[marrow]]) / z.size()
    got = find_module(eng, LeukemiaModule).metrics()["frac_normal"]()
    assert np.array_equal(got, by_table)
    assert 0.0 < got.min() and got.max() < 1.0
