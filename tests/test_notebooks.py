"""Notebook hygiene, and the whole workbook run by the runner in smoke mode.

nbval executes every notebook too (``--nbval-lax`` over ``notebooks/``, see pyproject.toml).
"""

import json
import time
from pathlib import Path

import nbformat
import pytest

from toolkit import report, runner

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


def test_there_are_chapters():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "01_overview.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_stored_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb.metadata, "no widget state in the stored file"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        checked = "# NBVAL_CHECK_OUTPUT" in cell.source
        if not checked:
            assert cell.outputs == [], f"outputs stored in a cell that nbval does not check:\n{cell.source[:80]}"
            assert cell.execution_count is None
        for output in cell.get("outputs", []):
            assert "execution_count" not in output or output["execution_count"] is None or checked
        assert "execution" not in cell.metadata, "no execution timestamps in the stored file"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_follows_the_chapter_conventions(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "What you will learn" in first.source and "Time needed" in first.source
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters`"
    assert 'SMOKE = os.environ.get("WORKBOOK_SMOKE") == "1"' in tagged[0].source
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "toolkit.setup()" in code
    assert code.count("SMOKE") > 2, "the chapter uses SMOKE beyond declaring it"
    assert "toolkit.exercises.check(" in code, "at least one exercise with a check"
    assert "toolkit.claims.claim(" in code, "the chapter's key claims are checked"
    assert any(c.cell_type == "markdown" and c.source.startswith("## Recap") for c in nb.cells)
    assert (ROOT / "lessons" / f"{path.stem}.md").is_file(), "every chapter has a lesson plan"


def test_unknown_chapter_name_is_a_clear_error():
    with pytest.raises(ValueError, match="matches no chapter; accepted: 01_overview"):
        runner.select(["99_nothing"])


@pytest.mark.slow
def test_runner_executes_the_workbook_in_smoke_mode(tmp_path):
    start = time.perf_counter()
    runs = runner.run_workbook(out_dir=tmp_path, smoke=True, results_dir=tmp_path / "results")
    seconds = time.perf_counter() - start
    assert [r.status for r in runs] == ["ok"] * len(NOTEBOOKS), [r.status for r in runs]
    for run in runs:
        assert run.output.is_file() and run.seconds < 60, f"{run.notebook} smoke run took {run.seconds:.0f} s"
        executed = nbformat.read(run.output, as_version=4)
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "SMOKE = True" in injected[0].source
    results = report.load_results(tmp_path / "results")
    assert {"fp32", "fp16", "bf16"} <= {r.technique for r in results}
    assert all(r.smoke for r in results), "smoke runs are marked as such"
    assert all(r.extra["test_examples"] == 64 for r in results), "smoke mode uses the small test slice"
    text = (tmp_path / "report.md").read_text()
    assert "| 01 | bf16 (smoke) |" in text and (tmp_path / "report_chart.png").is_file()
    print(f"smoke workbook: {seconds:.0f} s")


@pytest.mark.slow
def test_a_failing_chapter_is_reported_not_hidden(tmp_path):
    chapters = tmp_path / "notebooks"
    chapters.mkdir()
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    params = nbformat.v4.new_code_cell("SMOKE = False")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("raise RuntimeError('the chapter broke')")]
    nbformat.write(nb, chapters / "01_broken.ipynb")
    runs = runner.run_workbook(out_dir=tmp_path / "out", smoke=True, notebooks_dir=chapters)
    assert runs[0].status.startswith("failed") and "the chapter broke" in runs[0].status
    assert "| 01_broken.ipynb | failed" in (tmp_path / "out" / "report.md").read_text()
