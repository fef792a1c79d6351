"""Diffusing fields (TGF-β1, OPN, MSC mitogen, ...) and the choice of solver for each.

Each field obeys dc/dt = D lap(c) - k c + s - u c - clearance on the marrow voxels of a label
grid (0 marrow, 1 bone, 2 sinusoid): no flux into bone or across the grid edge, a first-order
sink at sinusoids (``sinusoid_clearance_per_h`` per sinusoid neighbour), per-voxel sources
``s`` and uptake rates ``u`` that change every agent step. Values outside marrow stay exactly 0.

Three solvers sit behind one interface (the kernels are in ``marrow_abm.kernels.diffusion``):

- ``explicit``: the 5-point stencil with exact per-voxel reaction, automatically sub-stepped so
  that D h / dx^2 <= 1/4 (stable and non-negative), several sub-steps fused per memory pass.
  Second order in space, first order in time with a tiny step: the reference solution.
- ``lod``: BioFVM's locally-one-dimensional implicit step (Thomas algorithm along x then y),
  one step per dt. Cheap, but its splitting error grows with D dt / dx^2: on a default-like
  section at dt = 1 h its relaxed field is 30–45% off the fine-step explicit one (see
  ``tests/test_fields.py``), so it is never chosen automatically.
- ``backward_euler``: one fully implicit step per dt, solved matrix-free by conjugate
  gradients warm-started from the previous field. Preconditioned by default by exact solves on
  the marrow's closed compartments (``marrow_abm.kernels.compartments``: the sinusoid walls cut
  the marrow into compartments of ~100 voxels, so the matrix is block diagonal and one direct
  step converges; Jacobi-PCG finishes any component too large to factor), or by Jacobi
  (~150–200 iterations for the hourly TGF-β1 and mitogen steps). Its fixed point is exactly the
  discrete steady state, so the relaxed field is right at any dt.

``method="auto"`` picks ``explicit`` when at most ``AUTO_MAX_EXPLICIT_SUBSTEPS`` sub-steps
suffice (accurate in time and, up to there, cheaper), else ``backward_euler``. With the default
scenario (dx = 10 µm, dt = 1 h), TGF-β1 and the mitogen (D = 10 µm²/s, D dt / dx^2 = 360,
1440 sub-steps) go to ``backward_euler`` and OPN (D = 0.5 µm²/s, 18, 72 sub-steps) to
``explicit``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numba
import numpy as np

from marrow_abm.errors import GeometryError, SolverError
from marrow_abm.kernels import diffusion as kern
from marrow_abm.kernels import compartments as cp

#: Solver names accepted by :class:`FieldSet` (``"auto"`` chooses per field).
METHODS = ("auto", "explicit", "lod", "backward_euler")
#: Largest diffusion number per explicit sub-step: the 2-D 5-point stencil is stable and
#: keeps c >= 0 for D h / dx^2 <= 1/4.
EXPLICIT_MAX_DIFFUSION_NUMBER = 0.25
#: "auto" uses the explicit stencil up to this many sub-steps per dt. Measured on the default
#: 145x145 section (one thread): a slowly relaxing OPN-like field costs 2.0 ms per hour with
#: 72 explicit sub-steps against 6.1 ms for backward Euler (~70 warm CG iterations), and
#: 4.8 ms against 5.7 ms at 144 sub-steps (docs/performance.md).
AUTO_MAX_EXPLICIT_SUBSTEPS = 128
#: Explicit sub-steps fused into one pass over memory (temporal blocking).
EXPLICIT_BLOCK = 8
#: CG stopping rule ||residual|| <= tol ||rhs|| per dtype, and the iteration cap.
CG_TOL = {"float64": 1e-8, "float32": 1e-5}
CG_MAX_ITER = 5000
#: Preconditioners of the backward-Euler CG; the first is the default. "compartments" solves
#: each closed marrow compartment exactly: the 1-voxel sinusoid walls cut the marrow into
#: compartments (aml_progression 1001²: 12 320, <= 103 voxels), so the matrix is block diagonal
#: and one direct step converges (Jacobi-PCG continues only on components too large to
#: factor, so a geometry without compartments costs what Jacobi costs). Measured on
#: ``aml_progression`` (`bench_size`, 4 steps after 3, load 3.4-3.8 on 2 cores), iterations
#: tgfb/mitogen Jacobi 143/199 (501²), 142/202 (1001²) vs 1/1; diffuse phase 1 thread 501²
#: 323 vs 46 ms, 1001² 1407 vs 191 ms (step 1.40 vs 0.19 s); 2 threads (contended) 1001²
#: 9000 vs 314 ms. Scratch 5 B per voxel. An aggregation-multigrid V-cycle tried before
#: needed ~49/54 iterations, each costing ~3 Jacobi ones (docs/performance.md).
PRECONDITIONERS = ("compartments", "jacobi")

_DTYPES = {"float64": np.float64, "float32": np.float32}
_UM2_PER_S_TO_UM2_PER_H = 3600.0


@dataclass(frozen=True)
class FieldSpec:
    """Physical parameters of one diffusing field.

    Args:
        name: identifier used in scenario keys and arrays, e.g. ``"tgfb"``.
        label: human-readable name for tables and plots, e.g. ``"TGF-β1"``.
        diffusion_um2_per_s: effective diffusion coefficient D, µm²/s.
        decay_per_h: first-order decay rate k, 1/h.
        sinusoid_clearance_per_h: first-order loss of a marrow voxel per neighbouring sinusoid
            voxel, 1/h.
        initial: initial concentration on marrow voxels (normalised units).
    """

    name: str
    label: str
    diffusion_um2_per_s: float
    decay_per_h: float
    sinusoid_clearance_per_h: float
    initial: float = 0.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise SolverError(f"field name {self.name!r} must be an identifier like 'tgfb'")
        for key in ("diffusion_um2_per_s", "decay_per_h", "sinusoid_clearance_per_h", "initial"):
            value = getattr(self, key)
            numeric = isinstance(value, (int, float, np.floating, np.integer))
            if isinstance(value, bool) or not numeric:
                raise SolverError(f"field {self.name!r}: {key} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise SolverError(
                    f"field {self.name!r}: {key} must be finite and >= 0, got {value!r}")

    @property
    def diffusion_um2_per_h(self) -> float:
        """D in µm²/h (the solver's time unit is the hour)."""
        return float(self.diffusion_um2_per_s) * _UM2_PER_S_TO_UM2_PER_H


@dataclass
class _FieldState:
    spec: FieldSpec
    method: str
    stability_number: float          # D dt / dx^2 of one whole agent step
    n_substeps: int
    substep_h: float
    r: float                         # diffusion number of one (sub-)step
    tmp: np.ndarray
    retain: np.ndarray | None = None
    gain: np.ndarray | None = None
    lod_plan: tuple | None = None
    work: np.ndarray | None = None
    last_cg_iterations: int | None = None


class FieldSet:
    """All diffusing fields of a simulation on one label grid, advanced together by ``dt_h``.

    Args:
        labels: int array (ny, nx); 0 marrow, 1 bone, 2 sinusoid.
        dx_um: voxel edge, µm.
        dt_h: agent step, hours; :meth:`step` advances every field by this much.
        specs: field name -> :class:`FieldSpec`.
        method: ``"auto"``, ``"explicit"``, ``"lod"`` or ``"backward_euler"``, for every field,
            or a mapping field name -> method (fields not named use ``"auto"``).
        dtype: ``"float64"`` or ``"float32"`` for the field arrays.
        n_threads: numba threads used while stepping (default 1: numba's spinning workers
            slow down badly when another process wants the core; see docs/performance.md).
            ``None`` keeps numba's current setting.
        cg_tol: relative residual at which backward-Euler CG stops (default per dtype).
        preconditioner: ``"compartments"`` (default: exact solves on closed compartments) or
            ``"jacobi"``, for backward-Euler CG. Both stop at the same relative residual.

    Attributes:
        names: field names, in the order of ``specs``.
        values: field name -> full-grid array (ny, nx), 0 outside marrow. The arrays are
            updated in place, so references to them stay valid across steps.

    Raises:
        GeometryError: ``labels`` is not a 2-D grid of 0/1/2.
        SolverError: bad step sizes, dtype, method or field specification.
    """

    def __init__(self, labels, dx_um: float, dt_h: float, specs: Mapping[str, FieldSpec],
                 method: str | Mapping[str, str] = "auto", dtype: str = "float64",
                 n_threads: int | None = 1, cg_tol: float | None = None,
                 preconditioner: str = PRECONDITIONERS[0]):
        self.labels = _check_labels(labels)
        self.dx_um = _positive("dx_um", dx_um)
        self.dt_h = _positive("dt_h", dt_h)
        if dtype not in _DTYPES:
            raise SolverError(f"unknown dtype {dtype!r}; valid: {', '.join(_DTYPES)}")
        self.dtype = dtype
        self._np_dtype = _DTYPES[dtype]
        if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
            raise SolverError(f"n_threads must be a positive integer or None, got {n_threads!r}")
        self.n_threads = n_threads
        self.cg_tol = CG_TOL[dtype] if cg_tol is None else _positive("cg_tol", cg_tol)
        if preconditioner not in PRECONDITIONERS:
            raise SolverError(f"unknown preconditioner {preconditioner!r}; "
                              f"valid: {', '.join(PRECONDITIONERS)}")
        #: the preconditioner in use, ``"compartments"`` or ``"jacobi"``
        self.preconditioner = preconditioner
        # the compartment partition (5 bytes per voxel), shared like _cg_work
        self._cp_work: cp.CompartmentScratch | None = None
        # One CG scratch (5 arrays) for all backward-Euler fields: they are solved one after
        # another and the solver overwrites it, so sharing saves 40 bytes/voxel per field.
        self._cg_work: np.ndarray | None = None
        # Likewise one scratch field for every solver: each field's step leaves its result in
        # the field's own array before the next field starts.
        self._tmp = np.zeros(self.labels.shape, dtype=self._np_dtype)
        if not isinstance(specs, Mapping) or not specs:
            raise SolverError("specs must be a non-empty mapping of field name -> FieldSpec")
        for key, spec in specs.items():
            if not isinstance(spec, FieldSpec):
                raise SolverError(f"specs[{key!r}] is {type(spec).__name__}, not a FieldSpec")
            if key != spec.name:
                raise SolverError(
                    f"specs key {key!r} differs from its FieldSpec name {spec.name!r}")
        methods = _resolve_methods(method, specs)

        self._marrow = self.labels == 0
        self._faces = kern.open_faces(self.labels)
        self._n_open = kern.open_face_count(self._faces)
        self._n_sinus = kern.sinusoid_neighbours(self.labels)
        # Stands in for a missing source/uptake; made on first need (the engine passes every
        # field's arrays, so a run never allocates these 8 bytes per voxel).
        self._zeros_grid: np.ndarray | None = None
        self.names: tuple[str, ...] = tuple(specs)
        self.values: dict[str, np.ndarray] = {}
        self._state: dict[str, _FieldState] = {}
        for name, spec in specs.items():
            values = np.zeros(self.labels.shape, dtype=self._np_dtype)
            values[self._marrow] = spec.initial
            self.values[name] = values
            self._state[name] = self._prepare(spec, methods[name])

    # ----------------------------------------------------------------------------------
    def _prepare(self, spec: FieldSpec, method: str) -> _FieldState:
        sigma = spec.diffusion_um2_per_h * self.dt_h / self.dx_um ** 2
        n_explicit = max(1, math.ceil(sigma / EXPLICIT_MAX_DIFFUSION_NUMBER - 1e-12))
        if method == "auto":
            method = "explicit" if n_explicit <= AUTO_MAX_EXPLICIT_SUBSTEPS else "backward_euler"
        shape, dt = self.labels.shape, self._np_dtype
        tmp = self._tmp
        if method == "explicit":
            return _FieldState(spec, method, sigma, n_explicit, self.dt_h / n_explicit,
                               sigma / n_explicit, tmp, retain=np.zeros(shape, dt),
                               gain=np.zeros(shape, dt))
        if method == "lod":
            return _FieldState(spec, method, sigma, 1, self.dt_h, sigma, tmp,
                               retain=np.zeros(shape, dt), gain=np.zeros(shape, dt),
                               lod_plan=kern.lod_plan(self._faces, sigma, dt))
        if self._cg_work is None:
            self._cg_work = np.zeros((5,) + shape, dt)
        if self.preconditioner == "compartments" and self._cp_work is None:
            self._cp_work = cp.cp_work(shape)
        return _FieldState(spec, method, sigma, 1, self.dt_h, sigma, tmp, work=self._cg_work)

    # ----------------------------------------------------------------------------------
    def info(self) -> dict[str, dict]:
        """Solver choice and numbers per field.

        Returns:
            field name -> dict with ``label``, ``method``, ``stability_number`` (D dt / dx^2 of
            one agent step), ``n_substeps``, ``substep_h``, ``diffusion_um2_per_s``,
            ``decay_per_h``, ``sinusoid_clearance_per_h``, ``decay_length_um`` (sqrt(D / k),
            inf without decay), ``dtype``, and for ``backward_euler`` ``cg_tol``,
            ``preconditioner`` and ``last_cg_iterations`` (None before the first step).
        """
        out = {}
        for name, st in self._state.items():
            spec = st.spec
            d = spec.diffusion_um2_per_h
            row = {
                "label": spec.label,
                "method": st.method,
                "stability_number": st.stability_number,
                "n_substeps": st.n_substeps,
                "substep_h": st.substep_h,
                "diffusion_um2_per_s": float(spec.diffusion_um2_per_s),
                "decay_per_h": float(spec.decay_per_h),
                "sinusoid_clearance_per_h": float(spec.sinusoid_clearance_per_h),
                "decay_length_um": math.sqrt(d / spec.decay_per_h) if spec.decay_per_h > 0
                else math.inf,
                "dtype": self.dtype,
            }
            if st.method == "backward_euler":
                row["cg_tol"] = self.cg_tol
                row["preconditioner"] = self.preconditioner
                row["last_cg_iterations"] = st.last_cg_iterations
            out[name] = row
        return out

    # ----------------------------------------------------------------------------------
    def step(self, sources_per_h: Mapping[str, np.ndarray],
             uptake_per_h: Mapping[str, np.ndarray],
             nonzero_at: np.ndarray | None = None) -> None:
        """Advance every field by ``dt_h``, sources and uptakes held constant over the step.

        Args:
            sources_per_h: field name -> (ny, nx) secretion into each voxel,
                concentration/h (>= 0). A missing field means no source; values on
                non-marrow voxels are ignored.
            uptake_per_h: field name -> (ny, nx) first-order uptake rate, 1/h (>= 0).
                A missing field means no uptake.
            nonzero_at: flat voxel indices outside which the caller guarantees every given
                array is 0, so only the values there are checked (the engine passes its
                cells' voxels: checking six whole 1001² arrays costs ~6 ms per step on one
                core). None checks every value.

        Raises:
            SolverError: an unknown field name, a wrong shape, or a negative or non-finite
                value.
        """
        srcs = self._inputs(sources_per_h, "sources_per_h", nonzero_at)
        upts = self._inputs(uptake_per_h, "uptake_per_h", nonzero_at)
        previous = numba.get_num_threads()
        if self.n_threads is not None:
            numba.set_num_threads(min(self.n_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            # the compartment partition, checked against the grid once for all fields
            part = (self._cp_work.partition(self.labels, self._faces)
                    if self._cp_work is not None else None)
            for name in self.names:
                self._advance(name, srcs[name] if name in srcs else self._zeros(),
                              upts[name] if name in upts else self._zeros(), part)
        finally:
            numba.set_num_threads(previous)

    def _zeros(self) -> np.ndarray:
        if self._zeros_grid is None:
            self._zeros_grid = np.zeros(self.labels.shape)
        return self._zeros_grid

    def _inputs(self, arrays: Mapping[str, np.ndarray], what: str,
                nonzero_at: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if arrays is None:
            return {}
        if not isinstance(arrays, Mapping):
            raise SolverError(f"{what} must be a mapping of field name -> array")
        checked = {}
        for name, arr in arrays.items():
            if name not in self._state:
                raise SolverError(f"{what} names unknown field {name!r}; "
                                  f"fields are: {', '.join(self.names)}")
            a = np.asarray(arr)
            if a.shape != self.labels.shape:
                raise SolverError(f"{what}[{name!r}] has shape {a.shape}, "
                                  f"expected {self.labels.shape}")
            if a.dtype.kind not in "fiu":
                raise SolverError(f"{what}[{name!r}] must be numeric, got dtype {a.dtype}")
            if a.dtype not in (np.float64, np.float32):
                a = a.astype(np.float64)
            a = np.ascontiguousarray(a)
            # two reductions: NaN fails both comparisons; with nonzero_at, of the few values
            # that may differ from 0
            v = a if nonzero_at is None else a.ravel()[nonzero_at]
            if v.size and not (v.min() >= 0 and v.max() < np.inf):
                raise SolverError(f"{what}[{name!r}] must be finite and >= 0 everywhere")
            checked[name] = a
        return checked

    def _advance(self, name: str, source: np.ndarray, uptake: np.ndarray,
                 partition: tuple | None = None) -> None:
        st, c = self._state[name], self.values[name]
        spec = st.spec
        k, cl = float(spec.decay_per_h), float(spec.sinusoid_clearance_per_h)
        r = self._np_dtype(st.r)
        if st.method == "explicit":
            kern.reaction_coefficients(self.labels, self._n_sinus, source, uptake, k, cl,
                                       st.substep_h, st.retain, st.gain)
            cur, nxt = c, st.tmp
            left = st.n_substeps
            while left:
                n = min(EXPLICIT_BLOCK, left)
                kern.ftcs_steps(cur, nxt, self._n_open, st.retain, st.gain, r, n)
                cur, nxt = nxt, cur
                left -= n
            if cur is not c:
                kern.copy_into(c, cur)
        elif st.method == "lod":
            kern.reaction_coefficients(self.labels, self._n_sinus, source, uptake, k, cl,
                                       self.dt_h, st.retain, st.gain)
            kern.lod_step(c, c, st.retain, st.gain, r, *st.lod_plan)
        # Backward Euler solves in place (out = c): the solvers read c only in their first
        # pass, which copies it into out; this saves a copy of the lattice per field.
        elif self.preconditioner == "compartments":
            st.last_cg_iterations = int(cp.backward_euler_solve_cp(
                c, c, self.labels, self._faces, self._n_sinus, source, uptake, k, cl,
                self.dt_h, float(st.r), self.cg_tol, CG_MAX_ITER, st.work, self._cp_work,
                partition=partition))
        else:
            st.last_cg_iterations = int(kern.backward_euler_solve(
                c, c, self.labels, self._faces, self._n_sinus, source, uptake, k, cl,
                self.dt_h, float(st.r), self.cg_tol, CG_MAX_ITER, st.work))

    def total(self, name: str) -> float:
        """Amount of a field summed over the grid (concentration x voxels).

        Args:
            name: field name.
        """
        return float(self.values[name].sum(dtype=np.float64))


def _positive(key: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SolverError(f"{key} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise SolverError(f"{key} must be finite and > 0, got {value!r}")
    return v


def _check_labels(labels) -> np.ndarray:
    a = np.asarray(labels)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise GeometryError(f"labels must be a 2-D grid, got shape {a.shape}")
    if a.dtype.kind not in "iub":
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise GeometryError(f"labels must be integers 0/1/2, got dtype {a.dtype}")
    bad = ~np.isin(a, (0, 1, 2))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise GeometryError(f"labels must be 0 (marrow), 1 (bone) or 2 (sinusoid); "
                            f"found {a[i, j]!r} at row {i}, column {j}")
    return np.ascontiguousarray(a, dtype=np.int8)


def _resolve_methods(method, specs: Mapping[str, FieldSpec]) -> dict[str, str]:
    def check(m, where):
        if m not in METHODS:
            raise SolverError(f"unknown solver method {m!r}{where}; valid: {', '.join(METHODS)}")
        return m

    if isinstance(method, str):
        check(method, "")
        return {name: method for name in specs}
    if isinstance(method, Mapping):
        for name in method:
            if name not in specs:
                raise SolverError(f"method given for unknown field {name!r}; "
                                  f"fields are: {', '.join(specs)}")
        return {name: check(method.get(name, "auto"), f" for field {name!r}") for name in specs}
    raise SolverError(f"method must be a string or a mapping, got {method!r}; "
                      f"valid: {', '.join(METHODS)}")
