"""Live plots from the model's DataCollector: the panels whose metrics the run records.

A panel appears as soon as its columns exist, so the G0, blood-count, drug and ploidy panels show
up once the leukemia and megakaryocyte biology record those metrics, with no change here. All
panels go into one matplotlib figure (Agg, no pyplot state) encoded as PNG: one figure per
redraw is cheaper than one per panel, and the app redraws only when a new record arrives.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..cells import KIND_NAMES
from ..geometry import REPORT_ZONES
from ..model import reporter_name
from .render import KIND_STYLES, MK_PLOIDY_RGB, PLOIDY_CLASSES, rgb_hex

#: Line colour and style per zone (the radial zones by colour, the overlay dashed).
ZONE_STYLE: dict[str, tuple[str, str]] = {
    "all": ("#222222", "-"),
    "endosteal": ("#d95f02", "-"),
    "intermediate": ("#1b9e77", "-"),
    "central": ("#2c7fb8", "-"),
    "perivascular": ("#b2182b", "--"),
}
#: Line style per series when a panel shows several quantities in each zone.
SERIES_STYLES = ("-", "--", ":", "-.")
_BLOOD = (("platelets_per_ul", "platelets"), ("wbc_per_ul", "WBC"), ("rbc_per_ul", "RBC"))


@dataclass(frozen=True)
class Line:
    """One plotted series: DataFrame column, legend label, colour, line style."""

    column: str
    label: str
    colour: str
    style: str = "-"


@dataclass(frozen=True)
class Panel:
    """One plot: title, y-axis label, lines over time; or a bar chart of the latest values."""

    title: str
    ylabel: str
    lines: tuple[Line, ...] = ()
    bars: tuple[Line, ...] = ()
    log_y: bool = False
    ylim: tuple[float, float] | None = None


def _zone_lines(columns: set[str], metric: str, label: str, style: str = "-",
                zones: tuple[str, ...] = REPORT_ZONES) -> list[Line]:
    out = []
    for zone in zones:
        col = reporter_name(metric, zone)
        if col in columns:
            out.append(Line(col, f"{label} {zone}".strip(), ZONE_STYLE[zone][0], style))
    return out


def _counts_by_kind(columns: set[str]) -> Panel | None:
    lines = tuple(Line(f"n_{k}", KIND_STYLES[k].label, rgb_hex(KIND_STYLES[k].rgb))
                  for k in KIND_NAMES if f"n_{k}" in columns)
    return Panel("Cells by kind (whole section)", "cells", lines) if lines else None


def _g0_by_zone(columns: set[str]) -> Panel | None:
    zones = ("all", "endosteal", "intermediate", "central")
    lines = _zone_lines(columns, "frac_lsc_g0", "LSC", "-", zones)
    lines += _zone_lines(columns, "frac_leukemic_g0", "all leukemic", "--", zones)
    if not lines:
        return None
    return Panel("G0 (Ki67−) fraction by zone", "fraction in G0", tuple(lines), ylim=(0, 1))


def _niche_by_zone(columns: set[str]) -> Panel | None:
    zones = ("endosteal", "intermediate", "central")
    lines = _zone_lines(columns, "n_blc", "BLC", "-", zones)
    lines += _zone_lines(columns, "n_msc", "MSC", "--", zones)
    return Panel("BLC and MSC by zone", "cells", tuple(lines)) if lines else None


def _burden(columns: set[str]) -> Panel | None:
    zones = ("all", "endosteal", "central")
    lines = _zone_lines(columns, "burden", "leukemic", "-", zones)
    lines += _zone_lines(columns, "frac_normal", "normal", "--", zones)
    if not lines:
        return None
    return Panel("Leukemic burden and normal marrow", "fraction of marrow voxels",
                 tuple(lines), ylim=(0, 1))


def _fields_by_zone(columns: set[str], field_labels: dict[str, str]) -> Panel | None:
    lines = []
    for i, (name, label) in enumerate(field_labels.items()):
        style = SERIES_STYLES[i % len(SERIES_STYLES)]
        lines += _zone_lines(columns, f"mean_{name}", label, style,
                             ("endosteal", "intermediate", "central"))
    return (Panel("Mean field by zone", "concentration (normalised)", tuple(lines))
            if lines else None)


def _blood(columns: set[str]) -> Panel | None:
    colours = ("#6a3d9a", "#1f78b4", "#e31a1c")
    lines = tuple(Line(col, label, colours[i])
                  for i, (col, label) in enumerate(_BLOOD) if col in columns)
    return Panel("Blood counts", "per µL", lines, log_y=True) if lines else None


def _drugs(columns: set[str]) -> Panel | None:
    cols = sorted(c for c in columns if re.fullmatch(r"drug_[a-z0-9_]+_plasma_um", c))
    palette = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02")
    lines = tuple(Line(c, c[len("drug_"):-len("_plasma_um")], palette[i % len(palette)])
                  for i, c in enumerate(cols))
    return Panel("Drug plasma concentration", "µM", lines) if lines else None


def _ploidy(columns: set[str]) -> Panel | None:
    bars = tuple(Line(f"mk_frac_{p}n", f"{p}N", rgb_hex(MK_PLOIDY_RGB[i]))
                 for i, p in enumerate(PLOIDY_CLASSES) if f"mk_frac_{p}n" in columns)
    return Panel("MK ploidy (latest record)", "fraction of MK", bars=bars) if bars else None


def panels_for(columns: set[str] | list[str], field_labels: dict[str, str]) -> list[Panel]:
    """The panels whose metrics exist among the DataCollector's columns, in display order.

    Args:
        columns: DataCollector column names.
        field_labels: field name -> label ("tgfb" -> "TGF-β1").
    """
    cols = set(columns)
    built = [_counts_by_kind(cols), _g0_by_zone(cols), _niche_by_zone(cols), _burden(cols),
             _fields_by_zone(cols, field_labels), _blood(cols), _drugs(cols), _ploidy(cols)]
    return [p for p in built if p is not None]


def _legend(ax, panel: Panel) -> None:
    """A compact legend: for zone-by-series panels, colours = zones and styles = series."""
    labels = [ln.label for ln in panel.lines]
    zone_words = set(ZONE_STYLE)
    split = [lab.rsplit(" ", 1) for lab in labels]
    if all(len(s) == 2 and s[1] in zone_words for s in split) and len(labels) > 4:
        handles, names = [], []
        for zone in dict.fromkeys(s[1] for s in split):
            handles.append(Line2D([], [], color=ZONE_STYLE[zone][0]))
            names.append(zone)
        styles = {}
        for ln, s in zip(panel.lines, split):
            styles.setdefault(s[0], ln.style)
        if len(styles) > 1:
            for series, style in styles.items():
                handles.append(Line2D([], [], color="#555555", linestyle=style))
                names.append(series)
        ax.legend(handles, names, fontsize=7, frameon=False, ncols=2, loc="best")
    else:
        ax.legend(fontsize=7, frameon=False, loc="best")


def draw_panels(df: pd.DataFrame, panels: list[Panel], width_in: float = 7.2,
                dpi: int = 100) -> Figure:
    """A figure with the panels in two columns; time on the x axis in days."""
    n = max(len(panels), 1)
    ncols = 2 if n > 1 else 1
    nrows = (n + ncols - 1) // ncols
    fig = Figure(figsize=(width_in, 2.35 * nrows + 0.1), dpi=dpi, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    t_d = (df["time_h"].to_numpy(dtype=float) / 24.0) if "time_h" in df else np.arange(len(df))
    for ax, panel in zip(axes, panels):
        ax.set_title(panel.title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_ylabel(panel.ylabel, fontsize=8)
        if panel.bars:
            last = df.iloc[-1] if len(df) else None
            heights = [float(last[b.column]) if last is not None else 0.0 for b in panel.bars]
            ax.bar([b.label for b in panel.bars], np.nan_to_num(heights),
                   color=[b.colour for b in panel.bars])
            ax.set_xlabel("ploidy", fontsize=8)
            ax.set_ylim(0, 1)
            continue
        for ln in panel.lines:
            ax.plot(t_d, df[ln.column].to_numpy(dtype=float), color=ln.colour,
                    linestyle=ln.style, linewidth=1.3, label=ln.label,
                    marker="o" if len(t_d) < 3 else None, markersize=3)
        if panel.log_y:
            ax.set_yscale("log")
        if panel.ylim:
            ax.set_ylim(*panel.ylim)
        ax.set_xlabel("time (days)", fontsize=8)
        ax.grid(alpha=0.25, linewidth=0.5)
        _legend(ax, panel)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if not panels:
        axes[0].text(0.5, 0.5, "no recorded metrics yet", ha="center", va="center")
    return fig


def panels_png(df: pd.DataFrame, field_labels: dict[str, str], width_in: float = 7.2,
               dpi: int = 100) -> bytes:
    """PNG bytes of every panel that applies to the DataCollector frame ``df``."""
    fig = draw_panels(df, panels_for(list(df.columns), field_labels), width_in, dpi)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


__all__ = ["Line", "Panel", "ZONE_STYLE", "draw_panels", "panels_for", "panels_png"]
