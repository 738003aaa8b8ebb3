"""Results: one record per technique, a comparison table, and the size/latency/accuracy chart.

Every chapter ends its measurements with ``record(Result(...))``. Records are JSON files
under ``build/results/<chapter>/<technique>.json`` (written atomically), so the runner can
gather every chapter into ``build/report.md`` and later chapters can put their methods on
the same chart as the fp32 and bf16 baselines.

Techniques are named from one registry, ``TECHNIQUES``: a typo is an error that lists the
accepted names, not a new row nobody meant. A chapter that introduces a technique adds it
with ``register_technique`` before recording it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable, Sequence

from toolkit import artifacts, runtime
from toolkit.claims import BUSY_LOAD  # other processes' share of the CPU above which a timing is not trusted

TECHNIQUES: dict[str, str] = {
    "fp32": "float32 baseline: the fine-tuned classifier as trained",
    "fp16": "float16 cast of every weight (IEEE half precision)",
    "bf16": "bfloat16 cast of every weight (8-bit exponent, 7-bit mantissa)",
}


def register_technique(name: str, description: str) -> None:
    """Add a technique name so that results can be recorded under it."""
    if not name or not all(c.isalnum() or c in "-_+." for c in name):
        raise ValueError(f"technique name must be non-empty and use letters, digits, '-', '_', '+', '.'; got {name!r}")
    TECHNIQUES[name] = description


def check_technique(name: str) -> str:
    if name not in TECHNIQUES:
        raise ValueError(
            f"technique {name!r} is not known; accepted: {', '.join(sorted(TECHNIQUES))} "
            "(a chapter adds new ones with toolkit.report.register_technique)"
        )
    return name


@dataclass
class Result:
    """What one technique achieved, measured in one run, beside the baselines of that run."""

    technique: str
    chapter: str
    bytes_on_disk: int
    accuracy: float  # on the test split, 0..1
    latency_ms_batch1: float  # median
    latency_ms_batch64: float  # median (or the chapter's "large" batch, see notes)
    parameters: int
    nonzero: int | None = None
    smoke: bool = False
    hardware: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict)
    description: str = ""  # filled from TECHNIQUES; lets the report register chapter-defined names

    def __post_init__(self):
        check_technique(self.technique)
        self.description = self.description or TECHNIQUES[self.technique]
        if not 0 <= self.accuracy <= 1:
            raise ValueError(f"accuracy must be a fraction in [0, 1]; got {self.accuracy!r}")
        if self.bytes_on_disk <= 0:
            raise ValueError(f"bytes_on_disk must be positive (the size of a written file); got {self.bytes_on_disk!r}")

    @property
    def megabytes(self) -> float:
        return self.bytes_on_disk / 1e6


def record(result: Result, results_dir: Path | None = None) -> Path:
    """Write ``result`` to ``<results_dir>/<chapter>/<technique>.json`` and return the path."""
    folder = Path(results_dir) if results_dir is not None else runtime.results_dir()
    path = folder / result.chapter / f"{result.technique}.json"
    artifacts.write_text(path, json.dumps(asdict(result), indent=2, sort_keys=True))
    return path


def load_results(results_dir: Path | None = None) -> list[Result]:
    """Every record under ``results_dir``, ordered by chapter, then as recorded."""
    folder = Path(results_dir) if results_dir is not None else runtime.results_dir()
    names = {f.name for f in fields(Result)}
    results = []
    for path in sorted(folder.glob("*/*.json"), key=lambda p: (p.parent.name, p.stat().st_mtime_ns)):
        if path.parent.name == "claims":
            continue
        payload = json.loads(path.read_text())
        if payload.get("technique") not in TECHNIQUES and payload.get("description"):
            register_technique(payload["technique"], payload["description"])  # defined by the chapter that recorded it
        results.append(Result(**{k: v for k, v in payload.items() if k in names}))
    return results


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
    from toolkit.measure import accuracy_interval

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


OUTLIER_POINTS = 15.0  # accuracies more than this many points below fp32 are drawn at the chart's lower edge


LABEL_OFFSETS = [(dx * radius, dy * radius) for radius in (6, 14, 24, 36, 50, 66)
                 for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1.3), (0, -1.3), (1.3, 0), (-1.3, 0))]  # points, nearest first


def place_labels(ax, anchors: Sequence[tuple[float, float, str, dict]], points: Sequence[tuple[float, float]] = ()) -> list:
    """Annotate each (x, y, text, style) at the first offset in ``LABEL_OFFSETS`` whose text box overlaps
    no label placed before it and no marker of ``points`` (data coordinates): inside the panel if any
    such offset exists, else anywhere on the figure, else at the nearest offset. Labels far from their
    point get a thin leader line. Returns the annotations. Needs a drawn figure (Agg) with its final layout."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    frame, page = ax.get_window_extent(renderer), ax.figure.bbox
    placed = []
    markers = ax.transData.transform(list(points)) if len(points) else []  # (n, 2) display coordinates
    boxes = [Bbox.from_extents(px - 6, py - 6, px + 6, py + 6) for px, py in markers]  # the markers, then each label placed

    def within(box, outer):
        return outer.x0 <= box.x0 and box.x1 <= outer.x1 and outer.y0 <= box.y0 and box.y1 <= outer.y1

    def annotate(x, y, text, style, dx, dy):
        # the label `dx, dy` points from its marker, aligned away from it; a leader line when far
        return ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                           ha="left" if dx > 0 else ("right" if dx < 0 else "center"),
                           va="bottom" if dy > 0 else ("top" if dy < 0 else "center"),
                           arrowprops=dict(arrowstyle="-", lw=0.5, color="grey") if abs(dx) + abs(dy) > 20 else None, **style)

    for x, y, text, style in anchors:
        trials = []
        for dx, dy in LABEL_OFFSETS:
            note = annotate(x, y, text, style, dx, dy)
            box = note.get_window_extent(renderer).expanded(1.04, 1.12)
            note.remove()
            free = not any(box.overlaps(b) for b in boxes)
            trials.append((not (free and within(box, frame)), not (free and within(box, page)), len(trials), dx, dy, box))
        *_, dx, dy, box = min(trials)  # inside and free, else free on the figure, else the nearest offset
        placed.append(annotate(x, y, text, style, dx, dy))
        boxes.append(box)
    return placed


