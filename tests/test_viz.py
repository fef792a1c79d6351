"""The browser app's parts without a browser: import, one frame, legend, plots, controls, CLI."""

import argparse
import io

import numpy as np
import pytest
from PIL import Image

from marrow_abm.cells import KINDS, CellTable
from marrow_abm.geometry import BONE, SINUSOID, Geometry
from marrow_abm.model import MarrowModel
from marrow_abm.viz import render
from marrow_abm.viz.inspect import describe_voxel
from marrow_abm.viz.params import PendingOverrides, controls_for, is_live, slider_range
from marrow_abm.viz.plots import panels_for, panels_png


def _geometry() -> Geometry:
    labels = np.zeros((6, 8), np.int8)
    labels[0, :] = BONE
    labels[:, 4] = SINUSOID
    return Geometry.from_labels(labels, 10.0, d_endo_um=20.0, d_central_um=40.0, d_vasc_um=10.0)


def _flat(iy, ix, nx=8):
    return iy * nx + ix


def test_app_module_imports_and_builds_page():
    from marrow_abm.viz import app

    assert app.Page is not None
    assert isinstance(app.model.value, MarrowModel)
    assert set(app.MODEL_PARAMS) == {"scenario_name", "rng", "overrides"}


def test_render_one_frame_of_the_default_scenario_is_png(small_overrides):
    model = MarrowModel("default", overrides=small_overrides)
    model.step()
    r = render.TissueRenderer(model.engine.geometry)
    rgb = r.render(model.engine.cells, model.engine.fields.values["opn"])
    img = Image.open(io.BytesIO(render.encode_png(rgb)))
    assert img.size == model.engine.geometry.labels.shape[::-1]
    blc = model.engine.cells["voxel"][model.engine.cells.rows_of("blc")]
    assert (rgb.reshape(-1, 3)[blc] == render.KIND_STYLES["blc"].rgb).all()


def test_render_paints_background_and_kinds():
    geom = _geometry()
    cells = CellTable(geom.labels.shape)
    cells.add("msc", [_flat(2, 3)])
    rgb = render.TissueRenderer(geom).render(cells)
    assert tuple(rgb[0, 0]) == render.BONE_RGB
    assert tuple(rgb[3, 4]) == render.SINUSOID_RGB
    assert tuple(rgb[2, 3]) == render.KIND_STYLES["msc"].rgb
    assert tuple(rgb[1, 1]) == render.ZONE_RGB["endosteal"]


def test_render_field_darkens_with_concentration():
    geom = _geometry()
    field = np.zeros(geom.labels.shape)
    field[3, 1], field[3, 2] = 1.0, 2.0
    rgb = render.TissueRenderer(geom).render(CellTable(geom.labels.shape), field)
    assert rgb[3, 2].sum() < rgb[3, 1].sum() < rgb[3, 0].sum()


def test_render_g0_and_ploidy_colours_when_columns_exist():
    geom = _geometry()
    cells = CellTable(geom.labels.shape)
    cells.add_column(render.PHASE_COLUMN, np.int8, fill=1)
    cells.add_column(render.PLOIDY_COLUMN, np.int16, fill=2)
    cells.add("lsc", [_flat(2, 1)], **{render.PHASE_COLUMN: render.G0_CODE})
    cells.add("lsc", [_flat(2, 2)], **{render.PHASE_COLUMN: 1})
    cells.add("mk", [_flat(3, 1)], **{render.PLOIDY_COLUMN: 16})
    rgb = render.TissueRenderer(geom).render(cells)
    assert tuple(rgb[2, 1]) == render.KIND_STYLES["lsc"].g0_rgb
    assert tuple(rgb[2, 2]) == render.KIND_STYLES["lsc"].rgb
    assert tuple(rgb[3, 1]) == render.MK_PLOIDY_RGB[render.PLOIDY_CLASSES.index(16)]
    labels = [e[0] for e in render.legend_entries(cells)]
    assert "LSC G0 (Ki67−)" in labels and "LSC cycling (Ki67+)" in labels
    assert "Megakaryocyte 16N" in labels


