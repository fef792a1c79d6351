"""marrow_abm: a spatial agent-based simulator of the bone-marrow niche.

The engine (structure-of-arrays cells, diffusing fields, rules as data) never imports Mesa;
``marrow_abm.model.MarrowModel`` is a thin Mesa façade over it for the browser app.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("marrow-abm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
