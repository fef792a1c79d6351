"""Fuzz the scenario loader: it returns a Scenario or raises ScenarioError naming a file — nothing else."""

from __future__ import annotations

import datetime as dt
import math
import string
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from marrow_abm import schema
from marrow_abm.errors import ScenarioError
from marrow_abm.scenario import Scenario, load_scenario

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DEFAULT = load_scenario("default")

# Every key segment the schema knows, plus names used inside maps.
VALID_SEGMENTS = sorted({seg for pattern, _ in schema.describe_keys()
                         for seg in pattern.replace("[]", "").split(".") if "<" not in seg}
                        | {"tgfb", "opn", "mitogen"})


def _leaves(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*prefix, key))
    else:
        yield prefix


#: Concrete dotted paths of the default scenario's leaves.
LEAF_PATHS = [".".join(p) for p in _leaves(DEFAULT.data)]


def _mutate(word: str, data: st.DataObject) -> str:
    """A typo: drop, double or swap one character."""
    if not word:
        return word
    i = data.draw(st.integers(0, len(word) - 1))
    kind = data.draw(st.sampled_from(["drop", "double", "upper", "swap"]))
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    if kind == "upper":
        return word[:i] + word[i].upper() + word[i + 1:]
    return word[:i] + word[i + 1:i + 2] + word[i] + word[i + 2:]


keys = st.one_of(
    st.sampled_from(VALID_SEGMENTS),
    st.sampled_from(VALID_SEGMENTS).map(lambda s: s + "_x"),
    st.sampled_from(VALID_SEGMENTS).map(lambda s: s[:-1] or "x"),
    st.text(string.ascii_lowercase + "_", min_size=1, max_size=12),
    st.text(min_size=0, max_size=8),
)

scalars = st.one_of(
    st.integers(), st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1000),
    st.booleans(), st.text(max_size=20),
    st.sampled_from(["auto", "lod", "image", "femur_diaphysis", "float32", "", "default"]),
    st.datetimes(), st.datetimes(timezones=st.just(dt.timezone.utc)), st.dates(), st.times(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
documents = st.dictionaries(keys, values, max_size=8)

extends_targets = st.one_of(
    st.sampled_from(["default", "metaphysis", "image_example", "other.toml", "other", "main.toml",
                     "missing", "../nowhere.toml", "", "/", ".", "..", "sub/../other.toml"]),
    st.text(max_size=30), st.integers(), st.booleans(), st.lists(st.text(max_size=5), max_size=2),
)

override_strings = st.one_of(
    st.text(max_size=40),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(LEAF_PATHS), st.text(max_size=20)),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(LEAF_PATHS),
              st.sampled_from(["1", "-1", "0", "1.5", "nan", "inf", "true", "lod", "'x'", "[1, 2]",
                               "{a = 1}", "1979-05-27", "\"\"", "=", "1e400", "0x10", "1_000"])),
    st.builds(lambda k, v: f"{k}={v}", keys, st.text(max_size=10)),
)


def assert_loads_or_scenario_error(name_or_path: str, overrides=()) -> None:
    try:
        scenario = load_scenario(name_or_path, overrides)
    except ScenarioError as error:
        assert error.file, "a ScenarioError must name a file (or --set)"
        assert error.message
        text = str(error)
        assert text.startswith(error.file) and error.message in text
    else:
        assert isinstance(scenario, Scenario)
        assert len(scenario.digest()) == 64
        assert scenario.to_toml()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _write_doc(path: Path, doc: dict) -> None:
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):  # a value TOML cannot express (e.g. a time with a zone)
        assume(False)
    path.write_text(text, encoding="utf-8")


@FUZZ
@given(doc=documents, extends=st.one_of(st.none(), extends_targets),
       other=documents, other_extends=st.one_of(st.none(), extends_targets))
def test_random_documents_load_or_raise_scenario_error(fuzz_dir, doc, extends, other,
                                                       other_extends):
    if extends is not None:
        doc = {**doc, "extends": extends}
    if other_extends is not None:
        other = {**other, "extends": other_extends}
    _write_doc(fuzz_dir / "main.toml", doc)
    _write_doc(fuzz_dir / "other.toml", other)
    assert_loads_or_scenario_error(str(fuzz_dir / "main.toml"))


