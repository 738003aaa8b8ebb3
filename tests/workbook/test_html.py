"""`make html`: the executed chapters and the report as static pages with an index (toolkit.workbook.html)."""

import nbformat
import pytest

from toolkit.workbook import html


def test_render_writes_a_page_per_chapter_the_report_and_an_index(tmp_path):
    build = tmp_path / "build"
    (build / "notebooks").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('measured 93.3%')")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="measured 93.3%\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Chapter 1 · A title\n\ntext"), cell]
    nbformat.write(nb, build / "notebooks" / "01_demo.ipynb")
    (build / "report.md").write_text("# Report\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    out = html.render(build)
    assert out == build / "html"
    index = (out / "index.html").read_text()
    assert 'href="01_demo.html"' in index and "Chapter 1 · A title" in index and 'href="report.html"' in index
    assert "measured 93.3%" in (out / "01_demo.html").read_text(), "the page shows the executed outputs"
    assert "<table>" in (out / "report.html").read_text()


def test_render_without_executed_chapters_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="make workbook"):
        html.render(tmp_path)
