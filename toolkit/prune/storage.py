"""Sparse weights as bytes: what pruning buys on disk only once zeros are not stored.

A masked dense tensor still stores every zero (4 bytes each in fp32). Two sparse layouts:

- **CSR** (compressed sparse row), for W of shape (rows, cols) with nnz non-zeros:
  crow_indices (rows + 1,) int32 -- where each row starts in the lists below;
  col_indices (nnz,) int16 if cols < 2^15 else int32; values (nnz,) in the weight's dtype.
  bytes = 4 (rows + 1) + nnz (index bytes + value bytes).
- **bitmask + values**: one bit per position saying "kept", then the kept values in order.
  bytes = ceil(rows * cols / 8) + nnz * value bytes.

Both pay the values; beyond that CSR pays its index bytes per non-zero and the bitmask 1/8
byte per position. With int16 column indices CSR is smaller only when the density is below
1/16, above 93.75% sparsity.

``save_sparse`` writes a model with its prunable layers in either layout (``toolkit.artifacts``'
self-describing tensor file: atomic, with a sha256 of its tensors), and ``load_sparse_state_dict`` checks the sha256 and reads it back as
dense tensors, so a round trip can be checked.

Pruning and quantization combine: with ``value_bits=8`` the kept values are stored as int8 codes
with one fp32 scale per row (symmetric, scale_r = max_j |W_rj| / 127, code = round(W / scale_r)),
so each kept weight costs 1 byte instead of 4: bytes = layout bytes with value bytes 1 + 4 · rows.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import torch

import numpy as np

from toolkit import artifacts
from toolkit.prune.importance import prunable_modules

FORMAT = "workbook-sparse"
FORMAT_VERSION = 1  # files written before the version was recorded have the same layout: read as version 1
LAYOUTS = ("csr", "bitmask")


def index_dtype(limit: int) -> torch.dtype:
    """The smallest signed integer type that can hold indices below ``limit``.

    Taught in: chapter 6, section 6 (What sparsity buys, and what it does not).
    """
    return torch.int16 if limit < 2**15 else torch.int32


def csr_bytes(rows: int, cols: int, nnz: int, value_bytes: int = 4) -> int:
    """Bytes of a CSR matrix: 4 (rows + 1) + nnz (index bytes + value bytes)."""
    return 4 * (rows + 1) + nnz * (index_dtype(cols).itemsize + value_bytes)


def bitmask_bytes(rows: int, cols: int, nnz: int, value_bytes: int = 4) -> int:
    """Bytes of a bitmask + values: ceil(rows * cols / 8) + nnz * value bytes."""
    return math.ceil(rows * cols / 8) + nnz * value_bytes


def csr_tensors(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """CSR parts of a 2-D weight: crow_indices (rows+1,), col_indices (nnz,), values (nnz,).

    Taught in: chapter 6, section 6 (What sparsity buys, and what it does not).
    """
    if weight.dim() != 2:
        raise ValueError(f"CSR storage takes 2-D weights; got shape {tuple(weight.shape)}")
    with warnings.catch_warnings():  # "sparse CSR support is in beta": true, and nothing a reader can act on
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.detach().cpu().to_sparse_csr()
    return {
        "crow_indices": csr.crow_indices().to(torch.int32),
        "col_indices": csr.col_indices().to(index_dtype(weight.shape[1])),
        "values": csr.values().contiguous(),
    }


def bitmask_tensors(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Bitmask parts of a weight: mask (ceil(n/8),) uint8, one bit per position; values (nnz,)."""
    flat = weight.detach().cpu().flatten()
    kept = flat != 0
    mask = np.packbits(kept.numpy(), bitorder="little")  # position i is bit i % 8 of byte i // 8
    return {"mask": torch.from_numpy(mask), "values": flat[kept].contiguous()}


VALUE_BITS = (None, 8)


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes of a 2-D weight with one scale per row: (codes (rows, cols) int8, scales (rows,) fp32)."""
    scales = weight.detach().abs().amax(dim=1).float() / 127  # (rows,)
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # an all-zero row keeps code 0 with any scale
    codes = torch.round(weight.detach().float() / scales[:, None]).clamp(-127, 127).to(torch.int8)  # (rows, cols)
    return codes, scales


def _dense_from(parts: dict[str, torch.Tensor], layout: str, shape: tuple[int, ...]) -> torch.Tensor:
    if "scales" in parts:  # int8 codes: decode them as a dense matrix of codes, then scale each row
        codes = _dense_from({k: v.float() if k == "values" else v for k, v in parts.items() if k != "scales"}, layout, shape)
        return codes * parts["scales"][:, None]  # (rows, cols) * (rows, 1)
    if layout == "csr":
        return torch.sparse_csr_tensor(
            parts["crow_indices"].long(), parts["col_indices"].long(), parts["values"], size=shape, check_invariants=True
        ).to_dense()
    n = math.prod(shape)
    kept = torch.from_numpy(np.unpackbits(parts["mask"].numpy(), count=n, bitorder="little").astype(bool))
    dense = torch.zeros(n, dtype=parts["values"].dtype)
    dense[kept] = parts["values"]
    return dense.reshape(shape)


def save_sparse(model: torch.nn.Module, path: str | os.PathLike, layout: str = "csr", modules=None, value_bits: int | None = None) -> int:
    """Write ``model`` with its prunable layers' weights in ``layout``, their kept values in fp32 or, with
    ``value_bits=8``, as int8 codes with a scale per row; returns the file's bytes.

    Taught in: chapter 6, section 6 (What sparsity buys, and what it does not).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if value_bits not in VALUE_BITS:
        raise ValueError(f"value_bits must be one of {VALUE_BITS} (None keeps the weight's dtype); got {value_bits!r}")
    sparse_names = set(prunable_modules(model, modules))
    tensors, shapes = {}, {}
    for key, value in model.state_dict().items():
        layer = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and layer in sparse_names:
            scales = None
            if value_bits == 8:
                value, scales = int8_rows(value)  # codes keep the zeros where the weight is zero
            parts = csr_tensors(value) if layout == "csr" else bitmask_tensors(value)
            if scales is not None:
                parts["scales"] = scales
            for part, tensor in parts.items():
                tensors[f"{key}.{part}"] = tensor
            shapes[key] = list(value.shape)
        else:
            tensors[key] = value.detach().cpu().contiguous()
    fields = {"layout": layout, "value_bits": str(value_bits or 0), "sparse_shapes": shapes}
    return artifacts.save_tensors(path, tensors, format=FORMAT, version=FORMAT_VERSION, fields=fields)


def load_sparse_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``save_sparse`` file back as a dense state dict.

    Taught in: chapter 6, section 6 (What sparsity buys, and what it does not).
    """
    path = Path(path)
    metadata, raw = artifacts.load_tensors(path, format=FORMAT, versions=(FORMAT_VERSION,), writer="save_sparse",
                                           unversioned=FORMAT_VERSION)
    layout, shapes = metadata["layout"], json.loads(metadata["sparse_shapes"])
    state = {k: v for k, v in raw.items() if not any(k.startswith(s + ".") for s in shapes)}
    for key, shape in shapes.items():
        parts = {k[len(key) + 1 :]: v for k, v in raw.items() if k.startswith(key + ".")}
        state[key] = _dense_from(parts, layout, tuple(shape))
    return state
