"""Scenario files: bundled scenarios, extends, --set overrides, validation errors, schema extension."""

from __future__ import annotations

import re
import shutil
import tomllib
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from marrow_abm import schema
from marrow_abm.errors import ScenarioError
from marrow_abm.scenario import (
    SCENARIO_DIRS, Scenario, list_scenarios, load_scenario, parse_override,
    resolve_scenario_path,
)

BUNDLED = SCENARIO_DIRS[0]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def label_image(path: Path) -> Path:
    """A tiny valid labelled section (0 marrow, 1 bone, 2 sinusoid) as .npy."""
    labels = np.ones((8, 8), dtype=np.uint8)
    labels[2:6, 2:6] = 0
    labels[3, 3] = 2
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, labels)
    return path


def raises_scenario_error(*args, **kwargs) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(*args, **kwargs)
    return info.value


# ---------------------------------------------------------------- bundled scenarios

def _required_keys(section: str | None = None):
    """Dotted patterns of required keys whose every enclosing table is required too, optionally
    only those under one top-level section (optional sections are checked where they appear)."""
    for pattern, node in schema.describe_keys():
        if not isinstance(node, schema.Key) or not node.required or "<" in pattern \
                or "[]" in pattern:
            continue
        parts = pattern.split(".")
        if section is not None and parts[0] != section:
            continue
        ancestors = [schema.schema_node_at(parts[:i]) for i in range(1, len(parts))]
        skip_from = 1 if section is not None else 0   # the section itself may be optional
        if all(getattr(a, "required", True) for a in ancestors[skip_from:]):
            yield pattern


def test_default_scenario_supplies_every_required_key_itself():
    # default.toml extends nothing, so loading it proves it holds every default.
    doc = tomllib.loads((BUNDLED / "default.toml").read_text(encoding="utf-8"))
    assert "extends" not in doc
    scenario = load_scenario("default")
    assert scenario.chain == (BUNDLED / "default.toml",)
    for pattern in _required_keys():
        if pattern.split(".")[0] != "cells":
            scenario.get(pattern)  # raises if absent


def test_bundled_scenarios_with_an_optional_section_supply_all_its_keys():
    """A topic's section (leukemia, megakaryocytes, pk, blood ...) is optional, but a scenario
    that has it must hold every required key inside it (from the topic's base file)."""
    optional = [name for name, node in schema.SCHEMA.entries.items()
                if not getattr(node, "required", True) and isinstance(node, schema.Table)]
    seen = set()
    for info in list_scenarios():
        scenario = load_scenario(info.name)
        for section in optional:
            if section in scenario.data:
                seen.add(section)
                for pattern in _required_keys(section):
                    scenario.get(pattern)
    assert seen, "no bundled scenario uses an optional section"


def test_default_scenario_has_the_issue_values():
    scenario = load_scenario("default")
    assert scenario.get("fields.tgfb.decay_per_h") == 2.5
    assert scenario.get("fields.opn.diffusion_um2_per_s") == 0.5
    assert scenario.get("cells.blc.secretion_per_h") == {"opn": 0.1}
    assert scenario.get("cells.msc.uptake_per_h") == {}
    assert scenario.get("geometry.generator") == "femur_diaphysis"
    assert scenario.get("run.seed") == 1 and isinstance(scenario.get("run.seed"), int)


def test_schema_keys_carry_no_default_values():
    names = {f.name for f in fields(schema.Key)}
    assert not names & {"default", "value"}


def test_list_scenarios_sorted_with_first_line_descriptions():
    infos = list_scenarios()
    names = [info.name for info in infos]
    assert names == sorted(names)
    assert {"default", "metaphysis", "image_example"} <= set(names)
    for info in infos:
        assert info.description and "\n" not in info.description
        assert info.path.parent == BUNDLED
    metaphysis = next(i for i in infos if i.name == "metaphysis")
    assert metaphysis.description.startswith("Mouse femur metaphysis")


def test_every_bundled_scenario_loads():
    for info in list_scenarios():
        if info.name == "image_example" and not (BUNDLED / "images" / "example_section.png").exists():
            continue  # the geometry part ships the image; its loading is tested with a tmp image
        scenario = load_scenario(info.name)
        assert scenario.description.splitlines()[0] == info.description


