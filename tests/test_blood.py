"""Blood compartments: platelet ageing and transfusion, Friberg transit chains, marrow coupling."""

import numpy as np
import pytest

from marrow_abm.biology.blood import FribergLineage, PlateletPool
from marrow_abm.engine import Engine
from marrow_abm.scenario import load_scenario

SMALL = ["geometry.marrow_radius_um=150", "geometry.cortex_thickness_um=40",
         "megakaryocytes.spinup_days=0"]


def test_platelet_pool_steady_state_is_production_times_lifespan():
    pool = PlateletPool(lifespan_h=108.0, n=4)
    pool.set_steady_state(100.0)
    assert pool.total == pytest.approx(100.0 * 108.0)
    for _ in range(50):
        pool.advance(1.0, 100.0)
    assert pool.total == pytest.approx(100.0 * 108.0, rel=1e-9)


@pytest.mark.parametrize("n", [1, 4])
def test_platelet_bolus_mean_residence_equals_lifespan(n):
    # A bolus spread over the age compartments: ∫ count dt / bolus is the mean residual life,
    # lifespan × (n + 1) / (2n) for a uniform spread over n equal stages.
    pool = PlateletPool(lifespan_h=108.0, n=n)
    pool.add_bolus(1000.0)
    area = 0.0
    for _ in range(3000):
        area += pool.total * 0.5
        pool.advance(0.5, 0.0)
    assert area / 1000.0 == pytest.approx(108.0 * (n + 1) / (2 * n), rel=0.03)


def test_friberg_steady_state_and_capacity_shift():
    lin = FribergLineage(7000.0, 96.0, 0.239, 12.0)
    for _ in range(200):
        lin.advance(1.0, 0.0, 1.0)
    assert lin.circ == pytest.approx(7000.0)
    for _ in range(24 * 120):
        lin.advance(1.0, 0.0, 0.9)
    # at steady state (1 − E) f (Circ0/Circ)^γ = 1  ->  Circ = Circ0 f^(1/γ)
    assert lin.circ == pytest.approx(7000.0 * 0.9 ** (1 / 0.239), rel=0.01)


def test_friberg_drug_effect_nadir_and_recovery():
    lin = FribergLineage(7000.0, 96.0, 0.239, 12.0)
    trace = []
    for h in range(24 * 40):
        lin.advance(1.0, 0.6 if h < 24 * 3 else 0.0, 1.0)
        trace.append(lin.circ)
    trace = np.array(trace)
    nadir = int(np.argmin(trace))
    assert trace[nadir] < 0.6 * 7000 and 24 * 3 < nadir < 24 * 12
    assert trace[-1] == pytest.approx(7000.0, rel=0.05)


def test_transfusion_raises_platelets_at_its_time():
    sets = [*SMALL, "run.days=3", "run.record_every_h=1",
            "megakaryocytes.influx_per_marrow_voxel_per_h=0"]
    df = Engine(load_scenario("platelet_transfusion", sets), seed=1).run()
    p = df[df.zone == "all"].set_index("time_h")["platelets_per_ul"]
    jump = p.loc[49.0] - p.loc[48.0]
    assert jump == pytest.approx(5.0e5, rel=0.05)
    assert p.loc[72.0] < p.loc[49.0]          # cleared afterwards


def test_blood_starts_at_steady_state_of_spinup_production():
    sets = ["geometry.marrow_radius_um=300", "run.days=0.5"]
    eng = Engine(load_scenario("healthy_steady_state", sets), seed=2)
    blood = next(m for m in eng.modules if m.name == "blood")
    mk = next(m for m in eng.modules if m.name == "megakaryocytes")
    lifespan_h = eng.scenario.data["blood"]["platelet_lifespan_d"] * 24
    expect = blood.production_per_ul_per_h(mk.spinup_shed_per_h) * lifespan_h
    assert blood.platelets.total == pytest.approx(expect)
    rec = eng.recorder.latest()[1]
    assert rec["wbc_per_ul"][0] == 7000.0 and rec["normal_marrow_frac"][0] == 1.0


def test_displacing_cells_lower_wbc_and_rbc():
    sets = [*SMALL, "run.days=6", "megakaryocytes.influx_per_marrow_voxel_per_h=0",
            "megakaryocytes.mkp_death_per_h=0"]
    eng = Engine(load_scenario("healthy_steady_state", sets), seed=1)
    eng.run(days=0.1)
    from marrow_abm.geometry import MARROW
    free = np.flatnonzero((eng.geometry.labels.ravel() == MARROW) & (eng.cells.occupant < 0))
    eng.cells.add("mkp", free[: free.size // 5], mk_stage=1, mk_clock_h=1e6)  # never mature
    df = eng.run(days=6)
    last = df[df.zone == "all"].iloc[-1]
    assert last["normal_marrow_frac"] < 0.85
    assert last["wbc_per_ul"] < 0.7 * 7000 and last["rbc_per_ul"] < 9.5e6
