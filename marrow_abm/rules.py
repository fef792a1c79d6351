"""Signal -> behaviour rules as data: parse, check the vocabulary, evaluate, describe in English.

A rule is one hypothesis, written as in PhysiCell's rules grammar (v3 CSV columns: cell type,
signal, direction, behaviour, max response, half-max, Hill power, applies to dead; Macklin lab,
PhysiCell 1.12 "rules" documentation): *in cells of kind K, signal S increases (or decreases)
behaviour B towards M with a Hill response of half-max h and power n*. Rules come from the
scenario's ``[[rules]]`` array and from PhysiCell-style CSV files it lists in ``rules_csv``.

Evaluation follows PhysiCell's combination of several rules on one behaviour: with base value
b0 (the scenario's ``behaviours.<kind>.<behaviour>``), the up-regulating signals combine in one
multivariate Hill response U = X / (1 + X), X = sum_i (s_i / h_i)^n_i, and the down-regulating
ones in D likewise; then

    b = b0 + (M_up - b0) * U,    b <- b + (M_down - b) * D.

So all "increases" rules of one behaviour must name the same max response (M_up), and all
"decreases" rules the same (M_down); a scenario that disagrees is an error.

The vocabularies are registries that biology topics extend at import (``register_signal``,
``register_behaviour``): a signal may be registered for some kinds only; every declared field is
also a signal (its value at the cell). An unknown kind, signal or behaviour is an error with a
suggestion, never skipped. This module imports no schema code, so it can be imported first.
"""

from __future__ import annotations

import csv
import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ScenarioError

__all__ = [
    "BEHAVIOURS", "Behaviour", "CSV_COLUMNS", "DIRECTIONS", "Rule", "RuleSet", "SIGNALS", "Signal",
    "behaviour_of", "check_rules", "describe", "parse_rules_csv", "register_behaviour",
    "register_signal", "rule_kinds", "rules_from_data", "scenario_rules", "signals_for",
]

DIRECTIONS = ("increases", "decreases")
#: PhysiCell v3 rules CSV columns, in order (a header line naming them is optional).
CSV_COLUMNS = ("cell_type", "signal", "direction", "behavior", "saturation", "half_max",
               "hill_power", "apply_to_dead")


@dataclass(frozen=True)
class Signal:
    """A quantity a cell can sense.

    Args:
        name: identifier used in rules (``contact_blc``).
        description: one line, with the unit.
        unit: unit of the value ("" if dimensionless).
        kinds: kinds that can sense it (empty: every kind with behaviours).
    """

    name: str
    description: str
    unit: str = ""
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class Behaviour:
    """A cell property a rule can set.

    Args:
        kind: the cell kind it belongs to.
        name: identifier, with its unit in the name (``g0_entry_per_h``).
        description: one line saying what the value does.
        unit: its unit.
        min, max: allowed range of base values and max responses.
    """

    kind: str
    name: str
    description: str
    unit: str = ""
    min: float = 0.0
    max: float = math.inf


#: Signal name -> Signal (fields are added per scenario, not here).
SIGNALS: dict[str, Signal] = {}
#: Cell kind -> behaviour name -> Behaviour.
BEHAVIOURS: dict[str, dict[str, Behaviour]] = {}


def register_signal(name: str, description: str, unit: str = "",
                    kinds: Sequence[str] = ()) -> None:
    """Add a signal to the vocabulary (idempotent for an identical definition).

    Args:
        name: identifier used in rules.
        description: one line.
        unit: unit of the value.
        kinds: kinds that can sense it; empty means every kind.
    """
    sig = Signal(name, description, unit, tuple(kinds))
    old = SIGNALS.get(name)
    if old is not None and old != sig:
        raise ValueError(f"signal {name!r} is already registered differently")
    SIGNALS[name] = sig


def register_behaviour(kind: str, name: str, description: str, unit: str = "",
                       min: float = 0.0, max: float = math.inf) -> None:
    """Add a behaviour of ``kind`` to the vocabulary (idempotent for an identical definition)."""
    beh = Behaviour(kind, name, description, unit, float(min), float(max))
    table = BEHAVIOURS.setdefault(kind, {})
    old = table.get(name)
    if old is not None and old != beh:
        raise ValueError(f"behaviour {kind}.{name} is already registered differently")
    table[name] = beh


def rule_kinds() -> tuple[str, ...]:
    """Kinds that have at least one behaviour (the only kinds a rule may name)."""
    return tuple(BEHAVIOURS)


