"""docs/scenarios.md is generated from the schema and must match it."""

from __future__ import annotations

from pathlib import Path

from marrow_abm import schema
from marrow_abm.scenario import list_scenarios

DOC = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"


def test_docs_scenarios_matches_schema():
    committed = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert committed == schema.schema_markdown(), (
        "docs/scenarios.md is out of date: regenerate with "
        "`python -m marrow_abm.schema > docs/scenarios.md`")


def test_schema_markdown_lists_every_key_and_bundled_scenario():
    text = schema.schema_markdown()
    for pattern, node in schema.describe_keys():
        if isinstance(node, schema.Key):
            assert f"| `{pattern}` |" in text, pattern
    for info in list_scenarios():
        assert f"| `{info.name}` | {info.description} |" in text
    assert "| `fields.<field>.diffusion_um2_per_s` | float | µm²/s | 0 – 200 |" in text
