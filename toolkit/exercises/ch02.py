"""Chapter 2 exercises: scale and zero-point; fake quantization; packing two 4-bit codes."""

from __future__ import annotations

import torch

from toolkit.exercises import Exercise, Quiz, register
from toolkit.quant import QuantSpec, qparams_from_range


def scale_zero_point(lo: float, hi: float, bits: int) -> tuple[float, int]:
    """Asymmetric scale and zero-point for signed ``bits``-bit codes covering [lo, hi] and 0."""
    scale, zero_point = qparams_from_range(torch.tensor(lo), torch.tensor(hi), QuantSpec(bits=bits, symmetric=False))
    return float(scale), int(zero_point)


def fake_quant(x: torch.Tensor, scale: float, zero_point: int, qmin: int, qmax: int) -> torch.Tensor:
    """x_hat = (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale."""
    q = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def pack_int4_pair(low: int, high: int) -> int:
    """One byte holding two signed 4-bit codes: (low + 8) in bits 0-3, (high + 8) in bits 4-7."""
    return (low + 8) | ((high + 8) << 4)


X = torch.tensor([-1.0, -0.26, 0.0, 0.49, 3.2])

register(
    Exercise(
        name="02.scale_zero_point",
        title="Exercise 2.1 (scale and zero-point)",
        reference=scale_zero_point,
        cases=(
            ((-1.0, 3.0, 8), scale_zero_point(-1.0, 3.0, 8)),
            ((-0.5, 1.0, 4), scale_zero_point(-0.5, 1.0, 4)),
            ((1.0, 5.0, 8), scale_zero_point(1.0, 5.0, 8)),
            ((-3.0, -1.0, 2), scale_zero_point(-3.0, -1.0, 2)),
        ),
        hint="Signed b-bit codes run from qmin = -2**(b-1) to qmax = 2**(b-1) - 1. First widen the range "
        "to include 0 (lo = min(lo, 0), hi = max(hi, 0)), then scale = (hi - lo) / (qmax - qmin) and "
        "zero_point = qmin - round(lo / scale). Return (float, int).",
        rel_tol=1e-5,
    )
)

register(
    Exercise(
        name="02.fake_quant",
        title="Exercise 2.2 (quantize, then dequantize)",
        reference=fake_quant,
        cases=(
            ((X, 0.1, 0, -8, 7), fake_quant(X, 0.1, 0, -8, 7)),
            ((X, 0.1, 3, -8, 7), fake_quant(X, 0.1, 3, -8, 7)),
            ((X, 0.02, -128, -128, 127), fake_quant(X, 0.02, -128, -128, 127)),
        ),
        hint="q = clamp(round(x / scale) + zero_point, qmin, qmax) gives integer codes (torch.round, "
        "torch.clamp); then x_hat = (q - zero_point) * scale. Values outside the range are clipped.",
        rel_tol=1e-6,
    )
)

register(
    Exercise(
        name="02.pack_int4_pair",
        title="Exercise 2.3 (two 4-bit codes in one byte)",
        reference=pack_int4_pair,
        cases=(((0, 0), 136), ((-8, 7), 240), ((7, -8), 15), ((-1, 2), 167), ((-8, -8), 0)),
        hint="Shift each signed code into 0..15 by adding 8; the first code takes bits 0-3, the second is "
        "shifted left by 4 (<< 4) into bits 4-7; combine them with | (bitwise or).",
    )
)

register(
    Quiz(
        name="02.asymmetric_gelu",
        question="MiniLM's post-GELU activations are barely ever negative but reach far into the positive side. "
        "Why does asymmetric quantization give them a higher SQNR than symmetric at the same bit width?",
        choices={
            "a": "A symmetric grid spends half its levels on negative values that almost never occur, "
            "so the positive side gets a step twice as coarse.",
            "b": "Asymmetric quantization uses more bits for the zero-point, so it has more levels.",
            "c": "A symmetric grid cannot represent zero exactly.",
        },
        answer="a",
        explanations={
            "a": "The symmetric range is [-max, max], but the data barely goes below zero. The asymmetric range "
            "fits the data, so the same number of levels covers about half the width: a finer step.",
            "b": "Both use the same integer codes (2^b levels). The zero-point only shifts the grid; it is "
            "stored once per tensor or channel, not per value.",
            "c": "A symmetric signed grid has zero_point = 0, so real 0 maps to code 0 exactly. It is the "
            "asymmetric scheme that must take care to keep 0 representable.",
        },
    )
)