def signals_for(kind: str, fields: Iterable[str] = ()) -> list[str]:
    """Signal names a cell of ``kind`` can sense: registered ones plus the declared fields."""
    names = [n for n, s in SIGNALS.items() if not s.kinds or kind in s.kinds]
    return sorted(set(names) | set(fields))


def behaviour_of(kind: str, name: str) -> Behaviour:
    return BEHAVIOURS[kind][name]


@dataclass(frozen=True)
class Rule:
    """One signal -> behaviour hypothesis.

    Args:
        kind: cell kind (``lsc``).
        signal: signal name (``contact_blc``, a field name ...).
        direction: ``increases`` or ``decreases``.
        behaviour: behaviour name of that kind.
        max_response: the value the behaviour tends to at saturating signal (PhysiCell's
            "saturation": the maximum for increases, the minimum for decreases).
        half_max: signal value giving half the response (signal units, > 0).
        hill_power: Hill coefficient (> 0).
        applies_to_dead: whether dead cells respond (PhysiCell column; dead cells are removed
            at the end of each step here, so it matters only within a step).
        origin: where the rule was written (``rules[2]`` or ``file.csv:5``), for messages.
    """

    kind: str
    signal: str
    direction: str
    behaviour: str
    max_response: float
    half_max: float
    hill_power: float
    applies_to_dead: bool = False
    origin: str = ""


def _fmt(x: float) -> str:
    return f"{x:g}"


def describe(rule: Rule, base: float | None = None) -> str:
    """The rule in one English sentence (as PhysiCell prints its rules).

    Args:
        rule: the rule.
        base: the behaviour's base value, shown when known.
    """
    beh = BEHAVIOURS.get(rule.kind, {}).get(rule.behaviour)
    sig = SIGNALS.get(rule.signal)
    unit = f" {beh.unit}" if beh is not None and beh.unit else ""
    sunit = f" {sig.unit}" if sig is not None and sig.unit else ""
    frm = f" from {_fmt(base)}{unit}" if base is not None else ""
    verb = "increases" if rule.direction == "increases" else "decreases"
    towards = "up to" if rule.direction == "increases" else "down to"
    dead = "; dead cells respond too" if rule.applies_to_dead else ""
    return (f"In {rule.kind} cells, {rule.signal} {verb} {rule.behaviour}{frm} {towards} "
            f"{_fmt(rule.max_response)}{unit} with a Hill response of half-max "
            f"{_fmt(rule.half_max)}{sunit} and power {_fmt(rule.hill_power)}{dead}.")


# ---------------------------------------------------------------------------------------------
# Parsing and checking

def _err(message: str, file: str | None, key: str | None, suggestion: str | None = None):
    return ScenarioError(message, file=file, key=key, suggestion=suggestion)


def _nearest(word: str, options: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.4)
    return found[0] if found else None


