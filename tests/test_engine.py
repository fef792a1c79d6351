import numpy as np
import pandas as pd
import pytest

from marrow_abm.engine import PHASE_ORDER, Engine
from marrow_abm.geometry import BONE, REPORT_ZONES, SINUSOID
from marrow_abm.record import ID_COLUMNS
from marrow_abm.scenario import load_scenario


def _engine(overrides, seed=None):
    return Engine(load_scenario("default", overrides), seed=seed)


def test_engine_records_every_zone_at_record_times(small_overrides):
    eng = _engine(small_overrides + ["run.record_every_h=6"])
    df = eng.run(days=0.5)
    assert list(df.columns[: len(ID_COLUMNS)]) == list(ID_COLUMNS)
    assert sorted(df["time_h"].unique()) == [0.0, 6.0, 12.0]
    assert len(df) == 3 * len(REPORT_ZONES)
    metrics = df.drop(columns=list(ID_COLUMNS))
    assert np.isfinite(metrics.to_numpy(dtype=float)).all()
    # Only phases someone handles are run and timed, in PHASE_ORDER's order.
    assert list(eng.phase_cpu_s) == [p for p in PHASE_ORDER if p in eng.phase_cpu_s]
    assert {"secrete", "diffuse", "sense", "remove_dead", "record"} <= set(eng.phase_cpu_s)


def test_engine_same_seed_identical_records_other_seed_differs(small_overrides):
    a = _engine(small_overrides, seed=3).run(days=0.25)
    b = _engine(small_overrides, seed=3).run(days=0.25)
    c = _engine(small_overrides, seed=4).run(days=0.25)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["mean_mitogen"].to_numpy(), c["mean_mitogen"].to_numpy())


def test_engine_places_niche_cells_on_their_surfaces(small_overrides):
    eng = _engine(small_overrides + ["cells.blc.frac_bone_surface=0.5",
                                     "cells.msc.frac_sinusoid_surface=0.2"])
    g = eng.geometry
    vox_blc = eng.cells["voxel"][eng.cells.rows_of("blc")]
    vox_msc = eng.cells["voxel"][eng.cells.rows_of("msc")]
    assert g.touching(BONE).ravel()[vox_blc].all()
    assert g.touching(SINUSOID).ravel()[vox_msc].all()
    n_bone_surface = int(g.touching(BONE).sum())
    # BLC take half of the bone surface (MSC are placed after them, on what is left).
    assert abs(vox_blc.size - 0.5 * n_bone_surface) <= 1
    assert vox_msc.size > 0


def test_engine_secretion_conserves_mass_without_losses(small_overrides):
    """With no decay, clearance or uptake, the OPN in the tissue is exactly what BLC and MSC
    secreted: sum(c) = (n_blc * s_blc + n_msc * s_msc) * t."""
    eng = _engine(small_overrides + ["fields.opn.decay_per_h=0", "fields.opn.sinusoid_clearance_per_h=0",
                                     "cells.blc.secretion_per_h.opn=0.2",
                                     "cells.msc.secretion_per_h.opn=0.05"])
    for _ in range(5):
        eng.step()
    n = eng.cell_counts()
    expected = (n["blc"] * 0.2 + n["msc"] * 0.05) * 5.0
    assert np.isclose(eng.fields.values["opn"].sum(), expected, rtol=1e-9)


def test_engine_opn_highest_at_endosteum(small_overrides):
    """BLC line the bone and are the main OPN source, and OPN barely diffuses, so after a day
    the endosteal mean exceeds the central mean (hand-checkable consequence of the set-up)."""
    eng = _engine(["geometry.marrow_radius_um=300", "geometry.cortex_thickness_um=60"])
    df = eng.run(days=1.0)
    last = df[df["time_h"] == df["time_h"].max()].set_index("zone")
    assert last.loc["endosteal", "mean_opn"] > 3 * last.loc["central", "mean_opn"]
    assert last.loc["perivascular", "mean_mitogen"] > last.loc["all", "mean_mitogen"] * 0.99


def test_engine_sense_reads_field_at_cell_voxel(small_overrides):
    eng = _engine(small_overrides)
    eng.step()
    rows = eng.cells.rows_of("blc")
    vox = eng.cells["voxel"][rows]
    assert np.array_equal(eng.cells["opn_at"][rows], eng.fields.values["opn"].ravel()[vox])


def test_engine_runs_module_handlers_in_phase_order(small_overrides):
    """A module's handlers run after the core's in their phase, phases in PHASE_ORDER order,
    and its metrics appear as columns."""
    from marrow_abm.biology import MODULES, BiologyModule

    calls = []

    class Probe(BiologyModule):
        name = "probe"

        def phase_handlers(self):
            return {p: (lambda p=p: calls.append(p)) for p in ("move", "pk", "rules")}

        def metrics(self):
            return {"probe_metric": lambda: self.engine.zones.size() * 0 + 7.0}

    eng = Engine(load_scenario("default", small_overrides), modules=(*MODULES, Probe))
    eng.step()
    assert calls == ["pk", "rules", "move"]
    df = eng.records()
    assert (df["probe_metric"] == 7.0).all()


