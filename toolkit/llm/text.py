"""Offline English text for a language model: the Python documentation's topics.

Every Python ships ``pydoc_data.topics`` (the text ``help("assert")`` prints): about 0.5 MB of
English prose with code, 79 topics. They are split by topic into three parts: *calibration* (what
GPTQ, AWQ and Wanda may look at), *validation* (where design choices are judged) and *evaluation*
(the perplexities the chapter reports). Some topics repeat others (the "compound" topic contains the
whole "if" topic), so each later part also drops every paragraph an earlier part contains: no
paragraph is in two parts.
"""

from __future__ import annotations

import hashlib

import torch

from toolkit.runtime import check_int

PARTS = ("calibration", "validation", "evaluation")  # in this order: a later part drops the paragraphs of earlier ones


def topics() -> dict[str, str]:
    """Topic name -> text, as this Python ships them."""
    from pydoc_data.topics import topics as shipped

    return dict(shipped)


def part_of(topic: str) -> str:
    """The part a topic belongs to, fixed by a hash of its name (so the split does not move when a Python
    version adds a topic): "evaluation" for about one topic in three, "validation" for one in six,
    "calibration" for the rest."""
    bucket = hashlib.sha256(topic.encode()).digest()[0] % 6
    return "evaluation" if bucket in (0, 3) else "validation" if bucket == 1 else "calibration"


def paragraphs(topic_text: str) -> list[str]:
    """The blank-line-separated paragraphs of a topic, stripped, empty ones dropped."""
    return [p.strip() for p in topic_text.split("\n\n") if p.strip()]


def text(part: str) -> str:
    """The topics of one part, in name order, paragraphs separated by blank lines, without any paragraph
    that a part before it in ``PARTS`` contains (and without repeats).

    Taught in: chapter 10.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}; got {part!r}")
    shipped = topics()
    names = sorted(shipped)
    earlier = PARTS[: PARTS.index(part)]
    seen = {p for name in names if part_of(name) in earlier for p in paragraphs(shipped[name])}
    kept = []
    for name in names:
        if part_of(name) == part:
            for p in paragraphs(shipped[name]):
                if p not in seen:
                    kept.append(p)
                    seen.add(p)
    return "\n\n".join(kept)


def segments(tokenizer, text: str, length: int, count: int) -> torch.Tensor:
    """``count`` consecutive, non-overlapping pieces of ``length`` tokens of ``text``: (count, length) int64.

    Perplexity is computed within each piece (its first token has no context, so it is not scored).

    Taught in: chapter 10.
    """
    check_int("length", length, minimum=2)
    check_int("count", count)
    if not text or not text.strip():
        raise ValueError("text must be non-empty: there is nothing to cut into segments")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    if ids.numel() < length * count:
        raise ValueError(f"count: {count} segments of {length} tokens need {length * count:,} tokens; the text has {ids.numel():,}")
    return ids[: length * count].reshape(count, length).clone()
