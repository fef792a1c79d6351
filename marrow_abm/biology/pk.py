"""Drug pharmacokinetics and target inhibition (MODEL.md §7, seed 004).

Each drug of the drug table (``pk.drug_table``, validated into ``scenario.data["drugs"]``) has
per-species one-compartment PK with first-order oral absorption (or an IV bolus): amounts in
mg/kg, ``C = A_central / V`` in mg/L. The regimen (``pk.regimen``, one of ``pk.regimens``) lists
doses. The state advances exactly (closed-form solution between doses), so results do not depend
on ``dt_h`` except through when the concentration is read.

Target inhibition is a Hill function of the *free* plasma concentration,
``I = C^h / (C^h + IC50^h)`` (MODEL.md §7); drugs sharing a target combine by Bliss independence,
``I = 1 − Π(1 − I_d)`` (assumed). Off-target myelotoxicity (the neutropenia of mitotic-kinase
inhibitors) is a separate per-drug Emax function of free concentration, combined the same way;
``marrow_abm.biology.blood`` applies it to normal progenitors. Nothing here knows what a drug
"should" do: the megakaryocyte rule reads only Aurora A, Aurora B and PLK1 inhibition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..schemas.mds import TARGETS
from .base import BiologyModule


def hill(conc_nm: float, ic50_nm: float, hill_n: float) -> float:
    """Fractional effect C^h / (C^h + IC50^h) (0 when C = 0).

    Args:
        conc_nm: free concentration (nM).
        ic50_nm: half-maximal concentration (nM).
        hill_n: Hill coefficient.
    """
    if conc_nm <= 0.0:
        return 0.0
    r = (conc_nm / ic50_nm) ** hill_n
    return r / (1.0 + r)


def advance_one_compartment(gut: float, central: float, ka_per_h: float, kel_per_h: float,
                            dt_h: float) -> tuple[float, float]:
    """Exact solution of dG/dt = −ka G, dA/dt = ka G − k A over ``dt_h``.

    Args:
        gut: amount in the absorption depot (mg/kg).
        central: amount in the central compartment (mg/kg).
        ka_per_h: absorption rate constant (1/h).
        kel_per_h: elimination rate constant CL/V (1/h).
        dt_h: interval (h).

    Returns:
        (gut, central) after ``dt_h``.
    """
    if dt_h <= 0.0:
        return gut, central
    eka = math.exp(-ka_per_h * dt_h)
    ek = math.exp(-kel_per_h * dt_h)
    if abs(ka_per_h - kel_per_h) > 1e-9 * max(ka_per_h, kel_per_h):
        transfer = gut * ka_per_h / (ka_per_h - kel_per_h) * (ek - eka)
    else:  # the ka = k limit of the expression above
        transfer = gut * ka_per_h * dt_h * ek
    return gut * eka, central * ek + transfer


def dose_times_h(dose: Mapping) -> np.ndarray:
    """Times (h) of one dosing line of a regimen: ``first_h + j * interval_h``, j < n_doses."""
    return float(dose["first_h"]) + float(dose["interval_h"]) * np.arange(int(dose["n_doses"]))


class DrugState:
    """PK state of one drug in one animal.

    Args:
        name: drug name in the table.
        entry: its validated drug-table entry.
        species: ``mouse`` or ``human`` (which PK block to use).
    """

    def __init__(self, name: str, entry: Mapping, species: str):
        self.name = name
        self.entry = entry
        pk = entry["pk"][species]
        self.ka_per_h = float(pk["ka_per_h"])
        self.v_l_per_kg = float(pk["v_l_per_kg"])
        self.kel_per_h = float(pk["cl_l_per_h_per_kg"]) / self.v_l_per_kg
        self.fu = float(pk["fu"])
        self.lag_h = float(pk["lag_h"])
        self.mw = float(entry["mw_g_per_mol"])
        self.gut = 0.0
        self.central = 0.0

    def give(self, dose_mg_per_kg: float, route: str) -> None:
        """Add a dose: oral into the absorption depot, IV straight into plasma."""
        if route == "iv":
            self.central += dose_mg_per_kg
        else:
            self.gut += dose_mg_per_kg

    def advance(self, dt_h: float) -> None:
        self.gut, self.central = advance_one_compartment(self.gut, self.central, self.ka_per_h,
                                                         self.kel_per_h, dt_h)

    @property
    def plasma_um(self) -> float:
        """Total plasma concentration (µM): (mg/kg ÷ L/kg) = mg/L, ÷ MW × 1000."""
        return self.central / self.v_l_per_kg / self.mw * 1000.0

    @property
    def free_nm(self) -> float:
        """Unbound plasma concentration (nM)."""
        return self.plasma_um * self.fu * 1000.0

    def inhibition(self, target: str) -> float:
        spec = self.entry["targets"].get(target)
        if spec is None:
            return 0.0
        return hill(self.free_nm, float(spec["ic50_nm"]), float(spec["hill"]))

    def myelotoxicity(self) -> float:
        tox = self.entry["myelotoxicity"]
        return float(tox["emax"]) * hill(self.free_nm, float(tox["ec50_nm"]), float(tox["hill"]))


def regimen_doses(data: Mapping) -> list[tuple[float, str, float, str]]:
    """The scenario's current regimen as sorted (time_h, drug, dose_mg_per_kg, route)."""
    pk = data["pk"]
    regimen = pk["regimens"][pk["regimen"]]
    out = [(float(t), d["drug"], float(d["dose_mg_per_kg"]), d["route"])
           for d in regimen["doses"] for t in dose_times_h(d)]
    return sorted(out, key=lambda x: x[0])


