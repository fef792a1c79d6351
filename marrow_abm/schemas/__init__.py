"""Schema sections of the biology topics, one module each (``aml.py``, ``mds.py`` ...).

Each module calls ``marrow_abm.schema.register_cell_kind`` / ``register_section`` (and may append
cross-key checks to ``marrow_abm.schema.CHECKS``) at import; ``marrow_abm.schema`` imports them
all when it loads.
"""
