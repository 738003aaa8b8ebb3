"""Run the whole workbook: every chapter with papermill, then one report.

    python -m toolkit.workbook.runner                 # full mode -> build/notebooks/, build/report.md
    python -m toolkit.workbook.runner --smoke         # tiny subsets, as the tests run it
    python -m toolkit.workbook.runner 01_overview     # only the chapters named
    python -m toolkit.workbook.runner --smoke --jobs 2  # two smoke chapters at a time, one thread each
    python -m toolkit.workbook.runner --readme build/report.md  # copy a full run's minutes into README.md

Each notebook runs in its own kernel with ``notebooks/`` as working directory, the
``SMOKE`` parameter injected by papermill, and ``WORKBOOK_RESULTS_DIR`` pointing at the
results folder. A chapter that fails does not stop the others; the run exits non-zero
and the report says which chapter failed and where its executed notebook is.

Each chapter runs in a papermill process of its own. ``--jobs N`` runs N chapters at a time, each
kernel limited to (cores / N) threads: worth it for smoke runs, whose time goes largely to
single-threaded work (kernel start, imports, model conversion). Never for full runs: the chapters
time models, and a timing beside another CPU-bound job measures the neighbour too.

The runner enforces the chapters' claims (``WORKBOOK_ENFORCE_CLAIMS=1``: a full-mode claim
that does not hold fails its chapter) and records each chapter's minutes and the peak memory
(resident set size) of its kernel. ``BUDGET_MINUTES`` is each chapter's full-mode time budget
on a 2-core laptop; the report and the runner's last lines flag a chapter over its budget
(a benchmark, not a test: no test fails because a machine is slower).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from toolkit import artifacts, runtime
from toolkit.workbook import claims, report
from toolkit.runtime import check_int

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"

# Full-mode minutes each chapter may take on a 2-core laptop: about 10% above what each took on an AMD
# EPYC with AVX512-BF16 and no AMX, the slowest machine tried (chapter 1 includes the first fine-tune).
# Together 74.5 minutes: CI (install, workbook, tests) has 90 minutes on a 2-core machine, and the README
# says what each chapter took.
BUDGET_MINUTES = {"01": 6.5, "02": 1.0, "03": 8.0, "04": 11.0, "05": 14.5, "06": 5.5, "07": 5.5, "08": 14.5, "09": 8.0, "10": 7.0}


@dataclass(frozen=True)
class ChapterRun:
    notebook: str
    status: str  # "ok" or "failed: <error>"
    seconds: float
    output: Path
    peak_rss_mb: float | None = None  # the kernel's largest resident memory, sampled every 0.2 s
    budget_minutes: float | None = None
    jobs: int = 1  # chapters that ran at a time (more than one: its minutes are not its time alone)


class PeakMemory:
    """Sample the resident memory of a process's descendants (a chapter's kernel) until stopped."""

    def __init__(self, pid: int | None = None, interval_s: float = 0.2):
        self.pid, self.interval_s, self.peak_bytes = pid, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil  # a dependency of ipykernel

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:  # the process ended before sampling began
            return
        while not self._stop.is_set():
            try:
                children = root.children(recursive=True)
            except psutil.Error:  # the process has ended
                return
            for child in children:
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
    jobs: int = 1,
) -> list[ChapterRun]:
    """Execute the chosen chapters (``jobs`` at a time) and write ``<out_dir>/report.md``; return one entry per
    chapter, in chapter order."""
    check_int("jobs", jobs, detail=' (chapters run at a time)')
    out_dir = Path(out_dir).resolve()
    results_dir = Path(results_dir).resolve() if results_dir else out_dir / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    saved = {key: os.environ.get(key) for key in (runtime.RESULTS_ENV, runtime.SMOKE_ENV, claims.ENFORCE_ENV)}
    os.environ[runtime.RESULTS_ENV] = str(results_dir)  # inherited by every kernel
    os.environ[runtime.SMOKE_ENV] = "1" if smoke else "0"
    os.environ[claims.ENFORCE_ENV] = "1"  # a full-mode claim that does not hold fails the chapter
    try:
        runs = _run_chapters(select(names or [], notebooks_dir), out_dir, results_dir, smoke, timeout_s, jobs)
    finally:  # leave the caller's environment as it was
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    path = report.write_report(results_dir, out_dir / "report.md", [r.__dict__ for r in runs], run_line(smoke, jobs))
    print(f"report: {path}")
    return runs


def run_line(smoke: bool, jobs: int) -> str:
    """One line saying when, from which commit and in which mode the chapters ran (for the report and the README)."""
    try:
        commit = subprocess.run(["git", "-C", str(NOTEBOOKS_DIR.parent), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
        changed = subprocess.run(["git", "-C", str(NOTEBOOKS_DIR.parent), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # no git: a copied folder
        commit, changed = "unknown", ""
    return (f"Run: {time.strftime('%Y-%m-%d', time.gmtime())}, commit {commit}{' with local changes' if changed else ''}, "
            f"{'smoke' if smoke else 'full'} mode, {jobs} chapter{'s' if jobs > 1 else ''} at a time.")


# ----------------------------------------------------------------------------- the README's minutes
README_START = "<!-- chapter-minutes: copied from build/report.md by `python -m toolkit.workbook.runner --readme build/report.md`; do not edit -->"
README_END = "<!-- /chapter-minutes -->"


def readme_section(report_text: str) -> str:
    """The README's block of chapter minutes, copied from a runner's report (``build/report.md``).

    It keeps the report's run line, its table of chapters run (minutes, budget, peak memory), its total and
    the machine the chapters measured on. A smoke run, a run with a failed
    chapter or one missing a chapter is refused: the README quotes a full run of the whole workbook.
    The block can be read back as a report, so regenerating it from itself changes nothing (tested).
    """
    lines = report_text.splitlines()
    rows = [line for line in lines if line.startswith("| ") and line.split("|")[1].strip().endswith(".ipynb")]
    run = next((line for line in lines if line.startswith("Run: ")), "")
    machine = next((line for line in lines if line.startswith("Measured on: ")), "")
    names = [row.split("|")[1].strip() for row in rows]
    expected = [p.name for p in chapters()]
    if names != expected:
        raise ValueError(f"the report must list every chapter once, in order ({', '.join(expected)}); it lists {names or 'none'}")
    if "full mode" not in run or not machine:
        raise ValueError("the report must come from a full-mode run of the runner (its 'Run: ... full mode' and 'Measured on:' "
                         f"lines); got run line {run!r}")
    failed = [row.split("|")[1].strip() for row in rows if row.split("|")[2].strip() != "ok"]
    if failed:
        raise ValueError(f"chapters that did not run to the end cannot be quoted: {', '.join(failed)}")
    stated = next((line.split()[1] for line in lines if line.startswith("Total: ") and " minutes for " in line), None)
    total = float(stated) if stated else sum(float(row.split("|")[3]) for row in rows)  # the report's, from unrounded seconds
    return "\n".join([README_START, "", run, "",
                      "| notebook | status | minutes | budget (min) | peak memory (MB) |", "| --- | --- | ---: | ---: | ---: |",
                      *rows, "", f"Total: {total:.1f} minutes for {len(rows)} chapters.", "", machine, "", README_END])


def update_readme(report_path: Path, readme_path: Path = NOTEBOOKS_DIR.parent / "README.md") -> str:
    """Replace the README's block of chapter minutes with the one from ``report_path``; return the block."""
    block = readme_section(Path(report_path).read_text())
    text = Path(readme_path).read_text()
    if text.count(README_START) != 1 or text.count(README_END) != 1:
        raise ValueError(f"{readme_path} must hold the block's markers once each:\n{README_START}\n{README_END}")
    before, rest = text.split(README_START)
    after = rest.split(README_END, 1)[1]
    artifacts.write_text(readme_path, before + block + after)
    return block


