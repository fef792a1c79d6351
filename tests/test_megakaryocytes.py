"""Megakaryocyte lineage: kernels against their numpy twins, and each rule on hand-built cells."""

import numpy as np
import pytest

from marrow_abm.biology.megakaryocytes import (
    MegakaryocyteModule,
    culture_ploidy,
    kinase_activities,
    p_endomitosis,
)
from marrow_abm.cells import KINDS
from marrow_abm.engine import Engine
from marrow_abm.geometry import MARROW, SINUSOID
from marrow_abm.kernels import megakaryocytes as K
from marrow_abm.scenario import load_scenario

# A small section with no lineage influx and no spin-up: the tests place every cell by hand.
BARE = ["geometry.marrow_radius_um=150", "geometry.cortex_thickness_um=40", "run.days=1",
        "megakaryocytes.influx_per_marrow_voxel_per_h=0", "megakaryocytes.spinup_days=0",
        "megakaryocytes.mkp_death_per_h=0"]


def _engine(extra=()):
    return Engine(load_scenario("healthy_steady_state", [*BARE, *extra]), seed=3)


def _mk_module(eng) -> MegakaryocyteModule:
    return next(m for m in eng.modules if m.name == "megakaryocytes")


def _free_interior_voxel(eng, away_from_sinusoid=True):
    """A marrow voxel whose four neighbours are free marrow (not beside a sinusoid if asked)."""
    labels = eng.geometry.labels
    ny, nx = labels.shape
    touching = eng.geometry.touching(SINUSOID)
    for y in range(2, ny - 2):
        for x in range(2, nx - 2):
            nb = [(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)]
            if labels[y, x] != MARROW or any(labels[p] != MARROW for p in nb):
                continue
            if away_from_sinusoid and (touching[y, x] or any(touching[p] for p in nb)):
                continue
            v = y * nx + x
            if eng.cells.occupant[v] < 0 and all(eng.cells.occupant[p[0] * nx + p[1]] < 0 for p in nb):
                return v
    raise AssertionError("no free interior voxel")


# ---------------------------------------------------------------------------------------------
# Kernels versus twins

@pytest.mark.parametrize("n", [0, 1, 7, 130])
def test_endomitosis_probability_kernel_equals_twin(n):
    rng = np.random.default_rng(n)
    ploidy = 2.0 ** rng.integers(1, 8, n)
    args = (0.7, 1.4, 0.0, 0.5, 0.3, 1.0, 0.8, 1.2)
    a, b = np.empty(n), np.empty(n)
    K.endomitosis_probability(ploidy, *args, a)
    K.endomitosis_probability_ref(ploidy, *args, b)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert np.all((a >= 0) & (a <= 1))


def test_endomitosis_probability_rises_with_ploidy_and_inhibition():
    ploidy = np.array([2.0, 4.0, 8.0, 16.0])
    out = np.empty(4)
    K.endomitosis_probability(ploidy, 1.0, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0, out)
    assert np.all(np.diff(out) > 0)
    inhibited = np.empty(4)
    K.endomitosis_probability(ploidy, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0, inhibited)
    assert np.all(inhibited > out)


def test_mk_advance_kernel_equals_twin():
    rng = np.random.default_rng(1)
    n = 257
    stage = rng.integers(0, 3, n).astype(np.int8)
    clock = rng.uniform(-2, 5, n)
    ploidy = (2.0 ** rng.integers(1, 8, n))
    left = np.where(stage == K.SHEDDING, rng.uniform(0, 3000, n), 0.0)
    at_sin = rng.random(n) < 0.5
    u = rng.random(n)
    outs_a = [np.empty(n, np.int8), np.empty(n), np.empty(n), np.empty(n), np.empty(n, np.int8)]
    outs_b = [np.empty(n, np.int8), np.empty(n), np.empty(n), np.empty(n), np.empty(n, np.int8)]
    args = (stage, clock, ploidy, left, at_sin, u, 1.0, 12.0, 100.0, 8.0, 2.0)
    K.mk_advance(*args, *outs_a)
    K.mk_advance_ref(*args, *outs_b)
    for a, b in zip(outs_a, outs_b):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert {0, 1, 2, 3, 4} >= set(np.unique(outs_a[4]).tolist())
    assert (outs_a[4] == K.EV_MITOSIS).any() and (outs_a[4] == K.EV_START_SHEDDING).any()


