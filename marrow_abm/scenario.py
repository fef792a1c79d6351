"""TOML scenario files -> one validated ``Scenario``: ``extends`` chains, ``--set`` overrides, errors.

Where values come from is this module's job; what is valid is ``marrow_abm.schema``'s. Every
problem a user can cause (a missing file, bad TOML, an unknown key, a wrong type, a cycle of
``extends``) raises ``ScenarioError`` naming the file and the dotted key, with the nearest valid
key or value when there is one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from marrow_abm.errors import ScenarioError
from marrow_abm.schema import (
    CHECKS, SCHEMA, ArrayOf, Context, Key, Map, nearest, schema_markdown, schema_node_at,
)

__all__ = [
    "SCENARIO_DIRS", "Scenario", "ScenarioInfo", "list_scenarios", "load_scenario",
    "parse_override", "resolve_scenario_path", "schema_markdown",
]

_PACKAGE_DIR = Path(__file__).resolve().parent


def _bundled_dirs() -> tuple[Path, ...]:
    # An installed wheel carries scenarios/ inside the package (pyproject force-include);
    # a source checkout keeps them next to the package.
    inside = _PACKAGE_DIR / "_bundled_scenarios"
    return (inside,) if inside.is_dir() else (_PACKAGE_DIR.parent / "scenarios",)


#: Folders searched for bundled scenario names, first match wins (one folder today).
SCENARIO_DIRS: tuple[Path, ...] = _bundled_dirs()

#: What ``--set`` names as the "file" of a command-line override.
OVERRIDE_SOURCE = "--set"
# A --set value that is not TOML but a plain word or path is taken as a string (`lod`, `a/b.png`).
_BARE_WORD = re.compile(r"^[^\s\"'\[\]{}=,#]+$")


@dataclass(frozen=True)
class ScenarioInfo:
    """A bundled scenario as ``marrow-abm list`` shows it.

    Args:
        name: the name to pass to ``load_scenario`` (file stem).
        description: first line of the scenario's description.
        path: the scenario file.
    """

    name: str
    description: str
    path: Path


@dataclass(frozen=True)
class Scenario:
    """A resolved, validated scenario.

    Args:
        name: file stem of the scenario that was loaded.
        path: that file.
        description: its full description.
        data: resolved nested dict (after ``extends`` and overrides), validated and normalised
            (ints widened to floats where the schema wants a float; paths relative to
            ``base_dir()``). Treat as read-only; ``to_dict()`` gives a copy.
        chain: files merged, base first (the loaded file last).
        overrides: the ``--set`` strings applied, in order.
    """

    name: str
    path: Path
    description: str
    data: dict
    chain: tuple[Path, ...]
    overrides: tuple[str, ...] = field(default=())

    def get(self, dotted_key: str) -> Any:
        """Value at a dotted key (``"fields.tgfb.decay_per_h"``); tables come back as copies.

        Raises:
            ScenarioError: the key is not in the resolved scenario (with the nearest key).
        """
        node: Any = self.data
        walked: list[str] = []
        for part in dotted_key.split("."):
            if not isinstance(node, dict) or part not in node:
                options = list(node) if isinstance(node, dict) else []
                close = nearest(part, options)
                raise ScenarioError("not in the resolved scenario", file=str(self.path),
                                    key=dotted_key,
                                    suggestion=".".join([*walked, close]) if close else None)
            walked.append(part)
            node = node[part]
        return copy.deepcopy(node) if isinstance(node, (dict, list)) else node

    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON of ``data`` (sorted keys, no whitespace)."""
        text = json.dumps(self.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_toml(self) -> str:
        """The resolved scenario as a standalone TOML document (no ``extends``).

        File paths (``geometry.image_path``) are written absolute, so the document loads from
        any folder (e.g. an output folder); ``data`` and ``digest()`` keep them relative to
        ``base_dir()`` so the digest does not depend on where the project is checked out.
        """
        data = self.to_dict()
        for path in _path_keys(data):
            parent = data
            for part in path[:-1]:
                parent = parent[part]
            if parent[path[-1]]:
                parent[path[-1]] = (self.base_dir() / parent[path[-1]]).resolve().as_posix()
        return tomli_w.dumps(data)

    def to_dict(self) -> dict:
        """A deep copy of the resolved data."""
        return copy.deepcopy(self.data)

    def base_dir(self) -> Path:
        """Folder of the scenario file: relative paths in ``data`` (images) are relative to it."""
        return self.path.parent

    def resolve_file(self, dotted_key: str) -> Path:
        """Absolute path of a path-valued key (e.g. ``geometry.image_path``)."""
        return (self.base_dir() / str(self.get(dotted_key))).resolve()


def _path_keys(data: Any, path: tuple = ()) -> list[tuple]:
    """Key paths in ``data`` whose schema type is a file path."""
    if isinstance(data, dict):
        return [p for key, value in data.items() for p in _path_keys(value, (*path, key))]
    node = schema_node_at(path)
    return [path] if isinstance(node, Key) and node.type == "path" else []


# --------------------------------------------------------------------------------------------
# Finding files

def _display(path: Path) -> str:
    """A path as errors show it: relative to the working directory when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _first_file(path: Path) -> Path | None:
    """``path`` or ``path.toml`` if it is a readable file; odd names (too long, "/") are not."""
    try:
        for candidate in (path, path.with_name(path.name + ".toml")):
            if candidate.is_file():
                return candidate.resolve()
    except (OSError, ValueError):
        pass
    return None


def _bundled(name: str) -> Path | None:
    for folder in SCENARIO_DIRS:
        candidate = folder / f"{name}.toml"
        try:
            if candidate.is_file():
                return candidate.resolve()
        except (OSError, ValueError):  # a name too long for the file system is just not there
            return None
    return None


def _bundled_names() -> list[str]:
    return sorted({p.stem for folder in SCENARIO_DIRS if folder.is_dir()
                   for p in folder.glob("*.toml")})


def resolve_scenario_path(name_or_path: str) -> Path:
    """The file for a bundled scenario name (``"default"``) or a path to a TOML file.

    Args:
        name_or_path: a bundled name, or a file path (absolute or relative to the working
            directory; ``.toml`` may be left off).

    Raises:
        ScenarioError: neither exists (suggests the nearest bundled name).
    """
    text = str(name_or_path)
    if not text or "\x00" in text:
        raise ScenarioError("no scenario given" if not text else "invalid scenario name",
                            file=repr(text), suggestion="default")
    found = _first_file(Path(text))
    if found is not None:
        return found
    looks_like_name = "/" not in text and os.sep not in text and not text.endswith(".toml")
    if looks_like_name:
        bundled = _bundled(text)
        if bundled is not None:
            return bundled
    names = _bundled_names()
    raise ScenarioError(f"no such scenario file or bundled scenario (bundled: {', '.join(names)})",
                        file=text, suggestion=nearest(Path(text).stem, names, cutoff=0.4))


def _resolve_extends(target: Any, parent: Path) -> Path:
    """Resolve an ``extends`` value of the file ``parent``: a path relative to it, or a bundled name."""
    where = _display(parent)
    if not isinstance(target, str):
        raise ScenarioError(f"expected a scenario name or path (string), got "
                            f"{type(target).__name__}", file=where, key="extends")
    if not target.strip() or "\x00" in target:
        raise ScenarioError("empty or invalid scenario name", file=where, key="extends",
                            suggestion="default")
    relative = parent.parent / target
    is_name = "/" not in target and os.sep not in target and not target.endswith(".toml")
    if is_name:
        bundled = _bundled(target)
        if bundled is not None:  # a bare name means the bundled scenario first
            return bundled
    found = _first_file(relative)
    if found is not None:
        return found
    siblings = []
    try:
        siblings = [p.stem for p in parent.parent.glob("*.toml") if p != parent]
    except OSError:
        pass
    options = sorted(set(_bundled_names()) | set(siblings))
    raise ScenarioError(f"extends target {target!r} not found (looked for {_display(relative)} "
                        f"and the bundled scenarios: {', '.join(_bundled_names())})",
                        file=where, key="extends",
                        suggestion=nearest(Path(target).stem, options, cutoff=0.4))


def _read_toml(path: Path) -> dict:
    where = _display(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"cannot read the file ({exc.strerror or exc})", file=where) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                            file=where) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML: {exc}", file=where) from None
    except RecursionError:
        raise ScenarioError("not valid TOML: nested too deeply", file=where) from None


# --------------------------------------------------------------------------------------------
# Merging with provenance

class _Origins:
    """Which source (file or --set) last set each key path, and which folder its paths are in."""

    def __init__(self) -> None:
        self.source: dict[tuple, str] = {}
        self.folder: dict[tuple, Path] = {}

    def mark(self, path: tuple, value: Any, source: str, folder: Path) -> None:
        self.source[path], self.folder[path] = source, folder
        if isinstance(value, dict):
            for key, item in value.items():
                self.mark((*path, key), item, source, folder)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.mark((*path, i), item, source, folder)

    def _nearest(self, table: dict, path: tuple) -> tuple:
        while path and path not in table:
            path = path[:-1]
        return path

    def source_of(self, path: tuple) -> str:
        return self.source.get(self._nearest(self.source, path), self.source.get((), "?"))

    def folder_of(self, path: tuple) -> Path:
        return self.folder.get(self._nearest(self.folder, path), Path.cwd())


def _merge(base: dict, top: dict, path: tuple, origins: _Origins, source: str,
           folder: Path) -> None:
    """Deep-merge ``top`` into ``base`` in place: tables merge, anything else is replaced."""
    for key, value in top.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            origins.source[here], origins.folder[here] = source, folder
            _merge(base[key], value, here, origins, source, folder)
        else:
            base[key] = copy.deepcopy(value)
            origins.mark(here, value, source, folder)


def _load_chain(path: Path) -> tuple[list[Path], list[dict]]:
    """Follow ``extends`` from ``path`` to the base; return files and documents, base first."""
    files: list[Path] = []
    docs: list[dict] = []
    current: Path | None = path
    while current is not None:
        if current in files:
            loop = " -> ".join(_display(p) for p in [*files[files.index(current):], current])
            raise ScenarioError(f"extends forms a cycle: {loop}", file=_display(files[-1]),
                                key="extends")
        doc = _read_toml(current)
        files.append(current)
        docs.append(doc)
        current = _resolve_extends(doc["extends"], current) if "extends" in doc else None
    return files[::-1], docs[::-1]


# --------------------------------------------------------------------------------------------
# Overrides

def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Split ``"fields.tgfb.decay_per_h=2.0"`` into its key path and TOML value.

    The value is read as a TOML value; a bare word (``lod``, ``images/a.png``) is a string and
    an empty value is the empty string. The key must exist in the schema.

    Args:
        text: one ``KEY=VALUE`` string from ``--set``.

    Raises:
        ScenarioError: malformed text, a key not in the schema, or a value that is not TOML.
    """
    if not isinstance(text, str) or "=" not in text:
        raise ScenarioError(f"expected KEY=VALUE, got {text!r}", file=OVERRIDE_SOURCE,
                            suggestion="fields.tgfb.decay_per_h=2.0")
    key_text, _, value_text = text.partition("=")
    key_text, value_text = key_text.strip(), value_text.strip()
    parts = tuple(key_text.split("."))
    if not key_text or any(not p for p in parts):
        raise ScenarioError(f"malformed key {key_text!r} in {text!r}", file=OVERRIDE_SOURCE,
                            key=key_text or None)
    if parts[0] == "extends":
        raise ScenarioError("extends cannot be overridden; load the other scenario instead",
                            file=OVERRIDE_SOURCE, key="extends")
    _check_override_key(parts)
    return parts, _parse_value(value_text, key_text)


def _check_override_key(parts: tuple[str, ...]) -> None:
    node = SCHEMA
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if isinstance(node, Key) or isinstance(node, ArrayOf):
            raise ScenarioError(f"{'.'.join(parts[:i])} is a single value, it has no sub-keys",
                                file=OVERRIDE_SOURCE, key=here, suggestion=".".join(parts[:i]))
        child = node.child(part)
        if child is None:
            if isinstance(node, Map) and node.registry is not None:
                options = list(node.registry)
            else:
                options = list(getattr(node, "entries", {}))
            close = nearest(part, options, cutoff=0.4)
            raise ScenarioError("unknown key", file=OVERRIDE_SOURCE, key=here,
                                suggestion=".".join([*parts[:i], close]) if close else None)
        node = child


def _parse_value(value_text: str, key_text: str) -> Any:
    if value_text == "":
        return ""
    try:
        return tomllib.loads(f"v = {value_text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        pass
    except KeyError:  # e.g. "1\nw = 2" parses but defines more than v
        pass
    if _BARE_WORD.match(value_text):
        return value_text
    raise ScenarioError(f"value {value_text!r} is not a TOML value (quote strings: "
                        f"{key_text}='\"...\"')", file=OVERRIDE_SOURCE, key=key_text)


def _apply_override(data: dict, parts: tuple[str, ...], value: Any, origins: _Origins,
                    cwd: Path) -> None:
    node = data
    for i, part in enumerate(parts[:-1]):
        here = parts[: i + 1]
        if not isinstance(node.get(part), dict):
            node[part] = {}  # a new named entry (fields.<new>) or a table the files left out
            origins.mark(here, node[part], OVERRIDE_SOURCE, cwd)
        node = node[part]
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        _merge(node[last], value, parts, origins, OVERRIDE_SOURCE, cwd)
    else:
        node[last] = value
        origins.mark(parts, value, OVERRIDE_SOURCE, cwd)


# --------------------------------------------------------------------------------------------
# Loading

def load_scenario(name_or_path: str, overrides: Sequence[str] = ()) -> Scenario:
    """Load, merge, override and validate a scenario.

    Args:
        name_or_path: a bundled scenario name or a path to a TOML file.
        overrides: ``KEY=VALUE`` strings (``--set``), applied in order after the files.

    Returns:
        The validated Scenario.

    Raises:
        ScenarioError: anything wrong with the files, keys, values or overrides.
    """
    path = resolve_scenario_path(name_or_path)
    files, docs = _load_chain(path)
    origins = _Origins()
    data: dict = {}
    for file, doc in zip(files, docs):
        _merge(data, doc, (), origins, _display(file), file.parent)
    origins.source[()] = _display(path)  # a missing top-level key belongs in the loaded file
    data.pop("extends", None)  # the chain records it; the digest should not depend on file names

    parsed = [parse_override(text) for text in overrides]
    cwd = Path.cwd()
    for parts, value in parsed:
        _apply_override(data, parts, value, origins, cwd)

    ctx = Context(root=data, source_of=origins.source_of, dir_of=origins.folder_of,
                  base_dir=path.parent)
    try:
        clean = SCHEMA.validate(data, (), ctx)
        for check in CHECKS:
            check(clean, ctx)
    except RecursionError:
        raise ScenarioError("tables nested too deeply", file=_display(path)) from None
    description = clean["description"]
    return Scenario(name=path.stem, path=path, description=description, data=clean,
                    chain=tuple(files), overrides=tuple(overrides))


def list_scenarios() -> list[ScenarioInfo]:
    """The bundled scenarios, sorted by name, with the first line of each description."""
    infos = []
    for name in _bundled_names():
        path = _bundled(name)
        assert path is not None
        try:
            description = _own_description(path)
        except ScenarioError:
            description = "(cannot be read: run `marrow-abm check " + name + "`)"
        infos.append(ScenarioInfo(name=name, description=description, path=path))
    return infos


def _own_description(path: Path) -> str:
    """First line of a file's description, following ``extends`` if the file has none."""
    seen: list[Path] = []
    while path not in seen:
        seen.append(path)
        doc = _read_toml(path)
        text = doc.get("description")
        if isinstance(text, str) and text.strip():
            return text.strip().splitlines()[0].strip()
        if "extends" not in doc:
            break
        path = _resolve_extends(doc["extends"], path)
    return ""
