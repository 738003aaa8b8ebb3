"""Measuring a technique the workbook's way, and chapter 3's rule that a method counts only once it has gone
through its file (``RoundTrips``)."""

from __future__ import annotations

from pathlib import Path

from toolkit import measure as m
from toolkit.workbook.report.records import Result, check_technique, record, register_technique


def _nonzero_or_none(model) -> int | None:
    """Non-zero count of float parameters; None when a library's tensor type cannot count them."""
    try:
        return m.count_nonzero(model)
    except (NotImplementedError, RuntimeError, TypeError):
        return None


def measure_technique(
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

    Taught in: chapter 1, section 3 (The baseline, measured).
    """
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
    predictions), measures the *reloaded* model (``measure_technique``) and records the result.
    ``results`` and ``models`` keep every result and reloaded model by technique.

    Taught in: chapter 3, section 1 (The rule of this chapter: every method goes through its file).
    """

    def __init__(self, folder: Path, tokenizer, test, *, chapter: str, smoke: bool, repeats: int = 20):
        self.folder, self.tokenizer, self.test = Path(folder), tokenizer, test
        self.chapter, self.smoke, self.repeats = chapter, smoke, repeats
        self.results: dict[str, Result] = {}
        self.models: dict = {}

    def run(self, technique: str, description: str, model, save, load, notes: str = "") -> Result:
        register_technique(technique, description)
        path = self.folder / f"{technique}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save(model, path)
        reloaded = load(path)
        agree = m.agreement(model, reloaded, self.tokenizer, self.test)
        result = measure_technique(technique, reloaded, self.tokenizer, self.test, chapter=self.chapter, smoke=self.smoke,
                                   repeats=self.repeats, saved_file=path, notes=notes)
        result.extra.update(agree)
        record(result)
        self.results[technique], self.models[technique] = result, reloaded
        print(f"{technique:<22} {result.megabytes:6.1f} MB | b1 {result.latency_ms_batch1:6.1f} ms | "
              f"b64 {result.latency_ms_batch64:7.1f} ms | acc {result.accuracy:.1%} | reload: max logit diff "
              f"{agree['max_logit_diff']:.2g}, same prediction {agree['same_prediction']:.1%}")
        return result
