"""Validation of the claims of MODEL.md section 9, as statistical tests over replicates.

Each topic module in this package (``aml.py`` for claims A1–A7, ``mds.py`` for M1–M5 and the
generic targets) exposes::

    TOPIC: str                      # "aml", "mds"
    TITLE: str                      # section heading of the report
    def run(out_dir: Path, *, quick: bool, workers: int,
            overrides: Sequence[str] = ()) -> list[ClaimResult]

``run`` simulates what it needs (full size and enough replicates, or a small and fast version
when ``quick``), writes its figures (PNG) into ``out_dir``, and returns one result per claim;
``overrides`` (``--set`` strings) go on top of its plan's own for every scenario, so the claims
can be re-checked at other zone widths, section sizes and root seeds (MODEL.md section 9).
``run_claims`` runs the topics, writes ``out_dir/validation.md`` (all sections) and one
``out_dir/<topic>.md`` per topic, and tells whether every claim held. ``marrow-abm claims --out
DIR`` calls it and exits non-zero when a claim fails. The fast versions of the same checks are
in ``tests/`` (CI); the full versions are this command, whose report is committed as
``docs/validation.md``. ``run_sensitivity`` (``marrow-abm claims --sensitivity``) repeats the
quick versions over :data:`SENSITIVITY` (zone widths, section size, root seed) and writes the
table of verdicts, ``sensitivity.md``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__


@dataclass
class ClaimResult:
    """The outcome of one claim.

    Args:
        id: claim id from MODEL.md section 9 (``A1`` ... ``M5``, ``G1`` ...).
        title: the claim in one sentence.
        passed: whether the stated test passed.
        test: the statistical test and its threshold, in words (e.g. "one-sided Mann–Whitney U
            over 20 replicates, p < 0.01").
        statistics: the numbers behind the verdict (effect sizes, CIs, p-values, n).
        figures: PNG files written for this claim (relative to the report folder when shown).
        notes: markdown shown under the claim (caveats, calibration vs validation).
    """

    id: str
    title: str
    passed: bool
    test: str
    statistics: dict = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    notes: str = ""


def _one_numba_thread() -> None:
    # One numba thread per worker: spinning numba threads slow each other down
    # (docs/performance.md).
    import numba

    numba.set_num_threads(1)


def process_pool(workers: int):
    """A process pool for replicate runs: spawn, not fork (the parent may hold numba, Dask or
    browser threads, and fork after threads can deadlock), one numba thread per worker."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_one_numba_thread)


def topics() -> list[str]:
    """Topic modules present in this package, in name order."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def section_markdown(title: str, results: list[ClaimResult], out_dir: Path) -> str:
    """One topic's report section: a summary table, then each claim with test, numbers, figures."""
    lines = [f"## {title}", "", "| claim | verdict | test |", "|---|---|---|"]
    for r in results:
        lines.append(f"| {r.id} {r.title} | {'PASS' if r.passed else '**FAIL**'} | {r.test} |")
    for r in results:
        lines += ["", f"### {r.id} — {r.title}", "",
                  f"**{'PASS' if r.passed else 'FAIL'}** — {r.test}", ""]
        if r.statistics:
            lines += ["| statistic | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in r.statistics.items()]
            lines.append("")
        for fig in r.figures:
            # the link is read from the report's folder, whether DIR was given relative or not
            rel = os.path.relpath(Path(fig).resolve(), Path(out_dir).resolve())
            lines.append(f"![{r.id}]({Path(rel).as_posix()})")
        if r.notes:
            lines += ["", r.notes]
    return "\n".join(lines) + "\n"


def run_claims(out_dir: Path, *, quick: bool = False, workers: int = 1,
               only: list[str] | None = None,
               overrides: Sequence[str] = ()) -> dict[str, list[ClaimResult]]:
    """Run the claim topics and write the report; returns results per topic.

    Args:
        out_dir: report folder (created); figures go beside the markdown.
        quick: small sections and few replicates (minutes) instead of the full versions.
        workers: local worker processes the topics may use for replicates.
        only: topic names to run (default all).
        overrides: ``--set`` strings (``KEY=VALUE``) applied to every scenario of every topic,
            after the plan's own; named in the report header.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = topics() if not only else only
    unknown = sorted(set(chosen) - set(topics()))
    if unknown:
        from ..errors import MarrowError
        raise MarrowError(f"unknown claim topic(s) {unknown}; available: {', '.join(topics())}")
    results: dict[str, list[ClaimResult]] = {}
    sections = []
    for name in chosen:
        mod = importlib.import_module(f"{__name__}.{name}")
        res = mod.run(out_dir, quick=quick, workers=workers, overrides=tuple(overrides))
        results[name] = res
        text = section_markdown(mod.TITLE, res, out_dir)
        (out_dir / f"{name}.md").write_text(text)
        sections.append(text)
    n_pass = sum(r.passed for rs in results.values() for r in rs)
    n_all = sum(len(rs) for rs in results.values())
    changed = f" Overrides: {', '.join(f'`{o}`' for o in overrides)}." if overrides else ""
    head = [
        "# Validation report", "",
        f"marrow-abm {__version__}; {'quick' if quick else 'full'} run; "
        f"{n_pass} of {n_all} claims hold.{changed}", "",
        "Each claim of MODEL.md section 9 is checked by the statistical test stated beside it, "
        "over independent replicates (named random streams, one root seed).", "",
    ]
    (out_dir / "validation.md").write_text("\n".join(head) + "\n".join(sections))
    return results


#: The settings MODEL.md section 9 asks the claims to survive ("reasonable changes of zone widths,
#: grid size and seed"), each one change from the quick plan: variant name -> ``--set`` strings.
#: The section-size variant replaces the quick plan's 250 µm marrow radius.
SENSITIVITY: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "d_endo 30": ("zones.d_endo_um=30",),
    "d_endo 80": ("zones.d_endo_um=80",),
    "d_central 100": ("zones.d_central_um=100",),
    "d_central 200": ("zones.d_central_um=200",),
    "radius 350": ("geometry.marrow_radius_um=350",),
    "seed 2": ("run.seed=2",),
    "seed 3": ("run.seed=3",),
}


def _slug(name: str) -> str:
    return name.replace(" ", "_")


def sensitivity_verdicts(runs: dict[str, dict[str, list[ClaimResult]]]
                         ) -> tuple[list[str], dict[tuple[str, str], bool]]:
    """Claim ids in first-seen order, and (claim id, setting) -> passed, from
    ``run_sensitivity``'s results."""
    verdict = {(r.id, name): r.passed for name, topics_ in runs.items()
               for rs in topics_.values() for r in rs}
    return list(dict.fromkeys(cid for cid, _ in verdict)), verdict


def sensitivity_markdown(runs: dict[str, dict[str, list[ClaimResult]]]) -> str:
    """Table of verdicts, claims × settings, from ``run_sensitivity``'s results."""
    names = list(runs)
    ids, verdict = sensitivity_verdicts(runs)
    lines = [
        "# Claims under changed settings (quick runs)", "",
        f"marrow-abm {__version__}. Each column is one quick claims run with one change from the "
        "quick plan (`marrow_abm.claims.SENSITIVITY`); its report is in `sensitivity/<column>/`.",
        "", "| claim | " + " | ".join(f"{n} ({', '.join(f'`{o}`' for o in SENSITIVITY.get(n, ())) or 'none'})"
                                       for n in names) + " |",
        "|---|" + "---|" * len(names)]
    for cid in ids:
        cells = ["" if (cid, n) not in verdict else ("PASS" if verdict[(cid, n)] else "**FAIL**")
                 for n in names]
        lines.append(f"| {cid} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_sensitivity(out_dir: Path, *, workers: int = 1, only: list[str] | None = None,
                    overrides: Sequence[str] = (),
                    variants: Sequence[str] | None = None) -> dict[str, dict[str, list[ClaimResult]]]:
    """The quick claims under every setting of :data:`SENSITIVITY` (or ``variants`` of it).

    Each setting's full quick report goes to ``out_dir/sensitivity/<setting>/``; the table of
    verdicts to ``out_dir/sensitivity.md`` (rewritten after every setting, so an interrupted run
    keeps the finished columns). ``overrides`` go before each setting's own.
    """
    out_dir = Path(out_dir)
    chosen = list(SENSITIVITY) if variants is None else list(variants)
    unknown = [v for v in chosen if v not in SENSITIVITY]
    if unknown:
        from ..errors import MarrowError
        raise MarrowError(f"unknown sensitivity setting(s) {unknown}; available: "
                          f"{', '.join(SENSITIVITY)}")
    runs: dict[str, dict[str, list[ClaimResult]]] = {}
    for name in chosen:
        runs[name] = run_claims(out_dir / "sensitivity" / _slug(name), quick=True,
                                workers=workers, only=only,
                                overrides=(*overrides, *SENSITIVITY[name]))
        (out_dir / "sensitivity.md").write_text(sensitivity_markdown(runs))
    return runs


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use (claims run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi, the size of every claims figure) and close ``fig``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path