def simulate_exposure(drugs: Mapping[str, Mapping], doses: Sequence[tuple[float, str, float, str]],
                      species: str, times_h: np.ndarray) -> dict[str, np.ndarray]:
    """Total plasma concentration (µM) of each dosed drug at ``times_h`` (ascending, h).

    The same closed-form stepping as the engine's ``pk`` phase, for exposure curves (claim M5)
    and tests.

    Args:
        drugs: validated drug table (name -> entry).
        doses: (time_h, drug, dose_mg_per_kg, route), e.g. from ``regimen_doses``.
        species: ``mouse`` or ``human``.
        times_h: sample times (h), ascending.
    """
    names = sorted({d[1] for d in doses})
    states = {n: DrugState(n, drugs[n], species) for n in names}
    out = {n: np.zeros(len(times_h)) for n in names}
    events = sorted(((t + states[d].lag_h, d, dose, route) for t, d, dose, route in doses),
                    key=lambda x: x[0])
    t, k = 0.0, 0
    for i, t_next in enumerate(np.asarray(times_h, float)):
        while k < len(events) and events[k][0] <= t_next:
            for s in states.values():
                s.advance(events[k][0] - t)
            t = events[k][0]
            states[events[k][1]].give(events[k][2], events[k][3])
            k += 1
        for s in states.values():
            s.advance(t_next - t)
        t = t_next
        for n, s in states.items():
            out[n][i] = s.plasma_um
    return out


class PKModule(BiologyModule):
    """Advances every drug's PK each step and publishes target inhibition and myelotoxicity.

    Other modules read ``inhibition`` (target -> fraction inhibited, 0–1) and ``myelotoxicity``
    (combined fractional loss of normal-progenitor proliferation, 0–1) after the ``pk`` phase.
    """

    name = "pk"
    section = "pk"

    def __init__(self, engine):
        super().__init__(engine)
        data = engine.scenario.data
        species = data["pk"]["species"]
        # A drug without PK for this species cannot be dosed (the scenario check says so); it
        # keeps a metric column (always 0) so every run of the topic has the same columns.
        self.drugs = {n: DrugState(n, e, species) for n, e in sorted(data["drugs"].items())
                      if species in e["pk"]}
        self.drug_names = sorted(data["drugs"])
        self.inhibition: dict[str, float] = {t: 0.0 for t in TARGETS}
        self.myelotoxicity = 0.0

    def phase_handlers(self) -> dict[str, Callable[[], None]]:
        return {"pk": self.step}

    def step(self) -> None:
        """Give the doses reaching the body in [t, t + dt) (dose time + absorption lag) at their
        exact times, then advance to t + dt."""
        eng = self.engine
        t0, t1 = eng.time_h, eng.time_h + eng.dt_h
        t = t0
        # Read every step: a user may change the regimen while running (BiologyModule contract).
        doses = sorted(((time_h + (self.drugs[d].lag_h if route == "oral" else 0.0), d, dose, route)
                        for time_h, d, dose, route in regimen_doses(eng.scenario.data)),
                       key=lambda x: x[0])
        for time_h, drug, dose, route in doses:
            if t0 - 1e-9 <= time_h < t1 - 1e-9:
                for s in self.drugs.values():
                    s.advance(time_h - t)
                t = max(time_h, t)
                self.drugs[drug].give(dose, route)
        for s in self.drugs.values():
            s.advance(t1 - t)
        self.inhibition = {
            target: 1.0 - float(np.prod([1.0 - s.inhibition(target) for s in self.drugs.values()]))
            for target in TARGETS}
        self.myelotoxicity = 1.0 - float(np.prod([1.0 - s.myelotoxicity()
                                                  for s in self.drugs.values()]))

    def metrics(self) -> dict[str, Callable[[], np.ndarray]]:
        out: dict[str, Callable[[], np.ndarray]] = {}
        for name in self.drug_names:
            out[f"drug_{name}_plasma_um"] = self._all_zone(
                lambda n=name: self.drugs[n].plasma_um if n in self.drugs else 0.0)
        for target in TARGETS:
            out[f"inhibition_{target}"] = self._all_zone(lambda t=target: self.inhibition[t])
        return out



__all__ = [
    "TARGETS",
    "DrugState",
    "PKModule",
    "advance_one_compartment",
    "dose_times_h",
    "hill",
    "regimen_doses",
    "simulate_exposure",
]