def tradeoff_chart(results: Sequence[Result], path: Path | None = None):
    """Two panels: accuracy vs size on disk, and accuracy vs latency at batch 64, one point per technique.

    Points up and to the left are better; the line joins each panel's Pareto front (nothing is
    both smaller/faster and more accurate than a point on it). Only the front and the fp32/bf16
    baselines are labelled, each where its text overlaps no other label (``place_labels``). Both cost
    axes are logarithmic: compressed models span two orders of magnitude in bytes, and on a linear
    axis they crowd into the left tenth of the panel. Accuracies far below fp32 would flatten the
    accuracy axis for everything else, so they sit on the lower edge as a ▼ with their value. The
    legend sits below the panels, off the data. Returns the figure; saves it to ``path`` (PNG) when given.
    """
    import matplotlib.pyplot as plt  # imported here: the toolkit stays usable without a display
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    shown = one_per_technique(results)
    fp32 = next((r for r in shown if r.technique == "fp32"), None)
    top = max(r.accuracy * 100 for r in shown)
    reference = fp32.accuracy * 100 if fp32 else top
    floor = reference - OUTLIER_POINTS
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    axes[0].set_ylim(floor - 1, top + 1)
    labels = []  # (axes, anchors): placed once the layout is final
    for ax, cost, label in ((axes[0], lambda r: r.megabytes, "size on disk (MB, the file written; log scale)"),
                            (axes[1], lambda r: r.latency_ms_batch64, "latency at batch 64 (ms, median; log scale)")):
        points = [(cost(r), r.accuracy * 100) for r in shown]
        front = pareto_front(points)
        ax.set_xscale("log")
        ax.plot([points[i][0] for i in front], [max(points[i][1], floor) for i in front], color="tab:blue", alpha=0.5,
                drawstyle="steps-post", zorder=2)
        anchors = []
        for i, (r, (x, y)) in enumerate(zip(shown, points)):
            baseline = r.technique in ("fp32", "bf16")
            outlier = y < floor
            ax.scatter(x, max(y, floor), s=70 if (i in front or baseline) else 25, zorder=3,
                       marker="v" if outlier else ("s" if baseline else "o"),
                       color="black" if baseline else ("tab:blue" if i in front else "tab:gray"))
            if i in front or baseline or outlier:
                anchors.append((x, max(y, floor), r.technique + (f" ({y:.0f}%)" if outlier else ""),
                                {"color": "black" if baseline else "tab:blue"}))
        xs = [x for x, _ in points]
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)  # room for labels on both sides
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
        labels.append((ax, anchors, [(x, max(y, floor)) for x, y in points]))
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0].set_ylabel("test accuracy (%)")
    legend = [Line2D([], [], color="tab:blue", alpha=0.5, label="Pareto front"),
              Line2D([], [], marker="s", color="black", ls="", label="fp32 / bf16 baseline"),
              Line2D([], [], marker="o", color="tab:blue", ls="", label="on the front (labelled)"),
              Line2D([], [], marker="o", color="tab:gray", ls="", label="behind the front"),
              Line2D([], [], marker="v", color="tab:gray", ls="", label=f"more than {OUTLIER_POINTS:.0f} points below fp32")]
    fig.legend(handles=legend, loc="lower center", ncol=5, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    hardware = next((r.hardware for r in results if r.hardware), "")
    fig.suptitle(f"Size, speed and accuracy: {len(shown)} techniques, the Pareto front labelled")
    if hardware:
        fig.text(0.5, -0.03, hardware, ha="center", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.canvas.draw()  # the label boxes need the final layout
    for ax, anchors, markers in labels:
        place_labels(ax, anchors, markers)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def best_tradeoffs(results: Sequence[Result]) -> str:
    """Markdown: the Pareto fronts of size vs accuracy and of batch-64 latency vs accuracy."""
    shown = one_per_technique(results)
    if not shown:
        return "_no results recorded yet_"
    lines = []
    for what, cost, unit in (("size", lambda r: r.megabytes, "MB"), ("latency at batch 64", lambda r: r.latency_ms_batch64, "ms")):
        front = pareto_front([(cost(r), r.accuracy) for r in shown])
        lines.append(f"- **{what}**: " + " → ".join(
            f"{shown[i].technique} ({cost(shown[i]):.1f} {unit}, {shown[i].accuracy:.1%})" for i in front))
    return "\n".join(lines)


def write_report(
    results_dir: Path | None = None,
    out_path: Path = Path("build/report.md"),
    run_log: Iterable[dict] = (),
    run_line: str = "",
) -> Path:
    """Gather every record and claim into one Markdown report with the comparison chart (``run_line``: when, which
    commit and which mode the chapters ran, written under their table's heading)."""
    from toolkit import claims  # local: claims imports report's helpers

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


def _nonzero_or_none(model) -> int | None:
    """Non-zero count of float parameters; None when a library's tensor type cannot count them."""
    from toolkit import measure as m

    try:
        return m.count_nonzero(model)
    except (NotImplementedError, RuntimeError, TypeError):
        return None


def measure(
    technique: str,
    model,
    tokenizer,
    test,
    *,
    chapter: str,
    smoke: bool,
    repeats: int = 20,
    big_batch: int = 64,
    file: Path | None = None,
    notes: str = "",
    saved_file: Path | None = None,
) -> Result:
    """Measure one technique the workbook's way and return its ``Result`` (not yet recorded).

    Size: bytes of the safetensors file written to ``file`` (a temporary file if None), or,
    with ``saved_file``, the size of that already written file (for formats of their own).
    Latency: median of ``repeats`` timed calls at batch 1, and of ``max(3, repeats // 3)``
    calls at ``big_batch`` (both after 3 warm-up calls), on the first test sentences.
    Accuracy: on every example of ``test``.
    """
    from toolkit import measure as m

    check_technique(technique)
    if saved_file is not None:
        if not Path(saved_file).is_file():
            raise FileNotFoundError(f"saved_file {saved_file} does not exist: save the model before measuring it")
        size = Path(saved_file).stat().st_size
    else:
        size = m.bytes_on_disk(model, file)
    one = m.latency(model, m.latency_batch(tokenizer, test, 1), repeats=repeats)
    many = m.latency(model, m.latency_batch(tokenizer, test, big_batch), repeats=max(3, repeats // 3))
    return Result(
        technique=technique,
        chapter=chapter,
        bytes_on_disk=size,
        accuracy=m.accuracy(model, tokenizer, test),
        latency_ms_batch1=one.median_ms,
        latency_ms_batch64=many.median_ms,
        parameters=m.count_parameters(model),
        nonzero=_nonzero_or_none(model),
        smoke=smoke,
        hardware=m.hardware().line(),
        notes=notes,
        extra={"latency_batch1": one.as_dict(), "latency_big_batch": many.as_dict(), "test_examples": len(test)},
    )


class RoundTrips:
    """Chapter 3's rule as a tool: a method counts only once it has gone through its file.

    ``run(technique, description, model, save, load)`` saves ``model`` with ``save(model, path)``
    to ``folder/<technique>.safetensors``, reloads it with ``load(path)``, compares the
    reloaded model with the one in memory (largest logit difference, share of equal
    predictions), measures the *reloaded* model (``measure``) and records the result.
    ``results`` and ``models`` keep every result and reloaded model by technique.
    """

    def __init__(self, folder: Path, tokenizer, test, *, chapter: str, smoke: bool, repeats: int = 20):
        self.folder, self.tokenizer, self.test = Path(folder), tokenizer, test
        self.chapter, self.smoke, self.repeats = chapter, smoke, repeats
        self.results: dict[str, Result] = {}
        self.models: dict = {}

    def run(self, technique: str, description: str, model, save, load, notes: str = "") -> Result:
        from toolkit import measure as m

        register_technique(technique, description)
        path = self.folder / f"{technique}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save(model, path)
        reloaded = load(path)
        agree = m.agreement(model, reloaded, self.tokenizer, self.test)
        result = measure(technique, reloaded, self.tokenizer, self.test, chapter=self.chapter, smoke=self.smoke,
                         repeats=self.repeats, saved_file=path, notes=notes)
        result.extra.update(agree)
        record(result)
        self.results[technique], self.models[technique] = result, reloaded
        print(f"{technique:<22} {result.megabytes:6.1f} MB | b1 {result.latency_ms_batch1:6.1f} ms | "
              f"b64 {result.latency_ms_batch64:7.1f} ms | acc {result.accuracy:.1%} | reload: max logit diff "
              f"{agree['max_logit_diff']:.2g}, same prediction {agree['same_prediction']:.1%}")
        return result
