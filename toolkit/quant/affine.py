"""Affine quantization: real values <-> integer codes, with a scale and a zero-point.

The mapping, for one scale ``s`` and zero-point ``z`` (an integer):

    quantize:    q = clamp(round(x / s) + z, qmin, qmax)        (integer code)
    dequantize:  x_hat = (q - z) * s                              (real value again)
    fake quantize: x_hat = dequantize(quantize(x))                (float in, float out)

Choosing ``s`` and ``z`` from the range [lo, hi] that must be represented:

    asymmetric:  lo, hi = min(lo, 0), max(hi, 0)    (real 0 must be exactly representable)
                 s = (hi - lo) / (qmax - qmin),   z = qmin - round(lo / s)
    symmetric:   s = max(|lo|, |hi|) / ((qmax - qmin) / 2),   z = 0  (signed codes)
                 (unsigned symmetric codes put z in the middle: (qmin + qmax + 1) // 2)
    binary (1 bit, XNOR-Net style):  q = sign(x) in {-1, +1},  s = mean(|x|),  x_hat = q * s

Granularity decides which values share one (s, z): the whole tensor, each slice along a
channel axis, or each group of ``group_size`` consecutive values along the last dimension.
Internally a tensor is viewed as ``rows`` (one row per (s, z)); the result is reshaped back.

To be bit-exact with PyTorch's own kernels (``torch.fake_quantize_per_tensor_affine``), the
division is computed as a multiplication by ``1 / s`` and rounding is to nearest, ties to even.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from toolkit.quant.spec import QuantSpec


@dataclass
class QTensor:
    """Integer codes with the scale and zero-point that give them meaning."""

    codes: torch.Tensor  # same shape as the original tensor, integer values in [qmin, qmax]
    scale: torch.Tensor  # () per tensor, (C,) per channel, (*shape[:-1], n_groups) per group
    zero_point: torch.Tensor  # same shape as scale, integer values
    spec: QuantSpec

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape


def check_tensor(x: torch.Tensor, name: str = "x") -> None:
    """Refuse what cannot be quantized: non-tensors, non-floating dtypes, NaN or inf values."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32, bfloat16, ...); got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: nothing to quantize")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values; quantization needs finite numbers")


