"""Chapter 2 exercises: scale and zero-point; fake quantization; packing two 4-bit codes."""

from __future__ import annotations

import torch

from toolkit.workbook.exercises import Exercise, Quiz, register
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
            # 8 bits: scale = 4 / 255 = 0.0156863; zero_point = -128 - round(-1 / 0.0156863) = -128 + 64 = -64
            ((-1.0, 3.0, 8), (4 / 255, -64)),
            # 4 bits, codes -8..7: scale = 1.5 / 15 = 0.1; zero_point = -8 - round(-5) = -3
            ((-0.5, 1.0, 4), (0.1, -3)),
            # the range is widened to include 0: [0, 5], scale 5 / 255; zero_point = -128 - 0
            ((1.0, 5.0, 8), (5 / 255, -128)),
            # [-3, 0] on 2-bit codes -2..1: scale 3 / 3 = 1; zero_point = -2 - round(-3) = 1
            ((-3.0, -1.0, 2), (1.0, 1)),
        ),
        hint=(
            'the integer grid [qmin, qmax] must cover the real range [lo, hi], and the real 0 must land exactly on a code.',
            'widen to lo = min(lo, 0), hi = max(hi, 0); scale = (hi − lo) / (qmax − qmin) with qmin = −2^(b−1), qmax = 2^(b−1) − 1; zero_point = qmin − round(lo / scale).',
            'lo, hi = min(lo, 0.0), max(hi, 0.0); qmin, qmax = -2 ** (bits - 1), 2 ** (bits - 1) - 1; scale = (hi - lo) / (qmax - qmin); return float(scale), int(qmin - round(lo / scale))',
        ),
        rel_tol=1e-5,
    )
)

register(
    Exercise(
        name="02.fake_quant",
        title="Exercise 2.2 (quantize, then dequantize)",
        reference=fake_quant,
        cases=(
            # x / 0.1 rounds to -10, -3, 0, 5, 32; clipped to [-8, 7]: -8, -3, 0, 5, 7; times 0.1
            ((X, 0.1, 0, -8, 7), torch.tensor([-0.8, -0.3, 0.0, 0.5, 0.7])),
            # shifted by z = 3: -7, 0, 3, 8, 35, clipped to 7 at the top; minus 3, times 0.1
            ((X, 0.1, 3, -8, 7), torch.tensor([-1.0, -0.3, 0.0, 0.4, 0.4])),
            # z = -128: -50 and 0 land at or below -128, so they come back as 0; 0.561 / 0.02 = 28.05 -> 28 -> 0.56
            ((torch.tensor([-1.0, 0.0, 0.561, 3.2]), 0.02, -128, -128, 127), torch.tensor([0.0, 0.0, 0.56, 3.2])),
        ),
        hint=(
            'go to the integer grid and straight back: divide by the scale, round, shift by the zero-point, clip; then undo the shift and the scale.',
            'q = clamp(round(x / s) + z, qmin, qmax); x̂ = (q − z) · s.',
            'q = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax); return (q - zero_point) * scale',
        ),
        rel_tol=1e-6,
    )
)

