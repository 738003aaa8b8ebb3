"""What an int8 engine computes for one linear layer: integer products, int32 sums, one rescale.

Chapter 3 *simulates* static W8A8 with fake quantization (float arithmetic on values that lie on
the grid). An engine (chapter 9's OpenVINO) multiplies the integer codes themselves. With the input
quantized per tensor and asymmetric, x ≈ s_x (q_x − z_x), and the weight per output channel and
symmetric, W_o ≈ s_o q_o:

    y_no = Σ_k x_nk W_ok ≈ s_x s_o Σ_k (q_x,nk − z_x) q_o,k
         = s_x s_o ( Σ_k q_x,nk q_o,k  −  z_x Σ_k q_o,k )

- the first sum is the **integer GEMM**: int8 × int8 products accumulated in **int32** (a sum of up
  to k products of 127 × 255 overflows int16 after two terms, never int32 for k < 66,000);
- the second is the **zero-point correction**, one integer per output channel, computed once from
  the weights (a symmetric weight grid has z = 0, so no correction is needed on the other side);
- one float multiply per output rescales the int32 sum; engines that pass int8 on to the next layer
  instead **requantize**: multiply by M = s_x s_o / s_y, held as a fixed-point integer multiplier and
  a right shift, add z_y and clamp to int8 (``requantize``).
"""

from __future__ import annotations

import math

import torch


def integer_linear(q_x: torch.Tensor, x_scale: float, x_zero_point: int, q_w: torch.Tensor, w_scale: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = s_x s_w (q_x q_wᵀ − z_x Σ_k q_w) + b from integer codes: ``q_x`` (n, k) in int8/uint8 range, ``q_w`` (out, k)
    symmetric int8 per output channel with ``w_scale`` (out,). The products and sums are exact integers (int32).

    Taught in: chapter 3, section 4 (Static int8: calibrate the activation ranges once).
    """
    if q_x.dtype.is_floating_point or q_w.dtype.is_floating_point:
        raise ValueError(f"q_x and q_w must be integer codes; got {q_x.dtype} and {q_w.dtype}")
    if q_x.shape[-1] != q_w.shape[-1]:
        raise ValueError(f"q_x (…, {q_x.shape[-1]}) and q_w ({q_w.shape[0]}, {q_w.shape[-1]}) must share the input size")
    accumulator = q_x.to(torch.int32) @ q_w.to(torch.int32).T  # (n, out) int32: the integer GEMM
    correction = int(x_zero_point) * q_w.to(torch.int32).sum(dim=1)  # (out,) once per weight, not per input
    y = (accumulator - correction).to(torch.float32) * (float(x_scale) * w_scale.float())  # (n, out)
    return y if bias is None else y + bias.float()


def fixed_point_multiplier(real: float) -> tuple[int, int]:
    """A positive real M < 1 as an integer multiplier m in [2^30, 2^31) and a right shift r: M ≈ m / 2^(31 + r)."""
    if not 0 < real < 1:
        raise ValueError(f"real must be in (0, 1) (a requantization scale s_x s_w / s_y); got {real!r}")
    mantissa, exponent = math.frexp(real)  # real = mantissa · 2^exponent, mantissa in [0.5, 1)
    multiplier = round(mantissa * 2**31)
    if multiplier == 2**31:  # the mantissa rounded up to 1.0
        multiplier, exponent = 2**30, exponent + 1
    return multiplier, -exponent


def requantize(accumulator: torch.Tensor, multiplier: int, shift: int, zero_point: int, qmin: int = -128,
               qmax: int = 127) -> torch.Tensor:
    """int32 sums to int8 codes with integer arithmetic only: round(acc · m / 2^(31 + r)) + z_y, clamped."""
    total_shift = 31 + shift
    product = accumulator.to(torch.int64) * multiplier  # (…) int64: no overflow for int32 × 2^31
    rounded = (product + (1 << (total_shift - 1))) >> total_shift  # round half up
    return (rounded + zero_point).clamp(qmin, qmax).to(torch.int8 if qmin < 0 else torch.uint8)