def as_rows(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, Callable, tuple[int, ...]]:
    """View ``x`` as (n_rows, row_len): one row per scale. Returns (rows, restore, param_shape)."""
    shape = x.shape
    if spec.granularity == "tensor":
        return x.reshape(1, -1), lambda r: r.reshape(shape), ()
    if spec.granularity == "channel":
        if not -x.dim() <= spec.axis < x.dim():
            raise ValueError(f"axis {spec.axis} is out of range for a tensor with {x.dim()} dimensions (shape {tuple(shape)})")
        axis = spec.axis % x.dim()
        moved = x.movedim(axis, 0)
        moved_shape = moved.shape
        return moved.reshape(shape[axis], -1), lambda r: r.reshape(moved_shape).movedim(0, axis), (shape[axis],)
    size = spec.group_size
    if shape[-1] % size:
        raise ValueError(f"group_size {size} does not divide the last dimension {shape[-1]} (shape {tuple(shape)}); choose a divisor of {shape[-1]}")
    return x.reshape(-1, size), lambda r: r.reshape(shape), (*shape[:-1], shape[-1] // size)


def qparams_from_range(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero-point that map the real range [lo, hi] onto [qmin, qmax] (see module doc).

    Taught in: chapter 2, section 1 (From real numbers to integer codes).
    """
    lo, hi = lo.float(), hi.float()
    eps = torch.finfo(torch.float32).eps
    if spec.symmetric:
        amax = torch.maximum(-lo, hi).clamp(min=0)
        scale = (amax / ((spec.qmax - spec.qmin) / 2)).clamp(min=eps)
        middle = 0 if spec.signed else (spec.qmin + spec.qmax + 1) // 2
        zero_point = torch.full_like(scale, middle, dtype=torch.int32)
    else:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        scale = ((hi - lo) / (spec.qmax - spec.qmin)).clamp(min=eps)
        zero_point = (spec.qmin - torch.round(lo / scale)).clamp(spec.qmin, spec.qmax).to(torch.int32)
    return scale, zero_point


def _round(v: torch.Tensor, spec: QuantSpec, generator: torch.Generator | None) -> torch.Tensor:
    if spec.rounding == "nearest":
        return torch.round(v)  # ties to even, as PyTorch's kernels
    noise = torch.rand(v.shape, generator=generator, device=v.device, dtype=v.dtype)
    return torch.floor(v + noise)  # rounds up with probability equal to the fractional part


def _per_row(value, n_rows: int, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A given scale or zero-point as one value per row: (n_rows, 1)."""
    value = torch.as_tensor(value).to(dtype).reshape(-1, 1)
    if value.shape[0] not in (1, n_rows):
        raise ValueError(f"{name} has {value.shape[0]} values but this granularity needs 1 or {n_rows}")
    return value.expand(n_rows, 1)


def quantize(
    x: torch.Tensor,
    spec: QuantSpec,
    scale: torch.Tensor | float | None = None,
    zero_point: torch.Tensor | int | None = None,
    generator: torch.Generator | None = None,
) -> QTensor:
    """Integer codes of ``x``: q = clamp(round(x / s) + z, qmin, qmax).

    Without ``scale``/``zero_point`` they are computed from the min and max of each row
    (each tensor, channel or group); pass them (e.g. from an observer) to clip.

    Taught in: chapter 2, section 1 (From real numbers to integer codes).
    """
    check_tensor(x)
    if spec.is_float:  # a 16-bit float cast: the "codes" are the 16-bit values themselves
        one = torch.ones(())
        return QTensor(codes=x.to(spec.torch_dtype), scale=one, zero_point=torch.zeros((), dtype=torch.int32), spec=spec)
    rows, restore, param_shape = as_rows(x.float(), spec)  # (n_rows, row_len)
    if zero_point is not None and scale is None:
        raise ValueError("zero_point was given without scale; pass both or neither")
    if scale is not None:
        scale_rows = _per_row(scale, rows.shape[0], "scale", torch.float32)
        zero_rows = _per_row(0 if zero_point is None else zero_point, rows.shape[0], "zero_point", torch.int32)
    elif spec.binary:
        scale_rows = rows.abs().mean(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).eps)
        zero_rows = torch.zeros_like(scale_rows, dtype=torch.int32)
    else:
        scale_rows, zero_rows = qparams_from_range(rows.amin(dim=1, keepdim=True), rows.amax(dim=1, keepdim=True), spec)
    if spec.binary:
        codes = torch.where(rows >= 0, 1, -1).to(torch.int8)
        zero_rows = torch.zeros_like(zero_rows)
    else:
        inv_scale = 1.0 / scale_rows
        codes = (_round(rows * inv_scale, spec, generator) + zero_rows).clamp(spec.qmin, spec.qmax)
        codes = codes.to(torch.int16 if spec.qmax > 127 else torch.int8)
    return QTensor(
        codes=restore(codes),
        scale=scale_rows.reshape(param_shape).contiguous(),
        zero_point=zero_rows.reshape(param_shape).contiguous(),
        spec=spec,
    )


def dequantize(q: QTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Real values again: x_hat = (q - z) * s (binary: x_hat = q * s).

    Taught in: chapter 2, section 1 (From real numbers to integer codes).
    """
    if q.spec.is_float:
        return q.codes.to(dtype)
    rows, restore, _ = as_rows(q.codes, q.spec)  # (n_rows, row_len)
    scale = q.scale.reshape(-1, 1).float()
    zero_point = q.zero_point.reshape(-1, 1).float()
    return restore((rows.float() - zero_point) * scale).to(dtype)


def fake_quantize(
    x: torch.Tensor,
    spec: QuantSpec,
    scale: torch.Tensor | float | None = None,
    zero_point: torch.Tensor | int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Quantize then dequantize: the float tensor the integer model effectively computes with.

    Taught in: chapter 2, section 2 (Symmetric or asymmetric?).
    """
    return dequantize(quantize(x, spec, scale, zero_point, generator), dtype=x.dtype)
