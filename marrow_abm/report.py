"""A batch folder -> figures (PNG) and a markdown summary (``marrow-abm report DIR``).

Figures are built from whatever metric columns the batch recorded, so a metric added later
(G0 fractions, platelet counts, drug levels) gets its time-course and paired-difference plots
without a change here; its axis label comes from its name (``metric_label``). Columns named
``<base>_<k>n`` (``mk_ploidy_2n`` ... ``mk_ploidy_128n``) form a histogram instead.
Colours are fixed per sweep point, per zone and per cell kind, the same in every figure.
Matplotlib is used through ``Figure`` objects (Agg canvas), never the global pyplot state.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .batch import metric_columns
from .errors import MarrowError
from .geometry import BONE, REPORT_ZONES, SINUSOID
from .output import read_manifest

__all__ = ["Batch", "Report", "build_report", "figures", "load_batch", "metric_label"]

#: One colour per zone in every figure (colour-blind-safe Dark2 subset; `all` in black).
ZONE_COLOURS = {"all": "#000000", "endosteal": "#d95f02", "intermediate": "#7570b3",
                "central": "#1b9e77", "perivascular": "#e7298a"}
#: One colour per cell kind in every figure (cells.KINDS).
KIND_COLOURS = {"blc": "#e6ab02", "msc": "#1b9e77", "lsc": "#d62728", "blast": "#ff9896",
                "mkp": "#9467bd", "mk": "#3f007d"}
KIND_LABELS = {"blc": "BLC", "msc": "MSC", "lsc": "LSC", "blast": "blasts", "mkp": "MKP",
               "mk": "MK"}
#: Point colours, in point order (tab10).
POINT_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf")
#: Structural columns not worth a time course (constant over a run).
NOT_PLOTTED = ("n_voxels",)
_HIST = re.compile(r"^(?P<base>.+)_(?P<bin>\d+)n$")
#: Unit suffixes of metric names (STYLE.md: units in names) -> axis unit.
_SUFFIX_UNITS = (("_per_ul", "per µL"), ("_per_h", "per h"), ("_um2", "µm²"), ("_um", "µm"),
                 ("_h", "h"), ("_d", "d"), ("_ng_per_ml", "ng/mL"), ("_um_per_l", "µM"))


def metric_label(name: str, field_labels: dict[str, str] | None = None) -> tuple[str, str]:
    """Axis text and unit for a metric column, from its name.

    ``n_<kind>`` is a cell count, ``mean_<field>`` a field mean (normalised), ``frac_*`` a
    fraction, ``rate_*`` a per-hour rate; a unit suffix (``_per_ul``, ``_um``...) gives the unit.

    Args:
        name: the column name.
        field_labels: field name -> label shown (``{"tgfb": "TGF-β1"}``).

    Returns:
        (label, unit); unit "" when the name does not say.
    """
    field_labels = field_labels or {}
    if name == "n_voxels":
        return "marrow voxels", "voxels"
    if name.startswith("n_"):
        kind = name[2:]
        return f"{KIND_LABELS.get(kind, kind.replace('_', ' '))} count", "cells"
    if name.startswith("mean_") and name[5:] in field_labels:
        return f"mean {field_labels[name[5:]]}", "normalised"
    if name.startswith("frac_"):
        words = [KIND_LABELS.get(w, w.upper() if w in ("g0", "ki67") else w)
                 for w in name[5:].split("_")]
        return " ".join(words) + " fraction", "0–1"
    if name.startswith("rate_"):
        return name[5:].replace("_", " ") + " rate", "per h"
    for suffix, unit in _SUFFIX_UNITS:
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("_", " "), unit
    return name.replace("_", " "), ""


def _axis_text(name: str, field_labels: dict[str, str]) -> str:
    label, unit = metric_label(name, field_labels)
    return f"{label} ({unit})" if unit else label


@dataclass
class Batch:
    """A batch folder read back: manifest, combined records, replicate summary."""

    path: Path
    manifest: dict
    frame: pd.DataFrame
    summary: pd.DataFrame
    field_labels: dict[str, str] = field(default_factory=dict)

    @property
    def points(self) -> list[dict]:
        return self.manifest["points"]

    def point_colour(self, point_id: str) -> str:
        ids = [p["point"] for p in self.points]
        return POINT_COLOURS[ids.index(point_id) % len(POINT_COLOURS)]

    def point_label(self, point_id: str) -> str:
        return next(p["label"] for p in self.points if p["point"] == point_id)


@dataclass
class Report:
    """Files a report wrote."""

    folder: Path
    figures: list[Path]
    markdown: Path


def load_batch(batch_dir: str | Path) -> Batch:
    """Read a batch folder written by ``marrow-abm run``.

    Raises:
        MarrowError: not a batch folder, or no run of it has finished.
    """
    from .batch import summarise

    path = Path(batch_dir)
    manifest = read_manifest(path)
    ts = path / "timeseries.parquet"
    if not ts.exists():
        raise MarrowError(f"{path} has no timeseries.parquet: the batch never finished a pass; "
                          "rerun its command (see manifest.json) to complete it")
    frame = pd.read_parquet(ts)
    if frame.empty:
        raise MarrowError(f"{path}: no run of this batch finished; nothing to report")
    summary_path = path / "summary.csv"
    summary = pd.read_csv(summary_path) if summary_path.exists() else summarise(frame)
    labels: dict[str, str] = {}
    for p in manifest["points"]:
        for name, spec in p["resolved"].get("fields", {}).items():
            labels.setdefault(name, spec.get("label", name))
    return Batch(path, manifest, frame, summary, labels)


# ---------------------------------------------------------------------------------------------
# Figures

def _time_axis(times_h: np.ndarray) -> tuple[float, str]:
    """Divisor and axis label: hours for short runs, days from three days on."""
    return (24.0, "time (d)") if np.nanmax(times_h) >= 72.0 else (1.0, "time (h)")


def _plot_metrics(frame: pd.DataFrame) -> tuple[list[str], dict[str, list[str]]]:
    """Time-course metrics and histogram families (base -> columns ordered by bin)."""
    metrics = metric_columns(frame)
    families: dict[str, list[tuple[int, str]]] = {}
    for m in metrics:
        match = _HIST.match(m)
        if match:
            families.setdefault(match["base"], []).append((int(match["bin"]), m))
    hist = {b: [c for _, c in sorted(cols)] for b, cols in families.items() if len(cols) >= 2}
    in_hist = {c for cols in hist.values() for c in cols}
    plain = [m for m in metrics if m not in in_hist and m not in NOT_PLOTTED
             and frame[m].notna().any()]
    return plain, hist


def _zones_for(frame: pd.DataFrame, metric: str) -> list[str]:
    """Zones worth a panel: all of them, or only ``all`` for a whole-body metric (blood counts,
    drug levels) that is the same in every zone or recorded only for ``all``."""
    present = [z for z in REPORT_ZONES
               if frame.loc[frame["zone"] == z, metric].notna().any()]
    wide = frame.pivot_table(index=["point", "replicate", "time_h"], columns="zone",
                             values=metric, observed=True)
    if len(present) > 1 and all(np.allclose(wide[z], wide["all"], equal_nan=True)
                                for z in present if z in wide):
        return ["all"]
    return present


def _replicate_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% t-interval over replicates (rows)."""
    from scipy import stats

    n = np.sum(np.isfinite(values), axis=0)
    # A fraction of no cells is NaN in some replicates: those times get no value or no band.
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        if values.shape[0] < 2:
            return mean, mean, mean
        sd = np.nanstd(values, axis=0, ddof=1)
        half = np.where(n >= 2, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(n),
                        np.nan)
    return mean, mean - half, mean + half


