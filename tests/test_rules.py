"""Rules grammar: parsing (scenario and PhysiCell v3 CSV), vocabulary errors, Hill evaluation."""

import numpy as np
import pytest

import marrow_abm.schemas.aml  # noqa: F401  (registers the AML vocabulary)
from marrow_abm import rules as R
from marrow_abm.errors import ScenarioError
from marrow_abm.kernels.hill import hill_behaviour, hill_behaviour_ref
from marrow_abm.scenario import load_scenario


def _rule(**kw):
    base = dict(kind="lsc", signal="bound", direction="increases", behaviour="g0_entry_per_h",
                max_response=0.3, half_max=0.5, hill_power=4.0)
    base.update(kw)
    return R.Rule(**base)


def _check(*rules):
    R.check_rules([(r, "f.toml", f"rules[{i}]") for i, r in enumerate(rules)], ["tgfb", "opn"])


def test_hill_kernel_matches_numpy_twin():
    rng = np.random.default_rng(3)
    n = 37
    base = rng.random(n)
    up, dn = rng.random((2, n)) * 2 - 0.2, rng.random((3, n)) * 3
    args = (base, up, np.array([0.5, 1.0]), np.array([1.0, 3.0]), 2.0,
            dn, np.array([0.2, 1.0, 2.0]), np.array([2.0, 1.0, 0.5]), 0.1)
    a, b = np.empty(n), np.empty(n)
    hill_behaviour(*args, a)
    hill_behaviour_ref(*args, b)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_hill_single_rule_gives_half_response_at_half_max():
    rs = R.RuleSet([_rule()], {"lsc": {"g0_entry_per_h": 0.01}})
    out = rs.evaluate("lsc", "g0_entry_per_h", {"bound": np.array([0.0, 0.5, 100.0])}, 3)
    np.testing.assert_allclose(out, [0.01, 0.01 + 0.5 * 0.29, 0.3], rtol=1e-6)


def test_hill_decreasing_rule_moves_towards_its_minimum():
    rs = R.RuleSet([_rule(direction="decreases", behaviour="g0_exit_per_h", max_response=0.002)],
                   {"lsc": {"g0_exit_per_h": 0.04}})
    out = rs.evaluate("lsc", "g0_exit_per_h", {"bound": np.array([0.0, 1e6])}, 2)
    np.testing.assert_allclose(out, [0.04, 0.002], rtol=1e-6)


def test_dead_cells_ignore_rules_unless_applies_to_dead():
    rs = R.RuleSet([_rule()], {"lsc": {"g0_entry_per_h": 0.01}})
    out = rs.evaluate("lsc", "g0_entry_per_h", {"bound": np.array([1.0, 1.0])}, 2,
                      alive=np.array([True, False]))
    assert out[0] > 0.2 and out[1] == pytest.approx(0.01)


def test_unknown_signal_is_an_error_with_suggestion():
    with pytest.raises(ScenarioError) as exc:
        _check(_rule(signal="contact_bl"))
    assert exc.value.suggestion == "contact_blc" and exc.value.key == "rules[0]"


def test_unknown_behaviour_and_kind_are_errors_with_suggestions():
    with pytest.raises(ScenarioError) as exc:
        _check(_rule(behaviour="g0_entry"))
    assert exc.value.suggestion == "g0_entry_per_h"
    with pytest.raises(ScenarioError) as exc:
        _check(_rule(kind="lcs"))
    assert exc.value.suggestion == "lsc"


def test_signal_of_another_kind_is_rejected():
    with pytest.raises(ScenarioError, match="unknown signal 'psmad'"):
        _check(_rule(signal="psmad"))


def test_fields_are_signals():
    _check(_rule(signal="opn"))


def test_conflicting_max_responses_are_an_error():
    with pytest.raises(ScenarioError, match="same max response"):
        _check(_rule(), _rule(signal="opn", max_response=0.5))


def test_csv_rules_parse_and_describe(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("cell_type,signal,direction,behavior,saturation,half_max,hill_power,"
                    "apply_to_dead\n// comment\nlsc,opn,increases,adhesion_per_h,1,0.3,2,0\n")
    (rule,) = R.parse_rules_csv(path)
    assert rule.behaviour == "adhesion_per_h" and rule.half_max == 0.3
    text = R.describe(rule, base=0.05)
    assert text.startswith("In lsc cells, opn increases adhesion_per_h from 0.05 1/h up to 1")


def test_csv_v2_file_is_rejected_with_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("lsc,opn,increases,adhesion_per_h,0.05,1,0.3,2,0\n")
    with pytest.raises(ScenarioError) as exc:
        R.parse_rules_csv(path)
    assert exc.value.key == "line 1" and "v2" in exc.value.message


def test_scenario_rules_from_csv_and_typo_fails_at_load(tmp_path):
    csv = tmp_path / "extra.csv"
    csv.write_text("lsc,opn,increases,chemotaxis_opn,0.8,0.1,1,0\n")
    sc = tmp_path / "s.toml"
    sc.write_text('description = "x"\nextends = "aml_progression"\nrules_csv = ["extra.csv"]\n')
    rs = R.scenario_rules(load_scenario(str(sc)))
    assert any(r.origin == "extra.csv:1" for r in rs.rules)
    csv.write_text("lsc,opn,increases,chemotaxis,0.8,0.1,1,0\n")
    with pytest.raises(ScenarioError) as exc:
        load_scenario(str(sc))
    assert exc.value.suggestion == "chemotaxis_opn" and exc.value.key == "line 1"


def test_every_bundled_rule_reads_back_in_english():
    rs = R.scenario_rules(load_scenario("aml_progression"))
    lines = rs.describe()
    assert len(lines) == len(rs.rules) > 10
    assert all(line.startswith("In ") and "Hill response" in line for line in lines)