@pytest.mark.parametrize("shape", [(7, 9), (16, 5)])
def test_placement_kernels_equal_twins(shape):
    rng = np.random.default_rng(sum(shape))
    size = shape[0] * shape[1]
    marrow = rng.random(size) < 0.8
    occupant = np.full(size, -1, np.int64)
    cells = rng.choice(np.flatnonzero(marrow), size=size // 3, replace=False)
    occupant[cells] = np.arange(cells.size)
    u = rng.random(cells.size)
    dist = rng.random(size) * 50
    a, b = np.empty(cells.size, np.int64), np.empty(cells.size, np.int64)
    occ_a, occ_b = occupant.copy(), occupant.copy()
    K.choose_free_neighbour(cells, occ_a, marrow, shape[1], u, a)
    K.choose_free_neighbour_ref(cells, occ_b, marrow, shape[1], u, b)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(occ_a, occ_b)
    chosen = a[a >= 0]
    assert np.unique(chosen).size == chosen.size and marrow[chosen].all()
    assert (occupant[chosen] == -1).all()
    occ_a, occ_b = occupant.copy(), occupant.copy()
    K.drift_step(cells, dist, occ_a, marrow, shape[1], a)
    K.drift_step_ref(cells, dist, occ_b, marrow, shape[1], b)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(occ_a, occ_b)
    assert (dist[a] <= dist[cells]).all() and np.unique(a).size == a.size


def test_choose_free_neighbour_does_not_wrap_rows():
    # A cell at the end of a row must not "see" the first voxel of the next row.
    nx = 4
    marrow = np.ones(12, bool)
    occupant = np.full(12, -1, np.int64)
    occupant[[3, 2, 11]] = 0          # the cell at 7 (x = 3): left 6 free, up 3 and down 11 taken
    occupant[7] = 1
    out = np.empty(1, np.int64)
    for u in (0.0, 0.99):
        K.choose_free_neighbour(np.array([7]), occupant.copy(), marrow, nx, np.array([u]), out)
        assert out[0] == 6


# ---------------------------------------------------------------------------------------------
# The decision rule and the culture mode

def test_kinase_activities_multiply_genotype_and_inhibition():
    cfg = {"genotype_activity": {"aurka": 1.5, "aurkb": 2.0, "plk1": 1.0}}
    assert kinase_activities(cfg, None) == (1.5, 2.0, 1.0)
    acts = kinase_activities(cfg, {"aurka": 0.5, "plk1": 1.0, "alk": 0.9})
    assert acts == pytest.approx((0.75, 2.0, 0.0))


def test_culture_healthy_mode_16n_mds_lower_inhibition_restores():
    cfg = load_scenario("healthy_steady_state").data["megakaryocytes"]
    mds = load_scenario("mds_untreated").data["megakaryocytes"]
    rng = np.random.default_rng(0)
    classes = np.array([2, 4, 8, 16, 32, 64, 128])
    healthy = culture_ploidy(cfg, None, 3000, rng)
    assert classes[np.argmax([(healthy == c).sum() for c in classes])] == 16
    sick = culture_ploidy(mds, None, 3000, rng)
    treated = culture_ploidy(mds, {"aurka": 0.5, "aurkb": 0.5}, 3000, rng)
    alk_only = culture_ploidy(mds, {"alk": 0.99, "ros1": 0.99, "met": 0.99}, 3000, rng)
    assert sick.mean() < 0.7 * healthy.mean()
    assert treated.mean() > 1.3 * sick.mean()
    assert abs(alk_only.mean() - sick.mean()) < 0.1 * sick.mean()
    assert set(np.unique(healthy)) <= set(classes)


def test_p_endomitosis_full_inhibition_near_one():
    cfg = load_scenario("mds_untreated").data["megakaryocytes"]
    p = p_endomitosis(cfg, np.array([2, 8]), kinase_activities(cfg, {"aurka": 1.0}))
    assert (p > 0.999).all()


# ---------------------------------------------------------------------------------------------
# Rules on hand-built cells in the engine

def test_mitosis_endomitosis_doubles_ploidy_and_makes_mk():
    eng = _engine(["megakaryocytes.logit_endo_base=50"])
    v = _free_interior_voxel(eng)
    row = eng.cells.add("mkp", [v], mk_ploidy_n=2, mk_cycles=0, mk_stage=K.CYCLING,
                        mk_clock_h=0.5)[0]
    n_before = len(eng.cells)
    eng.step()
    assert eng.cells["kind"][row] == KINDS["mk"]
    assert eng.cells["mk_ploidy_n"][row] == 4 and eng.cells["mk_cycles"][row] == 1
    assert len(eng.cells) == n_before


def test_mitosis_cytokinesis_places_daughter_beside_mother():
    eng = _engine(["megakaryocytes.logit_endo_base=-50"])
    v = _free_interior_voxel(eng)
    eng.cells.add("mkp", [v], mk_ploidy_n=2, mk_cycles=1, mk_stage=K.CYCLING, mk_clock_h=0.5)
    eng.step()
    rows = eng.cells.rows_of("mkp")
    assert rows.size == 2
    vox = eng.cells["voxel"][rows]
    nx = eng.geometry.labels.shape[1]
    assert abs(vox[1] - vox[0]) in (1, nx)
    assert (eng.cells["mk_ploidy_n"][rows] == 2).all() and (eng.cells["mk_cycles"][rows] == 2).all()


def test_mitosis_without_room_waits():
    eng = _engine(["megakaryocytes.logit_endo_base=-50"])
    v = _free_interior_voxel(eng)
    nx = eng.geometry.labels.shape[1]
    eng.cells.add("blc", [v - 1, v + 1, v - nx, v + nx])
    row = eng.cells.add("mkp", [v], mk_ploidy_n=2, mk_cycles=0, mk_stage=K.CYCLING,
                        mk_clock_h=0.5)[0]
    eng.step()
    assert eng.cells.rows_of("mkp").size == 1
    assert eng.cells["mk_cycles"][row] == 0 and eng.cells["mk_clock_h"][row] == eng.dt_h


def test_last_cycle_starts_maturation():
    eng = _engine(["megakaryocytes.logit_endo_base=50", "megakaryocytes.max_cycles=3"])
    v = _free_interior_voxel(eng)
    row = eng.cells.add("mk", [v], mk_ploidy_n=8, mk_cycles=2, mk_stage=K.CYCLING,
                        mk_clock_h=0.5)[0]
    eng.step()
    cfg = eng.scenario.data["megakaryocytes"]
    assert eng.cells["mk_stage"][row] == K.MATURING
    assert eng.cells["mk_ploidy_n"][row] == 16
    assert eng.cells["mk_clock_h"][row] == cfg["maturation_h"]


def test_mature_mk_drifts_to_sinusoid_sheds_in_proportion_to_ploidy_then_dies():
    eng = _engine(["megakaryocytes.complete_half_ploidy_n=0.01", "megakaryocytes.shedding_h=3"])
    mod = _mk_module(eng)
    dist = eng.geometry.dist_sinusoid_um.ravel()
    marrow = eng.geometry.labels.ravel() == MARROW
    free = np.flatnonzero(marrow & (eng.cells.occupant < 0) & (dist >= 25) & (dist <= 35))
    v = int(free[0])
    eng.cells.add("mk", [v], mk_ploidy_n=16, mk_cycles=5, mk_stage=K.MATURING, mk_clock_h=2.0)
    shed = 0.0
    for _ in range(12):
        eng.step()
        shed += mod.shed_per_h * eng.dt_h
    cfg = eng.scenario.data["megakaryocytes"]
    assert shed == pytest.approx(16 * cfg["platelets_per_ploidy_n"])
    assert eng.cells.rows_of("mk").size == 0


def test_immature_low_ploidy_mk_dies_without_shedding():
    eng = _engine(["megakaryocytes.complete_half_ploidy_n=1e6"])
    mod = _mk_module(eng)
    v = int(np.flatnonzero(eng.geometry.touching(SINUSOID).ravel() & (eng.cells.occupant < 0))[0])
    eng.cells.add("mk", [v], mk_ploidy_n=4, mk_cycles=5, mk_stage=K.MATURING, mk_clock_h=0.5)
    eng.step()
    assert mod.shed_per_h == 0.0 and eng.cells.rows_of("mk").size == 0


def test_metrics_histogram_modal_and_diameter():
    eng = _engine()
    mod = _mk_module(eng)
    free = np.flatnonzero((eng.geometry.labels.ravel() == MARROW) & (eng.cells.occupant < 0))
    eng.cells.add("mk", free[:5], mk_ploidy_n=np.array([16, 16, 16, 8, 32]),
                  mk_stage=K.MATURING, mk_clock_h=100.0)
    eng.step()
    h = mod.ploidy_histogram()
    assert h.sum() == pytest.approx(1.0) and h[3] == pytest.approx(0.6)
    eng.recorder.record(eng.time_h)
    rec = eng.recorder.latest()[1]
    assert rec["mk_modal_ploidy"][0] == 16 and rec["mk_frac_16n"][0] == pytest.approx(0.6)
    d16 = eng.scenario.data["megakaryocytes"]["diameter_16n_um"]
    expect = np.mean([d16, d16, d16, d16 * 0.5 ** (1 / 3), d16 * 2 ** (1 / 3)])
    assert rec["mk_mean_diameter_um"][0] == pytest.approx(expect)
    assert rec["n_mk"][0] == 5


def test_spinup_reaches_lineage_and_runs_are_deterministic():
    sets = ["geometry.marrow_radius_um=500", "run.days=1", "megakaryocytes.spinup_days=6"]
    a = Engine(load_scenario("healthy_steady_state", sets), seed=5).run()
    b = Engine(load_scenario("healthy_steady_state", sets), seed=5).run()
    assert a.equals(b)
    first = a[(a.zone == "all") & (a.time_h == 0)]
    assert float(first["n_mk"].iloc[0] + first["n_mkp"].iloc[0]) > 0
