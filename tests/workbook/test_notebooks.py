"""Notebook hygiene, and the whole workbook run once by the runner in smoke mode.

Every chapter is executed exactly once per test session (the ``smoke_workbook`` fixture);
the checks that need executed notebooks read that one run: every chapter finished, the
outputs stored in ``# NBVAL_CHECK_OUTPUT`` cells are reproduced exactly, and no stderr
output carries library noise that nobody has accounted for. (nbval can still check one
notebook by hand: ``pytest --nbval-lax --nbval-current-env notebooks/02_*.ipynb``.)
"""

import os
import re
import time
from pathlib import Path

import nbformat
import pytest

from toolkit.workbook import claims, report, runner

ROOT = Path(__file__).resolve().parents[2]
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
    assert "toolkit.workbook.exercises.check(" in code, "at least one exercise with a check"
    assert "toolkit.workbook.claims.ChapterClaims(CHAPTER, smoke=SMOKE)" in code, "the chapter's key claims are checked"
    assert any(c.cell_type == "markdown" and c.source.startswith("## Recap") for c in nb.cells)
    assert (ROOT / "lessons" / f"{path.stem}.md").is_file(), "every chapter has a lesson plan"


def test_unknown_chapter_name_is_a_clear_error():
    with pytest.raises(ValueError, match="matches no chapter; accepted: 01_overview"):
        runner.select(["99_nothing"])


# Generous guard against a hang, not a speed test: a smoke chapter takes under a minute on a
# quiet 2-core machine, but with one busy-loop process beside it, torch's two threads share a
# core and Chapter 3 took about ten minutes. The runner records the real minutes in the report.
HANG_GUARD_S = 1800


@pytest.fixture(scope="session")
def smoke_workbook():
    out = ROOT / "build" / "test-smoke"
    start = time.perf_counter()
    # two chapters at a time: a smoke chapter spends much of its time in single-threaded work
    runs = runner.run_workbook(out_dir=out, smoke=True, results_dir=out / "results", jobs=2)
    print(f"smoke workbook: {time.perf_counter() - start:.0f} s")
    return out, runs


@pytest.mark.slow
def test_runner_executes_the_workbook_in_smoke_mode(smoke_workbook):
    out, runs = smoke_workbook
    assert [r.status for r in runs] == ["ok"] * len(NOTEBOOKS), [r.status for r in runs]
    for run in runs:
        assert run.output.is_file() and run.seconds < HANG_GUARD_S, f"{run.notebook} smoke run took {run.seconds:.0f} s"
        assert run.peak_rss_mb and run.peak_rss_mb > 100, "the kernel's peak memory is recorded"
        executed = nbformat.read(run.output, as_version=4)
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "SMOKE = True" in injected[0].source
    results = report.load_results(out / "results")
    assert {"fp32", "fp16", "bf16"} <= {r.technique for r in results}
    assert all(r.smoke for r in results), "smoke runs are marked as such"
    assert all(r.extra["test_examples"] == 64 for r in results), "smoke mode uses the small test slice"
    text = (out / "report.md").read_text()
    assert "| 01 | bf16 (smoke) |" in text and (out / "report_chart.png").is_file()
    assert "peak memory (MB)" in text and "accuracy (95% CI)" in text
    assert re.search(r"\| 01 \| bf16 \(smoke\) \|.*\| \d+\.\d% \(\d+\.\d-\d+\.\d\) \|", text), "accuracy with its interval"


def _checked_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_checked_outputs_are_reproduced(smoke_workbook, path):
    out, _ = smoke_workbook
    stored = [c for c in nbformat.read(path, as_version=4).cells if "# NBVAL_CHECK_OUTPUT" in c.source]
    executed = {c.source: c for c in nbformat.read(out / "notebooks" / path.name, as_version=4).cells}
    for cell in stored:
        assert _checked_text(cell), "a checked cell stores the output it must reproduce"
        assert _checked_text(executed[cell.source]) == _checked_text(cell), f"output changed:\n{cell.source[:80]}"


# stderr output that the workbook has accounted for: (pattern, why it is harmless and left visible)
ACCOUNTED_STDERR = (
    (r"^\s*$", "empty"),
    (r"it/s\]|s/it\]|\d+%\|", "a tqdm progress bar rendered as text (papermill has no widget front end)"),
)


def unaccounted_stderr(notebook: Path) -> list[str]:
    """Lines written to stderr by a notebook's cells that match no ACCOUNTED_STDERR pattern."""
    found = []
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                for line in output.get("text", "").replace("\r", "\n").splitlines():
                    if not any(re.search(pattern, line) for pattern, _ in ACCOUNTED_STDERR):
                        found.append(line)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_unaccounted_library_noise(smoke_workbook, path):
    out, _ = smoke_workbook
    noise = unaccounted_stderr(out / "notebooks" / path.name)
    assert not noise, "stderr output nobody has accounted for (silence it where it arises, or explain it):\n" + "\n".join(noise[:10])