def _clip_band(lo: np.ndarray, hi: np.ndarray, metric: str, values: pd.Series
               ) -> tuple[np.ndarray, np.ndarray]:
    """Keep a t-interval band inside the metric's range: ≥ 0 for a metric never negative
    (counts, concentrations), ≤ 1 for a fraction. With few replicates the interval is wide
    and would otherwise draw impossible values."""
    if np.nanmin(values.to_numpy(dtype=float), initial=np.inf) >= 0:
        lo = np.maximum(lo, 0.0)
    if metric_label(metric)[1] == "0–1":
        hi = np.minimum(hi, 1.0)
    return lo, hi


def timecourse_figure(batch: Batch, metric: str) -> Figure:
    """Replicate mean (line) and 95% CI (band) over time, one panel per zone, one colour per point."""
    frame = batch.frame
    zones = _zones_for(frame, metric)
    div, xlabel = _time_axis(frame["time_h"].to_numpy())
    ncol = min(len(zones), 3)
    nrow = -(-len(zones) // ncol)
    n_points = int(frame["point"].nunique())
    legend_cols = 1 if ncol == 1 else min(n_points, 3)
    width = 6.4 if ncol == 1 else 4.2 * ncol
    fig = Figure(figsize=(width, 3.2 * nrow + 0.6 + 0.22 * -(-n_points // legend_cols)),
                 layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True)
    n_rep = int(frame["replicate"].nunique())
    for ax, zone in zip(axes.flat, zones):
        sub = frame[frame["zone"] == zone]
        for pid, rows in sub.groupby("point", observed=True, sort=False):
            wide = rows.pivot_table(index="replicate", columns="time_h", values=metric)
            t = wide.columns.to_numpy(dtype=float) / div
            mean, lo, hi = _replicate_band(wide.to_numpy(dtype=float))
            lo, hi = _clip_band(lo, hi, metric, frame[metric])
            colour = batch.point_colour(str(pid))
            ax.plot(t, mean, color=colour, lw=1.8, label=batch.point_label(str(pid)))
            if wide.shape[0] >= 2:
                ax.fill_between(t, lo, hi, color=colour, alpha=0.2, lw=0)
        ax.set_title(zone, color=ZONE_COLOURS.get(zone, "black"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_axis_text(metric, batch.field_labels))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(zones):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    band = f"; band: 95% CI over {n_rep} replicates" if n_rep >= 2 else ""
    fig.legend(handles, labels, loc="outside lower center", ncol=legend_cols,
               fontsize="small", title=f"line: replicate mean{band}", title_fontsize="small")
    fig.suptitle(metric_label(metric, batch.field_labels)[0])
    return fig


def paired_differences(batch: Batch, metrics: Sequence[str]) -> pd.DataFrame:
    """Paired differences (point − reference point) at the last time, per zone and metric.

    Replicate *i* of every point shares its random streams, so the difference is taken within
    replicate and summarised as mean ± 95% t-interval. The reference is the batch's first point.
    """
    from scipy import stats

    frame = batch.frame
    t_end = frame["time_h"].max()
    last = frame[frame["time_h"] == t_end]
    ref = batch.points[0]["point"]
    rows = []
    base = last[last["point"] == ref].set_index(["zone", "replicate"])
    for p in batch.points[1:]:
        other = last[last["point"] == p["point"]].set_index(["zone", "replicate"])
        joined = other.merge(base, how="inner", left_index=True, right_index=True,
                             suffixes=("", "_ref"))
        for m in metrics:
            diff = (joined[m] - joined[f"{m}_ref"]).dropna()
            for zone, d in diff.groupby(level="zone", observed=True, sort=False):
                n = d.size
                mean = float(d.mean())
                half = (float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n))
                        if n >= 2 else float("nan"))
                rows.append({"point": p["point"], "label": p["label"], "reference": ref,
                             "zone": str(zone), "metric": m, "time_h": float(t_end), "n": n,
                             "mean_diff": mean, "ci95_low": mean - half,
                             "ci95_high": mean + half})
    return pd.DataFrame(rows)


def paired_figure(batch: Batch, diffs: pd.DataFrame) -> Figure:
    """Forest plot of paired differences: one panel per metric, one row per point, zone colours."""
    metrics = list(dict.fromkeys(diffs["metric"]))
    ncol = min(len(metrics), 3)
    nrow = -(-len(metrics) // ncol)
    labels = list(dict.fromkeys(diffs["label"]))
    fig = Figure(figsize=(4.6 * ncol, 0.5 * len(labels) * nrow + 2.2 * nrow + 0.6),
                 layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    zones = [z for z in REPORT_ZONES if z in set(diffs["zone"])]
    offsets = np.linspace(-0.3, 0.3, len(zones)) if len(zones) > 1 else np.zeros(1)
    for ax, m in zip(axes.flat, metrics):
        sub = diffs[diffs["metric"] == m]
        for off, zone in zip(offsets, zones):
            z = sub[sub["zone"] == zone]
            y = np.array([labels.index(lab) for lab in z["label"]]) + off
            err = np.vstack([z["mean_diff"] - z["ci95_low"], z["ci95_high"] - z["mean_diff"]])
            ax.errorbar(z["mean_diff"], y, xerr=np.nan_to_num(err), fmt="o", ms=4, capsize=2,
                        color=ZONE_COLOURS.get(zone, "grey"), label=zone)
        ax.axvline(0.0, color="grey", lw=0.8)
        ax.set_yticks(range(len(labels)), labels, fontsize="small")
        ax.set_ylabel("sweep point / scenario")
        ax.set_xlabel(f"Δ {_axis_text(m, batch.field_labels)}")
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    handles, zl = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, zl, loc="outside lower center", ncol=len(zl), fontsize="small",
               title="zone (mean ± 95% CI of paired differences)", title_fontsize="small")
    ref = batch.point_label(batch.points[0]["point"])
    t_end = diffs["time_h"].iloc[0]
    fig.suptitle(f"Paired differences vs {ref} at t = {t_end:g} h")
    return fig


def histogram_figure(batch: Batch, base: str, columns: list[str]) -> Figure:
    """Distribution over bins (``<base>_<k>n`` columns) at the last time, zone ``all``,
    replicate mean ± 95% CI, bars grouped by point."""
    frame = batch.frame
    last = frame[(frame["time_h"] == frame["time_h"].max()) & (frame["zone"] == "all")]
    bins = [int(_HIST.match(c)["bin"]) for c in columns]
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    pids = [p["point"] for p in batch.points if p["point"] in set(last["point"].astype(str))]
    width = 0.8 / max(len(pids), 1)
    for i, pid in enumerate(pids):
        vals = last[last["point"] == pid][columns].to_numpy(dtype=float)
        mean, lo, hi = _replicate_band(vals)
        x = np.arange(len(columns)) - 0.4 + width * (i + 0.5)
        ax.bar(x, mean, width, color=batch.point_colour(pid), label=batch.point_label(pid),
               yerr=np.nan_to_num(np.vstack([mean - lo, hi - mean])), capsize=2)
    ax.set_xticks(range(len(columns)), [f"{b}N" for b in bins])
    ax.set_xlabel(f"{base.replace('_', ' ')} class")
    ax.set_ylabel(_axis_text(columns[0], batch.field_labels).rsplit(" ", 1)[0]
                  if metric_label(columns[0])[1] else "cells per class")
    ax.legend(fontsize="small")
    t_end = float(last["time_h"].max())
    fig.suptitle(f"{base.replace('_', ' ')} at t = {t_end:g} h (all marrow)")
    return fig


def snapshot_figure(batch: Batch, point_id: str, replicate: int = 0) -> Figure | None:
    """Tissue (bone, sinusoids, cells by kind) and each field at the last snapshot of a run."""
    path = batch.path / "snapshots" / point_id / f"r{replicate:04d}.npz"
    if not path.exists():
        return None
    snap = np.load(path)
    labels = snap["labels"]
    dx = float(snap["dx_um"])
    ny, nx = labels.shape
    extent = (0.0, nx * dx, ny * dx, 0.0)
    k = len(snap["time_h"]) - 1
    t = float(snap["time_h"][k])
    fields = [str(f) for f in snap["field_names"]]
    field_labels = [str(f) for f in snap["field_labels"]]
    fig = Figure(figsize=(4.0 * (1 + len(fields)), 4.2), layout="constrained")
    axes = fig.subplots(1, 1 + len(fields), squeeze=False)[0]
    tissue = np.ones((ny, nx, 3))
    tissue[labels == BONE] = (0.80, 0.80, 0.80)
    tissue[labels == SINUSOID] = (0.99, 0.85, 0.85)
    ax = axes[0]
    ax.imshow(tissue, extent=extent, interpolation="nearest")
    lo, hi = snap["cell_offsets"][k], snap["cell_offsets"][k + 1]
    vox, kinds = snap["cell_voxel"][lo:hi], snap["cell_kind"][lo:hi]
    names = [str(n) for n in snap["kind_names"]]
    for code in np.unique(kinds):
        name = names[code]
        sel = vox[kinds == code]
        ax.scatter((sel % nx + 0.5) * dx, (sel // nx + 0.5) * dx, s=4,
                   color=KIND_COLOURS.get(name, "black"),
                   label=f"{KIND_LABELS.get(name, name)} ({sel.size})")
    from matplotlib.patches import Patch

    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=(0.80, 0.80, 0.80), label="bone"),
                Patch(color=(0.99, 0.85, 0.85), label="sinusoid")]
    ax.legend(handles=handles, fontsize="x-small", loc="upper right", markerscale=2)
    ax.set_title("tissue and cells")
    for ax, f, flab in zip(axes[1:], fields, field_labels):
        data = np.ma.masked_where(labels != 0, snap[f"field_{f}"][k])
        im = ax.imshow(data, extent=extent, cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label=f"{flab} (normalised)")
        ax.set_title(flab)
    for ax in axes:
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
    fig.suptitle(f"{batch.point_label(point_id)}, replicate {replicate}, t = {t:g} h")
    return fig


def figures(batch: Batch) -> dict[str, Figure]:
    """Every figure of the report, by file stem."""
    out: dict[str, Figure] = {}
    plain, hist = _plot_metrics(batch.frame)
    for m in plain:
        out[f"timecourse_{m}"] = timecourse_figure(batch, m)
    for base, cols in hist.items():
        out[f"histogram_{base}"] = histogram_figure(batch, base, cols)
    if len(batch.points) >= 2:
        diffs = paired_differences(batch, plain)
        varying = [m for m in plain
                   if not np.allclose(diffs.loc[diffs["metric"] == m, "mean_diff"], 0.0)]
        if varying:
            out["paired_differences"] = paired_figure(batch, diffs[diffs["metric"].isin(varying)])
    for p in batch.points:
        fig = snapshot_figure(batch, p["point"])
        if fig is not None:
            out[f"snapshot_{p['point']}"] = fig
    return out


# ---------------------------------------------------------------------------------------------
# Markdown

def _md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def _ci(mean: float, lo: float, hi: float) -> str:
    if not np.isfinite(lo):
        return f"{mean:.4g}"
    return f"{mean:.4g} [{lo:.4g}, {hi:.4g}]"


def markdown(batch: Batch, figure_files: Sequence[Path], folder: Path) -> str:
    """The report text: what was run, final values with CIs, paired differences, figures."""
    man = batch.manifest
    lines = [f"# Batch report: {batch.path.name}", "",
             f"- created {man.get('created_utc', '?')} by marrow-abm {man.get('package_version')}"
             f" (`{' '.join(man.get('command', []))}`)",
             f"- root seed {man['root_seed']}, {man['replicates']} replicates per point "
             "(replicate *i* of every point shares its random streams: differences are paired)",
             f"- status: {man.get('status', '?')}, {len(man.get('runs', []))} runs finished, "
             f"{len(man.get('failures', []))} failed", "",
             "## Points", ""]
    pts = pd.DataFrame([{"point": p["point"], "scenario": p["scenario"], "label": p["label"],
                         "digest": p["digest"][:12]} for p in batch.points])
    lines += [_md_table(pts), ""]
    for f in man.get("failures", []):
        lines.append(f"- **failed**: {f['point']} replicate {f['replicate']} seed {f['seed']}: "
                     f"{f['error'].strip().splitlines()[-1] if f.get('error') else ''}")
    s = batch.summary
    s = s[(s["zone"] == "all") & (s["time_h"] == s["time_h"].max())
          & ~s["metric"].isin(NOT_PLOTTED)]
    if len(s):
        t_end = float(s["time_h"].iloc[0])
        table = s.pivot_table(index="point", columns="metric", values="mean", sort=False)
        text = pd.DataFrame(index=table.index)
        for m in table.columns:
            rows = s[s["metric"] == m].set_index("point")
            text[_axis_text(m, batch.field_labels)] = [
                _ci(rows.loc[pid, "mean"], rows.loc[pid, "ci95_low"], rows.loc[pid, "ci95_high"])
                for pid in table.index]
        lines += ["", f"## All marrow at t = {t_end:g} h: replicate mean [95% CI]", "",
                  _md_table(text.reset_index()), ""]
    plain, _ = _plot_metrics(batch.frame)
    if len(batch.points) >= 2 and plain:
        d = paired_differences(batch, plain)
        d = d[d["zone"] == "all"]
        if len(d):
            d = d.assign(diff=[_ci(a, b, c) for a, b, c in
                               zip(d["mean_diff"], d["ci95_low"], d["ci95_high"])])
            lines += [f"## Paired differences vs {batch.point_label(batch.points[0]['point'])} "
                      "(all marrow, last time)", "",
                      _md_table(d[["label", "metric", "n", "diff"]]), ""]
    lines += ["## Figures", ""]
    for path in figure_files:
        lines += [f"### {path.stem.replace('_', ' ')}", "",
                  f"![{path.stem}]({path.relative_to(folder).as_posix()})", ""]
    return "\n".join(lines)


def build_report(batch_dir: str | Path, to: str | Path | None = None) -> Report:
    """Write every figure (PNG, 150 dpi) and ``report.md`` for a batch folder.

    Args:
        batch_dir: a folder written by ``marrow-abm run``.
        to: output folder (default ``<batch_dir>/report``).

    Raises:
        MarrowError: not a batch folder, or nothing finished.
    """
    from .output import write_bytes_atomic

    batch = load_batch(batch_dir)
    folder = Path(to) if to is not None else batch.path / "report"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures(batch).items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=150)
        path = folder / f"{name}.png"
        write_bytes_atomic(path, buf.getvalue())
        written.append(path)
    md = folder / "report.md"
    write_bytes_atomic(md, markdown(batch, written, folder).encode())
    return Report(folder, written, md)
