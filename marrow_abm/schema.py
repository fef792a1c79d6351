"""What a valid scenario is: every dotted key with its type, unit, range and meaning — no defaults.

The schema is a tree of nodes. ``Table`` holds fixed keys, ``Map`` holds keys that are names
(``fields.<field>``, ``cells.<kind>``, ``cells.<kind>.secretion_per_h.<field>``), ``ArrayOf``
holds TOML arrays of tables, and ``Key`` is a leaf. Each node validates its own part of a
resolved scenario and returns the normalised value (ints widened to float where a float is
expected, relative paths re-anchored), so later issues add cell kinds (``register_cell_kind``),
rules, drugs, interventions or a ``[sweep]`` table by adding nodes, never by changing the loader
(``marrow_abm.scenario``). Cross-key constraints live in ``CHECKS``.

Every default value lives in ``scenarios/default.toml`` with its source; this module only says
what is allowed. ``python -m marrow_abm.schema > docs/scenarios.md`` regenerates the reference.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from marrow_abm.errors import ScenarioError

__all__ = [
    "ArrayOf", "CELL_KINDS", "CHECKS", "Context", "Key", "Map", "Node", "SCHEMA",
    "SweepTable", "Table", "UNSWEEPABLE", "describe_keys", "flatten_sweep", "register_cell_kind",
    "register_section",
    "schema_markdown", "schema_node_at",
]

#: Names chosen by the user (fields, cell kinds) become column names and identifiers.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
#: Image formats the geometry module can decode (MODEL.md §2: PNG/TIFF/NumPy labels).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
_INT64_MAX = 2**63 - 1

Path_ = tuple[str | int, ...]


def dotted(path: Path_) -> str:
    """Join a key path into its dotted form (``("fields", "tgfb")`` -> ``"fields.tgfb"``)."""
    return ".".join(f"[{p}]" if isinstance(p, int) else p for p in path).replace(".[", "[")


def nearest(word: str, candidates: Iterator[str] | list[str], cutoff: float = 0.6) -> str | None:
    """Return the candidate closest to ``word`` (difflib ratio), or None if none is close."""
    found = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=cutoff)
    return found[0] if found else None


def type_name(value: Any) -> str:
    """Name a TOML value's type the way a scenario author would read it."""
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((int, "integer"), (float, "float"), (str, "string"), (dict, "table"),
                       (list, "array"), (datetime, "datetime"), (date, "date"), (time, "time")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _num(x: float) -> str:
    """A bound as people write it: 3650, 0.01, 2^63 - 1 (not 9.22337e+18)."""
    if x == _INT64_MAX:
        return "2^63 - 1"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:g}"


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Context:
    """What nodes need besides the value: the whole scenario and where each key came from.

    Args:
        root: the merged scenario before normalisation (for keys named by other keys).
        source_of: the file (or ``"--set"``) that set a key path, for error messages.
        dir_of: the folder a relative path set at a key path is relative to.
        base_dir: the folder of the scenario file; normalised paths are relative to it.
    """

    root: dict
    source_of: Callable[[Path_], str]
    dir_of: Callable[[Path_], Path]
    base_dir: Path

    def error(self, path: Path_, message: str, suggestion: str | None = None) -> ScenarioError:
        """Build the ScenarioError for a problem at ``path``."""
        return ScenarioError(message, file=self.source_of(path), key=dotted(path) or None,
                             suggestion=suggestion)

    def lookup(self, path: Path_) -> Any:
        """Value at a key path in the merged scenario, or None if absent."""
        node: Any = self.root
        for part in path:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


class Node:
    """Base of every schema node; ``required`` says whether a resolved scenario must set it.

    Subclasses are frozen dataclasses declaring ``description: str`` and ``required: bool``.
    """

    description: str
    required: bool

    def validate(self, value: Any, path: Path_, ctx: Context) -> Any:
        """Check ``value`` at ``path`` and return it normalised; raise ScenarioError otherwise."""
        raise NotImplementedError

    def child(self, name: str) -> Node | None:
        """Schema of the child key ``name`` (None if there is no such key)."""
        return None

    def walk(self, prefix: str) -> Iterator[tuple[str, Node]]:
        """Yield (dotted pattern, node) for this node and everything under it."""
        yield prefix, self


