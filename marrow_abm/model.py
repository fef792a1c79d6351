"""``MarrowModel``: a thin Mesa façade over the engine, for the browser app and for Mesa users.

The engine (``marrow_abm.engine``) never imports Mesa; this module wraps it so that a Mesa user
can step the marrow like any ``mesa.Model``, collect data with a ``DataCollector`` and embed it in
their own SolaraViz page. The façade adds nothing to the simulation: it draws no random numbers
from the engine's streams and calls ``Engine.step`` once per ``Model.step``, so its records are
identical to a headless run of the same scenario and seed (tested in ``tests/test_model.py``).

Time: Mesa's ``model.time`` counts steps (it advances by 1.0 per ``step()``); the simulated time
in hours is ``model.time_h`` (= ``model.time * dt_h``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import mesa
import numpy as np
import pandas as pd

from .engine import Engine
from .errors import MarrowError, ScenarioError
from .scenario import Scenario, load_scenario

#: Zone whose value a metric's plain DataCollector column holds; other zones get ``name[zone]``.
MAIN_ZONE = "all"


def reporter_name(metric: str, zone: str) -> str:
    """DataCollector column of a recorded metric in a zone: ``n_blc`` (zone all), ``n_blc[endosteal]``."""
    return metric if zone == MAIN_ZONE else f"{metric}[{zone}]"


def parse_seed(rng: int | str | None) -> int | None:
    """The integer seed from a number or from the text of an input box (None or "" = scenario's).

    Raises:
        MarrowError: the text is not a non-negative integer.
    """
    if rng is None or (isinstance(rng, str) and rng.strip() == ""):
        return None
    if isinstance(rng, bool):
        raise MarrowError(f"seed must be a non-negative integer, got {rng!r}")
    if isinstance(rng, (int, np.integer)):
        value = int(rng)
    elif isinstance(rng, str):
        try:
            value = int(rng.strip())
        except ValueError:
            raise MarrowError(f"seed must be a non-negative integer, got {rng!r}") from None
    else:
        # A Generator would seed Mesa's stdlib stream from a draw (MESA_NOTES): refuse it.
        raise MarrowError(f"rng must be an integer seed, got {type(rng).__name__}")
    if value < 0:
        raise MarrowError(f"seed must be a non-negative integer, got {value}")
    return value


def toml_value(value: Any) -> str:
    """A Python scalar as the TOML text ``load_scenario`` overrides expect (``KEY=VALUE``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            raise MarrowError(f"{value} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise MarrowError(f"cannot set a scenario key to a {type(value).__name__}")


def _override_list(overrides: Any, scenario_name: str) -> list[str]:
    """``KEY=VALUE`` strings from a sequence of strings, a mapping, or an object with
    ``for_scenario(name)`` (the browser app's pending slider changes)."""
    if overrides is None:
        return []
    if hasattr(overrides, "for_scenario"):
        overrides = overrides.for_scenario(scenario_name)
    if isinstance(overrides, Mapping):
        return [f"{k}={toml_value(v)}" for k, v in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return [str(s) for s in overrides]


class MarrowModel(mesa.Model):
    """A marrow simulation as a ``mesa.Model``.

    Every keyword is a model parameter a SolaraViz page can set. The state lives in the engine
    (``model.engine``): cells as a structure of arrays, fields as numpy arrays. No Mesa agents or
    grid are created (a Mesa grid costs ≈ 1.8 kB per voxel, MESA_NOTES).

    Args:
        scenario_name: bundled scenario name or path to a TOML file. (Not ``scenario``: Mesa
            reserves that name for its own scenario objects.)
        rng: integer root seed (or its text); None uses the scenario's ``run.seed``. Seeds both
            the engine's named streams and Mesa's ``model.rng``/``model.random``.
        replicate: replicate index (independent streams per replicate).
        overrides: scenario overrides: ``["fields.tgfb.decay_per_h=2.0", ...]``, a mapping
            ``{dotted_key: value}``, or an object with ``for_scenario(name)`` returning either.

    Raises:
        ScenarioError: unknown scenario, bad key or value.
        MarrowError: a seed that is not a non-negative integer.
    """

    def __init__(self, scenario_name: str = "default", rng: int | str | None = None,
                 replicate: int = 0, overrides: Any = None):
        scenario = load_scenario(scenario_name, _override_list(overrides, scenario_name))
        seed = parse_seed(rng)
        seed = int(scenario.data["run"]["seed"]) if seed is None else seed
        super().__init__(rng=seed)
        self.scenario_name = scenario_name
        self.engine = Engine(scenario, seed=seed, replicate=replicate)
        self.seed = seed
        self.replicate = int(replicate)
        #: Changes made while running (``set_parameter``): (time_h, dotted key, value).
        self.live_changes: list[tuple[float, str, Any]] = []

        recorder = self.engine.recorder
        reporters: dict[str, Any] = {"time_h": partial(_latest_time_h)}
        for metric in recorder.metrics:
            for zi, zone in enumerate(recorder.zones):
                reporters[reporter_name(metric, zone)] = partial(_latest_value, metric, zi)
        self.datacollector = mesa.DataCollector(model_reporters=reporters)
        self._n_collected = 0
        self._collect_new_records()

    # -- properties ----------------------------------------------------------------------------
    @property
    def marrow_scenario(self) -> Scenario:
        """The engine's resolved scenario (including any change made while running)."""
        return self.engine.scenario

    @property
    def time_h(self) -> float:
        """Simulated time (h)."""
        return self.engine.time_h

    @property
    def metrics(self) -> tuple[str, ...]:
        """Names of the recorded metrics (each has one DataCollector column per zone)."""
        return tuple(self.engine.recorder.metrics)

    # -- stepping ------------------------------------------------------------------------------
    def step(self) -> None:
        """Advance the engine by one agent step of ``dt_h`` hours; collect any new record."""
        self.engine.step()
        self._collect_new_records()

    def _collect_new_records(self) -> None:
        # The DataCollector holds one row per engine record (every run.record_every_h), so its
        # rows match the Parquet output row for row.
        n = self.engine.recorder.n_records
        while self._n_collected < n:
            self._n_collected += 1
            self.datacollector.collect(self)

    def records(self) -> pd.DataFrame:
        """The engine's tidy per-zone records (as ``marrow-abm run`` writes them)."""
        return self.engine.records()

    # -- changes while running -----------------------------------------------------------------
    def set_parameter(self, dotted_key: str, value: Any) -> None:
        """Change a scenario key while running (an intervention toggled, a dose, a rate).

        The scenario is re-validated with the change and handed to the engine; phases that read
        the scenario each step (secretion and uptake rates today; interventions and doses as
        the biology issues add them) use the new value from the next step on. Keys the engine
        reads only at start (geometry, zones, field coefficients) need a reset instead.

        Args:
            dotted_key: e.g. ``cells.msc.secretion_per_h.mitogen``.
            value: the new value (bool, int, float or str, in the key's unit).

        Raises:
            ScenarioError: unknown key or invalid value (the running model is unchanged).
        """
        sc = self.engine.scenario
        text = f"{dotted_key}={toml_value(value)}"
        kept = [o for o in sc.overrides if o.split("=", 1)[0].strip() != dotted_key]
        new = load_scenario(str(sc.path), [*kept, text])
        if new.data["run"] != sc.data["run"] or new.data["geometry"] != sc.data["geometry"]:
            raise ScenarioError("cannot change the run or geometry while running: reset instead",
                                file=str(sc.path), key=dotted_key)
        self.engine.scenario = new
        self.live_changes.append((self.time_h, dotted_key, value))


def _latest_value(metric: str, zone_index: int, model: MarrowModel) -> float:
    latest = model.engine.recorder.latest()
    return float(latest[1][metric][zone_index]) if latest else float("nan")


def _latest_time_h(model: MarrowModel) -> float:
    latest = model.engine.recorder.latest()
    return float(latest[0]) if latest else float("nan")


__all__ = ["MAIN_ZONE", "MarrowModel", "parse_seed", "reporter_name", "toml_value"]