def parse_rules_csv(path: str | Path) -> list[Rule]:
    """Read a PhysiCell v3 rules CSV (8 columns; optional header; ``//`` or ``#`` comments).

    Only the form is checked here (column count, numbers); ``check_rules`` checks the vocabulary.

    Raises:
        ScenarioError: unreadable file, wrong column count, a value that is not a number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise _err(f"cannot read rules CSV: {exc}", str(path), None) from None
    rules: list[Rule] = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not cells or all(c == "" for c in cells) or cells[0].startswith(("//", "#")):
            continue
        if lineno == 1 and cells[0].lower().replace(" ", "_") in ("cell_type", "celltype"):
            continue  # header line
        where = f"line {lineno}"
        if len(cells) == 9:
            raise _err("9 columns: this looks like a PhysiCell v2 rules file (with a base value "
                       "column); use the v3 columns " + ", ".join(CSV_COLUMNS) + " (base values "
                       "go in the scenario under [behaviours.<kind>])", str(path), where)
        if len(cells) not in (7, 8):
            raise _err(f"expected 8 columns ({', '.join(CSV_COLUMNS)}), got {len(cells)}",
                       str(path), where)
        nums = []
        for col, value in zip(("saturation", "half_max", "hill_power"), cells[4:7]):
            try:
                nums.append(float(value))
            except ValueError:
                raise _err(f"{col} {value!r} is not a number", str(path), where) from None
        dead = cells[7] if len(cells) == 8 else "0"
        if dead.lower() not in ("0", "1", "true", "false"):
            raise _err(f"apply_to_dead {dead!r} must be 0 or 1", str(path), where)
        rules.append(Rule(kind=cells[0], signal=cells[1], direction=cells[2].lower(),
                          behaviour=cells[3], max_response=nums[0], half_max=nums[1],
                          hill_power=nums[2], applies_to_dead=dead.lower() in ("1", "true"),
                          origin=f"{path.name}:{lineno}"))
    return rules


def rules_from_data(data: Mapping, base_dir: Path,
                    source_of=None) -> list[tuple[Rule, str, str]]:
    """All rules of a resolved scenario: ``[[rules]]`` first, then each ``rules_csv`` file.

    Returns:
        (rule, file, key) triples; ``file``/``key`` locate the rule for error messages.
    """
    out: list[tuple[Rule, str, str]] = []
    for i, item in enumerate(data.get("rules", []) or []):
        file = source_of(("rules", i)) if source_of else "scenario"
        out.append((Rule(kind=item["kind"], signal=item["signal"], direction=item["direction"],
                         behaviour=item["behaviour"], max_response=float(item["max_response"]),
                         half_max=float(item["half_max"]), hill_power=float(item["hill_power"]),
                         applies_to_dead=bool(item.get("applies_to_dead", False)),
                         origin=f"rules[{i}]"), file, f"rules[{i}]"))
    for rel in data.get("rules_csv", []) or []:
        path = Path(rel) if Path(rel).is_absolute() else Path(base_dir) / rel
        if not path.is_file():
            raise _err(f"rules CSV not found: {path}", source_of(("rules_csv",)) if source_of
                       else None, "rules_csv")
        for rule in parse_rules_csv(path):
            out.append((rule, str(path), "line " + rule.origin.rsplit(":", 1)[-1]))
    return out


def check_rules(triples: Sequence[tuple[Rule, str, str]], fields: Iterable[str],
                bases: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """Check every rule's vocabulary and numbers; raise ScenarioError on the first problem.

    Args:
        triples: from ``rules_from_data``.
        fields: declared field names (each is also a signal).
        bases: ``behaviours`` table of the scenario (kind -> behaviour -> base value); a kind
            named by a rule must have its base values there.
    """
    fields = list(fields)
    maxima: dict[tuple[str, str, str], tuple[float, str]] = {}
    for rule, file, key in triples:
        if rule.kind not in BEHAVIOURS:
            raise _err(f"unknown cell kind {rule.kind!r} in a rule; kinds with behaviours: "
                       f"{', '.join(rule_kinds()) or 'none'}", file, key,
                       _nearest(rule.kind, rule_kinds()))
        allowed = signals_for(rule.kind, fields)
        if rule.signal not in allowed:
            raise _err(f"unknown signal {rule.signal!r} for {rule.kind}; known: "
                       f"{', '.join(allowed)}", file, key, _nearest(rule.signal, allowed))
        behs = BEHAVIOURS[rule.kind]
        if rule.behaviour not in behs:
            raise _err(f"unknown behaviour {rule.behaviour!r} for {rule.kind}; known: "
                       f"{', '.join(behs)}", file, key, _nearest(rule.behaviour, behs))
        if rule.direction not in DIRECTIONS:
            raise _err(f"direction {rule.direction!r} must be 'increases' or 'decreases'", file,
                       key, _nearest(rule.direction, DIRECTIONS))
        if not (math.isfinite(rule.half_max) and rule.half_max > 0):
            raise _err(f"half-max {rule.half_max:g} must be a positive number", file, key)
        if not (math.isfinite(rule.hill_power) and rule.hill_power > 0):
            raise _err(f"Hill power {rule.hill_power:g} must be a positive number", file, key)
        beh = behs[rule.behaviour]
        if not (math.isfinite(rule.max_response) and beh.min <= rule.max_response <= beh.max):
            raise _err(f"max response {rule.max_response:g} of {rule.behaviour} is out of range "
                       f"{beh.min:g} – {beh.max:g} {beh.unit}".rstrip(), file, key)
        slot = (rule.kind, rule.behaviour, rule.direction)
        if slot in maxima and maxima[slot][0] != rule.max_response:
            prev = maxima[slot]
            raise _err(f"every rule that {rule.direction} {rule.kind}.{rule.behaviour} must name "
                       f"the same max response (PhysiCell combines them in one Hill response); "
                       f"{prev[1]} says {prev[0]:g}, this one {rule.max_response:g}", file, key,
                       None)
        maxima.setdefault(slot, (rule.max_response, rule.origin))
        if bases is not None and rule.kind not in bases:
            raise _err(f"a rule acts on {rule.kind} but the scenario has no [behaviours."
                       f"{rule.kind}] table of base values", file, key)


# ---------------------------------------------------------------------------------------------
# Evaluation

@dataclass
class _Slot:
    """The rules acting on one behaviour of one kind, ready for the kernel."""

    up: list[Rule] = field(default_factory=list)
    down: list[Rule] = field(default_factory=list)


@dataclass(frozen=True)
class _Packed:
    """One behaviour's rules as arrays for the Hill kernel (``RuleSet.packed``)."""

    base: float
    up: tuple[str, ...]
    up_half: np.ndarray
    up_pow: np.ndarray
    up_max: float
    down: tuple[str, ...]
    down_half: np.ndarray
    down_pow: np.ndarray
    down_min: float


