"""What is at one voxel: tissue label, zone, local field values and the cell there, if any.

Used by the app when the user clicks the tissue image. Every cell column is reported, so the
phase, ploidy, Tgfbr2 or pSmad columns added by the biology issues appear without a change here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..cells import KIND_NAMES
from ..geometry import LABEL_NAMES, ZONES
from .render import G0_CODE, PHASE_COLUMN

if TYPE_CHECKING:
    from ..engine import Engine

#: Cell columns not worth showing (bookkeeping, or repeated in the voxel part).
_HIDDEN_COLUMNS = {"alive", "voxel"}


def describe_voxel(engine: Engine, iy: int, ix: int) -> dict[str, Any]:
    """Facts about voxel (iy, ix) of the engine's section.

    Args:
        engine: the running engine.
        iy: row (0 at the top of the picture).
        ix: column.

    Returns:
        A dict with ``voxel`` (row, column, position in µm, tissue, zone, perivascular,
        distances to bone and sinusoid in µm), ``fields`` (label -> value, normalised) and
        ``cell`` (column -> value, or None on an empty voxel). Outside the section: ``{}``.
    """
    geom = engine.geometry
    ny, nx = geom.labels.shape
    if not (0 <= iy < ny and 0 <= ix < nx):
        return {}
    label = int(geom.labels[iy, ix])
    zone_code = int(geom.radial_zone[iy, ix])
    tissue = LABEL_NAMES[label]
    if geom.outside is not None and geom.outside[iy, ix]:
        tissue = "outside the bone"
    voxel = {
        "row, column": f"{iy}, {ix}",
        "position (µm)": f"{iy * geom.dx_um:g}, {ix * geom.dx_um:g}",
        "tissue": tissue,
        "zone": ZONES[zone_code] if zone_code >= 0 else "—",
        "perivascular": bool(geom.perivascular[iy, ix]),
        "distance to bone (µm)": round(float(geom.dist_bone_um[iy, ix]), 1),
        "distance to sinusoid (µm)": round(float(geom.dist_sinusoid_um[iy, ix]), 1),
    }
    fields = {}
    for name in engine.fields.names:
        label_text = engine.scenario.data["fields"][name].get("label", name)
        fields[label_text] = float(engine.fields.values[name][iy, ix])
    cell = None
    flat = iy * nx + ix
    row = int(engine.cells.occupant[flat])
    if row >= 0 and bool(engine.cells["alive"][row]):
        cell = {}
        for col in engine.cells.columns:
            if col in _HIDDEN_COLUMNS:
                continue
            value = engine.cells[col][row]
            if col == "kind":
                value = KIND_NAMES[int(value)]
            elif isinstance(value, np.bool_):
                value = bool(value)
            elif isinstance(value, np.integer):
                value = int(value)
            elif isinstance(value, np.floating):
                value = float(value)
            cell[col] = value
        if PHASE_COLUMN in cell:
            cell["Ki67"] = "negative (G0)" if cell[PHASE_COLUMN] == G0_CODE else "positive"
        if "ploidy" in cell:
            cell["ploidy"] = f"{cell['ploidy']:g}N"
    return {"voxel": voxel, "fields": fields, "cell": cell}


__all__ = ["describe_voxel"]
