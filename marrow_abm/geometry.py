"""The marrow section: a 2-D label lattice, its generators, labelled-image import, and zones.

A section is an int8 array of labels, ``MARROW = 0``, ``BONE = 1``, ``SINUSOID = 2``, on a square
lattice of edge ``dx_um`` (MODEL.md §2). Only ``MARROW`` voxels are simulation domain: cells live
there and fields diffuse there. Generated sections are cropped tightly around the bone, and the
few corner voxels outside the periosteum are labelled ``BONE`` too ("not marrow", a no-flux wall);
``Geometry.outside`` remembers them so pictures can draw them as background.

Zones come from Euclidean distance maps between voxel centres: a marrow voxel touching bone is
``dx_um`` from it, so with ``d_endo_um`` a multiple of ``dx_um`` the endosteal zone is exactly the
band of that width along the bone surface.

Randomness: every generator takes the caller's ``numpy.random.Generator`` (the engine's named
stream ``"geometry"``) and draws from it in a fixed order, so one seed gives one section. The
random network is laid out in physical units (µm), not voxels, so the same seed at a finer
``dx_um`` gives the same network drawn at a finer resolution.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .errors import GeometryError

MARROW, BONE, SINUSOID = 0, 1, 2
LABEL_NAMES = {MARROW: "marrow", BONE: "bone", SINUSOID: "sinusoid"}
#: Radial zone codes 0, 1, 2 in ``Geometry.radial_zone`` (-1 outside marrow).
ZONES = ("endosteal", "intermediate", "central")
#: Masks a run reports statistics over (``Geometry.zone_masks``).
REPORT_ZONES = ("all", "endosteal", "intermediate", "central", "perivascular")
GENERATORS = ("femur_diaphysis", "metaphysis", "image")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy")

#: Largest lattice we build: 4096² voxels of a few float32/int8 maps stay well under 1 GB.
MAX_VOXELS = 4096 * 4096
#: 4-neighbour (face) adjacency: the 5-point diffusion stencil's notion of "connected".
_FACE = ndimage.generate_binary_structure(2, 1)
#: Seeds of the sinusoid network sit on a square grid of the spacing, each moved uniformly by up
#: to this fraction of the spacing, so cells are irregular but never degenerate.
_SEED_JITTER = 0.35
#: Smooth random displacement (fraction of the spacing) that bends the straight Voronoi edges
#: into the tortuous vessels seen in marrow sections.
_WARP_AMPLITUDE = 0.15
#: Marrow voxels per nearest-seed query when drawing the sinusoid network (bounds the
#: temporaries of large sections; the result does not depend on it).
_KD_CHUNK = 1 << 16


# ----------------------------------------------------------------------------------------------
# The geometry object

def touching(labels: np.ndarray, label: int) -> np.ndarray:
    """Marrow voxels of a label grid with at least one face (4-)neighbour carrying ``label``.

    Args:
        labels: int (ny, nx) grid of ``MARROW``/``BONE``/``SINUSOID``.
        label: the neighbour label looked for. The lattice edge counts as nothing.
    """
    if label not in LABEL_NAMES:
        raise GeometryError(f"unknown label {label!r}; expected 0 marrow, 1 bone, 2 sinusoid")
    hit = np.pad(labels == label, 1, constant_values=False)
    near = hit[:-2, 1:-1] | hit[2:, 1:-1] | hit[1:-1, :-2] | hit[1:-1, 2:]
    return near & (labels == MARROW)


@dataclass(frozen=True, eq=False)
class Geometry:
    """A labelled section with its distance maps and zones; arrays are read-only.

    Attributes:
        labels: int8 (ny, nx) of ``MARROW``/``BONE``/``SINUSOID``.
        dx_um: voxel edge (µm).
        dist_bone_um: float32 distance of each voxel centre to the nearest bone voxel centre (µm);
            0 on bone, ``inf`` everywhere if the section has no bone.
        dist_sinusoid_um: float32, the same for sinusoid voxels.
        radial_zone: int8, -1 outside marrow, else 0 endosteal, 1 intermediate, 2 central.
        perivascular: bool, marrow voxels within ``d_vasc_um`` of a sinusoid.
        zone_widths_um: the ``d_endo_um``, ``d_central_um``, ``d_vasc_um`` the zones came from.
        outside: bool mask of voxels beyond the outer bone surface (labelled ``BONE``), or None.
        source: where the section came from (generator name or image path), for titles.
    """

    labels: np.ndarray
    dx_um: float
    dist_bone_um: np.ndarray
    dist_sinusoid_um: np.ndarray
    radial_zone: np.ndarray
    perivascular: np.ndarray
    zone_widths_um: dict[str, float] = field(default_factory=dict)
    outside: np.ndarray | None = None
    source: str = ""

    @classmethod
    def from_labels(cls, labels: np.ndarray, dx_um: float, *, d_endo_um: float,
                    d_central_um: float, d_vasc_um: float, outside: np.ndarray | None = None,
                    source: str = "") -> Geometry:
        """Compute distance maps and zones for a label array.

        Args:
            labels: (ny, nx) integer array with values in {0, 1, 2}.
            dx_um: voxel edge (µm).
            d_endo_um: endosteal zone = marrow within this distance of bone (µm).
            d_central_um: central zone = marrow farther than this from bone (µm); ≥ ``d_endo_um``.
            d_vasc_um: perivascular overlay = marrow within this distance of a sinusoid (µm).
            outside: optional bool mask of voxels beyond the bone (drawn as background).
            source: a short description of where the section came from.

        Raises:
            GeometryError: bad labels, a non-positive ``dx_um``, or inconsistent zone widths.
        """
        labels = np.asarray(labels)
        _check_labels(labels, "labels")
        dx_um = _positive(dx_um, "geometry.dx_um")
        d_endo_um = _positive(d_endo_um, "zones.d_endo_um")
        d_central_um = _positive(d_central_um, "zones.d_central_um")
        d_vasc_um = _positive(d_vasc_um, "zones.d_vasc_um")
        if d_central_um < d_endo_um:
            raise GeometryError(f"zones.d_central_um = {d_central_um:g} µm is smaller than "
                                f"zones.d_endo_um = {d_endo_um:g} µm; the central zone must lie "
                                "beyond the endosteal one")
        labels = labels.astype(np.int8, copy=True)
        marrow = labels == MARROW
        dist_bone = _distance_to(labels == BONE, dx_um)
        dist_sin = _distance_to(labels == SINUSOID, dx_um)
        zone = np.full(labels.shape, -1, np.int8)
        zone[marrow] = 1
        zone[marrow & (dist_bone <= d_endo_um)] = 0
        zone[marrow & (dist_bone > d_central_um)] = 2
        periv = marrow & (dist_sin <= d_vasc_um)
        if outside is not None:
            outside = np.asarray(outside, bool).copy()
            if outside.shape != labels.shape:
                raise GeometryError(f"outside mask has shape {outside.shape}, "
                                    f"labels {labels.shape}")
        arrays = [labels, dist_bone, dist_sin, zone, periv]
        if outside is not None:
            arrays.append(outside)
        for a in arrays:
            a.setflags(write=False)
        return cls(labels=labels, dx_um=dx_um, dist_bone_um=dist_bone, dist_sinusoid_um=dist_sin,
                   radial_zone=zone, perivascular=periv,
                   zone_widths_um={"d_endo_um": d_endo_um, "d_central_um": d_central_um,
                                   "d_vasc_um": d_vasc_um},
                   outside=outside, source=source)

    @property
    def shape(self) -> tuple[int, int]:
        """Lattice shape (ny, nx)."""
        return self.labels.shape

    def zone_masks(self) -> dict[str, np.ndarray]:
        """Bool masks over marrow voxels for each name in ``REPORT_ZONES`` (fresh arrays)."""
        masks = {"all": self.labels == MARROW}
        for code, name in enumerate(ZONES):
            masks[name] = self.radial_zone == code
        masks["perivascular"] = self.perivascular.copy()
        return masks

    def touching(self, label: int) -> np.ndarray:
        """Marrow voxels with at least one face (4-)neighbour carrying ``label``.

        Args:
            label: ``MARROW``, ``BONE`` or ``SINUSOID``. The lattice edge counts as nothing.
        """
        return touching(self.labels, label)

    def summary(self) -> dict[str, Any]:
        """Plain-Python (JSON-ready) description: sizes, voxels per label and zone, network stats.

        Keys: ``source``, ``shape`` [ny, nx], ``dx_um``, ``voxels`` (per label), ``zone_voxels``
        (per ``REPORT_ZONES`` name), ``zone_widths_um``, ``marrow_area_mm2`` (marrow voxels, the
        simulated domain), ``medullary_area_mm2`` (marrow + sinusoid), ``sinusoid_area_fraction``
        (of the medullary area), ``sinusoid_components`` (face-connected pieces),
        ``frac_sinusoid_in_largest``, ``dist_sinusoid_median_um``, ``dist_sinusoid_p95_um``,
        ``frac_marrow_within_20um_of_sinusoid`` (None where there is no sinusoid).
        """
        counts = {name: int(np.count_nonzero(self.labels == code))
                  for code, name in LABEL_NAMES.items()}
        medullary = counts["marrow"] + counts["sinusoid"]
        net = sinusoid_network_stats(self.labels)
        marrow = self.labels == MARROW
        d = self.dist_sinusoid_um[marrow]
        has_sin = counts["sinusoid"] > 0 and d.size > 0
        voxel_mm2 = (self.dx_um * 1e-3) ** 2
        return {
            "source": self.source,
            "shape": [int(n) for n in self.labels.shape],
            "dx_um": float(self.dx_um),
            "voxels": counts,
            "zone_voxels": {k: int(np.count_nonzero(m)) for k, m in self.zone_masks().items()},
            "zone_widths_um": {k: float(v) for k, v in self.zone_widths_um.items()},
            "marrow_area_mm2": counts["marrow"] * voxel_mm2,
            "medullary_area_mm2": medullary * voxel_mm2,
            "sinusoid_area_fraction": counts["sinusoid"] / medullary if medullary else 0.0,
            "sinusoid_components": net["components"],
            "frac_sinusoid_in_largest": net["frac_in_largest"],
            "dist_sinusoid_median_um": float(np.median(d)) if has_sin else None,
            "dist_sinusoid_p95_um": float(np.percentile(d, 95)) if has_sin else None,
            "frac_marrow_within_20um_of_sinusoid": float(np.mean(d <= 20.0)) if has_sin else None,
        }


def sinusoid_network_stats(labels: np.ndarray) -> dict[str, Any]:
    """Face-connected components of the sinusoid voxels.

    Returns:
        ``components`` (int) and ``frac_in_largest`` (fraction of sinusoid voxels in the largest
        component; None without sinusoids).
    """
    comp, n = ndimage.label(np.asarray(labels) == SINUSOID, structure=_FACE)
    if n == 0:
        return {"components": 0, "frac_in_largest": None}
    sizes = np.bincount(comp.ravel())[1:]
    return {"components": int(n), "frac_in_largest": float(sizes.max() / sizes.sum())}


def _distance_to(target: np.ndarray, dx_um: float) -> np.ndarray:
    """float32 distance (µm) of every voxel centre to the nearest ``target`` voxel centre."""
    if not target.any():
        return np.full(target.shape, np.inf, np.float32)
    return ndimage.distance_transform_edt(~target, sampling=dx_um).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Generators

def femur_diaphysis(*, rng: np.random.Generator, dx_um: float, marrow_radius_um: float,
                    cortex_thickness_um: float, sinusoid_area_fraction: float,
                    sinusoid_spacing_um: float) -> np.ndarray:
    """A mid-shaft cross-section: a marrow disc in a cortical ring, with a sinusoid network.

    The lattice is the tight square around the outer cortex; voxels outside it are ``BONE``.

    Args:
        rng: generator the sinusoid network is drawn from (the engine's "geometry" stream).
        dx_um: voxel edge (µm).
        marrow_radius_um: radius of the marrow disc (µm); mouse femur mid-shaft ≈ 560.
        cortex_thickness_um: cortical ring thickness (µm).
        sinusoid_area_fraction: sinusoid share of marrow + sinusoid voxels (0 for none).
        sinusoid_spacing_um: mean distance between the network's cell centres (µm).

    Returns:
        int8 (n, n) labels, n odd, section centred.
    """
    labels, _ = _diaphysis(rng=rng, dx_um=dx_um, marrow_radius_um=marrow_radius_um,
                           cortex_thickness_um=cortex_thickness_um, trabeculae=None,
                           sinusoid_area_fraction=sinusoid_area_fraction,
                           sinusoid_spacing_um=sinusoid_spacing_um)
    return labels


def metaphysis(*, rng: np.random.Generator, dx_um: float, marrow_radius_um: float,
               cortex_thickness_um: float, trabecula_count: int, trabecula_width_um: float,
               trabecula_length_um: float, sinusoid_area_fraction: float,
               sinusoid_spacing_um: float) -> np.ndarray:
    """The diaphysis section plus trabecular spicules growing in from the cortex.

    Each spicule starts on the endosteal surface at an evenly spread, jittered angle, points
    inward within ±25° of the radius, bends up to ±20° at two joints, tapers from the full width
    to 60% at its tip, and half of them carry a side branch a third as long. Sinusoids are laid
    out after the bone, in the marrow that is left.

    Args:
        rng: generator for spicules, then sinusoids.
        dx_um: voxel edge (µm).
        marrow_radius_um: radius of the marrow cavity (µm).
        cortex_thickness_um: cortical ring thickness (µm).
        trabecula_count: number of spicules (0 gives the diaphysis).
        trabecula_width_um: spicule width at its base (µm); mouse distal femur trabecular
            thickness ≈ 40–60 µm (e.g. Glatt 2007 J Bone Miner Res 22:1197).
        trabecula_length_um: length of each spicule along its axis (µm).
        sinusoid_area_fraction: sinusoid share of marrow + sinusoid voxels.
        sinusoid_spacing_um: mean distance between the network's cell centres (µm).

    Returns:
        int8 (n, n) labels.
    """
    trab = (_count(trabecula_count, "geometry.trabeculae.count"),
            _positive(trabecula_width_um, "geometry.trabeculae.width_um"),
            _positive(trabecula_length_um, "geometry.trabeculae.length_um"))
    labels, _ = _diaphysis(rng=rng, dx_um=dx_um, marrow_radius_um=marrow_radius_um,
                           cortex_thickness_um=cortex_thickness_um, trabeculae=trab,
                           sinusoid_area_fraction=sinusoid_area_fraction,
                           sinusoid_spacing_um=sinusoid_spacing_um)
    return labels


def _section_grid(dx_um: float, outer_radius_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-centre coordinates (µm, origin at the section centre) of the tight square."""
    half = math.ceil(outer_radius_um / dx_um)
    n = 2 * half + 1
    if n * n > MAX_VOXELS:
        raise GeometryError(f"a section of outer radius {outer_radius_um:g} µm at dx_um = "
                            f"{dx_um:g} needs {n}×{n} voxels (limit {MAX_VOXELS:,}); "
                            "increase geometry.dx_um or reduce the radius")
    c = (np.arange(n) - half) * dx_um
    return c[:, None], c[None, :]


def _diaphysis(*, rng, dx_um, marrow_radius_um, cortex_thickness_um, trabeculae,
               sinusoid_area_fraction, sinusoid_spacing_um) -> tuple[np.ndarray, np.ndarray]:
    """Shared body of the two generators; returns (labels, outside mask)."""
    dx_um = _positive(dx_um, "geometry.dx_um")
    radius = _positive(marrow_radius_um, "geometry.marrow_radius_um")
    cortex = _nonnegative(cortex_thickness_um, "geometry.cortex_thickness_um")
    outer = radius + cortex
    y, x = _section_grid(dx_um, outer)
    r = np.hypot(y, x)
    labels = np.full(r.shape, BONE, np.int8)
    labels[r <= radius] = MARROW
    if not (labels == MARROW).any():
        raise GeometryError(f"geometry.marrow_radius_um = {radius:g} µm is smaller than one voxel "
                            f"(dx_um = {dx_um:g}); no marrow voxel")
    outside = r > outer
    if trabeculae is not None:
        count, width, length = trabeculae
        labels[_trabeculae_mask(rng, y, x, radius, count, width, length)] = BONE
    _add_sinusoids(labels, rng, dx_um, sinusoid_area_fraction, sinusoid_spacing_um, outer)
    return labels, outside


def _trabeculae_mask(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, radius_um: float,
                     count: int, width_um: float, length_um: float) -> np.ndarray:
    """Bool mask of ``count`` tapered, bent, sometimes branched spicules rooted in the cortex."""
    mask = np.zeros((y.shape[0], x.shape[1]), bool)
    if count == 0:
        return mask
    base_angle = 2 * np.pi * (np.arange(count) + rng.uniform(-0.4, 0.4, count)) / count
    turn_in = np.deg2rad(rng.uniform(-25, 25, count))
    bends = np.deg2rad(rng.uniform(-20, 20, (count, 2)))
    branch = rng.random(count) < 0.5
    branch_at = rng.integers(0, 3, count)           # which joint the branch leaves from
    branch_turn = np.deg2rad(rng.uniform(30, 50, count) * rng.choice([-1, 1], count))
    half_w = width_um / 2
    seg = length_um / 3
    for k in range(count):
        a = base_angle[k]
        # Root half a width inside the cortex so the spicule is fused to it, not touching it.
        p = np.array([(radius_um + half_w) * np.sin(a), (radius_um + half_w) * np.cos(a)])
        heading = a + np.pi + turn_in[k]
        joints = [p]
        for j in range(3):
            if j > 0:
                heading += bends[k, j - 1]
            step = seg + (half_w if j == 0 else 0.0)
            p = p + step * np.array([np.sin(heading), np.cos(heading)])
            joints.append(p)
        widths = np.linspace(half_w, 0.6 * half_w, 4)
        for j in range(3):
            _paint_capsule(mask, y, x, joints[j], joints[j + 1], widths[j], widths[j + 1])
        if branch[k]:
            j = int(branch_at[k]) + 1 if branch_at[k] < 2 else 2
            d = joints[j] - joints[j - 1]
            h = math.atan2(d[0], d[1]) + branch_turn[k]
            tip = joints[j] + seg * np.array([np.sin(h), np.cos(h)])
            _paint_capsule(mask, y, x, joints[j], tip, widths[j] * 0.8, widths[j] * 0.5)
    return mask


def _paint_capsule(mask: np.ndarray, y: np.ndarray, x: np.ndarray, p0: np.ndarray,
                   p1: np.ndarray, r0: float, r1: float) -> None:
    """Set voxels within a linearly tapering radius of the segment p0→p1 (µm), in place."""
    ys, xs = y[:, 0], x[0, :]
    rmax = max(r0, r1)
    lo = np.minimum(p0, p1) - rmax
    hi = np.maximum(p0, p1) + rmax
    iy = slice(np.searchsorted(ys, lo[0]), np.searchsorted(ys, hi[0], side="right"))
    ix = slice(np.searchsorted(xs, lo[1]), np.searchsorted(xs, hi[1], side="right"))
    py, px = ys[iy][:, None], xs[ix][None, :]
    d = p1 - p0
    t = np.clip(((py - p0[0]) * d[0] + (px - p0[1]) * d[1]) / max(d @ d, 1e-12), 0.0, 1.0)
    dist = np.hypot(py - (p0[0] + t * d[0]), px - (p0[1] + t * d[1]))
    mask[iy, ix] |= dist <= r0 + (r1 - r0) * t


def _add_sinusoids(labels: np.ndarray, rng: np.random.Generator, dx_um: float,
                   area_fraction: float, spacing_um: float, half_extent_um: float) -> None:
    """Turn a connected network covering ``area_fraction`` of the marrow into ``SINUSOID``.

    Method: Voronoi cells of seeds on a jittered square grid of ``spacing_um``, in coordinates
    bent by a smooth random displacement. The one-voxel-wide, face-connected boundary between
    cells is the network's skeleton; it is widened by the marrow voxels closest to a cell edge
    until the target count is reached. Pieces that neither belong to the largest component nor
    reach bone are dropped and the loss made up by widening the rest, so in a diaphysis the
    network is essentially one face-connected component (trabeculae cut off a few more pieces,
    each ending on bone).

    Why this shape: marrow sinusoids form a dense anastomosing web at 30 ± 5% of marrow volume
    (Nombela-Arrieta 2013 Nat Cell Biol 15:533) that leaves nearly every cell within a few cell
    diameters of a vessel (85% of HSC within 10 µm, Acar 2015 Nature 526:126).

    Args:
        labels: the section, modified in place (``MARROW`` voxels may become ``SINUSOID``).
        rng: generator drawn from: seed jitter, then the displacement noise.
        dx_um: voxel edge (µm).
        area_fraction: target sinusoid share of marrow + sinusoid voxels.
        spacing_um: seed grid spacing (µm). At ``dx_um`` = 10 the thinnest face-connected
            network covers about 2.2·dx_um/spacing_um of the marrow, so 30% needs ≥ 75–80 µm.
        half_extent_um: half-width of the square the random layout covers, about the centre
            voxel (µm); the outer bone radius, independent of ``dx_um``.

    Raises:
        GeometryError: if even the skeleton exceeds the target by more than 0.03 (the spacing
            is too fine for this ``dx_um``).
    """
    frac = _fraction(area_fraction, "geometry.sinusoids.area_fraction")
    spacing = _positive(spacing_um, "geometry.sinusoids.spacing_um")
    area = labels == MARROW
    n_area = int(area.sum())
    n_target = int(round(frac * n_area))
    if n_target == 0:
        return
    ny, nx = labels.shape
    # Everything random is laid out in µm about the centre voxel, over a square of half-width
    # ``half_extent_um`` that does not depend on dx_um, so the draws (and the network) are the
    # same at any resolution.
    m = math.ceil(half_extent_um / spacing) + 1
    g = spacing * np.arange(-m, m + 1)
    sy, sx = np.meshgrid(g, g, indexing="ij")
    seeds = np.column_stack([sy.ravel(), sx.ravel()])
    seeds += rng.uniform(-_SEED_JITTER * spacing, _SEED_JITTER * spacing, seeds.shape)
    # Smooth displacement: white noise on a coarse grid (half the spacing), interpolated by
    # cubic splines to the voxel centres.
    coarse = spacing / 2
    mc = math.ceil(half_extent_um / coarse) + 2
    noise = rng.standard_normal((2, 2 * mc + 1, 2 * mc + 1))
    idx = np.flatnonzero(area)
    iy, ix = np.divmod(idx, nx)
    py = (iy - ny // 2) * dx_um
    px = (ix - nx // 2) * dx_um
    cy, cx = py / coarse + mc, px / coarse + mc
    warp = [ndimage.map_coordinates(noise[i], [cy, cx], order=3, mode="nearest")
            for i in range(2)]
    p = np.column_stack([py + _WARP_AMPLITUDE * spacing * warp[0],
                         px + _WARP_AMPLITUDE * spacing * warp[1]])
    k = min(8, len(seeds))
    tree = cKDTree(seeds)
    cell = np.full(labels.shape, -1, np.int64)
    edge_um = np.full(labels.shape, np.inf)
    # In chunks of voxels: the k-nearest arrays of a whole 10^6-voxel section are ~0.4 GB of
    # temporaries (twice the engine's state); each voxel's result does not depend on the chunk.
    for lo in range(0, len(p), _KD_CHUNK):
        sl = slice(lo, lo + _KD_CHUNK)
        dist, nearest = tree.query(p[sl], k=k)
        # Distance to the nearest cell edge: the bisector between seed a and seed j lies
        # (|p-j|² - |p-a|²) / (2|a-j|) from p; the closest of the k nearest seeds' bisectors.
        own = seeds[nearest[:, 0]]
        sep = np.linalg.norm(seeds[nearest[:, 1:]] - own[:, None, :], axis=2)
        edge = ((dist[:, 1:] ** 2 - dist[:, :1] ** 2) / (2 * sep)).min(axis=1)
        cell.ravel()[idx[sl]] = nearest[:, 0]
        edge_um.ravel()[idx[sl]] = edge

    net = _skeleton(cell, edge_um, area)
    n_skel = int(net.sum())
    if n_skel > n_target + 0.03 * n_area:
        need = spacing * (n_skel / n_area) / frac
        raise GeometryError(
            f"geometry.sinusoids.spacing_um = {spacing:g} µm is too fine for dx_um = {dx_um:g}: "
            f"the thinnest connected network already covers {n_skel / n_area:.2f} of the marrow, "
            f"above the target {frac:.2f}; use spacing_um ≥ {math.ceil(need / 5) * 5} "
            "or a smaller dx_um")
    extra = n_target - n_skel
    if extra > 0:
        cand = np.flatnonzero(area & ~net)
        order = np.argsort(edge_um.ravel()[cand], kind="stable")[:extra]
        net.ravel()[cand[order]] = True
    net = _anchored_pieces(net, labels == BONE)
    # Make up for dropped pieces by widening the network ring by ring (each added voxel touches
    # it, so no new piece appears), edge-closest voxels first.
    while (short := n_target - int(net.sum())) > 0:
        ring = ndimage.binary_dilation(net, _FACE) & area & ~net
        cand = np.flatnonzero(ring)
        if cand.size == 0:
            break
        order = np.argsort(edge_um.ravel()[cand], kind="stable")[:short]
        net.ravel()[cand[order]] = True
    labels[net] = SINUSOID


def _skeleton(cell: np.ndarray, edge_um: np.ndarray, area: np.ndarray) -> np.ndarray:
    """One-voxel-wide, face-connected boundary between the Voronoi cells inside ``area``."""
    net = np.zeros(area.shape, bool)
    for axis in (0, 1):
        a = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
        b = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
        differ = (cell[a] != cell[b]) & area[a] & area[b]
        first = edge_um[a] <= edge_um[b]     # mark whichever side lies nearer the true edge
        net[a] |= differ & first
        net[b] |= differ & ~first
    # A boundary marked on one side is only diagonally connected where it runs at 45°; fill
    # one corner of each such step so diffusion and contact see a continuous vessel.
    for _ in range(2):
        diag = net[:-1, :-1] & net[1:, 1:] & ~net[1:, :-1] & ~net[:-1, 1:]
        net[:-1, 1:] |= diag & area[:-1, 1:]
        net[1:, :-1] |= diag & ~area[:-1, 1:] & area[1:, :-1]
        anti = net[:-1, 1:] & net[1:, :-1] & ~net[:-1, :-1] & ~net[1:, 1:]
        net[:-1, :-1] |= anti & area[:-1, :-1]
        net[1:, 1:] |= anti & ~area[:-1, :-1] & area[1:, 1:]
    return net & area


def _anchored_pieces(net: np.ndarray, bone: np.ndarray) -> np.ndarray:
    """Keep the largest face-connected piece of ``net`` and every piece that touches bone.

    A piece ending on bone is a vessel that leaves the section plane through it (trans-cortical
    capillaries carry most of the long-bone circulation, Grüneboom 2019 Nat Metab 1:236); a piece
    floating free in marrow, cut off by a trabecula, has no supply in this section and is dropped.
    """
    comp, n = ndimage.label(net, structure=_FACE)
    if n <= 1:
        return net
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    keep = np.zeros(n + 1, bool)
    keep[int(np.argmax(sizes[1:])) + 1] = True
    keep[np.unique(comp[ndimage.binary_dilation(bone, _FACE) & net])] = True
    keep[0] = False
    return keep[comp]


# ----------------------------------------------------------------------------------------------
# Labelled images

def load_label_image(path: str | os.PathLike) -> np.ndarray:
    """Read a labelled section (0 marrow, 1 bone, 2 sinusoid) from PNG, TIFF or .npy.

    Greyscale, palette (the palette indices are the labels), 16-bit and grey-as-RGB(A) images are
    accepted; the alpha channel is ignored. Row 0 is the top of the picture.

    Args:
        path: the image file.

    Returns:
        int8 (ny, nx) labels.

    Raises:
        GeometryError: the file is missing, unreadable, of another format, colour (RGB with
            differing channels), not 2-D, has values outside {0, 1, 2}, or has no marrow voxel;
            the message names the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        raise GeometryError(f"{path}: JPEG is lossy and blurs label edges; save the labels as "
                            "PNG, TIFF or .npy")
    if suffix not in IMAGE_SUFFIXES:
        raise GeometryError(f"{path}: unsupported format {suffix or '(no suffix)'!r}; "
                            f"use one of {', '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        raise GeometryError(f"{path}: file not found")
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suffix == ".png":
            from PIL import Image
            with Image.open(path) as im:
                im.load()
                data = np.asarray(im)
        else:
            import tifffile
            data = tifffile.imread(path)
    except Exception as exc:  # any decoder failure is the user's file, not our bug
        raise GeometryError(f"{path}: cannot read it as {suffix[1:].upper()} "
                            f"({type(exc).__name__}: {exc})") from exc
    labels = _to_labels(np.asarray(data), path)
    if not (labels == MARROW).any():
        raise GeometryError(f"{path}: no marrow voxel (value 0); the simulation needs marrow")
    return labels


def _to_labels(data: np.ndarray, path: Path) -> np.ndarray:
    """Reduce a decoded image to 2-D labels, or say precisely why it is not one."""
    if path.suffix.lower() != ".png" and data.ndim == 3 and data.shape[0] == 1:
        data = data[0]                              # a single TIFF page stored as a stack
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        rgb = data[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1])
                and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise GeometryError(f"{path}: colour image (RGB channels differ); expected a "
                                "single-channel label image with 0 marrow, 1 bone, 2 sinusoid")
        data = rgb[..., 0]
    if data.ndim != 2:
        raise GeometryError(f"{path}: array of shape {data.shape} is not a 2-D label image")
    if data.size == 0:
        raise GeometryError(f"{path}: empty image")
    if data.dtype == bool:
        data = data.astype(np.int8)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise GeometryError(f"{path}: values of type {data.dtype} are not numeric labels")
    _check_values(data, str(path))
    return data.astype(np.int8)


def _check_values(data: np.ndarray, where: str) -> None:
    values = np.unique(data)
    bad = [v for v in values.tolist() if v not in (0, 1, 2)]
    if bad:
        shown = ", ".join(_show_value(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        raise GeometryError(f"{where}: values {{{shown}}} found; expected 0 marrow, 1 bone, "
                            "2 sinusoid")


def _show_value(v: float | int) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _check_labels(labels: np.ndarray, where: str) -> None:
    if labels.ndim != 2 or labels.size == 0:
        raise GeometryError(f"{where}: expected a non-empty 2-D array, got shape {labels.shape}")
    _check_values(labels, where)


def save_label_image(labels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write labels as an 8-bit greyscale PNG, TIFF or int8 .npy, atomically.

    Args:
        labels: (ny, nx) array with values in {0, 1, 2}.
        path: destination; the suffix picks the format.

    Returns:
        The path written.
    """
    path = Path(path)
    labels = np.asarray(labels)
    _check_labels(labels, str(path))
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise GeometryError(f"{path}: unsupported format {suffix!r}; use one of "
                            f"{', '.join(IMAGE_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix)
    os.close(fd)
    try:
        if suffix == ".npy":
            np.save(tmp, labels.astype(np.int8))
        elif suffix == ".png":
            from PIL import Image
            Image.fromarray(labels.astype(np.uint8), mode="L").save(tmp, optimize=True)
        else:
            import tifffile
            tifffile.imwrite(tmp, labels.astype(np.uint8), compression="zlib")
        os.chmod(tmp, 0o644)   # mkstemp makes it private; a label image is for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------------------------
# From the scenario

def build_geometry(geometry: Mapping, zones: Mapping, rng: np.random.Generator,
                   base_dir: Path) -> Geometry:
    """Build the section a scenario describes.

    Args:
        geometry: the resolved ``[geometry]`` table: ``generator``, ``dx_um``,
            ``marrow_radius_um``, ``cortex_thickness_um``, ``image_path`` (relative to
            ``base_dir``), ``sinusoids`` {``area_fraction``, ``spacing_um``} and ``trabeculae``
            {``count``, ``width_um``, ``length_um``}. Keys a generator does not use may be absent.
        zones: the ``[zones]`` table {``d_endo_um``, ``d_central_um``, ``d_vasc_um``} (µm).
        rng: the engine's "geometry" stream.
        base_dir: folder ``image_path`` is relative to.

    Raises:
        GeometryError: a missing or invalid value (named by its dotted key) or a bad image.
    """
    gen = _get(geometry, "generator", "geometry")
    if gen not in GENERATORS:
        raise GeometryError(f"geometry.generator = {gen!r} is not one of {', '.join(GENERATORS)}")
    dx_um = _positive(_get(geometry, "dx_um", "geometry"), "geometry.dx_um")
    zone_kw = {k: _get(zones, k, "zones") for k in ("d_endo_um", "d_central_um", "d_vasc_um")}
    if gen == "image":
        rel = _get(geometry, "image_path", "geometry")
        path = Path(base_dir) / rel
        labels = load_label_image(path)
        return Geometry.from_labels(labels, dx_um, **zone_kw, source=str(rel))
    sin = _get(geometry, "sinusoids", "geometry")
    common = dict(
        rng=rng, dx_um=dx_um,
        marrow_radius_um=_get(geometry, "marrow_radius_um", "geometry"),
        cortex_thickness_um=_get(geometry, "cortex_thickness_um", "geometry"),
        sinusoid_area_fraction=_get(sin, "area_fraction", "geometry.sinusoids"),
        sinusoid_spacing_um=_get(sin, "spacing_um", "geometry.sinusoids"),
    )
    if gen == "metaphysis":
        trab = _get(geometry, "trabeculae", "geometry")
        trabeculae = (_count(_get(trab, "count", "geometry.trabeculae"),
                             "geometry.trabeculae.count"),
                      _positive(_get(trab, "width_um", "geometry.trabeculae"),
                                "geometry.trabeculae.width_um"),
                      _positive(_get(trab, "length_um", "geometry.trabeculae"),
                                "geometry.trabeculae.length_um"))
    else:
        trabeculae = None
    labels, outside = _diaphysis(trabeculae=trabeculae, **common)
    return Geometry.from_labels(labels, dx_um, **zone_kw, outside=outside, source=gen)


# ----------------------------------------------------------------------------------------------
# Value checks (the scenario schema checks ranges first; these guard direct calls)

def _get(table: Any, key: str, prefix: str) -> Any:
    if not isinstance(table, Mapping):
        raise GeometryError(f"{prefix} must be a table, got {type(table).__name__}")
    if key not in table:
        raise GeometryError(f"{prefix}.{key} is missing")
    return table[key]


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise GeometryError(f"{key} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise GeometryError(f"{key} must be finite, got {value}")
    return value


def _positive(value: Any, key: str) -> float:
    value = _number(value, key)
    if value <= 0:
        raise GeometryError(f"{key} must be > 0, got {value:g}")
    return value


def _nonnegative(value: Any, key: str) -> float:
    value = _number(value, key)
    if value < 0:
        raise GeometryError(f"{key} must be ≥ 0, got {value:g}")
    return value


def _fraction(value: Any, key: str) -> float:
    value = _number(value, key)
    if not 0 <= value < 1:
        raise GeometryError(f"{key} must be in [0, 1), got {value:g}")
    return value


def _count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise GeometryError(f"{key} must be a whole number ≥ 0, got {value!r}")
    return int(value)


__all__ = [
    "MARROW", "BONE", "SINUSOID", "LABEL_NAMES", "ZONES", "REPORT_ZONES", "GENERATORS",
    "Geometry", "build_geometry", "femur_diaphysis", "metaphysis", "load_label_image",
    "save_label_image", "sinusoid_network_stats",
]
