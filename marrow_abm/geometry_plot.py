"""A picture of a marrow section: bone, sinusoids, radial zones and the perivascular overlay.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, so no global figure state),
written atomically so a reader never sees half a PNG.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

from .errors import GeometryError
from .geometry import BONE, SINUSOID, ZONES, Geometry

#: Picture size: FIGSIZE_IN inches at DPI dots per inch (1425 × 930 pixels).
FIGSIZE_IN = (9.5, 6.2)
DPI = 150

# Colour-blind-safe choices: warm → cool from bone to the centre, vessels in dark red as in
# stained sections, bone in pale ivory so the marrow carries the contrast.
_COLOURS = {
    "outside": "#ffffff",
    "bone": "#e3dccb",
    "sinusoid": "#a50f15",
    "endosteal": "#f4a261",
    "intermediate": "#f6e3a1",
    "central": "#9ecae1",
}
_ORDER = ("outside", "bone", "sinusoid", *ZONES)
_HATCH = "////"
_STYLE = {"hatch.linewidth": 0.45, "hatch.color": "#2b2b2b"}


def _class_image(geometry: Geometry) -> np.ndarray:
    """Per-voxel index into ``_ORDER``."""
    img = np.full(geometry.labels.shape, _ORDER.index("bone"), np.int8)
    img[geometry.labels == SINUSOID] = _ORDER.index("sinusoid")
    for code, name in enumerate(ZONES):
        img[geometry.radial_zone == code] = _ORDER.index(name)
    if geometry.outside is not None:
        img[geometry.outside & (geometry.labels == BONE)] = _ORDER.index("outside")
    return img


def _nice_length(span_um: float) -> float:
    """A round scale-bar length near a fifth of the picture width."""
    target = span_um / 5
    base = 10 ** np.floor(np.log10(target))
    for m in (5, 2, 1):
        if m * base <= target:
            return float(m * base)
    return float(base)


def draw_geometry(geometry: Geometry, png_path: str | os.PathLike,
                  title: str | None = None) -> Path:
    """Draw a section with its zones and write it as a PNG.

    Bone, sinusoids and the three radial zones are filled in distinct colours; marrow within
    ``d_vasc_um`` of a sinusoid is hatched; the legend gives voxel counts per zone; a scale bar
    and axes in µm give the size.

    Args:
        geometry: the section to draw.
        png_path: destination file (parent folders are created); written atomically.
        title: heading; defaults to the section's source.

    Returns:
        The path written.

    Raises:
        GeometryError: the destination cannot be written.
    """
    png_path = Path(png_path)
    # rc_context (held through savefig, when hatches are drawn) restores the style afterwards.
    with matplotlib.rc_context(_STYLE):
        fig = _figure(geometry, title)
        return _save_atomic(fig, png_path)


def _figure(geometry: Geometry, title: str | None) -> Figure:
    dx = geometry.dx_um
    ny, nx = geometry.labels.shape
    extent = (0.0, nx * dx, ny * dx, 0.0)   # row 0 at the top, as in the image it came from
    widths = geometry.zone_widths_um
    counts = geometry.summary()
    zv = counts["zone_voxels"]
    n_marrow = max(zv["all"], 1)
    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(_class_image(geometry), cmap=ListedColormap([_COLOURS[k] for k in _ORDER]),
              vmin=-0.5, vmax=len(_ORDER) - 0.5, interpolation="nearest", extent=extent)
    if geometry.perivascular.any():
        # Hatch the voxel squares themselves (an upsampled mask, not a smoothed contour), so
        # the overlay follows the lattice the engine sees.
        up = np.kron(geometry.perivascular, np.ones((2, 2), bool)).astype(float)
        yu = np.linspace(0, ny * dx, 2 * ny)
        xu = np.linspace(0, nx * dx, 2 * nx)
        ax.contourf(xu, yu, up, levels=[0.5, 1.5], colors="none", hatches=[_HATCH])

    def zone_label(name: str, rule: str) -> str:
        n = zv[name.split(" ")[0]]
        return f"{name}: {rule}\n{n:,} voxels ({100 * n / n_marrow:.0f}% of marrow)"

    d_endo, d_central, d_vasc = (widths.get(k) for k in ("d_endo_um", "d_central_um", "d_vasc_um"))
    rules = {
        "endosteal": f"≤ {d_endo:g} µm from bone" if d_endo else "",
        "intermediate": f"{d_endo:g}–{d_central:g} µm from bone" if d_endo and d_central else "",
        "central": f"> {d_central:g} µm from bone" if d_central else "",
    }
    handles = [Patch(facecolor=_COLOURS[z], edgecolor="#777777", linewidth=0.5,
                     label=zone_label(z, rules[z])) for z in ZONES]
    handles.append(Patch(facecolor="white", edgecolor="#3b3b3b", hatch="////", linewidth=0.5,
                         label=zone_label("perivascular",
                                          f"≤ {d_vasc:g} µm from sinusoid" if d_vasc else "")))
    vox = counts["voxels"]
    handles.append(Patch(facecolor=_COLOURS["sinusoid"], edgecolor="#777777", linewidth=0.5,
                         label=f"sinusoid lumen\n{vox['sinusoid']:,} voxels, "
                               f"{100 * counts['sinusoid_area_fraction']:.0f}% of marrow area"))
    handles.append(Patch(facecolor=_COLOURS["bone"], edgecolor="#777777", linewidth=0.5,
                         label=f"bone\n{vox['bone'] - _outside_count(geometry):,} voxels"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
              fontsize=8, title=f"marrow: {zv['all']:,} voxels", title_fontsize=9,
              alignment="left", borderaxespad=0.0, labelspacing=0.9, handlelength=2.2,
              handleheight=1.6)

    bar = _nice_length(nx * dx)
    sizebar = AnchoredSizeBar(ax.transData, bar, f"{bar:g} µm", "lower right",
                              pad=0.3, borderpad=0.6, sep=3, frameon=True, color="black",
                              size_vertical=max(dx * 0.6, nx * dx / 250),
                              fontproperties={"size": 8})
    sizebar.patch.set(facecolor="white", alpha=0.85, edgecolor="none")
    ax.add_artist(sizebar)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.tick_params(labelsize=8)
    heading = title or (f"{geometry.source} section" if geometry.source else "marrow section")
    ax.set_title(heading, fontsize=11, loc="left")
    pieces = counts["sinusoid_components"]
    lines = [f"{ny} × {nx} voxels of {dx:g} µm",
             f"marrow {counts['marrow_area_mm2']:.2f} mm²"]
    if vox["sinusoid"]:
        lines += [f"sinusoid network: {pieces} piece{'s' if pieces != 1 else ''}",
                  f"median distance to it {counts['dist_sinusoid_median_um']:.0f} µm"]
    else:
        lines.append("no sinusoids")
    ax.text(1.02, 0.0, "\n".join(lines), transform=ax.transAxes, ha="left", va="bottom",
            fontsize=7.5, color="#444444", linespacing=1.5)
    return fig


def _outside_count(geometry: Geometry) -> int:
    if geometry.outside is None:
        return 0
    return int(np.count_nonzero(geometry.outside & (geometry.labels == BONE)))


def _save_atomic(fig: Figure, png_path: Path) -> Path:
    try:
        png_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=png_path.parent, prefix=f".{png_path.stem}.", suffix=".png")
    except OSError as exc:
        raise GeometryError(f"{png_path}: cannot write the picture "
                            f"({exc.strerror or exc})") from exc
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.chmod(tmp, 0o644)   # mkstemp makes it private; a picture is for sharing
        os.replace(tmp, png_path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise GeometryError(f"{png_path}: cannot write the picture "
                            f"({exc.strerror or exc})") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return png_path


__all__ = ["draw_geometry", "FIGSIZE_IN", "DPI"]
