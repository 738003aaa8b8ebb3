"""The combined pipeline's training stage, cached: prune heads and FFN neurons, then distil from the fp32 model.

Chapter 9 chains the workbook's techniques:

    fp32 classifier ─ structured pruning (ch. 7) ─ distillation (ch. 7) ─ embedding PQ (ch. 9) ─ int8 engine (ch. 9)

Only the distillation takes minutes, so its result is cached like the fine-tuned classifier
(``toolkit.models``): a folder named after the SHA-256 of everything the weights depend on (the
classifier's cache key, the kept heads and neurons, the dropped layers, the scoring sentences and
the training configuration), written atomically, with the SHA-256 of its weights checked on every
load. A changed or truncated cache is reported and rebuilt, never used. Chapter 8's unstructured
schedules enter chapter 9 as a separate comparison (its notebook prunes the distilled student with
them), not as a stage of this cache.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from toolkit import artifacts, runtime
from toolkit.data import Example
from toolkit.models import cache_key
from toolkit.prune import structured
from toolkit.prune.structured import load_pruned, save_pruned
from toolkit.train import FineTuneConfig, autocast_dtype, distillation_loss, fine_tune_

STUDENT_FORMAT = 1  # part of the inputs (and so of the folder's key)
STUDENT_MANIFEST = "compression-workbook/distilled-student"  # the folder's manifest (artifacts), version 2
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class Student:
    model: torch.nn.Module   # the pruned, distilled classifier (eval mode, CPU)
    raw: torch.nn.Module     # the same pruning before distillation
    seconds: float           # distillation time when it was built (0 work now if cached)
    cached: bool             # True when loaded from a verified cache
    folder: Path


def prune_by_importance(model: torch.nn.Module, tokenizer, score_examples: Sequence[Example], heads: int, neurons: int,
                        drop_layers: Sequence[int] = ()) -> torch.nn.Module:
    """A pruned copy: the ``heads`` heads and ``neurons`` FFN neurons of highest gradient importance kept in every
    layer (chapter 7's scores on ``score_examples``), then ``drop_layers`` removed."""
    scores = structured.structure_importance(model, tokenizer, score_examples)
    return structured.prune_structures(model, heads=structured.lowest(scores["heads"], heads),
                                       neurons=structured.lowest(scores["ffn"], neurons), layers=drop_layers)


def distilled_student(
    teacher: torch.nn.Module,
    tokenizer,
    train: Sequence[Example],
    score_examples: Sequence[Example],
    *,
    heads: int,
    neurons: int,
    config: FineTuneConfig,
    drop_layers: Sequence[int] = (),
    teacher_key: str,
    cache: Path | None = None,
    progress: bool = True,
) -> Student:
    """Prune ``teacher`` (``prune_by_importance``) and distil it on ``train`` (embeddings frozen: pruning does not
    touch them), or load the verified cached result. ``teacher_key`` names the teacher's own cache (e.g. the
    classifier cache folder's name) so a new teacher is a new student. ``teacher`` is not changed.

    Taught in: chapter 9, section 2 (Stage one: remove structure, then distil).
    """
    inputs = {
        "format": STUDENT_FORMAT,
        "teacher": teacher_key,
        "heads": heads, "neurons": neurons, "drop_layers": sorted(drop_layers),
        "score_sentences": hashlib.sha256("\n".join(e.text for e in score_examples).encode()).hexdigest(),
        "train": hashlib.sha256("\n".join(f"{e.label}\t{e.text}" for e in train).encode()).hexdigest(),
        "config": config.as_dict(),
        "autocast": str(autocast_dtype(config.precision)),  # "auto" trains in bf16 on some CPUs, fp32 on others
        "torch": torch.__version__,
    }
    folder = (Path(cache) if cache is not None else runtime.cache_dir()) / "distilled-student" / cache_key(inputs)
    raw = prune_by_importance(teacher, tokenizer, score_examples, heads, neurons, drop_layers).eval()
    if folder.exists():
        try:
            manifest = artifacts.read_manifest(folder, format=STUDENT_MANIFEST, versions=(2,), inputs=inputs, required=(WEIGHTS,))
            return Student(load_pruned(folder / WEIGHTS).eval(), raw, manifest["seconds"], True, folder)
        except artifacts.ArtifactError as problem:
            print(f"cached student rejected ({problem}); rebuilding it")

    student = copy.deepcopy(raw)  # trained below; raw stays as it was
    for p in student.base_model.embeddings.parameters():  # not pruned, so not trained either
        p.requires_grad_(False)
    start = time.perf_counter()
    fine_tune_(student, tokenizer, train, config, progress=progress, loss_fn=distillation_loss(teacher))
    seconds = time.perf_counter() - start
    student.eval()

    with artifacts.staged_folder(folder) as staging:  # complete or absent
        save_pruned(student, staging / WEIGHTS)
        artifacts.write_manifest(staging, format=STUDENT_MANIFEST, version=2, inputs=inputs, seconds=round(seconds, 1))
    return Student(student, raw, seconds, False, folder)