def test_bundled_metaphysis_extends_default_with_its_generator():
    scenario = load_scenario("metaphysis")
    assert [p.name for p in scenario.chain] == ["default.toml", "metaphysis.toml"]
    assert scenario.get("geometry.generator") == "metaphysis"
    assert scenario.get("geometry.dx_um") == 10.0  # inherited
    assert "extends" not in scenario.data
    listed = {info.name: info.description for info in list_scenarios()}
    assert scenario.description.splitlines()[0] == listed["metaphysis"]


def test_image_example_loads_when_its_image_exists(tmp_path):
    # Copy the bundled file next to a generated image, so the test does not depend on the
    # geometry engineer's example image; its bare `extends = "default"` still finds the bundle.
    from PIL import Image

    copy = tmp_path / "image_example.toml"
    shutil.copy(BUNDLED / "image_example.toml", copy)
    (tmp_path / "images").mkdir()
    Image.fromarray(np.load(label_image(tmp_path / "labels.npy"))).save(
        tmp_path / "images" / "example_section.png")
    scenario = load_scenario(str(copy))
    assert scenario.get("geometry.image_path") == "images/example_section.png"
    assert scenario.resolve_file("geometry.image_path") == (
        tmp_path / "images" / "example_section.png").resolve()


def test_override_image_path_is_relative_to_working_directory(tmp_path, monkeypatch):
    label_image(tmp_path / "mine.npy")
    monkeypatch.chdir(tmp_path)
    scenario = load_scenario("default", ["geometry.generator=image", "geometry.image_path=mine.npy"])
    assert scenario.resolve_file("geometry.image_path") == (tmp_path / "mine.npy").resolve()


def test_image_missing_names_file_key_and_nearest_image(tmp_path):
    label_image(tmp_path / "images" / "section_a.npy")
    scenario_file = write(tmp_path / "s.toml", 'extends = "default"\n[geometry]\n'
                          'generator = "image"\nimage_path = "images/section_b.npy"\n')
    error = raises_scenario_error(str(scenario_file))
    assert error.key == "geometry.image_path"
    assert error.file.endswith("s.toml")
    assert error.suggestion == "images/section_a.npy"
    assert "not found" in str(error)


def test_image_path_is_relative_to_the_file_that_set_it(tmp_path):
    label_image(tmp_path / "base" / "img" / "labels.npy")
    write(tmp_path / "base" / "base.toml", 'extends = "default"\n[geometry]\n'
          'generator = "image"\nimage_path = "img/labels.npy"\n')
    child = write(tmp_path / "studies" / "child.toml", 'extends = "../base/base.toml"\n'
                  'description = "child"\n')
    scenario = load_scenario(str(child))
    assert scenario.resolve_file("geometry.image_path") == (
        tmp_path / "base" / "img" / "labels.npy").resolve()


def test_image_with_unknown_suffix_is_rejected(tmp_path):
    write(tmp_path / "x.jpg", "not an image")
    error = raises_scenario_error("default", ["geometry.generator=image",
                                              f"geometry.image_path={tmp_path / 'x.jpg'}"])
    assert error.key == "geometry.image_path" and ".npy" in error.message


# ---------------------------------------------------------------- extends

def test_extends_deep_merges_tables_and_child_wins(tmp_path):
    path = write(tmp_path / "child.toml", 'extends = "default"\ndescription = "child"\n'
                 "[fields.tgfb]\ndecay_per_h = 1.25\n")
    scenario = load_scenario(str(path))
    assert scenario.get("fields.tgfb.decay_per_h") == 1.25
    assert scenario.get("fields.tgfb.diffusion_um2_per_s") == 10.0  # sibling kept
    assert scenario.get("fields.opn.decay_per_h") == 0.058  # other table kept
    assert scenario.description == "child"
    assert scenario.name == "child"


