"""The simulation engine: owns geometry, fields, cells and random streams; steps them in a
phase order that is data; records CPU time per phase. It never imports Mesa.

One step = ``run.dt_h`` (MODEL.md section 5). The phases implemented so far:

- ``secrete``: cells write their secretion and uptake rates into per-field source arrays;
- ``diffuse``: every field advances by ``dt_h`` (the solver sub-steps or solves implicitly);
- ``sense``: each cell reads the field values in its voxel into ``<field>_at`` columns;
- ``remove_dead``: dead rows are compacted away;
- ``record``: at multiples of ``run.record_every_h`` the recorder takes a per-zone summary.

Biology issues insert their phases (rules, cycle, megakaryocytes, move ...) into ``PHASE_ORDER``
at the place MODEL.md section 5 gives them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from .cells import KINDS, CellTable
from .errors import GeometryError, ScenarioError
from .fields import FieldSet, FieldSpec
from .geometry import BONE, MARROW, SINUSOID, Geometry, build_geometry
from .record import Recorder
from .scenario import Scenario, load_scenario
from .streams import Streams

#: The order of phases within one step (MODEL.md section 5). Data, not control flow: the engine
#: looks each name up as ``_phase_<name>``.
PHASE_ORDER: tuple[str, ...] = ("secrete", "diffuse", "sense", "remove_dead", "record")

#: Niche kinds placed at start, with the geometry surface they sit on and the scenario key giving
#: the fraction of that surface they occupy (MODEL.md section 3).
NICHE_PLACEMENT: dict[str, tuple[int, str]] = {
    "blc": (BONE, "frac_bone_surface"),
    "msc": (SINUSOID, "frac_sinusoid_surface"),
}


def build_scenario_geometry(scenario: Scenario, streams: Streams) -> Geometry:
    """Build the scenario's geometry; an unreadable image becomes a ScenarioError naming the key."""
    data = scenario.data
    try:
        return build_geometry(data["geometry"], data["zones"], streams["geometry"],
                              scenario.base_dir())
    except GeometryError as exc:
        key = "geometry.image_path" if data["geometry"]["generator"] == "image" else "geometry"
        raise ScenarioError(str(exc), file=str(scenario.path), key=key) from exc


def field_specs(scenario: Scenario) -> dict[str, FieldSpec]:
    """FieldSpec per field of the resolved scenario, in file order."""
    return {
        name: FieldSpec(
            name=name,
            label=spec["label"],
            diffusion_um2_per_s=float(spec["diffusion_um2_per_s"]),
            decay_per_h=float(spec["decay_per_h"]),
            sinusoid_clearance_per_h=float(spec["sinusoid_clearance_per_h"]),
            initial=float(spec["initial"]),
        )
        for name, spec in scenario.data["fields"].items()
    }


