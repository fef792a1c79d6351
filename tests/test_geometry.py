"""Geometry: generators, sinusoid network, zones, labelled images and the section picture."""

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from marrow_abm.errors import GeometryError
from marrow_abm.geometry import (
    BONE, MARROW, REPORT_ZONES, SINUSOID, Geometry, build_geometry, femur_diaphysis,
    load_label_image, metaphysis, save_label_image, sinusoid_network_stats,
)
from marrow_abm.geometry_plot import DPI, FIGSIZE_IN, draw_geometry

ZONES_DEFAULT = {"d_endo_um": 50.0, "d_central_um": 150.0, "d_vasc_um": 20.0}
SECTION = dict(dx_um=10.0, marrow_radius_um=560.0, cortex_thickness_um=160.0,
               sinusoid_area_fraction=0.30, sinusoid_spacing_um=80.0)
TRABECULAE = dict(trabecula_count=10, trabecula_width_um=40.0, trabecula_length_um=300.0)
TABLE = {
    "generator": "femur_diaphysis", "dx_um": 10.0, "marrow_radius_um": 560.0,
    "cortex_thickness_um": 160.0, "image_path": "",
    "sinusoids": {"area_fraction": 0.30, "spacing_um": 80.0},
    "trabeculae": {"count": 10, "width_um": 40.0, "length_um": 300.0},
}


def rng(seed=0):
    return np.random.default_rng(seed)


def geom(labels, dx_um=10.0, **zones):
    return Geometry.from_labels(labels, dx_um, **{**ZONES_DEFAULT, **zones})


def sinusoid_fraction(labels):
    return np.count_nonzero(labels == SINUSOID) / np.count_nonzero(labels != BONE)


# -- zones on hand-built grids -------------------------------------------------------------------

def test_zones_thresholds_follow_distance_to_bone_column():
    # Bone in column 0: voxel (i, j) is exactly 10·j µm from bone.
    labels = np.zeros((3, 25), np.int8)
    labels[:, 0] = BONE
    g = geom(labels)
    assert np.allclose(g.dist_bone_um[1], 10.0 * np.arange(25))
    row = g.radial_zone[1]
    assert row[0] == -1
    assert (row[1:6] == 0).all()        # 10..50 µm: endosteal (≤ 50 inclusive)
    assert (row[6:16] == 1).all()       # 60..150 µm: intermediate (≤ 150 stays intermediate)
    assert (row[16:] == 2).all()        # > 150 µm: central


def test_zones_perivascular_within_d_vasc_of_sinusoid():
    labels = np.zeros((9, 9), np.int8)
    labels[4, 4] = SINUSOID
    g = geom(labels, d_vasc_um=20.0)
    yy, xx = np.mgrid[0:9, 0:9]
    expected = (np.hypot(yy - 4, xx - 4) * 10.0 <= 20.0) & (labels == MARROW)
    assert np.array_equal(g.perivascular, expected)
    assert not g.perivascular[4, 4]     # the lumen itself is not marrow


def test_zones_sinusoid_and_bone_voxels_have_no_radial_zone():
    labels = np.array([[BONE, MARROW, SINUSOID, MARROW]], np.int8)
    g = geom(labels)
    assert g.radial_zone.tolist() == [[-1, 0, -1, 0]]


def test_zones_central_below_endosteal_raises():
    with pytest.raises(GeometryError, match="d_central_um"):
        geom(np.zeros((4, 4), np.int8), d_endo_um=100.0, d_central_um=50.0)


def test_zone_masks_partition_marrow_and_overlay_inside_it():
    g = geom(femur_diaphysis(rng=rng(), **SECTION))
    m = g.zone_masks()
    assert tuple(m) == REPORT_ZONES
    radial = m["endosteal"].astype(int) + m["intermediate"] + m["central"]
    assert np.array_equal(radial == 1, m["all"]) and radial.max() == 1
    assert not (m["perivascular"] & ~m["all"]).any()
    assert m["perivascular"].any() and not m["perivascular"].all()


