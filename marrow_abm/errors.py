"""The project's own exceptions: every user-facing failure is one of these, never a traceback."""

from __future__ import annotations


class MarrowError(Exception):
    """Base class of every error marrow_abm reports to a user (CLI exit status 2)."""


class ScenarioError(MarrowError):
    """A scenario file, key or value is wrong.

    Args:
        message: what is wrong, in a sentence.
        file: the scenario file (or ``"--set"`` for a command-line override) the problem is in.
        key: the dotted key, e.g. ``fields.tgfb.decay_per_h``.
        suggestion: the nearest valid key or value, shown as "did you mean ...?".
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 suggestion: str | None = None):
        self.message = message
        self.file = file
        self.key = key
        self.suggestion = suggestion
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.key) if p)
        text = f"{where}: {self.message}" if where else self.message
        if self.suggestion:
            text += f" (did you mean '{self.suggestion}'?)"
        return text


class GeometryError(MarrowError):
    """A geometry cannot be built or a labelled image cannot be read or is malformed."""


class SolverError(MarrowError):
    """A field solver was asked for something it cannot do (unknown method, bad parameters)."""