def test_the_noise_scan_catches_library_noise(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("import torchao")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="Failed to load /x/torchao/_C_mxfp8.so: Could not load\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="train: 100%|##########| 10/10 [00:01<00:00, 9.1it/s]\n")]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "n.ipynb")
    assert unaccounted_stderr(tmp_path / "n.ipynb") == ["Failed to load /x/torchao/_C_mxfp8.so: Could not load"]


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


@pytest.mark.slow
def test_chapters_run_two_at_a_time_in_order_with_their_own_memory_and_threads(tmp_path):
    chapters = tmp_path / "notebooks"
    chapters.mkdir()
    for number, megabytes in (("01", 10), ("02", 300)):
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
        params = nbformat.v4.new_code_cell("SMOKE = False")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(
            f"import os, time\nblock = bytearray({megabytes} * 2**20)\ntime.sleep(1.5)\nprint('threads', os.environ.get('OMP_NUM_THREADS'))")]
        nbformat.write(nb, chapters / f"{number}_demo.ipynb")
    runs = runner.run_workbook(out_dir=tmp_path / "out", smoke=True, notebooks_dir=chapters, jobs=2)
    assert [r.notebook for r in runs] == ["01_demo.ipynb", "02_demo.ipynb"] and all(r.status == "ok" for r in runs)
    assert runs[1].peak_rss_mb - runs[0].peak_rss_mb > 200, "each chapter's peak is its own kernel's"
    assert "ran 2 at a time" in (tmp_path / "out" / "report.md").read_text()
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert all(f"threads {threads}" in nbformat.read(r.output, as_version=4).cells[-1].outputs[0]["text"] for r in runs)
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        runner.run_workbook(out_dir=tmp_path / "out", notebooks_dir=chapters, jobs=0)
    with pytest.raises(SystemExit):
        runner.main(["--jobs", "2", "01_overview"])


def _claim_notebook(folder: Path) -> Path:
    """A chapter whose speed claim fails clearly (every round at 0.5x where 2x is expected on AMX)."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    params = nbformat.v4.new_code_cell("SMOKE = False")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            "import toolkit\n"
            "from toolkit.measure import SpeedComparison\n"
            "slow = SpeedComparison('fp32', 'bf16', 0.5, 0.45, 0.55, 100.0, 200.0, 15, 'batch 64 x 40 tokens', 2)\n"
            "verdict = toolkit.workbook.claims.speed_claim('bf16-vs-fp32', slow, features=('amx_bf16',), chapter='98', smoke=SMOKE)"
        ),
        nbformat.v4.new_code_cell("print('the chapter finished with verdict', verdict)"),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "98_claim.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_a_failed_claim_is_a_notice_in_a_readers_session(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.delenv(claims.ENFORCE_ENV, raising=False)  # a reader's Jupyter: not the runner
    monkeypatch.setenv("WORKBOOK_RESULTS_DIR", str(tmp_path / "results"))
    path = _claim_notebook(tmp_path / "notebooks")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}, timeout=120).execute()
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "Notice: this run did not confirm" in text and "widened to fp32" in text, text
    assert "the chapter finished with verdict does not hold" in text
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_a_failed_claim_fails_the_chapter_under_the_runner(tmp_path):
    _claim_notebook(tmp_path / "notebooks")
    runs = runner.run_workbook(out_dir=tmp_path / "out", smoke=False, notebooks_dir=tmp_path / "notebooks")
    assert runs[0].status.startswith("failed") and "ClaimFailed" in runs[0].status, runs[0].status
    assert claims.ENFORCE_ENV not in __import__("os").environ or __import__("os").environ[claims.ENFORCE_ENV] != "1", \
        "the runner restores the caller's environment"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_chapter_asks_for_a_prediction_and_sets_a_checked_design_task(path):
    nb = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "Predict, then run" in markdown, "a 'predict, then run' prompt before a key experiment"
    guesses = re.findall(r"^(MY_\w*GUESS) = ", code, re.M)
    assert guesses, "the reader writes the prediction into a MY_...GUESS variable"
    for name in guesses:
        assert code.count(name) >= 2, f"{name} is never compared with the measurement"
    assert re.search(r"^## \d+\. Design task", markdown, re.M), "a numbered 'Design task' section"
    assert re.search(r"^(design|design_path) = None", code, re.M) and "def check_design(" in code, "the design task's target is checked by a cell"


def test_the_first_cell_says_what_to_install_when_the_toolkit_is_missing():
    import json
    import subprocess
    import sys

    firsts = [next(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code") for p in NOTEBOOKS]
    script = (
        "import json, sys\n"
        "sys.modules['toolkit'] = None  # a kernel without the workbook: import toolkit raises ModuleNotFoundError\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\n"
        "for source in json.loads(sys.argv[1]):\n"
        "    result = shell.run_cell(source)\n"
        "    print('RESULT', type(result.error_in_exec).__name__, 'torch' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, json.dumps(firsts)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert out.count("RESULT WorkbookNotInstalled False") == len(NOTEBOOKS), out[-2000:]  # stopped before any heavy import
    assert out.count("make install") == len(NOTEBOOKS) and "%pip install -c constraints.txt -e ." in out
    assert "Traceback" not in out and "ModuleNotFoundError" not in out, "a message, not a traceback"