@dataclass(frozen=True)
class Key(Node):
    """A leaf value.

    Args:
        type: ``float``, ``int``, ``str``, ``bool``, ``choice``, ``path`` or ``list``.
        description: one line, with source and confidence where relevant.
        unit: the unit (also carried by the key's name), "" if dimensionless.
        min, max: allowed range (floats and ints); ``min_open``/``max_open`` make it strict.
        choices: allowed strings for ``choice``.
        item: schema of each element for ``list``.
        required: whether a resolved scenario must set it.
    """

    type: str
    description: str
    unit: str = ""
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    choices: tuple[str, ...] = ()
    item: Key | None = None
    required: bool = True

    def validate(self, value: Any, path: Path_, ctx: Context) -> Any:
        if isinstance(value, dict):
            raise ctx.error(path, f"expected {self._kind()} here, got a table")
        checker = getattr(self, f"_check_{self.type}")
        return checker(value, path, ctx)

    def _kind(self) -> str:
        return {"float": "a number", "int": "an integer", "str": "a string", "bool": "a boolean",
                "choice": "a string", "path": "a file path (string)", "list": "an array"}[self.type]

    def _wrong_type(self, value: Any, path: Path_, ctx: Context) -> ScenarioError:
        suggestion = None
        if isinstance(value, str) and self.type in ("float", "int"):
            try:  # a quoted number: show it unquoted
                number = float(value) if self.type == "float" else int(value)
                suggestion = f"{dotted(path)} = {number}"
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self.type in (
                "str", "choice", "path"):
            suggestion = f'{dotted(path)} = "{value}"'
        return ctx.error(path, f"expected {self._kind()}, got {type_name(value)} {_show(value)}",
                         suggestion)

    def _check_range(self, number: float, path: Path_, ctx: Context) -> None:
        low_bad = self.min is not None and (number < self.min or (self.min_open and number == self.min))
        high_bad = self.max is not None and (number > self.max or (self.max_open and number == self.max))
        if low_bad or high_bad:
            suggestion = None
            if low_bad and not self.min_open:
                suggestion = f"{dotted(path)} = {self.min:g}"
            elif high_bad and not self.max_open:
                suggestion = f"{dotted(path)} = {self.max:g}"
            raise ctx.error(path, f"{_show(number)} is out of range: must be {self.range_text()}",
                            suggestion)

    def _check_float(self, value: Any, path: Path_, ctx: Context) -> float:
        # bool is an int subclass in Python: never let `true` pass as 1.0
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._wrong_type(value, path, ctx)
        try:
            number = float(value)
        except OverflowError:
            raise ctx.error(path, f"{value} is too large for a float; must be {self.range_text()}")
        if not math.isfinite(number):
            raise ctx.error(path, f"{value} is not a finite number; must be {self.range_text()}")
        self._check_range(number, path, ctx)
        return number

    def _check_int(self, value: Any, path: Path_, ctx: Context) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            suggestion = None
            if isinstance(value, float) and math.isfinite(value) and value == int(value):
                suggestion = f"{dotted(path)} = {int(value)}"
            if suggestion:
                raise ctx.error(path, f"expected an integer, got float {value}", suggestion)
            raise self._wrong_type(value, path, ctx)
        self._check_range(value, path, ctx)
        return value

    def _check_str(self, value: Any, path: Path_, ctx: Context) -> str:
        if not isinstance(value, str):
            raise self._wrong_type(value, path, ctx)
        return value

    def _check_bool(self, value: Any, path: Path_, ctx: Context) -> bool:
        if not isinstance(value, bool):
            raise self._wrong_type(value, path, ctx)
        return value

    def _check_choice(self, value: Any, path: Path_, ctx: Context) -> str:
        if not isinstance(value, str):
            raise self._wrong_type(value, path, ctx)
        if value not in self.choices:
            raise ctx.error(path, f"{value!r} is not one of: {', '.join(self.choices)}",
                            nearest(value, self.choices, cutoff=0.4))
        return value

    def _check_path(self, value: Any, path: Path_, ctx: Context) -> str:
        """A path is relative to the file that set it; store it relative to the scenario's folder."""
        if not isinstance(value, str):
            raise self._wrong_type(value, path, ctx)
        if value == "":
            return value
        if "\x00" in value:
            raise ctx.error(path, "a file path cannot contain a NUL character")
        target = Path(value)
        if not target.is_absolute():
            target = ctx.dir_of(path) / target
        target = Path(os.path.normpath(target))
        # Inside the scenario's folder a relative path keeps the resolved scenario (and its
        # digest) independent of where the project is checked out; elsewhere, be explicit.
        if target.is_relative_to(Path(os.path.normpath(ctx.base_dir))):
            return target.relative_to(os.path.normpath(ctx.base_dir)).as_posix()
        return target.as_posix()

    def _check_list(self, value: Any, path: Path_, ctx: Context) -> list:
        if not isinstance(value, list):
            raise self._wrong_type(value, path, ctx)
        assert self.item is not None, "a list Key needs an item schema"
        return [self.item.validate(v, (*path, i), ctx) for i, v in enumerate(value)]

    def type_text(self) -> str:
        """Type as shown in the docs."""
        if self.type == "list" and self.item is not None:
            return f"array of {self.item.type_text()}"
        return {"choice": "string", "str": "string", "path": "path (string)",
                "bool": "boolean", "int": "integer"}.get(self.type, self.type)

    def range_text(self) -> str:
        """Allowed values as shown in docs and errors (e.g. ``> 0, ≤ 3650``)."""
        if self.type == "choice":
            return " | ".join(self.choices)
        if self.type == "list" and self.item is not None:
            return self.item.range_text()
        if self.min is not None and self.max is not None and not self.min_open and not self.max_open:
            return f"{_num(self.min)} – {_num(self.max)}"
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_open else '≥'} {_num(self.min)}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '≤'} {_num(self.max)}")
        if self.type in ("float",) and not parts:
            return "finite"
        return ", ".join(parts)


