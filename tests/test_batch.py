"""Batches: sweep expansion, common random numbers, executors, resumable output, failures."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from marrow_abm.batch import (
    LocalPool,
    expand_points,
    parse_sweep_arg,
    run_batch,
    summarise,
)
from marrow_abm.cli import main
from marrow_abm.errors import MarrowError, ScenarioError

# A small section for a quarter of a day: 6 hourly steps, two records.
TINY = ["geometry.marrow_radius_um=200", "geometry.cortex_thickness_um=60", "run.days=0.25"]


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def _data(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path / "timeseries.parquet")


def test_parse_sweep_arg_reads_toml_values():
    assert parse_sweep_arg("zones.d_endo_um=30,50.5") == ("zones.d_endo_um", [30, 50.5])
    assert parse_sweep_arg("solver.method=lod,implicit") == ("solver.method", ["lod", "implicit"])


@pytest.mark.parametrize("text, fragment", [
    ("zones.d_end_um=1,2", "zones.d_endo_um"),      # typo: suggests the key
    ("run.seed=1,2", "--replicates"),               # the seed is the replicate axis
    ("zones=1,2", "single value"),                  # a table, not a value
    ("zones.d_endo_um", "KEY=v1,v2"),               # no values
    ("zones.d_endo_um=1,,2", "empty value"),
    ("zones.d_endo_um=1,1", "repeated"),
])
def test_parse_sweep_arg_bad_input_names_the_problem(text, fragment):
    with pytest.raises(ScenarioError) as info:
        parse_sweep_arg(text)
    assert fragment in str(info.value) and "--sweep" in str(info.value)


def test_expand_points_is_the_cartesian_product_with_one_seed():
    sweeps = [("zones.d_endo_um", [40.0, 60.0]), ("fields.opn.decay_per_h", [0.05, 0.1, 0.2])]
    points, seed = expand_points(["default", "metaphysis"], TINY, sweeps, seed=9)
    assert seed == 9 and len(points) == 2 * 2 * 3
    assert [p.point_id for p in points[:3]] == ["default-p0", "default-p1", "default-p2"]
    assert points[4].values == {"zones.d_endo_um": 60.0, "fields.opn.decay_per_h": 0.1}
    sc = points[4].scenario
    assert sc.get("zones.d_endo_um") == 60.0 and sc.get("fields.opn.decay_per_h") == 0.1
    assert "sweep" not in sc.data and sc.get("run.seed") == 9
    assert len({p.scenario.digest() for p in points}) == len(points)
    assert "zones.d_endo_um=60" in points[4].label


def test_scenario_sweep_table_expands_and_command_line_replaces_a_key(tmp_path):
    path = tmp_path / "swept.toml"
    path.write_text('extends = "default"\n[sweep]\nzones.d_endo_um = [30, 40]\n'
                    '"fields.opn.decay_per_h" = [0.1, 0.2]\n')
    points, _ = expand_points([str(path)], TINY)
    assert [p.values["zones.d_endo_um"] for p in points] == [30.0, 30.0, 40.0, 40.0]
    points, _ = expand_points([str(path)], TINY, [("zones.d_endo_um", [70.0])])
    assert [p.values for p in points] == [{"zones.d_endo_um": 70.0, "fields.opn.decay_per_h": v}
                                          for v in (0.1, 0.2)]


def test_expand_points_bad_sweep_value_names_the_sweep_key():
    with pytest.raises(ScenarioError) as info:
        expand_points(["default"], TINY, [("zones.d_endo_um", [-5.0])])
    assert info.value.file == "--sweep" and info.value.key == "sweep.zones.d_endo_um"


def test_cli_bad_sweep_key_exit_2_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", "default", *_sets(TINY), "--sweep", "zones.d_endo=30,50",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "zones.d_endo" in err and "zones.d_endo_um" in err
    assert not out.exists()


def test_cli_bad_sweep_table_in_file_exit_2_writes_nothing(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('extends = "default"\n[sweep]\nzones.d_endo_um = 30\n')
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "sweep.zones.d_endo_um" in err and "array" in err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["file", "foreign", "under_file"])
def test_cli_bad_output_folder_exit_2_writes_nothing(tmp_path, capsys, kind):
    target = tmp_path / "out"
    if kind == "file":
        target.write_text("x")
    elif kind == "foreign":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    else:
        (tmp_path / "afile").write_text("x")
        target = tmp_path / "afile" / "out"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["run", "default", *_sets(TINY), "--out", str(target)]) == 2
    assert "--out" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_run_batch_bad_arguments_raise_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr("marrow_abm.batch.SCHEDULER_TIMEOUT_S", 1.0)
    points, seed = expand_points(["default"], TINY)
    for kw in ({"replicates": 0}, {"replicates": 1, "workers": 0},
               {"replicates": 1, "workers": 2, "scheduler": "tcp://127.0.0.1:1"},
               {"replicates": 1, "snapshot_every_h": 0.0}):
        with pytest.raises(MarrowError):
            run_batch(points, out_dir=tmp_path / "o", seed=seed, **kw)
    with pytest.raises(MarrowError, match="Dask scheduler"):
        run_batch(points, 1, tmp_path / "o", seed=seed, scheduler="tcp://127.0.0.1:9")
    assert not (tmp_path / "o").exists()


def test_batch_replicate_i_shares_streams_across_points(tmp_path):
    # Zone widths change what is reported per zone but not the simulation: with common random
    # numbers the whole-marrow records of two sweep points are identical replicate by
    # replicate, while two replicates of one point differ.
    points, seed = expand_points(["default"], TINY, [("zones.d_endo_um", [40.0, 80.0])])
    result = run_batch(points, 2, tmp_path, seed=seed, workers=1)
    assert result.ok and result.n_ran == 4
    df = _data(tmp_path)
    whole_points = df.loc[df["zone"] == "all", "point"]
    whole = df[df["zone"] == "all"].drop(columns=["point", "zones.d_endo_um"])
    a, b = (whole[whole_points == p].reset_index(drop=True) for p in ("default-p0", "default-p1"))
    pd.testing.assert_frame_equal(a, b)
    endo = df[(df["zone"] == "endosteal") & (df["replicate"] == 0)]
    assert endo.groupby("point", observed=True)["n_voxels"].first().nunique() == 2
    r0, r1 = (a[a["replicate"] == r]["n_msc"].to_numpy() for r in (0, 1))
    assert not np.array_equal(r0, r1)


def test_batch_crashed_run_is_reported_and_others_finish(tmp_path, monkeypatch):
    from marrow_abm.engine import Engine

    real_run = Engine.run

    def flaky(self, *args, **kwargs):
        if self.replicate == 1:
            raise FloatingPointError("boom in replicate 1")
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "run", flaky)
    points, seed = expand_points(["default"], TINY, seed=4)
    result = run_batch(points, 3, tmp_path, seed=seed, workers=1)
    assert not result.ok and result.n_ran == 2
    (fail,) = result.failures
    assert (fail["scenario"], fail["replicate"], fail["seed"]) == ("default", 1, 4)
    assert "boom in replicate 1" in fail["error"]
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["status"] == "incomplete" and man["failures"][0]["replicate"] == 1
    assert sorted(_data(tmp_path)["replicate"].unique()) == [0, 2]
    # Fixed: the rerun redoes only the failed run.
    monkeypatch.setattr(Engine, "run", real_run)
    again = run_batch(points, 3, tmp_path, seed=seed, workers=1)
    assert again.ok and (again.n_skipped, again.n_ran) == (2, 1)
    assert sorted(_data(tmp_path)["replicate"].unique()) == [0, 1, 2]


def test_cli_failed_run_exit_status_nonzero(tmp_path, monkeypatch, capsys):
    from marrow_abm.engine import Engine

    def broken(self, *args, **kwargs):
        raise RuntimeError("kaput")

    monkeypatch.setattr(Engine, "run", broken)
    code = main(["run", "default", *_sets(TINY), "--seed", "3", "--replicates", "2",
                 "--workers", "1", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "scenario default" in err and "replicate 1" in err and "seed 3" in err
    assert "kaput" in err


def test_batch_more_replicates_extends_the_same_folder(tmp_path):
    points, seed = expand_points(["default"], TINY)
    run_batch(points, 1, tmp_path, seed=seed, workers=1)
    part = tmp_path / "runs" / "default" / "r0000.parquet"
    stamp = part.stat().st_mtime_ns
    result = run_batch(points, 2, tmp_path, seed=seed, workers=1)
    assert (result.n_skipped, result.n_ran) == (1, 1)
    assert part.stat().st_mtime_ns == stamp
    assert sorted(_data(tmp_path)["replicate"].unique()) == [0, 1]


def test_batch_snapshots_hold_geometry_fields_and_cells(tmp_path):
    points, seed = expand_points(["default"], TINY)
    run_batch(points, 1, tmp_path, seed=seed, workers=1, snapshot_every_h=3.0)
    snap = np.load(tmp_path / "snapshots" / "default" / "r0000.npz")
    assert list(snap["time_h"]) == [0.0, 3.0, 6.0]
    ny, nx = snap["labels"].shape
    assert snap["field_opn"].shape == (3, ny, nx) and snap["field_opn"].dtype == np.float32
    assert snap["cell_offsets"][-1] == snap["cell_voxel"].size == snap["cell_kind"].size
    assert snap["zone_endosteal"].shape == (ny, nx) and float(snap["dx_um"]) == 10.0


def test_summarise_gives_mean_sd_and_t_interval():
    rows = []
    for rep, value in enumerate([1.0, 2.0, 6.0]):
        for t in (0.0, 12.0, 24.0, 30.0):
            rows.append({"scenario": "s", "point": "s", "replicate": rep, "seed": 1,
                         "time_h": t, "zone": "all", "n_x": value * (t + 1)})
    out = summarise(pd.DataFrame(rows))
    assert list(out["time_h"]) == [0.0, 24.0, 30.0]     # days, plus the last record
    row = out[out["time_h"] == 0.0].iloc[0]
    assert (row["n"], row["mean"]) == (3, 3.0)
    assert row["std"] == pytest.approx(np.std([1, 2, 6], ddof=1))
    half = 4.302652729911275 * row["std"] / np.sqrt(3)     # t(0.975, 2)
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((3 - half, 3 + half))


def test_batch_identical_serial_local_processes_and_dask(tmp_path):
    distributed = pytest.importorskip("distributed")
    points, seed = expand_points(["default"], TINY, [("zones.d_endo_um", [40.0, 60.0])])
    run_batch(points, 2, tmp_path / "serial", seed=seed, workers=1)
    run_batch(points, 2, tmp_path / "local", seed=seed, workers=2)
    run_batch(points, 2, tmp_path / "spawned", seed=seed, pool=LocalPool(2, run_here=False))
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        code = main(["run", "default", *_sets(TINY), "--sweep", "zones.d_endo_um=40,60",
                     "--replicates", "2", "--scheduler", cluster.scheduler_address,
                     "--out", str(tmp_path / "dask"), "--quiet"])
    assert code == 0
    ref = _data(tmp_path / "serial")
    assert len(ref) == 2 * 2 * 2 * 5
    for other in ("local", "spawned", "dask"):
        pd.testing.assert_frame_equal(_data(tmp_path / other), ref, check_exact=True)
    for other in ("local", "spawned"):
        a, b = (pd.read_csv(tmp_path / d / "summary.csv") for d in ("serial", other))
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    # How runs spread over this process and the workers depends on the machine's load; with
    # run_here=False every run was computed in a spawned worker.
    runs = json.loads((tmp_path / "spawned" / "manifest.json").read_text())["runs"]
    assert len(runs) == 4 and os.getpid() not in {r["pid"] for r in runs}


def test_local_pool_runs_what_a_dead_worker_left(tmp_path):
    points, seed = expand_points(["default"], TINY)
    pool = LocalPool(1, run_here=False)          # one spawned worker, this process dispatches
    (proc,) = pool._procs
    os.kill(proc.pid, signal.SIGKILL)            # dies before it asks for a run
    result = run_batch(points, 3, tmp_path, seed=seed, pool=pool)
    assert result.ok and result.n_ran == 3
    runs = json.loads((tmp_path / "manifest.json").read_text())["runs"]
    assert {r["pid"] for r in runs} == {os.getpid()}
    assert not proc.is_alive()


def test_local_pool_with_more_processes_than_runs_finishes(tmp_path):
    points, seed = expand_points(["default"], TINY)
    result = run_batch(points, 1, tmp_path, seed=seed, pool=LocalPool(3))
    assert result.ok and result.n_ran == 1


def test_cli_resume_after_killed_batch(tmp_path):
    out = tmp_path / "out"
    slow = [*TINY[:2], "run.days=0.5"]
    argv = ["run", "default", *_sets(slow), "--replicates", "8", "--workers", "1",
            "--out", str(out), "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "marrow_abm.cli", *argv],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "runs").rglob("*.parquet"))) >= 2:
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    finished = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.parquet")}
    assert 2 <= len(finished) < 8
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    assert not (out / "timeseries.parquet").exists()

    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in finished} == finished   # kept, not redone
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "complete" and len(man["runs"]) == 8
    resumed = _data(out)
    assert not resumed.duplicated(["point", "replicate", "time_h", "zone"]).any()
    assert not list(out.rglob(".tmp-*"))
    points, seed = expand_points(["default"], slow)
    run_batch(points, 8, tmp_path / "clean", seed=seed, workers=1)
    pd.testing.assert_frame_equal(resumed, _data(tmp_path / "clean"), check_exact=True)



def test_cli_verbose_prints_a_line_per_run_and_quiet_prints_nothing(tmp_path, capsys):
    base = ["run", "default", *_sets(TINY), "--replicates", "2", "--workers", "1"]
    assert main([*base, "--out", str(tmp_path / "v"), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "done default/r0000" in out and "done default/r0001" in out
    assert main([*base, "--out", str(tmp_path / "q"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_cli_two_workers_match_serial_and_leave_no_process(tmp_path):
    import multiprocessing

    base = ["run", "default", *_sets(TINY), "--replicates", "3", "--quiet"]
    assert main([*base, "--workers", "1", "--out", str(tmp_path / "serial")]) == 0
    assert main([*base, "--workers", "2", "--out", str(tmp_path / "two")]) == 0
    pd.testing.assert_frame_equal(_data(tmp_path / "two"), _data(tmp_path / "serial"),
                                  check_exact=True)
    man = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert man["executor"] == "2 local processes (this one and 1 spawned)"
    assert multiprocessing.active_children() == []      # the worker was stopped and reaped
