"""Result records: one per technique, measured in one run, written as JSON for the report.

Every chapter ends its measurements with ``record(Result(...))``. Records are JSON files
under ``build/results/<chapter>/<technique>.json`` (written atomically), so the runner can
gather every chapter into ``build/report.md`` and later chapters can put their methods on
the same chart as the fp32 and bf16 baselines.

Techniques are named from one registry, ``TECHNIQUES``: a typo is an error that lists the
accepted names, not a new row nobody meant. A chapter that introduces a technique adds it
with ``register_technique`` before recording it; a record carries its description, so reading
it back (``load_results``) needs no registration and changes no global state.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from toolkit import artifacts, runtime


TECHNIQUES: dict[str, str] = {
    "fp32": "float32 baseline: the fine-tuned classifier as trained",
    "fp16": "float16 cast of every weight (IEEE half precision)",
    "bf16": "bfloat16 cast of every weight (8-bit exponent, 7-bit mantissa)",
}


def register_technique(name: str, description: str) -> None:
    """Add a technique name so that results can be recorded under it.

    Taught in: chapter 4.
    """
    if not name or not all(c.isalnum() or c in "-_+." for c in name):
        raise ValueError(f"technique name must be non-empty and use letters, digits, '-', '_', '+', '.'; got {name!r}")
    TECHNIQUES[name] = description


def check_technique(name: str) -> str:
    if name not in TECHNIQUES:
        raise ValueError(
            f"technique {name!r} is not known; accepted: {', '.join(sorted(TECHNIQUES))} "
            "(a chapter adds new ones with toolkit.workbook.report.register_technique)"
        )
    return name


@dataclass
class Result:
    """What one technique achieved, measured in one run, beside the baselines of that run.

    Taught in: chapter 10, section 9 (The task: zero-shot sentiment on the workbook's test sentences).
    """

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
        if not self.description:  # a record read back carries its description; a new one is checked by name
            self.description = TECHNIQUES[check_technique(self.technique)]
        if not 0 <= self.accuracy <= 1:
            raise ValueError(f"accuracy must be a fraction in [0, 1]; got {self.accuracy!r}")
        if self.bytes_on_disk <= 0:
            raise ValueError(f"bytes_on_disk must be positive (the size of a written file); got {self.bytes_on_disk!r}")

    @property
    def megabytes(self) -> float:
        return self.bytes_on_disk / 1e6


def record(result: Result, results_dir: Path | None = None) -> Path:
    """Write ``result`` to ``<results_dir>/<chapter>/<technique>.json`` and return the path.

    Taught in: chapter 1, section 5 (The landscape of techniques).
    """
    folder = Path(results_dir) if results_dir is not None else runtime.results_dir()
    path = folder / result.chapter / f"{result.technique}.json"
    artifacts.write_text(path, json.dumps(asdict(result), indent=2, sort_keys=True))
    return path


def load_results(results_dir: Path | None = None) -> list[Result]:
    """Every record under ``results_dir``, ordered by chapter, then as recorded.

    Taught in: chapter 9, section 7 (The whole workbook on one chart).
    """
    folder = Path(results_dir) if results_dir is not None else runtime.results_dir()
    names = {f.name for f in fields(Result)}
    results = []
    for path in sorted(folder.glob("*/*.json"), key=lambda p: (p.parent.name, p.stat().st_mtime_ns)):
        if path.parent.name == "claims":
            continue
        payload = json.loads(path.read_text())
        results.append(Result(**{k: v for k, v in payload.items() if k in names}))  # described by its own record
    return results