def test_extends_chain_of_relative_paths(tmp_path):
    write(tmp_path / "a.toml", 'extends = "default"\n[run]\ndays = 2\n')
    write(tmp_path / "sub" / "b.toml", 'extends = "../a.toml"\n[run]\nseed = 7\n')
    c = write(tmp_path / "sub" / "c.toml", 'extends = "b"\n[zones]\nd_vasc_um = 15\n')
    scenario = load_scenario(str(c))
    assert [p.name for p in scenario.chain] == ["default.toml", "a.toml", "b.toml", "c.toml"]
    assert (scenario.get("run.days"), scenario.get("run.seed"),
            scenario.get("zones.d_vasc_um")) == (2.0, 7, 15.0)


def test_extends_cycle_names_the_files(tmp_path):
    write(tmp_path / "a.toml", 'extends = "b.toml"\n')
    write(tmp_path / "b.toml", 'extends = "a.toml"\n')
    error = raises_scenario_error(str(tmp_path / "a.toml"))
    assert "cycle" in error.message and "a.toml" in error.message and "b.toml" in error.message
    assert error.key == "extends"


def test_extends_missing_target_suggests_nearest(tmp_path):
    path = write(tmp_path / "s.toml", 'extends = "defualt"\n')
    error = raises_scenario_error(str(path))
    assert (error.key, error.suggestion) == ("extends", "default")
    assert error.file.endswith("s.toml")


def test_extends_must_be_a_string(tmp_path):
    path = write(tmp_path / "s.toml", "extends = 3\n")
    assert raises_scenario_error(str(path)).key == "extends"


# ---------------------------------------------------------------- validation errors

def test_unknown_key_suggests_sibling(tmp_path):
    path = write(tmp_path / "s.toml", 'extends = "default"\n[fields.tgfb]\ndecay_per_hr = 2\n')
    error = raises_scenario_error(str(path))
    assert error.key == "fields.tgfb.decay_per_hr"
    assert error.suggestion == "fields.tgfb.decay_per_h"
    assert str(error).startswith(error.file)


def test_unknown_key_suggests_key_in_another_table(tmp_path):
    path = write(tmp_path / "s.toml", 'extends = "default"\n[run]\ndx_um = 5\n')
    assert raises_scenario_error(str(path)).suggestion == "geometry.dx_um"


def test_error_names_the_file_in_the_chain_that_set_the_key(tmp_path):
    write(tmp_path / "base.toml", 'extends = "default"\n[run]\ndt_h = "one"\n')
    child = write(tmp_path / "child.toml", 'extends = "base.toml"\n')
    error = raises_scenario_error(str(child))
    assert error.file.endswith("base.toml") and error.key == "run.dt_h"


def test_secretion_of_undeclared_field_is_rejected_with_suggestion(tmp_path):
    path = write(tmp_path / "s.toml", 'extends = "default"\n'
                 "[cells.msc.secretion_per_h]\ntgf = 1.0\n")
    error = raises_scenario_error(str(path))
    assert (error.key, error.suggestion) == ("cells.msc.secretion_per_h.tgf", "tgfb")


def test_new_field_can_be_declared_and_secreted(tmp_path):
    path = write(tmp_path / "s.toml", 'extends = "default"\n[fields.il6]\nlabel = "IL-6"\n'
                 "diffusion_um2_per_s = 20\ndecay_per_h = 1\nsinusoid_clearance_per_h = 0\n"
                 "initial = 0\n[cells.msc.secretion_per_h]\nil6 = 0.5\n")
    scenario = load_scenario(str(path))
    assert scenario.get("cells.msc.secretion_per_h.il6") == 0.5
    assert isinstance(scenario.get("fields.il6.decay_per_h"), float)


def test_unknown_cell_kind_suggests_registered_kind(tmp_path):
    path = write(tmp_path / "s.toml", 'extends = "default"\n[cells.bcl]\nfrac_bone_surface = 0.5\n')
    error = raises_scenario_error(str(path))
    assert (error.key, error.suggestion) == ("cells.bcl", "blc")


def test_bad_field_name_is_rejected(tmp_path):
    path = write(tmp_path / "s.toml", 'extends = "default"\n[fields."TGF b"]\nlabel = "x"\n')
    assert raises_scenario_error(str(path)).key == "fields.TGF b"


def test_missing_required_key_is_named(tmp_path):
    path = write(tmp_path / "s.toml", 'description = "alone"\n')
    error = raises_scenario_error(str(path))
    assert error.key == "run" and "missing" in error.message