def test_touching_counts_face_neighbours_not_diagonals():
    labels = np.zeros((3, 3), np.int8)
    labels[1, 1] = BONE
    t = geom(labels).touching(BONE)
    assert t.tolist() == [[False, True, False], [True, False, True], [False, True, False]]


def test_touching_unknown_label_raises():
    with pytest.raises(GeometryError):
        geom(np.zeros((3, 3), np.int8)).touching(7)


def test_geometry_arrays_are_read_only():
    g = geom(np.zeros((3, 3), np.int8))
    with pytest.raises(ValueError):
        g.labels[0, 0] = BONE
    assert g.dist_bone_um.dtype == np.float32 and g.dist_sinusoid_um.dtype == np.float32
    assert np.isinf(g.dist_bone_um).all()      # no bone at all: infinitely far, all central
    assert (g.radial_zone == 2).all()


# -- generators --------------------------------------------------------------------------------

@pytest.mark.parametrize("d_um", [50.0, 100.0])
def test_diaphysis_endosteal_fraction_matches_annulus_formula(d_um):
    # Fraction of a disc of radius R within d of its edge: 1 - (1 - d/R)^2.
    expected = 1 - (1 - d_um / 560.0) ** 2
    bare = geom(femur_diaphysis(rng=rng(), **{**SECTION, "sinusoid_area_fraction": 0.0}),
                d_endo_um=d_um)
    m = bare.zone_masks()
    assert m["endosteal"].sum() / m["all"].sum() == pytest.approx(expected, abs=0.005)
    for seed in range(3):   # sinusoids remove marrow unevenly: a looser bound
        m = geom(femur_diaphysis(rng=rng(seed), **SECTION), d_endo_um=d_um).zone_masks()
        assert m["endosteal"].sum() / m["all"].sum() == pytest.approx(expected, abs=0.015)