@FUZZ
@given(data=st.data())
def test_mutated_default_loads_or_raises_scenario_error(fuzz_dir, data):
    # Near-valid documents reach the deep checks that random documents rarely get past.
    doc = DEFAULT.to_dict()
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(LEAF_PATHS)).split(".")
        action = data.draw(st.sampled_from(["set", "delete", "rename", "add"]))
        parent = doc
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
            if not isinstance(parent, dict):
                break
        if not isinstance(parent, dict) or path[-1] not in parent:
            continue
        if action == "set":
            parent[path[-1]] = data.draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "rename":
            parent[_mutate(path[-1], data)] = parent.pop(path[-1])
        else:
            parent[data.draw(keys)] = data.draw(values)
    if data.draw(st.booleans()):
        doc["extends"] = data.draw(extends_targets)
    _write_doc(fuzz_dir / "mutated.toml", doc)
    assert_loads_or_scenario_error(str(fuzz_dir / "mutated.toml"))


@FUZZ
@given(text=st.one_of(st.text(max_size=200),
                      st.builds(lambda a, b: a + b, st.just('extends = "default"\n'),
                                st.text(alphabet="[]=.\"'\n abcdefgrun_0123456789", max_size=80))))
def test_random_text_files_load_or_raise_scenario_error(fuzz_dir, text):
    (fuzz_dir / "text.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_loads_or_scenario_error(str(fuzz_dir / "text.toml"))


@FUZZ
@given(overrides=st.lists(override_strings, max_size=3),
       name=st.one_of(st.sampled_from(["default", "metaphysis", "defualt"]), st.text(max_size=10)))
def test_random_overrides_load_or_raise_scenario_error(overrides, name):
    assert_loads_or_scenario_error(name, overrides)


# ---------------------------------------------------------------- valid overrides round-trip

def _valid_value(key: str) -> st.SearchStrategy:
    """Values the schema accepts at ``key`` that also satisfy the cross-key checks."""
    special = {
        "run.dt_h": st.sampled_from([0.25, 0.5, 1, 1.0, 2.0, 3, 6.0]),  # divide record_every_h = 6
        "run.record_every_h": st.integers(1, 1000),  # multiples of dt_h = 1
        "zones.d_endo_um": st.floats(0, 150, exclude_min=True),  # ≤ d_central_um = 150
        "zones.d_central_um": st.floats(50, 5000),  # ≥ d_endo_um = 50
        "geometry.generator": st.sampled_from(["femur_diaphysis", "metaphysis"]),
    }
    if key in special:
        return special[key]
    node = schema.schema_node_at(tuple(key.split(".")))
    assert isinstance(node, schema.Key), key
    if node.type == "float":
        return st.one_of(
            st.floats(node.min, node.max, exclude_min=node.min_open, exclude_max=node.max_open),
            st.integers(math.ceil(node.min) + node.min_open, math.floor(node.max)))
    if node.type == "int":
        return st.integers(int(node.min), int(node.max))
    if node.type == "choice":
        return st.sampled_from(node.choices)
    if node.type == "bool":
        return st.booleans()
    return st.text(max_size=30)


ROUND_TRIP_KEYS = [k for k in LEAF_PATHS if k != "geometry.image_path"]  # paths are re-anchored


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_valid_override_round_trips(data):
    key = data.draw(st.sampled_from(ROUND_TRIP_KEYS))
    value = data.draw(_valid_value(key))
    encoded = tomli_w.dumps({"v": value})[len("v = "):].rstrip("\n")
    if (isinstance(value, str) and value.isidentifier()
            and value not in ("true", "false", "inf", "nan") and data.draw(st.booleans())):
        encoded = value  # a bare word is taken as a string
    scenario = load_scenario("default", [f"{key}={encoded}"])
    got = scenario.get(key)
    assert got == value and type(got) is type(value) or (
        isinstance(value, int) and isinstance(got, float) and got == float(value))
