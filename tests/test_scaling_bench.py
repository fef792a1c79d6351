"""``bench_size_threads``: thread counts of one size timed step by step in turn (issue 7)."""

from __future__ import annotations

from marrow_abm.bench_model import bench_size_threads, run_model_bench


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