class Engine:
    """A single simulation run of one scenario, one seed and one replicate.

    Args:
        scenario: a validated scenario (``load_scenario``).
        seed: root seed; defaults to the scenario's ``run.seed``.
        replicate: replicate index (independent random streams per replicate).
    """

    def __init__(self, scenario: Scenario, seed: int | None = None, replicate: int = 0):
        self.scenario = scenario
        run = scenario.data["run"]
        self.seed = int(run["seed"] if seed is None else seed)
        self.replicate = int(replicate)
        self.streams = Streams(self.seed, self.replicate)
        self.dt_h = float(run["dt_h"])
        self.record_every_h = float(run["record_every_h"])
        self.time_h = 0.0
        self.step_index = 0

        self.geometry = build_scenario_geometry(scenario, self.streams)
        solver = scenario.data["solver"]
        self.fields = FieldSet(self.geometry.labels, self.geometry.dx_um, self.dt_h,
                               field_specs(scenario), method=solver["method"],
                               dtype=solver["dtype"])
        n_vox = self.geometry.labels.size
        dtype = np.dtype(solver["dtype"])
        self._sources = {f: np.zeros(self.geometry.labels.shape, dtype) for f in self.fields.names}
        self._uptakes = {f: np.zeros(self.geometry.labels.shape, dtype) for f in self.fields.names}

        self.cells = CellTable(self.geometry.labels.shape, capacity=max(1024, n_vox // 8))
        for f in self.fields.names:
            self.cells.add_column(f"{f}_at", np.float64)
        self._place_niche_cells()

        self.recorder = Recorder(self)
        self.phases: list[tuple[str, Callable[[], None]]] = [
            (name, getattr(self, f"_phase_{name}")) for name in PHASE_ORDER
        ]
        self.phase_cpu_s = {name: 0.0 for name in PHASE_ORDER}
        self.phase_wall_s = {name: 0.0 for name in PHASE_ORDER}
        # Sense once so the t = 0 record sees the initial fields.
        self._phase_sense()
        self.recorder.record(self.time_h)

    # -- set-up --------------------------------------------------------------------------------
    def _place_niche_cells(self) -> None:
        """Place BLC on marrow voxels touching bone and MSC on voxels touching a sinusoid.

        Each kind occupies a scenario-given fraction of its surface, chosen uniformly at random
        from its own stream, so changing one kind's density never moves the other's cells.
        """
        cells_cfg = self.scenario.data["cells"]
        marrow = self.geometry.labels.ravel() == MARROW
        for kind, (surface, frac_key) in NICHE_PLACEMENT.items():
            cfg = cells_cfg.get(kind)
            if cfg is None:
                continue
            touching = self.geometry.touching(surface).ravel() & marrow
            free = np.flatnonzero(touching & (self.cells.occupant < 0))
            n = int(round(float(cfg[frac_key]) * free.size))
            rng = self.streams[f"placement.{kind}"]
            chosen = np.sort(rng.choice(free, size=n, replace=False)) if n else free[:0]
            self.cells.add(kind, chosen, time_h=0.0)

    # -- phases --------------------------------------------------------------------------------
    def _phase_secrete(self) -> None:
        cells_cfg = self.scenario.data["cells"]
        for arr in (*self._sources.values(), *self._uptakes.values()):
            arr.fill(0.0)
        for kind, cfg in cells_cfg.items():
            rows = self.cells.rows_of(kind)
            if rows.size == 0:
                continue
            vox = self.cells["voxel"][rows]
            for field, rate in cfg["secretion_per_h"].items():
                self._sources[field].ravel()[vox] += rate
            for field, rate in cfg["uptake_per_h"].items():
                self._uptakes[field].ravel()[vox] += rate

    def _phase_diffuse(self) -> None:
        self.fields.step(self._sources, self._uptakes)

    def _phase_sense(self) -> None:
        vox = self.cells["voxel"]
        for f in self.fields.names:
            self.cells[f"{f}_at"][:] = self.fields.values[f].ravel()[vox]

    def _phase_remove_dead(self) -> None:
        self.cells.compact()

    def _phase_record(self) -> None:
        # Recording happens after time has advanced, at multiples of record_every_h.
        t_next = self.time_h + self.dt_h
        n = round(t_next / self.record_every_h)
        if abs(t_next - n * self.record_every_h) < 1e-9 * max(1.0, t_next):
            self.recorder.record(t_next)

    # -- stepping ------------------------------------------------------------------------------
    def step(self) -> None:
        """Advance one agent step of ``dt_h`` hours through every phase, timing each."""
        for name, fn in self.phases:
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            self.phase_cpu_s[name] += time.process_time() - c0
            self.phase_wall_s[name] += time.perf_counter() - w0
        self.time_h = (self.step_index + 1) * self.dt_h
        self.step_index += 1

    def n_steps_for(self, days: float) -> int:
        return int(round(days * 24.0 / self.dt_h))

    def run(self, days: float | None = None, progress: Callable[[int, int], None] | None = None
            ) -> pd.DataFrame:
        """Run for ``days`` (default: the scenario's ``run.days``) and return the records."""
        days = float(self.scenario.data["run"]["days"] if days is None else days)
        total = self.n_steps_for(days)
        for i in range(total):
            self.step()
            if progress is not None:
                progress(i + 1, total)
        return self.records()

    def records(self) -> pd.DataFrame:
        """Tidy per-zone records so far (one row per recorded time and zone)."""
        return self.recorder.frame()

    def cell_counts(self) -> dict[str, int]:
        return dict(self.cells.count_by_kind())


def default_fieldset() -> tuple[FieldSet, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The default scenario's fields with its niche cells' sources and uptakes, ready to step.

    Used by ``marrow-abm bench`` to time one hourly step of all fields on the default section.
    Returns ``(fieldset, sources_per_h, uptake_per_h)``.
    """
    eng = Engine(load_scenario("default"))
    eng._phase_secrete()
    return eng.fields, eng._sources, eng._uptakes


__all__ = ["Engine", "PHASE_ORDER", "KINDS", "build_scenario_geometry", "default_fieldset",
           "field_specs"]