@dataclass(frozen=True)
class Table(Node):
    """A TOML table with fixed keys; an unknown key is an error with the nearest valid key."""

    description: str
    entries: Mapping[str, Node]
    required: bool = True

    def child(self, name: str) -> Node | None:
        return self.entries.get(name)

    def walk(self, prefix: str) -> Iterator[tuple[str, Node]]:
        yield prefix, self
        for name, node in self.entries.items():
            yield from node.walk(f"{prefix}.{name}" if prefix else name)

    def validate(self, value: Any, path: Path_, ctx: Context) -> dict:
        if not isinstance(value, dict):
            raise ctx.error(path, f"expected a table, got {type_name(value)} {_show(value)}",
                            f"[{dotted(path)}]" if path else None)
        out = {}
        for name, item in value.items():
            node = self.entries.get(name)
            if node is None:
                raise ctx.error((*path, name), "unknown key", suggest_key(self, path, name))
            out[name] = node.validate(item, (*path, name), ctx)
        for name, node in self.entries.items():
            if node.required and name not in value:
                raise ctx.error((*path, name), "required key is missing (no file in the extends "
                                "chain sets it; scenarios/default.toml holds every default)")
        return out


@dataclass(frozen=True)
class Map(Node):
    """A table whose keys are names, e.g. ``fields.<field>`` or ``cells.<kind>``.

    Args:
        description: one line.
        placeholder: how a name is shown in the docs (``<field>``).
        item: schema of every entry (ignored for names listed in ``registry``).
        registry: per-name schemas; when given, only these names are allowed. The dict is
            shared, so ``register_cell_kind`` can extend it after import.
        names_from: dotted key of a table whose keys are the only allowed names
            (``"fields"``: secretion and uptake maps may only name declared fields).
        required: whether a resolved scenario must have this table.
    """

    description: str
    placeholder: str
    item: Node | None = None
    registry: Mapping[str, Node] | None = None
    names_from: str | None = None
    required: bool = True

    def child(self, name: str) -> Node | None:
        if self.registry is not None:
            return self.registry.get(name)
        return self.item

    def allowed_names(self, ctx: Context) -> list[str] | None:
        """The names allowed here, or None if any well-formed name is."""
        if self.registry is not None:
            return list(self.registry)
        if self.names_from is not None:
            table = ctx.lookup(tuple(self.names_from.split(".")))
            return list(table) if isinstance(table, dict) else []
        return None

    def walk(self, prefix: str) -> Iterator[tuple[str, Node]]:
        yield prefix, self
        if self.registry is not None:
            for name, node in self.registry.items():
                yield from node.walk(f"{prefix}.{name}")
        elif self.item is not None:
            yield from self.item.walk(f"{prefix}.{self.placeholder}")

    def validate(self, value: Any, path: Path_, ctx: Context) -> dict:
        if not isinstance(value, dict):
            raise ctx.error(path, f"expected a table, got {type_name(value)} {_show(value)}",
                            f"[{dotted(path)}]")
        allowed = self.allowed_names(ctx)
        out = {}
        for name, item in value.items():
            if allowed is not None and name not in allowed:
                what = (f"unknown {self.placeholder.strip('<>')} {name!r}; declared: "
                        f"{', '.join(allowed) or 'none'}")
                if self.names_from:
                    what += f" (declare it under [{self.names_from}.{name}] first)"
                raise ctx.error((*path, name), what, nearest(name, allowed, cutoff=0.4))
            if not NAME_PATTERN.match(name):
                raise ctx.error((*path, name), f"name {name!r} must be lower case letters, digits "
                                "and underscores, starting with a letter",
                                re.sub(r"[^a-z0-9_]", "_", name.lower()).lstrip("0123456789_") or None)
            node = self.child(name)
            assert node is not None
            out[name] = node.validate(item, (*path, name), ctx)
        return out


