"""The claims report's figure links are read from the report's own folder."""

import os

from marrow_abm.claims import ClaimResult, section_markdown


def test_figure_links_are_relative_to_the_report_folder(tmp_path, monkeypatch):
    out = tmp_path / "docs" / "validation"
    out.mkdir(parents=True)
    fig = out / "a7.png"
    fig.write_bytes(b"png")
    monkeypatch.chdir(tmp_path)
    for out_dir, figure in ((out, fig),                                   # absolute
                            (os.path.join("docs", "validation"),          # relative, as the CLI
                             os.path.join("docs", "validation", "a7.png"))):
        md = section_markdown("t", [ClaimResult("A7", "t", True, "x", {}, [figure])], out_dir)
        assert "![A7](a7.png)" in md, md