def _run_chapters(notebooks: list[Path], out_dir: Path, results_dir: Path, smoke: bool, timeout_s: int,
                  jobs: int) -> list[ChapterRun]:
    for notebook in notebooks:
        chapter = notebook.stem.split("_")[0]
        claims.reset(chapter, results_dir)
        for stale in (results_dir / chapter).glob("*.json"):
            stale.unlink()  # results of a chapter always come from its latest run
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    # the longest chapters first (by budget), so that parallel runs end together
    queue = sorted(notebooks, key=lambda n: -BUDGET_MINUTES.get(n.stem.split("_")[0], 0)) if jobs > 1 else notebooks
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        done = dict(zip(queue, pool.map(lambda n: _run_chapter(n, out_dir, smoke, timeout_s, threads, jobs), queue)))
    return [done[n] for n in notebooks]


def _run_chapter(notebook: Path, out_dir: Path, smoke: bool, timeout_s: int, threads: int | None, jobs: int) -> ChapterRun:
    """Execute one chapter with papermill in a process of its own (so its kernel's memory is its own)."""
    chapter = notebook.stem.split("_")[0]
    output = out_dir / "notebooks" / notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)
    print(f"running {notebook.name} ({'smoke' if smoke else 'full'} mode) ...", flush=True)
    command = [sys.executable, "-m", "papermill", str(notebook), str(output), "-p", "SMOKE", str(smoke),
               "-k", "python3", "--cwd", str(notebook.parent), "--no-progress-bar",
               "--execution-timeout", str(timeout_s), "--log-level", "ERROR"]
    env = dict(os.environ) | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakMemory(process.pid) as memory:
        _, errors = process.communicate()
    seconds = time.perf_counter() - start
    if process.returncode == 0:
        status = "ok"
    else:  # papermill ends with the failing cell's exception, e.g. "RuntimeError: the chapter broke"
        lines = [line.strip() for line in errors.splitlines() if line.strip()]
        status = f"failed: {(lines[-1] if lines else f'papermill exited with {process.returncode}')[:200]}"
    budget = None if smoke else BUDGET_MINUTES.get(chapter)
    rss = f", peak memory {memory.megabytes:,.0f} MB" if memory.megabytes else ""
    print(f"  {notebook.name}: {status} in {seconds:.0f} s{rss} -> {output}", flush=True)
    return ChapterRun(notebook.name, status, seconds, output, memory.megabytes, budget, jobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="chapter prefixes such as 01 or 01_overview (default: all)")
    parser.add_argument("--out", type=Path, default=Path("build"), help="output folder (default: build)")
    parser.add_argument("--smoke", action="store_true", help="tiny subsets and few steps, as in the tests")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: <out>/results)")
    parser.add_argument("--jobs", type=int, default=1, help="chapters at a time (default 1; more only for --smoke)")
    parser.add_argument("--readme", type=Path, default=None, metavar="REPORT",
                        help="run nothing: copy the chapter minutes of REPORT (a full run's build/report.md) into README.md")
    args = parser.parse_args(argv)
    if args.readme is not None:
        print(update_readme(args.readme))
        return 0
    if args.jobs > 1 and not args.smoke:
        parser.error("--jobs above 1 needs --smoke: full-mode chapters time their models, and a timing beside "
                     "another chapter measures both")
    runtime.quiet_third_party()
    runs = run_workbook(args.notebooks, args.out, args.smoke, args.results, jobs=args.jobs)
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
