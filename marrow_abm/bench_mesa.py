"""Cell rules against idiomatic Mesa: the LSC quiescence/adhesion rule set written the way a Mesa
3.5 user writes it (one ``CellAgent.step`` per cell on an ``OrthogonalMooreGrid``, activated by
``model.agents.shuffle_do("step")``) and run beside ours (the production numba kernels over the
structure of arrays) on the same marrow section, fields and parameters (issue 7).

**The rule set compared** (the LSC rules of ``scenarios/aml_progression.toml``, MODEL.md
hypotheses 1, 2 and 6; Nguyen, Yao, Arai et al., Leukemia 2025). Per LSC per hourly step
(``dt_h`` = 1):

1. *sense*: the number of BLC among its 8 Moore neighbours (``contact_blc``), OPN, MSC mitogen and
   TGF-β1 in its voxel, and whether it is bound to a BLC (``bound``, 0/1);
2. *rules*: every LSC behaviour from its signals with PhysiCell's multivariate Hill combination
   (``marrow_abm.rules``): G0 entry (bound ↑), G0 exit (bound ↓, mitogen ↑), G1 exit (mitogen
   ↑), adhesion and chemotaxis (OPN ↑), detachment (OPN ↓), TGF-β1 secretion (BLC contact ↑);
   death, division and migration at their base rates. A rate r becomes a per-step probability
   1 − exp(−r·dt);
3. *adhesion*: a bound cell lets go when no BLC touches it or with p(detachment); an unbound cell
   touching a BLC binds with p(adhesion);
4. *cycle*: death with p(death); then G0 → G1 with p(G0 exit), G1 → G0 with p(G0 entry) else
   G1 → S-G2-M with p(G1 exit) (competing), S-G2-M → division with p(division): the daughter, an
   LSC in G1, takes a uniformly chosen free Moore neighbour; with none free the mother stays in
   S-G2-M (contact inhibition);
5. *move*: an unbound cell moves with p(migration) into a free Moore neighbour: with probability
   ``chemotaxis_opn`` the one with the most OPN if that beats its own voxel, else a uniform one.

A free voxel is a marrow voxel holding no cell (normal tissue, which a moving or dividing LSC
displaces). BLC and MSC are fixed obstacles; the fields are held fixed at the values of a
relaxed run (``relaxed_section``: ``aml_progression`` for ``relax_days`` on the section), so the
comparison is of cell rules only, not of diffusion. Two scenario settings make the rule set
LSC-only: ``leukemia.p_symmetric_self_renewal = 1`` (every daughter is an LSC) and
``leukemia.division_radius_voxels = 1`` (the daughter takes a neighbour, as in the Mesa idiom).

**Update order.** Mesa activates agents one at a time in random order, each doing 1–5 before
the next starts; ours does phase 1–3 for all cells, then 4 for all (divisions in random order),
then 5 (moves in random order), as the engine does. The two schemes differ only where two cells
compete for the same free voxel within one step; the G0 fraction and the LSC count are compared
statistically over replicates (``compare_replicates``).

**Ours** is the production path itself: the engine's ``sense``, ``rules``, ``cycle``, ``move``
and ``remove_dead`` phases (``ENGINE_PHASES``) with ``LeukemiaModule`` and its fused numba
kernels (``rules_step``, ``death_step``, ``cycle_step``, ``divide_step``, ``move_choice``,
``move_step``), exactly as a full AML run steps them, on ``threads`` numba threads
(``run_ours``). No special copy of the rules is timed.

This module imports Mesa; the engine never imports it.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import hashlib
import math
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mesa
import numba
import numpy as np
from mesa.discrete_space import CellAgent, OrthogonalMooreGrid
from scipy import stats

from .engine import Engine
from .geometry import MARROW
from .kernels.leukemia import G0, G1, SG2M
from .rules import RuleSet, scenario_rules
from .scenario import Scenario, load_scenario
from .streams import Streams

__all__ = [
    "ENGINE_PHASES",
    "LSCAgent",
    "LSCNicheModel",
    "RunResult",
    "Section",
    "analytic_section",
    "compare_replicates",
    "comparison_scenario",
    "engine_probabilities",
    "initial_lsc_voxels",
    "make_section",
    "print_mesa_comparison",
    "relaxed_section",
    "run_mesa",
    "run_mesa_comparison",
    "run_ours",
    "section_labels",
    "with_update_order",
]

#: Signals of the LSC rules that are identically zero in this comparison (no chemotherapy given;
#: the Mesa agent senses 0).
_ZERO_SIGNALS = ("cytarabine", "doxorubicin")
#: Signals the LSC rules read that this comparison provides; any other is an error.
_SIGNALS = ("bound", "contact_blc", "opn", "mitogen", "tgfb", *_ZERO_SIGNALS)


# ---------------------------------------------------------------------------------------------
# The section: geometry, niche cells and frozen fields shared by both implementations

_TMP: Path | None = None


def _tmp_dir() -> Path:
    """A process-wide scratch folder for section images (removed at exit)."""
    global _TMP
    if _TMP is None:
        _TMP = Path(tempfile.mkdtemp(prefix="marrow_bench_mesa_"))
        atexit.register(shutil.rmtree, _TMP, True)
    return _TMP


def section_labels(size: int, seed: int = 1) -> np.ndarray:
    """A ``size``×``size`` mouse femur cross-section (marrow disc, cortex, sinusoids).

    The femur generator makes odd, centred squares; the outer radius is chosen so its square is
    ``size + 1`` wide and the last row and column (cortex) are dropped.

    Args:
        size: voxels per side (even, ≥ 40).
        seed: root seed of the geometry stream.
    """
    sc = load_scenario("aml_progression")
    geo = dict(sc.data["geometry"])
    dx = float(geo["dx_um"])
    cortex = float(geo["cortex_thickness_um"])
    outer = (size // 2) * dx
    if outer - cortex < 10 * dx:
        raise ValueError(f"size {size} leaves no marrow inside a {cortex:g} µm cortex")
    from .geometry import femur_diaphysis
    labels = femur_diaphysis(rng=Streams(seed)["geometry"], dx_um=dx,
                             marrow_radius_um=outer - cortex, cortex_thickness_um=cortex,
                             sinusoid_area_fraction=float(geo["sinusoids"]["area_fraction"]),
                             sinusoid_spacing_um=float(geo["sinusoids"]["spacing_um"]))
    return np.ascontiguousarray(labels[:size, :size])


def comparison_scenario(labels: np.ndarray, extra: Sequence[str] = ()) -> Scenario:
    """``aml_progression`` on the given section (saved as a label image), with the two LSC-only
    settings; ``extra`` overrides come last."""
    labels = np.ascontiguousarray(labels, dtype=np.int8)
    digest = hashlib.sha1(labels.tobytes() + repr(labels.shape).encode()).hexdigest()[:16]
    path = _tmp_dir() / f"section_{digest}.npy"
    if not path.exists():
        np.save(path, labels)
    return load_scenario("aml_progression", [
        "geometry.generator=image", f"geometry.image_path={path}",
        "leukemia.p_symmetric_self_renewal=1.0", "leukemia.division_radius_voxels=1",
        *extra])


@dataclass(frozen=True)
class Section:
    """What both implementations start from.

    Attributes:
        scenario: the comparison scenario (``comparison_scenario``).
        seed: root seed of geometry and niche placement.
        labels: (ny, nx) int8 lattice labels (0 marrow, 1 bone, 2 sinusoid).
        blc_voxels, msc_voxels: flat voxels of the niche cells (fixed).
        fields: field name -> (ny, nx) float64 values, frozen (normalised concentration units).
        relax_days: how long the run that produced the fields lasted.
    """

    scenario: Scenario
    seed: int
    labels: np.ndarray
    blc_voxels: np.ndarray
    msc_voxels: np.ndarray
    fields: Mapping[str, np.ndarray]
    relax_days: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape

    def free_voxels(self) -> np.ndarray:
        """Flat marrow voxels holding no niche cell."""
        free = self.labels.ravel() == MARROW
        free[self.blc_voxels] = False
        free[self.msc_voxels] = False
        return np.flatnonzero(free)


def make_section(labels: np.ndarray, blc_voxels, msc_voxels, fields: Mapping[str, np.ndarray],
                 seed: int = 1, relax_days: float = 0.0) -> Section:
    """A section from arrays (hand-built cases in tests; ``relaxed_section`` otherwise).

    Args:
        labels: (ny, nx) int labels (0 marrow, 1 bone, 2 sinusoid).
        blc_voxels, msc_voxels: flat voxels of the niche cells (marrow voxels).
        fields: ``opn``, ``mitogen`` and ``tgfb`` maps, (ny, nx), normalised units.
        seed: root seed of the replicate streams.
        relax_days: recorded only.
    """
    labels = np.ascontiguousarray(labels, dtype=np.int8)
    frozen = {}
    for name in ("opn", "mitogen", "tgfb"):
        arr = np.array(fields[name], dtype=np.float64)
        if arr.shape != labels.shape:
            raise ValueError(f"field {name} has shape {arr.shape}, labels {labels.shape}")
        arr.setflags(write=False)
        frozen[name] = arr
    return Section(scenario=comparison_scenario(labels, ["leukemia.n_lsc_initial=0"]),
                   seed=int(seed), labels=labels,
                   blc_voxels=np.sort(np.asarray(blc_voxels, np.int64)),
                   msc_voxels=np.sort(np.asarray(msc_voxels, np.int64)),
                   fields=frozen, relax_days=float(relax_days))


@functools.lru_cache(maxsize=4)
def relaxed_section(size: int = 200, relax_days: float = 7.0, seed: int = 1) -> Section:
    """The ``size``² femur section with fields from a relaxed run (cached per arguments).

    The relaxing run is the full ``aml_progression`` model (niche dynamics, 30 transplanted L-GMP
    growing, all three fields diffusing) for ``relax_days``; its OPN, mitogen and TGF-β1 maps
    are then frozen. The niche cells are those the scenario places at t = 0 with the same seed
    (the relaxing run loses a few BLC to leukemic crowding; the comparison keeps all of them).

    Args:
        size: voxels per side.
        relax_days: simulated days of the relaxing run (OPN settles in ≈ 2 days, t½ ≈ 12 h).
        seed: root seed.
    """
    relax = Engine(comparison_scenario(section_labels(size, seed),
                                       ["leukemia.p_symmetric_self_renewal=0.3",
                                        "leukemia.division_radius_voxels=2"]), seed=seed)
    niche = {k: relax.cells["voxel"][relax.cells.rows_of(k)].copy() for k in ("blc", "msc")}
    relax.run(days=relax_days)
    return make_section(relax.geometry.labels, niche["blc"], niche["msc"],
                        {f: relax.fields.values[f] for f in ("opn", "mitogen", "tgfb")},
                        seed=seed, relax_days=relax_days)


def analytic_section(size: int = 80, seed: int = 1) -> Section:
    """The ``size``² femur section with its t = 0 niche and *analytic* frozen fields, for fast
    tests (no field solver is compiled or run).

    Each field is the decaying exponential of a point source's steady state around the nearest
    secreting niche cell, exp(−d/λ) with λ = √(D/k) from the scenario (OPN: BLC, λ ≈ 55 µm;
    mitogen: MSC, λ ≈ 230 µm), scaled to the ranges a relaxed run gives (OPN ≈ 1 at a BLC,
    mitogen ≈ 0.5 at an MSC); TGF-β1 is 0 (no LSC rule reads it). A stand-in with the right
    shape, not a solution of the field equations: use ``relaxed_section`` for the benchmark.

    Args:
        size: voxels per side.
        seed: root seed of geometry and niche placement.
    """
    from scipy import ndimage

    from .biology import NicheModule

    labels = section_labels(size, seed)
    sc = comparison_scenario(labels, ["leukemia.n_lsc_initial=0"])
    eng = Engine(sc, seed=seed, modules=(NicheModule,))
    niche = {k: eng.cells["voxel"][eng.cells.rows_of(k)].copy() for k in ("blc", "msc")}
    dx = float(sc.data["geometry"]["dx_um"])
    fields = {"tgfb": np.zeros(labels.shape)}
    for name, kind, peak in (("opn", "blc", 1.0), ("mitogen", "msc", 0.5)):
        spec = sc.data["fields"][name]
        d_um2_per_h = float(spec["diffusion_um2_per_s"]) * 3600.0
        lam_um = math.sqrt(d_um2_per_h / float(spec["decay_per_h"]))
        src = np.ones(labels.size, bool)
        src[niche[kind]] = False
        d_um = ndimage.distance_transform_edt(src.reshape(labels.shape), sampling=dx)
        fields[name] = np.where(labels == MARROW, peak * np.exp(-d_um / lam_um), 0.0)
    return make_section(labels, niche["blc"], niche["msc"], fields, seed=seed)


def initial_lsc_voxels(section: Section, frac_marrow: float, replicate: int) -> np.ndarray:
    """Sorted flat voxels of the starting LSC: a uniform ``frac_marrow`` share of the free
    marrow voxels, the same for both implementations in a replicate."""
    free = section.free_voxels()
    n = round(frac_marrow * free.size)
    rng = Streams(section.seed, replicate)["placement.benchmark"]
    return np.sort(rng.choice(free, size=n, replace=False))


@dataclass
class RunResult:
    """One run of one implementation.

    Attributes:
        impl: ``mesa`` or ``ours``.
        n_lsc: living LSC at the end.
        frac_g0: fraction of living LSC in G0 (Ki67-) at the end.
        frac_bound: fraction of living LSC bound to a BLC at the end.
        cell_steps: sum over steps of the LSC that stepped (alive at the step's start).
        seconds: wall time of the stepping loop only (set-up excluded).
        threads: numba threads (0 for Mesa).
        phase_ns: ours only: wall ns per cell-step of each engine phase (``ENGINE_PHASES``),
            from the engine's phase timer over the stepping loop; where the time goes.
    """

    impl: str
    n_lsc: int
    frac_g0: float
    frac_bound: float
    cell_steps: int
    seconds: float
    threads: int = 0
    phase_ns: dict = field(default_factory=dict)

    @property
    def cell_steps_per_s(self) -> float:
        return self.cell_steps / self.seconds if self.seconds > 0 else math.inf


# ---------------------------------------------------------------------------------------------
# The rules as scalar Python, for the Mesa agent

@dataclass(frozen=True)
class _ScalarRule:
    """One behaviour's rules, ready for scalar evaluation (PhysiCell combination)."""

    base: float
    up: tuple[tuple[str, float, float], ...]     # (signal, half-max, power)
    up_max: float
    down: tuple[tuple[str, float, float], ...]
    down_min: float

    def __call__(self, signals: Mapping[str, float]) -> float:
        x = 0.0
        for name, half, power in self.up:
            s = signals[name]
            if s > 0.0:
                x += (s / half) ** power
        b = self.base + (self.up_max - self.base) * (x / (1.0 + x))
        y = 0.0
        for name, half, power in self.down:
            s = signals[name]
            if s > 0.0:
                y += (s / half) ** power
        return b + (self.down_min - b) * (y / (1.0 + y))


def _scalar_rules(rules: RuleSet, kind: str = "lsc") -> dict[str, _ScalarRule]:
    out = {}
    for beh in rules.bases[kind]:
        up, down = rules.rules_for(kind, beh)
        for r in (*up, *down):
            if r.signal not in _SIGNALS:
                raise ValueError(f"LSC rule on signal {r.signal!r}: not part of the compared "
                                 f"rule set ({', '.join(_SIGNALS)})")
        out[beh] = _ScalarRule(
            base=rules.base(kind, beh),
            up=tuple((r.signal, r.half_max, r.hill_power) for r in up),
            up_max=up[0].max_response if up else 0.0,
            down=tuple((r.signal, r.half_max, r.hill_power) for r in down),
            down_min=down[0].max_response if down else 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# Idiomatic Mesa 3.5

class LSCAgent(CellAgent):
    """A leukemia stem cell (L-GMP) as a Mesa agent: all of its rules for one step in ``step``.

    Written as a Mesa user writes an agent: it senses its grid cell and neighbourhood, evaluates
    a behaviour's Hill rules when the step needs that behaviour (a G0 cell never needs its G1
    exit rate), and draws from ``model.random``.

    Args:
        model: the ``LSCNicheModel``.
        cell: the grid cell it sits on.
        phase: cycle phase (0 G0, 1 G1, 2 S-G2-M).
    """

    def __init__(self, model: LSCNicheModel, cell, phase: int = G1):
        super().__init__(model)
        self.cell = cell
        self.phase = phase
        self.bound = False
        self.tgfb_secretion_per_h = model.behaviour["tgfb_secretion_per_h"].base

    def sense(self) -> dict[str, float]:
        """Signals at this cell: BLC contact, fields in its voxel, bound flag."""
        cell = self.cell
        return {"contact_blc": float(sum(1 for c in cell.neighborhood if c.blc)),
                "opn": float(cell.opn), "mitogen": float(cell.mitogen),
                "tgfb": float(cell.tgfb), "bound": 1.0 if self.bound else 0.0,
                "cytarabine": 0.0, "doxorubicin": 0.0}

    def p(self, behaviour: str, signals: Mapping[str, float]) -> float:
        """Per-step probability of an event with the rule-given hazard (1 − exp(−r·dt)); rates
        no rule moves are converted once, by the model."""
        const = self.model.p_const.get(behaviour)
        if const is not None:
            return const
        return 1.0 - math.exp(-self.model.behaviour[behaviour](signals) * self.model.dt_h)

    def probabilities(self, signals: Mapping[str, float]) -> dict[str, float]:
        """Every per-step probability the step can use (for tests and inspection);
        ``chemotaxis_opn`` is a probability already and ``tgfb_secretion_per_h`` a rate."""
        out = {b: self.p(b, signals) for b in self.model.behaviour
               if b not in ("chemotaxis_opn", "tgfb_secretion_per_h")}
        for b in ("chemotaxis_opn", "tgfb_secretion_per_h"):
            out[b] = self.model.behaviour[b](signals)
        return out

    def free_neighbours(self) -> list:
        return [c for c in self.cell.neighborhood if c.is_empty and c.open_marrow]

    def step(self) -> None:
        model = self.model
        rnd = model.random.random
        signals = self.sense()
        self.tgfb_secretion_per_h = model.behaviour["tgfb_secretion_per_h"](signals)
        # Adhesion to BLC (hypothesis 2), decided on the bound state the rules saw.
        touching = signals["contact_blc"] > 0
        u = rnd()
        if self.bound:
            if not touching or u < self.p("detachment_per_h", signals):
                self.bound = False
        elif touching and u < self.p("adhesion_per_h", signals):
            self.bound = True
        # Death in any phase, plus S-phase death in S-G2-M and cycling-cell death in G1 and
        # S-G2-M (both zero without chemotherapy); the hazards add.
        if self.phase == SG2M:
            rate = (model.behaviour["death_per_h"](signals)
                    + model.behaviour["s_phase_death_per_h"](signals)
                    + model.behaviour["cycling_death_per_h"](signals))
            death = 1.0 - math.exp(-rate * model.dt_h)
        elif self.phase == G1:
            rate = (model.behaviour["death_per_h"](signals)
                    + model.behaviour["cycling_death_per_h"](signals))
            death = 1.0 - math.exp(-rate * model.dt_h)
        else:
            death = self.p("death_per_h", signals)
        if rnd() < death:
            self.remove()
            return
        # Cycle: one uniform decides among competing transitions, as in the engine.
        u = rnd()
        if self.phase == G0:
            if u < self.p("g0_exit_per_h", signals):
                self.phase = G1
        elif self.phase == G1:
            pe = self.p("g0_entry_per_h", signals)
            if u < pe:
                self.phase = G0
            elif u < pe + (1.0 - pe) * self.p("g1_exit_per_h", signals):
                self.phase = SG2M
        elif u < self.p("division_per_h", signals):
            free = self.free_neighbours()
            if free:                       # else contact inhibition: stay in S-G2-M
                LSCAgent(model, model.random.choice(free))
                self.phase = G1
        # Movement of unbound cells, up the OPN gradient with probability chemotaxis_opn.
        if not self.bound and rnd() < self.p("migration_per_h", signals):
            chemo = rnd() < model.behaviour["chemotaxis_opn"](signals)
            free = self.free_neighbours()
            if free:
                target = None
                if chemo:
                    best = max(free, key=lambda c: c.opn)
                    if best.opn > self.cell.opn:
                        target = best
                self.cell = target if target is not None else model.random.choice(free)


class LSCNicheModel(mesa.Model):
    """The LSC rule set as a Mesa 3.5 model on the marrow section.

    Fields and niche cells are property layers of the grid (``opn``, ``mitogen``, ``tgfb``,
    ``blc``, ``open_marrow`` = marrow without a niche cell); LSC are ``LSCAgent``s, one per grid
    cell at most.

    Args:
        section: the shared section (``relaxed_section``).
        lsc_voxels: flat voxels of the starting LSC (all in G1, unbound).
        rng: seed of ``model.random`` / ``model.rng``.
    """

    def __init__(self, section: Section, lsc_voxels: Iterable[int], rng: int = 0):
        super().__init__(rng=int(rng))
        self.dt_h = float(section.scenario.data["run"]["dt_h"])
        self.behaviour = _scalar_rules(scenario_rules(section.scenario))
        #: Per-step probabilities of the rates no rule moves.
        self.p_const = {b: 1.0 - math.exp(-r.base * self.dt_h) for b, r in self.behaviour.items()
                        if not r.up and not r.down}
        ny, nx = section.shape
        self.grid = OrthogonalMooreGrid((ny, nx), torus=False, capacity=1, random=self.random)
        for name in ("opn", "mitogen", "tgfb"):
            layer = self.grid.create_property_layer(name, 0.0, float)
            layer.data[:] = section.fields[name]
        blc = np.zeros(ny * nx, bool)
        blc[section.blc_voxels] = True
        open_marrow = np.zeros(ny * nx, bool)
        open_marrow[section.free_voxels()] = True
        self.grid.create_property_layer("blc", False, bool).data[:] = blc.reshape(ny, nx)
        self.grid.create_property_layer("open_marrow", False, bool).data[:] = \
            open_marrow.reshape(ny, nx)
        for v in lsc_voxels:
            LSCAgent(self, self.grid[divmod(int(v), nx)])
        self.cell_steps = 0

    def step(self) -> None:
        self.cell_steps += len(self.agents)
        self.agents.shuffle_do("step")

    def observe(self) -> tuple[int, float, float]:
        """(living LSC, G0 fraction, bound fraction)."""
        agents = self.agents.to_list() if hasattr(self.agents, "to_list") else list(self.agents)
        n = len(agents)
        if n == 0:
            return 0, math.nan, math.nan
        return (n, sum(a.phase == G0 for a in agents) / n, sum(a.bound for a in agents) / n)


def run_mesa(section: Section, lsc_voxels: np.ndarray, hours: int, rng: int) -> RunResult:
    """Run the Mesa model for ``hours`` hourly steps; time only the stepping."""
    model = LSCNicheModel(section, lsc_voxels, rng=rng)
    t0 = time.perf_counter()
    for _ in range(int(hours)):
        model.step()
    seconds = time.perf_counter() - t0
    n, g0, bound = model.observe()
    return RunResult("mesa", n, g0, bound, model.cell_steps, seconds, 0)


# ---------------------------------------------------------------------------------------------
# Ours: the production engine phases (LeukemiaModule and its fused numba kernels)

#: The engine phases that make up the compared rule set (fields frozen: no secrete/diffuse).
ENGINE_PHASES = ("sense", "rules", "cycle", "move", "remove_dead")


def _engine_for(section: Section, lsc_voxels: np.ndarray, replicate: int,
                n_threads: int = 1) -> Engine:
    """A fresh engine of the section's scenario (leukemia module only) with the section's niche
    cells, its frozen fields and the given LSC (G1, unbound), stepping only ``ENGINE_PHASES``
    on ``n_threads`` numba threads."""
    from .biology import LeukemiaModule

    eng = Engine(section.scenario, seed=section.seed, replicate=replicate,
                 modules=(LeukemiaModule,), n_threads=int(n_threads))
    eng.phases = [(name, fns) for name, fns in eng.phases if name in ENGINE_PHASES]
    if eng.geometry.labels.shape != section.shape:
        raise RuntimeError("the scenario's geometry is not the section's")
    cells = eng.cells
    cells.add("blc", section.blc_voxels)
    cells.add("msc", section.msc_voxels)
    for f, v in section.fields.items():
        eng.fields.values[f][...] = v
    base = eng.modules[0].rules.base("lsc", "tgfb_secretion_per_h")
    cells.add("lsc", np.asarray(lsc_voxels, np.int64), time_h=0.0, phase=G1,
              tgfb_secretion_per_h=base)
    eng._phase_sense()
    return eng


def _observe(eng: Engine) -> tuple[int, float, float]:
    cells = eng.cells
    rows = cells.rows_of("lsc")
    if rows.size == 0:
        return 0, math.nan, math.nan
    return (int(rows.size), float(np.mean(cells["phase"][rows] == G0)),
            float(np.mean(cells["bound"][rows])))


def run_ours(section: Section, lsc_voxels: np.ndarray, hours: int, replicate: int,
             threads: int = 1) -> RunResult:
    """Run the production path, the engine's ``ENGINE_PHASES`` (``LeukemiaModule``), for
    ``hours`` steps on ``threads`` numba threads; time only the stepping."""
    eng = _engine_for(section, lsc_voxels, replicate, n_threads=threads)
    before = dict(eng.phase_wall_s)
    cell_steps = 0
    t0 = time.perf_counter()
    for _ in range(int(hours)):
        cell_steps += eng.cells.rows_of("lsc").size
        eng.step()
    seconds = time.perf_counter() - t0
    n, g0, bound = _observe(eng)
    phase_ns = {name: (eng.phase_wall_s[name] - before[name]) / max(cell_steps, 1) * 1e9
                for name, _ in eng.phases}
    return RunResult("ours", n, g0, bound, cell_steps, seconds, int(threads), phase_ns)


def engine_probabilities(eng: Engine, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Per-step event probabilities of the given LSC rows as the engine computes them, named as
    the Mesa agent names them (``chemotaxis_opn`` is a probability already and
    ``tgfb_secretion_per_h`` a rate)."""
    from .biology.leukemia import LeukemiaModule, _p, find_module

    beh = find_module(eng, LeukemiaModule).behaviours("lsc", rows)
    return {b: v if b in ("chemotaxis_opn", "tgfb_secretion_per_h") else _p(v, eng.dt_h)
            for b, v in beh.items()}


def _warm_up(section: Section, threads: Sequence[int]) -> None:
    """Compile every kernel before anything is timed."""
    vox = initial_lsc_voxels(section, 0.5, 0)
    for t in threads:
        run_ours(section, vox, 2, 0, threads=t)


# ---------------------------------------------------------------------------------------------
# Statistics and the comparison

def compare_replicates(a: Sequence[float], b: Sequence[float], margin: float,
                       alpha: float = 0.05) -> dict:
    """Are two sets of replicate values the same within sampling error?

    Welch's two-sided t-test of equal means (``p_welch``; a difference is detected at
    ``p_welch < alpha``), and the two one-sided Welch tests of equivalence (TOST, Schuirmann
    1987): the means differ by less than ``margin`` when ``p_tost < alpha``.

    Returns:
        dict with the means, their difference, its 90% confidence interval (``ci90``),
        ``p_welch``, ``p_tost``, ``margin``, ``equal`` (Welch not significant) and
        ``equivalent`` (TOST significant).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    diff = float(a.mean() - b.mean())
    if se == 0.0:
        p_welch = 1.0 if diff == 0 else 0.0
        p_tost = 0.0 if abs(diff) < margin else 1.0
        ci = (diff, diff)
    else:
        df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
        p_welch = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        p_lo = stats.t.sf((diff + margin) / se, df)      # H0: diff <= -margin
        p_hi = stats.t.cdf((diff - margin) / se, df)     # H0: diff >= +margin
        p_tost = float(max(p_lo, p_hi))
        h = stats.t.ppf(0.95, df) * se
        ci = (diff - h, diff + h)
    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": diff,
            "ci90": (float(ci[0]), float(ci[1])), "p_welch": p_welch, "p_tost": p_tost,
            "margin": float(margin), "alpha": float(alpha), "equal": p_welch >= alpha,
            "equivalent": p_tost < alpha}


def with_update_order(section: Section, update_order: str) -> Section:
    """The same section with ours scheduled by ``leukemia.update_order`` (docs/model.md §3)."""
    return dataclasses.replace(section, scenario=comparison_scenario(
        section.labels, ["leukemia.n_lsc_initial=0", f"leukemia.update_order={update_order}"]))


def run_mesa_comparison(size: int = 200, hours: int = 48, seeds: Iterable[int] = range(10),
                        threads: Sequence[int] = (1, 2), frac_marrow: float = 0.3,
                        relax_days: float = 7.0, g0_margin: float = 0.02,
                        count_margin_rel: float = 0.02, update_order: str = "phased") -> dict:
    """Cell-steps per second of idiomatic Mesa and of ours on the same section, and whether both
    give the same G0 fraction and LSC count.

    Each replicate (one per entry of ``seeds``) starts both implementations from the same LSC
    voxels (``frac_marrow`` of the free marrow) and runs ``hours`` hourly steps; within a
    replicate Mesa and ours at each thread count run back to back (interleaved), so machine
    load hits them alike. Speeds are medians over replicates of the stepping loop's cell-steps/s.

    Args:
        size: section side in voxels.
        hours: steps per run (dt_h = 1 h).
        seeds: replicate indices (≥ 2 for the tests; ≥ 10 recommended).
        threads: numba thread counts for ours.
        frac_marrow: starting LSC density.
        relax_days: length of the relaxing run that sets the frozen fields.
        g0_margin: equivalence margin for the final G0 fraction (absolute).
        count_margin_rel: equivalence margin for the final LSC count (relative to Mesa's mean).
        update_order: ours' ``leukemia.update_order`` (``phased`` or ``random_sequential``).

    Returns:
        dict: ``size``, ``hours``, ``replicates``, ``runs`` (every RunResult as a dict),
        ``speed`` (impl label -> median cell-steps/s), ``ratio`` (label -> median of the
        per-replicate ratios to Mesa), ``phase_ns`` (ours' labels -> phase -> median ns per
        cell-step), ``g0`` and ``n_lsc`` (``compare_replicates`` of Mesa vs
        ours on one thread), ``load_avg`` before and after.
    """
    import os

    seeds = list(seeds)
    load0 = os.getloadavg()
    section = with_update_order(relaxed_section(size, relax_days), update_order)
    _warm_up(section, threads)
    runs: list[RunResult] = []
    labels: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    for rep in seeds:
        vox = initial_lsc_voxels(section, frac_marrow, rep)
        mesa_run = run_mesa(section, vox, hours, rng=1_000_003 * section.seed + rep)
        batch = [mesa_run]
        for t in threads:
            batch.append(run_ours(section, vox, hours, rep, threads=t))
        for r in batch:
            key = r.impl if r.impl != "ours" else f"ours_{r.threads}t"
            labels.setdefault(key, []).append(r.cell_steps_per_s)
            if r is not mesa_run:
                ratios.setdefault(key, []).append(r.cell_steps_per_s / mesa_run.cell_steps_per_s)
        runs.extend(batch)
    mesa_runs = [r for r in runs if r.impl == "mesa"]
    ours_runs = [r for r in runs if r.impl == "ours" and r.threads == threads[0]]
    mesa_n = np.mean([r.n_lsc for r in mesa_runs])
    return {
        "size": size, "hours": hours, "replicates": len(seeds), "frac_marrow": frac_marrow,
        "relax_days": relax_days, "threads": list(threads), "update_order": update_order,
        "n_marrow_free": int(section.free_voxels().size),
        "runs": [r.__dict__ | {"cell_steps_per_s": r.cell_steps_per_s} for r in runs],
        "speed": {k: float(np.median(v)) for k, v in labels.items()},
        "ratio": {k: float(np.median(v)) for k, v in ratios.items()},
        "phase_ns": {f"ours_{t}t": {p: float(np.median([r.phase_ns[p] for r in runs
                                                          if r.impl == "ours" and r.threads == t]))
                                    for p in ENGINE_PHASES if p in runs[1].phase_ns}
                     for t in threads},
        "g0": compare_replicates([r.frac_g0 for r in mesa_runs],
                                 [r.frac_g0 for r in ours_runs], g0_margin),
        "n_lsc": compare_replicates([r.n_lsc for r in mesa_runs], [r.n_lsc for r in ours_runs],
                                    count_margin_rel * mesa_n),
        "load_avg": {"before": load0, "after": os.getloadavg()},
        "versions": {"mesa": mesa.__version__, "numba": numba.__version__,
                     "numpy": np.__version__},
    }


def print_mesa_comparison(result: Mapping) -> None:
    """Print the speed table and the G0/LSC-count agreement of ``run_mesa_comparison``."""
    r = result
    print(f"LSC quiescence/adhesion rules, {r['size']}x{r['size']} section "
          f"({r['n_marrow_free']} free marrow voxels, {r['frac_marrow']:.0%} start as LSC), "
          f"{r['hours']} hourly steps, {r['replicates']} replicates, ours "
          f"{r.get('update_order', 'phased')} "
          f"(mesa {r['versions']['mesa']}, numba {r['versions']['numba']})")
    print(f"{'implementation':<22}{'cell-steps/s':>14}{'x Mesa':>10}")
    names = {"mesa": "Mesa (CellAgent.step)"}
    for key, speed in r["speed"].items():
        label = names.get(key, key.replace("ours_", "ours, ").replace("t", " thread(s)"))
        ratio = "1" if key == "mesa" else f"{r['ratio'][key]:.0f}"
        print(f"{label:<22}{speed:>14.3g}{ratio:>10}")
    for key, phases in r.get("phase_ns", {}).items():
        label = key.replace("ours_", "ours, ").replace("t", " thread(s)")
        print(f"{label}, ns per cell-step by phase (median): "
              + ", ".join(f"{p} {v:.1f}" for p, v in phases.items()))
    for name, unit in (("g0", "G0 fraction"), ("n_lsc", "LSC count")):
        c = r[name]
        print(f"{unit}: Mesa {c['mean_a']:.4g}, ours {c['mean_b']:.4g}, difference "
              f"{c['diff']:+.3g} (90% CI {c['ci90'][0]:+.3g} .. {c['ci90'][1]:+.3g}); Welch "
              f"p = {c['p_welch']:.3g}; equivalent within ±{c['margin']:.3g}: TOST p = "
              f"{c['p_tost']:.3g}")
    b, a = r["load_avg"]["before"], r["load_avg"]["after"]
    print(f"load average {b[0]:.2f} before, {a[0]:.2f} after")
