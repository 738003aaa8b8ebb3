"""Weight-only quantized linear layers on PyTorch's own CPU kernels.

Decoding one token multiplies a single activation row by every weight matrix, so the time goes
into *reading* the weights. These layers keep the weights as integer codes in memory and let a
fused kernel dequantize them on the fly:

    Int4Linear:  y = x @ ((q - 8) * s + z)^T   with q 4-bit codes packed two per byte, per group
                 (aten._convert_weight_to_int4pack_for_cpu / aten._weight_int4pack_mm_for_cpu);
                 the kernel's zero z = m + 8 s turns the float-minimum grid w = q s + m into its form.
    Int8Linear:  y = (x @ q^T) * s              with q int8, one scale per output channel
                 (aten._weight_int8pack_mm).

Both accept float32 or bfloat16 activations (``dtype``); the scales are held in that dtype.
"""

from __future__ import annotations

import torch

from toolkit.llm.groups import GroupQuantized, quantize_groups

INT4_GROUPS = (32, 64, 128, 256)  # the group sizes the int4 CPU kernel accepts
DTYPES = (torch.float32, torch.bfloat16)


def _check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}; got {dtype!r}")
    return dtype


class Int4Linear(torch.nn.Module):
    """A linear layer whose weight is 4-bit codes packed for the CPU int4 kernel (no bias)."""

    def __init__(self, quantized: GroupQuantized, dtype: torch.dtype = torch.float32):
        super().__init__()
        if quantized.bits != 4:
            raise ValueError(f"quantized.bits must be 4 for Int4Linear; got {quantized.bits}")
        if quantized.group_size not in INT4_GROUPS or quantized.codes.shape[1] % quantized.group_size:
            raise ValueError(f"group_size must be one of {INT4_GROUPS} and divide the layer's {quantized.codes.shape[1]} input "
                             f"features for the int4 kernel; got {quantized.group_size}")
        self.dtype = _check_dtype(dtype)
        self.out_features, self.in_features = quantized.codes.shape
        self.group_size = quantized.group_size
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(quantized.codes.to(torch.int32), 2)  # (N, K/2) uint8
        self.register_buffer("packed", packed)
        scale, zero = quantized.scale.float(), quantized.minimum.float() + 8 * quantized.scale.float()  # (N, groups)
        self.register_buffer("scale_and_zero", torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(dtype))  # (groups, N, 2)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, group_size: int = 32, dtype: torch.dtype = torch.float32) -> Int4Linear:
        """Round-to-nearest 4-bit codes of ``linear.weight`` in groups of ``group_size``."""
        if linear.bias is not None:
            raise ValueError("linear: Int4Linear holds no bias; this layer has one")
        return cls(quantize_groups(linear.weight, 4, group_size), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (..., K) -> (..., N)
        shape = x.shape
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).to(self.dtype), self.packed, self.group_size,
                                                       self.scale_and_zero)
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, dtype={self.dtype}"


class Int8Linear(torch.nn.Module):
    """A linear layer whose weight is int8 codes with one symmetric scale per output channel (no bias):
    s = max|w| / 127, q = clamp(round(w / s), -128, 127)."""

    def __init__(self, linear: torch.nn.Linear, dtype: torch.dtype = torch.float32):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("linear: Int8Linear holds no bias; this layer has one")
        self.dtype = _check_dtype(dtype)
        w = linear.weight.detach().float()
        scale = w.abs().amax(1).clamp(min=1e-12) / 127  # (N,)
        self.register_buffer("codes", torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8))  # (N, K)
        self.register_buffer("scale", scale.to(dtype))
        self.out_features, self.in_features = w.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (..., K) -> (..., N)
        shape = x.shape
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(self.dtype), self.codes, self.scale)
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.dtype}"


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer (tied tensors counted once): what one decode step reads.
    A tensor subclass (torchao's quantized weights) counts the plain tensors it is made of."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        for part in _plain_tensors(t):
            if part.data_ptr() not in seen:
                seen.add(part.data_ptr())
                total += part.numel() * part.element_size()
    return total


def _plain_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """``t`` itself, or the inner tensors of a traceable tensor subclass (``__tensor_flatten__``), recursively."""
    t = t.data if isinstance(t, torch.nn.Parameter) else t
    if type(t) is torch.Tensor or not hasattr(t, "__tensor_flatten__"):
        return [t]
    names, _ = t.__tensor_flatten__()
    return [part for name in names for part in _plain_tensors(getattr(t, name))]
