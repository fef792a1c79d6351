"""Claims M1–M5 and the generic targets of MODEL.md section 9 (seed 004, MDS megakaryopoiesis).

What is calibration and what is validation:

- Calibrated (inputs): the lineage influx (MK ≈ 0.14% of marrow cells), the endomitosis log-odds
  base (modal 16N in the control), ``platelets_per_ploidy_n`` (healthy ≈ 1000 ×10³/µL, see
  ``docs/calibration.md``). The generic targets G1–G3 check that calibration held; they are not
  validation.
- Inputs that decide M3 by design: ALK, ROS1 and MET are not in the cytokinesis rule (the
  hypothesis of the seed paper), so M3 checks that nothing else (myelotoxicity, displacement,
  PK) leaks into ploidy. The crizotinib Aurora IC50 is assumed (~1 µM); the full run reports
  the sensitivity.
- Validation (emerges from the rules): M1 (genotype key only), M2 (ploidy, size, MKP pool,
  platelets, WBC/RBC under crizotinib PK), M4, M5 and the timing of the platelet response (G4).

Replicate *i* of every scenario uses the same seed (common random numbers), so comparisons are
paired: one-sided paired t-tests on per-replicate means over the analysis window, and
equivalence by two one-sided tests (the 90% CI of the paired difference inside a stated margin).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import ClaimResult, process_pool, pyplot, save_figure

TOPIC = "mds"
TITLE = "MDS megakaryopoiesis (seed 004): claims M1–M5 and generic targets"

PLOIDY = (2, 4, 8, 16, 32, 64, 128)
M4_SCENARIOS = ("mds_alisertib", "mds_barasertib", "mds_volasertib", "mds_bi2536")
M3_SCENARIOS = ("mds_s_crizotinib", "mds_alk_ros1_met")
M3_SINGLE = ("alectinib_mouse", "lorlatinib_mouse", "capmatinib_mouse")
METRICS = ("mk_mean_ploidy", "mk_mean_diameter_um", "n_mkp", "n_mk", "frac_marrow_mk",
           "platelets_per_ul", "wbc_per_ul", "rbc_per_ul")


@dataclass(frozen=True)
class Plan:
    """Sizes of one claims run.

    Args:
        overrides: ``--set`` strings applied to every scenario (section size, recording).
        replicates: replicates per scenario.
        days: simulated days after the spin-up (drugs start at day 0).
        window: (first, last) day of the analysis window.
        alpha: significance threshold of the one-sided tests.
        full_extras: run the sensitivity and single-drug arms too.
    """

    overrides: tuple[str, ...]
    replicates: int
    days: float
    window: tuple[float, float]
    alpha: float
    full_extras: bool


QUICK = Plan(("geometry.marrow_radius_um=900", "geometry.cortex_thickness_um=100",
              "run.record_every_h=12", "megakaryocytes.spinup_days=8"),
             replicates=4, days=10.0, window=(4.0, 10.0), alpha=0.05, full_extras=False)
FULL = Plan(("geometry.marrow_radius_um=1200", "run.record_every_h=12"),
            replicates=8, days=14.0, window=(5.0, 14.0), alpha=0.01, full_extras=True)


# ---------------------------------------------------------------------------------------------
# Simulation

def simulate(name: str, overrides: tuple[str, ...], replicate: int, days: float) -> pd.DataFrame:
    """One replicate of a bundled scenario; the zone-``all`` records as a DataFrame."""
    from ..engine import Engine
    from ..scenario import load_scenario

    eng = Engine(load_scenario(name, list(overrides)), replicate=replicate)
    df = eng.run(days=days)
    return df[df["zone"] == "all"].reset_index(drop=True)


def _job(args):
    name, overrides, replicate, days = args
    return simulate(name, overrides, replicate, days)


def run_arms(arms: dict[str, tuple[str, tuple[str, ...]]], plan: Plan, workers: int
             ) -> dict[str, list[pd.DataFrame]]:
    """Run every arm (label -> (scenario, extra overrides)) for all replicates.

    Returns label -> one records frame per replicate (replicate order).
    """
    jobs, keys = [], []
    for label, (name, extra) in arms.items():
        for r in range(plan.replicates):
            jobs.append((name, (*plan.overrides, *extra), r, plan.days))
            keys.append(label)
    if workers > 1:
        with process_pool(workers) as pool:
            frames = list(pool.map(_job, jobs))
    else:
        frames = [_job(j) for j in jobs]
    out: dict[str, list[pd.DataFrame]] = {label: [] for label in arms}
    for key, frame in zip(keys, frames):
        out[key].append(frame)
    return out


def window_means(frames: list[pd.DataFrame], plan: Plan) -> pd.DataFrame:
    """Per-replicate means of ``METRICS`` and the ploidy fractions over the analysis window."""
    lo, hi = plan.window
    rows = []
    for f in frames:
        w = f[(f["time_h"] >= lo * 24) & (f["time_h"] <= hi * 24)]
        row = {m: float(w[m].mean()) for m in METRICS}
        row.update({f"mk_frac_{p}n": float(w[f"mk_frac_{p}n"].mean()) for p in PLOIDY})
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Statistics

def paired_greater(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided paired t-test p-value for mean(a − b) > 0 (0 when every difference is
    positive and identical; 1 when none is positive)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if np.allclose(d, d[0]):
        return 0.0 if d[0] > 0 else 1.0
    return float(stats.ttest_1samp(d, 0.0, alternative="greater").pvalue)


def paired_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean paired difference a − b with its two-sided ``level`` t-interval."""
    d = np.asarray(a, float) - np.asarray(b, float)
    m = float(d.mean())
    if d.size < 2:
        return m, m, m
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    h = float(stats.t.ppf(0.5 + level / 2, d.size - 1)) * se
    return m, m - h, m + h