@pytest.mark.parametrize("text, key, fragment", [
    ("run.dt_h=true", "run.dt_h", "boolean"),
    ("run.dt_h=nan", "run.dt_h", "finite"),
    ("run.days=inf", "run.days", "finite"),
    ("run.days=0", "run.days", "out of range"),
    ("run.days=4000", "run.days", "out of range"),
    ("run.seed=1.5", "run.seed", "integer"),
    ("run.seed=-1", "run.seed", "out of range"),
    ("geometry.trabeculae.count=true", "geometry.trabeculae.count", "boolean"),
    ("geometry.dx_um='10'", "geometry.dx_um", "string"),
    ("fields.tgfb.label=3", "fields.tgfb.label", "integer"),
    ("geometry.sinusoids=1", "geometry.sinusoids", "table"),
    ("fields=1", "fields", "table"),
    ("run.dt_h=1979-05-27", "run.dt_h", "date"),
])
def test_bad_values_are_rejected(text, key, fragment):
    error = raises_scenario_error("default", [text])
    assert error.key == key and error.file == "--set"
    assert fragment in error.message


def test_int_is_accepted_and_widened_where_a_float_is_expected():
    scenario = load_scenario("default", ["run.days=3"])
    assert scenario.get("run.days") == 3.0 and isinstance(scenario.get("run.days"), float)


def test_choice_error_suggests_nearest_value():
    error = raises_scenario_error("default", ["solver.method=lodd"])
    assert error.suggestion == "lod" and "backward_euler" in error.message


def test_record_interval_must_be_a_multiple_of_dt():
    error = raises_scenario_error("default", ["run.record_every_h=2.5"])
    assert error.key == "run.record_every_h" and "multiple of run.dt_h" in error.message
    assert load_scenario("default", ["run.dt_h=0.5", "run.record_every_h=2.5"])


def test_central_zone_must_not_start_inside_endosteal_zone():
    error = raises_scenario_error("default", ["zones.d_central_um=40"])
    assert error.key == "zones.d_central_um" and "d_endo_um" in error.message


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path / "broken.toml", "[run\ndays = 1\n")
    error = raises_scenario_error(str(path))
    assert error.file.endswith("broken.toml") and "TOML" in error.message


