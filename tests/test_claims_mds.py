"""Fast versions of claims M1–M5 and the generic targets (MODEL.md §9, seed 004).

One quick claims run (a 900 µm-radius section, 4 replicates per arm, 10 days; one-sided paired
t-tests at p < 0.05, equivalence by TOST within the stated margins; see
``marrow_abm/claims/mds.py``) is shared by the tests below; each asserts one claim. The full
version is ``python -m marrow_abm.claims --topic mds`` (docs/validation/mds.md).
"""

import numpy as np
import pytest

from marrow_abm.claims import mds


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("claims_mds")
    res = mds.run(out, quick=True, workers=2)
    return {r.id: r for r in res}, out


@pytest.mark.parametrize("claim", ["M1", "M2", "M3", "M4", "M5", "G1", "G2", "G3", "G4"])
def test_claim_mds_holds(results, claim):
    by_id, _ = results
    r = by_id[claim]
    assert r.passed, f"{claim} failed: {r.test}\n{r.statistics}"


def test_claims_mds_write_figures(results):
    by_id, out = results
    figs = [f for r in by_id.values() for f in r.figures]
    assert len(figs) >= 4 and all(f.exists() and f.stat().st_size > 1000 for f in figs)
    assert (out / "mds_arm_means.csv").exists()


def test_paired_statistics_can_fail():
    # the helpers must reject a null or reversed effect
    a = np.array([10.0, 11.0, 9.0, 10.5])
    assert mds.paired_greater(a, a + 1.0) == 1.0
    assert mds.paired_greater(a + np.array([0.3, -0.2, 0.1, -0.3]), a) > 0.05
    ok, lo, _ = mds.equivalent(a * 1.2, a, 0.10)
    assert not ok and lo > 0.1
