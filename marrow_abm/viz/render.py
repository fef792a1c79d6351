"""Fast raster picture of the tissue: one pixel per voxel, cells painted over a field or the zones.

Mesa's built-in space drawing costs 0.4–1.1 s per frame at 200×200 with 10k agents
(matplotlib markers and grid lines, MESA_NOTES); here a frame is a few numpy lookups into an RGB
array and a fast PNG encode (Pillow), well under 50 ms at that size (``benchmarks/test_bench_viz.py``).
The browser scales the small PNG up with ``image-rendering: pixelated``, so a voxel stays a crisp
square at any zoom.

Colours: a cell kind has one colour; leukemic kinds have a second, darker one for Ki67− (G0)
cells, and megakaryocytes a light-to-dark ramp over ploidy 2N…128N. The same colours are used by
the legend (``legend_entries``), so the picture and its key cannot disagree.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..cells import KINDS, CellTable
from ..geometry import BONE, MARROW, SINUSOID, Geometry

#: Ploidy classes of megakaryocytes (N), MODEL.md section 8.
PLOIDY_CLASSES: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)
#: Column holding a cell's cycle phase, and the code of G0 (Ki67−) in it. Leukemia biology
#: (issue 3) adds the column; when it is absent every cell is drawn in its kind's main colour.
PHASE_COLUMN = "phase"
G0_CODE = 0
#: Column holding a megakaryocyte's ploidy in N (2, 4, ... 128), added by the MK biology.
PLOIDY_COLUMN = "ploidy"

#: Background labels (RGB).
BONE_RGB = (222, 210, 184)        # pale ivory: mineralised bone
SINUSOID_RGB = (150, 20, 35)      # dark red: vessel lumen with blood
OUTSIDE_RGB = (255, 255, 255)     # beyond the periosteum
ZONE_RGB = {                      # pale fills, so coloured cells stand out
    "endosteal": (252, 226, 196),
    "intermediate": (228, 240, 220),
    "central": (220, 230, 246),
}


@dataclass(frozen=True)
class KindStyle:
    """How one cell kind is drawn.

    Args:
        label: name shown in the legend.
        rgb: main colour (cycling cells for leukemic kinds).
        g0_rgb: colour of Ki67− (G0) cells, or None if the kind has no Ki67 state.
    """

    label: str
    rgb: tuple[int, int, int]
    g0_rgb: tuple[int, int, int] | None = None


#: One style per kind in ``marrow_abm.cells.KINDS`` (a test checks none is missing).
KIND_STYLES: dict[str, KindStyle] = {
    "blc": KindStyle("BLC (Alcam+ bone-lining)", (106, 61, 154)),
    "msc": KindStyle("MSC (CD51+CD140a+)", (27, 158, 119)),
    "lsc": KindStyle("LSC", (231, 41, 138), g0_rgb=(77, 0, 75)),
    "blast": KindStyle("Blast", (255, 176, 0), g0_rgb=(122, 82, 0)),
    "mkp": KindStyle("MK progenitor", (120, 190, 255)),
    "mk": KindStyle("Megakaryocyte", (33, 113, 181)),
}
#: Megakaryocyte colour per ploidy class, light (2N) to dark (128N).
MK_PLOIDY_RGB: tuple[tuple[int, int, int], ...] = (
    (158, 202, 225), (107, 174, 214), (66, 146, 198), (33, 113, 181), (8, 81, 156),
    (8, 48, 107), (4, 24, 60))

# Colour classes: kind codes first, then a G0 class per kind, then the MK ploidy ramp.
_N_KINDS = max(KINDS.values()) + 1
_G0_OFFSET = _N_KINDS
_PLOIDY_OFFSET = 2 * _N_KINDS


def _class_lut() -> np.ndarray:
    lut = np.zeros((_PLOIDY_OFFSET + len(PLOIDY_CLASSES), 3), np.uint8)
    for kind, code in KINDS.items():
        style = KIND_STYLES[kind]
        lut[code] = style.rgb
        lut[_G0_OFFSET + code] = style.g0_rgb or style.rgb
    lut[_PLOIDY_OFFSET:] = MK_PLOIDY_RGB
    return lut


CLASS_LUT = _class_lut()


def colormap_lut(name: str = "Greys", low: float = 0.0, high: float = 0.8) -> np.ndarray:
    """A (256, 3) uint8 lookup table from a matplotlib colormap, using its ``[low, high]`` part.

    The default, grey from white to dark grey, keeps the coloured cells readable over a field.
    """
    from matplotlib import colormaps  # only at set-up: the hot path is a table lookup

    cmap = colormaps[name]
    return (np.asarray(cmap(np.linspace(low, high, 256)))[:, :3] * 255).round().astype(np.uint8)


FIELD_LUT = colormap_lut()


def cell_classes(cells: CellTable) -> np.ndarray:
    """Colour class (row of ``CLASS_LUT``) of every living row of the table, int64."""
    kind = cells["kind"].astype(np.int64)
    cls = kind.copy()
    columns = cells.columns
    if PHASE_COLUMN in columns:
        g0 = cells[PHASE_COLUMN] == G0_CODE
        has_g0 = np.zeros(_N_KINDS, bool)
        for k, style in KIND_STYLES.items():
            has_g0[KINDS[k]] = style.g0_rgb is not None
        sel = g0 & has_g0[kind]
        cls[sel] = _G0_OFFSET + kind[sel]
    if PLOIDY_COLUMN in columns:
        mk = kind == KINDS["mk"]
        if mk.any():
            ploidy = np.maximum(cells[PLOIDY_COLUMN][mk].astype(np.float64), 2.0)
            idx = np.clip(np.round(np.log2(ploidy)).astype(np.int64) - 1, 0,
                          len(PLOIDY_CLASSES) - 1)
            cls[mk] = _PLOIDY_OFFSET + idx
    return cls


class TissueRenderer:
    """Draws one section: the fixed background is prepared once, each frame only paints.

    Args:
        geometry: the section (labels, zones, outside mask).
    """

    def __init__(self, geometry: Geometry):
        self.geometry = geometry
        labels = geometry.labels
        self.shape = labels.shape
        self._marrow = (labels == MARROW).ravel()
        self._marrow_idx = np.flatnonzero(self._marrow)
        base = np.zeros((labels.size, 3), np.uint8)
        flat = labels.ravel()
        base[flat == BONE] = BONE_RGB
        base[flat == SINUSOID] = SINUSOID_RGB
        if geometry.outside is not None:
            base[geometry.outside.ravel()] = OUTSIDE_RGB
        self._base = base
        zones = base.copy()
        zone = geometry.radial_zone.ravel()
        for code, name in enumerate(("endosteal", "intermediate", "central")):
            zones[zone == code] = ZONE_RGB[name]
        self._zones = zones
        self._frame = np.empty_like(base)

    def render(self, cells: CellTable, field: np.ndarray | None = None,
               vmax: float | None = None) -> np.ndarray:
        """One frame as a (ny, nx, 3) uint8 RGB array (a view of an internal buffer).

        Args:
            cells: the cell table (living rows are drawn, dead rows skipped).
            field: (ny, nx) concentrations to draw under the cells, or None for the zones.
            vmax: concentration drawn darkest (normalised units); default the field's maximum
                over marrow.

        Returns:
            The frame; copy it if it must outlive the next call.
        """
        out = self._frame
        if field is None:
            out[:] = self._zones
        else:
            out[:] = self._base
            values = np.asarray(field).ravel()[self._marrow_idx]
            top = float(values.max()) if vmax is None and values.size else (vmax or 0.0)
            if top > 0 and np.isfinite(top):
                scaled = np.clip(values * (255.0 / top), 0.0, 255.0).astype(np.uint8)
            else:
                scaled = np.zeros(values.size, np.uint8)
            out[self._marrow_idx] = FIELD_LUT[scaled]
        n = len(cells)
        if n:
            alive = cells["alive"]
            vox = cells["voxel"][alive]
            out[vox] = CLASS_LUT[cell_classes(cells)[alive]]
        return out.reshape(*self.shape, 3)

    def field_max(self, field: np.ndarray) -> float:
        """Largest value of a field over marrow voxels (the colour bar's top)."""
        values = np.asarray(field).ravel()[self._marrow_idx]
        return float(values.max()) if values.size else 0.0


def encode_png(rgb: np.ndarray, scale: int = 1) -> bytes:
    """PNG bytes of an RGB frame, optionally enlarged ``scale``× by pixel repetition.

    Compression level 1: the image is small and mostly flat colour, so the fastest zlib level
    is within a few percent of the smallest file at a fraction of the time.
    """
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def legend_entries(cells: CellTable) -> list[tuple[str, tuple[int, int, int], int]]:
    """(label, colour, count) for every colour class present among the living cells.

    Kinds with a Ki67 state get two entries (cycling / G0) once the phase column exists;
    megakaryocytes one per ploidy class present.
    """
    alive = cells["alive"]
    counts = np.bincount(cell_classes(cells)[alive], minlength=CLASS_LUT.shape[0])
    has_phase = PHASE_COLUMN in cells.columns
    entries = []
    for kind, code in KINDS.items():
        style = KIND_STYLES[kind]
        if kind == "mk" and PLOIDY_COLUMN in cells.columns:
            for i, ploidy in enumerate(PLOIDY_CLASSES):
                c = int(counts[_PLOIDY_OFFSET + i])
                if c:
                    entries.append((f"{style.label} {ploidy}N", MK_PLOIDY_RGB[i], c))
            continue
        if style.g0_rgb is not None and has_phase:
            for label, cls, rgb in ((f"{style.label} cycling (Ki67+)", code, style.rgb),
                                    (f"{style.label} G0 (Ki67−)", _G0_OFFSET + code,
                                     style.g0_rgb)):
                if counts[cls]:
                    entries.append((label, rgb, int(counts[cls])))
            continue
        if counts[code]:
            entries.append((style.label, style.rgb, int(counts[code])))
    return entries


def background_entries(field_label: str | None) -> list[tuple[str, tuple[int, int, int]]]:
    """(label, colour) of the background classes drawn under the cells."""
    entries = [("Bone", BONE_RGB), ("Sinusoid", SINUSOID_RGB)]
    if field_label is None:
        entries += [(f"{name.capitalize()} zone", rgb) for name, rgb in ZONE_RGB.items()]
    return entries


def rgb_hex(rgb: tuple[int, int, int] | np.ndarray) -> str:
    """``#rrggbb`` of an RGB triple."""
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


__all__ = ["CLASS_LUT", "FIELD_LUT", "G0_CODE", "KIND_STYLES", "KindStyle", "MK_PLOIDY_RGB",
           "PHASE_COLUMN", "PLOIDY_CLASSES", "PLOIDY_COLUMN", "TissueRenderer",
           "background_entries", "cell_classes", "colormap_lut", "encode_png",
           "legend_entries", "rgb_hex"]
