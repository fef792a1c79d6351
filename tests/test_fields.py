"""The field solver interface: validation, solver choice, physics against analytic results,
and the accuracy of the default method on a default-like marrow section."""

import math

import numba
import numpy as np
import pytest
from scipy.spatial import cKDTree

from marrow_abm.errors import GeometryError, SolverError
from marrow_abm.fields import METHODS, FieldSet, FieldSpec
from marrow_abm.geometry import touching

SOLVERS = ["explicit", "lod", "backward_euler"]


def _spec(name="tgfb", d=10.0, k=2.0, cl=1.0, initial=0.0):
    return FieldSpec(name, name.upper(), d, k, cl, initial)


def _section(n=150, radius_vox=56, n_seeds=90, gap_vox=1.2, seed=0, rim_vox=2):
    """A default-like mouse section: a marrow disc (radius 560 µm at dx = 10 µm) in a bone
    ring, crossed by a Voronoi-edge sinusoid net covering ~30% of the marrow (MODEL.md §2).
    The net stops ``rim_vox`` voxels short of the bone, so a marrow rim joins every
    compartment into one (``rim_vox=0``: closed compartments, as the bundled geometry has)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    centre = (n - 1) / 2
    rad = np.hypot(yy - centre, xx - centre)
    disc = rad <= radius_vox
    ang = rng.uniform(0, 2 * np.pi, n_seeds)
    rr = radius_vox * np.sqrt(rng.uniform(0, 1, n_seeds))
    seeds = np.c_[centre + rr * np.sin(ang), centre + rr * np.cos(ang)]
    d, _ = cKDTree(seeds).query(np.c_[yy.ravel(), xx.ravel()], k=2)
    edge = (d[:, 1] - d[:, 0]).reshape(n, n) < gap_vox      # near a Voronoi edge
    labels = np.ones((n, n), np.int8)
    labels[disc] = 0
    labels[disc & edge & (rad < radius_vox - rim_vox)] = 2
    return labels


def _default_problem():
    """Default-scenario-like fields with BLC sources on the bone surface, MSC sources beside
    sinusoids and scattered LSC secreting TGF-β1 (rates in normalised units per hour)."""
    labels = _section()
    rng = np.random.default_rng(2)
    marrow = labels == 0
    blc = touching(labels, 1) & (rng.random(labels.shape) < 0.5)
    msc = touching(labels, 2) & (rng.random(labels.shape) < 0.2)
    lsc = marrow & (rng.random(labels.shape) < 0.02)
    specs = {
        "tgfb": FieldSpec("tgfb", "TGF-β1", 10.0, 2.0, 1.0),
        "opn": FieldSpec("opn", "OPN", 1.0, 0.06, 0.5),
        "mitogen": FieldSpec("mitogen", "mitogen", 10.0, 0.7, 1.0),
    }
    sources = {
        "tgfb": np.where(lsc, 1.0, 0.0) + np.where(blc, 0.2, 0.0),
        "opn": np.where(blc, 1.0, 0.0) + np.where(msc, 0.1, 0.0),
        "mitogen": np.where(msc, 1.0, 0.0),
    }
    uptake = {"tgfb": np.where(blc, 0.5, 0.0)}       # BLC take TGF-β1 up through Tgfbr2
    return labels, specs, sources, uptake


def _relax(fs, name, sources, uptake, max_hours=400, rtol=1e-9):
    prev = fs.values[name].copy()
    for _ in range(max_hours):
        fs.step(sources, uptake)
        cur = fs.values[name]
        if np.linalg.norm(cur - prev) <= rtol * np.linalg.norm(cur):
            return cur.copy()
        prev[...] = cur
    raise AssertionError(f"{name} did not relax in {max_hours} h")


def _rel_l2(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


# ------------------------------------------------------------------------------------------
# validation
def test_fieldspec_rejects_negative_or_non_finite_values():
    with pytest.raises(SolverError, match="decay_per_h"):
        FieldSpec("tgfb", "TGF-β1", 10.0, -1.0, 1.0)
    with pytest.raises(SolverError, match="diffusion_um2_per_s"):
        FieldSpec("tgfb", "TGF-β1", float("nan"), 1.0, 1.0)
    with pytest.raises(SolverError, match="identifier"):
        FieldSpec("tgf b", "TGF-β1", 1.0, 1.0, 1.0)


def test_fieldset_unknown_method_raises_solver_error_naming_valid_ones():
    with pytest.raises(SolverError) as err:
        FieldSet(np.zeros((5, 5)), 10.0, 1.0, {"tgfb": _spec()}, method="crank")
    for name in METHODS:
        assert name in str(err.value)
    with pytest.raises(SolverError, match="unknown field"):
        FieldSet(np.zeros((5, 5)), 10.0, 1.0, {"tgfb": _spec()}, method={"opn": "lod"})


@pytest.mark.parametrize("labels", [np.zeros(5), np.full((4, 4), 3), np.full((3, 3), 0.5)])
def test_fieldset_bad_labels_raise_geometry_error(labels):
    with pytest.raises(GeometryError):
        FieldSet(labels, 10.0, 1.0, {"tgfb": _spec()})


@pytest.mark.parametrize("kwargs", [{"dx_um": 0.0}, {"dt_h": -1.0}, {"dtype": "float16"},
                                    {"n_threads": 0}])
def test_fieldset_bad_settings_raise_solver_error(kwargs):
    args = {"dx_um": 10.0, "dt_h": 1.0} | kwargs
    with pytest.raises(SolverError):
        FieldSet(np.zeros((5, 5)), specs={"tgfb": _spec()}, **args)


def test_fieldset_step_rejects_bad_inputs():
    fs = FieldSet(np.zeros((5, 6)), 10.0, 1.0, {"tgfb": _spec()})
    with pytest.raises(SolverError, match="unknown field 'opn'"):
        fs.step({"opn": np.ones((5, 6))}, {})
    with pytest.raises(SolverError, match="shape"):
        fs.step({"tgfb": np.ones((6, 5))}, {})
    with pytest.raises(SolverError, match=">= 0"):
        fs.step({}, {"tgfb": -np.ones((5, 6))})
    with pytest.raises(SolverError, match="finite"):
        fs.step({"tgfb": np.full((5, 6), np.inf)}, {})


# ------------------------------------------------------------------------------------------
# solver choice and bookkeeping
def test_fieldset_auto_picks_backward_euler_for_default_and_explicit_for_small_numbers():
    labels = np.zeros((8, 8))
    specs = {"tgfb": _spec(d=10.0), "opn": _spec("opn", d=0.5), "slow": _spec("slow", d=0.01)}
    info = FieldSet(labels, 10.0, 1.0, specs).info()
    assert info["tgfb"]["method"] == "backward_euler"
    assert info["tgfb"]["stability_number"] == pytest.approx(360.0)
    assert info["opn"]["method"] == "explicit" and info["opn"]["n_substeps"] == 72
    assert info["slow"]["method"] == "explicit"
    assert info["slow"]["n_substeps"] == 2
    assert info["slow"]["stability_number"] == pytest.approx(0.36)
    assert info["tgfb"]["decay_length_um"] == pytest.approx(math.sqrt(36000 / 2.0))


def test_fieldset_explicit_substeps_keep_diffusion_number_at_most_a_quarter():
    fs = FieldSet(np.zeros((4, 4)), 10.0, 1.0, {"tgfb": _spec()}, method="explicit")
    info = fs.info()["tgfb"]
    assert info["n_substeps"] == 1440
    assert info["stability_number"] / info["n_substeps"] <= 0.25


@pytest.mark.parametrize("method", SOLVERS)
def test_fieldset_missing_inputs_mean_zero_and_decay_is_exact(method):
    labels = np.zeros((6, 7))
    fs = FieldSet(labels, 10.0, 0.5, {"tgfb": _spec(k=0.8, cl=0.0, initial=2.0)}, method=method)
    for _ in range(4):
        fs.step({}, {})
    # uniform field in a closed domain: only decay acts; explicit and LOD integrate it exactly,
    # backward Euler gives its own (1 + k dt)^-n
    expected = 2.0 / (1 + 0.8 * 0.5) ** 4 if method == "backward_euler" else 2.0 * math.exp(-1.6)
    np.testing.assert_allclose(fs.values["tgfb"], expected, rtol=1e-7)


@pytest.mark.parametrize("method", SOLVERS)
def test_fieldset_values_stay_zero_outside_marrow_and_arrays_keep_identity(method):
    labels, _, sources, _ = _default_problem()
    fs = FieldSet(labels, 10.0, 1.0, {"tgfb": _spec()}, method=method)
    arr = fs.values["tgfb"]
    everywhere = np.ones(labels.shape)
    for _ in range(3):
        fs.step({"tgfb": everywhere}, {"tgfb": everywhere})
    assert fs.values["tgfb"] is arr
    assert np.all(arr[labels != 0] == 0) and np.all(arr[labels == 0] > 0)


@pytest.mark.parametrize("method", SOLVERS)
def test_fieldset_conserves_mass_without_decay_clearance_or_sources(method):
    labels = _section(n=60, radius_vox=25, n_seeds=15)
    rng = np.random.default_rng(1)
    fs = FieldSet(labels, 10.0, 1.0, {"tgfb": _spec(k=0.0, cl=0.0)}, method=method,
                  cg_tol=1e-12)
    fs.values["tgfb"][labels == 0] = rng.random((labels == 0).sum())
    before = fs.total("tgfb")
    for _ in range(5):
        fs.step({}, {})
    assert fs.total("tgfb") == pytest.approx(before, rel=1e-9)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_fieldset_results_do_not_depend_on_thread_count():
    labels = _section(n=70, radius_vox=30, n_seeds=25)
    rng = np.random.default_rng(3)
    specs = {"tgfb": _spec(), "opn": _spec("opn", d=1.0, k=0.06), "mitogen": _spec("mitogen")}
    sources = {name: rng.random(labels.shape) for name in specs}
    uptake = {"tgfb": rng.random(labels.shape)}
    results = []
    for threads in (1, 2):
        fs = FieldSet(labels, 10.0, 0.1, specs, method={"opn": "explicit", "mitogen": "lod"},
                      n_threads=threads)
        for _ in range(2):
            fs.step(sources, uptake)
        results.append(fs.values)
    for name in specs:
        assert np.array_equal(results[0][name], results[1][name])


# ------------------------------------------------------------------------------------------
# physics
@pytest.mark.parametrize("method", ["auto", "explicit"])
def test_point_source_relaxes_to_analytic_exponential_profile(method):
    # 1-D strip, one voxel wide; D = 10 µm²/s, k = 3.6/h -> decay length 100 µm = 10 voxels.
    n = 301
    labels = np.zeros((1, n))
    spec = FieldSpec("tgfb", "TGF-β1", 10.0, 3.6, 0.0)
    fs = FieldSet(labels, 10.0, 1.0, {"tgfb": spec}, method=method)
    source = np.zeros((1, n))
    source[0, n // 2] = 5.0
    c = _relax(fs, "tgfb", {"tgfb": source}, {}, rtol=1e-11)[0]
    x_um = np.arange(1, 51) * 10.0                 # 1 to 5 decay lengths from the source
    got = c[n // 2 + 1: n // 2 + 51] / c[n // 2 + 1]
    expected = np.exp(-(x_um - 10.0) / 100.0)      # exp(-x / sqrt(D/k)), normalised at x = dx
    # the 5-point lattice decays as exp(-mu x) with 2(cosh(mu dx) - 1) = dx²k/D, i.e.
    # 0.04% slower than the continuum at dx = L/10: < 1% over 5 decay lengths
    np.testing.assert_allclose(got, expected, rtol=0.01)
    assert np.allclose(c[: n // 2], c[n // 2 + 1:][::-1], rtol=1e-9)   # symmetric


@pytest.mark.parametrize("method", SOLVERS)
def test_gaussian_spreads_with_variance_2dt(method):
    # D = 1 µm²/s, dt = 0.5 h, 6 steps: 2 D t = 21 600 µm² = 216 voxel² on each axis.
    n = 161
    labels = np.zeros((n, n))
    fs = FieldSet(labels, 10.0, 0.5, {"opn": _spec("opn", d=1.0, k=0.0, cl=0.0)}, method=method,
                  cg_tol=1e-12)
    y, x = np.mgrid[0:n, 0:n] - n // 2
    var0 = 9.0
    fs.values["opn"][...] = np.exp(-(x ** 2 + y ** 2) / (2 * var0))
    for _ in range(6):
        fs.step({}, {})
    c = fs.values["opn"]
    mass = c.sum()
    var_x = (c * x ** 2).sum() / mass
    var_y = (c * y ** 2).sum() / mass
    expected = var0 + 2 * 3600.0 * 3.0 / 100.0
    # every scheme here moves the second moment by exactly 2 r per step on an open lattice;
    # the only error is the tail cut off by the grid edge (~5.4 standard deviations away)
    assert var_x == pytest.approx(expected, rel=0.005)
    assert var_y == pytest.approx(expected, rel=0.005)


@pytest.mark.parametrize("method", SOLVERS)
def test_fields_finite_and_non_negative_with_random_inputs_and_huge_diffusion(method):
    labels = _section(n=64, radius_vox=28, n_seeds=20)
    rng = np.random.default_rng(5)
    spec = FieldSpec("tgfb", "TGF-β1", 1000.0, 0.0, 50.0)       # D dt / dx² = 36 000
    fs = FieldSet(labels, 10.0, 1.0, {"tgfb": spec}, method=method if method != "explicit"
                  else "lod")
    for _ in range(5):
        src = 10.0 ** rng.uniform(-3, 6, labels.shape) * (rng.random(labels.shape) < 0.3)
        upt = 10.0 ** rng.uniform(-3, 8, labels.shape) * (rng.random(labels.shape) < 0.3)
        fs.step({"tgfb": src}, {"tgfb": upt})
        c = fs.values["tgfb"]
        assert np.all(np.isfinite(c)) and np.all(c >= 0)


def test_explicit_and_lod_agree_on_the_same_problem():
    # Same section and sources, D = 10 µm²/s, 2 h from zero. LOD splitting is first order in
    # dt: 14.5% off at dt = 0.1 h (D dt/dx² = 36), 3.6% at dt = 0.01 h (3.6). Stated
    # tolerance: 5% at dt = 0.01 h. Backward Euler at the same dt: 0.04%, stated as 0.1%.
    labels, specs, sources, uptake = _default_problem()
    one = {"tgfb": specs["tgfb"]}
    result = {}
    for method in SOLVERS:
        fs = FieldSet(labels, 10.0, 0.01, one, method=method, cg_tol=1e-10)
        for _ in range(200):
            fs.step({"tgfb": sources["tgfb"]}, uptake)
        result[method] = fs.values["tgfb"]
    assert _rel_l2(result["lod"], result["explicit"]) < 0.05
    assert _rel_l2(result["backward_euler"], result["explicit"]) < 0.001


@pytest.mark.parametrize("name", ["tgfb", "opn", "mitogen"])
def test_default_method_relaxed_field_within_5pct_of_fine_step_explicit(name):
    """The issue's accuracy requirement, and why the default is backward Euler, not LOD.

    At dt = 1 h on a default-like section the LOD step's fixed point is 30-45% (relative L2)
    away from the fine-step explicit steady state: splitting error grows with D dt/dx² (360
    for TGF-β1). The backward-Euler step's fixed point is exactly the discrete steady state,
    so it lands within 0.2% (the remainder is the explicit reference's own sub-step error).
    So "auto" uses backward Euler whenever the explicit stencil would need more than
    AUTO_MAX_EXPLICIT_SUBSTEPS sub-steps, as all three fields here do (D dt/dx² = 360, 36).
    """
    labels, specs, sources, uptake = _default_problem()
    one = {name: specs[name]}
    sources = {name: sources[name]}
    uptake = {k: v for k, v in uptake.items() if k == name}
    reference = _relax(FieldSet(labels, 10.0, 1.0, one, method="explicit"), name, sources,
                       uptake)
    default = FieldSet(labels, 10.0, 1.0, one)
    assert default.info()[name]["method"] == "backward_euler"
    relaxed = _relax(default, name, sources, uptake)
    assert _rel_l2(relaxed, reference) < 0.05
    lod = _relax(FieldSet(labels, 10.0, 1.0, one, method="lod"), name, sources, uptake)
    assert _rel_l2(lod, reference) > 0.05            # the reason LOD is not the default


# ------------------------------------------------------------------------------------------
# backward-Euler preconditioner: the choice, and compartment solves agreeing with Jacobi
def test_preconditioner_is_compartments_unless_jacobi_is_asked_for():
    small = FieldSet(np.zeros((50, 60)), 10.0, 1.0, {"tgfb": _spec()})
    assert small.preconditioner == "compartments"
    assert small.info()["tgfb"]["preconditioner"] == "compartments"
    forced = FieldSet(np.zeros((50, 60)), 10.0, 1.0, {"tgfb": _spec()},
                      preconditioner="jacobi")
    assert forced.preconditioner == "jacobi"
    for bad in ("auto", "ilu", "multigrid"):
        with pytest.raises(SolverError, match="preconditioner"):
            FieldSet(np.zeros((5, 5)), 10.0, 1.0, {"tgfb": _spec()}, preconditioner=bad)


@pytest.mark.parametrize("rim_vox", [0, 2])
def test_compartment_and_jacobi_fieldsets_agree_within_the_cg_tolerance(rim_vox):
    """Closed compartments (rim 0) are solved in one step; with a marrow rim joining them into
    one large component (rim 2) the solve falls back to Jacobi-PCG. Same answer either way."""
    labels = _section(rim_vox=rim_vox)
    rng = np.random.default_rng(21)
    marrow = labels == 0
    specs = {"tgfb": _spec(), "mito": _spec("mito", k=0.3, cl=0.5)}
    sets = {pc: FieldSet(labels, 10.0, 1.0, specs, preconditioner=pc)
            for pc in ("jacobi", "compartments")}
    for _ in range(3):
        src = {n: np.where(marrow & (rng.random(labels.shape) < 0.03), 5.0, 0.0) for n in specs}
        upt = {n: np.where(marrow, rng.random(labels.shape) * 0.2, 0.0) for n in specs}
        for fs in sets.values():
            fs.step(src, upt)
    its = {pc: fs.info()["tgfb"]["last_cg_iterations"] for pc, fs in sets.items()}
    if rim_vox == 0:
        assert its["compartments"] == 1 and its["jacobi"] > 20
    else:
        assert 0 < its["compartments"] <= its["jacobi"] + 2
    for name in specs:
        j, m = sets["jacobi"].values[name], sets["compartments"].values[name]
        np.testing.assert_allclose(m, j, rtol=0, atol=1e-7 * j.max())
        assert np.all(m[~marrow] == 0)
