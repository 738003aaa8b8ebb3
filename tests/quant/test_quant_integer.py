"""The integer linear layer equals the float product of its dequantized operands; requantization equals float rounding."""

import pytest
import torch

from toolkit.quant import affine
from toolkit.quant.integer import fixed_point_multiplier, integer_linear, requantize
from toolkit.quant.spec import QuantSpec


def operands(n=5, k=64, out=7):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, k, generator=g) * 2 + 0.7  # an offset, so the activation grid is asymmetric
    w = torch.randn(out, k, generator=g) * 0.05
    qx = affine.quantize(x, QuantSpec(bits=8, signed=False, symmetric=False))  # per tensor, codes 0..255
    qw = affine.quantize(w, QuantSpec(bits=8, granularity="channel"))  # per output channel, symmetric
    return x, w, qx, qw


def test_integer_linear_is_the_float_product_of_the_dequantized_operands():
    x, w, qx, qw = operands()
    bias = torch.randn(7)
    y = integer_linear(qx.codes, float(qx.scale), int(qx.zero_point), qw.codes, qw.scale, bias)
    reference = torch.nn.functional.linear(affine.dequantize(qx).double(), affine.dequantize(qw).double(), bias.double())
    assert torch.allclose(y.double(), reference, rtol=1e-5, atol=1e-5)
    no_correction = integer_linear(qx.codes, float(qx.scale), 0, qw.codes, qw.scale, bias)  # forgetting z_x
    assert (no_correction.double() - reference).abs().max() > 0.1


def test_integer_linear_refuses_float_codes_and_mismatched_shapes():
    _, _, qx, qw = operands()
    with pytest.raises(ValueError, match="must be integer codes"):
        integer_linear(qx.codes.float(), 1.0, 0, qw.codes, qw.scale)
    with pytest.raises(ValueError, match="must share the input size"):
        integer_linear(qx.codes[:, :10], 1.0, 0, qw.codes, qw.scale)


@pytest.mark.parametrize("real", [0.5, 0.0013, 0.7071, 1 / 3, 2**-20])
def test_requantization_with_integers_matches_float_rounding(real):
    multiplier, shift = fixed_point_multiplier(real)
    assert 2**30 <= multiplier < 2**31 and abs(multiplier / 2 ** (31 + shift) - real) <= real * 2**-30
    acc = torch.arange(-300_000, 300_000, 997, dtype=torch.int32)
    got = requantize(acc, multiplier, shift, zero_point=3).int()
    expected = (torch.floor(acc.double() * real + 0.5) + 3).clamp(-128, 127).int()  # round half up, as the shift does
    assert (got - expected).abs().max() <= 1 and (got == expected).float().mean() > 0.99
    with pytest.raises(ValueError, match="real must be in"):
        fixed_point_multiplier(1.5)
