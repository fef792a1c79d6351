"""Blood counts: platelets fed by the simulated section, white and red cells by normal marrow.

Platelets (MODEL.md §3, hypothesis 9). The section's shed platelets (``megakaryocytes`` module)
are scaled to the whole animal, ``scale = blood.marrow_cells_whole_animal / marrow voxels`` (one
cell per voxel, MODEL.md §2), and diluted in ``blood.blood_volume_ul``. Circulating platelets
age through ``platelet_age_compartments`` equal compartments of total mean residence
``platelet_lifespan_d`` (a gamma-distributed lifespan, as in transit-compartment models), so
with many compartments clearance approaches the fixed senescent lifespan of platelets (4.5 d
mouse, Ault & Knowles 1995; 9–10 d human, Harker 1977). A transfusion adds a bolus spread over
the age compartments (stored platelets have mixed ages). How the scale was calibrated to the
healthy-mouse count is in ``docs/calibration.md``.

White and red cells follow Friberg 2002 (J Clin Oncol 20:4713): a proliferating compartment,
three transit compartments (``k_tr = 4 / MTT``) and the circulation,

    dProl/dt = k_tr Prol [(1 − E) f (Circ0 / Circ)^γ − 1],   dT_i/dt = k_tr (T_{i−1} − T_i),
    dCirc/dt = (Circ0 T_3 − Circ) / lifespan,

with Prol and T_i relative to their healthy steady state. ``E`` is the drugs' combined
off-target myelotoxicity (``pk`` module) and ``f`` the normal marrow fraction: marrow voxels not
taken by displacing kinds (``blood.displacing_kinds``), relative to the start of the run. So
anything that displaces or poisons normal marrow lowers WBC and RBC, with the feedback γ.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..cells import KINDS
from ..geometry import MARROW
from .base import BiologyModule


class FribergLineage:
    """One Friberg transit chain (state relative to steady state; Circ in cells per µL).

    Args:
        circ0_per_ul: steady-state count (per µL).
        mtt_h: mean transit time through Prol and the three transit compartments (h).
        gamma: feedback exponent.
        lifespan_h: mean residence in the circulation (h).
    """

    def __init__(self, circ0_per_ul: float, mtt_h: float, gamma: float, lifespan_h: float):
        self.circ0 = float(circ0_per_ul)
        self.k_tr = 4.0 / float(mtt_h)
        self.gamma = float(gamma)
        self.k_out = 1.0 / float(lifespan_h)
        self.y = np.ones(4)        # Prol, T1, T2, T3 relative to steady state
        self.circ = self.circ0

    def advance(self, dt_h: float, effect: float, capacity: float) -> None:
        """Advance by ``dt_h`` with drug effect ``E`` (0–1) and normal-marrow fraction ``f``.

        Explicit Euler sub-steps short enough (rate × step ≤ 0.05) to be stable and accurate.
        """
        # the feedback can push the proliferation rate a few times above k_tr
        rate = max(3.0 * self.k_tr, self.k_out)
        n = max(1, int(np.ceil(dt_h * rate / 0.05)))
        h = dt_h / n
        y = self.y
        for _ in range(n):
            feedback = (self.circ0 / max(self.circ, 1e-9 * self.circ0)) ** self.gamma
            d0 = self.k_tr * y[0] * ((1.0 - effect) * capacity * feedback - 1.0)
            d1 = self.k_tr * (y[0] - y[1])
            d2 = self.k_tr * (y[1] - y[2])
            d3 = self.k_tr * (y[2] - y[3])
            dc = self.k_out * (self.circ0 * y[3] - self.circ)
            y[0] += h * d0
            y[1] += h * d1
            y[2] += h * d2
            y[3] += h * d3
            self.circ += h * dc
        np.maximum(y, 0.0, out=y)
        self.circ = max(self.circ, 0.0)


class PlateletPool:
    """Circulating platelets in ``n`` age compartments (per µL).

    Args:
        lifespan_h: mean platelet lifespan (h).
        n: number of age compartments (1 = random, first-order clearance).
    """

    def __init__(self, lifespan_h: float, n: int):
        self.k = n / float(lifespan_h)
        self.p = np.zeros(int(n))

    @property
    def total(self) -> float:
        return float(self.p.sum())

    def set_steady_state(self, production_per_ul_per_h: float) -> None:
        """The steady state of a constant production: each compartment holds S / k."""
        self.p[:] = production_per_ul_per_h / self.k

    def add_bolus(self, per_ul: float) -> None:
        self.p += per_ul / self.p.size

    def advance(self, dt_h: float, production_per_ul_per_h: float) -> None:
        """Production enters the youngest compartment; exact for constant input over the step
        when n = 1, and first-order accurate in sub-steps of ≤ 0.05 / k otherwise."""
        n = max(1, int(np.ceil(dt_h * self.k / 0.05)))
        h = dt_h / n
        for _ in range(n):
            out = self.k * self.p
            inflow = np.empty_like(out)
            inflow[0] = production_per_ul_per_h
            inflow[1:] = out[:-1]
            self.p += h * (inflow - out)
        np.maximum(self.p, 0.0, out=self.p)


class BloodModule(BiologyModule):
    """Platelet, white-cell and red-cell counts of the whole animal (not on the lattice)."""

    name = "blood"
    section = "blood"

    def __init__(self, engine):
        super().__init__(engine)
        cfg = engine.scenario.data["blood"]
        self.n_marrow = int((engine.geometry.labels == MARROW).sum())
        self.scale = float(cfg["marrow_cells_whole_animal"]) / max(self.n_marrow, 1)
        self.platelets = PlateletPool(float(cfg["platelet_lifespan_d"]) * 24.0,
                                      int(cfg["platelet_age_compartments"]))
        self.wbc = FribergLineage(**{k: cfg["wbc"][k] for k in
                                     ("circ0_per_ul", "mtt_h", "gamma", "lifespan_h")})
        self.rbc = FribergLineage(**{k: cfg["rbc"][k] for k in
                                     ("circ0_per_ul", "mtt_h", "gamma", "lifespan_h")})
        self._free_ref: float | None = None
        self._started = False
        self.capacity = 1.0

    # -- helpers ---------------------------------------------------------------------------------
    def _module(self, name: str):
        return next((m for m in self.engine.modules if m.name == name), None) \
            if hasattr(self.engine, "modules") else None

    def _free_marrow(self) -> float:
        cells = self.engine.cells
        kinds = [KINDS[k] for k in self.engine.scenario.data["blood"]["displacing_kinds"]]
        displacing = np.isin(cells["kind"], kinds) & cells["alive"]
        return float(self.n_marrow - int(displacing.sum()))

    def production_per_ul_per_h(self, shed_section_per_h: float) -> float:
        """Whole-animal platelet production per µL of blood from the section's shedding."""
        return shed_section_per_h * self.scale / float(
            self.engine.scenario.data["blood"]["blood_volume_ul"])

    def _start(self) -> None:
        """At the first use (all modules exist): platelets at the steady state of the
        megakaryocyte module's spin-up production, and the normal-marrow reference."""
        if self._started:
            return
        self._started = True
        self._free_ref = self._free_marrow()
        mk = self._module("megakaryocytes")
        if mk is not None:
            self.platelets.set_steady_state(self.production_per_ul_per_h(mk.spinup_shed_per_h))
        else:
            cfg = self.engine.scenario.data["blood"]
            self.platelets.set_steady_state(float(cfg["platelets_initial_per_ul"]) / (
                float(cfg["platelet_lifespan_d"]) * 24.0))

    # -- phase -----------------------------------------------------------------------------------
    def phase_handlers(self) -> dict[str, Callable[[], None]]:
        return {"blood": self.step}

    def step(self) -> None:
        self._start()
        eng = self.engine
        dt_h = eng.dt_h
        cfg = eng.scenario.data["blood"]
        t0, t1 = eng.time_h, eng.time_h + dt_h
        for tx in cfg["transfusions"]:
            if t0 - 1e-9 <= float(tx["time_h"]) < t1 - 1e-9:
                self.platelets.add_bolus(float(tx["platelets_per_ul"]))
        mk = self._module("megakaryocytes")
        shed = mk.shed_per_h if mk is not None else 0.0
        self.platelets.advance(dt_h, self.production_per_ul_per_h(shed))
        pk = self._module("pk")
        effect = pk.myelotoxicity if pk is not None else 0.0
        self.capacity = self._free_marrow() / max(self._free_ref or 1.0, 1.0)
        self.wbc.advance(dt_h, effect, self.capacity)
        self.rbc.advance(dt_h, effect, self.capacity)

    # -- metrics ---------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Callable[[], np.ndarray]]:
        return {
            "platelets_per_ul": self._all_zone(lambda: self.platelets.total),
            "wbc_per_ul": self._all_zone(lambda: self.wbc.circ),
            "rbc_per_ul": self._all_zone(lambda: self.rbc.circ),
            "normal_marrow_frac": self._all_zone(lambda: self.capacity),
        }

    def _all_zone(self, value: Callable[[], float]) -> Callable[[], np.ndarray]:
        # The compartments start lazily (after the lineage spin-up): start them before reading.
        def started() -> float:
            self._start()
            return value()
        return super()._all_zone(started)


__all__ = ["BloodModule", "FribergLineage", "PlateletPool"]
