"""Schema of the MDS megakaryopoiesis topic: ``[megakaryocytes]``, ``[blood]``, ``[pk]``, ``[drugs]``.

Defaults live in ``scenarios/healthy_steady_state.toml`` (the topic's base scenario), the drug
table in ``scenarios/drugs/panel.toml``.

The drug table is data, not code, and lives in its own file because it is shared by every
scenario of the topic and is long (nine drugs, six targets, two species, a source per number).
``pk.drug_table`` points to it; at load time the check ``resolve_drug_table`` reads it, lays the
scenario's own ``[drugs.<name>]`` keys over it (so ``--set drugs.crizotinib.targets.aurka.ic50_nm=300``
or a sweep can vary any potency), validates the result with the same schema nodes as every other
key (an error names the drug-table file and the dotted key, with the nearest valid key) and puts
the whole table into the resolved scenario, so the manifest and the digest carry every number
the run used.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

from marrow_abm.errors import ScenarioError
from marrow_abm.schema import (
    CHECKS,
    ArrayOf,
    Context,
    Key,
    Map,
    Table,
    nearest,
    register_section,
)

SPECIES = ("mouse", "human")
#: Targets a drug table may name (MODEL.md §7): the crizotinib targets and the mitotic kinases.
TARGETS: tuple[str, ...] = ("alk", "ros1", "met", "aurka", "aurkb", "plk1")
_KINDS_DISPLACING = ("lsc", "blast", "mkp", "mk")


def _f(description: str, unit: str = "", required: bool = True, **kw: Any) -> Key:
    return Key("float", description, unit, required=required, **kw)


_POS = {"min": 0.0, "max": 1e12, "min_open": True}
_NONNEG = {"min": 0.0, "max": 1e12}

MEGAKARYOCYTES = Table("Megakaryopoiesis rules (MODEL.md §3, §6 hypotheses 7–9; "
                       "marrow_abm/biology/megakaryocytes.py).", {
    "influx_per_marrow_voxel_per_h": _f("Rate at which the implicit normal marrow commits MK "
                                        "progenitors, per marrow voxel (calibrated to MK ≈ "
                                        "0.1–0.2% of marrow cells).", "1/h", **_NONNEG),
    "cycle_h": _f("MK-lineage cycle time (mitosis or endomitosis).", "h", min=0.1, max=500.0),
    "cycle_jitter": _f("Cycle times are uniform within ± this fraction of `cycle_h`.",
                       "fraction", min=0.0, max=0.95),
    "max_cycles": Key("int", "Mitoses a lineage makes before maturation (cycle budget).", "",
                      min=1, max=12),
    "max_ploidy_n": Key("int", "Highest ploidy; a cell reaching it stops cycling.", "N",
                        min=2, max=128),
    "mkp_death_per_h": _f("Death rate of MK progenitors (ineffective haematopoiesis).", "1/h",
                          **_NONNEG),
    "logit_endo_base": _f("Log-odds of endomitosis of a 2N cell at unit kinase activities.", "",
                          min=-50.0, max=50.0),
    "logit_endo_per_doubling": _f("Added log-odds of endomitosis per ploidy doubling "
                                  "(commitment).", "", min=-50.0, max=50.0),
    "kinase_weight": Table("Weight w_k of each mitotic kinase: log-odds of endomitosis fall by "
                           "w_k ln(activity_k).", {
        k: _f(f"Weight of {k.upper()} activity.", "", min=0.0, max=50.0)
        for k in ("aurka", "aurkb", "plk1")}),
    "genotype_activity": Table("Genotype multiplier of each kinase's activity (1 healthy; > 1 "
                               "the MDS E2F/mitosis signature).", {
        k: _f(f"{k.upper()} activity multiplier.", "", min=0.0, max=100.0)
        for k in ("aurka", "aurkb", "plk1")}),
    "maturation_h": _f("Cytoplasmic maturation after the last cycle.", "h", min=0.0, max=1000.0),
    "shedding_h": _f("Duration of proplatelet shedding at a sinusoid.", "h", min=0.0, max=500.0,
                     min_open=True),
    "platelets_per_ploidy_n": _f("Platelets shed per N of ploidy (calibrated, "
                                 "docs/calibration.md).", "platelets/N", **_NONNEG),
    "complete_half_ploidy_n": _f("Ploidy at which half the MK complete maturation.", "N",
                                 **_POS),
    "complete_hill": _f("Hill power of maturation completion in ploidy.", "", min=0.0,
                        max=20.0),
    "diameter_16n_um": _f("Diameter of a 16N MK; diameter ∝ ploidy^(1/3).", "µm", **_POS),
    "spinup_days": _f("Lineage-only run before t = 0 to reach its steady state.", "d",
                      min=0.0, max=100.0),
})


def _lineage(name: str) -> Table:
    return Table(f"{name} transit chain (Friberg 2002).", {
        "circ0_per_ul": _f(f"Healthy steady-state {name} count.", "1/µL", **_POS),
        "mtt_h": _f("Mean transit time through proliferation and transit compartments.", "h",
                    min=1.0, max=10000.0),
        "gamma": _f("Feedback exponent of (Circ0/Circ).", "", min=0.0, max=5.0),
        "lifespan_h": _f("Mean residence in the circulation.", "h", min=0.1, max=100000.0),
    })


BLOOD = Table("Blood compartments: platelets from the section, WBC and RBC from normal marrow "
              "(marrow_abm/biology/blood.py).", {
    "marrow_cells_whole_animal": _f("Nucleated marrow cells of the whole animal (scales the "
                                    "section to the animal).", "cells", **_POS),
    "blood_volume_ul": _f("Blood volume.", "µL", **_POS),
    "platelet_lifespan_d": _f("Mean platelet lifespan.", "d", min=0.01, max=100.0),
    "platelet_age_compartments": Key("int", "Age compartments of circulating platelets (1 = "
                                     "random clearance).", "", min=1, max=100),
    "platelets_initial_per_ul": _f("Starting platelet count when no megakaryocyte module "
                                   "runs.", "1/µL", **_NONNEG),
    "displacing_kinds": Key("list", "Cell kinds that displace normal haematopoietic tissue.",
                            item=Key("choice", "A cell kind.", choices=_KINDS_DISPLACING)),
    "wbc": _lineage("White-cell"),
    "rbc": _lineage("Red-cell"),
    "transfusions": ArrayOf("Platelet transfusions: boluses into the blood.", Table(
        "One transfusion.", {
            "time_h": _f("When (simulation time).", "h", min=0.0, max=1e6),
            "platelets_per_ul": _f("Rise in the platelet count it gives.", "1/µL", **_NONNEG),
        })),
})

DOSE = Table("One dosing line: `n_doses` doses every `interval_h` from `first_h`.", {
    "drug": Key("str", "Drug name in the drug table."),
    "dose_mg_per_kg": _f("Dose.", "mg/kg", **_NONNEG),
    "route": Key("choice", "oral: first-order absorption; iv: bolus into plasma.",
                 choices=("oral", "iv")),
    "first_h": _f("Time of the first dose (simulation time).", "h", min=0.0, max=1e6),
    "interval_h": _f("Dosing interval.", "h", min=0.0, max=1e6, min_open=True),
    "n_doses": Key("int", "Number of doses.", "", min=0, max=100000),
})

PK = Table("Drug exposure (marrow_abm/biology/pk.py).", {
    "species": Key("choice", "Whose PK parameters the drugs use.", choices=SPECIES),
    "drug_table": Key("path", "TOML file of the drug table ([drugs.<name>]), relative to the "
                      "file that sets it."),
    "regimen": Key("str", "Name of the regimen (under `pk.regimens`) given; `none` for no drug. "
                   "Sweep this key to compare drugs."),
    "regimens": Map("Named dosing regimens.", "<regimen>", item=Table("A regimen.", {
        "description": Key("str", "What the regimen is, with its source."),
        "doses": ArrayOf("Dosing lines.", DOSE),
    })),
})


def _drug(required: bool) -> Table:
    """Schema of one drug; ``required=False`` for the partial overlay a scenario may set."""
    target = Table("Potency against one target.", {
        "ic50_nm": _f("Half-maximal inhibitory free concentration.", "nM", required=required,
                      **_POS),
        "hill": _f("Hill coefficient.", "", required=required, min=0.1, max=10.0),
    }, required=False)
    species = Table("One-compartment PK with first-order absorption.", {
        "ka_per_h": _f("Absorption rate constant.", "1/h", required=required, **_POS),
        "cl_l_per_h_per_kg": _f("Clearance (CL/F for oral).", "L/h/kg", required=required,
                                **_POS),
        "v_l_per_kg": _f("Volume of distribution (V/F for oral).", "L/kg", required=required,
                         **_POS),
        "fu": _f("Fraction unbound in plasma.", "fraction", required=required, min=0.0,
                 max=1.0, min_open=True),
        "lag_h": _f("Absorption lag of oral doses.", "h", required=required, min=0.0, max=48.0),
    }, required=required)
    return Table("A drug: molecular weight, targets, species PK, off-target myelotoxicity.", {
        "description": Key("str", "What the drug is.", required=required),
        "mw_g_per_mol": _f("Molecular weight.", "g/mol", required=required, **_POS),
        "targets": Map("Targets and potencies; a target not listed is not inhibited.",
                       "<target>", registry={t: target for t in TARGETS}, required=required),
        "pk": Map("PK by species.", "<species>", registry={s: species for s in SPECIES},
                  required=required),
        "myelotoxicity": Table("Off-target loss of normal-progenitor proliferation: "
                               "E = emax C^h/(C^h + EC50^h) on free C.", {
            "emax": _f("Maximal fractional loss.", "fraction", required=required, min=0.0,
                       max=1.0),
            "ec50_nm": _f("Half-maximal free concentration.", "nM", required=required, **_POS),
            "hill": _f("Hill coefficient.", "", required=required, min=0.1, max=10.0),
        }, required=required),
    }, required=required)


DRUG = _drug(True)
DRUGS_TABLE = Map("The drug table.", "<drug>", item=DRUG)
DRUGS_OVERLAY = Map("Overrides of drug-table entries (`pk.drug_table`); any key of a drug, "
                    "e.g. `drugs.crizotinib.targets.aurka.ic50_nm`.", "<drug>", item=_drug(False),
                    required=False)

# Optional sections: the foundation scenario has none of them, and a module runs only when its
# section is present (``applies``).
register_section("megakaryocytes", Table(MEGAKARYOCYTES.description, MEGAKARYOCYTES.entries,
                                         required=False))
register_section("blood", Table(BLOOD.description, BLOOD.entries, required=False))
register_section("pk", Table(PK.description, PK.entries, required=False))
register_section("drugs", DRUGS_OVERLAY)


def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
            else copy.deepcopy(v)
    return out


def _paths(d: Any, prefix: tuple = ()) -> set[tuple]:
    if not isinstance(d, dict):
        return {prefix}
    out = {prefix}
    for k, v in d.items():
        out |= _paths(v, (*prefix, k))
    return out


def load_drug_table(file: Path, overlay: dict | None = None, ctx: Context | None = None) -> dict:
    """Read, overlay and validate a drug table; returns name -> validated entry.

    Args:
        file: the drug-table TOML file (``[drugs.<name>]`` tables).
        overlay: partial entries laid over the file's (from the scenario's ``[drugs]``).
        ctx: the scenario's context, for naming where overlay keys came from.

    Raises:
        ScenarioError: unreadable file, unknown key, wrong type or value (file + dotted key).
    """
    shown = os.path.relpath(file) if not Path(file).is_absolute() else str(file)
    try:
        with open(file, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ScenarioError(f"cannot read the drug table: {exc.strerror}", file=shown) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML: {exc}", file=shown) from None
    extra = sorted(set(doc) - {"description", "drugs"})
    if extra:
        raise ScenarioError("unknown key in a drug table (it holds `description` and "
                            "[drugs.<name>] tables)", file=shown, key=extra[0],
                            suggestion=nearest(extra[0], ["drugs", "description"], 0.4))
    table = doc.get("drugs", {})
    overlay = overlay or {}
    from_scenario = _paths(overlay, ("drugs",))

    def source_of(path: tuple) -> str:
        if ctx is not None and tuple(path) in from_scenario:
            return ctx.source_of(tuple(path))
        return shown

    merged = _deep_merge(table, overlay) if isinstance(table, dict) else table
    inner = Context(root={"drugs": merged}, source_of=source_of,
                    dir_of=lambda p: Path(file).parent, base_dir=Path(file).parent)
    return DRUGS_TABLE.validate(merged, ("drugs",), inner)


def resolve_drug_table(data: dict, ctx: Context) -> None:
    """CHECK: load ``pk.drug_table`` into ``data["drugs"]`` and check the regimens' names."""
    if "pk" not in data:
        if "drugs" in data:
            raise ctx.error(("drugs",), "drug overrides need a [pk] table with pk.drug_table")
        return
    pk = data["pk"]
    rel = pk["drug_table"]
    file = Path(os.path.normpath(ctx.base_dir / rel))
    if not file.is_file():
        try:
            present = [p.name for p in file.parent.iterdir() if p.suffix == ".toml"]
        except OSError:
            present = []
        close = nearest(file.name, present, cutoff=0.4)
        raise ctx.error(("pk", "drug_table"), f"drug table not found: {file}",
                        (Path(rel).parent / close).as_posix() if close else None)
    drugs = load_drug_table(file, data.get("drugs"), ctx)
    data["drugs"] = drugs
    regimens = pk["regimens"]
    if pk["regimen"] not in regimens:
        raise ctx.error(("pk", "regimen"), f"unknown regimen {pk['regimen']!r}; defined: "
                        f"{', '.join(regimens) or 'none'}", nearest(pk["regimen"], regimens, 0.4))
    for rname, regimen in regimens.items():
        for i, dose in enumerate(regimen["doses"]):
            if dose["drug"] not in drugs:
                raise ctx.error(("pk", "regimens", rname, "doses", i, "drug"),
                                f"unknown drug {dose['drug']!r}; the drug table has: "
                                f"{', '.join(drugs)}", nearest(dose["drug"], drugs, 0.4))
            if rname == pk["regimen"] and pk["species"] not in drugs[dose["drug"]]["pk"]:
                raise ctx.error(("pk", "species"), f"drug {dose['drug']!r} has no "
                                f"{pk['species']} PK in the drug table ({rel})")


CHECKS.append(resolve_drug_table)

__all__ = ["BLOOD", "DRUG", "MEGAKARYOCYTES", "PK", "load_drug_table", "resolve_drug_table"]
