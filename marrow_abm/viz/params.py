"""Slider and toggle specifications from the scenario schema: label, unit, range, live or not.

Every numeric or boolean key of the resolved scenario becomes a control, so keys that later
issues add to the schema (leukemia rates, interventions, drug doses) appear in the app without a
change here. A control is *live* when the engine reads its key every step (the value changes
while the model runs, through ``MarrowModel.set_parameter``); the others are *set-up* keys,
collected as pending changes and applied by the next Reset.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any

from ..model import toml_value
from ..scenario import Scenario, load_scenario
from ..schema import Key, schema_node_at

#: Keys the engine reads every step (so a change applies while running). Interventions, drug
#: doses and transfusions are scenario tables the biology issues add; they are live by design.
LIVE_PATTERNS: tuple[str, ...] = (
    "cells.*.secretion_per_h.*", "cells.*.uptake_per_h.*",
    "interventions.*", "drugs.*", "dosing.*", "treatment.*", "transfusion.*",
)
#: Keys with no slider: the run's duration, step, recording and seed (the seed has its own box).
HIDDEN_PATTERNS: tuple[str, ...] = ("run.*",)
#: Slider steps per range.
STEPS_PER_RANGE = 100


@dataclass(frozen=True)
class Control:
    """One control of the parameter panel.

    Args:
        key: dotted scenario key.
        label: text beside the control, with the unit in brackets.
        kind: ``float``, ``int`` or ``bool``.
        value: current value in the running scenario.
        min, max, step: slider range (None for ``bool``).
        live: applied while running (True) or at the next Reset (False).
        section: top-level table, used to group controls.
        description: the schema's one-line description (with its source).
    """

    key: str
    label: str
    kind: str
    value: Any
    min: float | None
    max: float | None
    step: float | None
    live: bool
    section: str
    description: str


def is_live(key: str) -> bool:
    """Whether the engine reads ``key`` every step (see ``LIVE_PATTERNS``)."""
    return any(fnmatch.fnmatchcase(key, p) for p in LIVE_PATTERNS)


def _leaves(data: dict, prefix: tuple[str, ...] = ()):
    for name, value in data.items():
        path = (*prefix, name)
        if isinstance(value, dict):
            yield from _leaves(value, path)
        else:
            yield path, value


def _nice_step(span: float) -> float:
    raw = span / STEPS_PER_RANGE
    if raw <= 0 or not math.isfinite(raw):
        return 0.01
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def slider_range(node: Key, value: float) -> tuple[float, float, float]:
    """(min, max, step) of a slider for a schema key around its current value.

    The schema's bounds are often wide (rates up to 1e6/h); the slider covers the schema's lower
    bound (or 0) to 4× the current value (at least 1), clipped to the schema's upper bound, and
    always contains the current value. Open bounds are moved in by one step.
    """
    value = float(value)
    lo = float(node.min) if node.min is not None else min(0.0, 4 * value)
    cap = max(4 * abs(value), 1.0)
    hi = min(float(node.max), cap) if node.max is not None else cap
    hi = max(hi, value)
    if node.type == "int":
        step = 1.0
        hi = float(math.ceil(hi))
    else:
        step = _nice_step(hi - lo)
    if node.min_open:
        lo += step
    if node.max_open:
        hi -= step
    lo, hi = min(lo, value), max(hi, value)
    return lo, hi, step


def controls_for(scenario: Scenario) -> list[Control]:
    """One control per numeric or boolean key of the resolved scenario, in file order."""
    controls = []
    for path, value in _leaves(scenario.data):
        key = ".".join(path)
        if any(fnmatch.fnmatchcase(key, p) for p in HIDDEN_PATTERNS):
            continue
        node = schema_node_at(path)
        if not isinstance(node, Key) or node.type not in ("float", "int", "bool"):
            continue
        unit = f" [{node.unit}]" if node.unit and node.unit not in ("fraction",) else ""
        label = ".".join(path[1:]) + unit
        if node.type == "bool":
            lo = hi = step = None
        else:
            lo, hi, step = slider_range(node, value)
        controls.append(Control(key=key, label=label, kind=node.type, value=value, min=lo,
                                max=hi, step=step, live=is_live(key), section=path[0],
                                description=node.description))
    return controls


class PendingOverrides:
    """Set-up changes waiting for the next Reset, per scenario.

    The app hands one instance to SolaraViz as a fixed model parameter; ``MarrowModel`` asks it
    for the changes of the scenario being built (``for_scenario``), so choosing another scenario
    starts from that scenario's own values.
    """

    def __init__(self) -> None:
        self._by_scenario: dict[str, dict[str, Any]] = {}

    def for_scenario(self, scenario_name: str) -> dict[str, Any]:
        """The pending ``{dotted_key: value}`` of a scenario (a copy)."""
        return dict(self._by_scenario.get(scenario_name, {}))

    def set(self, scenario_name: str, key: str, value: Any) -> None:
        """Record a change after checking that the scenario still validates with it.

        Raises:
            ScenarioError: the value is invalid (alone or with the other pending changes).
        """
        trial = {**self.for_scenario(scenario_name), key: value}
        load_scenario(scenario_name, [f"{k}={toml_value(v)}" for k, v in trial.items()])
        self._by_scenario[scenario_name] = trial

    def clear(self, scenario_name: str | None = None) -> None:
        """Forget the pending changes of one scenario (or of all)."""
        if scenario_name is None:
            self._by_scenario.clear()
        else:
            self._by_scenario.pop(scenario_name, None)

    def __repr__(self) -> str:  # shown by Mesa's parameter logging
        return f"PendingOverrides({self._by_scenario!r})"


__all__ = ["Control", "HIDDEN_PATTERNS", "LIVE_PATTERNS", "PendingOverrides", "controls_for",
           "is_live", "slider_range"]
