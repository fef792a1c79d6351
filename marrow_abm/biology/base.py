"""The protocol every biology module follows (see ``marrow_abm.biology``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..engine import Engine
    from ..scenario import Scenario


class BiologyModule:
    """Base class: one piece of biology.

    Subclasses set ``name``, override ``applies`` when the scenario may leave them out, declare
    columns and place cells in ``__init__`` (after calling ``super().__init__``), and return
    their phase handlers and metrics. Handlers take no arguments and act on ``self.engine``;
    they must read any key a user may change while running (doses, interventions) from
    ``self.engine.scenario.data`` at every call, not cache it.

    Args:
        engine: the engine the module belongs to (geometry, fields, cells, streams, zones).
    """

    name = "base"
    #: Top-level scenario section that switches the module on (None: always on).
    section: str | None = None

    @classmethod
    def applies(cls, scenario: Scenario) -> bool:
        """Whether this scenario uses the module: it has the module's ``section``."""
        return cls.section is None or cls.section in scenario.data

    def __init__(self, engine: Engine):
        self.engine = engine

    def phase_handlers(self) -> dict[str, Callable[[], None]]:
        """Phase name (from ``PHASE_ORDER``) -> handler run in that phase, after the core's."""
        return {}

    def metrics(self) -> dict[str, Callable[[], np.ndarray]]:
        """Metric name -> function returning one value per report zone (``engine.zones``)."""
        return {}

    def _all_zone(self, value: Callable[[], float]) -> Callable[[], np.ndarray]:
        """A metric of the whole section or animal (blood counts, drug levels, ploidy shares):
        reported in zone ``all``, NaN in the spatial zones."""
        def fn() -> np.ndarray:
            out = np.full(len(self.engine.zones.names), np.nan)
            out[self.engine.zones.names.index("all")] = value()
            return out
        return fn
