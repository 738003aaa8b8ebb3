"""The size / latency / accuracy chart, with the Pareto front and labels that do not collide."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from toolkit.workbook.report.records import Result
from toolkit.workbook.report.table import one_per_technique, pareto_front


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

    Taught in: chapter 1, section 5 (The landscape of techniques).
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