def test_render_skips_dead_cells():
    geom = _geometry()
    cells = CellTable(geom.labels.shape)
    rows = cells.add("blast", [_flat(2, 1)])
    cells.kill(rows)
    rgb = render.TissueRenderer(geom).render(cells)
    assert tuple(rgb[2, 1]) != render.KIND_STYLES["blast"].rgb


def test_every_kind_has_a_style():
    assert set(render.KIND_STYLES) == set(KINDS)


def test_describe_voxel_reports_cell_and_fields(small_overrides):
    model = MarrowModel("default", overrides=small_overrides)
    model.step()
    row = int(model.engine.cells.rows_of("msc")[0])
    vox = int(model.engine.cells["voxel"][row])
    nx = model.engine.geometry.labels.shape[1]
    info = describe_voxel(model.engine, vox // nx, vox % nx)
    assert info["cell"]["kind"] == "msc"
    assert info["voxel"]["tissue"] == "marrow"
    assert set(info["fields"]) == {"TGF-β1", "OPN", "MSC mitogen"}
    assert describe_voxel(model.engine, -1, 0) == {}


def test_plots_panels_follow_available_metrics():
    cols = {"time_h", "n_blc", "n_msc", "mean_opn[endosteal]"}
    titles = [p.title for p in panels_for(cols, {"opn": "OPN"})]
    assert "Cells by kind (whole section)" in titles
    assert not any("G0" in t or "ploidy" in t.lower() for t in titles)
    more = cols | {"frac_lsc_g0[endosteal]", "platelets_per_ul", "mk_frac_16n"}
    titles = [p.title for p in panels_for(more, {"opn": "OPN"})]
    assert "G0 (Ki67−) fraction by zone" in titles and "Blood counts" in titles
    assert "MK ploidy (latest record)" in titles


def test_plots_png_from_datacollector(small_overrides):
    model = MarrowModel("default", overrides=small_overrides)
    for _ in range(6):
        model.step()
    png = panels_png(model.datacollector.get_model_vars_dataframe(),
                     {"tgfb": "TGF-β1", "opn": "OPN", "mitogen": "MSC mitogen"})
    assert Image.open(io.BytesIO(png)).size[0] > 300


def test_controls_carry_units_ranges_and_liveness():
    from marrow_abm.scenario import load_scenario

    controls = {c.key: c for c in controls_for(load_scenario("default"))}
    decay = controls["fields.tgfb.decay_per_h"]
    assert "[1/h]" in decay.label and not decay.live
    assert decay.min <= decay.value <= decay.max
    assert controls["cells.msc.secretion_per_h.mitogen"].live
    assert not any(k.startswith("run.") for k in controls)
    assert is_live("interventions.chemo.enabled")


def test_slider_range_moves_open_bounds_inside():
    from marrow_abm.schema import schema_node_at

    lo, hi, step = slider_range(schema_node_at(("zones", "d_endo_um")), 50.0)
    assert 0 < lo <= 50.0 <= hi


def test_pending_overrides_validate_and_reach_the_model(small_overrides):
    pending = PendingOverrides()
    from marrow_abm.errors import ScenarioError

    with pytest.raises(ScenarioError):
        pending.set("default", "zones.d_central_um", 10.0)  # below d_endo_um
    pending.set("default", "geometry.marrow_radius_um", 200.0)
    pending.set("default", "geometry.cortex_thickness_um", 60.0)
    model = MarrowModel("default", overrides=pending)
    assert model.marrow_scenario.data["geometry"]["marrow_radius_um"] == 200.0
    assert pending.for_scenario("metaphysis") == {}


def test_viz_cli_parser_defaults():
    from marrow_abm.viz.cli import DEFAULT_HOST, add_viz_parser, solara_args

    parser = argparse.ArgumentParser()
    add_viz_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["viz"])
    assert (args.scenario, args.host, args.port) == ("default", DEFAULT_HOST, None)
    args = parser.parse_args(["viz", "metaphysis", "--port", "9000"])
    assert args.port == 9000
    assert solara_args("127.0.0.1", 9000)[:2] == ["run", "marrow_abm.viz.app"]


def test_viz_cli_bad_scenario_fails_before_serving(capsys):
    from marrow_abm.viz.cli import main

    assert main(["no_such_scenario", "--port", "9"]) == 2
    assert "no_such_scenario" in capsys.readouterr().err
