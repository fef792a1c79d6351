"""Megakaryopoiesis: MK progenitors, endomitosis, maturation, drift to sinusoids, shedding.

The rules (MODEL.md §3, §6 hypotheses 7–9; keys under ``[megakaryocytes]``):

- **Commitment.** MK progenitors (``mkp``, 2N) arise from the implicit normal marrow at
  ``influx_per_marrow_voxel_per_h`` on random free marrow voxels.
- **Cycles.** Every MK-lineage cell cycles every ``cycle_h`` (± ``cycle_jitter``) for a lineage
  budget of ``max_cycles`` mitoses. Each mitosis ends in *cytokinesis* (two cells, ploidy kept;
  the daughter takes a free neighbouring marrow voxel, or the mitosis waits a step) or
  *endomitosis* (ploidy doubles; the cell is now an ``mk``). The probability of endomitosis is a
  logistic function of the ploidy (commitment raises the odds with each doubling) and of the
  effective activities of Aurora A, Aurora B and PLK1, each = genotype multiplier ×
  (1 − drug inhibition) (kernel ``endomitosis_probability``). The MDS genotype is only a scenario
  key: ``genotype_activity`` > 1 (the E2F/mitosis signature of thrombocytopenic MDS, Kobayashi
  2025). Drug inhibition comes from the ``pk`` module; no rule names a drug.
- **Maturation.** After the last cycle (or at ``max_ploidy_n``) the cell matures for
  ``maturation_h`` while drifting one voxel per step down the distance to the nearest sinusoid.
  Beside a sinusoid it completes maturation with a probability rising with ploidy (Levine 1982)
  and sheds ``platelets_per_ploidy_n × ploidy`` platelets over ``shedding_h`` (∝ ploidy:
  Winkelmann 1987), then dies; otherwise it dies immature.
- **Loss.** MK progenitors die at ``mkp_death_per_h`` (ineffective haematopoiesis, assumed).
- **Size.** Diameter = ``diameter_16n_um`` × (ploidy / 16)^(1/3): volume ∝ ploidy (Levine 1982).
  Each MK occupies one voxel whatever its diameter (a documented simplification: the diameter is
  an attribute for reporting, not a footprint).

The run starts from the lineage's own steady state: ``spinup_days`` of these rules (no drugs)
are simulated when the module is built, before t = 0. ``culture_ploidy`` runs the same decision
rule without space or time (the in-vitro culture of the seed paper).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ..cells import KINDS
from ..geometry import MARROW, SINUSOID
from ..kernels.megakaryocytes import (
    CYCLING,
    EV_DIE_IMMATURE,
    EV_DIE_SHED,
    EV_MITOSIS,
    MATURING,
    choose_free_neighbour,
    drift_step,
    endomitosis_probability,
    mk_advance,
)
from .base import BiologyModule

#: Ploidy classes reported (N).
PLOIDY_CLASSES: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)
#: The mitotic kinases of the cytokinesis/endomitosis decision, in kernel argument order.
KINASES: tuple[str, ...] = ("aurka", "aurkb", "plk1")


def kinase_activities(cfg: Mapping, inhibition: Mapping[str, float] | None) -> tuple[float, ...]:
    """Effective activity of each mitotic kinase: genotype multiplier × (1 − inhibition).

    Args:
        cfg: the ``[megakaryocytes]`` table.
        inhibition: target -> fraction inhibited (0–1), or None without drugs.
    """
    inh = inhibition or {}
    return tuple(float(cfg["genotype_activity"][k]) * (1.0 - float(inh.get(k, 0.0)))
                 for k in KINASES)


def p_endomitosis(cfg: Mapping, ploidy_n: np.ndarray, activities: tuple[float, ...]) -> np.ndarray:
    """Endomitosis probability of each cell at a mitosis (see the kernel)."""
    out = np.empty(len(ploidy_n), np.float64)
    w = cfg["kinase_weight"]
    endomitosis_probability(np.asarray(ploidy_n, np.float64), *activities,
                            float(cfg["logit_endo_base"]), float(cfg["logit_endo_per_doubling"]),
                            float(w["aurka"]), float(w["aurkb"]), float(w["plk1"]), out)
    return out


def culture_ploidy(cfg: Mapping, inhibition: Mapping[str, float] | None, n_founders: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Final ploidy (N) of every MK made by ``n_founders`` progenitors in culture.

    The in-vitro mode of the same rule: no space (cytokinesis always finds room), no death, a
    constant drug exposure; each lineage runs its ``max_cycles`` mitoses.

    Args:
        cfg: the ``[megakaryocytes]`` table.
        inhibition: constant target inhibition (0–1) or None.
        n_founders: number of 2N progenitors seeded.
        rng: generator for the cytokinesis/endomitosis draws.

    Returns:
        int array of final ploidies, one per cell.
    """
    acts = kinase_activities(cfg, inhibition)
    ploidy = np.full(int(n_founders), 2, np.int64)
    done = np.zeros(ploidy.size, bool)
    max_ploidy = int(cfg["max_ploidy_n"])
    for _ in range(int(cfg["max_cycles"])):
        active = ~done
        p = p_endomitosis(cfg, ploidy[active], acts)
        endo = rng.random(p.size) < p
        idx = np.flatnonzero(active)
        ploidy[idx[endo]] *= 2
        done[idx[endo]] = ploidy[idx[endo]] >= max_ploidy
        cyto = idx[~endo]
        ploidy = np.concatenate([ploidy, ploidy[cyto]])
        done = np.concatenate([done, done[cyto]])
    return ploidy


