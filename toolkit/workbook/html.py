"""The executed workbook as static HTML, for readers who do not run it: ``make html``.

``render(build)`` converts every executed chapter in ``build/notebooks/`` (written by ``make workbook``)
with nbconvert's HTML exporter, converts ``build/report.md`` with nbconvert's Markdown filter, and
writes an index page that links them, into ``build/html/``. Every page is self-contained (figures
are embedded), so the folder can be published as it is.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Compressing a Hugging Face model: the executed workbook</title>
<style>body{{font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto;line-height:1.5}}td,th{{padding:.2rem .8rem;text-align:left}}</style>
</head><body>
<h1>Compressing a Hugging Face model: the executed workbook</h1>
<p>Every chapter as it ran, with its tables, figures and checked claims. The numbers are this run's, on the machine
named at the top of each chapter; <a href="report.html">the report</a> puts all chapters' models side by side.</p>
<table><tr><th>chapter</th><th>notebook</th></tr>
{rows}
</table>
</body></html>
"""


def chapter_title(notebook: dict) -> str:
    """The first Markdown heading of a notebook, without the leading #."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "markdown":
            source = "".join(cell.get("source", ""))
            for line in source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "(untitled)"


def render(build: Path, out: Path | None = None) -> Path:
    """Write ``out`` (default ``build/html``): one page per executed chapter, the report, and ``index.html``."""
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    build = Path(build)
    notebooks = sorted((build / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no executed chapters in {build / 'notebooks'}: run `make workbook` first")
    out = Path(out) if out is not None else build / "html"
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    rows = []
    for path in notebooks:
        body, _ = exporter.from_filename(str(path))
        (out / f"{path.stem}.html").write_text(body, encoding="utf-8")
        title = chapter_title(json.loads(path.read_text()))
        rows.append(f'<tr><td>{path.name[:2]}</td><td><a href="{path.stem}.html">{html.escape(title)}</a></td></tr>')
    for image in build.glob("*.png"):  # the report's chart, referenced by name
        (out / image.name).write_bytes(image.read_bytes())
    report = build / "report.md"
    text = report.read_text() if report.is_file() else "No report yet: run `make workbook`."
    (out / "report.html").write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Workbook report</title></head><body>'
        + markdown2html_mistune(text) + "</body></html>", encoding="utf-8")
    (out / "index.html").write_text(INDEX.format(rows="\n".join(rows)), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", nargs="?", default="build", help="the folder `make workbook` wrote (default: build)")
    args = parser.parse_args(argv)
    print(f"wrote {render(Path(args.build))}/index.html")


if __name__ == "__main__":
    main()
