"""Repeated intervention courses (``courses``, ``course_every_days``): induction then
consolidation, with the drug's PK carried across courses and the same checks as one window."""

import numpy as np
import pytest

from marrow_abm.biology import interventions as iv
from marrow_abm.errors import MarrowError
from marrow_abm.scenario import load_scenario


def _chemo(**extra):
    return {"start_day": 1.0, "stop_day": 3.0, "every_h": 24.0, "dose_mg_per_kg": 100.0,
            "half_life_h": 0.4, "volume_l_per_kg": 1.0, **extra}


def test_one_course_is_the_plain_window():
    assert iv.course_windows_h(_chemo()) == [(24.0, 72.0)]
    assert iv.course_windows_h(_chemo(courses=1, course_every_days=10.0)) == [(24.0, 72.0)]
    assert iv.dose_times_h(_chemo()) == [24.0, 48.0]


def test_courses_repeat_window_and_doses():
    item = _chemo(courses=3, course_every_days=7.0)
    assert iv.course_windows_h(item) == [(24.0, 72.0), (192.0, 240.0), (360.0, 408.0)]
    assert iv.dose_times_h(item) == [24.0, 48.0, 192.0, 216.0, 360.0, 384.0]
    data = {"interventions": {"chemo": item}}
    # active inside each course, start inclusive and stop exclusive, off between courses
    on = [t for t in range(24 * 20) if iv.active(data, "chemo", float(t)) is not None]
    expected = [t for a, b in ((24, 72), (192, 240), (360, 408)) for t in range(a, b)]
    assert on == expected
    # each course delivers its whole exposure: total AUC is 6 doses × D/V / k
    k = np.log(2) / 0.4
    auc = sum(iv.drug_step_mean_mg_per_l(data, "cytarabine", float(t), 1.0)
              for t in range(24 * 20))
    assert auc == pytest.approx(6 * 100.0 / k, rel=1e-6)


def test_inhibitor_courses_switch_on_and_off():
    data = {"interventions": {"opn_inhibition": {"start_day": 0.0, "stop_day": 1.0,
                                                 "inhibition": 0.5, "courses": 2,
                                                 "course_every_days": 2.0}}}
    assert [iv.strength(data, "opn_inhibition", 24.0 * d) for d in (0, 1, 2, 2.9, 3)] == \
        [0.5, 0.0, 0.5, 0.5, 0.0]


def test_bundled_chemo_is_induction_then_consolidation():
    sc = load_scenario("aml_chemo")
    times_d = [t / 24.0 for t in iv.dose_times_h(sc.data["interventions"]["chemo"])]
    assert times_d == [14, 15, 16, 17, 18, 28, 29, 30, 31, 32]
    assert [t / 24.0 for t in iv.dose_times_h(sc.data["interventions"]["doxorubicin"])] == \
        [14, 15, 16, 28, 29, 30]
    one = load_scenario("aml_chemo", ["interventions.chemo.courses=1"])
    assert len(iv.dose_times_h(one.data["interventions"]["chemo"])) == 5


def test_scenario_courses_need_an_interval_that_does_not_overlap(tmp_path):
    path = tmp_path / "two_courses.toml"
    path.write_text('extends = "aml_progression"\n[interventions.opn_inhibition]\n'
                    'start_day = 1.0\nstop_day = 3.0\ninhibition = 0.5\ncourses = 2\n')
    with pytest.raises(MarrowError, match="course_every_days") as err:
        load_scenario(str(path))
    assert "two_courses.toml" in str(err.value) and "interventions.opn_inhibition" in str(err.value)
    with pytest.raises(MarrowError, match="overlap"):
        load_scenario("aml_chemo", ["interventions.chemo.course_every_days=3"])
    with pytest.raises(MarrowError, match="courses"):
        load_scenario("aml_chemo", ["interventions.chemo.courses=0"])
