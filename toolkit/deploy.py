"""A compressed classifier as one folder you can copy to another machine, and the runtime that serves it.

The folder holds everything needed to classify sentences, and nothing from this workbook's cache:

- the model: either ``model.safetensors``, the weights with every layer's shape in the metadata
  (``save_pruned``), so a model whose heads or FFN neurons were removed is rebuilt exactly and run
  by PyTorch (``save``); or ``model.xml`` + ``model.bin``, an OpenVINO graph with its weights (int8
  where NNCF quantized them), run by OpenVINO (``save_openvino``);
- the tokenizer's files (``tokenizer.json``, ``vocab.txt``, ...) from ``tokenizer.save_pretrained``;
- ``manifest.json`` (``toolkit.artifacts``' one manifest layout): the format and version, the runtime and dtype
  to run in, the truncation length, the labels, and the SHA-256 and size of every file (checked on every load).
  The hashes sit in the same folder, so they detect a corrupted or truncated copy, not tampering: whoever can
  change a file can change ``manifest.json`` too (a signature from outside the folder would be needed for that);
- ``README.md``: a model card (what the model is, how it was compressed, what was measured where,
  and its limits).

Use it from Python::

    classifier = toolkit.deploy.load("build/artifact")
    classifier.predict(["great phone", "awful battery"])  # [Prediction(label='positive', probability=0.98, ...), ...]

or from a shell: ``python -m toolkit.deploy build/artifact "great phone" "awful battery"``.

The folder is written next to its final place and renamed into it only when complete, so a
crash never leaves half an artifact behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from toolkit import artifacts, standalone
from toolkit.artifacts import ArtifactError  # noqa: F401  (what load raises; chapter 9 catches it here)
from toolkit.engines.openvino import compile_openvino
from toolkit.prune.structured import load_pruned, save_pruned
from toolkit.runtime import check_int, import_torchao_quietly

ARTIFACT_FORMAT = "compression-workbook/classifier-artifact"
ARTIFACT_VERSION = 2  # version 1 kept its manifest in artifact.json; it is refused with a message
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
WEIGHTS = "model.safetensors"
OPENVINO_GRAPH = "model.xml"  # with model.bin beside it
MANIFEST = artifacts.MANIFEST
LEGACY_MANIFEST = "artifact.json"
CARD = "README.md"
PREDICT = "predict.py"  # in an OpenVINO artifact: toolkit/standalone.py, which needs only openvino, tokenizers, numpy


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str
    probability: float  # of the predicted label, softmax over the logits


def _card(manifest: Mapping, card: Mapping[str, str]) -> str:
    lines = [f"# {card.get('title', 'Sentiment classifier (compressed MiniLM)')}", ""]
    lines += [card.get("description", "A binary sentiment classifier for short English review sentences."), ""]
    runs_in = "OpenVINO (CPU), weights as stored" if manifest.get("runtime") == "openvino" else f"PyTorch, {manifest['dtype']}"
    lines += [f"- labels: {', '.join(manifest['labels'])}", f"- runs in: {runs_in}",
              f"- inputs are truncated to {manifest['max_length']} tokens", ""]
    for heading in ("compression", "measurements", "limits"):
        if card.get(heading):
            lines += [f"## {heading.capitalize()}", "", card[heading].strip(), ""]
    lines += ["## Use", "", "```python", "import toolkit.deploy", "classifier = toolkit.deploy.load(\"<this folder>\")",
              "classifier.predict([\"great phone\", \"awful battery\"])", "```", ""]
    if manifest.get("runtime") == "openvino":
        lines += ["Without the workbook (no torch, no transformers): copy this folder, then", "", "```bash",
                  "pip install openvino tokenizers numpy", "python predict.py \"great phone\" \"awful battery\"   "
                  "# or: --file sentences.txt --json, or '-' for standard input", "```", ""]
    lines += ["## Integrity", "", f"`{MANIFEST}` lists the SHA-256 and size of every file, and loading checks them all: that "
              "detects a file damaged or cut short in copying. It does not detect tampering: whoever can change a file can "
              "change the manifest too. Keep the folder where only you can write, or compare the manifest's own hash "
              "with one you received apart from it.", ""]
    return "\n".join(lines)


CARD_FIELDS = ("title", "description", "compression", "measurements", "limits")
RUNTIMES = ("torch", "openvino")
REQUIRED = {"torch": (WEIGHTS,), "openvino": (OPENVINO_GRAPH, "model.bin")}  # the model files each runtime reads


def _check_common(max_length, card) -> None:
    check_int("max_length", max_length, minimum=2)
    unknown = sorted(set(card or {}) - set(CARD_FIELDS))
    if unknown:
        raise ValueError(f"unknown model card field(s) {unknown}; accepted: {', '.join(CARD_FIELDS)}")


def _write(folder: Path, overwrite: bool, write_model, tokenizer, fields: dict, card: Mapping[str, str] | None) -> dict:
    """Stage the artifact next to ``folder`` (model files by ``write_model(staging)``, tokenizer, card, then the
    manifest with every file's SHA-256), then rename it into place: the folder is complete or absent."""
    with artifacts.staged_folder(folder, overwrite=overwrite) as staging:
        write_model(staging)
        tokenizer.save_pretrained(staging)
        (staging / CARD).write_text(_card(fields, card or {}))
        return artifacts.write_manifest(staging, format=ARTIFACT_FORMAT, version=ARTIFACT_VERSION, **fields)


def save(
    model: torch.nn.Module,
    tokenizer,
    folder: str | os.PathLike,
    *,
    dtype: str = "float32",
    max_length: int = 64,
    card: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> dict:
    """Write ``model`` (a BERT-layout sequence classifier, pruned or not) and ``tokenizer`` as an artifact folder
    that PyTorch runs.

    ``dtype`` is what the runtime casts the model to after loading (accepted: float32, bfloat16);
    ``card`` may hold ``title``, ``description``, ``compression``, ``measurements`` and ``limits``
    (Markdown) for the model card. Returns the manifest. ``model`` is not changed.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    _check_common(max_length, card)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    fields = {"runtime": "torch", "dtype": dtype, "max_length": max_length, "labels": labels}
    return _write(Path(folder), overwrite, lambda staging: save_pruned(model, staging / WEIGHTS), tokenizer, fields, card)


def save_openvino(
    ov_model,
    tokenizer,
    folder: str | os.PathLike,
    *,
    labels: Sequence[str],
    max_length: int = 64,
    card: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> dict:
    """Write an OpenVINO model (for example NNCF's int8 model, ``toolkit.engines.nncf_int8``) and ``tokenizer`` as an
    artifact folder that OpenVINO runs: ``model.xml`` (the graph) and ``model.bin`` (the weights, int8 where NNCF
    quantized them, stored as they are). ``labels`` name the logits in order. Returns the manifest.

    Taught in: chapter 9, section 6 (Deploy: one folder, a runtime, a model card).
    """
    import openvino as ov

    _check_common(max_length, card)
    if isinstance(labels, str) or len(labels) < 2 or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"labels must be a list of at least two label names; got {labels!r}")
    fields = {"runtime": "openvino", "dtype": "as stored", "max_length": max_length, "labels": list(labels)}

    def write_model(staging: Path) -> None:
        ov.save_model(ov_model, str(staging / OPENVINO_GRAPH), compress_to_fp16=False)
        shutil.copyfile(Path(standalone.__file__), staging / PREDICT)  # the folder's own runtime, without the workbook

    return _write(Path(folder), overwrite, write_model, tokenizer, fields, card)


class Classifier:
    """A loaded artifact: ``predict(texts)`` and ``logits(texts)``.

    Taught in: chapter 9, section 9 (Try it yourself).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, manifest: Mapping):
        self.model, self.tokenizer, self.manifest = model.eval(), tokenizer, dict(manifest)
        self.labels: list[str] = list(manifest["labels"])

    @torch.inference_mode()
    def logits(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Logits (len(texts), labels) in float32."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings (wrap a single sentence in a list)")
        out = []
        for first in range(0, len(texts), batch_size):
            batch = self.tokenizer(list(texts[first : first + batch_size]), padding=True, truncation=True,
                                   max_length=self.manifest["max_length"], return_tensors="pt")
            out.append(self.model(**batch).logits.float())
        return torch.cat(out) if out else torch.empty(0, len(self.labels))

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        probabilities = self.logits(texts).softmax(dim=-1)  # (n, labels)
        best = probabilities.argmax(dim=-1)
        return [Prediction(t, self.labels[int(i)], round(float(p[i]), 4)) for t, i, p in zip(texts, best, probabilities)]


def check_fields(folder: Path, manifest: Mapping) -> None:
    """The manifest's fields that the runtime reads, each checked before it is used: a missing or malformed one is an
    ``ArtifactError`` that names the field and what it accepts (never a KeyError or an IndexError from deep inside)."""
    runtime = manifest.get("runtime")
    if runtime not in RUNTIMES:
        raise ArtifactError(f"{folder}: runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    missing = [name for name in REQUIRED[runtime] + ("tokenizer.json",) if name not in manifest["files"]]
    if missing:
        raise ArtifactError(f"{folder}: its manifest does not list {', '.join(missing)}, which the {runtime} runtime reads")
    labels = manifest.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(label, str) and label for label in labels):
        raise ArtifactError(f"{folder}: its manifest's 'labels' must be a list of at least two label names; got {labels!r}")
    max_length = manifest.get("max_length")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= 1_000_000:
        raise ArtifactError(f"{folder}: its manifest's 'max_length' must be an integer from 2 to 1,000,000; got {max_length!r}")
    if runtime == "torch" and manifest.get("dtype") not in DTYPES:
        raise ArtifactError(f"{folder}: its manifest's 'dtype' must be one of {', '.join(DTYPES)} for the torch runtime; "
                            f"got {manifest.get('dtype')!r}")


def load(folder: str | os.PathLike) -> Classifier:
    """Load an artifact written by ``save``, after checking every file against its manifest.

    Taught in: chapter 9, section 6 (Deploy: one folder, a runtime, a model card).
    """
    from transformers import AutoTokenizer

    folder = Path(folder)
    if (folder / LEGACY_MANIFEST).is_file() and not (folder / MANIFEST).is_file():
        raise ArtifactError(f"{folder} is a {ARTIFACT_FORMAT} v1 artifact ({LEGACY_MANIFEST}), written by an earlier "
                            f"toolkit; this one reads v{ARTIFACT_VERSION}: save the model again with toolkit.deploy.save")
    try:
        manifest = artifacts.read_manifest(folder, format=ARTIFACT_FORMAT, versions=(ARTIFACT_VERSION,))
    except artifacts.ArtifactError as error:
        raise type(error)(f"{error} (write artifacts with toolkit.deploy.save or save_openvino)") from error
    check_fields(folder, manifest)
    runtime = manifest["runtime"]
    if runtime == "torch":
        import_torchao_quietly()  # transformers imports torchao (if installed) as it builds a model: quiet its CPU notices
        model = load_pruned(folder / WEIGHTS).to(DTYPES[manifest["dtype"]])
        if model.config.num_labels != len(manifest["labels"]):
            raise ArtifactError(f"{folder}: its manifest's 'labels' name {len(manifest['labels'])} classes, the model has "
                                f"{model.config.num_labels} outputs")
    else:
        model = compile_openvino(folder / OPENVINO_GRAPH)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return Classifier(model, tokenizer, manifest)


def read_sentences(texts: Sequence[str], file: Path | None, stdin) -> list[str]:
    """The sentences to classify: the arguments, with ``-`` replaced by the lines of ``stdin``, then the lines of
    ``file``; blank lines are skipped. Text that is not UTF-8 (a binary file) or no sentence at all is a ``ValueError``."""
    sentences: list[str] = []
    for text in texts:
        sentences += standalone.read_lines(stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read().encode(), "standard input") \
            if text == "-" else [text]
    if file is not None:
        try:
            raw = Path(file).read_bytes()
        except OSError as error:
            raise ValueError(f"--file {file}: {error.strerror or error}") from None
        sentences += standalone.read_lines(raw, f"--file {file}")  # the artifact's predict.py reads files the same way
    if not sentences:
        raise ValueError("no sentences to classify: give them as arguments, '-' for standard input, or --file FILE "
                         "(one sentence per line)")
    return sentences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.deploy", description="Classify sentences with a saved artifact.")
    parser.add_argument("folder", type=Path, help="an artifact folder written by toolkit.deploy.save")
    parser.add_argument("texts", nargs="*", help="sentences to classify; '-' reads them from standard input, one per line")
    parser.add_argument("--file", type=Path, help="a UTF-8 text file of sentences, one per line")
    parser.add_argument("--json", action="store_true", help="JSON lines (one object per sentence) instead of a table")
    args = parser.parse_intermixed_args(argv)  # options may come between the sentences
    try:
        sentences = read_sentences(args.texts, args.file, sys.stdin)
        classifier = load(args.folder)
    except (ArtifactError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    predictions = classifier.predict(sentences)
    seconds = time.perf_counter() - start
    for p in predictions:
        print(json.dumps(asdict(p), ensure_ascii=False) if args.json else f"{p.label:<10} {p.probability:6.1%}  {p.text}")
    print(f"{len(sentences)} sentence(s) in {seconds:.2f} s: {len(sentences) / seconds:,.0f} sentences per second "
          f"(batches of 64, tokenizing included)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
