"""Biology modules: each one piece of MODEL.md, plugged into the engine.

A module declares its cell columns and places its cells when constructed, handles some of the
engine's phases (``PHASE_ORDER`` in ``marrow_abm.engine``) and contributes per-zone metrics. The
engine uses every module of ``MODULES`` whose ``applies(scenario)`` is true, in this order; the
order is part of the model (e.g. niche cells are placed before leukemic cells), so append new
modules at the place MODEL.md gives them.
"""

from .base import BiologyModule
from .blood import BloodModule
from .leukemia import LeukemiaModule
from .megakaryocytes import MegakaryocyteModule
from .niche import NicheModule
from .niche_dynamics import NicheDynamicsModule
from .pk import PKModule

MODULES: tuple[type[BiologyModule], ...] = (NicheModule, NicheDynamicsModule, LeukemiaModule,
                                         MegakaryocyteModule, PKModule, BloodModule)

__all__ = ["MODULES", "BiologyModule", "BloodModule", "LeukemiaModule", "MegakaryocyteModule",
           "NicheDynamicsModule", "NicheModule", "PKModule"]
