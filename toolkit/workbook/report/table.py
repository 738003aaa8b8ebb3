"""The comparison table: every technique beside its chapter's fp32 and bf16 baselines, and the Pareto fronts."""

from __future__ import annotations

from typing import Sequence

from toolkit.measure import accuracy_interval
from toolkit.workbook.claims import BUSY_LOAD  # other processes' share of the CPU above which a timing is not trusted
from toolkit.workbook.report.records import Result


def _find(results: Sequence[Result], technique: str, chapter: str | None = None) -> Result | None:
    """The baseline for a row: the same chapter's record if it has one (measured in the same run), else the first."""
    same = next((r for r in results if r.technique == technique and r.chapter == chapter), None)
    return same or next((r for r in results if r.technique == technique), None)


NOISY_SPREAD = 1.5  # p90 / p10 above this: the timing was disturbed


def _noisy(latency: dict | None) -> bool:
    """A timing with a wide spread, or taken while other processes used much of the CPU."""
    return bool(latency) and (latency["p90_ms"] > NOISY_SPREAD * latency["p10_ms"] or (latency.get("other_load") or 0.0) > BUSY_LOAD)


def _with_spread(median: float, latency: dict | None) -> str:
    """'12.3 (11.9-13.0)': the median, then the 10th-90th percentile spread when it was recorded;
    a ⚠ marks a spread wider than NOISY_SPREAD (something else used the CPU during the timing)."""
    if not latency:
        return f"{median:.1f}"
    return f"{median:.1f} ({latency['p10_ms']:.1f}-{latency['p90_ms']:.1f})" + (" ⚠" if _noisy(latency) else "")


def accuracy_with_interval(result: Result) -> str:
    """'93.3% (90.6-95.3)': accuracy and its 95% Wilson interval over the sentences it was measured on."""
    n = result.extra.get("test_examples")
    if not n:
        return f"{result.accuracy:.1%}"
    lo, hi = accuracy_interval(result.accuracy, int(n))
    return f"{result.accuracy:.1%} ({lo * 100:.1f}-{hi * 100:.1f})"


def comparison_table(results: Sequence[Result]) -> str:
    """A Markdown table: size, compression, latencies (median and p10-p90), speedups vs fp32 and bf16,
    accuracy with its 95% interval (Wilson, over the test sentences).

    Each row is compared with the fp32 and bf16 baselines of its own chapter's run. The speed-ups
    divide medians taken one after the other; the chapters' speed *claims* use A/B-interleaved
    ratios instead (``toolkit.measure.compare_latency``).

    Taught in: chapter 1, section 5 (The landscape of techniques).
    """
    if not results:
        return "_no results recorded yet_"
    header = (
        "| chapter | technique | size (MB) | compression vs fp32 | batch 1 ms, median (p10-p90) | batch 64 ms, median (p10-p90) | speedup vs fp32 | "
        "speedup vs bf16 | accuracy (95% CI) | change vs fp32 |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    rows = []
    for r in results:
        fp32, bf16 = _find(results, "fp32", r.chapter), _find(results, "bf16", r.chapter)
        ratio = f"{fp32.bytes_on_disk / r.bytes_on_disk:.2f}x" if fp32 else "n/a"
        vs32 = f"{fp32.latency_ms_batch64 / r.latency_ms_batch64:.2f}x" if fp32 else "n/a"
        vs16 = f"{bf16.latency_ms_batch64 / r.latency_ms_batch64:.2f}x" if bf16 else "n/a"
        delta = f"{(r.accuracy - fp32.accuracy) * 100:+.1f} pts" if fp32 else "n/a"
        mode = " (smoke)" if r.smoke else ""
        rows.append(
            f"| {r.chapter} | {r.technique}{mode} | {r.megabytes:.1f} | {ratio} | "
            f"{_with_spread(r.latency_ms_batch1, r.extra.get('latency_batch1'))} | "
            f"{_with_spread(r.latency_ms_batch64, r.extra.get('latency_big_batch'))} | {vs32} | {vs16} | {accuracy_with_interval(r)} | {delta} |"
        )
    if any(_noisy(r.extra.get(k)) for r in results for k in ("latency_batch1", "latency_big_batch")):
        rows.append("")
        rows.append(f"⚠ a latency whose 10th-90th percentile spread exceeds {NOISY_SPREAD}x, or taken while other processes used "
                    f"more than {BUSY_LOAD:.0%} of the CPU: speed-ups computed from it mislead. The chapters' speed claims use "
                    "A/B-interleaved ratios (toolkit.measure.compare_latency) and are inconclusive on a busy machine.")
    return "\n".join([header, *rows])


def one_per_technique(results: Sequence[Result]) -> list[Result]:
    """One record per technique: the baselines (fp32, bf16) from the first chapter that measured them,
    every other technique from its first record. Full-mode records win over smoke records."""
    chosen: dict[str, Result] = {}
    for r in sorted(results, key=lambda r: (r.smoke, r.chapter)):
        chosen.setdefault(r.technique, r)
    return [r for r in results if chosen.get(r.technique) is r]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, accuracy) that no other point beats on both: cost as low or lower
    and accuracy as high or higher, one of them strictly. Sorted by cost."""
    front = []
    for i, (cost, acc) in enumerate(points):
        dominated = any(c <= cost and a >= acc and (c < cost or a > acc) for j, (c, a) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def best_tradeoffs(results: Sequence[Result]) -> str:
    """Markdown: the Pareto fronts of size vs accuracy and of batch-64 latency vs accuracy.

    Taught in: chapter 9, section 7 (The whole workbook on one chart).
    """
    shown = one_per_technique(results)
    if not shown:
        return "_no results recorded yet_"
    lines = []
    for what, cost, unit in (("size", lambda r: r.megabytes, "MB"), ("latency at batch 64", lambda r: r.latency_ms_batch64, "ms")):
        front = pareto_front([(cost(r), r.accuracy) for r in shown])
        lines.append(f"- **{what}**: " + " → ".join(
            f"{shown[i].technique} ({cost(shown[i]):.1f} {unit}, {shown[i].accuracy:.1%})" for i in front))
    return "\n".join(lines)