def test_diaphysis_section_is_disc_in_cortical_ring():
    labels = femur_diaphysis(rng=rng(), **{**SECTION, "sinusoid_area_fraction": 0.0})
    n = labels.shape[0]
    assert labels.shape == (n, n) and n == 2 * 72 + 1       # ceil(720 / 10) each side
    area_mm2 = np.count_nonzero(labels == MARROW) * 1e-4
    assert area_mm2 == pytest.approx(np.pi * 0.56 ** 2, rel=0.01)
    assert labels[n // 2, n // 2] == MARROW and labels[0, 0] == BONE
    assert labels[n // 2, n // 2 + 57] == BONE      # 570 µm from the centre: in the cortex


@pytest.mark.parametrize("frac,spacing_um,dx_um", [(0.30, 80.0, 10.0), (0.25, 100.0, 10.0),
                                                   (0.35, 60.0, 5.0), (0.20, 120.0, 10.0)])
def test_sinusoid_fraction_within_003_of_target(frac, spacing_um, dx_um):
    for seed in range(3):
        labels = femur_diaphysis(rng=rng(seed), **{**SECTION, "dx_um": dx_um,
                                 "sinusoid_area_fraction": frac, "sinusoid_spacing_um": spacing_um})
        assert sinusoid_fraction(labels) == pytest.approx(frac, abs=0.03)


def test_sinusoid_network_connected_in_diaphysis():
    for seed in range(4):
        net = sinusoid_network_stats(femur_diaphysis(rng=rng(seed), **SECTION))
        # One network; at most a few stubs clipped where a cell edge meets the cortex.
        assert net["frac_in_largest"] >= 0.99


@pytest.mark.parametrize("make", ["diaphysis", "metaphysis"])
def test_sinusoid_pieces_are_main_network_or_end_on_bone(make):
    labels = (femur_diaphysis(rng=rng(3), **SECTION) if make == "diaphysis"
              else metaphysis(rng=rng(3), **SECTION, **TRABECULAE))
    comp, n = ndimage.label(labels == SINUSOID)
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    near_bone = ndimage.binary_dilation(labels == BONE)
    for k in range(1, n + 1):
        if k != np.argmax(sizes):
            assert (near_bone & (comp == k)).any(), f"piece {k} floats free in marrow"


@pytest.mark.parametrize("make", ["diaphysis", "metaphysis"])
def test_sinusoids_reach_nearly_every_marrow_voxel(make):
    labels = (femur_diaphysis(rng=rng(1), **SECTION) if make == "diaphysis"
              else metaphysis(rng=rng(1), **SECTION, **TRABECULAE))
    s = geom(labels).summary()
    assert s["dist_sinusoid_p95_um"] <= 40.0            # no sinusoid-free pockets
    assert s["frac_marrow_within_20um_of_sinusoid"] >= 0.75


def test_metaphysis_has_more_endosteal_voxels_than_diaphysis():
    dia = geom(femur_diaphysis(rng=rng(), **SECTION)).zone_masks()
    met = geom(metaphysis(rng=rng(), **SECTION, **TRABECULAE)).zone_masks()
    assert met["endosteal"].sum() > 2 * dia["endosteal"].sum()


def test_metaphysis_trabeculae_are_fused_to_the_cortex():
    labels = metaphysis(rng=rng(5), **SECTION, **TRABECULAE)
    _, n_bone = ndimage.label(labels == BONE)
    assert n_bone == 1
    plain = femur_diaphysis(rng=rng(5), **SECTION)
    assert np.count_nonzero(labels == BONE) > np.count_nonzero(plain == BONE)


def test_generators_same_seed_give_identical_labels():
    for make, extra in ((femur_diaphysis, {}), (metaphysis, TRABECULAE)):
        a = make(rng=rng(42), **SECTION, **extra)
        b = make(rng=rng(42), **SECTION, **extra)
        assert a.dtype == np.int8 and np.array_equal(a, b)


def test_generators_different_seed_give_different_sinusoids_same_cortex():
    a = femur_diaphysis(rng=rng(1), **SECTION)
    b = femur_diaphysis(rng=rng(2), **SECTION)
    changed = np.count_nonzero((a == SINUSOID) != (b == SINUSOID))
    assert changed > 0.3 * np.count_nonzero(a == SINUSOID)
    assert np.array_equal(a == BONE, b == BONE)


def test_network_layout_does_not_depend_on_resolution():
    coarse = femur_diaphysis(rng=rng(7), **SECTION)
    fine = femur_diaphysis(rng=rng(7), **{**SECTION, "dx_um": 5.0})
    # Every coarse sinusoid voxel centre lies within 10 µm of a fine sinusoid voxel centre.
    near_fine = ndimage.distance_transform_edt(fine != SINUSOID, sampling=5.0) <= 10.0
    cy, cx = np.nonzero(coarse == SINUSOID)
    n = coarse.shape[0] // 2
    fy, fx = (cy - n) * 2 + fine.shape[0] // 2, (cx - n) * 2 + fine.shape[1] // 2
    assert near_fine[fy, fx].mean() >= 0.9


def test_spacing_too_fine_for_dx_raises_with_advice():
    with pytest.raises(GeometryError, match="spacing_um ≥"):
        femur_diaphysis(rng=rng(), **{**SECTION, "sinusoid_spacing_um": 30.0})


def test_section_too_large_raises_before_allocating():
    with pytest.raises(GeometryError, match="increase geometry.dx_um"):
        femur_diaphysis(rng=rng(), **{**SECTION, "dx_um": 1.0, "marrow_radius_um": 20000.0})


def test_generator_bad_argument_names_the_key():
    with pytest.raises(GeometryError, match="geometry.sinusoids.area_fraction"):
        femur_diaphysis(rng=rng(), **{**SECTION, "sinusoid_area_fraction": 1.5})
    with pytest.raises(GeometryError, match="geometry.trabeculae.count"):
        metaphysis(rng=rng(), **SECTION, **{**TRABECULAE, "trabecula_count": -1})


# -- build_geometry ----------------------------------------------------------------------------

def test_build_geometry_generators_record_source_and_outside(tmp_path):
    for gen in ("femur_diaphysis", "metaphysis"):
        g = build_geometry({**TABLE, "generator": gen}, ZONES_DEFAULT, rng(), tmp_path)
        assert g.source == gen
        assert g.outside is not None and g.outside[0, 0] and not g.outside[g.shape[0] // 2, 0]
        assert (g.labels[g.outside] == BONE).all()
        assert g.zone_widths_um == ZONES_DEFAULT


def test_build_geometry_matches_direct_generator_call(tmp_path):
    g = build_geometry({**TABLE, "generator": "metaphysis"}, ZONES_DEFAULT, rng(9), tmp_path)
    assert np.array_equal(g.labels, metaphysis(rng=rng(9), **SECTION, **TRABECULAE))


def test_build_geometry_image_generator_reads_relative_path(tmp_path):
    labels = femur_diaphysis(rng=rng(), **{**SECTION, "marrow_radius_um": 150.0})
    save_label_image(labels, tmp_path / "img" / "section.png")
    table = {**TABLE, "generator": "image", "image_path": "img/section.png", "dx_um": 5.0}
    g = build_geometry(table, ZONES_DEFAULT, rng(), tmp_path)
    assert np.array_equal(g.labels, labels) and g.dx_um == 5.0 and g.outside is None


def test_build_geometry_missing_key_is_named(tmp_path):
    table = {k: v for k, v in TABLE.items() if k != "sinusoids"}
    with pytest.raises(GeometryError, match="geometry.sinusoids is missing"):
        build_geometry(table, ZONES_DEFAULT, rng(), tmp_path)
    with pytest.raises(GeometryError, match="zones.d_vasc_um is missing"):
        build_geometry(TABLE, {"d_endo_um": 50.0, "d_central_um": 150.0}, rng(), tmp_path)
    with pytest.raises(GeometryError, match="generator"):
        build_geometry({**TABLE, "generator": "tibia"}, ZONES_DEFAULT, rng(), tmp_path)


def test_summary_is_json_ready_and_consistent():
    g = build_geometry(TABLE, ZONES_DEFAULT, rng(), Path("."))
    s = json.loads(json.dumps(g.summary()))
    assert s["shape"] == list(g.shape) and s["dx_um"] == 10.0
    assert sum(s["voxels"].values()) == g.labels.size
    assert s["zone_voxels"]["all"] == s["voxels"]["marrow"]
    assert s["sinusoid_area_fraction"] == pytest.approx(0.30, abs=0.03)
    assert s["marrow_area_mm2"] == pytest.approx(s["voxels"]["marrow"] * 1e-4)
    assert s["sinusoid_components"] >= 1
    assert 0 < s["dist_sinusoid_median_um"] <= s["dist_sinusoid_p95_um"]


def test_summary_without_sinusoids_reports_none():
    s = geom(np.zeros((5, 5), np.int8)).summary()
    assert s["sinusoid_components"] == 0 and s["dist_sinusoid_median_um"] is None
    json.dumps(s)


# -- labelled images ---------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff", ".npy"])
def test_label_image_round_trip(tmp_path, suffix):
    labels = metaphysis(rng=rng(), **{**SECTION, "marrow_radius_um": 200.0}, **TRABECULAE)
    path = save_label_image(labels[:, 3:], tmp_path / f"section{suffix}")
    back = load_label_image(path)
    assert back.dtype == np.int8 and np.array_equal(back, labels[:, 3:])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]     # no temporary left behind


def test_load_accepts_palette_grey_rgb_16bit_and_single_page_stack(tmp_path):
    labels = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    pal = Image.fromarray(labels, mode="P")
    pal.putpalette([0, 0, 0, 255, 255, 255, 200, 0, 0] + [0] * 759)
    pal.save(tmp_path / "pal.png")
    Image.fromarray(np.stack([labels] * 3, -1), mode="RGB").save(tmp_path / "grey.png")
    Image.fromarray(labels.astype(np.uint16)).save(tmp_path / "deep.png")
    tifffile.imwrite(tmp_path / "stack.tif", labels[None])
    np.save(tmp_path / "float.npy", labels.astype(np.float32))
    for name in ("pal.png", "grey.png", "deep.png", "stack.tif", "float.npy"):
        assert np.array_equal(load_label_image(tmp_path / name), labels), name


def _rgb(path):
    Image.fromarray(np.array([[[0, 0, 0], [255, 0, 0]]], np.uint8), mode="RGB").save(path)


BAD_IMAGES = {
    "missing.png": (None, "file not found"),
    "garbage.png": (lambda p: p.write_bytes(b"not a png at all"), "cannot read"),
    "colour.png": (_rgb, "colour image"),
    "values.png": (lambda p: Image.fromarray(np.array([[0, 3, 255]], np.uint8)).save(p),
                   r"values \{3, 255\} found; expected 0 marrow, 1 bone, 2 sinusoid"),
    "cube.npy": (lambda p: np.save(p, np.zeros((2, 3, 5), np.int8)), "not a 2-D"),
    "bone_only.tif": (lambda p: tifffile.imwrite(p, np.ones((4, 4), np.uint8)), "no marrow"),
    "fractional.npy": (lambda p: np.save(p, np.array([[0.0, 0.5]])), r"values \{0.5\}"),
    "text.npy": (lambda p: np.save(p, np.array([["a", "b"]])), "not numeric"),
    "photo.jpg": (lambda p: p.write_bytes(b"\xff\xd8"), "JPEG is lossy"),
    "labels.bmp": (lambda p: p.write_bytes(b"BM"), "unsupported format"),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_load_bad_image_raises_geometry_error_naming_file(tmp_path, name):
    make, message = BAD_IMAGES[name]
    path = tmp_path / name
    if make:
        make(path)
    with pytest.raises(GeometryError, match=message) as info:
        load_label_image(path)
    assert str(path) in str(info.value)


def test_bundled_example_image_loads():
    path = Path(__file__).resolve().parents[1] / "scenarios" / "images" / "example_section.png"
    assert path.stat().st_size <= 50_000
    g = geom(load_label_image(path))
    s = g.summary()
    assert s["shape"] == [100, 140]
    assert all(s["zone_voxels"][z] > 0 for z in REPORT_ZONES)
    assert s["sinusoid_area_fraction"] == pytest.approx(0.30, abs=0.03)


# -- picture -----------------------------------------------------------------------------------

def test_draw_geometry_writes_png_of_expected_size(tmp_path):
    g = build_geometry({**TABLE, "generator": "metaphysis"}, ZONES_DEFAULT, rng(), tmp_path)
    hatch_before = matplotlib.rcParams["hatch.linewidth"]
    out = draw_geometry(g, tmp_path / "pics" / "section.png", title="test section")
    assert out == tmp_path / "pics" / "section.png"
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size == (round(FIGSIZE_IN[0] * DPI), round(FIGSIZE_IN[1] * DPI))
        pixels = np.asarray(im.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 6     # more than a blank canvas
    assert [p.name for p in out.parent.iterdir()] == ["section.png"]
    assert matplotlib.rcParams["hatch.linewidth"] == hatch_before   # style restored


def test_draw_geometry_handles_image_without_sinusoids_or_bone(tmp_path):
    labels = np.zeros((20, 30), np.int8)
    labels[:, :3] = BONE
    out = draw_geometry(geom(labels), tmp_path / "plain.png")
    with Image.open(out) as im:
        assert im.size == (round(FIGSIZE_IN[0] * DPI), round(FIGSIZE_IN[1] * DPI))
    draw_geometry(geom(np.zeros((8, 8), np.int8)), tmp_path / "marrow_only.png")


def test_draw_geometry_unwritable_destination_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GeometryError, match="cannot write"):
        draw_geometry(geom(np.zeros((4, 4), np.int8)), blocker / "section.png")


def test_sinusoid_network_does_not_depend_on_the_query_chunk(monkeypatch):
    """The nearest-seed query runs in chunks of voxels to bound its temporaries on large
    sections; a tiny chunk gives the same network voxel for voxel."""
    import marrow_abm.geometry as G

    whole = femur_diaphysis(rng=rng(3), **SECTION)
    monkeypatch.setattr(G, "_KD_CHUNK", 997)          # many chunks, the last one partial
    assert np.array_equal(femur_diaphysis(rng=rng(3), **SECTION), whole)
    assert np.count_nonzero(whole == SINUSOID) > 1000