@dataclass(frozen=True)
class ArrayOf(Node):
    """A TOML array of tables (``[[rules]]``), each validated by ``item``; arrays replace, not merge."""

    description: str
    item: Node
    required: bool = True

    def child(self, name: str) -> Node | None:
        return None  # an array is set whole (`--set rules=[...]`), never element by element

    def walk(self, prefix: str) -> Iterator[tuple[str, Node]]:
        yield prefix, self
        yield from self.item.walk(f"{prefix}[]")

    def validate(self, value: Any, path: Path_, ctx: Context) -> list:
        if not isinstance(value, list):
            raise ctx.error(path, f"expected an array of tables, got {type_name(value)}",
                            f"[[{dotted(path)}]]")
        return [self.item.validate(v, (*path, i), ctx) for i, v in enumerate(value)]


#: Keys a sweep may not vary: the seed is the replicate axis (``--replicates``), the others are
#: not parameters.
UNSWEEPABLE = ("run.seed", "description", "extends")


def flatten_sweep(value: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Flatten a ``[sweep]`` table to {key path: values}.

    TOML reads ``zones.d_endo_um = [...]`` inside ``[sweep]`` as nested tables and
    ``"zones.d_endo_um" = [...]`` as one quoted key; both mean the same dotted key.
    """
    out: dict[tuple[str, ...], Any] = {}
    for name, item in value.items():
        here = (*prefix, *str(name).split("."))
        if isinstance(item, dict):
            out.update(flatten_sweep(item, here))
        else:
            out[here] = item
    return out


@dataclass(frozen=True)
class SweepTable(Map):
    """``[sweep]``: dotted scenario keys, each with an array of values; a batch runs the
    cartesian product of the arrays (``marrow_abm.batch``).

    Each key must name a single value of the resolved scenario (not a table) and each value
    must be valid for that key. The normalised form is flat: ``{"zones.d_endo_um": [30.0,
    50.0]}``, so the digest does not depend on how the file spelled the keys.
    """

    def child(self, name: str) -> Node | None:
        return None  # swept keys are set with --sweep KEY=v1,v2, not --set

    def walk(self, prefix: str) -> Iterator[tuple[str, Node]]:
        yield prefix, self

    def validate(self, value: Any, path: Path_, ctx: Context) -> dict:
        if not isinstance(value, dict):
            raise ctx.error(path, f"expected a table of KEY = [values], got {type_name(value)} "
                            f"{_show(value)}", f"[{dotted(path)}]")
        out: dict[str, list] = {}
        for key_path, values in flatten_sweep(value).items():
            key = ".".join(key_path)
            where = (*path, key)
            node = schema_node_at(key_path)
            if key in UNSWEEPABLE:
                raise ctx.error(where, f"{key} cannot be swept"
                                + (" (replicates vary the seed: use --replicates)"
                                   if key == "run.seed" else ""))
            if not isinstance(node, Key) or ctx.lookup(key_path) is None:
                leaves = [p for p, n in SCHEMA.walk("") if isinstance(n, Key)]
                concrete = _concrete_keys(ctx.root)
                raise ctx.error(where, "not a single-valued key of this scenario (a sweep varies "
                                "keys such as zones.d_endo_um)",
                                nearest(key, concrete or leaves, cutoff=0.5))
            if not isinstance(values, list) or not values:
                raise ctx.error(where, "expected a non-empty array of values, got "
                                f"{type_name(values)} {_show(values)}",
                                f"{dotted(where)} = [{_show(values)}]"
                                if not isinstance(values, list) else None)
            clean = [node.validate(v, (*where, i), ctx) for i, v in enumerate(values)]
            if len({repr(v) for v in clean}) != len(clean):
                raise ctx.error(where, f"repeated value in {_show(values)}: each sweep point "
                                "must differ")
            out[key] = clean
        return out


def _concrete_keys(data: Any, prefix: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys of the single values in a merged scenario (for "did you mean")."""
    if isinstance(data, dict):
        return [k for name, item in data.items() if name != "sweep"
                for k in _concrete_keys(item, (*prefix, str(name)))]
    return [".".join(prefix)] if prefix else []


def suggest_key(table: Node, path: Path_, name: str) -> str | None:
    """Nearest valid dotted key for an unknown ``name`` under ``path``.

    A sibling with a close name wins (``decay_per_hr`` -> ``decay_per_h``); otherwise the key
    may sit in another table (``run.dx_um`` -> ``geometry.dx_um``).
    """
    siblings = [n for n in getattr(table, "entries", {})]
    close = nearest(name, siblings)
    if close:
        return dotted((*path, close))
    leaves = {pattern: pattern.rsplit(".", 1)[-1] for pattern, _ in SCHEMA.walk("") if pattern}
    best, best_ratio = None, 0.0
    for pattern, last in leaves.items():
        ratio = difflib.SequenceMatcher(None, str(name), last).ratio()
        if ratio > best_ratio:
            best, best_ratio = pattern, ratio
    if best_ratio >= 0.8:
        return best
    full = nearest(dotted((*path, name)), list(leaves), cutoff=0.6)
    return full


# --------------------------------------------------------------------------------------------
# The v1 schema. Descriptions carry the source/confidence; values live in scenarios/default.toml.

def _float(description: str, unit: str = "", **kw: Any) -> Key:
    return Key("float", description, unit, **kw)


_rate = dict(min=0.0, max=1e6)

FIELD = Table("One diffusing field: dc/dt = D lap(c) - k c + secretion - uptake on marrow "
              "voxels, no flux into bone, clearance at sinusoids (MODEL.md §4).", {
    "label": Key("str", "Name shown in plots and tables (e.g. \"TGF-β1\")."),
    "diffusion_um2_per_s": _float("Effective diffusion coefficient D in marrow (MODEL.md §4; "
                                  "PARAMETERS.md §1.3).", "µm²/s", min=0.0, max=200.0),
    "decay_per_h": _float("First-order decay rate k (ln 2 / half-life).", "1/h", **_rate),
    "sinusoid_clearance_per_h": _float("Removal rate on marrow voxels facing a sinusoid "
                                       "(assumed).", "1/h", **_rate),
    "initial": _float("Initial concentration on every marrow voxel (normalised, half-max ≈ 1).",
                      "normalised", min=0.0, max=1e6),
})


def cell_kind_table(description: str, extra: Mapping[str, Node]) -> Table:
    """Schema of one cell kind: its own keys plus secretion and uptake maps over declared fields.

    Args:
        description: one line naming the cell kind and its source.
        extra: the kind's own keys (placement, rates), each a schema node.
    """
    return Table(description, {
        **extra,
        "secretion_per_h": Map("Secretion into the cell's voxel, by field.", "<field>",
                               item=_float("Secretion rate into the cell's voxel.",
                                           "concentration/h", required=False, **_rate),
                               names_from="fields"),
        "uptake_per_h": Map("First-order uptake by the cell, by field.", "<field>",
                            item=_float("First-order uptake rate of the field at the cell's voxel.",
                                        "1/h", required=False, **_rate),
                            names_from="fields"),
    })


#: Cell kinds a scenario may configure under ``[cells.<kind>]``; later issues register more.
CELL_KINDS: dict[str, Node] = {}


def register_cell_kind(name: str, table: Table) -> None:
    """Allow ``[cells.<name>]`` in scenarios with the given schema (see ``cell_kind_table``).

    Args:
        name: the kind's identifier (``lsc``, ``mk``...).
        table: its schema.
    """
    if not NAME_PATTERN.match(name):
        raise ValueError(f"cell kind {name!r} must match {NAME_PATTERN.pattern}")
    CELL_KINDS[name] = table


register_cell_kind("blc", cell_kind_table(
    "Alcam+ bone-lining cells on marrow voxels touching bone (endosteal niche; Nguyen 2025).", {
        "frac_bone_surface": _float("Fraction of bone-touching marrow voxels holding a BLC "
                                    "(assumed).", "fraction", min=0.0, max=1.0),
    }))
register_cell_kind("msc", cell_kind_table(
    "CD51+CD140a+ MSC on marrow voxels touching a sinusoid (vascular niche; Nguyen 2025).", {
        "frac_sinusoid_surface": _float("Fraction of sinusoid-touching marrow voxels holding an "
                                        "MSC (assumed).", "fraction", min=0.0, max=1.0),
    }))

SCHEMA = Table("A scenario.", {
    "description": Key("str", "What the scenario is for; its first line is what "
                       "`marrow-abm list` shows."),
    "extends": Key("str", "Scenario this one builds on: a bundled name or a path relative to "
                   "this file. Tables merge key by key; this file's values win.", required=False),
    "run": Table("Duration, time step, recording and seed.", {
        "days": _float("Simulated duration.", "d", min=0.0, max=3650.0, min_open=True),
        "dt_h": _float("Agent step (MODEL.md §5); fields sub-step inside it as needed.", "h",
                       min=0.01, max=24.0),
        "record_every_h": _float("Recording interval; must be a multiple of `run.dt_h`.", "h",
                                 min=0.0, max=87600.0, min_open=True),
        "seed": Key("int", "Root seed of every named random stream (`--seed` overrides).", "",
                    min=0, max=_INT64_MAX),
    }),
    "geometry": Table("The 2-D marrow section (MODEL.md §2).", {
        "generator": Key("choice", "How the section is made: a generator or a labelled image.",
                         choices=("femur_diaphysis", "metaphysis", "image")),
        "dx_um": _float("Voxel edge, about one cell diameter (MODEL.md §2).", "µm",
                        min=1.0, max=50.0),
        "marrow_radius_um": _float("Radius of the marrow disc (mouse femur mid-shaft marrow "
                                   "≈ 1 mm², assumed from tibia 0.70 mm², Calcif Tissue Int 2013; A).",
                                   "µm", min=0.0, max=20000.0, min_open=True),
        "cortex_thickness_um": _float("Cortical bone ring thickness (tibia 0.16 mm, Calcif Tissue "
                                      "Int 2013; V).", "µm", min=0.0, max=5000.0),
        "image_path": Key("path", "Labelled PNG/TIFF/.npy (0 marrow, 1 bone, 2 sinusoid), "
                          "relative to the file that sets it; used when generator = \"image\"."),
        "sinusoids": Table("Seeded sinusoid network.", {
            "area_fraction": _float("Fraction of marrow area that is sinusoid lumen (30 ± 5% of "
                                    "marrow volume, Nombela-Arrieta 2013; V).", "fraction",
                                    min=0.0, max=0.6),
            "spacing_um": _float("Network node spacing (assumed, fits 85% of HSC within 10 µm "
                                 "of a sinusoid, Acar 2015; A).", "µm", min=20.0, max=500.0),
        }),
        "trabeculae": Table("Trabecular spicules, used by the `metaphysis` generator (assumed).", {
            "count": Key("int", "Number of trabecular spicules (assumed).", "", min=0, max=200),
            "width_um": _float("Spicule width (assumed).", "µm", min=0.0, max=1000.0,
                               min_open=True),
            "length_um": _float("Spicule length (assumed).", "µm", min=0.0, max=5000.0,
                                min_open=True),
        }),
    }),
    "zones": Table("Zone widths from distance maps (MODEL.md §2); the papers' definitions are "
                   "unknown, so check results for sensitivity to them.", {
        "d_endo_um": _float("Endosteal zone: marrow within this distance of bone.", "µm",
                            min=0.0, max=5000.0, min_open=True),
        "d_central_um": _float("Central zone: marrow farther than this from bone "
                               "(≥ `zones.d_endo_um`).", "µm", min=0.0, max=5000.0,
                               min_open=True),
        "d_vasc_um": _float("Perivascular overlay: marrow within this distance of a sinusoid.",
                            "µm", min=0.0, max=5000.0, min_open=True),
    }),
    "solver": Table("Field solver (MODEL.md §4).", {
        "method": Key("choice", "Field solver: explicit 5-point stencil with automatic sub-steps, "
                      "implicit LOD (BioFVM-like, first-order splitting), backward Euler (one "
                      "implicit step per dt by conjugate gradients; exact steady state), or auto "
                      "(explicit up to 128 sub-steps per step, else backward Euler).",
                      choices=("auto", "explicit", "lod", "backward_euler")),
        "dtype": Key("choice", "Floating-point precision of the field arrays.",
                     choices=("float64", "float32")),
        "preconditioner": Key("choice", "Preconditioner of the backward-Euler conjugate "
                              "gradients: exact (Cholesky) solves on the marrow compartments "
                              "the sinusoid walls close off, which converge in one step "
                              "(Jacobi-PCG finishes any compartment too large to factor), or "
                              "Jacobi (~150–200 iterations per hourly step at D dt/dx² = 360). "
                              "Both stop at the same relative residual.",
                              choices=("compartments", "jacobi")),
    }),
    "fields": Map("Diffusing fields by name; each has the same keys.", "<field>", item=FIELD),
    "cells": Map("Cell kinds by name; the allowed kinds are a registry that later issues "
                 "extend.", "<kind>", registry=CELL_KINDS),
    "sweep": SweepTable("Parameter sweep for batches: each key is a dotted scenario key "
                        "(`zones.d_endo_um`), each value an array; `marrow-abm run` runs the "
                        "cartesian product of the arrays, every point with the same replicate "
                        "seeds. `--sweep KEY=v1,v2` on the command line adds or replaces a key.",
                        "<key>", required=False),
})



def register_section(name: str, node: Node) -> None:
    """Add a top-level table (e.g. ``leukemia``, ``blood``, ``drugs``) to the schema.

    Biology issues declare their keys in ``marrow_abm/schemas/<topic>.py`` with this and
    ``register_cell_kind``; the loader needs no change.
    """
    if not NAME_PATTERN.match(name):
        raise ValueError(f"section {name!r} must match {NAME_PATTERN.pattern}")
    if name in SCHEMA.entries:
        raise ValueError(f"section {name!r} is already in the schema")
    SCHEMA.entries[name] = node
    _EXTENSION_SECTIONS.add(name)


#: Top-level sections added by ``register_section``; the reference lists them after the core
#: sections, by name, so docs/scenarios.md does not depend on which module was imported first.
_EXTENSION_SECTIONS: set[str] = set()

# --------------------------------------------------------------------------------------------
# Cross-key constraints: each takes the normalised scenario and the context, raises ScenarioError.

def _check_record_interval(data: dict, ctx: Context) -> None:
    dt_h, every_h = data["run"]["dt_h"], data["run"]["record_every_h"]
    steps = every_h / dt_h
    if steps < 1 - 1e-9 or abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
        near = max(1, round(steps)) * dt_h
        raise ctx.error(("run", "record_every_h"),
                        f"{every_h:g} h is not a multiple of run.dt_h = {dt_h:g} h "
                        "(records are taken at the end of agent steps)",
                        f"run.record_every_h = {near:g}")


def _check_zone_widths(data: dict, ctx: Context) -> None:
    endo, central = data["zones"]["d_endo_um"], data["zones"]["d_central_um"]
    if central < endo:
        raise ctx.error(("zones", "d_central_um"),
                        f"{central:g} µm is less than zones.d_endo_um = {endo:g} µm "
                        "(the intermediate zone would have negative width)",
                        f"zones.d_central_um = {endo:g}")


def _check_image(data: dict, ctx: Context) -> None:
    geometry = data["geometry"]
    if geometry["generator"] != "image":
        return
    key = ("geometry", "image_path")
    rel = geometry["image_path"]
    if rel == "":
        raise ctx.error(key, 'geometry.generator = "image" (set in '
                        f'{ctx.source_of(("geometry", "generator"))}) needs an image file here '
                        "(labelled PNG/TIFF/.npy: 0 marrow, 1 bone, 2 sinusoid)")
    target = Path(os.path.normpath(ctx.base_dir / rel))
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        raise ctx.error(key, f"{rel!r} is not a PNG, TIFF or .npy file "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    if not target.is_file():
        folder = target.parent
        try:
            present = [p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        except OSError:
            present = []
        close = nearest(target.name, present, cutoff=0.4)
        suggestion = (Path(rel).parent / close).as_posix() if close else None
        raise ctx.error(key, f"image file not found: {target}", suggestion)


#: Constraints between keys, run in order after every key is valid; later issues append.
CHECKS: list[Callable[[dict, Context], None]] = [
    _check_record_interval, _check_zone_widths, _check_image,
]


def schema_node_at(path: Path_) -> Node | None:
    """Schema node for a concrete key path (names in maps accepted), or None if none."""
    node: Node | None = SCHEMA
    for part in path:
        if node is None or isinstance(part, int):
            return None
        node = node.child(part)
    return node


# --------------------------------------------------------------------------------------------
# Reference documentation

def describe_keys() -> list[tuple[str, Node]]:
    """Every dotted key pattern of the schema with its node: core sections in schema order,
    then the biology sections by name."""
    core = [n for n in SCHEMA.entries if n not in _EXTENSION_SECTIONS]
    order = core + sorted(_EXTENSION_SECTIONS)
    return [(pattern, node) for name in order for pattern, node in SCHEMA.entries[name].walk(name)]


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def schema_markdown() -> str:
    """The reference page ``docs/scenarios.md``: bundled scenarios and every key of the schema."""
    from marrow_abm.scenario import list_scenarios  # the loader imports this module

    lines = [
        "# Scenario reference",
        "",
        "<!-- Generated from marrow_abm/schema.py: regenerate with "
        "`python -m marrow_abm.schema > docs/scenarios.md`; do not edit by hand. -->",
        "",
        "A scenario is a TOML file. `extends = \"name\"` builds on a bundled scenario (or on a "
        "file, by a path relative to the extending file); tables merge key by key, arrays and "
        "values are replaced, and the extending file wins. On the command line "
        "`--set fields.tgfb.decay_per_h=2.0` overrides any key (the value is read as TOML; a "
        "bare word such as `lod` is a string). Every default lives in `scenarios/default.toml` "
        "with its source; the code holds none. Units are in the key names and in the table "
        "below; concentrations are normalised (half-max ≈ 1). An unknown key, a wrong type or "
        "an out-of-range value stops the run with the file, the dotted key and the nearest "
        "valid key or value.",
        "",
        "## Bundled scenarios",
        "",
        "| name | description |",
        "|---|---|",
    ]
    for info in list_scenarios():
        lines.append(f"| `{info.name}` | {_md(info.description)} |")
    lines += ["", "## Keys", "",
              "`<field>` is any field name declared under `[fields]`; `<kind>` is a registered "
              "cell kind. Secretion and uptake maps may only name declared fields.", "",
              "### Top level"]
    for pattern, node in describe_keys():
        if not isinstance(node, Key):   # Table, Map, ArrayOf or a topic's own table node
            header = f"[[{pattern}]]" if isinstance(node, ArrayOf) else f"[{pattern}]"
            lines += ["", f"### `{header}`", "", _md(node.description)]
            continue
        if not lines[-1].startswith("|"):
            lines += ["", "| key | type | unit | allowed | required | description |",
                      "|---|---|---|---|---|---|"]
        lines.append(f"| `{pattern}` | {node.type_text()} | {_md(node.unit)} | "
                     f"{_md(node.range_text())} | {'yes' if node.required else 'no'} | "
                     f"{_md(node.description)} |")
    return "\n".join(lines) + "\n"


# Biology sections register themselves on import (one module per topic, in name order, so the
# schema and docs/scenarios.md do not depend on import order elsewhere).
def _load_schema_extensions() -> None:
    import importlib
    import pkgutil

    from . import schemas

    for info in sorted(pkgutil.iter_modules(schemas.__path__), key=lambda m: m.name):
        importlib.import_module(f"{schemas.__name__}.{info.name}")


_load_schema_extensions()


if __name__ == "__main__":
    import sys

    # Run as a script this file is ``__main__``, a second copy of the module: the biology
    # sections register into the imported ``marrow_abm.schema``, so print that one's schema.
    from marrow_abm.schema import schema_markdown as _imported_schema_markdown

    sys.stdout.write(_imported_schema_markdown())