class RuleSet:
    """The rules of one scenario, grouped by kind and behaviour, evaluated with the Hill kernel.

    Args:
        rules: the rules (already checked).
        bases: kind -> behaviour -> base value (the scenario's ``behaviours`` table).
    """

    def __init__(self, rules: Sequence[Rule], bases: Mapping[str, Mapping[str, float]]):
        self.rules = list(rules)
        self.bases = {k: dict(v) for k, v in bases.items()}
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._packed: dict[tuple[str, str], _Packed] = {}
        for r in self.rules:
            slot = self._slots.setdefault((r.kind, r.behaviour), _Slot())
            (slot.up if r.direction == "increases" else slot.down).append(r)

    def base(self, kind: str, behaviour: str) -> float:
        """Base value of a behaviour (ScenarioError if the scenario does not give it)."""
        try:
            return float(self.bases[kind][behaviour])
        except KeyError:
            raise ScenarioError(f"no base value for {kind}.{behaviour}", key=f"behaviours.{kind}."
                                f"{behaviour}") from None

    def signals_needed(self, kind: str) -> set[str]:
        """Signals that some rule of ``kind`` reads."""
        return {r.signal for r in self.rules if r.kind == kind}

    def rules_for(self, kind: str, behaviour: str) -> tuple[list[Rule], list[Rule]]:
        slot = self._slots.get((kind, behaviour), _Slot())
        return slot.up, slot.down

    def evaluate(self, kind: str, behaviour: str, signals: Mapping[str, np.ndarray], n: int,
                 alive: np.ndarray | None = None, base: np.ndarray | float | None = None,
                 kernel=None) -> np.ndarray:
        """The behaviour of ``n`` cells of ``kind`` given their signals.

        Args:
            kind: cell kind.
            behaviour: behaviour name.
            signals: signal name -> per-cell values (length ``n``), at least those the rules read.
            n: number of cells.
            alive: per-cell alive flags; dead cells see zero signals unless a rule applies to
                the dead.
            base: per-cell (or scalar) base values; default the scenario's base value.
            kernel: the Hill kernel (default the numba one; tests pass the numpy twin).

        Returns:
            float64 array of length ``n``.
        """
        from .kernels.hill import hill_behaviour

        kern = kernel or hill_behaviour
        b0 = self.base(kind, behaviour) if base is None else base
        base_arr = np.broadcast_to(np.asarray(b0, dtype=np.float64), (n,)).copy()
        up, down = self.rules_for(kind, behaviour)
        out = np.empty(n, dtype=np.float64)

        def pack(rules: list[Rule]):
            sig = np.zeros((len(rules), n), dtype=np.float64)
            for j, r in enumerate(rules):
                sig[j] = signals[r.signal]
                if alive is not None and not r.applies_to_dead:
                    sig[j][~alive] = 0.0
            half = np.array([r.half_max for r in rules], dtype=np.float64)
            power = np.array([r.hill_power for r in rules], dtype=np.float64)
            limit = rules[0].max_response if rules else 0.0
            return sig, half, power, float(limit)

        us, uh, up_pow, umax = pack(up)
        ds, dh, dn_pow, dmin = pack(down)
        kern(base_arr, us, uh, up_pow, umax, ds, dh, dn_pow, dmin, out)
        return out

    def packed(self, kind: str, behaviour: str) -> _Packed:
        """The rules of one behaviour as the Hill kernel's arrays (built once, then cached)."""
        key = (kind, behaviour)
        pk = self._packed.get(key)
        if pk is None:
            up, down = self.rules_for(kind, behaviour)
            pk = _Packed(
                base=self.base(kind, behaviour),
                up=tuple(r.signal for r in up),
                up_half=np.array([r.half_max for r in up], dtype=np.float64),
                up_pow=np.array([r.hill_power for r in up], dtype=np.float64),
                up_max=float(up[0].max_response) if up else 0.0,
                down=tuple(r.signal for r in down),
                down_half=np.array([r.half_max for r in down], dtype=np.float64),
                down_pow=np.array([r.hill_power for r in down], dtype=np.float64),
                down_min=float(down[0].max_response) if down else 0.0)
            self._packed[key] = pk
        return pk

    def evaluate_at(self, kind: str, behaviour: str, signals: Mapping[str, np.ndarray],
                    idx: np.ndarray, kernel=None) -> np.ndarray:
        """The behaviour of the cells ``idx`` only (indices into the signal arrays).

        The same values as ``evaluate(...)[idx]`` bit for bit, for less work: the Hill kernel
        runs only on the cells where some signal of the behaviour's rules is positive. Elsewhere
        every Hill term is 0, so the kernel would compute b0 + (M - b0)·0 and then
        b + (m - b)·0, which is b0 exactly; b0 is written directly. In the AML rules most cells
        touch no BLC and are not bound, so most cells take that path.

        Args:
            kind, behaviour: as for ``evaluate``.
            signals: signal name -> per-cell values (full length; indexed with ``idx``).
            idx: int indices of the cells wanted.
            kernel: the Hill kernel (default the numba one; tests pass the numpy twin).

        Returns:
            float64 array of length ``idx.size``.
        """
        from .kernels.hill import hill_behaviour

        pk = self.packed(kind, behaviour)
        out = np.full(idx.size, pk.base)
        names = pk.up + pk.down
        if not names or idx.size == 0:
            return out
        active = signals[names[0]][idx] > 0.0
        for s in names[1:]:
            active |= signals[s][idx] > 0.0
        a = np.flatnonzero(active)
        if a.size == 0:
            return out
        ia = idx[a] if a.size < idx.size else idx
        m = ia.size
        us = np.empty((len(pk.up), m))
        for j, s in enumerate(pk.up):
            us[j] = signals[s][ia]
        ds = np.empty((len(pk.down), m))
        for j, s in enumerate(pk.down):
            ds[j] = signals[s][ia]
        vals = np.empty(m)
        (kernel or hill_behaviour)(np.full(m, pk.base), us, pk.up_half, pk.up_pow, pk.up_max,
                                   ds, pk.down_half, pk.down_pow, pk.down_min, vals)
        if a.size == idx.size:
            return vals
        out[a] = vals
        return out

    def table(self, kind: str, behaviours: Sequence[str], signals: Sequence[str]
              ) -> np.ndarray:
        """The rules of several behaviours of ``kind`` as one table for fused kernels
        (``kernels.hill.behaviour_value``).

        Args:
            kind: cell kind.
            behaviours: behaviour names; behaviour ``j`` of the table is ``behaviours[j]``.
            signals: names of the rows of the signal matrix the kernels will be given; every
                signal these rules read must be among them.

        Returns:
            (len(behaviours), 5 + 6·W) float64 array, W the most rules on one side of one
            behaviour. Row b: base value, number of up rules, up saturation, number of down
            rules, down saturation, then W (signal row, half-max, power) triples of up rules
            and W of down rules (padded), in the order ``rules_for`` gives (the order
            ``evaluate`` sums them in). One array, so a kernel takes the whole rule set as one
            argument.
        """
        row = {s: j for j, s in enumerate(signals)}
        packs = [self.packed(kind, b) for b in behaviours]
        width = max([1] + [max(len(p.up), len(p.down)) for p in packs])
        tab = np.zeros((len(behaviours), 5 + 6 * width), dtype=np.float64)
        for j, p in enumerate(packs):
            tab[j, 0] = p.base
            tab[j, 1:5] = len(p.up), p.up_max, len(p.down), p.down_min
            for off, names, half, power in ((5, p.up, p.up_half, p.up_pow),
                                            (5 + 3 * width, p.down, p.down_half, p.down_pow)):
                missing = [s for s in names if s not in row]
                if missing:
                    raise ValueError(f"{kind}.{behaviours[j]} reads {', '.join(missing)}, "
                                     "which is not in the signal matrix")
                for r, name in enumerate(names):
                    tab[j, off + 3 * r: off + 3 * r + 3] = row[name], half[r], power[r]
        return tab

    def describe(self) -> list[str]:
        """Every rule in English, with its base value when the scenario gives it."""
        lines = []
        for r in self.rules:
            base = self.bases.get(r.kind, {}).get(r.behaviour)
            lines.append(describe(r, base))
        return lines


def scenario_rules(scenario) -> RuleSet:
    """The checked RuleSet of a loaded scenario (``[[rules]]`` plus ``rules_csv`` files)."""
    data = scenario.data
    triples = rules_from_data(data, scenario.base_dir())
    bases = data.get("behaviours", {}) or {}
    check_rules(triples, data.get("fields", {}), bases)
    return RuleSet([t[0] for t in triples], bases)
