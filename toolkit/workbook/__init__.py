"""The workbook's machinery: what runs, checks and presents the chapters (the library is the rest of ``toolkit``).

- ``report``      one result record per technique, the comparison table and chart, the round-trip workflow
- ``claims``      a chapter's key statements, checked against its own measurements
- ``exercises``   checks with hints (English and Chinese); an untouched stub falls back to the reference
- ``widgets``     interactive explorers (logic testable without a browser)
- ``runner``      runs every chapter with papermill and writes ``build/report.md``
- ``html``        the executed chapters as static pages (``make html``)
- ``lab``         JupyterLab with the workbook's kernel and settings (``make lab``)
- ``index``       where each function is taught: ``lessons/toolkit-index.md``, generated from the chapters
- ``audit``       the static sentences that state a quantity, each registered with its verdict
- ``vision``      chapter 7's small image task: scikit-learn's digits and a tiny ResNet

Each module loads on first use (``toolkit.workbook.report``), as in ``toolkit`` itself.
"""

import importlib

SUBMODULES = ("audit", "claims", "exercises", "html", "index", "lab", "report", "runner", "vision", "widgets")

__all__ = list(SUBMODULES)


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f"toolkit.workbook.{name}")
    raise AttributeError(f"module 'toolkit.workbook' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
