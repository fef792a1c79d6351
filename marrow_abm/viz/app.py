"""The browser app: ``marrow-abm viz [SCENARIO]`` serves this page with ``solara run``.

Mesa's SolaraViz gives the app bar, the Step / Play / Reset controls, the play and render
intervals and the scenario and seed inputs (its model parameters); the page below it holds the
fast tissue view, the live plots and the parameter panel (``components.py``). SolaraViz's own
component grid is not used: its fixed half-width tiles are too small for a tissue section and a
plot grid side by side.

The scenario shown first comes from the environment variable ``MARROW_VIZ_SCENARIO`` (set by the
CLI; default ``default``). Run by hand with::

    MARROW_VIZ_SCENARIO=metaphysis solara run marrow_abm/viz/app.py --host 127.0.0.1
"""

from __future__ import annotations

import os

import numba
import solara
from mesa.visualization import SolaraViz

from marrow_abm.errors import MarrowError
from marrow_abm.model import MarrowModel, parse_seed
from marrow_abm.scenario import list_scenarios
from marrow_abm.viz.components import ParameterPanel, PlotsView, StatusLine, TissueView
from marrow_abm.viz.params import PendingOverrides

#: Environment variable naming the first scenario shown.
SCENARIO_ENV = "MARROW_VIZ_SCENARIO"
#: Milliseconds between Play steps (Mesa's slider changes it in the page).
PLAY_INTERVAL_MS = 50

# One numba thread in the server: the default threading layer spins, and spinning threads fight
# the browser for the cores (MESA_NOTES; a 2-thread stencil ran up to 300x slower under load).
numba.set_num_threads(1)


class VizModel(MarrowModel):
    """``MarrowModel`` that survives a seed box holding something other than an integer.

    Mesa's Reset builds the model from the page's inputs; a typo in the seed box would otherwise
    end in a traceback on the page. Here the scenario's own seed is used instead and the problem
    is shown in the status line (``input_error``).
    """

    def __init__(self, scenario_name: str = "default", rng: int | str | None = None,
                 replicate: int = 0, overrides=None):
        error = None
        try:
            parse_seed(rng)
        except MarrowError as exc:
            error, rng = f"{exc}: using the scenario's seed instead", None
        super().__init__(scenario_name=scenario_name, rng=rng, replicate=replicate,
                         overrides=overrides)
        self.input_error = error


def scenario_choices(first: str) -> list[str]:
    """Bundled scenario names, with ``first`` (possibly a file path) at the front."""
    names = [info.name for info in list_scenarios()]
    return [first, *[n for n in names if n != first]]


SCENARIO = os.environ.get(SCENARIO_ENV, "default") or "default"
#: Set-up changes from the parameter panel, applied by Reset (a fixed model parameter).
PENDING = PendingOverrides()
_initial = VizModel(scenario_name=SCENARIO, overrides=PENDING)
#: The page's model; SolaraViz's Reset replaces ``model.value``.
model = solara.reactive(_initial)
MODEL_PARAMS = {
    "scenario_name": {"type": "Select", "value": SCENARIO, "values": scenario_choices(SCENARIO),
                      "label": "Scenario"},
    "rng": {"type": "InputText", "value": str(_initial.seed), "label": "Seed (integer)"},
    "overrides": PENDING,
}


@solara.component
def MainView(m: MarrowModel) -> None:
    """Status, tissue view and plots side by side, then the parameter panel."""
    # Vuetify capitalises button text, which turns "TGF-β1" into "TGF-Β1".
    solara.Style(".marrow-tissue .v-btn { text-transform: none; }")
    StatusLine(m)
    with solara.Columns([5, 6], gutters_dense=True):
        TissueView(m)
        PlotsView(m)
    ParameterPanel(m, PENDING)


@solara.component
def Page() -> None:
    """The whole page (``solara run`` looks for ``Page``)."""
    solara.Title("marrow_abm")
    SolaraViz(model, None, components=[], model_params=MODEL_PARAMS, name="marrow_abm",
              play_interval=PLAY_INTERVAL_MS)
    MainView(model.value)


__all__ = ["MODEL_PARAMS", "Page", "PENDING", "SCENARIO_ENV", "VizModel", "model"]
