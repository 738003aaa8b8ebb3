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

from toolkit.quant.affine import QTensor, as_rows, dequantize, fake_quantize, quantize
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
        # Symmetric grids have zero_point = 0 everywhere: nothing to store.
        self.register_buffer("zero_point", None if spec.symmetric else torch.zeros(param_shape, dtype=torch.int16))

    def set_from(self, weight: torch.Tensor, scale: torch.Tensor | None = None, zero_point: torch.Tensor | None = None) -> None:
        """Quantize ``weight`` into the buffers (min-max scales unless ``scale`` is given)."""
        q = quantize(weight.detach().float(), self.spec, scale, zero_point)
        self.codes = pack(q.codes, self.spec.bits, self.spec.qmin)  # (ceil(n * bits / 8),) uint8
        self.scale = q.scale.float()
        if not self.spec.symmetric:
            self.zero_point = q.zero_point.to(torch.int16)

    def zero_points(self) -> torch.Tensor:
        """Zero-points as int32, zeros for symmetric grids (which store none)."""
        if self.zero_point is None:
            return torch.zeros(self.scale.shape, dtype=torch.int32)
        return self.zero_point.to(torch.int32)

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
        q = QTensor(self.codes_unpacked(), self.scale, self.zero_points(), self.spec)
        return dequantize(q, dtype)


class QuantLinear(torch.nn.Module):
    """y = x_hat W_hat^T + b, with W stored as packed ``spec.bits``-bit codes.

    With ``input_spec`` (static activation quantization) the input is fake-quantized with a
    fixed scale and zero-point found by calibration (``toolkit.quant.ptq.calibrate_``):
    x_hat = (clamp(round(x / s_x) + z_x, qmin, qmax) - z_x) s_x. Without it, x_hat = x.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, spec: QuantSpec, input_spec: QuantSpec | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_q = _PackedWeight(torch.Size([out_features, in_features]), spec)
        self.bias = torch.nn.Parameter(torch.zeros(out_features)) if bias else None
        self.input_spec = input_spec
        if input_spec is not None:
            if input_spec.granularity != "tensor" or input_spec.is_float or input_spec.binary:
                raise ValueError(f"input_spec must be a per-tensor integer spec of 2-8 bits; got {input_spec.describe()}")
            self.register_buffer("input_scale", torch.ones(()))
            self.register_buffer("input_zero_point", torch.zeros((), dtype=torch.int32))

    @classmethod
    def from_float(cls, linear: torch.nn.Linear, spec: QuantSpec, input_spec: QuantSpec | None = None) -> "QuantLinear":
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"QuantLinear.from_float needs an nn.Linear; got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, spec, input_spec)
        layer.weight_q.set_from(linear.weight)
        if linear.bias is not None:
            layer.bias = torch.nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
        return layer

    @property
    def spec(self) -> QuantSpec:
        return self.weight_q.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in_features)
        if self.input_spec is not None:
            x = fake_quantize(x, self.input_spec, self.input_scale, self.input_zero_point)
        weight = self.weight_q.dequantized(x.dtype)  # (out_features, in_features)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight, bias)  # (..., out_features)

    def extra_repr(self) -> str:
        inputs = f", inputs {self.input_spec.describe()}" if self.input_spec is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.spec.describe()}{inputs}"


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
        zero_points = self.weight_q.zero_points()
        if spec.granularity == "tensor":
            scale, zero = self.weight_q.scale.float(), zero_points.float()
        elif spec.granularity == "channel":
            scale, zero = self.weight_q.scale[flat, None].float(), zero_points[flat, None].float()
        else:  # groups along the row: (num_embeddings, dim // group_size)
            scale = self.weight_q.scale[flat].repeat_interleave(spec.group_size, dim=1).float()
            zero = zero_points[flat].repeat_interleave(spec.group_size, dim=1).float()
        values = codes * scale if spec.binary else (codes - zero) * scale  # (n, dim)
        return values.to(self.weight_q.scale.dtype).reshape(*ids.shape, self.embedding_dim)  # float32, or bf16 after .to()

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.spec.describe()}"
