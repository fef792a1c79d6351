import json

import pandas as pd
import pytest

from marrow_abm import __version__
from marrow_abm.cli import main
from marrow_abm.geometry import REPORT_ZONES


def _sets(overrides):
    out = []
    for o in overrides:
        out += ["--set", o]
    return out


def test_cli_list_shows_bundled_scenarios(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "default" in out and "metaphysis" in out


def test_cli_check_prints_geometry_and_stability(capsys, small_overrides):
    assert main(["check", "default", *_sets(small_overrides)]) == 0
    out = capsys.readouterr().out
    assert "endosteal" in out and "stability" in out.lower() and "[fields.tgfb]" in out


def test_cli_run_writes_timeseries_and_manifest(tmp_path, capsys, small_overrides):
    assert main(["run", "default", "--out", str(tmp_path), "--seed", "5", *_sets(small_overrides)]) == 0
    df = pd.read_parquet(tmp_path / "timeseries.parquet")
    assert list(df.columns[:6]) == ["scenario", "point", "replicate", "seed", "time_h", "zone"]
    assert set(df["zone"].astype(str)) == set(REPORT_ZONES)
    assert (df["seed"] == 5).all()
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["root_seed"] == 5 and man["package_version"] == __version__
    point = man["points"][0]
    assert len(point["digest"]) == 64 and point["resolved"]["run"]["seed"] == 5
    assert (tmp_path / point["scenario_file"]).read_text().strip()
    out = capsys.readouterr().out
    assert str(tmp_path) in out.replace("\n", "")
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json", "runs", "scenarios", "summary.csv", "timeseries.parquet"]
    assert not [p for p in tmp_path.rglob(".*")]


def test_cli_run_bad_key_exit_2_names_key_writes_nothing(tmp_path, capsys):
    out_dir = tmp_path / "out"
    code = main(["run", "default", "--out", str(out_dir), "--set", "fields.tgfb.decay_pr_h=2.0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "fields.tgfb.decay_pr_h" in err and "fields.tgfb.decay_per_h" in err
    assert not out_dir.exists()


def test_cli_run_refuses_folder_of_a_different_run(tmp_path, capsys, small_overrides):
    args = ["run", "default", "--out", str(tmp_path), *_sets(small_overrides), "--quiet"]
    assert main(args + ["--seed", "1"]) == 0
    before = (tmp_path / "manifest.json").read_text()
    assert main(args + ["--seed", "2"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "manifest.json").read_text() == before
    assert main(args + ["--seed", "2", "--force"]) == 0
    assert json.loads((tmp_path / "manifest.json").read_text())["root_seed"] == 2


def test_cli_bad_image_exit_2_names_file_and_key(tmp_path, capsys):
    bad = tmp_path / "section.png"
    bad.write_bytes(b"not a png at all")
    sc = tmp_path / "mine.toml"
    sc.write_text('extends = "default"\ndescription = "bad image"\n'
                  '[geometry]\ngenerator = "image"\nimage_path = "section.png"\n')
    code = main(["run", str(sc), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "geometry.image_path" in err and "section.png" in err
    assert not (tmp_path / "out").exists()


def test_cli_geometry_writes_png(tmp_path, small_overrides):
    png = tmp_path / "g.png"
    assert main(["geometry", "default", "--png", str(png), *_sets(small_overrides)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [["run", "nonexistent_scenario", "--out", "x"],
                                  ["check", "defualt"]])
def test_cli_unknown_scenario_exit_2_with_suggestion(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err
    if "defualt" in argv:
        assert "default" in err
    assert not (tmp_path / "x").exists()


def test_cli_ctrl_c_while_starting_exits_130_without_traceback(tmp_path, capsys, monkeypatch):
    """A Ctrl-C while the parser is built (the first ~0.3 s of every command, importing the
    browser app's options) ends like any interrupt: exit 130, one line, no folder."""
    from marrow_abm import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    out = tmp_path / "out"
    assert main(["run", "default", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists()
