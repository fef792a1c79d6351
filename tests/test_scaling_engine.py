"""The engine's sparse reset of the secretion arrays (issue 7): zeroing only where cells
secreted last step gives the arrays, fields, cells and records a whole-lattice fill gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from marrow_abm.engine import Engine
from marrow_abm.errors import SolverError
from marrow_abm.scenario import load_scenario

SMALL = ["geometry.marrow_radius_um=200", "geometry.cortex_thickness_um=60",
         "run.record_every_h=1"]
#: field-wide interventions (written at every marrow voxel) switching on and off mid-run
WINDOWS = ["interventions.tgfb_neutralisation.start_day=0.25",
           "interventions.tgfb_neutralisation.stop_day=0.5",
           "interventions.tgfb_neutralisation.extra_decay_per_h=25.0",
           "interventions.tgfb_supplement.start_day=0.5",
           "interventions.tgfb_supplement.stop_day=0.75",
           "interventions.tgfb_supplement.source_per_h=3.0"]


@pytest.mark.parametrize("name, extra", [("aml_progression", WINDOWS),
                                         ("default", []), ("healthy_steady_state", []),
                                         ("mds_untreated", []), ("aml_chemo", [])])
def test_sparse_secretion_reset_is_bitwise_the_full_fill(name, extra):
    scen = load_scenario(name, SMALL + extra)
    sparse, full = Engine(scen), Engine(scen)
    everywhere = []
    for _ in range(24):
        full._secreted_at = None           # the whole-lattice fill and check, every step
        sparse.step()
        full.step()
        everywhere.append(sparse._secreted_at is None)
        for f in sparse.fields.names:
            np.testing.assert_array_equal(sparse.sources[f], full.sources[f])
            np.testing.assert_array_equal(sparse.uptakes[f], full.uptakes[f])
            np.testing.assert_array_equal(sparse.fields.values[f], full.fields.values[f])
        if sparse._secreted_at is not None:
            # every array is 0 outside the voxels the next step resets
            outside = np.ones(sparse.geometry.labels.size, bool)
            outside[sparse._secreted_at] = False
            for arr in (*sparse.sources.values(), *sparse.uptakes.values()):
                assert not arr.ravel()[outside].any()
    pd.testing.assert_frame_equal(sparse.records(), full.records(), check_exact=True)
    pd.testing.assert_frame_equal(sparse.cells.to_frame(), full.cells.to_frame(),
                                  check_exact=True)
    if extra:
        # the field-wide interventions made the next step reset everything, only while on
        assert any(everywhere) and not all(everywhere)


def test_fieldset_checks_the_listed_voxels():
    eng = Engine(load_scenario("default", SMALL))
    eng.step()
    vox = eng._secreted_at
    assert vox is not None and vox.size
    bad = {f: a.copy() for f, a in eng.sources.items()}
    bad["opn"].ravel()[vox[0]] = -1.0
    with pytest.raises(SolverError, match="finite and >= 0"):
        eng.fields.step(bad, eng.uptakes, nonzero_at=vox)
    nan = {f: a.copy() for f, a in eng.uptakes.items()}
    nan["tgfb"].ravel()[vox[-1]] = np.nan
    with pytest.raises(SolverError, match="finite and >= 0"):
        eng.fields.step(eng.sources, nan, nonzero_at=vox)
    # without the list every value is checked
    elsewhere = {f: a.copy() for f, a in eng.sources.items()}
    free = np.setdiff1d(np.arange(elsewhere["opn"].size), vox)[0]
    elsewhere["opn"].ravel()[free] = -1.0
    with pytest.raises(SolverError, match="finite and >= 0"):
        eng.fields.step(elsewhere, eng.uptakes)
