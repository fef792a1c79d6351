"""Claims A1–A7 of MODEL.md section 9 (seed 000, AML niche) as statistical tests over replicates.

Every claim is validation: the scenario inputs were calibrated only on cycle time, time to a
leukemic marrow and the G0 fraction away from the niche (``scenarios/aml_progression.toml``).
``run(out_dir, quick=...)`` simulates the bundled ``aml_*`` scenarios (quick: a 250 µm-radius
section and few replicates, as in ``tests/test_claims_aml.py``; full: the default femur section
and more replicates), tests each claim, draws the figures and returns one ``ClaimResult`` each.
Replicate *i* of every scenario shares its random streams (paired comparisons).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import ClaimResult, process_pool, pyplot, save_figure

TOPIC = "aml"
TITLE = "AML niche (seed 000): claims A1–A7"

ALPHA = 0.05


@dataclass(frozen=True)
class Plan:
    """Sizes of one claims run."""

    overrides: tuple[str, ...]
    replicates: int
    days: float          # niche-phase runs (A1, A2, A5, A6)
    progression_days: float
    chemo_start_day: float
    chemo_courses: int         # 5+3 courses: induction, then consolidation
    course_every_days: float   # from one course's start to the next
    follow_up_days: float      # after the last course, for relapse
    a6_scenarios: tuple[str, ...]   # the broken links tested in A6
    chemo_replicates: int   # A7 pairs
    dose_replicates: int    # per TGF-β1 dose (A4 dose-response, BLC only: little noise)

    @property
    def induction_end_day(self) -> float:
        """End of the first 5+3 course (5 days of cytarabine)."""
        return self.chemo_start_day + 5.0

    @property
    def therapy_end_day(self) -> float:
        """End of the last course."""
        return self.chemo_start_day + (self.chemo_courses - 1) * self.course_every_days + 5.0

    @property
    def chemo_days(self) -> float:
        """Length of the chemotherapy runs: the therapy and its follow-up."""
        return self.therapy_end_day + self.follow_up_days


# The four links MODEL.md names for A6 (ligand secretion, receptor on BLC, OPN, OPN receptor);
# the full run adds TGF-β1 neutralisation, which the quick run tests through A7 only.
A6_LINKS = ("aml_tgfb_secretion_block", "aml_tgfbr2_inhibition", "aml_opn_inhibition",
            "aml_opn_receptor_block")
A6_SCENARIOS = A6_LINKS[:1] + ("aml_tgfb_blockade",) + A6_LINKS[1:]

QUICK = Plan(("geometry.marrow_radius_um=250", "geometry.cortex_thickness_um=60",
              "run.record_every_h=24"), replicates=8, days=10.0, progression_days=16.0,
             chemo_start_day=10.0, chemo_courses=2, course_every_days=14.0,
             follow_up_days=42.0, a6_scenarios=A6_LINKS,
             chemo_replicates=8, dose_replicates=2)
FULL = Plan(("run.record_every_h=24",), replicates=8, days=14.0, progression_days=28.0,
            chemo_start_day=14.0, chemo_courses=2, course_every_days=14.0,
            follow_up_days=42.0, a6_scenarios=A6_SCENARIOS,
            chemo_replicates=12, dose_replicates=3)

#: Haematological relapse: leukemic cells ≥ 5% of marrow cells after chemotherapy, the ELN
#: definition (bone-marrow blasts ≥ 5% after complete remission; Döhner et al. 2017 Blood
#: 129:424, unchanged in ELN 2022). Here the fraction of the section's marrow voxels holding an
#: LSC or blast (the ``burden`` metric of the whole section).
RELAPSE_BURDEN = 0.05

#: "Leukemia relapses from them" (A7): the share of chemo-alone replicates that must relapse
#: within follow-up. Not all: induction plus consolidation cures some mice (early treatment
#: cured some xenografted mice in Wunderlich et al. 2013 Blood 121:e90).
RELAPSE_MIN_SHARE = 0.5


def _courses(name: str, start_day: float, stop_day: float, plan: Plan) -> tuple[str, ...]:
    """``--set`` strings giving intervention ``name`` the window [start, stop) once per course of
    the plan (``courses``, ``course_every_days``)."""
    return (f"interventions.{name}.start_day={start_day}",
            f"interventions.{name}.stop_day={stop_day}",
            f"interventions.{name}.courses={plan.chemo_courses}",
            f"interventions.{name}.course_every_days={plan.course_every_days}")


def simulate(name: str, overrides: tuple[str, ...], replicate: int, days: float,
             snapshot_days: tuple[float, ...] = ()) -> tuple[pd.DataFrame, dict[float, pd.DataFrame]]:
    """Run one replicate of a bundled scenario; return its records and leukemic-cell snapshots.

    Args:
        name: scenario name.
        overrides: ``--set`` strings.
        replicate: replicate index (seed = the scenario's).
        days: simulated days.
        snapshot_days: days at which to take ``LeukemiaModule.snapshot()``.
    """
    import numba

    numba.set_num_threads(1)   # one numba thread per worker: spinning threads starve others
    from ..biology.leukemia import LeukemiaModule, find_module
    from ..engine import Engine
    from ..scenario import load_scenario

    eng = Engine(load_scenario(name, list(overrides)), replicate=replicate)
    leuk = find_module(eng, LeukemiaModule)
    snaps: dict[float, pd.DataFrame] = {}
    total = eng.n_steps_for(days)
    want = {eng.n_steps_for(d): d for d in snapshot_days}
    for i in range(1, total + 1):
        eng.step()
        if i in want:
            snaps[want[i]] = leuk.snapshot()
    return eng.records(), snaps


def simulate_arms(base: str, arms: tuple[tuple[str, tuple[str, ...]], ...], overrides: tuple[str, ...],
                  replicate: int, fork_day: float, days: float,
                  snapshot_days: tuple[float, ...] = ()) -> list:
    """Run ``base`` to ``fork_day``, then each arm (scenario name, extra overrides) to ``days``.

    Returns one ``(records, snapshots)`` per arm, as ``simulate``.
    """
    import numba

    numba.set_num_threads(1)
    from ..biology.leukemia import LeukemiaModule, find_module
    from ..engine import Engine
    from ..scenario import load_scenario

    eng = Engine(load_scenario(base, list(overrides)), replicate=replicate)
    for _ in range(eng.n_steps_for(fork_day)):
        eng.step()
    out = []
    for name, extra in arms:
        arm = eng.fork(load_scenario(name, list(overrides + extra)))
        leuk = find_module(arm, LeukemiaModule)
        want = {arm.n_steps_for(d): d for d in snapshot_days}
        snaps: dict[float, pd.DataFrame] = {}
        for i in range(arm.step_index + 1, arm.n_steps_for(days) + 1):
            arm.step()
            if i in want:
                snaps[want[i]] = leuk.snapshot()
        out.append((arm.records(), snaps))
    return out


def _run_many(jobs: list[tuple], workers: int) -> list:
    if workers <= 1:
        return [_star(j) for j in jobs]
    with process_pool(workers) as ex:
        return list(ex.map(_star, jobs))


def _star(job):
    if job[0] == "arms":
        return simulate_arms(*job[1:])
    return simulate(*job)


def _at(df: pd.DataFrame, zone: str, col: str, day: float, window_days: float = 2.0) -> float:
    """Mean of a metric over the records within ``window_days`` up to ``day`` in one zone."""
    d = df[(df.zone == zone) & (df.time_h <= day * 24 + 1e-9)
           & (df.time_h >= (day - window_days) * 24 - 1e-9)]
    return float(np.nanmean(d[col].to_numpy(dtype=float))) if len(d) else float("nan")


def _wilcoxon_greater(a, b) -> float:
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    if d.size == 0 or np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(d, alternative="greater").pvalue)


def _mwu_greater(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return 1.0
    return float(stats.mannwhitneyu(a, b, alternative="greater").pvalue)


# ---------------------------------------------------------------------------------------------

CLAIMS = ("A1", "A2", "A3", "A4", "A5", "A6", "A7")


def run(out_dir: Path, *, quick: bool = False, workers: int = 1,
        overrides: Sequence[str] = (), claims: Sequence[str] | None = None) -> list[ClaimResult]:
    """Simulate, test A1–A7, write figures into ``out_dir``; one ClaimResult per claim.

    Args:
        out_dir: report folder for the figures.
        quick: the small plan (``QUICK``) instead of ``FULL``.
        workers: local worker processes for replicates.
        overrides: ``--set`` strings applied to every scenario after the plan's own (so they win
            over e.g. its ``geometry.marrow_radius_um``) and before each arm's interventions;
            used for the sensitivity runs (zone widths, section size, ``run.seed``).
        claims: the claim ids to test (default all); only their simulations are run, e.g.
            ``("A7",)`` to re-check the chemotherapy claim alone.
    """
    want = set(CLAIMS if claims is None else claims)
    if not want or want - set(CLAIMS):
        from ..errors import MarrowError
        raise MarrowError(f"unknown AML claim(s) {sorted(want - set(CLAIMS))}; "
                          f"available: {', '.join(CLAIMS)}")
    plan = QUICK if quick else FULL
    plan = replace(plan, overrides=plan.overrides + tuple(overrides))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, int(workers))
    reps = range(plan.replicates)
    ov = plan.overrides
    # 5+3 courses (cytarabine days 1-5, doxorubicin days 1-3), induction then consolidation;
    # the combination adds TGF-β1 neutralisation from 3 days before each course to its end
    # (scenarios/aml_chemo.toml, aml_chemo_plus_tgfb_blockade.toml).
    t0 = plan.chemo_start_day
    chemo_ov = ov + _courses("chemo", t0, t0 + 5, plan) + _courses("doxorubicin", t0, t0 + 3, plan)
    comb_ov = chemo_ov + _courses("tgfb_neutralisation", t0 - 3, t0 + 5, plan)
    doses = (0.0, 0.1, 0.3, 1.0, 3.0)
    dose_ov = ov + ("leukemia.n_lsc_initial=0",
                    "interventions.tgfb_supplement.start_day=0",
                    "interventions.tgfb_supplement.stop_day=100")
    jobs: list[tuple] = []
    keys: list[tuple] = []

    def add(key, *job):
        keys.append(key)
        jobs.append(job)

    niche = (("aml_transwell", "aml_no_blc") if "A5" in want else ()) + (
        plan.a6_scenarios if "A6" in want else ())
    for r in reps:
        if want & {"A1", "A2", "A3", "A4", "A5", "A6"}:
            add(("prog", r), "aml_progression", ov, r, plan.progression_days, (plan.days,))
        for name in niche:
            add((name, r), name, ov, r, plan.days, ())
    # Both chemotherapy arms split from one untreated leukemia when the first treatment starts.
    arms = (("aml_chemo", chemo_ov[len(ov):]), ("aml_chemo_plus_tgfb_blockade", comb_ov[len(ov):]))
    for r in range(plan.chemo_replicates if "A7" in want else 0):
        add(("arms", r), "arms", "aml_progression", arms, ov, r, plan.chemo_start_day - 3,
            plan.chemo_days, tuple(sorted({plan.chemo_start_day, plan.induction_end_day,
                                            plan.therapy_end_day})))
    for dose in doses if "A4" in want else ():
        for r in range(plan.dose_replicates):
            add(("dose", dose, r), "aml_progression",
                dose_ov + (f"interventions.tgfb_supplement.source_per_h={dose}",), r, 4.0, ())
    results = dict(zip(keys, _run_many(jobs, workers)))
    for r in range(plan.chemo_replicates if "A7" in want else 0):
        results[("chemo", r)], results[("combo", r)] = results.pop(("arms", r))
    prog = {r: results[("prog", r)] for r in reps if ("prog", r) in results}
    tests = {"A1": lambda: _a1(prog, plan), "A2": lambda: _a2(prog, plan),
             "A3": lambda: _a3(prog, plan, out_dir), "A4": lambda: _a4(prog, plan, results, doses),
             "A5": lambda: _a5(prog, results, plan, out_dir),
             "A6": lambda: _a6(prog, results, plan, out_dir),
             "A7": lambda: _a7(results, plan, out_dir)}
    out = {c: tests[c]() for c in CLAIMS if c in want}
    if "A1" in out:
        _figure_g0(prog, out_dir, out["A1"])
    if "A2" in out:
        _figure_distance(prog, plan, out_dir, out["A2"])
    return list(out.values())


def _a1(prog, plan) -> ClaimResult:
    endo = [_at(prog[r][0], "endosteal", "frac_lsc_g0", plan.days) for r in prog]
    cent = [_at(prog[r][0], "central", "frac_lsc_g0", plan.days) for r in prog]
    p = _wilcoxon_greater(endo, cent)
    return ClaimResult(
        "A1", "G0 fraction of LSC is higher in the endosteal than in the central zone",
        p < ALPHA, f"one-sided Wilcoxon signed-rank, endosteal vs central G0 fraction of LSC at "
        f"day {plan.days:g} (mean of the last 2 days), paired over {len(endo)} replicates, "
        f"p < {ALPHA}",
        {"mean_g0_endosteal": float(np.mean(endo)), "mean_g0_central": float(np.nanmean(cent)),
         "p_value": p, "n_replicates": len(endo)},
        notes="Validation: no rule mentions a zone; dormancy follows BLC adhesion.")


def _a2(prog, plan) -> ClaimResult:
    rng = np.random.default_rng(0)
    obs, perm_stats, opn_g0, opn_cyc, sparse_cycling = 0.0, np.zeros(2000), [], [], []
    for r in prog:
        snap = prog[r][1][plan.days]
        touch = (snap["n_blc_neighbours"] > 0).to_numpy()
        g0 = snap["g0"].to_numpy()
        obs += touch[g0].sum()
        for k in range(perm_stats.size):
            perm_stats[k] += touch[rng.permutation(g0)].sum()
        opn_g0 += list(snap["opn_at"][g0])
        opn_cyc += list(snap["opn_at"][~g0])
        sparse = ~touch
        sparse_cycling.append(float(np.mean(~g0[sparse])) if sparse.any() else np.nan)
    p_perm = float((1 + np.sum(perm_stats >= obs)) / (1 + perm_stats.size))
    p_opn = _mwu_greater(opn_g0, opn_cyc)
    frac_cyc = float(np.nanmean(sparse_cycling))
    ok = p_perm < 0.01 and p_opn < 0.01 and frac_cyc > 0.5
    return ClaimResult(
        "A2", "G0 leukemic cells touch BLC more than chance and sit at higher OPN; where BLC "
        "are sparse cycling cells dominate", ok,
        "permutation of G0 labels within replicates (2000 permutations) for BLC contact, "
        "p < 0.01; one-sided Mann–Whitney U of local OPN, G0 vs cycling, p < 0.01; cycling "
        "fraction of cells with no BLC neighbour > 0.5",
        {"g0_touching_blc_observed": obs, "g0_touching_blc_expected": float(perm_stats.mean()),
         "p_permutation": p_perm, "median_opn_g0": float(np.median(opn_g0)) if opn_g0 else np.nan,
         "median_opn_cycling": float(np.median(opn_cyc)), "p_opn": p_opn,
         "frac_cycling_without_blc": frac_cyc})


def _a3(prog, plan, out_dir) -> ClaimResult:
    rho, msc_up, blc_down = [], [], []
    for r in prog:
        df = prog[r][0]
        e = df[(df.zone == "endosteal") & (df.time_h >= 7 * 24)]
        a = df[df.zone == "all"]
        rho.append(stats.spearmanr(e["n_blc"], e["frac_lsc_g0"], nan_policy="omit").statistic)
        msc_up.append(a["n_msc"].iloc[-1] > a["n_msc"].iloc[0])
        blc_down.append(a["n_blc"].iloc[-1] < a["n_blc"].iloc[0])
    rho = np.asarray(rho, float)
    p = _wilcoxon_greater(rho, np.zeros_like(rho))
    ok = p < ALPHA and all(msc_up) and all(blc_down)
    fig = out_dir / "aml_a3_niche_counts.png"
    _plot_lines(prog, {"n_blc": "BLC (Alcam+)", "n_msc": "MSC (CD51+CD140a+)"}, "all", fig,
                "BLC and MSC over progression")
    return ClaimResult(
        "A3", "With progression MSC rise, BLC fall, and endosteal G0 falls with BLC", ok,
        "MSC up and BLC down from start to end in every replicate; per-replicate Spearman "
        "correlation of endosteal BLC count with endosteal LSC G0 fraction (from day 7) > 0 by "
        f"one-sided Wilcoxon signed-rank, p < {ALPHA}",
        {"median_spearman_rho": float(np.nanmedian(rho)), "p_value": p,
         "replicates_msc_up": int(sum(msc_up)), "replicates_blc_down": int(sum(blc_down)),
         "n_replicates": len(rho)}, [fig])


def _a4(prog, plan, results, doses) -> ClaimResult:
    d = plan.days
    sec_e = [_at(prog[r][0], "endosteal", "mean_lsc_tgfb_secretion", d) for r in prog]
    sec_c = [_at(prog[r][0], "central", "mean_lsc_tgfb_secretion", d) for r in prog]
    p_sec = _wilcoxon_greater(sec_e, sec_c)
    late = plan.progression_days
    pv = {}
    for col in ("mean_blc_tgfbr2", "mean_blc_psmad", "mean_blc_opn_secretion"):
        pv[col] = _wilcoxon_greater([_at(prog[r][0], "all", col, late) for r in prog],
                                    [_at(prog[r][0], "all", col, 3.0) for r in prog])
    dose_x, opn_y, r2_y = [], [], []
    for key, (df, _) in results.items():
        if key[0] == "dose":
            dose_x.append(key[1])
            opn_y.append(_at(df, "all", "mean_blc_opn_secretion", 4.0, 0.5))
            r2_y.append(_at(df, "all", "mean_blc_tgfbr2", 4.0, 0.5))
    means_opn = [np.mean([y for x, y in zip(dose_x, opn_y) if x == dz]) for dz in doses]
    means_r2 = [np.mean([y for x, y in zip(dose_x, r2_y) if x == dz]) for dz in doses]
    mono = bool(np.all(np.diff(means_opn) > 0) and np.all(np.diff(means_r2) > 0))
    ok = p_sec < ALPHA and all(p < ALPHA for p in pv.values()) and mono
    return ClaimResult(
        "A4", "Endosteal LSC secrete more TGF-β1; BLC Tgfbr2, pSmad2/3 and OPN rise with "
        "progression and with TGF-β1 dose", ok,
        f"one-sided Wilcoxon signed-rank (paired replicates), p < {ALPHA}: endosteal vs central "
        "LSC TGF-β1 secretion; BLC Tgfbr2, pSmad2/3 and OPN secretion at the end vs day 3; "
        "dose-response (recombinant TGF-β1, BLC only, 4 days): replicate means strictly "
        "increasing in dose",
        {"lsc_tgfb_secretion_endosteal": float(np.nanmean(sec_e)),
         "lsc_tgfb_secretion_central": float(np.nanmean(sec_c)), "p_secretion": p_sec,
         **{f"p_rise_{k}": v for k, v in pv.items()},
         "dose_opn_secretion": ", ".join(f"{x:.3g}" for x in means_opn),
         "dose_tgfbr2": ", ".join(f"{x:.3g}" for x in means_r2)})


def _endo_g0(df, day):
    return _at(df, "endosteal", "frac_lsc_g0", day)


def _a5(prog, results, plan, out_dir) -> ClaimResult:
    reps = list(prog)
    ctrl = [_endo_g0(prog[r][0], plan.days) for r in reps]
    tw = [_endo_g0(results[("aml_transwell", r)][0], plan.days) for r in reps]
    nob = [_endo_g0(results[("aml_no_blc", r)][0], plan.days) for r in reps]
    p_loss = _wilcoxon_greater(ctrl, tw)
    gap = float(np.nanmean(ctrl) - np.nanmean(nob))
    closeness = abs(float(np.nanmean(tw) - np.nanmean(nob))) / gap if gap > 0 else np.inf
    ok = p_loss < ALPHA and closeness < 0.25
    return ClaimResult(
        "A5", "Transwell (no contact) loses LSC maintenance, close to a no-BLC control", ok,
        f"one-sided Wilcoxon signed-rank, control vs transwell endosteal LSC G0 fraction at day "
        f"{plan.days:g}, p < {ALPHA}; |transwell − no-BLC| < 25% of (control − no-BLC)",
        {"g0_control": float(np.nanmean(ctrl)), "g0_transwell": float(np.nanmean(tw)),
         "g0_no_blc": float(np.nanmean(nob)), "p_value": p_loss,
         "closeness_fraction": closeness})


def _a6(prog, results, plan, out_dir) -> ClaimResult:
    reps = list(prog)
    ctrl_g0 = [_endo_g0(prog[r][0], plan.days) for r in reps]
    ctrl_b = [_at(prog[r][0], "endosteal", "frac_lsc_bound", plan.days) for r in reps]
    st, ok = {}, True
    bars = {"control": (ctrl_g0, ctrl_b)}
    for name in plan.a6_scenarios:
        g0 = [_endo_g0(results[(name, r)][0], plan.days) for r in reps]
        b = [_at(results[(name, r)][0], "endosteal", "frac_lsc_bound", plan.days) for r in reps]
        pg, pb = _wilcoxon_greater(ctrl_g0, g0), _wilcoxon_greater(ctrl_b, b)
        short = name.removeprefix("aml_")
        st[f"{short}_g0"] = float(np.nanmean(g0))
        st[f"{short}_p_g0"] = pg
        st[f"{short}_bound"] = float(np.nanmean(b))
        st[f"{short}_p_bound"] = pb
        ok &= pg < ALPHA and pb < ALPHA
        bars[short] = (g0, b)
    fig = out_dir / "aml_interventions.png"
    _plot_bars(bars, fig)
    return ClaimResult(
        "A6", "Each broken link (TGF-β1 secretion, TGF-β1, Tgfbr2, OPN, OPN receptor) lowers "
        "endosteal retention and G0 fraction", bool(ok),
        f"for each intervention, one-sided Wilcoxon signed-rank vs control (paired replicates) "
        f"of the G0 fraction and of the BLC-bound fraction of endosteal LSC at day "
        f"{plan.days:g} (mean of the last 2 days), both p < {ALPHA}",
        {"control_g0": float(np.nanmean(ctrl_g0)), "control_bound": float(np.nanmean(ctrl_b)),
         **st}, [fig])


def relapse_day(df: pd.DataFrame, after_day: float, end_day: float,
                threshold: float = RELAPSE_BURDEN) -> tuple[float, bool]:
    """Days from ``after_day`` to haematological relapse, and whether it was observed.

    Relapse is the first record at or after ``after_day`` (the end of chemotherapy) at which the
    whole section's leukemic burden reaches ``threshold`` (``RELAPSE_BURDEN``, the ELN 5%). A
    section still at or above it when chemotherapy ends never went into remission and counts as
    relapsing at once (0 days). A run that stays below it is censored at ``end_day``: the
    follow-up is the same for every run, so a censored time is later than every observed one.

    Args:
        df: one run's records (``Engine.records()``).
        after_day: end of chemotherapy (day).
        end_day: end of follow-up (day).
        threshold: leukemic fraction of marrow voxels that counts as relapse.

    Returns:
        (days from ``after_day`` to relapse or to the end of follow-up, relapse observed).
    """
    a = df[(df.zone == "all") & (df.time_h >= after_day * 24 - 1e-9)
           & (df.time_h <= end_day * 24 + 1e-9)]
    hit = a.loc[a["burden"] >= threshold, "time_h"]
    if len(hit):
        return float(hit.iloc[0]) / 24.0 - after_day, True
    return end_day - after_day, False


def _logrank_later(t_a, seen_a, t_b, seen_b) -> float:
    """One-sided log-rank p that arm b relapses later than arm a (censored times allowed)."""
    def data(t, seen):
        t, seen = np.asarray(t, float), np.asarray(seen, bool)
        return stats.CensoredData(uncensored=t[seen], right=t[~seen])
    if not (np.any(seen_a) or np.any(seen_b)):
        return 1.0
    return float(stats.logrank(data(t_a, seen_a), data(t_b, seen_b),
                               alternative="greater").pvalue)


def _a7(results, plan, out_dir) -> ClaimResult:
    t0, t_ind, t_end, end = (plan.chemo_start_day, plan.induction_end_day, plan.therapy_end_day,
                             plan.chemo_days)
    reps = sorted(k[1] for k in results if k[0] == "chemo")

    def lsc_of(tag, r, day):
        snap = results[(tag, r)][1][day]
        return snap[snap.kind == "lsc"]

    def share(frame, mask):
        return float(mask.mean()) if len(frame) else np.nan

    g0_before, g0_after, endo_before, endo_after = [], [], [], []
    ind_chemo, ind_combo, end_chemo, end_combo, g0_end_chemo, g0_end_combo = ([] for _ in range(6))
    rel = {"chemo": ([], []), "combo": ([], [])}
    for r in reps:
        before, after = lsc_of("chemo", r, t0), lsc_of("chemo", r, t_ind)
        g0_before.append(share(before, before["g0"]))
        g0_after.append(share(after, after["g0"]))
        endo_before.append(share(before, before["zone"] == "endosteal"))
        endo_after.append(share(after, after["zone"] == "endosteal"))
        ind_chemo.append(len(after))
        ind_combo.append(len(lsc_of("combo", r, t_ind)))
        for tag, n, g0 in (("chemo", end_chemo, g0_end_chemo), ("combo", end_combo, g0_end_combo)):
            last = lsc_of(tag, r, t_end)
            n.append(len(last))
            g0.append(share(last, last["g0"]))
            day, seen = relapse_day(results[(tag, r)][0], t_end, end)
            rel[tag][0].append(day)
            rel[tag][1].append(seen)
    (t_chemo, seen_chemo), (t_combo, seen_combo) = rel["chemo"], rel["combo"]
    n_pairs = len(reps)
    p_g0 = _wilcoxon_greater(g0_after, g0_before)
    p_endo = _wilcoxon_greater(endo_after, endo_before)
    p_surv = _wilcoxon_greater(end_chemo, end_combo)
    p_surv_induction = _wilcoxon_greater(ind_chemo, ind_combo)
    # Relapse times are censored at the end of follow-up (a cured replicate never relapses), so
    # the delay is tested with the one-sided log-rank test; the paired signed-rank test (a
    # censored time is the common end of follow-up, later than any observed one; a pair
    # censored in both arms is a tie) is reported alongside.
    p_logrank = _logrank_later(t_chemo, seen_chemo, t_combo, seen_combo)
    p_paired = _wilcoxon_greater(t_combo, t_chemo)
    relapses = int(sum(seen_chemo))
    ok = (p_g0 < ALPHA and p_endo < ALPHA and p_surv < ALPHA
          and relapses >= RELAPSE_MIN_SHARE * n_pairs and p_logrank < ALPHA)
    fig = out_dir / "aml_chemo.png"
    _plot_chemo(results, fig, plan, rel)
    courses = "induction" if plan.chemo_courses == 1 else (
        f"induction and {plan.chemo_courses - 1} consolidation course(s) every "
        f"{plan.course_every_days:g} d")
    return ClaimResult(
        "A7", "After chemotherapy survivors are enriched for G0 and endosteal LSC and relapse; "
        "adding a niche blockade leaves fewer survivors and delays relapse", ok,
        f"5+3 {courses}; TGF-β1 neutralisation from 3 days before each course to its end. "
        f"One-sided Wilcoxon signed-rank over paired replicates, p < {ALPHA}: LSC G0 fraction "
        "and endosteal share after vs before the induction; surviving LSC at the end of "
        "therapy, chemo alone vs chemo + TGF-β1 neutralisation. Relapse (leukemic cells "
        f"≥ {RELAPSE_BURDEN:.0%} of marrow, ELN) after the last course within {end - t_end:g} "
        f"days of follow-up in at least {RELAPSE_MIN_SHARE:.0%} of chemo-alone replicates; "
        f"relapse later with the combination: one-sided log-rank p < {ALPHA} (censored at the "
        "end of follow-up; paired signed-rank p reported alongside)",
        {"lsc_g0_before": float(np.nanmean(g0_before)), "lsc_g0_after": float(np.nanmean(g0_after)),
         "p_g0": p_g0, "endosteal_share_before": float(np.nanmean(endo_before)),
         "endosteal_share_after": float(np.nanmean(endo_after)), "p_endosteal": p_endo,
         "surviving_lsc_after_induction_chemo": float(np.mean(ind_chemo)),
         "surviving_lsc_after_induction_combined": float(np.mean(ind_combo)),
         "p_survivors_after_induction": p_surv_induction,
         "surviving_lsc_chemo": float(np.mean(end_chemo)),
         "surviving_lsc_combined": float(np.mean(end_combo)), "p_survivors": p_surv,
         "replicates_without_lsc_chemo": int(np.sum(np.asarray(end_chemo) == 0)),
         "replicates_without_lsc_combined": int(np.sum(np.asarray(end_combo) == 0)),
         "lsc_g0_end_chemo": _nanmean(g0_end_chemo),
         "lsc_g0_end_combined": _nanmean(g0_end_combo),
         "replicates_relapsing_chemo": relapses,
         "replicates_relapsing_combined": int(sum(seen_combo)),
         "median_days_to_relapse_chemo": float(np.median(t_chemo)),
         "median_days_to_relapse_combined": float(np.median(t_combo)),
         "pairs_combined_later": int(np.sum(np.asarray(t_combo) > np.asarray(t_chemo))),
         "pairs_combined_sooner": int(np.sum(np.asarray(t_combo) < np.asarray(t_chemo))),
         "p_logrank": p_logrank, "p_relapse_delay_paired": p_paired,
         "chemo_courses": plan.chemo_courses, "course_every_days": plan.course_every_days,
         "follow_up_days": end - t_end, "n_pairs": n_pairs},
        [fig])


def _nanmean(values) -> float:
    v = np.asarray(values, float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


# ---------------------------------------------------------------------------------------------
# Figures

def _band(ax, frames, zone, col, label):
    table = pd.concat([f[f.zone == zone].set_index("time_h")[col].rename(i)
                       for i, f in enumerate(frames)], axis=1)
    t = table.index.to_numpy() / 24.0
    m = table.mean(axis=1).to_numpy()
    n = table.notna().sum(axis=1).clip(lower=1).to_numpy()
    half = 1.96 * table.std(axis=1).fillna(0).to_numpy() / np.sqrt(n)
    ax.plot(t, m, label=label)
    ax.fill_between(t, m - half, m + half, alpha=0.25)


def _figure_g0(prog, out_dir, result) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for zone in ("endosteal", "intermediate", "central"):
        _band(ax, [prog[r][0] for r in prog], zone, "frac_lsc_g0", zone)
    ax.set(xlabel="time after transplant (days)", ylabel="G0 (Ki67−) fraction of LSC", title="LSC G0 fraction by zone "
           "(mean, 95% CI over replicates)")
    ax.legend()
    path = out_dir / "aml_g0_by_zone.png"
    save_figure(fig, path)
    result.figures.append(path)


def _figure_distance(prog, plan, out_dir, result) -> None:
    plt = pyplot()
    snaps = pd.concat([prog[r][1][plan.days] for r in prog])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.arange(0, 400, 10)
    ax.hist(snaps.loc[snaps.g0, "dist_bone_um"], bins=bins, density=True, alpha=0.6, label="G0")
    ax.hist(snaps.loc[~snaps.g0, "dist_bone_um"], bins=bins, density=True, alpha=0.6,
            label="cycling")
    ax.set(xlabel="distance to bone (µm)", ylabel="probability density (1/µm)", title=f"Leukemic cells at day "
           f"{plan.days:g}: G0 vs cycling")
    ax.legend()
    path = out_dir / "aml_distance_to_bone.png"
    save_figure(fig, path)
    result.figures.append(path)


def _plot_lines(prog, cols, zone, path, title) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for col, label in cols.items():
        _band(ax, [prog[r][0] for r in prog], zone, col, label)
    ax.set(xlabel="time after transplant (days)", ylabel="cells in section",
           title=title + " (mean, 95% CI)")
    ax.legend()
    save_figure(fig, path)


def _plot_bars(bars, path) -> None:
    plt = pyplot()
    names = list(bars)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for j, label in enumerate(("G0 (Ki67−) fraction of endosteal LSC",
                               "BLC-bound fraction of endosteal LSC")):
        vals = [np.asarray(bars[n][j], float) for n in names]
        means = [np.nanmean(v) for v in vals]
        half = [1.96 * np.nanstd(v, ddof=1) / np.sqrt(max(np.isfinite(v).sum(), 1)) for v in vals]
        axes[j].bar(range(len(names)), means, yerr=half, capsize=3,
                    color=["grey"] + ["C0"] * (len(names) - 1))
        for i, v in enumerate(vals):
            axes[j].plot(np.full(v.size, i), v, "k.", ms=3)
        axes[j].set_xticks(range(len(names)), [n.replace("_", " ") for n in names],
                           rotation=35, ha="right", fontsize=8)
        axes[j].set(title=label, ylabel="fraction (mean, 95% CI; dots = replicates)")
    fig.suptitle("Broken niche links vs untreated control (paired replicates)", fontsize=10)
    save_figure(fig, path)


def _plot_chemo(results, path, plan, rel) -> None:
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    arms = (("chemo", "chemotherapy"), ("combo", "chemo + TGF-β1 neutralisation"))
    for tag, label in arms:
        frames = [v[0] for k, v in results.items() if k[0] == tag]
        _band(ax, frames, "all", "n_lsc", label)
    for k in range(plan.chemo_courses):
        start = plan.chemo_start_day + k * plan.course_every_days
        ax.axvspan(start, start + 5.0, color="grey", alpha=0.2)
    # symlog keeps replicates with no LSC left on the plot; counts are never negative, so the
    # band is cut at 0
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(bottom=0.0)
    ax.set(xlabel="time after transplant (days)", ylabel="LSC in section (symlog)",
           title="LSC through chemotherapy (grey: 5+3 courses)")
    ax.legend(fontsize=8, loc="lower left")
    for tag, label in arms:
        t, seen = np.asarray(rel[tag][0], float), np.asarray(rel[tag][1], bool)
        x, y = np.array([0.0]), np.array([1.0])
        if seen.any():
            sf = stats.ecdf(stats.CensoredData(uncensored=t[seen], right=t[~seen])).sf
            x, y = np.append(x, sf.quantiles), np.append(y, sf.probabilities)
        # Carry the curve to the end of follow-up, where the censored runs are.
        x, y = np.append(x, t.max()), np.append(y, y[-1])
        ax2.step(x, y, where="post", label=label)
    ax2.set(xlabel="days after the last course", ylabel="relapse-free fraction",
            ylim=(-0.02, 1.02), title=f"Kaplan–Meier: leukemic ≥ {RELAPSE_BURDEN:.0%} of marrow")
    ax2.legend(fontsize=8)
    save_figure(fig, path)
