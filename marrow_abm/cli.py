"""The ``marrow-abm`` command: list, check, geometry, run, bench.

Every user error (a wrong key, value, file or image) is a ``MarrowError``: printed as one line
naming the file and the dotted key, exit status 2, nothing written. Unexpected exceptions are bugs
and keep their traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from .errors import MarrowError

EXIT_USAGE = 2


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
    table = Table(title="Fields and solvers (stability number = D·dt/dx²; explicit needs ≤ 0.25)")
    cols = sorted({k for v in info.values() for k in v})
    preferred = ["label", "method", "stability_number", "n_substeps", "decay_length_um"]
    cols = [c for c in preferred if c in cols] + [c for c in cols if c not in preferred]
    table.add_column("field", style="bold")
    for c in cols:
        table.add_column(c, justify="right")
    for name, v in info.items():
        table.add_row(name, *(_fmt(v.get(c, "")) for c in cols))
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
    con.print(f"[green]OK[/]: {sc.path} is valid (digest {sc.digest()[:12]})")
    return 0


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
def _summary_table(frame, scenario: str) -> Table:
    last = frame[frame["time_h"] == frame["time_h"].max()]
    metrics = [c for c in frame.columns if c not in ("scenario", "replicate", "seed", "time_h", "zone")]
    t_end = float(last["time_h"].iloc[0]) if len(last) else 0.0
    table = Table(title=f"{scenario}: state at t = {t_end:g} h ({t_end / 24:g} d)")
    table.add_column("zone", style="bold")
    for m in metrics:
        table.add_column(m, justify="right")
    for _, row in last.iterrows():
        table.add_row(str(row["zone"]), *(_fmt(float(row[m])) for m in metrics))
    return table


def cmd_run(args, con: Console) -> int:
    from .engine import Engine
    from .output import base_manifest, check_output_target, write_run

    _set_threads(args.threads)
    sc = _load(args)
    run_dir = Path(args.out) / sc.name
    check_output_target(run_dir, sc.digest(), int(sc.data["run"]["seed"]), args.force)
    t0 = time.perf_counter()
    eng = Engine(sc)
    days = float(sc.data["run"]["days"])
    total = eng.n_steps_for(days)
    show = not args.quiet and con.is_terminal
    if show:
        from rich.progress import BarColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        with Progress("[progress.description]{task.description}", BarColumn(),
                      "{task.completed}/{task.total} steps", TimeElapsedColumn(),
                      TimeRemainingColumn(), console=con, transient=True) as prog:
            task = prog.add_task(sc.name, total=total)
            frame = eng.run(days, progress=lambda i, n: prog.update(task, completed=i))
    else:
        frame = eng.run(days)
    wall = time.perf_counter() - t0
    manifest = base_manifest(eng, command=["marrow-abm", *sys.argv[1:]])
    manifest.update({
        "days": days, "n_steps": eng.step_index, "wall_s": wall,
        "phase_cpu_s": eng.phase_cpu_s, "phase_wall_s": eng.phase_wall_s,
        "final_cell_counts": eng.cell_counts(),
    })
    out = write_run(run_dir, frame, manifest, sc.to_toml())
    if not args.quiet:
        con.print(_summary_table(frame, sc.name))
        slow = max(eng.phase_cpu_s, key=eng.phase_cpu_s.get)
        con.print(f"{eng.step_index} steps of {eng.dt_h:g} h in {wall:.2f} s "
                  f"(slowest phase: {slow}, {eng.phase_cpu_s[slow]:.2f} s CPU)")
        con.print(f"Outputs in [bold]{out}[/]:")
        for name in ("timeseries.parquet", "manifest.json", "scenario.toml"):
            con.print(f"  {out / name}")
    return 0


# -- bench ------------------------------------------------------------------------------------
def cmd_bench(args, con: Console) -> int:
    from .bench import print_bench, run_bench

    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else (256, 1024, 2048)
    if any(s < 8 for s in sizes):
        raise MarrowError(f"--sizes must be grid edges >= 8 (got {args.sizes})")
    result = run_bench(sizes=sizes, threads=args.threads, json_path=args.json)
    print_bench(result)
    if args.json:
        con.print(f"Wrote {args.json}")
    return 0


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="marrow-abm",
        description="Spatial agent-based simulator of the bone-marrow niche (AML and MDS).")
    p.add_argument("--version", action="version", version=f"marrow-abm {__version__}")
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

    sp = sub.add_parser("run", help="run a scenario; write DIR/<scenario>/timeseries.parquet and manifest.json")
    scenario_args(sp, days=True)
    sp.add_argument("--out", required=True, metavar="DIR", help="output folder")
    sp.add_argument("--threads", type=int, default=None, help="numba threads (default 1)")
    sp.add_argument("--force", action="store_true", help="replace an output folder holding a different run")
    sp.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("bench", help="measure the field kernels against numpy and the memory-bandwidth bound")
    sp.add_argument("--sizes", help="comma-separated grid edges (default 256,1024,2048)")
    sp.add_argument("--threads", type=int, default=None, help="numba threads (default 1)")
    sp.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    sp.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``marrow-abm`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    con = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
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
