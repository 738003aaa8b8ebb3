"""Quantized layers that hold packed integer codes and compute with their dequantized values.

- ``QuantLinear``: a weight-only quantized ``nn.Linear``. It stores the packed codes, scales
  (and zero-points) of its weight; each forward unpacks and dequantizes the weight, then
  computes y = x W_hat^T + b in the input's dtype. Memory and file hold b bits per weight;
  the arithmetic is still floating point (weight-only quantization saves bytes, not FLOPs).
- ``QuantEmbedding``: a quantized ``nn.Embedding`` (one scale per token row by default).
  A lookup dequantizes only the rows it reads, so it is as fast as a float embedding.

Both are built from a float module with ``from_float`` and are plain ``nn.Module``s, so a
transformers model keeps working when its layers are swapped for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolkit.quant.affine import QTensor, as_rows, dequantize, quantize
from toolkit.quant.packing import pack, packed_bytes, unpack
from toolkit.quant.spec import QuantSpec


class _PackedWeight(torch.nn.Module):
    """Packed codes + scale (+ zero-point) of one weight tensor, as buffers (they are saved)."""

    def __init__(self, shape: torch.Size, spec: QuantSpec):
        super().__init__()
        if spec.is_float:
            raise ValueError("packed layers take integer specs (bits 1-8); cast the model for 16-bit floats")
        self.spec = spec
        self.shape = torch.Size(shape)
        _, _, param_shape = as_rows(torch.empty(self.shape, device="meta"), spec)  # () / (C,) / (..., groups)
        # Buffers of the right sizes, so that a saved state_dict loads into an empty layer.
        self.register_buffer("codes", torch.zeros(packed_bytes(self.shape.numel(), spec.bits), dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(param_shape))
        self.register_buffer("zero_point", torch.zeros(param_shape, dtype=torch.int16))

    def set_from(self, weight: torch.Tensor) -> None:
        q = quantize(weight.detach().float(), self.spec)
        self.codes = pack(q.codes, self.spec.bits, self.spec.qmin)  # (ceil(n * bits / 8),) uint8
        self.scale = q.scale.float()
        self.zero_point = q.zero_point.to(torch.int16)

    def codes_unpacked(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Integer codes, all of them (out, in) or only some rows (len(rows), in)."""
        n_rows, row_len = self.shape[0], self.shape[1:].numel()
        if rows is None:
            return unpack(self.codes, self.spec.bits, self.spec.qmin, self.shape.numel()).reshape(self.shape)
        if (row_len * self.spec.bits) % 8:  # rows do not start on byte boundaries: unpack everything
            return self.codes_unpacked()[rows]
        packed_rows = self.codes.reshape(n_rows, row_len * self.spec.bits // 8)[rows]  # (len(rows), bytes per row)
        return unpack(packed_rows.reshape(-1), self.spec.bits, self.spec.qmin, len(rows) * row_len).reshape(len(rows), -1)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        q = QTensor(self.codes_unpacked(), self.scale, self.zero_point.to(torch.int32), self.spec)
        return dequantize(q, dtype)


class QuantLinear(torch.nn.Module):
    """y = x W_hat^T + b, with W stored as packed ``spec.bits``-bit codes."""

    def __init__(self, in_features: int, out_features: int, bias: bool, spec: QuantSpec):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_q = _PackedWeight(torch.Size([out_features, in_features]), spec)
        self.bias = torch.nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_float(cls, linear: torch.nn.Linear, spec: QuantSpec) -> "QuantLinear":
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"QuantLinear.from_float needs an nn.Linear; got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, spec)
        layer.weight_q.set_from(linear.weight)
        if linear.bias is not None:
            layer.bias = torch.nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
        return layer

    @property
    def spec(self) -> QuantSpec:
        return self.weight_q.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in_features)
        weight = self.weight_q.dequantized(x.dtype)  # (out_features, in_features)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight, bias)  # (..., out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.spec.describe()}"


class QuantEmbedding(torch.nn.Module):
    """An embedding table stored as packed codes; a lookup dequantizes only the rows it reads."""

    def __init__(self, num_embeddings: int, embedding_dim: int, spec: QuantSpec, padding_idx: int | None = None):
        super().__init__()
        if spec.granularity == "channel" and spec.axis not in (0, -2):
            raise ValueError(f"an embedding is quantized per row (axis 0) or per group; got axis={spec.axis}")
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight_q = _PackedWeight(torch.Size([num_embeddings, embedding_dim]), spec)

    @classmethod
    def from_float(cls, embedding: torch.nn.Embedding, spec: QuantSpec) -> "QuantEmbedding":
        if not isinstance(embedding, torch.nn.Embedding):
            raise TypeError(f"QuantEmbedding.from_float needs an nn.Embedding; got {type(embedding).__name__}")
        layer = cls(embedding.num_embeddings, embedding.embedding_dim, spec, embedding.padding_idx)
        layer.weight_q.set_from(embedding.weight)
        return layer

    @property
    def spec(self) -> QuantSpec:
        return self.weight_q.spec

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table (transformers reads ``.weight`` of input embeddings)."""
        return self.weight_q.dequantized()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids: (batch, seq)
        flat = ids.reshape(-1)
        spec = self.spec
        codes = self.weight_q.codes_unpacked(flat).float()  # (n, dim); unpacking is the slow part
        if spec.granularity == "tensor":
            scale, zero = self.weight_q.scale.float(), self.weight_q.zero_point.float()
        elif spec.granularity == "channel":
            scale, zero = self.weight_q.scale[flat, None].float(), self.weight_q.zero_point[flat, None].float()
        else:  # groups along the row: (num_embeddings, dim // group_size)
            scale = self.weight_q.scale[flat].repeat_interleave(spec.group_size, dim=1).float()
            zero = self.weight_q.zero_point[flat].repeat_interleave(spec.group_size, dim=1).float()
        values = codes * scale if spec.binary else (codes - zero) * scale  # (n, dim)
        return values.reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.spec.describe()}"