register(
    Exercise(
        name="02.pack_int4_pair",
        title="Exercise 2.3 (two 4-bit codes in one byte)",
        reference=pack_int4_pair,
        cases=(((0, 0), 136), ((-8, 7), 240), ((7, -8), 15), ((-1, 2), 167), ((-8, -8), 0)),
        hint=(
            'a byte has two 4-bit halves; each signed code in −8..7 must first become an unsigned nibble in 0..15.',
            'byte = (low + 8) + 16 · (high + 8), i.e. the low nibble in bits 0-3 and the high one in bits 4-7.',
            'return (low + 8) | ((high + 8) << 4)',
        ),
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

register(
    Quiz(
        name='02.code_range',
        question='What does `(-2 ** (bits - 1), 2 ** (bits - 1) - 1)` give for bits = 3?',
        choices={
            'a': '(-3, 3)',
            'b': '(-4, 4)',
            'c': '(-4, 3)',
            'd': '(-8, 7)',
        },
        answer='c',
        explanations={
            'a': 'That is the restricted symmetric range; the expression gives the full signed range.',
            'b': '4 does not fit in 3 signed bits: the largest code is 2² - 1 = 3.',
            'c': 'Right: ** binds tighter than the minus, so -2 ** 2 = -4, and 2 ** 2 - 1 = 3: eight codes.',
            'd': 'That is 4 bits.',
        },
    )
)

register(
    Quiz(
        name='02.scale_value',
        question='A tensor whose values span [-1, 3] is quantized asymmetrically to 8 bits. What is the scale?',
        choices={
            'a': '3 / 127 ≈ 0.0236',
            'b': '4 / 255 ≈ 0.0157',
            'c': '4 / 256 = 0.0156',
            'd': '1 / 128 ≈ 0.0078',
        },
        answer='b',
        explanations={
            'a': '3 / 127 is a symmetric scale set by the larger side; the asymmetric grid covers [-1, 3] exactly.',
            'b': "Right: 256 codes have 255 steps between them, and the range [-1, 3] is 4 wide (Exercise 2.1's formula).",
            'c': '256 codes make 255 gaps between them, not 256.',
            'd': "1 / 128 ignores the tensor's range entirely.",
        },
    )
)

register(
    Quiz(
        name='02.per_channel_why',
        question='Why does per-channel quantization of a weight matrix usually beat per-tensor at the same bit width?',
        choices={
            'a': 'Per-channel stores every weight with more bits, since the precision of its scale is added to each code',
            'b': 'Per-channel needs no zero-point, and the zero-point is the main source of rounding error at low bits',
            'c': 'Per-tensor scales must be powers of two on most hardware, which wastes up to half of every step',
            'd': 'Each row gets a step fitted to its own range, instead of one set by the widest row',
        },
        answer='d',
        explanations={
            'a': 'The codes have the same bits; only the scales (a few bytes per row) are extra.',
            'b': 'Both can be symmetric or asymmetric; the zero-point is not the difference.',
            'c': 'Neither scheme here restricts scales to powers of two; the difference is how many ranges one scale must cover.',
            'd': "Right: one scale for the whole tensor is set by its widest row, so rows with a small range get only a few levels; the chapter's SQNR table compares the granularities at each bit width.",
        },
    )
)

register(
    Quiz(
        name='02.sqnr_per_bit',
        question="For values spread evenly over the quantizer's range, roughly what does one more bit add to the SQNR?",
        choices={
            'a': 'About 6 dB',
            'b': 'About 3 dB',
            'c': 'About 10 dB',
            'd': 'It doubles the SQNR',
        },
        answer='a',
        explanations={
            'a': 'Right: 10 log10(4) ≈ 6.02 dB per bit. Real weights with outliers deviate from the rule, which is why the chapter measures.',
            'b': 'Halving the step quarters the noise power (it scales with the step squared).',
            'c': 'That would be a factor of 10 in noise power per bit.',
            'd': 'dB are logarithmic: each bit adds a constant, it does not multiply.',
        },
    )
)


register(
    Quiz(
        name='02.which_plot',
        question="In the explorer, a histogram carries the grid's levels, two red lines well inside the data's extremes, and below it an error histogram that is flat within ±s/2 but has long, thin tails. Which setting made it?",
        choices={
            'a': '8 bits with a min-max range: every value lies inside the grid, and no error exceeds half a step',
            'b': '4 bits with a clipping observer (`mse` or `percentile`) on the layer output',
            'c': '1 bit: the sign times a scale, so every error is the distance from the value to ±s',
            'd': 'Asymmetric 8 bits on the post-GELU activations, with the range fitted to the data',
        },
        answer='b',
        explanations={
            'a': 'With a min-max range the red lines sit at the extremes and nothing is clipped: no tails.',
            'b': 'Right: a clipping observer puts the range inside the extremes; values beyond it are clipped, and their errors form the tails, while rounding errors stay within half a step.',
            'c': 'Binary codes have two levels and no staircase; their errors are not flat within ±s/2.',
            'd': 'A range fitted to the data by min-max clips nothing, so there are no tails.',
        },
    )
)