def equivalent(a: np.ndarray, b: np.ndarray, margin_rel: float) -> tuple[bool, float, float]:
    """TOST at α = 0.05: the 90% CI of mean(a − b) lies within ± margin_rel × mean(b).

    Returns (equivalent, CI low, CI high) with the CI relative to mean(b).
    """
    _, lo, hi = paired_ci(a, b, level=0.90)
    ref = float(np.mean(b))
    lo, hi = lo / ref, hi / ref
    return (-margin_rel < lo and hi < margin_rel), lo, hi


# ---------------------------------------------------------------------------------------------
# PK (claim M5)

def _drugs():
    from ..scenario import load_scenario

    return load_scenario("healthy_steady_state").data["drugs"]


def exposure(species: str, dose_mg_per_kg: float, interval_h: float, days: float = 14.0,
             step_h: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Crizotinib total plasma µM over time for a repeated oral schedule."""
    from ..biology.pk import simulate_exposure

    n = int(days * 24 / interval_h)
    doses = [(j * interval_h, "crizotinib", dose_mg_per_kg, "oral") for j in range(n)]
    t = np.arange(0.0, days * 24 + step_h / 2, step_h)
    return t, simulate_exposure(_drugs(), doses, species, t)["crizotinib"]


def mean_aurka_inhibition(species: str, dose_mg_per_kg: float, interval_h: float) -> float:
    """Time-averaged Aurora A inhibition over the last 24 h of 14 days of dosing."""
    from ..biology.pk import hill

    d = _drugs()["crizotinib"]
    t, c = exposure(species, dose_mg_per_kg, interval_h)
    fu = d["pk"][species]["fu"]
    a = d["targets"]["aurka"]
    last = t >= t[-1] - 24
    return float(np.mean([hill(x * fu * 1000, a["ic50_nm"], a["hill"]) for x in c[last]]))


def matching_dose(target: float, species: str, interval_h: float) -> float:
    """Dose (mg/kg) giving ``target`` mean Aurora A inhibition (bisection; monotone in dose)."""
    lo, hi = 1e-3, 1e4
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if mean_aurka_inhibition(species, mid, interval_h) < target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


# ---------------------------------------------------------------------------------------------
# Figures

def fig_ploidy(means: dict[str, pd.DataFrame], out: Path) -> Path:
    plt = pyplot()
    labels = list(means)
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(labels)
    x = np.arange(len(PLOIDY))
    for i, label in enumerate(labels):
        m = means[label][[f"mk_frac_{p}n" for p in PLOIDY]]
        ax.bar(x + i * width, m.mean().values * 100, width, yerr=m.std(ddof=1).values * 100,
               label=label, capsize=2)
    ax.set_xticks(x + 0.4 - width / 2, [f"{p}N" for p in PLOIDY])
    ax.set_ylabel("% of MK (mean ± SD over replicates)")
    ax.set_title("MK ploidy histograms")
    ax.legend(fontsize=7, ncol=2)
    path = save_figure(fig, out / "mds_ploidy_histograms.png")
    return path


def fig_platelets(runs: dict[str, list[pd.DataFrame]], out: Path, reference: str = "mds"
                  ) -> Path:
    """Left: platelet count per arm (mean and 95% CI over replicates). Right: the paired change
    against ``reference`` (replicate i vs replicate i, common random numbers), mean and 95% CI."""
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
    ref = runs.get(reference)
    colours = {label: f"C{i}" for i, label in enumerate(runs)}   # one colour per arm in both panels
    for label, frames in runs.items():
        t = frames[0]["time_h"].values / 24
        y = np.stack([f["platelets_per_ul"].values for f in frames]) / 1e3
        for axis, values in ((ax, y), (bx, None)):
            if axis is bx:
                if ref is None or label == reference:
                    continue
                values = 100 * (y / (np.stack([f["platelets_per_ul"].values for f in ref]) / 1e3) - 1)
            m = values.mean(axis=0)
            k = len(frames)
            h = (stats.t.ppf(0.975, k - 1) * values.std(axis=0, ddof=1) / math.sqrt(k)
                 if k > 1 else np.zeros_like(m))
            axis.plot(t, m, label=label, color=colours[label])
            axis.fill_between(t, m - h, m + h, alpha=0.2, color=colours[label])
    ax.set_xlabel("day (drug from day 0)")
    ax.set_ylabel("platelets (×10³/µL), mean and 95% CI")
    ax.legend(fontsize=8)
    bx.axhline(0, color="grey", lw=0.8)
    bx.set_xlabel("day (drug from day 0)")
    bx.set_ylabel(f"paired change vs {reference} (%), mean and 95% CI")
    bx.legend(fontsize=8)
    path = save_figure(fig, out / "mds_platelets_over_time.png")
    return path


def fig_panel(table: pd.DataFrame, out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(table) + 1.2))
    y = np.arange(len(table))
    ax.errorbar(table["shift"], y, xerr=[table["shift"] - table["lo"], table["hi"] - table["shift"]],
                fmt="o", capsize=3)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, table.index)
    ax.set_xlabel("change in mean MK ploidy vs MDS untreated (N), 95% CI")
    path = save_figure(fig, out / "mds_drug_panel.png")
    return path


def fig_exposure(out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for species, dose, tau, label in (("mouse", 100.0, 24.0, "mouse PK, 100 mg/kg q24h"),
                                      ("human", 100.0, 24.0, "human PK, 100 mg/kg q24h"),
                                      ("human", 3.57, 12.0, "human PK, 250 mg q12h (label)")):
        t, c = exposure(species, dose, tau, days=7.0)
        ax.plot(t / 24, c, label=label)
    ax.set_yscale("log")
    ax.set_ylim(1e-3, None)
    ax.set_xlabel("day")
    ax.set_ylabel("crizotinib total plasma (µM)")
    ax.legend(fontsize=8)
    path = save_figure(fig, out / "mds_exposure_mouse_vs_human.png")
    return path


# ---------------------------------------------------------------------------------------------
# Claims

def _fmt_p(p: float) -> float:
    return float(f"{p:.3g}")


def run(out_dir: Path, *, quick: bool, workers: int = 1,
        overrides: Sequence[str] = ()) -> list[ClaimResult]:
    """Simulate, test M1–M5 and G1–G4, draw the figures; one ClaimResult per claim.

    Args:
        out_dir: report folder for the figures.
        quick: the small plan instead of the full one.
        workers: local worker processes for replicates.
        overrides: ``--set`` strings applied to every arm after the plan's own and before the
            arm's own (sensitivity runs: zone widths, section size, ``run.seed``).
    """
    plan = QUICK if quick else FULL
    plan = replace(plan, overrides=(*plan.overrides, *overrides))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    a = plan.alpha
    arms = {"healthy": ("healthy_steady_state", ()), "mds": ("mds_untreated", ()),
            "mds_crizotinib": ("mds_crizotinib", ()),
            "mds_crizotinib_human_pk": ("mds_crizotinib_human_pk", ())}
    for s in (*M3_SCENARIOS, *M4_SCENARIOS):
        arms[s] = (s, ())
    if plan.full_extras:
        for reg in M3_SINGLE:
            arms[f"mds_{reg.removesuffix('_mouse')}"] = ("mds_untreated", (f"pk.regimen={reg}",))
        for ic50 in (300, 3000):
            arms[f"mds_crizotinib_aurora_ic50_{ic50}nm"] = (
                "mds_crizotinib", (f"drugs.crizotinib.targets.aurka.ic50_nm={ic50}",
                                   f"drugs.crizotinib.targets.aurkb.ic50_nm={ic50}"))
        arms["platelet_transfusion"] = ("platelet_transfusion", ())
    runs = run_arms(arms, plan, workers)
    means = {k: window_means(v, plan) for k, v in runs.items()}
    results: list[ClaimResult] = []
    H, M, C = means["healthy"], means["mds"], means["mds_crizotinib"]
    n = plan.replicates
    test_word = f"one-sided paired t-test over {n} replicates (common random numbers), p < {a}"

    # M1 ------------------------------------------------------------------------------------
    p1 = {"ploidy lower": paired_greater(H["mk_mean_ploidy"], M["mk_mean_ploidy"]),
          "diameter lower": paired_greater(H["mk_mean_diameter_um"], M["mk_mean_diameter_um"]),
          "MKP pool larger": paired_greater(M["n_mkp"], H["n_mkp"]),
          "platelets lower": paired_greater(H["platelets_per_ul"], M["platelets_per_ul"])}
    fig_h = fig_ploidy({k: means[k] for k in ("healthy", "mds", "mds_crizotinib",
                                              "mds_crizotinib_human_pk")}, out_dir)
    fig_p = fig_platelets({k: runs[k] for k in runs if k in (
        "healthy", "mds", "mds_crizotinib", "mds_crizotinib_human_pk", "platelet_transfusion")},
        out_dir)
    results.append(ClaimResult(
        "M1", "MDS vs control: lower MK ploidy and diameter, larger MKP pool, fewer platelets",
        all(p < a for p in p1.values()), test_word + " for each of the four",
        {**{f"p {k}": _fmt_p(v) for k, v in p1.items()},
         "ploidy control / MDS (N)": f"{H['mk_mean_ploidy'].mean():.1f} / {M['mk_mean_ploidy'].mean():.1f}",
         "diameter control / MDS (µm)": f"{H['mk_mean_diameter_um'].mean():.1f} / {M['mk_mean_diameter_um'].mean():.1f}",
         "MKP control / MDS": f"{H['n_mkp'].mean():.1f} / {M['n_mkp'].mean():.1f}",
         "platelets control / MDS (×10³/µL)": f"{H['platelets_per_ul'].mean() / 1e3:.0f} / {M['platelets_per_ul'].mean() / 1e3:.0f}"},
        [fig_h, fig_p], "Validation: the MDS scenario differs from the control only by the "
        "genotype activity key (1.5× Aurora A/B and PLK1)."))

    # M2 ------------------------------------------------------------------------------------
    p2 = {"ploidy up": paired_greater(C["mk_mean_ploidy"], M["mk_mean_ploidy"]),
          "diameter up": paired_greater(C["mk_mean_diameter_um"], M["mk_mean_diameter_um"]),
          "MKP pool down": paired_greater(M["n_mkp"], C["n_mkp"]),
          "platelets up": paired_greater(C["platelets_per_ul"], M["platelets_per_ul"])}
    wbc_ok, wlo, whi = equivalent(C["wbc_per_ul"], M["wbc_per_ul"], 0.05)
    rbc_ok, rlo, rhi = equivalent(C["rbc_per_ul"], M["rbc_per_ul"], 0.05)
    stats2 = {**{f"p {k}": _fmt_p(v) for k, v in p2.items()},
              "WBC change, 90% CI": f"[{wlo:+.1%}, {whi:+.1%}]",
              "RBC change, 90% CI": f"[{rlo:+.1%}, {rhi:+.1%}]",
              "ploidy MDS / crizotinib (N)": f"{M['mk_mean_ploidy'].mean():.1f} / {C['mk_mean_ploidy'].mean():.1f}",
              "platelets MDS / crizotinib (×10³/µL)": f"{M['platelets_per_ul'].mean() / 1e3:.0f} / {C['platelets_per_ul'].mean() / 1e3:.0f}"}
    for ic50 in (300, 3000):
        key = f"mds_crizotinib_aurora_ic50_{ic50}nm"
        if key in means:
            s, lo, hi = paired_ci(means[key]["mk_mean_ploidy"], M["mk_mean_ploidy"])
            stats2[f"sensitivity: ploidy shift at Aurora IC50 {ic50} nM (N, 95% CI)"] = \
                f"{s:+.1f} [{lo:+.1f}, {hi:+.1f}]"
    results.append(ClaimResult(
        "M2", "Crizotinib in MDS: ploidy and diameter up, MKP pool down, platelets up, WBC and RBC unchanged",
        all(p < a for p in p2.values()) and wbc_ok and rbc_ok,
        test_word + " for the four changes; WBC and RBC equivalent within ±5% (TOST, 90% CI)",
        stats2, [], "Validation. Crizotinib's Aurora A/B IC50 (1 µM) is assumed; the WBC part "
        "depends on its assumed weak myelotoxicity (drug table)."))

    # M3 ------------------------------------------------------------------------------------
    m3_arms = [k for k in means if k in M3_SCENARIOS or k.removeprefix("mds_") in
               [r.removesuffix("_mouse") for r in M3_SINGLE]]
    stats3, ok3 = {}, True
    for k in m3_arms:
        ok, lo, hi = equivalent(means[k]["mk_mean_ploidy"], M["mk_mean_ploidy"], 0.10)
        ok3 &= ok
        stats3[f"{k}: ploidy change, 90% CI"] = f"[{lo:+.1%}, {hi:+.1%}]"
    results.append(ClaimResult(
        "M3", "ALK/ROS1/MET inhibitors (alone or combined) and (S)-crizotinib: no change in ploidy",
        ok3, f"mean MK ploidy equivalent to MDS untreated within ±10% (TOST, 90% CI of the paired "
        f"difference, {n} replicates)", stats3, [],
        "Partly by design: the cytokinesis rule reads only Aurora A/B and PLK1 (the paper's "
        "hypothesis), so this checks that nothing else (myelotoxicity, displacement) leaks in. "
        "With common random numbers the arms are identical replicate by replicate."))

    # M4 ------------------------------------------------------------------------------------
    panel = {}
    p4 = {}
    for k in (*M4_SCENARIOS, "mds_crizotinib", *m3_arms):
        s, lo, hi = paired_ci(means[k]["mk_mean_ploidy"], M["mk_mean_ploidy"])
        panel[k.removeprefix("mds_")] = {"shift": s, "lo": lo, "hi": hi}
        if k in M4_SCENARIOS:
            p4[k] = paired_greater(means[k]["mk_mean_ploidy"], M["mk_mean_ploidy"])
    table = pd.DataFrame(panel).T
    fig_d = fig_panel(table, out_dir)
    results.append(ClaimResult(
        "M4", "Alisertib, barasertib, volasertib and BI2536: ploidy up",
        all(p < a for p in p4.values()), test_word + " for each drug",
        {**{f"p {k.removeprefix('mds_')}": _fmt_p(v) for k, v in p4.items()},
         **{f"shift {k} (N, 95% CI)": f"{r['shift']:+.1f} [{r['lo']:+.1f}, {r['hi']:+.1f}]"
            for k, r in table.iterrows()}},
        [fig_d], "Validation; mouse schedules and mouse PK of these drugs are assumed (drug table)."))

    # M5 ------------------------------------------------------------------------------------
    t, cm = exposure("mouse", 100.0, 24.0)
    _, ch = exposure("human", 100.0, 24.0)
    _, cl = exposure("human", 3.57, 12.0)
    last = t >= t[-1] - 24
    auc_m, auc_h = float(np.trapezoid(cm[last], t[last])), float(np.trapezoid(ch[last], t[last]))
    tp_m = float(cm[last].min() / cm[last].max())
    tp_h = float(ch[last].min() / ch[last].max())
    tp_l = float(cl[last].min() / cl[last].max())
    inh_m = mean_aurka_inhibition("mouse", 100.0, 24.0)
    inh_l = mean_aurka_inhibition("human", 3.57, 12.0)
    dose_match = matching_dose(inh_m, "human", 12.0)
    HP = means["mds_crizotinib_human_pk"]
    p5 = paired_greater(C["mk_mean_ploidy"], HP["mk_mean_ploidy"])
    ok5 = (tp_m < 0.05 and tp_h > 0.5 and tp_l > 0.5 and inh_l < 0.7 * inh_m
           and dose_match / 3.57 > 2 and p5 < a)
    fig_e = fig_exposure(out_dir)
    results.append(ClaimResult(
        "M5", "Mouse and human PK give very different exposure for the same schedule; the human schedule needs its own dose",
        ok5, "same schedule (100 mg/kg q24h): steady-state trough/peak < 0.05 with mouse PK and "
        "> 0.5 with human PK; human label schedule trough/peak > 0.5; the label dose gives < 70% "
        "of the mouse mean Aurora A inhibition and the "
        "matching human dose is > 2× the label; ploidy shift under human PK smaller than under "
        f"mouse PK ({test_word})",
        {"AUC24 human / mouse PK (100 mg/kg q24h)": round(auc_h / auc_m, 2),
         "Cmax human / mouse PK (100 mg/kg q24h)": round(float(ch[last].max() / cm[last].max()), 2),
         "trough/peak mouse PK q24h": round(tp_m, 4), "trough/peak human PK q24h": round(tp_h, 3),
         "trough/peak human label q12h": round(tp_l, 3),
         "mean Aurora A inhibition mouse schedule": round(inh_m, 4),
         "mean Aurora A inhibition human label": round(inh_l, 4),
         "human q12h dose matching mouse inhibition (mg/kg)": round(dose_match, 2),
         "… as multiple of the label 3.57 mg/kg": round(dose_match / 3.57, 1),
         "p ploidy mouse PK > human PK": _fmt_p(p5),
         "ploidy MDS / human PK / mouse PK (N)": f"{M['mk_mean_ploidy'].mean():.1f} / {HP['mk_mean_ploidy'].mean():.1f} / {C['mk_mean_ploidy'].mean():.1f}"},
        [fig_e], "Validation of the PK consequence; species PK from Yamazaki 2008 (mouse) and "
        "the XALKORI label (human). The human marrow is still the mouse model: only exposure "
        "differs."))

    # Generic targets (calibration checks G1–G3, validation G4) ------------------------------
    plt_ci = paired_ci(H["platelets_per_ul"], np.zeros(n))
    results.append(ClaimResult(
        "G1", "Healthy mouse platelets ≈ 1000 ×10³/µL at steady state",
        800e3 <= plt_ci[0] <= 1200e3,
        f"mean over {n} replicates within 1000 ± 200 ×10³/µL (95% CI reported)",
        {"mean (×10³/µL)": round(plt_ci[0] / 1e3), "95% CI": f"[{plt_ci[1] / 1e3:.0f}, {plt_ci[2] / 1e3:.0f}]"},
        [], "Calibration (platelets_per_ploidy_n), docs/calibration.md."))
    hist = H[[f"mk_frac_{p}n" for p in PLOIDY]]
    modal_rep = [PLOIDY[int(np.argmax(r))] for r in hist.values]
    modal = PLOIDY[int(np.argmax(hist.mean().values))]
    results.append(ClaimResult(
        "G2", "Healthy modal MK ploidy 16N", modal == 16 and modal_rep.count(16) >= 0.75 * n,
        "mode of the pooled histogram is 16N and of ≥ 75% of replicates",
        {"pooled mode": f"{modal}N", "replicate modes": ", ".join(f"{m}N" for m in modal_rep),
         **{f"{p}N %": round(100 * hist[f'mk_frac_{p}n'].mean(), 1) for p in PLOIDY}},
        [], "Calibration (logit_endo_base)."))
    frac_ci = paired_ci(H["frac_marrow_mk"], np.zeros(n))
    results.append(ClaimResult(
        "G3", "MK ≈ 0.1–0.2% of marrow cells", 0.001 <= frac_ci[0] <= 0.002,
        "replicate mean within 0.10–0.20%",
        {"mean %": round(100 * frac_ci[0], 3), "95% CI %": f"[{100 * frac_ci[1]:.3f}, {100 * frac_ci[2]:.3f}]"},
        [], "Calibration (influx_per_marrow_voxel_per_h)."))
    # G4: first recorded day at which crizotinib-treated platelets exceed untreated by > 5%
    # (paired, mean over replicates) and stay above for the rest of the run.
    tt = runs["mds"][0]["time_h"].values / 24
    diff = np.mean([c["platelets_per_ul"].values / m["platelets_per_ul"].values - 1
                    for c, m in zip(runs["mds_crizotinib"], runs["mds"])], axis=0)
    above = diff > 0.05
    onset = next((float(tt[i]) for i in range(len(tt)) if above[i:].all()), float("nan"))
    results.append(ClaimResult(
        "G4", "After a maturation stimulus platelets rise from about day 3",
        1.5 <= onset <= 5.0,
        "onset (first day the mean paired rise exceeds 5% and stays) between day 1.5 and 5",
        {"onset day": onset, "rise at day 3": f"{diff[np.argmin(abs(tt - 3))]:+.1%}",
         "rise at end": f"{diff[-1]:+.1%}"},
        [], "Validation of timing: the stimulus is crizotinib from day 0 (PEG-MGDF in mice: "
        "rise from day 3, peak day 5)."))
    pd.DataFrame({k: v.mean() for k, v in means.items()}).T.to_csv(out_dir / "mds_arm_means.csv")
    return results


def platelet_calibration(replicates: int = 8, workers: int = 1,
                         overrides: tuple[str, ...] = FULL.overrides) -> dict[str, float]:
    """Healthy steady-state platelets and the ``platelets_per_ploidy_n`` that gives 1000 ×10³/µL.

    The count is proportional to ``platelets_per_ploidy_n`` (nothing feeds back on platelet
    production), so one set of runs gives the calibrated value (docs/calibration.md).
    """
    from ..scenario import load_scenario

    plan = Plan(overrides, replicates, FULL.days, FULL.window, FULL.alpha, False)
    frames = run_arms({"healthy": ("healthy_steady_state", ())}, plan, workers)["healthy"]
    m = window_means(frames, plan)["platelets_per_ul"]
    k = load_scenario("healthy_steady_state").data["megakaryocytes"]["platelets_per_ploidy_n"]
    mean = float(m.mean())
    return {"platelets_per_ul_mean": mean, "sd": float(m.std(ddof=1)),
            "platelets_per_ploidy_n_now": k, "platelets_per_ploidy_n_calibrated": k * 1e6 / mean}


__all__ = [
    "FULL",
    "QUICK",
    "TITLE",
    "TOPIC",
    "Plan",
    "equivalent",
    "exposure",
    "matching_dose",
    "mean_aurka_inhibition",
    "paired_ci",
    "paired_greater",
    "platelet_calibration",
    "run",
    "run_arms",
    "simulate",
    "window_means",
]