class MegakaryocyteModule(BiologyModule):
    """MK progenitors and megakaryocytes on the lattice; publishes ``shed_per_h`` for the blood."""

    name = "megakaryocytes"
    section = "megakaryocytes"

    def __init__(self, engine):
        super().__init__(engine)
        cells = engine.cells
        cells.add_column("mk_ploidy_n", np.int16, fill=2)
        cells.add_column("mk_cycles", np.int16)
        cells.add_column("mk_clock_h", np.float64)
        cells.add_column("mk_stage", np.int8)
        cells.add_column("mk_shed_left", np.float64)
        cells.add_column("mk_diameter_um", np.float64)
        geo = engine.geometry
        self.nx = int(geo.labels.shape[1])
        self.marrow = (geo.labels == MARROW).ravel()
        self.marrow_voxels = np.flatnonzero(self.marrow)
        self.at_sinusoid = geo.touching(SINUSOID).ravel() & self.marrow
        self.dist_sinusoid = geo.dist_sinusoid_um.ravel().astype(np.float64)
        #: Platelets released by the section in the last step, per hour.
        self.shed_per_h = 0.0
        self.spinup_shed_per_h = 0.0
        self._spinup()

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def cfg(self) -> Mapping:
        return self.engine.scenario.data["megakaryocytes"]

    def _rows(self) -> np.ndarray:
        cells = self.engine.cells
        k = cells["kind"]
        return np.flatnonzero(((k == KINDS["mkp"]) | (k == KINDS["mk"])) & cells["alive"])

    def _inhibition(self) -> Mapping[str, float] | None:
        pk = next((m for m in getattr(self.engine, "modules", ()) if m.name == "pk"), None)
        return pk.inhibition if pk is not None else None

    def _new_clock(self, n: int) -> np.ndarray:
        cfg = self.cfg
        u = self.engine.streams["mk.clock"].random(n)
        return float(cfg["cycle_h"]) * (1.0 + float(cfg["cycle_jitter"]) * (2.0 * u - 1.0))

    def _spinup(self) -> None:
        """Run the lineage alone (no drugs) to its steady state before t = 0."""
        cfg = self.cfg
        n = round(float(cfg["spinup_days"]) * 24.0 / self.engine.dt_h)
        tail = max(1, min(n, round(72.0 / self.engine.dt_h)))
        shed = []
        for _ in range(n):
            self._step(inhibition=None)
            self.engine.cells.compact()
            shed.append(self.shed_per_h)
        self.spinup_shed_per_h = float(np.mean(shed[-tail:])) if shed else 0.0

    # -- phase -----------------------------------------------------------------------------------
    def phase_handlers(self) -> dict[str, Callable[[], None]]:
        return {"megakaryocytes": lambda: self._step(self._inhibition())}

    def _step(self, inhibition: Mapping[str, float] | None) -> None:
        eng, cells, cfg = self.engine, self.engine.cells, self.cfg
        dt_h = eng.dt_h
        self._influx(dt_h)

        # Progenitor loss (ineffective haematopoiesis, assumed rate).
        mkp = cells.rows_of("mkp")
        if mkp.size:
            u = eng.streams["mk.death"].random(mkp.size)
            cells.kill(mkp[u < 1.0 - np.exp(-float(cfg["mkp_death_per_h"]) * dt_h)])

        rows = self._rows()
        n = rows.size
        stage, clock = np.empty(n, np.int8), np.empty(n)
        left, shed, event = np.empty(n), np.empty(n), np.empty(n, np.int8)
        mk_advance(cells["mk_stage"][rows], cells["mk_clock_h"][rows],
                   cells["mk_ploidy_n"][rows].astype(np.float64), cells["mk_shed_left"][rows],
                   self.at_sinusoid[cells["voxel"][rows]], eng.streams["mk.mature"].random(n),
                   dt_h, float(cfg["shedding_h"]), float(cfg["platelets_per_ploidy_n"]),
                   float(cfg["complete_half_ploidy_n"]), float(cfg["complete_hill"]),
                   stage, clock, left, shed, event)
        cells["mk_stage"][rows] = stage
        cells["mk_clock_h"][rows] = clock
        cells["mk_shed_left"][rows] = left
        self.shed_per_h = float(shed.sum()) / dt_h
        cells.kill(rows[(event == EV_DIE_IMMATURE) | (event == EV_DIE_SHED)])

        self._mitoses(rows[event == EV_MITOSIS], inhibition)
        self._drift()
        rows = self._rows()
        cells["mk_diameter_um"][rows] = float(cfg["diameter_16n_um"]) * (
            cells["mk_ploidy_n"][rows] / 16.0) ** (1.0 / 3.0)

    def _influx(self, dt_h: float) -> None:
        """New 2N progenitors on random free marrow voxels (Poisson number per step)."""
        eng, cells, cfg = self.engine, self.engine.cells, self.cfg
        rng = eng.streams["mk.influx"]
        lam = float(cfg["influx_per_marrow_voxel_per_h"]) * self.marrow_voxels.size * dt_h
        k = int(rng.poisson(lam))
        if k == 0:
            return
        vox = np.unique(rng.choice(self.marrow_voxels, size=k))
        vox = vox[cells.occupant[vox] < 0]
        if vox.size:
            cells.add("mkp", vox, time_h=eng.time_h, mk_ploidy_n=2, mk_cycles=0,
                      mk_stage=CYCLING, mk_clock_h=self._new_clock(vox.size),
                      mk_shed_left=0.0)

    def _mitoses(self, rows: np.ndarray, inhibition: Mapping[str, float] | None) -> None:
        """Cytokinesis or endomitosis for each cell whose cycle clock ran out."""
        if rows.size == 0:
            return
        eng, cells, cfg = self.engine, self.engine.cells, self.cfg
        ploidy = cells["mk_ploidy_n"][rows].astype(np.int64)
        p = p_endomitosis(cfg, ploidy, kinase_activities(cfg, inhibition))
        endo = eng.streams["mk.cycle"].random(rows.size) < p

        # Cytokinesis needs room: a free marrow face-neighbour, or the mitosis waits a step.
        cyto = rows[~endo]
        target = np.full(cyto.size, -1, np.int64)
        if cyto.size:
            choose_free_neighbour(cells["voxel"][cyto], cells.occupant.copy(), self.marrow,
                                  self.nx, eng.streams["mk.place"].random(cyto.size), target)
        waiting = cyto[target < 0]
        cells["mk_clock_h"][waiting] = eng.dt_h
        divided = cyto[target >= 0]
        endo_rows = rows[endo]

        cells["mk_ploidy_n"][endo_rows] = np.minimum(2 * cells["mk_ploidy_n"][endo_rows],
                                                     int(cfg["max_ploidy_n"]))
        cells["kind"][endo_rows] = KINDS["mk"]
        mothers = np.concatenate([endo_rows, divided])
        cells["mk_cycles"][mothers] += 1
        if divided.size:
            kind_names = np.where(cells["kind"][divided] == KINDS["mk"], "mk", "mkp")
            for name in ("mkp", "mk"):
                sel = divided[kind_names == name]
                if sel.size:
                    cells.add(name, target[target >= 0][kind_names == name], time_h=eng.time_h,
                              mk_ploidy_n=cells["mk_ploidy_n"][sel],
                              mk_cycles=cells["mk_cycles"][sel], mk_stage=CYCLING,
                              mk_shed_left=0.0)
            daughters = np.arange(cells.n - divided.size, cells.n)
            mothers = np.concatenate([mothers, daughters])
        # Clocks: another cycle, or (budget spent or top ploidy) maturation.
        stop = ((cells["mk_cycles"][mothers] >= int(cfg["max_cycles"]))
                | (cells["mk_ploidy_n"][mothers] >= int(cfg["max_ploidy_n"])))
        cells["mk_clock_h"][mothers] = self._new_clock(mothers.size)
        mature = mothers[stop]
        cells["mk_stage"][mature] = MATURING
        cells["mk_clock_h"][mature] = float(cfg["maturation_h"])
        cells["kind"][mature] = KINDS["mk"]

    def _drift(self) -> None:
        """Maturing MK not yet beside a sinusoid move one voxel toward the nearest one."""
        cells = self.engine.cells
        rows = self._rows()
        rows = rows[(cells["mk_stage"][rows] == MATURING) & ~self.at_sinusoid[cells["voxel"][rows]]]
        if rows.size == 0:
            return
        out = np.empty(rows.size, np.int64)
        drift_step(cells["voxel"][rows], self.dist_sinusoid, cells.occupant, self.marrow,
                   self.nx, out)
        cells["voxel"][rows] = out

    # -- metrics ---------------------------------------------------------------------------------
    def _mk(self) -> tuple[np.ndarray, np.ndarray]:
        cells = self.engine.cells
        rows = cells.rows_of("mk")
        return rows, cells["voxel"][rows]


    def ploidy_histogram(self) -> np.ndarray:
        """Fraction of MK in each class of ``PLOIDY_CLASSES`` (NaN without MK)."""
        rows, _ = self._mk()
        if rows.size == 0:
            return np.full(len(PLOIDY_CLASSES), np.nan)
        counts = np.array([(self.engine.cells["mk_ploidy_n"][rows] == p).sum()
                           for p in PLOIDY_CLASSES], float)
        return counts / rows.size

    def metrics(self) -> dict[str, Callable[[], np.ndarray]]:
        zones = self.engine.zones
        cells = self.engine.cells

        def count(kind: str) -> Callable[[], np.ndarray]:
            return lambda: zones.count(cells["voxel"][cells.rows_of(kind)])

        def mean_of(col: str) -> Callable[[], np.ndarray]:
            def fn() -> np.ndarray:
                rows, vox = self._mk()
                return zones.cell_mean(vox, cells[col][rows].astype(np.float64))
            return fn

        def modal() -> float:
            h = self.ploidy_histogram()
            return float(PLOIDY_CLASSES[int(np.argmax(h))]) if np.isfinite(h).all() else np.nan

        out = {
            "n_mkp": count("mkp"),
            "n_mk": count("mk"),
            "frac_marrow_mk": self._all_zone(lambda: self._mk()[0].size / self.marrow_voxels.size),
            "mk_mean_ploidy": mean_of("mk_ploidy_n"),
            "mk_modal_ploidy": self._all_zone(modal),
        }
        for i, p in enumerate(PLOIDY_CLASSES):
            out[f"mk_frac_{p}n"] = self._all_zone(lambda i=i: float(self.ploidy_histogram()[i]))
        out["mk_mean_diameter_um"] = mean_of("mk_diameter_um")
        out["platelets_shed_per_h"] = self._all_zone(lambda: self.shed_per_h)
        return out


__all__ = [
    "KINASES",
    "PLOIDY_CLASSES",
    "MegakaryocyteModule",
    "culture_ploidy",
    "kinase_activities",
    "p_endomitosis",
]
