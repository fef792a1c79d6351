"""Niche dynamics under leukemia: the BLC TGF-β1 -> Tgfbr2/pSmad2/3 -> OPN loop, BLC loss and MSC
expansion (MODEL.md hypotheses 4 and 5; Nguyen, Yao, Arai et al., Leukemia 2025, seed 000).

Each BLC carries a Tgfbr2 level and a pSmad2/3 activity that relax (first order, time constants
``leukemia.blc_tgfbr2_relax_h`` / ``blc_psmad_relax_h``) towards targets set by the rules; its OPN
secretion is a rule behaviour too (default: raised by pSmad2/3). BLC take TGF-β1 up in
proportion to active Tgfbr2. BLC die and MSC divide at rule-given rates (default: raised by local
leukemic density and by burden). The module is used when the scenario has a ``[leukemia]``
section. Interventions acting here: ``tgfbr2_inhibition`` (active receptor and uptake scaled by
1 − inhibition), ``opn_inhibition`` (BLC OPN secretion scaled), ``tgfb_neutralisation`` (extra
TGF-β1 removal everywhere), ``tgfb_supplement`` (uniform TGF-β1 source), ``transwell`` (BLC do
not sense leukemic neighbours).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..geometry import MARROW
from ..kernels.leukemia import place_daughters
from ..rules import scenario_rules
from . import aml_signals as S
from . import interventions as iv
from .base import BiologyModule


class NicheDynamicsModule(BiologyModule):
    """BLC Tgfbr2/pSmad/OPN state, BLC loss and MSC expansion with leukemic burden."""

    name = "niche_dynamics"
    section = "leukemia"

    def __init__(self, engine):
        super().__init__(engine)
        self.rules = scenario_rules(engine.scenario)
        cells = engine.cells
        b = self.rules.bases["blc"]
        cells.add_column("tgfbr2", np.float64, fill=b["tgfbr2_target"])
        cells.add_column("psmad", np.float64, fill=b["psmad_target"])
        cells.add_column("opn_secretion_per_h", np.float64, fill=b["opn_secretion_per_h"])
        self._marrow = np.flatnonzero(engine.geometry.labels.ravel() == MARROW)
        self._beh: dict[str, dict[str, np.ndarray]] = {}

    # -- phases --------------------------------------------------------------------------------
    def phase_handlers(self) -> dict[str, Callable[[], None]]:
        return {"secrete": self.secrete, "rules": self.apply_rules, "cycle": self.turnover}

    def secrete(self) -> None:
        """BLC OPN secretion and Tgfbr2-mediated TGF-β1 uptake; field-wide interventions."""
        eng = self.engine
        data, t = eng.scenario.data, eng.time_h
        cells = eng.cells
        rows = cells.rows_of("blc")
        vox = cells["voxel"][rows]
        opn_factor = 1.0 - iv.strength(data, "opn_inhibition", t)
        eng.sources["opn"].ravel()[vox] += cells["opn_secretion_per_h"][rows] * opn_factor
        active_r2 = cells["tgfbr2"][rows] * (1.0 - iv.strength(data, "tgfbr2_inhibition", t))
        eng.uptakes["tgfb"].ravel()[vox] += data["leukemia"]["blc_tgfb_uptake_per_h"] * active_r2
        neut = iv.active(data, "tgfb_neutralisation", t)
        if neut is not None:
            eng.uptakes["tgfb"].ravel()[self._marrow] += neut["extra_decay_per_h"]
            eng.secreted_everywhere()      # not only at cells' voxels
        sup = iv.active(data, "tgfb_supplement", t)
        if sup is not None:
            eng.sources["tgfb"].ravel()[self._marrow] += sup["source_per_h"]
            eng.secreted_everywhere()

    def _signals(self, kind: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The signals some rule of ``kind`` reads, for the given rows (``RuleSet.evaluate``
        reads no other): at 1001² the MSC are ~26 000 cells whose default rules read only the
        burden, and gathering every signal for them cost ~4 ms per step."""
        eng = self.engine
        data, t = eng.scenario.data, eng.time_h
        cells = eng.cells
        names = self.rules.signals_needed(kind)
        vox = cells["voxel"][rows]
        sig: dict[str, np.ndarray] = {f: cells[f"{f}_at"][rows] for f in eng.fields.names
                                      if f in names}
        if "leukemic_density" in names:
            _, _, nl = S.census(eng, rows)
            if iv.active(data, "transwell", t) is not None and kind == "blc":
                nl = np.zeros_like(nl)
            sig["leukemic_density"] = nl / 8.0
        if "burden" in names:
            sig["burden"] = np.full(rows.size, S.burden(eng))
        if names.intersection(S.ZONE_SIGNALS):
            for z, m in S.zone_maps(eng).items():
                if z in names:
                    sig[z] = m[vox].astype(np.float64)
        for drug in iv.DRUG_SIGNALS:
            if drug in names:
                sig[drug] = np.full(rows.size,
                                    getattr(eng, "drug_mg_per_l", {}).get(drug, 0.0))
        if kind == "blc":
            r2 = cells["tgfbr2"][rows]
            if "tgfbr2" in names:
                sig["tgfbr2"] = r2
            if "psmad" in names:
                sig["psmad"] = cells["psmad"][rows]
            if "tgfb_receptor" in names:
                sig["tgfb_receptor"] = (cells["tgfb_at"][rows] * r2
                                        * (1.0 - iv.strength(data, "tgfbr2_inhibition", t)))
        return sig

    def apply_rules(self) -> None:
        """Relax BLC Tgfbr2 and pSmad2/3 towards their rule targets, then set OPN secretion."""
        eng = self.engine
        cells = eng.cells
        lk = eng.scenario.data["leukemia"]
        dt = eng.dt_h
        rows = cells.rows_of("blc")
        if rows.size:
            sig = self._signals("blc", rows)
            ev = self.rules.evaluate
            r2_t = ev("blc", "tgfbr2_target", sig, rows.size)
            ps_t = ev("blc", "psmad_target", sig, rows.size)
            a2 = 1.0 - np.exp(-dt / lk["blc_tgfbr2_relax_h"])
            ap = 1.0 - np.exp(-dt / lk["blc_psmad_relax_h"])
            cells["tgfbr2"][rows] += (r2_t - cells["tgfbr2"][rows]) * a2
            cells["psmad"][rows] += (ps_t - cells["psmad"][rows]) * ap
            sig = self._signals("blc", rows)
            cells["opn_secretion_per_h"][rows] = ev("blc", "opn_secretion_per_h", sig, rows.size)
            self._beh["blc"] = {"rows": rows, "death": ev("blc", "death_per_h", sig, rows.size)}
        else:
            self._beh["blc"] = {"rows": rows, "death": np.empty(0)}
        mrows = cells.rows_of("msc")
        sig = self._signals("msc", mrows)
        self._beh["msc"] = {"rows": mrows,
                            "death": self.rules.evaluate("msc", "death_per_h", sig, mrows.size),
                            "division": self.rules.evaluate("msc", "division_per_h", sig,
                                                            mrows.size)}

    def turnover(self) -> None:
        """BLC loss, MSC loss and MSC division into free neighbouring voxels."""
        eng = self.engine
        cells = eng.cells
        dt = eng.dt_h
        rng = eng.streams["niche.turnover"]
        for kind in ("blc", "msc"):
            beh = self._beh.get(kind)
            if beh is None or beh["rows"].size == 0:
                continue
            u = rng.random(beh["rows"].size)
            cells.kill(beh["rows"][u < 1.0 - np.exp(-beh["death"] * dt)])
        beh = self._beh.get("msc")
        if beh is None or beh["rows"].size == 0:
            return
        rows = beh["rows"]
        u = rng.random(rows.size)
        div = rows[(u < 1.0 - np.exp(-beh["division"] * dt)) & cells["alive"][rows]]
        if div.size == 0:
            return
        div = div[rng.permutation(div.size)]
        ny, nx = eng.geometry.labels.shape
        target = np.empty(div.size, dtype=np.int64)
        place_daughters(cells["voxel"][div], S.free_map(eng), nx, ny, 1, rng.random(div.size),
                        target)
        ok = target >= 0
        if ok.any():
            cells.add("msc", np.sort(target[ok]), time_h=eng.time_h)

    # -- metrics -------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Callable[[], np.ndarray]]:
        eng = self.engine

        def blc_mean(col: str) -> Callable[[], np.ndarray]:
            def f() -> np.ndarray:
                rows = eng.cells.rows_of("blc")
                return eng.zones.cell_mean(eng.cells["voxel"][rows], eng.cells[col][rows])
            return f

        def frac_psmad() -> np.ndarray:
            rows = eng.cells.rows_of("blc")
            thr = eng.scenario.data["leukemia"]["psmad_active_threshold"]
            return eng.zones.cell_mean(eng.cells["voxel"][rows], eng.cells["psmad"][rows] > thr)

        return {"mean_blc_tgfbr2": blc_mean("tgfbr2"), "mean_blc_psmad": blc_mean("psmad"),
                "frac_blc_psmad": frac_psmad,
                "mean_blc_opn_secretion": blc_mean("opn_secretion_per_h")}


__all__ = ["NicheDynamicsModule"]
