"""The simulation engine: owns geometry, fields, cells, zones and random streams; steps them in
a phase order that is data; records CPU time per phase. It never imports Mesa.

One step = ``run.dt_h`` (MODEL.md section 5). ``PHASE_ORDER`` lists every phase in order; in
each, the core's handler (if any) runs first, then each biology module's (``marrow_abm.biology``)
in module order. Phases nobody handles are skipped. The core handles:

- ``secrete``: zero the per-field source and uptake arrays, then add every cell kind's constant
  ``cells.<kind>.secretion_per_h`` / ``uptake_per_h`` in its voxel (modules add variable rates
  after this, at their cells' voxels; a module writing elsewhere calls
  ``Engine.secreted_everywhere``);
- ``diffuse``: every field advances by ``dt_h`` (the solver sub-steps or solves implicitly);
- ``sense``: each cell reads the field values in its voxel into ``<field>_at`` columns;
- ``remove_dead``: dead rows are compacted away;
- ``record``: at multiples of ``run.record_every_h`` the recorder takes a per-zone summary.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numba
import numpy as np
import pandas as pd

from .biology import MODULES, BiologyModule
from .cells import KINDS, CellTable, gather_into, gather_many_into, reset_and_add_rates
from .errors import GeometryError, ScenarioError
from .fields import FieldSet, FieldSpec
from .geometry import Geometry, build_geometry
from .record import Recorder, ZoneIndex
from .scenario import Scenario, load_scenario
from .streams import Streams

#: The order of phases within one step (MODEL.md section 5): drug PK, secretion, diffusion,
#: sensing, signal -> behaviour rules, cell cycle / division / death, megakaryocyte endomitosis
#: and platelet shedding, blood compartments, movement, removal of the dead, recording.
PHASE_ORDER: tuple[str, ...] = ("pk", "secrete", "diffuse", "sense", "rules", "cycle",
                                "megakaryocytes", "blood", "move", "remove_dead", "record")


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
        modules: biology module classes to consider (default ``marrow_abm.biology.MODULES``);
            each is used when its ``applies(scenario)`` is true.
        n_threads: numba threads for every phase of a step (default 1, the safe choice when
            other processes share the cores: docs/performance.md). Results are bitwise the
            same for any thread count. ``None`` keeps numba's current setting.
    """

    def __init__(self, scenario: Scenario, seed: int | None = None, replicate: int = 0,
                 modules: tuple[type[BiologyModule], ...] = MODULES,
                 n_threads: int | None = 1):
        if n_threads is not None and (isinstance(n_threads, bool)
                                      or not isinstance(n_threads, int) or n_threads < 1):
            raise ValueError(f"n_threads must be a positive integer or None, got {n_threads!r}")
        #: numba threads while stepping (capped at numba's pool size, NUMBA_NUM_THREADS).
        self.n_threads = n_threads
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
        self.zones = ZoneIndex(self.geometry)
        solver = scenario.data["solver"]
        self.fields = FieldSet(self.geometry.labels, self.geometry.dx_um, self.dt_h,
                               field_specs(scenario), method=solver["method"],
                               dtype=solver["dtype"], n_threads=n_threads,
                               preconditioner=solver["preconditioner"])
        dtype = np.dtype(solver["dtype"])
        shape = self.geometry.labels.shape
        #: Per-field source (concentration/h) and uptake-rate (1/h) arrays, rebuilt every step.
        self.sources = {f: np.zeros(shape, dtype) for f in self.fields.names}
        self.uptakes = {f: np.zeros(shape, dtype) for f in self.fields.names}
        #: Flat voxels outside which ``sources`` and ``uptakes`` are 0: every living cell's
        #: voxel at the last ``secrete`` phase, or None when a handler wrote elsewhere
        #: (``secreted_everywhere``) or before the first step.
        self._secreted_at: np.ndarray | None = None

        self.cells = CellTable(shape, capacity=max(1024, self.geometry.labels.size // 8))
        for f in self.fields.names:
            self.cells.add_column(f"{f}_at", np.float64)

        self.modules: list[BiologyModule] = [m(self) for m in modules if m.applies(scenario)]
        self.recorder = Recorder(self, self._module_metrics())

        self.phases = self._build_phases()
        self.phase_cpu_s = {name: 0.0 for name, _ in self.phases}
        self.phase_wall_s = {name: 0.0 for name, _ in self.phases}
        # Sense once so the t = 0 record sees the initial fields.
        self._phase_sense()
        self.recorder.record(self.time_h)

    def _module_metrics(self) -> dict[str, Callable[[], np.ndarray]]:
        """Every module's metric functions by name (a name defined twice is an error)."""
        extra: dict[str, Callable[[], np.ndarray]] = {}
        for module in self.modules:
            for name, fn in module.metrics().items():
                if name in extra:
                    raise ValueError(f"metric {name!r} is defined by two modules")
                extra[name] = fn
        return extra

    def _build_phases(self) -> list[tuple[str, list[Callable[[], None]]]]:
        """(phase, handlers) in ``PHASE_ORDER``: the core's handler first, then each module's."""
        phases: list[tuple[str, list[Callable[[], None]]]] = []
        handlers = [m.phase_handlers() for m in self.modules]
        for name in PHASE_ORDER:
            fns = [getattr(self, f"_phase_{name}")] if hasattr(self, f"_phase_{name}") else []
            fns += [h[name] for h in handlers if name in h]
            if fns:
                phases.append((name, fns))
        unknown = {p for h in handlers for p in h} - set(PHASE_ORDER)
        if unknown:
            raise ValueError(f"modules handle unknown phases {sorted(unknown)}; see PHASE_ORDER")
        return phases

    def fork(self, scenario: Scenario | None = None) -> Engine:
        """An independent copy of this running engine, optionally continuing under ``scenario``.

        The copy holds its own tissue, fields, random-stream states, clock, per-phase timers and
        the records so far; stepping either one never changes the other, and a copy stepped
        under the same scenario gives exactly the records the original would have. With
        ``scenario`` the copy reads that scenario from its next step on: it must describe the
        same tissue (geometry, fields, cell kinds and modules) and may differ in what modules
        read each step, such as interventions. Used to split one untreated leukemia into
        treatment arms at the same moment, as a mouse cohort is split, so the arms stay paired
        and the shared history is simulated once (``marrow_abm.claims.aml``).
        """
        new = copy.deepcopy(self)
        if scenario is not None:
            new.scenario = scenario
        # deepcopy rebinds bound methods to the copied objects but copies functions (lambdas,
        # closures) by reference, so phase handlers and metric functions that are closures
        # would still act on this engine's modules: ask the copied modules for them again.
        # A caller may have narrowed the phase list (``bench_mesa`` runs only the cell phases):
        # the copy leaves out the same phases. A phase the new scenario makes a module handle
        # (``leukemia.update_order``) is kept.
        dropped = ({name for name, _ in self._build_phases()}
                   - {name for name, _ in self.phases})
        new.phases = [(name, fns) for name, fns in new._build_phases() if name not in dropped]
        for name, _ in new.phases:
            new.phase_cpu_s.setdefault(name, 0.0)
            new.phase_wall_s.setdefault(name, 0.0)
        new.recorder = self.recorder.rebind(new, new._module_metrics())
        return new

    # -- core phases ---------------------------------------------------------------------------
    def secreted_everywhere(self) -> None:
        """Called by a ``secrete`` handler that wrote ``sources`` or ``uptakes`` at voxels
        without a cell (a field-wide intervention): the next step then zeroes the whole arrays
        and ``FieldSet.step`` checks every value, instead of only the cells' voxels."""
        self._secreted_at = None

    def _phase_secrete(self) -> None:
        # The handlers of this phase write only at living cells' voxels (or call
        # secreted_everywhere), so zeroing where they were last step clears the arrays:
        # filling 6 whole lattices is 48 MB at 1001², ~5 ms per step on one core.
        arrays = (*self.sources.values(), *self.uptakes.values())
        if not arrays:
            return
        cells = self.cells
        flat = tuple(arr.ravel() for arr in arrays)
        old = self._secreted_at
        if old is None:
            for arr in flat:
                arr.fill(0.0)
            old = np.empty(0, dtype=np.int64)
        # rates[kind code, k]: the kind's constant rate into flat[k] (sources, then uptakes)
        rates = np.zeros((len(KINDS), len(flat)))
        for kind, cfg in self.scenario.data["cells"].items():
            per_array = [cfg["secretion_per_h"].get(f, 0.0) for f in self.sources]
            per_array += [cfg["uptake_per_h"].get(f, 0.0) for f in self.uptakes]
            rates[KINDS[kind]] = per_array
        alive = cells["alive"]
        reset_and_add_rates(flat, old, cells["voxel"], cells["kind"], alive, rates)
        self._secreted_at = cells["voxel"][alive]

    def _phase_diffuse(self) -> None:
        self.fields.step(self.sources, self.uptakes, nonzero_at=self._secreted_at)

    def _phase_sense(self) -> None:
        # Straight into the columns (numpy's gather would allocate a temporary and copy it),
        # every field in one pass over the cells when the fields share a dtype; every row, so
        # each column is current for whoever reads it.
        cells = self.cells
        vox = cells["voxel"]
        values = tuple(self.fields.values[f].ravel() for f in self.fields.names)
        outs = tuple(cells[f"{f}_at"] for f in self.fields.names)
        if values and len({v.dtype for v in values}) == 1:
            gather_many_into(values, vox, outs)
        else:
            for val, out in zip(values, outs):
                gather_into(val, vox, out)

    def _phase_remove_dead(self) -> None:
        # Every step, not only once many rows are dead: a newborn cell's columns that ``add``
        # is not given keep the old data of its slot, which depends on when the table was last
        # compacted (CellTable.add), so delaying compaction would change results.
        self.cells.compact()

    def _phase_record(self) -> None:
        # Recording happens at the end of a step, at multiples of record_every_h.
        t_next = (self.step_index + 1) * self.dt_h
        n = round(t_next / self.record_every_h)
        if abs(t_next - n * self.record_every_h) < 1e-9 * max(1.0, t_next):
            self.recorder.record(t_next)

    # -- stepping ------------------------------------------------------------------------------
    def step(self) -> None:
        """Advance one agent step of ``dt_h`` hours through every phase, timing each."""
        # get/set_num_threads cost ≈ 6 µs each (they check the pool every time): set only on
        # a change.
        previous = numba.get_num_threads()
        wanted = previous if self.n_threads is None else min(self.n_threads,
                                                             numba.config.NUMBA_NUM_THREADS)
        if wanted != previous:
            numba.set_num_threads(wanted)
        try:
            for name, fns in self.phases:
                c0, w0 = time.process_time(), time.perf_counter()
                for fn in fns:
                    fn()
                self.phase_cpu_s[name] += time.process_time() - c0
                self.phase_wall_s[name] += time.perf_counter() - w0
        finally:
            if wanted != previous:
                numba.set_num_threads(previous)
        self.step_index += 1
        self.time_h = self.step_index * self.dt_h

    def n_steps_for(self, days: float) -> int:
        return round(days * 24.0 / self.dt_h)

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
    return eng.fields, eng.sources, eng.uptakes


__all__ = ["PHASE_ORDER", "Engine", "build_scenario_geometry", "default_fieldset", "field_specs"]
