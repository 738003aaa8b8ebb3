"""``build/report.md``: every record and claim of a run in one Markdown file, with the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from toolkit import artifacts, runtime
from toolkit.workbook import claims
from toolkit.workbook.report.chart import tradeoff_chart
from toolkit.workbook.report.records import load_results
from toolkit.workbook.report.table import best_tradeoffs, comparison_table


def write_report(
    results_dir: Path | None = None,
    out_path: Path = Path("build/report.md"),
    run_log: Iterable[dict] = (),
    run_line: str = "",
) -> Path:
    """Gather every record and claim into one Markdown report with the comparison chart (``run_line``: when, which
    commit and which mode the chapters ran, written under their table's heading)."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # the report is written outside any notebook
    import matplotlib.pyplot as plt

    folder = Path(results_dir) if results_dir is not None else runtime.results_dir()
    out_path = Path(out_path)
    results = load_results(folder)
    chart = out_path.with_name("report_chart.png")
    lines = ["# Compression workbook: results", ""]
    run_log = list(run_log)
    if run_log:
        lines += ["## Chapters run", ""] + ([run_line, ""] if run_line else []) + [
                  "| notebook | status | minutes | budget (min) | peak memory (MB) |",
                  "| --- | --- | ---: | ---: | ---: |"]
        for e in run_log:
            budget = e.get("budget_minutes")
            over = budget is not None and e["seconds"] / 60 > budget
            budget_text = "n/a" if budget is None else f"{budget:.1f}" + (" **over budget**" if over else "")
            rss = e.get("peak_rss_mb")
            lines.append(f"| {e['notebook']} | {e['status']} | {e['seconds'] / 60:.1f} | {budget_text} | "
                         f"{'n/a' if rss is None else f'{rss:,.0f}'} |")
        total = sum(e["seconds"] for e in run_log) / 60
        jobs = max(e.get("jobs", 1) for e in run_log)
        shared = (f" The chapters ran {jobs} at a time, each with a share of the cores: the wall clock was shorter, and a "
                  "chapter's minutes are not its time alone." if jobs > 1 else "")
        lines += ["", f"Total: {total:.1f} minutes for {len(run_log)} chapters.{shared} Budgets are full-mode minutes on a "
                  "2-core laptop; a chapter over budget is a finding to look into, not a failure.", ""]
    lines += ["## Every technique", ""]
    hardware = next((r.hardware for r in results if r.hardware), "")
    if hardware:
        lines += [f"Measured on: {hardware}", ""]
    lines += [comparison_table(results), ""]
    sizes = sorted({int(r.extra["test_examples"]) for r in results if r.extra.get("test_examples")})
    if sizes:
        lines += [f"Accuracy is measured on {', '.join(map(str, sizes))} held-out test sentences (one sentence = "
                  f"{100 / sizes[-1]:.2f} points); the brackets give its 95% Wilson interval. Two rows whose intervals "
                  "overlap are not shown different by this table alone: the chapters compare models on the same "
                  "sentences with a paired (McNemar) test where they claim a difference.", ""]
    if results:
        fig = tradeoff_chart(results, chart)
        plt.close(fig)
        lines += [f"![size, latency and accuracy of every technique]({chart.name})", ""]
        lines += ["## Best trade-offs", "", "Techniques that nothing else beats on both cost and accuracy (the Pareto front), "
                  "from the cheapest to the most accurate. Latencies are medians taken one after the other, so small "
                  "differences between them mean little; the chapters' A/B ratios are the careful comparison.", "",
                  best_tradeoffs(results), ""]
    claim_rows = claims.load_claims(folder)
    if claim_rows:
        lines += ["## Claims checked", ""]
        counts = {}
        for c in claim_rows:
            kind = c["verdict"].split(":")[0].split(" (")[0]
            counts[kind] = counts.get(kind, 0) + 1
        lines += [f"{len(claim_rows)} claims: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) + ".", ""]
        if any(k.startswith("inconclusive") for k in counts):
            lines += ["⚠ An inconclusive speed claim was timed while other processes used the CPU (or its rounds straddled "
                      "the threshold): rerun that chapter on a quiet machine before quoting its speed.", ""]
        lines += ["| chapter | claim | verdict | evidence |", "| --- | --- | --- | --- |"]
        for c in claim_rows:
            lines.append(f"| {c['chapter']} | {c['statement']} | {c['verdict']} | {c['evidence']} |")
        lines.append("")
    artifacts.write_text(out_path, "\n".join(lines))
    return out_path
