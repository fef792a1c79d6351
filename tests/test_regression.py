"""Regression baseline: short seeded runs must reproduce stored records bit for bit.

The stored CSVs in ``tests/data/regression/`` were produced by the code before the performance
work of issue 7 (commit 00a032e) with ``python tests/test_regression.py --regenerate`` run on a
pristine checkout. Speed changes must not change any recorded metric: the comparison is exact
(``float_format='%.17g'`` round-trips every float64). If an algorithm is changed on purpose,
regenerate the data in the same change and say why in the commit message.

Cases are small enough for CI (a few simulated days on the default mouse section, a few
seconds each) and cover the AML model, the MDS base (megakaryocytes, blood, PK) and the
foundation scenario; records are taken every step so that every phase of every step leaves a
trace.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DATA = Path(__file__).parent / "data" / "regression"

#: name -> (scenario, overrides). Records every hour so a one-step divergence is caught.
CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "aml_progression": ("aml_progression", ("run.days=4", "run.record_every_h=1", "run.seed=7")),
    "healthy_steady_state": ("healthy_steady_state",
                             ("run.days=3", "run.record_every_h=1", "run.seed=7")),
    "default": ("default", ("run.days=3", "run.record_every_h=1", "run.seed=7")),
}


def run_case(name: str) -> pd.DataFrame:
    """Run one regression case with the current code and return its tidy records."""
    from marrow_abm.engine import Engine
    from marrow_abm.scenario import load_scenario

    scenario_name, overrides = CASES[name]
    eng = Engine(load_scenario(scenario_name, overrides))
    frame = eng.run()
    return frame.reset_index(drop=True)


def _path(name: str) -> Path:
    return DATA / f"{name}.csv"


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(_path(name))


@pytest.mark.parametrize("name", list(CASES))
def test_records_match_stored_baseline_exactly(name):
    expected = _read(name)
    got = run_case(name)
    # Same columns, in the same order, and the same rows.
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    # Round-trip through the CSV writer so that dtypes compare like with like.
    got = pd.read_csv(pd.io.common.StringIO(got.to_csv(index=False, float_format="%.17g")),
                      )
    for col in expected.columns:
        a, b = got[col].to_numpy(), expected[col].to_numpy()
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            a, b = a.astype(np.float64), b.astype(np.float64)
            same = (a == b) | (np.isnan(a) & np.isnan(b))
        else:
            same = a == b
        if not same.all():
            i = int(np.flatnonzero(~same)[0])
            row = expected.iloc[i]
            pytest.fail(f"{name}: column {col!r} differs first at t = {row['time_h']} h, "
                        f"zone {row['zone']}: got {a[i]!r}, stored {b[i]!r} "
                        f"({int((~same).sum())} of {len(same)} rows differ)")


def test_regression_comparison_can_fail(tmp_path):
    """The exact comparison notices a change in the last bit of one value."""
    expected = _read("default")
    col = next(c for c in expected.columns if expected[c].dtype.kind == "f"
               and np.isfinite(expected[c]).all() and (expected[c] != 0).any())
    changed = expected.copy()
    i = int(np.flatnonzero(changed[col].to_numpy() != 0)[0])
    changed.loc[i, col] = np.nextafter(changed.loc[i, col], np.inf)
    text = changed.to_csv(index=False, float_format="%.17g")
    back = pd.read_csv(pd.io.common.StringIO(text))
    assert (back[col].to_numpy() != expected[col].to_numpy()).sum() == 1


def regenerate() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for name in CASES:
        frame = run_case(name)
        frame.to_csv(_path(name), index=False, float_format="%.17g")
        print(f"{_path(name)}: {len(frame)} rows x {frame.shape[1]} columns")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/test_regression.py --regenerate")
    regenerate()
