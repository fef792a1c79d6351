"""Leukemia niche: lattice kernels against their twins, rules on hand-built cell tables, PK and
interventions, and the engine with the AML modules on a small section."""

import numpy as np
import pytest

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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cycle_kernel_matches_twin(seed):
    rng = np.random.default_rng(seed)
    n = 501
    phase = rng.integers(0, 3, n).astype(np.int8)
    ps = [rng.random(n) for _ in range(4)]
    u = rng.random(n)
    a_p, b_p = np.empty_like(phase), np.empty_like(phase)
    a_d, b_d = np.empty(n, bool), np.empty(n, bool)
    K.cycle_transitions(phase, *ps, u, a_p, a_d)
    K.cycle_transitions_ref(phase, *ps, u, b_p, b_d)
    np.testing.assert_array_equal(a_p, b_p)
    np.testing.assert_array_equal(a_d, b_d)


def test_cycle_g0_cells_never_divide_and_certain_entry_goes_to_g0():
    phase = np.array([0, 1, 2], np.int8)
    one, zero = np.ones(3), np.zeros(3)
    out, div = np.empty(3, np.int8), np.empty(3, bool)
    K.cycle_transitions(phase, one, zero, one, one, np.full(3, 0.5), out, div)
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
                  'psmad_active_threshold = 0.5\n')
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


def test_fused_adhesion_and_death_match_unfused_path_and_twins():
    rs, names, behs, tab, sig, rng = _fused_case()
    b = {x: j for j, x in enumerate(behs)}
    n = sig.shape[1]
    idx = np.arange(n)
    ref = _unfused(rs, names, "lsc", behs, sig, idx)
    bound = rng.random(n) < 0.3
    u = rng.random(n)
    contact = names.index("contact_blc")
    outs = []
    for kern in (K.adhesion_step, K.adhesion_step_ref):
        sec, nb = np.empty(n), np.empty(n, bool)
        kern(sig, tab, b["tgfb_secretion_per_h"], b["adhesion_per_h"], b["detachment_per_h"],
             contact, bound, u, 0.7, 1.0, sec, nb)
        outs.append((sec, nb))
    touching = sig[contact] > 0
    let_go = bound & (~touching | (u < _p(ref["detachment_per_h"])))
    bind = ~bound & touching & (u < _p(ref["adhesion_per_h"] * 0.7))
    assert np.array_equal(outs[0][0], ref["tgfb_secretion_per_h"])
    assert np.array_equal(outs[0][1], (bound & ~let_go) | bind)
    assert np.array_equal(outs[0][1], outs[1][1])
    assert outs[0][1][bound & touching].any() and not outs[0][1][bound & ~touching].any()

    phase = rng.integers(0, 3, n).astype(np.int8)
    sig[names.index("cytarabine")] = np.where(rng.random(n) < 0.5, 0.0, 2.0)  # S-phase killing
    sig[names.index("doxorubicin")] = 0.0
    ref = _unfused(rs, names, "lsc", behs, sig, idx)
    hazard = ref["death_per_h"] + np.where(phase == 2, ref["s_phase_death_per_h"], 0.0)
    u = rng.random(n) * 0.5
    dies = [np.empty(n, bool), np.empty(n, bool)]
    death = (b["death_per_h"], b["s_phase_death_per_h"], b["cycling_death_per_h"])
    K.death_step(phase, sig, tab, *death, u, 1.0, dies[0])
    K.death_step_ref(phase, sig, tab, *death, u, 1.0, dies[1])
    assert np.array_equal(dies[0], u < _p(hazard)) and np.array_equal(dies[0], dies[1])
    assert dies[0][phase == 2].mean() > 5 * dies[0][phase != 2].mean() > 0

    # doxorubicin: cycling cells (G1, S-G2-M) die more, G0 not at all more
    sig[names.index("cytarabine")] = 0.0
    sig[names.index("doxorubicin")] = np.where(rng.random(n) < 0.5, 0.0, 5.0)
    ref = _unfused(rs, names, "lsc", behs, sig, idx)
    hazard = ref["death_per_h"] + np.where(phase != 0, ref["cycling_death_per_h"], 0.0)
    u = rng.random(n) * 0.05
    K.death_step(phase, sig, tab, *death, u, 1.0, dies[0])
    K.death_step_ref(phase, sig, tab, *death, u, 1.0, dies[1])
    assert np.array_equal(dies[0], u < _p(hazard)) and np.array_equal(dies[0], dies[1])
    dosed = sig[names.index("doxorubicin")] > 0
    assert (dies[0][(phase == 1) & dosed].mean() > 5 * dies[0][(phase == 1) & ~dosed].mean())
    assert np.array_equal(dies[0][phase == 0], u[phase == 0] < _p(ref["death_per_h"][phase == 0]))


def test_fused_cycle_and_move_match_unfused_path_and_twins():
    rs, names, behs, tab, sig, rng = _fused_case(seed=2)
    b = {x: j for j, x in enumerate(behs)}
    n = sig.shape[1]
    idx = np.sort(rng.choice(n, n // 2, replace=False))      # survivors of the death step
    ref = _unfused(rs, names, "lsc", behs, sig, idx)
    phase = rng.integers(0, 3, idx.size).astype(np.int8)
    u = rng.random(idx.size)
    exp_phase, exp_div = np.empty_like(phase), np.empty(idx.size, bool)
    K.cycle_transitions(phase, _p(ref["g0_entry_per_h"]), _p(ref["g0_exit_per_h"]),
                        _p(ref["g1_exit_per_h"]), _p(ref["division_per_h"]), u, exp_phase,
                        exp_div)
    args = (idx, phase, sig, tab, b["g0_entry_per_h"], b["g0_exit_per_h"], b["g1_exit_per_h"],
            b["division_per_h"], u, 1.0)
    for kern in (K.cycle_step, K.cycle_step_ref):
        ph, dv = np.empty_like(phase), np.empty(idx.size, bool)
        kern(*args, ph, dv)
        assert np.array_equal(ph, exp_phase) and np.array_equal(dv, exp_div)
    assert len(set(zip(phase.tolist(), exp_phase.tolist()))) >= 6 and exp_div.any()

    bound = rng.random(idx.size) < 0.3
    u2 = rng.random((2, idx.size))
    wants = ~bound & (u2[0] < _p(ref["migration_per_h"]))
    chemo = wants & (u2[1] < ref["chemotaxis_opn"] * 0.5)
    for kern in (K.move_choice, K.move_choice_ref):
        w, c = np.empty(idx.size, bool), np.empty(idx.size, bool)
        kern(idx, bound, sig, tab, b["migration_per_h"], b["chemotaxis_opn"], u2, 0.5, 1.0, w, c)
        assert np.array_equal(w, wants) and np.array_equal(c, chemo)
    assert chemo.any() and (wants & ~chemo).any()


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
    K.neighbour_count_map(live_blc, nx, ny, got)
    K.neighbour_count_map_ref(live_blc, nx, ny, twin)
    assert np.array_equal(got, twin)
    rows = t.rows_of("lsc")
    nb, nm, nl = (np.empty(rows.size) for _ in range(3))
    K.neighbour_census(t["voxel"][rows], t.occupant, t["kind"], t["alive"], nx, ny, KINDS["blc"],
                       KINDS["msc"], KINDS["lsc"], KINDS["blast"], nb, nm, nl)
    assert np.array_equal(got[t["voxel"][rows]].astype(np.float64), nb) and nb.max() >= 2
