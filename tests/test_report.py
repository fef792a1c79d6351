"""Reports: figures and markdown from a small batch; metrics added later are plotted."""

import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from marrow_abm import report
from marrow_abm.batch import expand_points, run_batch
from marrow_abm.cli import main

TINY = ["geometry.marrow_radius_um=200", "geometry.cortex_thickness_um=60", "run.days=0.25"]


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch")
    points, seed = expand_points(["default", "metaphysis"], TINY)
    result = run_batch(points, 2, out, seed=seed, workers=1, snapshot_every_h=3.0)
    assert result.ok
    return out


@pytest.fixture(scope="module")
def figs(batch_dir):
    return report.figures(report.load_batch(batch_dir))


def _data_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def test_report_writes_pngs_and_markdown(batch_dir, tmp_path, capsys):
    assert main(["report", str(batch_dir), "--to", str(tmp_path)]) == 0
    pngs = sorted(tmp_path.glob("*.png"))
    names = {p.stem for p in pngs}
    assert {"timecourse_mean_opn", "paired_differences", "snapshot_default",
            "snapshot_metaphysis"} <= names
    assert "timecourse_n_voxels" not in names
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    text = (tmp_path / "report.md").read_text()
    for p in pngs:
        assert f"]({p.name})" in text
    assert "replicate mean [95% CI]" in text and "Paired differences" in text
    assert "Wrote" in capsys.readouterr().out


def test_report_figures_have_labelled_axes_and_legends(figs):
    assert figs
    for name, fig in figs.items():
        for ax in _data_axes(fig):
            assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), name
        has_legend = bool(fig.legends) or any(ax.get_legend() for ax in fig.axes)
        assert has_legend, name
    units = figs["timecourse_mean_opn"].axes[0].get_ylabel()
    assert "OPN" in units and "normalised" in units
    assert figs["snapshot_default"].axes[0].get_xlabel() == "x (µm)"


def test_report_colours_are_fixed_per_point_and_zone(figs):
    for name in ("timecourse_mean_opn", "timecourse_mean_mitogen"):
        lines = figs[name].axes[0].get_lines()
        assert [to_hex(line.get_color()) for line in lines] == list(report.POINT_COLOURS[:2])
    titles = {ax.get_title(): to_hex(ax.title.get_color())
              for ax in figs["timecourse_mean_opn"].axes if ax.get_title()}
    assert titles["endosteal"] == report.ZONE_COLOURS["endosteal"]


def test_report_plots_metrics_added_later_without_code_change(batch_dir, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(batch_dir, copy)
    df = pd.read_parquet(copy / "timeseries.parquet")
    rng = np.random.default_rng(0)
    df["frac_g0_lsc"] = rng.uniform(0, 1, len(df))
    df["platelets_per_ul"] = df.groupby(["point", "replicate", "time_h"],
                                        observed=True)["n_msc"].transform("first") * 1e3
    for k in (2, 4, 8, 16):
        df[f"mk_ploidy_{k}n"] = rng.integers(0, 20, len(df)).astype(float)
    df.to_parquet(copy / "timeseries.parquet")
    (copy / "summary.csv").unlink()
    figs = report.figures(report.load_batch(copy))
    for fig in figs.values():
        assert all(ax.get_xlabel() for ax in _data_axes(fig))
    g0 = figs["timecourse_frac_g0_lsc"]
    assert len(_data_axes(g0)) == 5 and "fraction (0–1)" in g0.axes[0].get_ylabel()
    for ax in _data_axes(g0):              # the 95% band stays inside [0, 1]
        for band in ax.collections:
            y = band.get_paths()[0].vertices[:, 1]
            assert y.min() >= 0.0 and y.max() <= 1.0
    blood = figs["timecourse_platelets_per_ul"]     # the same in every zone: one panel
    assert len(_data_axes(blood)) == 1 and "per µL" in blood.axes[0].get_ylabel()
    hist = figs["histogram_mk_ploidy"]
    assert [t.get_text() for t in hist.axes[0].get_xticklabels()] == ["2N", "4N", "8N", "16N"]
    assert "timecourse_mk_ploidy_2n" not in figs


@pytest.mark.parametrize("name, expected", [
    ("n_blc", ("BLC count", "cells")),
    ("mean_tgfb", ("mean TGF-β1", "normalised")),
    ("frac_g0_lsc", ("G0 LSC fraction", "0–1")),
    ("platelets_per_ul", ("platelets", "per µL")),
    ("mk_diameter_um", ("mk diameter", "µm")),
    ("something", ("something", "")),
])
def test_metric_label_reads_units_from_names(name, expected):
    assert report.metric_label(name, {"tgfb": "TGF-β1"}) == expected


def test_report_of_a_folder_without_a_batch_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no batch" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
