"""predict.py: a deployed OpenVINO artifact's own runtime, which needs only ``openvino``, ``tokenizers`` and ``numpy``.

``toolkit.deploy.save_openvino`` copies this file into the artifact folder as ``predict.py``. On a server without
the workbook (no torch, no transformers):

    pip install openvino tokenizers numpy
    python predict.py "great phone" "awful battery"        # a table
    python predict.py --file sentences.txt --json          # JSON lines; '-' reads standard input

It checks every file against the folder's manifest (SHA-256 and size) before it loads anything, tokenizes with the
folder's ``tokenizer.json`` exactly as the workbook does (truncation to the manifest's ``max_length``, padding), runs
the graph on the CPU and prints each sentence's label and probability. This file imports nothing from the workbook.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ArtifactError(ValueError):
    """The folder is not a complete, unchanged artifact."""


def verified_manifest(folder: Path) -> dict:
    """The folder's manifest, after every file it lists has been checked (present, inside the folder, same size and SHA-256)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{folder}: no readable manifest.json ({error})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("runtime") != "openvino":
        raise ArtifactError(f"{folder}: not an OpenVINO artifact of the compression workbook")
    for name, entry in files.items():
        path = (folder / name).resolve()
        if folder.resolve() not in path.parents:
            raise ArtifactError(f"{folder}: the manifest lists {name!r}, a path outside the folder; refused")
        if not path.is_file() or path.stat().st_size != entry.get("bytes") or \
                hashlib.sha256(path.read_bytes()).hexdigest() != entry.get("sha256"):
            raise ArtifactError(f"{folder}: {name} is missing, truncated or changed since it was written")
    return manifest


class Classifier:
    """The folder's tokenizer and compiled graph: ``predict(texts)`` -> [(label, probability)]."""

    def __init__(self, folder: Path = HERE):
        import openvino as ov
        from tokenizers import Tokenizer

        self.manifest = verified_manifest(Path(folder))
        self.labels = list(self.manifest["labels"])
        self.tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(self.manifest["max_length"]))
        pad = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]")
        compiled = ov.Core().compile_model(str(Path(folder) / "model.xml"), "CPU")
        self.run, self.output = compiled, compiled.outputs[0]
        self.names = {port.get_any_name() for port in compiled.inputs}

    def logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), labels) float32."""
        out = []
        for first in range(0, len(texts), batch_size):
            encodings = self.tokenizer.encode_batch(texts[first:first + batch_size])
            feeds = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
                     "token_type_ids": [e.type_ids for e in encodings]}
            out.append(self.run({k: np.asarray(v, dtype=np.int64) for k, v in feeds.items() if k in self.names})[self.output])
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        logits = self.logits(texts)
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        best = probabilities.argmax(-1)
        return [(self.labels[int(i)], float(p[i])) for i, p in zip(best, probabilities)]


def read_lines(raw: bytes, where: str) -> list[str]:
    """The non-blank lines of ``raw``, stripped; text that is not UTF-8, or holds NUL bytes (a binary file), is a
    ``ValueError`` naming ``where`` it came from."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not UTF-8 text (a binary file?): give one sentence per line") from None
    if "\x00" in text:
        raise ValueError(f"{where} holds NUL bytes (a binary file?): give one sentence per line")
    return [line.strip() for line in text.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python predict.py", description="Classify sentences with this folder's model.")
    parser.add_argument("texts", nargs="*", help="sentences; '-' reads them from standard input, one per line")
    parser.add_argument("--file", type=Path, help="a UTF-8 text file of sentences, one per line")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    parser.add_argument("--folder", type=Path, default=HERE, help="the artifact folder (default: this file's)")
    args = parser.parse_intermixed_args(argv)
    try:
        texts = []
        for text in args.texts:
            texts += read_lines(sys.stdin.buffer.read(), "standard input") if text == "-" else [text]
        if args.file is not None:
            try:
                texts += read_lines(args.file.read_bytes(), f"--file {args.file}")
            except OSError as error:
                raise ValueError(f"--file {args.file}: {error.strerror or error}") from None
        if not texts:
            raise ValueError("no sentences to classify: give them as arguments, '-' for standard input, or --file FILE")
        classifier = Classifier(args.folder)
    except (ArtifactError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    predictions = classifier.predict(texts)
    seconds = time.perf_counter() - start
    for text, (label, probability) in zip(texts, predictions):
        print(json.dumps({"text": text, "label": label, "probability": round(probability, 4)}, ensure_ascii=False)
              if args.json else f"{label:<10} {probability:6.1%}  {text}")
    print(f"{len(texts)} sentence(s) in {seconds:.2f} s: {len(texts) / seconds:,.0f} sentences per second", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
