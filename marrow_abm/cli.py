"""The ``marrow-abm`` command: list, check, geometry, run (batches), report, bench.

Every user error (a wrong key, value, file or image) is a ``MarrowError``: printed as one line
naming the file and the dotted key, exit status 2, nothing written. Unexpected exceptions are bugs
and keep their traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import MarrowError

EXIT_USAGE = 2


def _package_version() -> str:
    from . import __version__  # looked up on first use (marrow_abm/__init__.py)

    return __version__


def _set_threads(n: int | None) -> None:
    """Numba threads for this process. Default 1: numba's default threading layer spins, and
    with another busy process on a 2-core machine a 2-thread kernel ran up to 300x slower
    (docs/performance.md). Results never depend on this number."""
    import numba

    n = 1 if n is None else n
    if n < 1:
        raise MarrowError(f"--threads must be >= 1 (got {n})")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def _overrides(args) -> list[str]:
    sets = list(args.set or [])
    if getattr(args, "seed", None) is not None:
        sets.append(f"run.seed={args.seed}")
    if getattr(args, "days", None) is not None:
        sets.append(f"run.days={args.days}")
    return sets


def _load(args):
    from .scenario import load_scenario

    return load_scenario(args.scenario, _overrides(args))


# -- list -------------------------------------------------------------------------------------
def cmd_list(args, con: Console) -> int:
    from .scenario import list_scenarios

    table = Table(title="Bundled scenarios", show_lines=False)
    table.add_column("name", style="bold")
    table.add_column("description")
    for info in list_scenarios():
        table.add_row(info.name, info.description)
    con.print(table)
    con.print("Run one with: marrow-abm run NAME --out DIR    (inspect it first: marrow-abm check NAME)")
    return 0


# -- check ------------------------------------------------------------------------------------
def _geometry_table(summary: dict) -> Table:
    table = Table(title="Geometry", show_header=True)
    table.add_column("item")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, dict):
            for k2, v2 in value.items():
                table.add_row(f"{key}.{k2}", _fmt(v2))
        else:
            table.add_row(key, _fmt(value))
    return table


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return " × ".join(str(x) for x in v)
    return str(v)


def _fields_table(info: dict) -> Table:
    """One column per field, one row per solver property (fits a narrow terminal)."""
    table = Table(title="Fields and solvers (stability number = D·dt/dx²; explicit FTCS needs ≤ 0.25)")
    keys = list(dict.fromkeys(k for v in info.values() for k in v))
    preferred = ["label", "method", "stability_number", "n_substeps", "decay_length_um"]
    keys = [k for k in preferred if k in keys] + [k for k in keys if k not in preferred]
    table.add_column("property")
    for name in info:
        table.add_column(name, justify="right")
    for k in keys:
        table.add_row(k, *(_fmt(info[name].get(k, "")) for name in info))
    return table


def cmd_check(args, con: Console) -> int:
    from .engine import Engine

    sc = _load(args)
    eng = Engine(sc)   # builds geometry and solvers: every error a run would hit shows here
    con.rule(f"[bold]{sc.name}[/] — resolved scenario ({' → '.join(p.name for p in sc.chain)})")
    con.print(sc.to_toml(), markup=False, highlight=False)
    con.print(_geometry_table(eng.geometry.summary()))
    con.print(_fields_table(eng.fields.info()))
    counts = {k: v for k, v in eng.cell_counts().items() if v}
    con.print("Cells at start: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    from .rules import scenario_rules

    rules = scenario_rules(sc).describe()
    if rules:
        con.rule("Rules (signal → behaviour), in English")
        for line in rules:
            con.print(f"- {line}", markup=False, highlight=False)
    con.print(f"[green]OK[/]: {sc.path} is valid (digest {sc.digest()[:12]})")
    return 0


# -- claims -----------------------------------------------------------------------------------
def cmd_claims(args, con: Console) -> int:
    from .claims import run_claims

    _set_threads(1)
    if args.sensitivity:
        from .claims import run_sensitivity, sensitivity_verdicts

        runs = run_sensitivity(Path(args.out), workers=args.workers or 1, only=args.topic,
                               overrides=_overrides(args))
        table = Table(title="Claims under changed settings (quick runs)")
        table.add_column("claim", style="bold")
        for name in runs:
            table.add_column(name)
        ids, verdict = sensitivity_verdicts(runs)
        for cid in ids:
            table.add_row(cid, *("" if (cid, n) not in verdict else
                                 "[green]PASS[/]" if verdict[(cid, n)] else "[red]FAIL[/]"
                                 for n in runs))
        con.print(table)
        con.print(f"Report: {Path(args.out) / 'sensitivity.md'}")
        return 0 if all(verdict.values()) else 1
    results = run_claims(Path(args.out), quick=args.quick, workers=args.workers or 1,
                         only=args.topic, overrides=_overrides(args))
    table = Table(title="Claims (MODEL.md section 9)")
    table.add_column("claim", style="bold")
    table.add_column("verdict")
    table.add_column("test")
    for rs in results.values():
        for r in rs:
            table.add_row(f"{r.id} {r.title}", "[green]PASS[/]" if r.passed else "[red]FAIL[/]",
                          Text(r.test))
    con.print(table)
    con.print(f"Report: {Path(args.out) / 'validation.md'}")
    failed = [r.id for rs in results.values() for r in rs if not r.passed]
    return 1 if failed else 0


# -- geometry ---------------------------------------------------------------------------------
def cmd_geometry(args, con: Console) -> int:
    from .engine import build_scenario_geometry
    from .geometry_plot import draw_geometry
    from .streams import Streams

    sc = _load(args)
    geom = build_scenario_geometry(sc, Streams(int(sc.data["run"]["seed"])))
    out = draw_geometry(geom, Path(args.png), title=f"{sc.name} (seed {sc.data['run']['seed']})")
    con.print(_geometry_table(geom.summary()))
    con.print(f"Wrote {out}")
    return 0


# -- run --------------------------------------------------------------------------------------
#: Metrics a haematologist looks at first, in this order; the run summary shows those present
#: (every metric is in timeseries.parquet and summary.csv).
HEADLINE_METRICS = (
    "burden", "frac_normal", "n_lsc", "frac_lsc_g0", "frac_leukemic_g0",
    "frac_g0_leukemic_touching_blc", "n_blast", "n_blc", "n_msc", "mean_opn", "mean_tgfb",
    "mean_mitogen", "n_mkp", "n_mk", "mk_modal_ploidy", "mk_mean_ploidy", "platelets_per_ul",
    "wbc_per_ul", "rbc_per_ul",
)


def _summary_table(summary, label: str) -> Table:
    """Replicate means (± 95% CI half-width) of the headline metrics at the last summary time:
    one row per metric, one column per zone (narrow enough for an 80-column terminal)."""
    last = summary[summary["time_h"] == summary["time_h"].max()]
    t_end = float(last["time_h"].iloc[0]) if len(last) else 0.0
    present = list(dict.fromkeys(last["metric"]))
    metrics = [m for m in HEADLINE_METRICS if m in present] or present
    zones = list(dict.fromkeys(last["zone"]))
    table = Table(title=f"{label}: replicate mean at t = {t_end:g} h ({t_end / 24:g} d)")
    table.add_column("metric", style="bold", overflow="fold")   # wrap long names, never cut
    for z in zones:
        table.add_column(str(z), justify="right")
    by = last.set_index(["metric", "zone"])
    for m in metrics:
        cells = []
        for z in zones:
            if (m, z) not in by.index:
                cells.append("—")
                continue
            row = by.loc[(m, z)]
            mean, lo = float(row["mean"]), float(row["ci95_low"])
            if mean != mean:
                cells.append("—")
            else:
                cells.append(_fmt(mean) + ("" if lo != lo or lo == mean else f" ±{_fmt(mean - lo)}"))
        table.add_row(m, *cells)
    return table


class _RunDisplay:
    """Progress of a batch: a rich bar on a terminal, one line per run with --verbose."""

    def __init__(self, con: Console, err: Console, quiet: bool, verbose: bool):
        self.con, self.err, self.quiet, self.verbose = con, err, quiet, verbose
        self.progress = None
        self.task = None

    def start(self, n_total: int, n_done: int, executor: str) -> None:
        if self.verbose:
            self.con.print(f"{n_total} runs, {n_done} already finished; running "
                           f"{n_total - n_done} on {executor}")
        elif not self.quiet and n_done:
            self.con.print(f"resuming: {n_done} of {n_total} runs already finished")
        if not self.quiet and self.con.is_terminal and n_total > n_done:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.progress = Progress("[progress.description]{task.description}", BarColumn(),
                                     MofNCompleteColumn(), "runs", TimeElapsedColumn(), "eta",
                                     TimeRemainingColumn(), console=self.con, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("batch", total=n_total, completed=n_done)

    def finished(self, spec, result) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)
        if not result.ok:
            self.err.print(Text.assemble(("run failed: ", "bold red"), spec.describe()))
            last = result.error.strip().splitlines()[-1] if result.error else ""
            self.err.print(f"  {last}", markup=False, highlight=False)
            if self.verbose:
                self.err.print(result.error, markup=False, highlight=False)
        elif self.verbose:
            self.con.print(f"done {spec.run_id} (seed {spec.seed}) in "
                           f"{result.info.get('wall_s', 0.0):.2f} s")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def cmd_run(args, con: Console) -> int:
    from .batch import LocalPool, limit_own_thread_pools, local_process_count

    err = Console(stderr=True, highlight=False)
    if args.threads is not None and args.threads < 1:
        raise MarrowError(f"--threads must be >= 1 (got {args.threads})")
    # This process computes runs too: size its numba/BLAS pools as a worker's (spinning idle
    # pool threads slow the other processes), then start the workers before anything else so
    # that they import the engine while this process resolves the scenarios.
    limit_own_thread_pools(args.threads or 1)
    pool = None
    # Only for what is surely a batch of several runs: one run needs no worker (a scenario's
    # own [sweep] table is seen later, and run_batch then starts the workers itself).
    several = args.replicates > 1 or len(args.scenario) > 1 or bool(args.sweep)
    n_processes = local_process_count(args.workers)
    if args.scheduler is None and several and n_processes > 1:
        pool = LocalPool(n_processes, args.threads or 1)
    try:
        return _run(args, con, err, pool)
    finally:
        if pool is not None:
            pool.close()
        if args.argv is None:   # the command itself (not main() called by a test or script)
            from .batch import fast_exit

            fast_exit()


def _run(args, con: Console, err: Console, pool) -> int:
    from .batch import expand_points, parse_sweep_arg, run_batch

    sweeps = [parse_sweep_arg(text) for text in (args.sweep or [])]
    keys = [k for k, _ in sweeps]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise MarrowError(f"--sweep names a key twice: {', '.join(twice)}")
    sets = list(args.set or [])
    if args.days is not None:
        sets.append(f"run.days={args.days}")
    points, seed = expand_points(args.scenario, sets, sweeps, args.seed)
    display = _RunDisplay(con, err, args.quiet, args.verbose)
    try:
        result = run_batch(points, args.replicates, args.out, seed=seed,
                           workers=None if pool is not None else args.workers,
                           scheduler=args.scheduler, snapshot_every_h=args.snapshot_every,
                           threads=args.threads or 1, force=args.force,
                           command=["marrow-abm", *(sys.argv[1:] if args.argv is None
                                                    else args.argv)],
                           listener=display, pool=pool)
    except KeyboardInterrupt:
        display.stop()
        err.print(f"interrupted: finished runs are kept in {args.out}; run the same command "
                  "again to finish the others")
        return 130
    finally:
        display.stop()
    out = result.out_dir
    if not args.quiet:
        import pandas as pd

        summary = pd.read_csv(out / "summary.csv") if (out / "summary.csv").exists() else None
        if summary is not None and len(summary) and len(points) <= 3:
            for p in points:
                rows = summary[summary["point"] == p.point_id]
                if len(rows):
                    con.print(_summary_table(rows, p.label))
        con.print(f"{result.n_runs} runs ({len(points)} points × {args.replicates} replicates, "
                  f"root seed {seed}): {result.n_ran} ran, {result.n_skipped} already done, "
                  f"{len(result.failures)} failed, in {result.wall_s:.1f} s")
        con.print(f"Outputs in [bold]{out}[/]:")
        for name in ("timeseries.parquet", "summary.csv", "manifest.json"):
            con.print(f"  {out / name}")
        con.print(f"Figures: marrow-abm report {out}")
    if result.failures:
        err.print(Text.assemble(("error: ", "bold red"),
                                f"{len(result.failures)} of {result.n_runs} runs failed (listed "
                                f"above and in {out / 'manifest.json'}); run the same command "
                                "again to retry them"))
        return 1
    return 0


# -- report -----------------------------------------------------------------------------------
def cmd_report(args, con: Console) -> int:
    from .report import build_report

    out = build_report(Path(args.dir), Path(args.to) if args.to else None)
    if not args.quiet:
        con.print(f"Wrote {len(out.figures)} figures and [bold]{out.markdown}[/]")
    return 0


# -- bench ------------------------------------------------------------------------------------
def _int_list(text: str | None, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(s) for s in str(text).split(","))
    except ValueError:
        raise MarrowError(f"{what} must be comma-separated integers (got {text!r})") from None


def cmd_bench(args, con: Console) -> int:
    threads = _int_list(args.threads, "--threads")
    if threads is not None and any(t < 1 for t in threads):
        raise MarrowError(f"--threads must be >= 1 (got {args.threads})")
    report: dict = {}
    if args.mesa:
        # H2's idiomatic-Mesa comparison; imported lazily (it imports Mesa)
        from .bench_mesa import print_mesa_comparison, run_mesa_comparison

        kw = {"threads": threads} if threads else {}
        report["mesa"] = run_mesa_comparison(update_order=args.update_order, **kw)
        print_mesa_comparison(report["mesa"])
    if args.model:
        from .bench_model import DEFAULT_SIZES, print_model_bench, run_model_bench

        sizes = _int_list(args.sizes, "--sizes") or DEFAULT_SIZES
        if any(s < 5 or s % 2 == 0 for s in sizes):
            raise MarrowError(f"--model --sizes must be odd lattice sides >= 5 (got {args.sizes})")
        report["model"] = run_model_bench(
            scenarios=tuple(args.scenario or ("aml_progression",)), sizes=sizes,
            steps=args.steps, warmup=args.warmup, threads=threads or (1,))
        print_model_bench(report["model"], con)
    if not (args.model or args.mesa):
        from .bench import print_bench, run_bench

        sizes = _int_list(args.sizes, "--sizes") or (256, 1024, 2048)
        if any(s < 8 for s in sizes):
            raise MarrowError(f"--sizes must be grid edges >= 8 (got {args.sizes})")
        if threads is not None and len(threads) != 1:
            raise MarrowError("--threads takes one number for the field kernels")
        result = run_bench(sizes=sizes, threads=threads[0] if threads else None,
                           json_path=args.json)
        print_bench(result)
    elif args.json:
        import json

        Path(args.json).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    if args.json:
        con.print(f"Wrote {args.json}")
    return 0


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="marrow-abm",
        description="Spatial agent-based simulator of the bone-marrow niche (AML and MDS).")
    p.add_argument("--version", action="version", version=f"marrow-abm {_package_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def scenario_args(sp, days=False):
        sp.add_argument("scenario", metavar="SCENARIO",
                        help="bundled scenario name (see 'marrow-abm list') or a .toml file")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override any scenario key, e.g. fields.tgfb.decay_per_h=2.0 (repeatable)")
        sp.add_argument("--seed", type=int, help="root random seed (default: the scenario's run.seed)")
        if days:
            sp.add_argument("--days", type=float, help="simulated days (default: the scenario's run.days)")

    sp = sub.add_parser("list", help="show the bundled scenarios")
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("check", help="validate a scenario; print it resolved, its geometry and solvers")
    scenario_args(sp)
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("geometry", help="draw a scenario's section with its zones")
    scenario_args(sp)
    sp.add_argument("--png", required=True, metavar="FILE", help="PNG file to write")
    sp.set_defaults(func=cmd_geometry)

    sp = sub.add_parser("run", help="run scenarios × sweep points × replicates into a batch folder "
                        "(resumable; see docs/outputs.md)")
    sp.add_argument("scenario", metavar="SCENARIO", nargs="+",
                    help="bundled scenario names (see 'marrow-abm list') or .toml files")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a scenario key in every scenario, e.g. "
                         "fields.tgfb.decay_per_h=2.0 (repeatable)")
    sp.add_argument("--seed", type=int,
                    help="root seed of every run (default: the first scenario's run.seed)")
    sp.add_argument("--days", type=float, help="simulated days (default: the scenario's run.days)")
    sp.add_argument("--replicates", "-n", type=int, default=1, metavar="N",
                    help="replicates per scenario and sweep point (default 1)")
    sp.add_argument("--sweep", action="append", metavar="KEY=v1,v2",
                    help="sweep a key over values; several --sweep give the cartesian product "
                         "(adds to the scenario's [sweep] table)")
    sp.add_argument("--out", required=True, metavar="DIR", help="batch folder")
    sp.add_argument("--workers", "-j", type=int, default=None, metavar="K",
                    help="local processes computing runs, this one included (default: every "
                         "core; 1 runs everything in this process)")
    sp.add_argument("--scheduler", metavar="ADDRESS",
                    help="run on a Dask distributed cluster, e.g. tcp://10.0.0.5:8786")
    sp.add_argument("--snapshot-every", type=float, metavar="H",
                    help="save field and cell snapshots every H simulated hours")
    sp.add_argument("--threads", type=int, default=None, help="numba threads per worker (default 1)")
    sp.add_argument("--force", action="store_true",
                    help="write into a folder that holds a different batch (its files are replaced)")
    loud = sp.add_mutually_exclusive_group()
    loud.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    loud.add_argument("--verbose", "-v", action="store_true", help="one line per run, full tracebacks")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("report", help="figures (PNG) and a markdown summary of a batch folder")
    sp.add_argument("dir", metavar="DIR", help="a batch folder written by 'marrow-abm run'")
    sp.add_argument("--to", metavar="FOLDER", help="where to write (default DIR/report)")
    sp.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("bench", help="measure the field kernels against numpy and the memory-bandwidth bound")
    sp.add_argument("--sizes", help="comma-separated grid edges (default 256,1024,2048; with "
                    "--model odd lattice sides of the femur section, default 145,501,1001)")
    sp.add_argument("--threads", default=None, metavar="N[,M]",
                    help="numba threads (default 1); --model and --mesa take a list, e.g. 1,2")
    sp.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    sp.add_argument("--model", action="store_true",
                    help="whole-model step: time per phase, memory, linear fit over >= 4 sizes")
    sp.add_argument("--scenario", action="append", metavar="NAME",
                    help="scenario for --model (repeatable; default aml_progression)")
    sp.add_argument("--steps", type=int, default=5, help="--model: timed steps per size")
    sp.add_argument("--warmup", type=int, default=2, help="--model: untimed steps first")
    sp.add_argument("--mesa", action="store_true",
                    help="LSC rules idiomatically in Mesa beside ours (cell-steps per second)")
    sp.add_argument("--update-order", choices=("phased", "random_sequential"), default="phased",
                    help="--mesa: ours' leukemia.update_order (docs/model.md section 3)")
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("claims", help="run the claims of MODEL.md section 9 over replicates and "
                        "write a validation report; exit 1 if a claim fails")
    sp.add_argument("--out", required=True, metavar="DIR", help="report folder")
    sp.add_argument("--quick", action="store_true",
                    help="small sections and few replicates (the CI versions), not the full runs")
    sp.add_argument("--topic", action="append", metavar="NAME",
                    help="only this topic (aml, mds); repeatable")
    sp.add_argument("--workers", "-j", type=int, default=None,
                    help="local worker processes for replicates (default 1)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a scenario key in every claim run, after the plan's own "
                         "(sensitivity checks, e.g. zones.d_endo_um=30; repeatable)")
    sp.add_argument("--seed", type=int,
                    help="root seed of every claim run (default: each scenario's run.seed)")
    sp.add_argument("--sensitivity", action="store_true",
                    help="the quick claims once per setting of marrow_abm.claims.SENSITIVITY "
                         "(zone widths, section size, seed); writes DIR/sensitivity.md")
    sp.set_defaults(func=cmd_claims)

    from .viz.cli import add_viz_parser

    add_viz_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``marrow-abm`` console script; returns the exit status."""
    con = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        # Building the parser imports the browser app's options and the command imports the
        # engine (≈ 0.3 s): a Ctrl-C there is an interrupt like any other, not a traceback.
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = argv
        return int(args.func(args, con) or 0)
    except MarrowError as exc:
        # The message may contain brackets (TOML keys, lists): print it without markup.
        err.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("interrupted: nothing was written for the unfinished run")
        return 130


if __name__ == "__main__":
    sys.exit(main())
