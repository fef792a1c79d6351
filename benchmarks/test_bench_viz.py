"""Tissue frame cost at 200×200 voxels with 10k cells (the issue's target: < 50 ms per frame).

Mesa's built-in space drawing takes 0.4–1.1 s per frame at this size (MESA_NOTES). Run with
``pytest benchmarks/test_bench_viz.py --benchmark-only``.
"""

import numpy as np
import pytest

from marrow_abm.cells import KINDS, CellTable
from marrow_abm.geometry import BONE, SINUSOID, Geometry
from marrow_abm.viz.render import PHASE_COLUMN, PLOIDY_COLUMN, TissueRenderer, encode_png

N = 200
N_CELLS = 10_000


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    labels = np.zeros((N, N), np.int8)
    labels[:6, :] = labels[-6:, :] = labels[:, :6] = labels[:, -6:] = BONE
    labels[:, ::9] = np.where(labels[:, ::9] == 0, SINUSOID, labels[:, ::9])
    geom = Geometry.from_labels(labels, 10.0, d_endo_um=50.0, d_central_um=150.0, d_vasc_um=20.0)
    cells = CellTable(labels.shape, capacity=N_CELLS)
    cells.add_column(PHASE_COLUMN, np.int8)
    cells.add_column(PLOIDY_COLUMN, np.int16, fill=2)
    marrow = np.flatnonzero(labels.ravel() == 0)
    vox = rng.choice(marrow, N_CELLS, replace=False)
    kinds = rng.choice(list(KINDS), N_CELLS)
    for kind in KINDS:
        sel = vox[kinds == kind]
        cells.add(kind, sel, **{PHASE_COLUMN: rng.integers(0, 3, sel.size).astype(np.int8),
                                PLOIDY_COLUMN: rng.choice([2, 4, 8, 16, 32, 64], sel.size)})
    field = rng.random(labels.shape)
    return TissueRenderer(geom), cells, field


def frame(renderer, cells, field):
    return encode_png(renderer.render(cells, field))


@pytest.mark.benchmark(group="viz-frame-200x200-10k")
def test_bench_tissue_frame_field(benchmark, scene):
    renderer, cells, field = scene
    png = benchmark(frame, renderer, cells, field)
    assert png[:4] == b"\x89PNG"
    assert benchmark.stats["median"] < 0.050  # the budget per frame


@pytest.mark.benchmark(group="viz-frame-200x200-10k")
def test_bench_tissue_frame_zones(benchmark, scene):
    renderer, cells, _ = scene
    png = benchmark(frame, renderer, cells, None)
    assert png[:4] == b"\x89PNG"
