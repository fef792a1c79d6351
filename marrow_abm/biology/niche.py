"""Niche cells: Alcam+ bone-lining cells (BLC) and CD51+CD140a+ MSC (MODEL.md section 3).

BLC sit on marrow voxels touching bone (endosteal niche; Nguyen, Yao, Arai et al., Leukemia
2025; Nakamura 2010 Blood), MSC on marrow voxels touching a sinusoid (vascular niche). Both are
fixed. Their constant secretion and uptake rates (``cells.<kind>.secretion_per_h`` /
``uptake_per_h``) are applied by the engine's core ``secrete`` phase for every kind.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..cells import KINDS
from ..geometry import BONE, MARROW, SINUSOID
from .base import BiologyModule

#: Niche kinds in placement order, with the surface they sit on and the scenario key giving the
#: fraction of that surface they occupy.
NICHE_PLACEMENT: dict[str, tuple[int, str]] = {
    "blc": (BONE, "frac_bone_surface"),
    "msc": (SINUSOID, "frac_sinusoid_surface"),
}


class NicheModule(BiologyModule):
    """Places BLC and MSC and counts them per zone."""

    name = "niche"

    def __init__(self, engine):
        super().__init__(engine)
        self._place()

    def _place(self) -> None:
        """Each kind occupies a scenario-given fraction of its surface, chosen uniformly at random
        from its own stream, so changing one kind's density never moves the other's cells.
        BLC are placed first; MSC take sinusoid-touching voxels still free."""
        eng = self.engine
        cells_cfg = eng.scenario.data["cells"]
        marrow = eng.geometry.labels.ravel() == MARROW
        for kind, (surface, frac_key) in NICHE_PLACEMENT.items():
            if kind not in cells_cfg:
                continue
            touching = eng.geometry.touching(surface).ravel() & marrow
            free = np.flatnonzero(touching & (eng.cells.occupant < 0))
            n = int(round(float(cells_cfg[kind][frac_key]) * free.size))
            rng = eng.streams[f"placement.{kind}"]
            chosen = np.sort(rng.choice(free, size=n, replace=False)) if n else free[:0]
            eng.cells.add(kind, chosen, time_h=eng.time_h)

    def metrics(self) -> dict[str, Callable[[], np.ndarray]]:
        return {f"n_{kind}": self._counter(kind) for kind in NICHE_PLACEMENT}

    def _counter(self, kind: str) -> Callable[[], np.ndarray]:
        code = KINDS[kind]

        def count() -> np.ndarray:
            cells = self.engine.cells
            return self.engine.zones.count(cells["voxel"][(cells["kind"] == code) & cells["alive"]])

        return count
