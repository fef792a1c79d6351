"""Interventions of the AML scenarios (MODEL.md section 7): when each is active, how strong, and
the plasma concentrations of the chemotherapy drugs (cytarabine-like and doxorubicin-like).

Everything is a pure function of the scenario data and the time, read at every call, so a key
changed while running (the browser app) takes effect at the next step. The biological effect of
each intervention lives where its target is (``niche_dynamics`` for BLC Tgfbr2 and OPN
production and the TGF-β1 field, ``leukemia`` for LSC secretion, adhesion and sensing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["DRUG_SIGNALS", "active", "bolus_step_mean_mg_per_l", "course_windows_h",
           "dose_times_h", "drug_step_mean_mg_per_l", "strength"]


def course_windows_h(item: Mapping) -> list[tuple[float, float]]:
    """The [start, stop) windows (h) of an intervention: its window, repeated ``courses`` times
    (default 1) every ``course_every_days`` (e.g. induction then consolidation courses)."""
    t0, t1 = item["start_day"] * 24.0, item["stop_day"] * 24.0
    courses = int(item.get("courses", 1))
    every = float(item.get("course_every_days") or 0.0) * 24.0
    return [(t0 + k * every, t1 + k * every) for k in range(courses)]


def active(data: Mapping, name: str, time_h: float) -> Mapping | None:
    """The intervention's table if it is active at ``time_h`` (start ≤ t < stop of one of its
    courses, :func:`course_windows_h`), else None.

    Args:
        data: resolved scenario data.
        name: intervention name (``chemo``, ``transwell`` ...).
        time_h: simulated time (h).
    """
    item = (data.get("interventions") or {}).get(name)
    if item is None:
        return None
    for t0, t1 in course_windows_h(item):
        if t0 <= time_h + 1e-9 < t1:
            return item
    return None


def strength(data: Mapping, name: str, time_h: float) -> float:
    """Inhibition fraction (0–1) of an inhibitor-type intervention at ``time_h`` (0 if off)."""
    item = active(data, name, time_h)
    return float(item["inhibition"]) if item is not None else 0.0


def dose_times_h(item: Mapping) -> list[float]:
    """Bolus times (h) of a chemo schedule: every ``every_h`` from each course's start, before
    its stop (:func:`course_windows_h`)."""
    every = item["every_h"]
    out = []
    for t0, t1 in course_windows_h(item):
        n = max(0, math.ceil((t1 - t0) / every - 1e-9))
        out.extend(t0 + i * every for i in range(n))
    return out


def bolus_step_mean_mg_per_l(item: Mapping | None, time_h: float, dt_h: float) -> float:
    """Mean concentration over [t, t + dt) (mg/L) of a drug given as IV boluses with
    one-compartment PK (``item``: the intervention's table, or None for 0).

    C(t) = sum_i D/V exp(-k (t - t_i)) over doses t_i ≤ t, k = ln 2 / t½; the mean over the step
    is exact, so a half-life far shorter than the step (mouse cytarabine ≈ 0.3–0.5 h, MODEL.md
    §7) still delivers its whole exposure, and one far longer (doxorubicin) accumulates over
    daily doses.
    """
    if item is None:
        return 0.0
    k = math.log(2.0) / item["half_life_h"]
    c0 = item["dose_mg_per_kg"] / item["volume_l_per_kg"]
    factor = (1.0 - math.exp(-k * dt_h)) / (k * dt_h)
    total = 0.0
    for t_i in dose_times_h(item):
        if t_i <= time_h + 1e-9:
            total += c0 * math.exp(-k * (time_h - t_i))
    return total * factor


#: The chemotherapy drugs: the rules signal each one's concentration is read through (mg/L),
#: and the intervention that doses it (MODEL.md §7, PARAMETERS.md 1.9).
DRUG_SIGNALS: dict[str, str] = {"cytarabine": "chemo", "doxorubicin": "doxorubicin"}


def drug_step_mean_mg_per_l(data: Mapping, signal: str, time_h: float, dt_h: float) -> float:
    """Mean concentration over [t, t + dt) (mg/L) of the drug behind rules signal ``signal``
    (``cytarabine``, ``doxorubicin``: :data:`DRUG_SIGNALS`), 0 if its intervention is absent
    (:func:`bolus_step_mean_mg_per_l`)."""
    item = (data.get("interventions") or {}).get(DRUG_SIGNALS[signal])
    return bolus_step_mean_mg_per_l(item, time_h, dt_h)
