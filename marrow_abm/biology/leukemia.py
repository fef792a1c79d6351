"""Leukemia stem cells (L-GMP) and blasts: Ki67 cycle state, adhesion to BLC, TGF-β1 secretion,
division into neighbouring voxels, migration up the OPN gradient, death (MODEL.md section 3 and
hypotheses 1, 2, 3, 6; Nguyen, Yao, Arai et al., Leukemia 2025, seed 000; Krivtsov 2006 Nature
for the L-GMP).

Every rate is a rule behaviour (``marrow_abm.rules``) of the cell's signals; nothing here looks
at a zone to decide dormancy: the endosteal G0 enrichment has to emerge from where BLC, OPN and
the MSC mitogen are. Per step:

- ``pk``: plasma cytarabine and doxorubicin averaged over the step (``engine.drug_mg_per_l``,
  ``interventions.drug_step_mean_mg_per_l``);
- ``secrete``: each leukemic cell adds its rule-given TGF-β1 secretion (× (1 − block));
- ``rules``: signals -> behaviours; bound cells let go (detachment, or no BLC beside them),
  unbound cells touching a BLC bind (adhesion × (1 − OPN-receptor block));
- ``cycle``: death (any phase, plus S-phase-specific death in S-G2-M and cycling-cell death in
  G1 and S-G2-M), then G0/G1/S-G2-M
  transitions and division into a free neighbouring voxel (normal tissue is displaced); an
  LSC division gives two LSC with ``p_symmetric_self_renewal``, else an LSC and a blast; a
  blast with no divisions left differentiates and leaves instead of dividing;
- ``move``: unbound cells step into free neighbours, up the OPN gradient with probability
  ``chemotaxis_opn``.

That is ``leukemia.update_order = "phased"``. With ``"random_sequential"`` the ``rules`` phase
does all of it (``step_sequential``): every cell decides adhesion, death, its cycle transition
and whether it divides and moves from its signals at the start of the step, in one parallel
pass with counter-based uniforms, then the dividers and movers act one at a time in one random
order (``kernels/leukemia_sequential.py``).

Interventions acting here: ``tgfb_secretion_block``, ``opn_receptor_block`` (OPN signal,
adhesion and chemotaxis scaled by 1 − inhibition), ``transwell`` (no BLC contact: contact
signals 0, no binding). ``chemo`` acts through the ``cytarabine`` signal of the rules,
``doxorubicin`` through the ``doxorubicin`` signal.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..cells import KINDS
from ..kernels.leukemia import (
    G0,
    G1,
    alive_columns,
    cycle_step,
    death_step,
    divide_step,
    fill_signals_ref,
    move_choice,
    move_step,
    neighbour_count_move,
    rules_step,
)
from ..kernels.leukemia_sequential import BEHAVIOURS, act_step, decide_step
from ..rules import scenario_rules
from . import aml_signals as S
from . import interventions as iv
from .base import BiologyModule

LEUKEMIC_KINDS = ("lsc", "blast")


def _p(rate_per_h: np.ndarray, dt_h: float) -> np.ndarray:
    """Per-step probability of an event with hazard ``rate_per_h`` (MODEL.md §5)."""
    return 1.0 - np.exp(-np.asarray(rate_per_h) * dt_h)


class LeukemiaModule(BiologyModule):
    """LSC and blasts on the lattice, their rules, cycle, division, movement and metrics."""

    name = "leukemia"
    section = "leukemia"

    def __init__(self, engine):
        super().__init__(engine)
        self.rules = scenario_rules(engine.scenario)
        cells = engine.cells
        cells.add_column("phase", np.int8, fill=G1)
        cells.add_column("bound", np.bool_, fill=False)
        cells.add_column("divisions_left", np.int16, fill=0)
        cells.add_column("tgfb_secretion_per_h", np.float64, fill=0.0)
        self._beh: dict[str, _KindStep] = {}
        #: Per kind: the signals some rule reads, plus BLC contact (the adhesion step reads it),
        #: in the order of the rows of the signal matrix the fused kernels are given.
        self._sig_names = {k: sorted(self.rules.signals_needed(k) | {"contact_blc"})
                           for k in LEUKEMIC_KINDS}
        #: Per kind: every behaviour's rules as one table (``RuleSet.table``), and the row of
        #: each behaviour in it.
        self._tables = {k: self.rules.table(k, list(self.rules.bases[k]), self._sig_names[k])
                        for k in LEUKEMIC_KINDS}
        self._b = {k: {b: j for j, b in enumerate(self.rules.bases[k])} for k in LEUKEMIC_KINDS}
        #: Per kind: the table rows of ``leukemia_sequential.BEHAVIOURS``.
        self._bix = {k: np.array([self._b[k][b] for b in BEHAVIOURS], dtype=np.int64)
                     for k in LEUKEMIC_KINDS}
        #: drug signal (``interventions.DRUG_SIGNALS``) -> concentration this step (mg/L)
        engine.drug_mg_per_l = dict.fromkeys(iv.DRUG_SIGNALS, 0.0)
        #: Living BLC among the 8 neighbours of every voxel (``neighbour_count_move`` from no
        #: BLC) and the BLC voxels it counts; brought up to date at the ``rules`` phase only when the BLC moved,
        #: died or were added (``_blc_contact_map``).
        self._blc_map = np.zeros(engine.geometry.labels.size, dtype=np.uint8)
        self._blc_map_voxels = np.empty(0, dtype=np.int64)
        self._place()

    def _place(self) -> None:
        """Transplanted LSC and blasts home to uniformly chosen free marrow voxels, in G1."""
        eng = self.engine
        lk = eng.scenario.data["leukemia"]
        free = np.flatnonzero(S.free_map(eng))
        n_lsc, n_blast = int(lk["n_lsc_initial"]), int(lk["n_blast_initial"])
        n = min(n_lsc + n_blast, free.size)
        rng = eng.streams["placement.leukemia"]
        chosen = rng.choice(free, size=n, replace=False) if n else free[:0]
        lsc_b = self.rules.bases["lsc"]["tgfb_secretion_per_h"]
        blast_b = self.rules.bases["blast"]["tgfb_secretion_per_h"]
        eng.cells.add("lsc", np.sort(chosen[:min(n_lsc, n)]), time_h=eng.time_h, phase=G1,
                      tgfb_secretion_per_h=lsc_b)
        eng.cells.add("blast", np.sort(chosen[min(n_lsc, n):]), time_h=eng.time_h, phase=G1,
                      divisions_left=int(lk["blast_divisions"]), tgfb_secretion_per_h=blast_b)

    # -- phases --------------------------------------------------------------------------------
    @property
    def update_order(self) -> str:
        """``phased`` or ``random_sequential`` (``[leukemia] update_order``, docs/model.md §3),
        read from the engine's current scenario, so a fork under another scenario
        (``Engine.fork``) steps with that scenario's schedule."""
        return self.engine.scenario.data["leukemia"]["update_order"]

    def phase_handlers(self) -> dict[str, Callable[[], None]]:
        if self.update_order == "random_sequential":
            return {"pk": self.pk, "secrete": self.secrete, "rules": self.step_sequential}
        return {"pk": self.pk, "secrete": self.secrete, "rules": self.apply_rules,
                "cycle": self.cycle, "move": self.move}

    def pk(self) -> None:
        eng = self.engine
        for drug in iv.DRUG_SIGNALS:
            eng.drug_mg_per_l[drug] = iv.drug_step_mean_mg_per_l(eng.scenario.data, drug,
                                                                 eng.time_h, eng.dt_h)

    def secrete(self) -> None:
        eng = self.engine
        cells = eng.cells
        factor = 1.0 - iv.strength(eng.scenario.data, "tgfb_secretion_block", eng.time_h)
        rows = self._leukemic_rows()
        eng.sources["tgfb"].ravel()[cells["voxel"][rows]] += cells["tgfb_secretion_per_h"][rows] * factor

    def _leukemic_rows(self) -> np.ndarray:
        cells = self.engine.cells
        k = cells["kind"]
        return np.flatnonzero(((k == KINDS["lsc"]) | (k == KINDS["blast"])) & cells["alive"])

    def signals(self, kind: str, rows: np.ndarray,
                names: set[str] | None = None) -> dict[str, np.ndarray]:
        """The signals a leukemic cell of ``kind`` senses, for the given rows (for inspection,
        ``behaviours`` and tests).

        The values come from ``_signal_sources``, the same description of each signal that
        feeds ``rules_step``, through the kernel's numpy twin (``fill_signals_ref``): one
        statement of what each signal is.

        Args:
            kind: ``lsc`` or ``blast``.
            rows: cell rows.
            names: only these signals (default: every signal it can sense: the fields, BLC and
                MSC contact, leukemic density, bound, burden, the zones and the drugs).
        """
        eng = self.engine
        every = [*eng.fields.names, "contact_blc", "contact_msc", "leukemic_density", "bound",
                 "burden", *S.ZONE_SIGNALS, *eng.drug_mg_per_l]
        wanted = [s for s in every if names is None or s in names]
        block = iv.strength(eng.scenario.data, "opn_receptor_block", eng.time_h)
        sources = self._signal_sources(kind, rows, block, eng.cells.rows_of("blc"), wanted)
        out = np.empty((len(wanted), rows.size))
        fill_signals_ref(rows, eng.cells["voxel"], *sources, out)
        return dict(zip(wanted, out))

    def behaviours(self, kind: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Every behaviour of ``kind`` for the given rows, from their current signals, through
        ``RuleSet.evaluate`` (for inspection and tests: the phases evaluate the same rules in
        fused kernels, which give the same bits, tested)."""
        sig = self.signals(kind, rows, set(self._sig_names[kind]))
        return {b: self.rules.evaluate(kind, b, sig, rows.size) for b in self.rules.bases[kind]}

    def _blc_contact_map(self, blc_rows: np.ndarray) -> np.ndarray:
        """The map of living BLC among each voxel's 8 neighbours for the given BLC rows: the
        kept map, moved from the BLC voxels it counted to these (``neighbour_count_move``) when
        they differ, which is the map built from zeros (``neighbour_count_map_ref``, tested)."""
        eng = self.engine
        vox = eng.cells["voxel"][blc_rows]
        old = self._blc_map_voxels
        if old.shape != vox.shape or not np.array_equal(old, vox):
            ny, nx = eng.geometry.labels.shape
            neighbour_count_move(old, vox, nx, ny, self._blc_map)
            self._blc_map_voxels = vox
        return self._blc_map

    def _signal_sources(self, kind: str, rows: np.ndarray, block: float,
                        blc_rows: np.ndarray, names: list[str] | None = None) -> tuple:
        """Where each row of a signal matrix comes from, as ``rules_step`` takes it: the one
        statement of what each signal a leukemic cell senses is (``signals`` uses it too).

        Args:
            kind: ``lsc`` or ``blast``; rows: its cell rows.
            block: OPN-receptor block (0–1): OPN is sensed through the receptor.
            blc_rows: the living BLC's rows (for the contact map).
            names: the matrix's rows (default: the signals ``kind``'s rules read).
        """
        eng = self.engine
        data, t = eng.scenario.data, eng.time_h
        cells = eng.cells
        names = self._sig_names[kind] if names is None else names
        row = {name: j for j, name in enumerate(names)}
        fcols, fscale, frow = [], [], []
        for f in eng.fields.names:
            if f in row:
                fcols.append(cells[f"{f}_at"])
                # the receptor is how OPN is sensed; x * 1.0 is x exactly for the others
                fscale.append(1.0 - block if f == "opn" else 1.0)
                frow.append(row[f])
        maps, mrow, consts, crow, percell, prow = [], [], [], [], [], []
        filled = set(eng.fields.names) & set(row)
        if "contact_msc" in row or "leukemic_density" in row:
            nb, nm, nl = S.census(eng, rows)
            for name, value in (("contact_blc", nb), ("contact_msc", nm),
                                ("leukemic_density", nl / 8.0)):
                if name in row:
                    percell.append(value)
                    prow.append(row[name])
                    filled.add(name)
        elif "contact_blc" in row:
            maps.append(self._blc_contact_map(blc_rows))
            mrow.append(row["contact_blc"])
            filled.add("contact_blc")
        if "contact_blc" in row and iv.active(data, "transwell", t) is not None:
            # No contact through the membrane: the signal is 0 whatever filled it.
            j = row["contact_blc"]
            if j in mrow:
                maps.pop(mrow.index(j))
                mrow.remove(j)
            if j in prow:
                percell.pop(prow.index(j))
                prow.remove(j)
            consts.append(0.0)
            crow.append(j)
        brow = row.get("bound", -1)
        if "bound" in row:
            filled.add("bound")
        if "burden" in row:
            consts.append(S.burden(eng))
            crow.append(row["burden"])
            filled.add("burden")
        if any(z in row for z in S.ZONE_SIGNALS):
            for z, m in S.zone_maps(eng).items():
                if z in row:
                    maps.append(m)
                    mrow.append(row[z])
                    filled.add(z)
        for drug, conc in eng.drug_mg_per_l.items():
            if drug in row:
                consts.append(conc)
                crow.append(row[drug])
                filled.add(drug)
        missing = [name for name in row if name not in filled]
        if missing:
            raise KeyError(missing[0])
        # numba takes tuples of equally typed arrays; an unused placeholder keeps them non-empty
        return (tuple(fcols) or (np.zeros(1),), np.array(fscale, dtype=np.float64),
                np.array(frow, dtype=np.int64), tuple(maps) or (self._blc_map,),
                np.array(mrow, dtype=np.int64), cells["bound"], brow,
                np.array(consts, dtype=np.float64), np.array(crow, dtype=np.int64),
                np.array(percell, dtype=np.float64).reshape(len(percell), rows.size),
                np.array(prow, dtype=np.int64))

    def apply_rules(self) -> None:
        """Behaviours of every LSC and blast; adhesion and detachment; TGF-β1 secretion.

        One kernel per kind (``rules_step``) reads the signals some rule reads straight from
        the cell table into a matrix kept for the ``cycle`` and ``move`` phases
        (``_KindStep``), and decides adhesion and secretion in the same pass; each fused kernel
        then evaluates a behaviour only for the cells whose step uses it, which gives the
        values, draws and outcomes of evaluating every behaviour for every cell.
        """
        eng = self.engine
        data, t, dt = eng.scenario.data, eng.time_h, eng.dt_h
        cells = eng.cells
        rng = eng.streams["leukemia.adhesion"]
        block = iv.strength(data, "opn_receptor_block", t)
        *kind_rows, blc_rows = cells.rows_of_kinds((*LEUKEMIC_KINDS, "blc"))
        for kind, rows in zip(LEUKEMIC_KINDS, kind_rows):
            n = rows.size
            names = self._sig_names[kind]
            mat = np.empty((len(names), n))
            self._beh[kind] = _KindStep(rows, mat)
            b = self._b[kind]
            u = rng.random(n)
            if n == 0:
                continue
            sources = self._signal_sources(kind, rows, block, blc_rows)
            # Adhesion to BLC (MODEL.md hypothesis 2): needs a BLC beside the cell. The
            # secretion block acts when secreting, so the column stays the cell's behaviour.
            rules_step(rows, cells["voxel"], *sources, self._tables[kind],
                       b["tgfb_secretion_per_h"], b["adhesion_per_h"], b["detachment_per_h"],
                       names.index("contact_blc"), u, 1.0 - block, dt, mat,
                       cells["tgfb_secretion_per_h"])

    def cycle(self) -> None:
        """Death, cycle transitions and division into free neighbouring voxels.

        Per kind, three kernels write the table in place: ``death_step`` (kills, lists the
        survivors), ``cycle_step`` (new phases, lists the dividers; blasts out of divisions
        differentiate and leave) and ``divide_step`` (daughter voxels in a random order, no
        room -> stay in S-G2-M); the daughters are added at the end, LSC first.
        """
        eng = self.engine
        cells = eng.cells
        lk = eng.scenario.data["leukemia"]
        ny, nx = eng.geometry.labels.shape
        radius = int(lk["division_radius_voxels"])
        new_lsc: list[np.ndarray] = []
        new_blast: list[tuple[np.ndarray, np.ndarray]] = []
        free = S.free_map(eng)
        alive, voxel, phase = cells["alive"], cells["voxel"], cells["phase"]
        divisions_left, occupant = cells["divisions_left"], cells.occupant
        for kind in LEUKEMIC_KINDS:
            st = self._beh.get(kind)
            if st is None or st.rows.size == 0:
                continue
            rows = st.rows
            n = rows.size
            tab, b = self._tables[kind], self._b[kind]
            rng_d = eng.streams[f"{kind}.death"]
            rng_c = eng.streams[f"{kind}.cycle"]
            rng_p = eng.streams[f"{kind}.division"]
            keep = np.empty(n, dtype=np.int64)
            m = death_step(rows, phase, st.sig, tab, b["death_per_h"], b["s_phase_death_per_h"],
                           b["cycling_death_per_h"], rng_d.random(n), eng.dt_h, alive, voxel,
                           occupant, free, keep)
            drows = np.empty(m, dtype=np.int64)
            # A blast with no divisions left differentiates and leaves the marrow.
            k = cycle_step(keep[:m], rows, phase, st.sig, tab, b["g0_entry_per_h"],
                           b["g0_exit_per_h"], b["g1_exit_per_h"], b["division_per_h"],
                           rng_c.random(m), eng.dt_h, divisions_left, kind == "blast", alive,
                           voxel, occupant, free, drows)
            if k == 0:
                continue
            order = rng_p.permutation(k)
            target = np.empty(k, dtype=np.int64)
            left = np.empty(k, dtype=np.int64)
            # No room: stay in S-G2-M and try again next step (contact inhibition).
            placed = divide_step(drows[:k], order, voxel, phase, divisions_left, kind == "blast",
                                 free, nx, ny, radius, rng_p.random(k), target, left)
            target = target[:placed]
            if kind == "lsc":
                sym = rng_p.random(placed) < lk["p_symmetric_self_renewal"]
                new_lsc.append(target[sym])
                new_blast.append((target[~sym], np.full((~sym).sum(), lk["blast_divisions"])))
            else:
                new_blast.append((target, left[:placed]))
        self._add_daughters(np.concatenate(new_lsc) if new_lsc else None,
                            np.concatenate([v for v, _ in new_blast]) if new_blast else None,
                            np.concatenate([d for _, d in new_blast]) if new_blast else None)

    def _add_daughters(self, lsc_voxels: np.ndarray | None, blast_voxels: np.ndarray | None,
                       blast_left: np.ndarray | None) -> None:
        """New LSC, then new blasts (with their divisions left), in G1 with their kind's base
        TGF-β1 secretion, on the given voxels (None: none of that kind)."""
        cells, t = self.engine.cells, self.engine.time_h
        if lsc_voxels is not None:
            cells.add("lsc", lsc_voxels, time_h=t, phase=G1,
                      tgfb_secretion_per_h=self.rules.bases["lsc"]["tgfb_secretion_per_h"])
        if blast_voxels is not None:
            cells.add("blast", blast_voxels, time_h=t, phase=G1,
                      divisions_left=blast_left.astype(np.int16),
                      tgfb_secretion_per_h=self.rules.bases["blast"]["tgfb_secretion_per_h"])

    def move(self) -> None:
        """Unbound leukemic cells step into free neighbouring voxels (OPN chemotaxis).

        ``move_choice`` lists each kind's movers (LSC, then blasts); ``move_step`` moves them in
        one random order and updates the table's voxels and occupancy.
        """
        eng = self.engine
        data, t = eng.scenario.data, eng.time_h
        cells = eng.cells
        block = iv.strength(data, "opn_receptor_block", t)
        rng = eng.streams["leukemia.move"]
        steps = [(kind, st) for kind in LEUKEMIC_KINDS
                 if (st := self._beh.get(kind)) is not None and st.rows.size]
        if not steps:
            return
        size = sum(st.rows.size for _, st in steps)
        movers = np.empty(size, dtype=np.int64)
        chemo = np.empty(size, dtype=np.bool_)
        alive, bound = cells["alive"], cells["bound"]
        k = 0
        for kind, st in steps:
            b = self._b[kind]
            idx = np.empty(st.rows.size, dtype=np.int64)
            m = alive_columns(st.rows, alive, idx)
            u = rng.random((2, m))
            k = move_choice(idx[:m], st.rows, bound, st.sig, self._tables[kind],
                            b["migration_per_h"], b["chemotaxis_opn"], u, 1.0 - block, eng.dt_h,
                            movers, chemo, k)
        if k == 0:
            return
        order = rng.permutation(k)
        ny, nx = eng.geometry.labels.shape
        move_step(movers[:k], chemo[:k], order, cells["voxel"], cells.occupant, self._opn_flat(),
                  S.free_map(eng), nx, ny, rng.random(k))

    def step_sequential(self) -> None:
        """The whole leukemic step under ``update_order = "random_sequential"``.

        ``decide_step`` (one parallel call per kind) decides from each cell's signals at the
        start of the step its TGF-β1 secretion, adhesion, death, cycle transition, and whether
        it divides, moves and follows OPN, with counter-based uniforms keyed by the step's key
        from the ``leukemia.sequential`` stream and the cell's position (LSC, then blasts), so
        the result does not depend on the thread count. ``act_step`` then removes the dead and
        the blasts out of divisions and lets the dividers and movers act one at a time in one
        random order: place the daughter (else stay in S-G2-M), then move. The daughters are
        added at the end, LSC first, as in the phased step.
        """
        eng = self.engine
        data, t, dt = eng.scenario.data, eng.time_h, eng.dt_h
        lk = data["leukemia"]
        cells = eng.cells
        block = iv.strength(data, "opn_receptor_block", t)
        key, key_order = eng.streams["leukemia.sequential"].integers(
            0, np.iinfo(np.uint64).max, size=2, dtype=np.uint64, endpoint=True)
        *kind_rows, blc_rows = cells.rows_of_kinds((*LEUKEMIC_KINDS, "blc"))
        n = sum(rows.size for rows in kind_rows)
        if n == 0:
            return
        act = np.empty(n, dtype=np.uint8)
        offset = 0
        for kind, rows in zip(LEUKEMIC_KINDS, kind_rows):
            if rows.size == 0:
                continue
            names = self._sig_names[kind]
            sources = self._signal_sources(kind, rows, block, blc_rows)
            decide_step(rows, cells["voxel"], *sources, self._tables[kind], self._bix[kind],
                        names.index("contact_blc"), 1.0 - block, 1.0 - block, dt, key, offset,
                        cells["phase"], cells["divisions_left"], kind == "blast",
                        np.empty((len(names), rows.size)), cells["tgfb_secretion_per_h"],
                        act[offset:offset + rows.size])
            offset += rows.size
        ny, nx = eng.geometry.labels.shape
        target = np.empty(n, dtype=np.int64)
        is_blast = np.empty(n, dtype=np.bool_)
        left = np.empty(n, dtype=np.int64)
        k = act_step(np.concatenate(kind_rows), act, kind_rows[0].size, cells["voxel"],
                     cells["phase"], cells["divisions_left"], cells["alive"], cells.occupant,
                     S.free_map(eng), self._opn_flat(), nx, ny, int(lk["division_radius_voxels"]),
                     float(lk["p_symmetric_self_renewal"]), int(lk["blast_divisions"]), key,
                     key_order, target, is_blast, left)
        if k == 0:
            return
        target, is_blast, left = target[:k], is_blast[:k], left[:k]
        self._add_daughters(target[~is_blast] if not is_blast.all() else None,
                            target[is_blast] if is_blast.any() else None, left[is_blast])

    def _opn_flat(self) -> np.ndarray:
        """The OPN field as a flat float64 array (a view when it already is one)."""
        return np.ascontiguousarray(self.engine.fields.values["opn"].ravel(), dtype=np.float64)

    # -- observation ---------------------------------------------------------------------------
    def snapshot(self) -> pd.DataFrame:
        """One row per living leukemic cell: kind, phase, G0 flag, BLC contact, bound, local
        OPN and TGF-β1, distance to bone (µm), zone, voxel (for the claims' spatial tests)."""
        eng = self.engine
        cells = eng.cells
        rows = self._leukemic_rows()
        vox = cells["voxel"][rows]
        nb, _, _ = S.census(eng, rows)
        zone = eng.geometry.radial_zone.ravel()[vox]
        return pd.DataFrame({
            "kind": np.where(cells["kind"][rows] == KINDS["lsc"], "lsc", "blast"),
            "phase": cells["phase"][rows],
            "g0": cells["phase"][rows] == G0,
            "n_blc_neighbours": nb,
            "bound": cells["bound"][rows],
            "opn_at": eng.fields.values["opn"].ravel()[vox],
            "tgfb_at": eng.fields.values["tgfb"].ravel()[vox],
            "tgfb_secretion_per_h": cells["tgfb_secretion_per_h"][rows],
            "dist_bone_um": eng.geometry.dist_bone_um.ravel()[vox],
            "zone": np.array(["endosteal", "intermediate", "central"])[zone],
            "voxel": vox,
        })

    def metrics(self) -> dict[str, Callable[[], np.ndarray]]:
        eng = self.engine
        z = eng.zones
        lsc, blast = KINDS["lsc"], KINDS["blast"]

        def select(codes, g0_only=False):
            cells = eng.cells
            m = np.isin(cells["kind"], codes) & cells["alive"]
            if g0_only:
                m &= cells["phase"] == G0
            return np.flatnonzero(m)

        def count(codes, g0_only=False):
            return lambda: z.count(eng.cells["voxel"][select(codes, g0_only)])

        def frac_g0(codes):
            def f():
                rows = select(codes)
                return z.cell_mean(eng.cells["voxel"][rows], eng.cells["phase"][rows] == G0)
            return f

        def touching_blc():
            rows = select((lsc, blast), g0_only=True)
            nb, _, _ = S.census(eng, rows)
            return z.cell_mean(eng.cells["voxel"][rows], nb > 0)

        def lsc_mean(col):
            def f():
                rows = select((lsc,))
                return z.cell_mean(eng.cells["voxel"][rows], eng.cells[col][rows])
            return f

        def burden():
            return z.count(eng.cells["voxel"][select((lsc, blast))]) / z.size()

        def drug_level(drug):
            return lambda: np.full(len(z.names), eng.drug_mg_per_l[drug])

        def frac_normal():
            # the free map is 1 only on marrow voxels without a cell (aml_signals.free_map)
            return z.count_where(S.free_map(eng)) / z.size()

        return {
            "n_lsc": count((lsc,)), "n_lsc_g0": count((lsc,), True), "frac_lsc_g0": frac_g0((lsc,)),
            "n_blast": count((blast,)), "n_leukemic": count((lsc, blast)),
            "frac_leukemic_g0": frac_g0((lsc, blast)),
            "frac_g0_leukemic_touching_blc": touching_blc,
            "frac_lsc_bound": lsc_mean("bound"),
            "mean_lsc_tgfb_secretion": lsc_mean("tgfb_secretion_per_h"),
            "burden": burden, "frac_normal": frac_normal,
            **{f"{drug}_mg_per_l": drug_level(drug) for drug in iv.DRUG_SIGNALS},
        }


class _KindStep:
    """One kind's cells at the ``rules`` phase of the current step and their signals, which the
    ``cycle`` and ``move`` phases read (behaviours are evaluated there, for the cells that need
    them).

    Attributes:
        rows: cell rows of the kind at the ``rules`` phase.
        sig: (k, rows.size) signal matrix, rows in ``LeukemiaModule._sig_names[kind]`` order.
    """

    def __init__(self, rows: np.ndarray, sig: np.ndarray):
        self.rows = rows
        self.sig = sig


def find_module(engine, cls):
    """The engine's instance of a module class, or None."""
    return next((m for m in engine.modules if isinstance(m, cls)), None)


__all__ = ["LeukemiaModule", "LEUKEMIC_KINDS", "find_module"]