def test_engine_rejects_unknown_phase(small_overrides):
    import pytest

    from marrow_abm.biology import BiologyModule

    class Bad(BiologyModule):
        def phase_handlers(self):
            return {"teleport": lambda: None}

    with pytest.raises(ValueError, match="teleport"):
        Engine(load_scenario("default", small_overrides), modules=(Bad,))


def test_engine_threads_option_gives_bitwise_identical_records(small_overrides):
    """n_threads only changes speed: every phase of AML and MDS runs gives the same records."""
    import numba
    import pytest

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread on this machine")
    for name in ("aml_progression", "healthy_steady_state"):
        runs = []
        for threads in (1, 2):
            eng = Engine(load_scenario(name, small_overrides + ["run.record_every_h=1"]),
                         n_threads=threads)
            seen = []
            eng.fields.step = _spy(eng.fields.step, seen)
            runs.append(eng.run(days=0.5))
            assert seen and set(seen) == {threads}     # the kernels really ran on `threads`
        pd.testing.assert_frame_equal(runs[0], runs[1], check_exact=True)
    previous = numba.get_num_threads()
    Engine(load_scenario("default", small_overrides), n_threads=2).step()
    assert numba.get_num_threads() == previous    # the caller's setting is restored


def _spy(step, seen):
    import numba

    def wrapped(*args, **kwargs):
        seen.append(numba.get_num_threads())
        return step(*args, **kwargs)
    return wrapped


def test_engine_rejects_bad_thread_counts(small_overrides):
    import pytest

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_threads"):
            Engine(load_scenario("default", small_overrides), n_threads=bad)


@pytest.mark.parametrize("name", ["aml_progression", "healthy_steady_state"])
def test_fork_continues_exactly_like_the_original(name):
    # healthy_steady_state has the megakaryocyte module, whose phase handler is a closure: the
    # copy must step its own modules, not the original's.
    small = ["geometry.marrow_radius_um=150", "geometry.cortex_thickness_um=40",
             "run.record_every_h=6"]
    direct = Engine(load_scenario(name, small))
    direct.run(1.0)
    eng = Engine(load_scenario(name, small))
    eng.run(0.5)
    copy = eng.fork()
    copy.run(0.5)
    eng.run(0.25)   # the original goes on by itself; the copy must not see it
    a, b = direct.records(), copy.records()
    assert len(b) == len(a) > 0
    pd.testing.assert_frame_equal(a, b)
    assert len(eng.records()) < len(a)
    assert copy.time_h == direct.time_h and eng.time_h < copy.time_h
    assert copy.cells is not eng.cells and copy.recorder.engine is copy


def test_fork_under_another_scenario_reads_the_new_one():
    small = ["geometry.marrow_radius_um=150", "geometry.cortex_thickness_um=40"]
    eng = Engine(load_scenario("aml_progression", small))
    eng.run(0.25)
    treated_sc = load_scenario("aml_chemo", small + ["interventions.chemo.start_day=0",
                                                    "interventions.chemo.stop_day=5"])
    same = eng.fork()
    treated = eng.fork(treated_sc)
    assert treated.scenario is treated_sc and eng.scenario is not treated_sc
    for e in (same, treated):
        e.run(0.25)
    # the untreated copy is reproducible; cytarabine changes only the copy given it
    pd.testing.assert_frame_equal(same.records(), eng.fork().run(0.25))
    a, b = same.records(), treated.records()
    assert len(a) == len(b) and not a.drop(columns="scenario").equals(b.drop(columns="scenario"))


def test_fork_keeps_a_narrowed_phase_list(small_overrides):
    eng = _engine(small_overrides)
    eng.phases = [(n, f) for n, f in eng.phases if n != "diffuse"]
    assert [n for n, _ in eng.fork().phases] == [n for n, _ in eng.phases]


def test_recorder_rebind_refuses_other_metrics(small_overrides):
    eng = _engine(small_overrides)
    with pytest.raises(ValueError, match="metrics differ"):
        eng.recorder.rebind(eng, {"extra_metric": lambda: np.zeros(len(REPORT_ZONES))})


def test_scenario_chooses_the_cg_preconditioner():
    """`solver.preconditioner` reaches the field solver; compartment solves by default."""
    assert _engine(("geometry.marrow_radius_um=200",)).fields.preconditioner == "compartments"
    eng = _engine(("geometry.marrow_radius_um=200", "solver.preconditioner=jacobi"))
    assert eng.fields.preconditioner == "jacobi"
    eng.step()
    assert np.isfinite(eng.fields.total("tgfb"))

def test_zone_voxel_lists_are_int32_and_give_the_same_field_means(small_overrides):
    eng = _engine(small_overrides)
    z = eng.zones
    field = np.random.default_rng(0).random(eng.geometry.labels.shape)
    assert all(v.dtype == np.int32 for v in z.voxels.values())
    wide = [field.ravel()[v.astype(np.int64)].mean() for v in z.voxels.values()]
    np.testing.assert_array_equal(z.field_mean(field), wide)