def test_non_utf8_file_is_a_scenario_error(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(b'description = "\xe9"\n')
    assert "UTF-8" in raises_scenario_error(str(path)).message


# ---------------------------------------------------------------- overrides

def test_override_sets_float_and_bare_word():
    scenario = load_scenario("default", ["fields.tgfb.decay_per_h=2.0", "solver.method=lod"])
    assert scenario.get("fields.tgfb.decay_per_h") == 2.0
    assert scenario.get("solver.method") == "lod"
    assert scenario.overrides == ("fields.tgfb.decay_per_h=2.0", "solver.method=lod")


def test_override_later_wins_and_inline_table_merges():
    scenario = load_scenario("default", ["run.days=2", "run.days=3",
                                         "fields.opn={decay_per_h=0.1}"])
    assert scenario.get("run.days") == 3.0
    assert scenario.get("fields.opn.decay_per_h") == 0.1
    assert scenario.get("fields.opn.label") == "OPN"


def test_override_unknown_key_suggests_nearest():
    error = raises_scenario_error("default", ["solver.methd=lod"])
    assert (error.file, error.key, error.suggestion) == ("--set", "solver.methd", "solver.method")


@pytest.mark.parametrize("text", ["nokey", "=3", "run..days=1", "extends=metaphysis",
                                  "run.days.x=1", "run.days=1 2", "cells.lsc.x=1"])
def test_malformed_overrides_are_scenario_errors(text):
    with pytest.raises(ScenarioError) as info:
        parse_override(text)
    assert info.value.file == "--set"


def test_override_changes_digest_and_digest_is_stable():
    a, b = load_scenario("default"), load_scenario("default")
    assert a.digest() == b.digest() and re.fullmatch(r"[0-9a-f]{64}", a.digest())
    assert load_scenario("default", ["run.seed=2"]).digest() != a.digest()
    # 3 and 3.0 are the same scenario once widened
    assert (load_scenario("default", ["run.days=3"]).digest()
            == load_scenario("default", ["run.days=3.0"]).digest())


# ---------------------------------------------------------------- Scenario object

def test_to_toml_round_trips_to_the_same_digest(tmp_path):
    scenario = load_scenario("metaphysis", ["fields.tgfb.decay_per_h=1.5"])
    path = write(tmp_path / "resolved.toml", scenario.to_toml())
    again = load_scenario(str(path))
    assert again.digest() == scenario.digest()
    assert again.to_dict() == scenario.to_dict()


def test_to_toml_writes_image_paths_absolute_so_it_loads_anywhere(tmp_path):
    label_image(tmp_path / "study" / "labels.npy")
    scenario_file = write(tmp_path / "study" / "s.toml", 'extends = "default"\n[geometry]\n'
                          'generator = "image"\nimage_path = "labels.npy"\n')
    scenario = load_scenario(str(scenario_file))
    assert scenario.get("geometry.image_path") == "labels.npy"
    copy = write(tmp_path / "outputs" / "s" / "scenario.toml", scenario.to_toml())
    again = load_scenario(str(copy))
    assert again.resolve_file("geometry.image_path") == scenario.resolve_file("geometry.image_path")


def test_get_unknown_key_raises_with_suggestion():
    with pytest.raises(ScenarioError) as info:
        load_scenario("default").get("fields.tgfb.decay")
    assert info.value.suggestion == "fields.tgfb.decay_per_h"


def test_to_dict_and_get_return_copies():
    scenario = load_scenario("default")
    scenario.to_dict()["run"]["days"] = 99.0
    scenario.get("run")["days"] = 99.0
    assert scenario.get("run.days") == 7.0
    assert isinstance(scenario, Scenario) and scenario.base_dir() == BUNDLED


def test_resolve_scenario_path_accepts_names_and_paths(tmp_path):
    assert resolve_scenario_path("default") == BUNDLED / "default.toml"
    path = write(tmp_path / "mine.toml", 'extends = "default"\n')
    assert resolve_scenario_path(str(path)) == path.resolve()
    assert resolve_scenario_path(str(tmp_path / "mine")) == path.resolve()
    with pytest.raises(ScenarioError) as info:
        resolve_scenario_path("metaphisis")
    assert info.value.suggestion == "metaphysis"


# ---------------------------------------------------------------- extending the schema

def test_registering_a_cell_kind_admits_it(tmp_path, monkeypatch):
    monkeypatch.setitem(schema.CELL_KINDS, "lsc", schema.cell_kind_table("Leukemia stem cells.", {
        "n_initial": schema.Key("int", "Initial LSC count.", min=0, max=10**6)}))
    path = write(tmp_path / "s.toml", 'extends = "default"\n[cells.lsc]\nn_initial = 50\n'
                 "[cells.lsc.secretion_per_h]\ntgfb = 0.2\n[cells.lsc.uptake_per_h]\n")
    assert load_scenario(str(path)).get("cells.lsc.secretion_per_h.tgfb") == 0.2
    assert load_scenario(str(path), ["cells.lsc.n_initial=60"]).get("cells.lsc.n_initial") == 60


def test_an_array_of_tables_needs_only_a_schema_entry(tmp_path, monkeypatch):
    rule = schema.Table("A rule.", {
        "signal": schema.Key("choice", "Signal.", choices=("opn", "tgfb")),
        "half_max": schema.Key("float", "Half-max.", min=0.0, min_open=True)})
    monkeypatch.setitem(schema.SCHEMA.entries, "probes",
                        schema.ArrayOf("Rules.", rule, required=False))
    path = write(tmp_path / "s.toml", 'extends = "default"\n[[probes]]\nsignal = "opn"\n'
                 "half_max = 1\n[[probes]]\nsignal = \"opm\"\nhalf_max = 2\n")
    error = raises_scenario_error(str(path))
    assert (error.key, error.suggestion) == ("probes[1].signal", "opn")
    path.write_text(path.read_text().replace('"opm"', '"tgfb"'))
    assert load_scenario(str(path)).get("probes")[1] == {"signal": "tgfb", "half_max": 2.0}
