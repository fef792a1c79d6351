"""marrow_abm: a spatial agent-based simulator of the bone-marrow niche.

The engine (structure-of-arrays cells, diffusing fields, rules as data) never imports Mesa;
``marrow_abm.model.MarrowModel`` is a thin Mesa façade over it for the browser app.
"""

__all__ = ["__version__"]


def __getattr__(name: str):
    # ``__version__`` is looked up on first use: importlib.metadata costs ~0.1 s, which every
    # batch worker process would pay at import (docs/performance.md, "Batches").
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("marrow-abm")
        except PackageNotFoundError:  # a source tree that was never installed
            value = "0.0.0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
