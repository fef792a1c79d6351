"""Signals of the AML rules that several modules compute: the neighbour census, zone membership
and the leukemic burden (MODEL.md section 6: contact, zone, local leukemic density, burden)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..cells import KINDS
from ..geometry import MARROW
from ..kernels.leukemia import neighbour_census

if TYPE_CHECKING:
    from ..engine import Engine

LEUKEMIC_CODES = (KINDS["lsc"], KINDS["blast"])
ZONE_SIGNALS = ("endosteal", "intermediate", "central", "perivascular")


def census(engine: Engine, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(BLC, MSC, leukemic) neighbour counts (0–8) of the given cell rows."""
    cells = engine.cells
    ny, nx = engine.geometry.labels.shape
    m = rows.size
    nb, nm, nl = np.empty(m), np.empty(m), np.empty(m)
    if m:
        neighbour_census(cells["voxel"][rows], cells.occupant, cells["kind"], cells["alive"],
                         nx, ny, KINDS["blc"], KINDS["msc"], KINDS["lsc"], KINDS["blast"],
                         nb, nm, nl)
    return nb, nm, nl


def zone_maps(engine: Engine) -> dict[str, np.ndarray]:
    """Flat uint8 0/1 maps of each zone (cached on the engine, fixed for a run).

    uint8, not float64: 4 instead of 32 bytes per voxel on a 10^6-voxel section; callers cast
    the few gathered values (``m[vox].astype(np.float64)``), which gives the same 0.0/1.0.
    """
    cache = getattr(engine, "_aml_zone_maps", None)
    if cache is None:
        masks = engine.geometry.zone_masks()
        cache = {z: masks[z].ravel().astype(np.uint8) for z in ZONE_SIGNALS}
        engine._aml_zone_maps = cache
    return cache


def n_marrow(engine: Engine) -> int:
    """Marrow voxels of the section."""
    n = getattr(engine, "_aml_n_marrow", None)
    if n is None:
        n = engine._aml_n_marrow = int(np.count_nonzero(engine.geometry.labels == MARROW))
    return n


def burden(engine: Engine) -> float:
    """Leukemic fraction of marrow voxels (LSC + blasts)."""
    cells = engine.cells
    k = cells["kind"]
    n = np.count_nonzero(((k == LEUKEMIC_CODES[0]) | (k == LEUKEMIC_CODES[1])) & cells["alive"])
    return n / max(n_marrow(engine), 1)


def free_map(engine: Engine) -> np.ndarray:
    """uint8 flat map, 1 on marrow voxels without a cell (normal tissue).

    It runs twice per step, so the marrow mask is cached on the engine (the labels are fixed
    for a run) and the bool result is viewed as uint8 (0/1), not converted: two passes over the
    grid instead of four (faster than a one-pass numba loop, measured).
    """
    marrow = getattr(engine, "_aml_marrow_mask", None)
    if marrow is None:
        marrow = engine._aml_marrow_mask = engine.geometry.labels.ravel() == MARROW
    free = engine.cells.occupant < 0
    free &= marrow
    return free.view(np.uint8)
