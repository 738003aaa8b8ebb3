"""Run the whole workbook: every chapter with papermill, then one report.

    python -m toolkit.runner                 # full mode -> build/notebooks/, build/report.md
    python -m toolkit.runner --smoke         # tiny subsets, as the tests run it
    python -m toolkit.runner 01_overview     # only the chapters named

Each notebook runs in its own kernel with ``notebooks/`` as working directory, the
``SMOKE`` parameter injected by papermill, and ``WORKBOOK_RESULTS_DIR`` pointing at the
results folder. A chapter that fails does not stop the others; the run exits non-zero
and the report says which chapter failed and where its executed notebook is.

The runner enforces the chapters' claims (``WORKBOOK_ENFORCE_CLAIMS=1``: a full-mode claim
that does not hold fails its chapter) and records each chapter's minutes and the peak memory
(resident set size) of its kernel. ``BUDGET_MINUTES`` is each chapter's full-mode time budget
on a 2-core laptop; the report and the runner's last lines flag a chapter over its budget
(a benchmark, not a test: no test fails because a machine is slower).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit import claims, report, runtime

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"

# Full-mode minutes each chapter may take on a 2-core laptop: about 10% above what each took on an AMD
# EPYC with AVX512-BF16 and no AMX, the slowest machine tried (chapter 1 includes the first fine-tune).
# Together 67.5 minutes: CI (install, workbook, tests) has 90 minutes on a 2-core machine, and the README
# says what each chapter took.
BUDGET_MINUTES = {"01": 6.5, "02": 1.0, "03": 8.0, "04": 11.0, "05": 7.5, "06": 5.5, "07": 5.5, "08": 14.5, "09": 8.0}


@dataclass(frozen=True)
class ChapterRun:
    notebook: str
    status: str  # "ok" or "failed: <error>"
    seconds: float
    output: Path
    peak_rss_mb: float | None = None  # the kernel's largest resident memory, sampled every 0.2 s
    budget_minutes: float | None = None


class PeakMemory:
    """Sample the resident memory of this process's children (the notebook kernel) until stopped."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s, self.peak_bytes = interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil  # a dependency of ipykernel

        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    self.peak_bytes = max(self.peak_bytes, child.memory_info().rss)
                except psutil.Error:  # the kernel exited between listing and reading
                    pass
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def megabytes(self) -> float | None:
        return self.peak_bytes / 2**20 if self.peak_bytes else None


def chapters(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The chapter notebooks, ``NN_topic.ipynb``, in order."""
    found = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no chapter notebooks (NN_topic.ipynb) in {notebooks_dir}")
    return found


def select(names: list[str], notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Chapters whose file name starts with one of ``names`` (all of them if none given)."""
    every = chapters(notebooks_dir)
    if not names:
        return every
    chosen = []
    for name in names:
        matches = [p for p in every if p.stem.startswith(name) or p.name == name]
        if not matches:
            raise ValueError(f"notebook {name!r} matches no chapter; accepted: {', '.join(p.stem for p in every)}")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def run_workbook(
    names: list[str] | None = None,
    out_dir: Path = Path("build"),
    smoke: bool = False,
    results_dir: Path | None = None,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    timeout_s: int = 1800,
) -> list[ChapterRun]:
    """Execute the chosen chapters and write ``<out_dir>/report.md``; return one entry per chapter."""
    out_dir = Path(out_dir).resolve()
    results_dir = Path(results_dir).resolve() if results_dir else out_dir / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    saved = {key: os.environ.get(key) for key in (runtime.RESULTS_ENV, runtime.SMOKE_ENV, claims.ENFORCE_ENV)}
    os.environ[runtime.RESULTS_ENV] = str(results_dir)  # inherited by every kernel
    os.environ[runtime.SMOKE_ENV] = "1" if smoke else "0"
    os.environ[claims.ENFORCE_ENV] = "1"  # a full-mode claim that does not hold fails the chapter
    try:
        runs = _run_chapters(select(names or [], notebooks_dir), out_dir, results_dir, smoke, timeout_s)
    finally:  # leave the caller's environment as it was
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    path = report.write_report(results_dir, out_dir / "report.md", [r.__dict__ for r in runs])
    print(f"report: {path}")
    return runs


def _run_chapters(notebooks: list[Path], out_dir: Path, results_dir: Path, smoke: bool, timeout_s: int) -> list[ChapterRun]:
    import papermill

    runs = []
    for notebook in notebooks:
        chapter = notebook.stem.split("_")[0]
        claims.reset(chapter, results_dir)
        for stale in (results_dir / chapter).glob("*.json"):
            stale.unlink()  # results of a chapter always come from its latest run
        output = out_dir / "notebooks" / notebook.name
        output.parent.mkdir(parents=True, exist_ok=True)
        print(f"running {notebook.name} ({'smoke' if smoke else 'full'} mode) ...", flush=True)
        start = time.perf_counter()
        memory = PeakMemory()
        try:
            with memory:
                papermill.execute_notebook(
                    str(notebook),
                    str(output),
                    parameters={"SMOKE": smoke},
                    kernel_name="python3",
                    cwd=str(notebook.parent),
                    progress_bar=False,
                    execution_timeout=timeout_s,
                )
            status = "ok"
        except Exception as error:  # papermill raises PapermillExecutionError with the cell's traceback
            status = f"failed: {type(error).__name__}: {str(error).strip().splitlines()[-1][:200]}"
        seconds = time.perf_counter() - start
        budget = None if smoke else BUDGET_MINUTES.get(chapter)
        runs.append(ChapterRun(notebook.name, status, seconds, output, memory.megabytes, budget))
        rss = f", peak memory {memory.megabytes:,.0f} MB" if memory.megabytes else ""
        print(f"  {status} in {seconds:.0f} s{rss} -> {output}", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="chapter prefixes such as 01 or 01_overview (default: all)")
    parser.add_argument("--out", type=Path, default=Path("build"), help="output folder (default: build)")
    parser.add_argument("--smoke", action="store_true", help="tiny subsets and few steps, as in the tests")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: <out>/results)")
    args = parser.parse_args(argv)
    runtime.quiet_third_party()
    logging.getLogger("papermill").setLevel(logging.ERROR)  # it cannot parse `SMOKE = os.environ...`: harmless
    runs = run_workbook(args.notebooks, args.out, args.smoke, args.results)
    failed = [r for r in runs if r.status != "ok"]
    for r in failed:
        print(f"FAILED {r.notebook}: {r.status} (see {r.output})", file=sys.stderr)
    total = sum(r.seconds for r in runs)
    for r in runs:
        if r.budget_minutes is not None and r.seconds / 60 > r.budget_minutes:
            print(f"over budget: {r.notebook} took {r.seconds / 60:.1f} min (budget {r.budget_minutes:.1f} min)")
    print(f"{len(runs) - len(failed)} of {len(runs)} chapters ran in {total / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
