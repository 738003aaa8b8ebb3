"""Quantized tensors as the bytes that would be stored: packed codes plus scales.

A quantized weight is stored as three tensors:

- ``codes``: the integer codes packed into uint8 (``packing.pack``), ceil(n * bits / 8) bytes;
- ``scale``: one float per tensor, channel or group (``scale_dtype``, float32 by default);
- ``zero_point``: one integer per scale, only for asymmetric schemes (int16, 2 bytes each).

So the true size of a b-bit weight of n values with m scales is

    ceil(n * b / 8) + m * bytes(scale) (+ 2 m for asymmetric zero-points)

``packed_file_bytes`` writes every matrix of a model this way (other tensors stay as they
are) to a safetensors file and returns its size: the honest answer to "how big is the
model at b bits", headers, scales and all. Chapter 3 builds its loadable format on this.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from toolkit.quant.affine import QTensor, as_rows, dequantize, quantize
from toolkit.quant.packing import pack, packed_bytes, unpack
from toolkit.quant.spec import QuantSpec


def pack_tensor(x: torch.Tensor, spec: QuantSpec, scale_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Quantize ``x`` and return the tensors that store it: codes (packed), scale, zero_point."""
    if spec.is_float:
        return {"values": x.to(spec.torch_dtype), "shape": torch.tensor(list(x.shape), dtype=torch.int64)}
    q = quantize(x, spec)
    stored = {
        "codes": pack(q.codes, spec.bits, spec.qmin),  # (ceil(n * bits / 8),) uint8
        "scale": q.scale.to(scale_dtype),
        "shape": torch.tensor(list(x.shape), dtype=torch.int64),
    }
    if not spec.symmetric:
        stored["zero_point"] = q.zero_point.to(torch.int16)
    return stored


def unpack_tensor(stored: dict[str, torch.Tensor], spec: QuantSpec, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of ``pack_tensor``: the dequantized tensor."""
    shape = torch.Size(stored["shape"].tolist())
    if spec.is_float:
        return stored["values"].to(dtype).reshape(shape)
    codes = unpack(stored["codes"], spec.bits, spec.qmin, shape.numel()).reshape(shape)
    zero_point = stored.get("zero_point", torch.zeros_like(stored["scale"], dtype=torch.int32))
    return dequantize(QTensor(codes, stored["scale"].float(), zero_point.to(torch.int32), spec), dtype)


def stored_bytes(x: torch.Tensor, spec: QuantSpec, scale_bytes: int = 4) -> dict[str, int]:
    """Predicted bytes of a packed tensor, split into codes, scales and zero-points.

    Taught in: chapter 2, section 3 (Granularity: one scale for what?).
    """
    if spec.is_float:
        return {"codes": x.numel() * 2, "scales": 0, "zero_points": 0}
    _, _, param_shape = as_rows(x, spec)
    rows = math.prod(param_shape)  # one scale per tensor, channel or group (prod(()) = 1)
    return {
        "codes": packed_bytes(x.numel(), spec.bits),
        "scales": rows * scale_bytes,
        "zero_points": 0 if spec.symmetric else rows * 2,
    }


def packed_file_bytes(
    model: torch.nn.Module,
    spec: QuantSpec,
    path: str | os.PathLike | None = None,
    scale_dtype: torch.dtype = torch.float32,
) -> int:
    """Write the model with every 2-D weight packed at ``spec`` and return the file's size in bytes.

    Other tensors (biases, layer norms) are written unchanged. The model is not modified.

    Taught in: chapter 2, section 4 (Bit levels: 8, 4, 2 and 1).
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if tensor.dim() == 2 and tensor.is_floating_point():
            for part, value in pack_tensor(tensor.detach(), spec, scale_dtype).items():
                tensors[f"{name}.{part}"] = value.contiguous()
        else:
            tensors[name] = tensor.detach().contiguous()
    metadata = {"scheme": spec.describe()}
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=metadata)
        return Path(path).stat().st_size
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "packed.safetensors"
        save_file(tensors, str(file), metadata=metadata)
        return file.stat().st_size


PARTS = ("codes", "scale", "zero_point", "shape", "values")


def read_packed_file(path: str | os.PathLike, spec: QuantSpec) -> dict[str, torch.Tensor]:
    """Inverse of ``packed_file_bytes``: the file's tensors by state-dict name, matrices dequantized (fp32).

    What a packed file really holds is what comes back from its bytes: scales in the dtype
    they were written in, codes as packed. Judge a scheme's error on this, not on the
    in-memory fake quantization.

    Taught in: chapter 2, section 8 (Design task: a 4-bit encoder in 13 MB at 20 dB).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path {path} does not exist: write it with packed_file_bytes(model, spec, path) first")
    stored = load_file(str(path))
    groups: dict[str, dict[str, torch.Tensor]] = {}
    plain: dict[str, torch.Tensor] = {}
    for key, value in stored.items():
        name, _, part = key.rpartition(".")
        if part in PARTS and f"{name}.shape" in stored:
            groups.setdefault(name, {})[part] = value
        else:
            plain[key] = value
    return plain | {name: unpack_tensor(parts, spec) for name, parts in groups.items()}
