"""Run the whole workbook: every chapter with papermill, then one report.

    python -m toolkit.runner                 # full mode -> build/notebooks/, build/report.md
    python -m toolkit.runner --smoke         # tiny subsets, as the tests run it
    python -m toolkit.runner 01_overview     # only the chapters named

Each notebook runs in its own kernel with ``notebooks/`` as working directory, the
``SMOKE`` parameter injected by papermill, and ``WORKBOOK_RESULTS_DIR`` pointing at the
results folder. A chapter that fails does not stop the others; the run exits non-zero
and the report says which chapter failed and where its executed notebook is.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit import claims, report, runtime

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass(frozen=True)
class ChapterRun:
    notebook: str
    status: str  # "ok" or "failed: <error>"
    seconds: float
    output: Path


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
    saved = {key: os.environ.get(key) for key in (runtime.RESULTS_ENV, runtime.SMOKE_ENV)}
    os.environ[runtime.RESULTS_ENV] = str(results_dir)  # inherited by every kernel
    os.environ[runtime.SMOKE_ENV] = "1" if smoke else "0"
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
        try:
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
        runs.append(ChapterRun(notebook.name, status, seconds, output))
        print(f"  {status} in {seconds:.0f} s -> {output}", flush=True)
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
    print(f"{len(runs) - len(failed)} of {len(runs)} chapters ran in {total / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
