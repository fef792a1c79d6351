"""Fast versions of claims A1–A7 (MODEL.md section 9): a 250 µm-radius section, 10 days of
niche biology, 6 paired replicates (A7: both treatment arms split from one untreated leukemia
at the first treatment); the tests and thresholds are stated in each ClaimResult
(``marrow_abm.claims.aml``): one-sided Wilcoxon signed-rank p < 0.05 (smallest reachable p:
1/64 = 0.016 with 6 pairs), a label permutation test p < 0.01, monotone
dose-response. About 2.5–4 minutes on two loaded cores."""

import pytest

from marrow_abm.claims import aml


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("claims_aml")
    return {r.id: r for r in aml.run(out, quick=True, workers=2)}


# A7's last part (chemo + TGF-β1 neutralisation delays relapse) does not hold: the combination
# leaves ~4x fewer LSC (6/6 pairs, p = 0.016), but its survivors are the released, cycling ones,
# which regrow faster than the dormant survivors of chemotherapy alone; 1 of 6 pairs (2 of 8)
# relapses sooner (final leukemic count p = 0.11 with 6 pairs, 0.09 with 8). strict=True: the marker must go when it passes.
_OPEN = pytest.mark.xfail(strict=True, reason="relapse delay by the combination not reproduced: "
                          "fewer but cycling survivors regrow fast")


@pytest.mark.parametrize("claim", ["A1", "A2", "A3", "A4", "A5", "A6",
                                   pytest.param("A7", marks=_OPEN)])
def test_claim_holds_on_small_section(results, claim):
    r = results[claim]
    assert r.passed, f"{claim} failed: {r.test}; {r.statistics}"


def test_claims_write_their_figures(results):
    figs = [f for r in results.values() for f in r.figures]
    assert len(figs) >= 5 and all(f.exists() and f.stat().st_size > 1000 for f in figs)


def test_fork_continues_exactly_like_the_original(tmp_path):
    from marrow_abm.engine import Engine
    from marrow_abm.scenario import load_scenario

    small = ["geometry.marrow_radius_um=150", "geometry.cortex_thickness_um=40",
             "run.record_every_h=12"]
    direct = Engine(load_scenario("aml_progression", small))
    direct.run(2.0)
    eng = Engine(load_scenario("aml_progression", small))
    eng.run(1.0)
    copy = aml.fork(eng, load_scenario("aml_progression", small))
    copy.run(1.0)
    eng.run(0.5)   # the original goes on by itself; the copy must not see it
    a, b = direct.records(), copy.records()
    assert len(b) > 0 and a.equals(b)
    assert len(eng.records()) < len(a)


def test_run_applies_extra_overrides_to_every_scenario_after_the_plan(tmp_path, monkeypatch):
    from marrow_abm.scenario import load_scenario

    class Stop(Exception):
        pass

    jobs = []

    def capture(js, workers):
        jobs.extend(js)
        raise Stop   # only the scenarios matter here, not the simulations

    monkeypatch.setattr(aml, "_run_many", capture)
    extra = ("zones.d_endo_um=30", "geometry.marrow_radius_um=350", "run.seed=3")
    with pytest.raises(Stop):
        aml.run(tmp_path, quick=True, overrides=extra)
    loaded = []
    for job in jobs:
        if job[0] == "arms":
            _, base, arms, ov, *_ = job
            loaded.append(load_scenario(base, list(ov)))
            loaded += [load_scenario(name, list(ov + own)) for name, own in arms]
            # the arms' own interventions still apply on top
            assert load_scenario(arms[0][0], list(ov + arms[0][1])).data["interventions"][
                "chemo"]["start_day"] == aml.QUICK.chemo_start_day
        else:
            loaded.append(load_scenario(job[0], list(job[1])))
    assert len(loaded) > 30
    for sc in loaded:
        # the plan's own marrow_radius_um=250 is overridden; its other keys stay
        assert sc.data["zones"]["d_endo_um"] == 30 and sc.data["run"]["seed"] == 3
        assert sc.data["geometry"]["marrow_radius_um"] == 350
        assert sc.data["geometry"]["cortex_thickness_um"] == 60


def test_cli_claims_forwards_set_and_seed(tmp_path, monkeypatch):
    from marrow_abm import claims
    from marrow_abm.cli import main

    seen = {}

    def fake(out_dir, **kw):
        seen.update(kw)
        return {}

    monkeypatch.setattr(claims, "run_claims", fake)
    assert main(["claims", "--out", str(tmp_path), "--quick", "--topic", "aml",
                 "--set", "zones.d_endo_um=30", "--seed", "2"]) == 0
    assert seen["overrides"] == ["zones.d_endo_um=30", "run.seed=2"] and seen["only"] == ["aml"]
