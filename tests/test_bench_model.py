"""The whole-model benchmark harness (marrow_abm.bench_model) and ``marrow-abm bench --model``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from marrow_abm.bench_model import (
    bench_size,
    bench_size_threads,
    linear_fit,
    radius_for,
    run_model_bench,
    size_overrides,
    state_bytes,
)
from marrow_abm.cli import main
from marrow_abm.engine import Engine
from marrow_abm.scenario import load_scenario


def test_radius_for_gives_the_requested_lattice():
    for n in (75, 145):
        eng = Engine(load_scenario("default", size_overrides(n)))
        assert eng.geometry.labels.shape == (n, n)
    assert radius_for(145) == 560.0          # the default mouse section
    with pytest.raises(ValueError):
        radius_for(100)


def test_linear_fit_recovers_a_line_and_reports_r2():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    f = linear_fit(x, 3.0 + 0.5 * x)
    assert f["slope"] == pytest.approx(0.5) and f["intercept"] == pytest.approx(3.0)
    assert f["r2"] == pytest.approx(1.0)
    assert linear_fit(x, [1.0, 5.0, 0.0, 4.0])["r2"] < 0.5


def test_state_bytes_counts_each_array_once():
    eng = Engine(load_scenario("default", size_overrides(75)))
    sb = state_bytes(eng)
    grid = eng.geometry.labels.size
    # three float64 fields, one shared CG scratch (5 arrays) and one shared temporary for the
    # two backward-Euler fields and explicit OPN (plus its retain/gain), a zero array, int8 maps
    assert sb["fields"] >= 3 * 8 * grid
    assert sb["fields"] <= (3 * 8 + 5 * 8 + 8 + 2 * 8 + 8 + 5) * grid + 4096
    assert sb["total"] == sum(v for k, v in sb.items() if k != "total")


def test_bench_size_times_every_phase():
    r = bench_size("aml_progression", 75, steps=2, warmup=1)
    assert r.grid_voxels == 75 * 75 and r.marrow_voxels > 0 and r.cells > 0
    assert len(r.step_s) == 2 and r.median_step_s > 0
    assert {"secrete", "diffuse", "rules", "record"} <= set(r.phase_ms)
    assert r.state_bytes["total"] > 0 and r.traced_peak_bytes > 0


def test_run_model_bench_fits_four_sizes():
    r = run_model_bench(("default",), sizes=(75, 79, 83, 87), steps=1, warmup=0)
    assert len(r["results"]) == 4
    fit = r["fits"]["default/1"]["step_s_vs_grid_voxels"]
    assert set(fit) == {"slope", "intercept", "r2"}


def test_cli_bench_model_writes_json(tmp_path, capsys):
    out = tmp_path / "model.json"
    assert main(["bench", "--model", "--sizes", "75", "--steps", "1", "--warmup", "0",
                 "--scenario", "default", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["model"]["results"][0]["n"] == 75
    assert "whole-model step" in capsys.readouterr().out


def test_cli_bench_model_rejects_even_sizes():
    assert main(["bench", "--model", "--sizes", "100"]) != 0


def test_bench_size_threads_gives_one_result_per_thread_count_on_the_same_work():
    r1, r2 = bench_size_threads("aml_progression", 75, (1, 2), steps=3, warmup=1)
    assert (r1.threads, r2.threads) == (1, 2)
    assert len(r1.step_s) == len(r2.step_s) == 3
    # results do not depend on the thread count, so both engines end in the same state
    assert r1.cells_by_kind == r2.cells_by_kind
    assert r1.cg_iterations == r2.cg_iterations
    assert r1.state_bytes == r2.state_bytes
    for r in (r1, r2):
        assert r.median_step_s > 0 and r.traced_peak_bytes > 0
        assert {"secrete", "diffuse", "rules"} <= set(r.phase_ms)


def test_run_model_bench_reports_every_thread_count_of_a_size():
    out = run_model_bench(("default",), sizes=(75,), steps=1, warmup=0, threads=(1, 2))
    assert [(r["n"], r["threads"]) for r in out["results"]] == [(75, 1), (75, 2)]
