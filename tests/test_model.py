"""MarrowModel: the Mesa façade adds nothing to the simulation and exposes the records."""

import numpy as np
import pandas as pd
import pytest

from marrow_abm.engine import Engine
from marrow_abm.errors import MarrowError, ScenarioError
from marrow_abm.model import MarrowModel, parse_seed, reporter_name, toml_value
from marrow_abm.scenario import load_scenario

STEPS = 12


def test_model_records_identical_to_headless_engine(small_overrides):
    model = MarrowModel("default", rng=5, overrides=small_overrides)
    for _ in range(STEPS):
        model.step()
    engine = Engine(load_scenario("default", small_overrides), seed=5)
    for _ in range(STEPS):
        engine.step()
    pd.testing.assert_frame_equal(model.records(), engine.records())
    for name in engine.fields.names:
        np.testing.assert_array_equal(model.engine.fields.values[name], engine.fields.values[name])


def test_model_time_counts_steps_and_time_h_hours(small_overrides):
    model = MarrowModel("default", rng=1, overrides=small_overrides)
    for _ in range(3):
        model.step()
    assert model.time == 3.0
    assert model.time_h == 3.0 * model.engine.dt_h


def test_model_datacollector_rows_match_records(small_overrides):
    model = MarrowModel("default", rng=2, overrides=small_overrides)
    for _ in range(STEPS):
        model.step()
    df = model.datacollector.get_model_vars_dataframe()
    rec = model.records()
    assert list(df["time_h"]) == sorted(rec["time_h"].unique())
    endo = rec[rec["zone"] == "endosteal"].reset_index(drop=True)
    np.testing.assert_array_equal(df[reporter_name("mean_opn", "endosteal")], endo["mean_opn"])
    allz = rec[rec["zone"] == "all"].reset_index(drop=True)
    np.testing.assert_array_equal(df["n_blc"], allz["n_blc"])


def test_model_seed_none_uses_scenario_seed(small_overrides):
    model = MarrowModel("default", overrides=small_overrides)
    assert model.seed == load_scenario("default").data["run"]["seed"]
    assert model.engine.seed == model.seed


def test_model_same_int_seed_same_mesa_streams(small_overrides):
    a = MarrowModel("default", rng=9, overrides=small_overrides)
    b = MarrowModel("default", rng="9", overrides=small_overrides)
    assert a.random.random() == b.random.random()
    assert a.rng.random() == b.rng.random()


@pytest.mark.parametrize("bad", ["abc", "-1", 1.5, True])
def test_parse_seed_rejects_non_integers(bad):
    with pytest.raises(MarrowError):
        parse_seed(bad)


def test_model_bad_override_is_scenario_error():
    with pytest.raises(ScenarioError):
        MarrowModel("default", overrides={"fields.tgfb.decay_per_hh": 1.0})


def test_model_mapping_overrides_applied(small_overrides):
    model = MarrowModel("default", overrides={"geometry.marrow_radius_um": 200.0,
                                              "geometry.cortex_thickness_um": 60.0})
    assert model.marrow_scenario.data["geometry"]["marrow_radius_um"] == 200.0


def test_set_parameter_changes_secretion_while_running(small_overrides):
    model = MarrowModel("default", rng=1, overrides=small_overrides)
    model.step()
    model.set_parameter("cells.msc.secretion_per_h.mitogen", 0.0)
    before = model.engine.fields.total("mitogen")
    for _ in range(3):
        model.step()
    # With MSC secretion off, mitogen only decays and clears.
    assert model.engine.fields.total("mitogen") < before
    assert model.live_changes == [(1.0, "cells.msc.secretion_per_h.mitogen", 0.0)]


def test_set_parameter_refuses_geometry_and_bad_values(small_overrides):
    model = MarrowModel("default", rng=1, overrides=small_overrides)
    with pytest.raises(ScenarioError):
        model.set_parameter("geometry.dx_um", 5.0)
    with pytest.raises(ScenarioError):
        model.set_parameter("cells.msc.secretion_per_h.mitogen", -1.0)
    assert model.live_changes == []


def test_toml_value_round_trips_types():
    assert toml_value(True) == "true"
    assert toml_value(3) == "3"
    assert toml_value(0.1) == "0.1"
    assert toml_value('a"b') == '"a\\"b"'
    with pytest.raises(MarrowError):
        toml_value(float("nan"))


def test_model_module_does_not_leak_mesa_into_engine():
    import marrow_abm.engine as engine_module

    assert "mesa" not in vars(engine_module)
