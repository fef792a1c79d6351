"""Scenario schema of the AML niche (issue 3; MODEL.md sections 3, 6, 7): the rules grammar,
behaviour base values, the ``[leukemia]`` section, the interventions, and the AML vocabulary of
signals and behaviours (``marrow_abm.rules`` registries).

Every default lives in ``scenarios/aml_progression.toml`` with its source; this module only says
what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from marrow_abm import rules as R
from marrow_abm.schema import (
    CHECKS, ArrayOf, Context, Key, Map, Node, Table, cell_kind_table, dotted, nearest,
    register_cell_kind, register_section, type_name,
)

# --------------------------------------------------------------------------------------------
# Vocabulary (MODEL.md section 6). Signals: field values at the cell (every field, added by the
# rules module), contact, zone, local leukemic density, burden, pSmad, drug exposure.

LEUKEMIC = ("lsc", "blast")
R.register_signal("contact_blc", "Number of BLC among the cell's 8 neighbours (0–8).", "cells",
                  LEUKEMIC)
R.register_signal("contact_msc", "Number of MSC among the cell's 8 neighbours (0–8).", "cells",
                  LEUKEMIC)
R.register_signal("bound", "1 while the cell adheres to a neighbouring BLC through OPN, else 0.",
                  "", LEUKEMIC)
for _zone in ("endosteal", "intermediate", "central", "perivascular"):
    R.register_signal(_zone, f"1 if the cell's voxel is in the {_zone} zone, else 0.", "")
R.register_signal("leukemic_density", "Fraction of the cell's 8 neighbours that are leukemic "
                  "(LSC or blast).", "fraction")
R.register_signal("burden", "Leukemic fraction of all marrow voxels (whole section).",
                  "fraction")
R.register_signal("psmad", "The BLC's own pSmad2/3 activity (0–1).", "", ("blc",))
R.register_signal("tgfbr2", "The BLC's own Tgfbr2 level (relative to healthy = 1).", "",
                  ("blc",))
R.register_signal("tgfb_receptor", "TGF-β1 engaging the BLC's receptors: TGF-β1 at the cell × "
                  "active (uninhibited) Tgfbr2.", "normalised", ("blc",))
R.register_signal("cytarabine", "Plasma cytarabine, averaged over the step.", "mg/L")
R.register_signal("doxorubicin", "Doxorubicin exposure (one-compartment concentration), "
                  "averaged over the step.", "mg/L")

_LEUK_BEHAVIOURS = {
    "g0_entry_per_h": ("Rate at which a G1 cell enters G0 (Ki67-; p21/p57 dormancy drive).",
                       "1/h", 0.0, 100.0),
    "g0_exit_per_h": ("Rate at which a G0 cell re-enters G1.", "1/h", 0.0, 100.0),
    "g1_exit_per_h": ("Rate of G1 -> S (1 / mean G1 duration).", "1/h", 0.0, 100.0),
    "division_per_h": ("Rate of completing S-G2-M with a division (1 / mean S-G2-M duration).",
                       "1/h", 0.0, 100.0),
    "death_per_h": ("Death hazard in any phase.", "1/h", 0.0, 100.0),
    "s_phase_death_per_h": ("Extra death hazard of cells in S-G2-M (S-phase-specific "
                            "cytotoxics such as cytarabine).", "1/h", 0.0, 1000.0),
    "cycling_death_per_h": ("Extra death hazard of cycling cells, G1 and S-G2-M (G0 spared; "
                            "anthracyclines such as doxorubicin).", "1/h", 0.0, 1000.0),
    "migration_per_h": ("Rate of stepping to a free neighbouring voxel (unbound cells).", "1/h",
                        0.0, 100.0),
    "chemotaxis_opn": ("Probability that a step goes up the OPN gradient.", "probability",
                       0.0, 1.0),
    "adhesion_per_h": ("Rate of binding a neighbouring BLC (through OPN and its receptors).",
                       "1/h", 0.0, 100.0),
    "detachment_per_h": ("Rate of letting go of the BLC.", "1/h", 0.0, 100.0),
    "tgfb_secretion_per_h": ("TGF-β1 secreted into the cell's voxel.", "concentration/h", 0.0,
                             1e6),
}
for _kind in LEUKEMIC:
    for _name, (_desc, _unit, _lo, _hi) in _LEUK_BEHAVIOURS.items():
        R.register_behaviour(_kind, _name, _desc, _unit, _lo, _hi)
R.register_behaviour("blc", "tgfbr2_target", "Tgfbr2 level the BLC relaxes to (healthy = 1).",
                     "relative", 0.0, 100.0)
R.register_behaviour("blc", "psmad_target", "pSmad2/3 activity the BLC relaxes to.", "", 0.0,
                     1.0)
R.register_behaviour("blc", "opn_secretion_per_h", "OPN secreted into the BLC's voxel.",
                     "concentration/h", 0.0, 1e6)
R.register_behaviour("blc", "death_per_h", "BLC loss hazard.", "1/h", 0.0, 100.0)
R.register_behaviour("msc", "division_per_h", "MSC division hazard (daughter into a free "
                     "neighbouring voxel).", "1/h", 0.0, 100.0)
R.register_behaviour("msc", "death_per_h", "MSC loss hazard.", "1/h", 0.0, 100.0)


# --------------------------------------------------------------------------------------------
# Schema nodes

def _float(description: str, unit: str = "", **kw: Any) -> Key:
    return Key("float", description, unit, **kw)


def _int(description: str, **kw: Any) -> Key:
    return Key("int", description, "", **kw)


@dataclass(frozen=True)
class BehaviourBases(Node):
    """``[behaviours.<kind>]``: the base value of every behaviour of that kind (the rules
    vocabulary, ``marrow_abm.rules.BEHAVIOURS``, read when validating so later topics can
    register kinds and behaviours)."""

    description: str
    required: bool = False

    def _table(self, kind: str) -> Table:
        return Table(f"Base values of the {kind} behaviours (rules move them with signals).", {
            name: _float(b.description, b.unit, min=b.min,
                         max=b.max if math.isfinite(b.max) else 1e12)
            for name, b in R.BEHAVIOURS[kind].items()
        })

    def child(self, name: str) -> Node | None:
        return self._table(name) if name in R.BEHAVIOURS else None

    def walk(self, prefix: str) -> Iterator[tuple[str, Node]]:
        yield prefix, self
        for kind in R.BEHAVIOURS:
            yield from self._table(kind).walk(f"{prefix}.{kind}")

    def validate(self, value: Any, path, ctx: Context) -> dict:
        if not isinstance(value, dict):
            raise ctx.error(path, f"expected a table, got {type_name(value)}", f"[{dotted(path)}]")
        out = {}
        for kind, item in value.items():
            if kind not in R.BEHAVIOURS:
                raise ctx.error((*path, kind), f"no behaviours are registered for kind {kind!r}; "
                                f"kinds: {', '.join(R.rule_kinds())}",
                                nearest(kind, R.rule_kinds(), cutoff=0.4))
            out[kind] = self._table(kind).validate(item, (*path, kind), ctx)
        return out


RULE = Table("One signal -> behaviour rule (PhysiCell rules grammar).", {
    "kind": Key("str", "Cell kind the rule acts on (`lsc`, `blast`, `blc`, `msc` ...)."),
    "signal": Key("str", "Signal: a field name or a registered signal (see docs/model.md)."),
    "direction": Key("choice", "Whether the signal raises or lowers the behaviour.",
                     choices=R.DIRECTIONS),
    "behaviour": Key("str", "Behaviour of that kind (see [behaviours.<kind>])."),
    "max_response": _float("Behaviour value at saturating signal (max for increases, min for "
                           "decreases).", "behaviour unit", min=0.0, max=1e12),
    "half_max": _float("Signal value of half the response.", "signal unit", min=0.0,
                       max=1e12, min_open=True),
    "hill_power": _float("Hill coefficient.", "", min=0.0, max=100.0, min_open=True),
    "applies_to_dead": Key("bool", "Whether dead cells respond (PhysiCell column).",
                           required=False),
})

_WINDOW = {
    "start_day": _float("Day the intervention starts.", "d", min=0.0, max=3650.0),
    "stop_day": _float("Day it stops (exclusive).", "d", min=0.0, max=3650.0),
    "courses": _int("How many times the window [start_day, stop_day) is given (default 1): "
                    "course k runs from start_day + k·course_every_days, with the same doses "
                    "(e.g. induction then consolidation).", min=1, max=1000, required=False),
    "course_every_days": _float("Days from the start of one course to the start of the next "
                                "(needed when courses > 1; at least the course length, so "
                                "courses do not overlap).", "d", min=0.0, max=3650.0,
                                min_open=True, required=False),
}


def _intervention(description: str, extra: dict[str, Node]) -> Table:
    return Table(description, {**_WINDOW, **extra}, required=False)


_INHIBITION = _float("Fraction of the target's activity removed while active.", "fraction",
                     min=0.0, max=1.0)

def _bolus(dose_note: str, half_life_note: str) -> dict[str, Node]:
    """Keys of a drug given as repeated IV boluses with one-compartment PK."""
    return {
        "dose_mg_per_kg": _float(f"Dose per injection ({dose_note}).", "mg/kg", min=0.0,
                                 max=1e4),
        "every_h": _float("Dosing interval.", "h", min=0.0, max=8760.0, min_open=True),
        "half_life_h": _float(f"Elimination half-life ({half_life_note}).", "h", min=0.0,
                              max=1000.0, min_open=True),
        "volume_l_per_kg": _float("Volume of distribution.", "L/kg", min=0.0, max=1000.0,
                                  min_open=True),
    }


INTERVENTIONS: dict[str, Node] = {
    "chemo": _intervention("Cytarabine-like chemotherapy: IV bolus doses, one-compartment PK; "
                           "kills through the `cytarabine` signal of the rules "
                           "(s_phase_death_per_h). MODEL.md §7.", _bolus(
                               "mouse regimen 100 mg/kg/day × 5 d, MODEL.md §7",
                               "mouse 0.3–0.5 h, human 1–3 h; MODEL.md §7")),
    "doxorubicin": _intervention("Anthracycline (doxorubicin-like), the '+3' of the mouse '5+3' "
                                 "induction (PARAMETERS.md 1.9): IV bolus doses, "
                                 "one-compartment PK; kills through the `doxorubicin` signal "
                                 "of the rules (cycling_death_per_h).", _bolus(
                                     "mouse '5+3': 3 mg/kg × 3 d, PARAMETERS.md 1.9",
                                     "terminal, human 20–48 h; mouse tissue ≈ 25 h")),
    "tgfb_secretion_block": _intervention("Block LSC (and blast) TGF-β1 secretion.",
                                          {"inhibition": _INHIBITION}),
    "tgfb_neutralisation": _intervention("Neutralising TGF-β1 antibody: extra first-order "
                                         "removal of TGF-β1 on every marrow voxel.", {
        "extra_decay_per_h": _float("Added removal rate.", "1/h", min=0.0, max=1e6),
    }),
    "tgfbr2_inhibition": _intervention("Inhibit BLC Tgfbr2 (receptor activity and uptake).",
                                       {"inhibition": _INHIBITION}),
    "opn_inhibition": _intervention("Inhibit BLC OPN production.", {"inhibition": _INHIBITION}),
    "opn_receptor_block": _intervention("Block the leukemic OPN receptor (CD44/integrins): no "
                                        "OPN sensing, adhesion or chemotaxis.",
                                        {"inhibition": _INHIBITION}),
    "transwell": _intervention("In-silico transwell: fields intact, no leukemic–BLC contact.",
                               {}),
    "tgfb_supplement": _intervention("Recombinant TGF-β1 added uniformly to the marrow.", {
        "source_per_h": _float("Added TGF-β1 per marrow voxel.", "concentration/h", min=0.0,
                               max=1e6),
    }),
}

LEUKEMIA = Table("Leukemia stem cells (L-GMP) and blasts (MODEL.md §3, hypotheses 1–6).", {
    "n_lsc_initial": _int("LSC placed at the start (transplanted cells that homed).", min=0,
                          max=10_000_000),
    "n_blast_initial": _int("Blasts placed at the start.", min=0, max=10_000_000),
    "p_symmetric_self_renewal": _float("Probability that an LSC division gives two LSC "
                                       "(else one LSC and one blast).", "probability",
                                       min=0.0, max=1.0),
    "blast_divisions": _int("Divisions a new blast has left before it differentiates and "
                            "leaves the marrow (MODEL.md hypothesis 6).", min=0, max=100),
    "division_radius_voxels": _int("How far (Chebyshev voxels) a daughter may push normal "
                                   "tissue aside when no neighbour is free.", min=1, max=5),
    "update_order": Key("choice", "How leukemic cells are scheduled within a step: `phased` "
                        "(every cell's rules, then every cell's cycle with divisions in random "
                        "order, then every cell's movement in random order) or "
                        "`random_sequential` (each cell decides from its signals at the start "
                        "of the step in one parallel pass with counter-based random numbers, "
                        "then dividers and movers act one at a time in one random order, as "
                        "Mesa's shuffle_do; 1.0–1.3× faster in the leukemic phases, "
                        "docs/performance.md). docs/model.md §3.",
                        choices=("phased", "random_sequential")),
    "blc_tgfbr2_relax_h": _float("Time constant of BLC Tgfbr2 towards its target.", "h",
                                 min=0.0, max=1e4, min_open=True),
    "blc_psmad_relax_h": _float("Time constant of BLC pSmad2/3 towards its target.", "h",
                                min=0.0, max=1e4, min_open=True),
    "blc_tgfb_uptake_per_h": _float("TGF-β1 uptake by a BLC per unit of active Tgfbr2.", "1/h",
                                    min=0.0, max=1e6),
    "psmad_active_threshold": _float("pSmad2/3 above which a BLC counts as pSmad+ "
                                     "(`frac_blc_psmad`).", "", min=0.0, max=1.0),
})

register_cell_kind("lsc", cell_kind_table(
    "Leukemia stem cells (L-GMP; Krivtsov 2006 Nature): constant per-kind secretion/uptake "
    "(rule-driven rates come from [behaviours.lsc]).", {}))
register_cell_kind("blast", cell_kind_table(
    "Leukemic blasts (bulk AML): constant per-kind secretion/uptake.", {}))

register_section("leukemia", Table(LEUKEMIA.description, LEUKEMIA.entries, required=False))
register_section("behaviours", BehaviourBases("Base value of every behaviour, per cell kind; "
                                              "rules move them with signals (MODEL.md §6)."))
register_section("rules", ArrayOf("Signal -> behaviour rules (MODEL.md §6), each printed back "
                                  "in English by `marrow-abm check`.", RULE, required=False))
register_section("rules_csv", Key("list", "PhysiCell v3 rules CSV files (cell_type, signal, "
                                  "direction, behavior, saturation, half_max, hill_power, "
                                  "apply_to_dead), relative to the file that names them; read "
                                  "after [[rules]].", item=Key("path", "A rules CSV file."),
                                  required=False))
register_section("interventions", Map("Interventions with start/stop days (MODEL.md §7); any "
                                      "combination.", "<intervention>", registry=INTERVENTIONS,
                                      required=False))


# --------------------------------------------------------------------------------------------
# Cross-key checks

def _check_rules(data: dict, ctx: Context) -> None:
    """Every rule names a known kind, signal and behaviour (or fails with a suggestion)."""
    if not data.get("rules") and not data.get("rules_csv"):
        return
    triples = R.rules_from_data(data, ctx.base_dir, ctx.source_of)
    R.check_rules(triples, data.get("fields", {}), data.get("behaviours", {}))


def _check_leukemia(data: dict, ctx: Context) -> None:
    """A leukemia scenario needs base values for every kind it simulates, and its fields."""
    if "leukemia" not in data:
        return
    for kind in ("blc", "msc", "lsc", "blast"):
        if kind not in data.get("behaviours", {}):
            raise ctx.error(("behaviours", kind), "a scenario with [leukemia] needs base values "
                            f"of the {kind} behaviours ([behaviours.{kind}])")
    for name in ("tgfb", "opn"):
        if name not in data["fields"]:
            raise ctx.error(("fields", name), f"a scenario with [leukemia] needs the {name} field")


def _check_windows(data: dict, ctx: Context) -> None:
    for name, item in (data.get("interventions") or {}).items():
        if item["stop_day"] < item["start_day"]:
            raise ctx.error(("interventions", name, "stop_day"),
                            f"{item['stop_day']:g} is before start_day {item['start_day']:g}",
                            f"interventions.{name}.stop_day = {item['start_day']:g}")
        courses = int(item.get("courses", 1))
        if courses > 1:
            length = item["stop_day"] - item["start_day"]
            every = item.get("course_every_days")
            if every is None:
                raise ctx.error(("interventions", name, "courses"),
                                f"{courses} courses need course_every_days (days from one "
                                "course's start to the next)",
                                f"interventions.{name}.course_every_days = {max(length, 1.0):g}")
            if every < length - 1e-9:
                raise ctx.error(("interventions", name, "course_every_days"),
                                f"{every:g} d is shorter than one course ({length:g} d from "
                                "start_day to stop_day): courses would overlap",
                                f"interventions.{name}.course_every_days = {length:g}")


CHECKS.extend([_check_rules, _check_leukemia, _check_windows])
