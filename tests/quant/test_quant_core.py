"""Properties of the quantization core (hypothesis), and agreement with PyTorch's kernels."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit import quant
from toolkit.quant import QuantSpec

settings.register_profile("workbook", deadline=None, max_examples=60, derandomize=True)
settings.load_profile("workbook")


@st.composite
def tensors(draw, rows=st.integers(1, 6), cols=st.sampled_from([4, 8, 16, 32])):
    r, c = draw(rows), draw(cols)
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    shift = draw(st.sampled_from([0.0, 0.5, -2.0]))
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(r, c, generator=g) + shift) * scale


specs = st.builds(
    QuantSpec,
    bits=st.integers(2, 8),
    signed=st.booleans(),
    symmetric=st.booleans(),
    granularity=st.sampled_from(["tensor", "channel"]),
    restricted_range=st.booleans(),
).filter(lambda s: s.signed or not s.restricted_range)


@given(tensors(), specs)
def test_codes_stay_in_range(x, spec):
    q = quant.quantize(x, spec)
    assert spec.qmin <= int(q.codes.min()) and int(q.codes.max()) <= spec.qmax


@given(tensors(), specs.filter(lambda s: not s.symmetric))
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(x, spec):
    q = quant.quantize(x, spec)  # asymmetric min-max: every value is inside the clipping range
    x_hat = quant.dequantize(q)
    rows, _, _ = quant.affine.as_rows(x - x_hat, spec)
    step = q.scale.reshape(-1, 1)
    assert bool((rows.abs() <= step / 2 * (1 + 1e-4) + 1e-6).all())


@given(tensors(), st.integers(2, 8))
def test_zero_is_exactly_representable_in_asymmetric_schemes(x, bits):
    spec = QuantSpec(bits=bits, symmetric=False, granularity="channel")
    x = x.clone()
    x[:, 0] = 0.0
    assert bool((quant.fake_quantize(x, spec)[:, 0] == 0).all())


@given(st.integers(1, 8), st.integers(1, 300), st.integers(0, 1000))
def test_pack_unpack_round_trip_for_every_width(bits, n, seed):
    spec = QuantSpec(bits=bits)
    g = torch.Generator().manual_seed(seed)
    if spec.binary:
        codes = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    else:
        codes = torch.randint(spec.qmin, spec.qmax + 1, (n,), generator=g)
    packed = quant.pack(codes, bits, spec.qmin)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n * bits / 8)
    assert torch.equal(quant.unpack(packed, bits, spec.qmin, n), codes.to(torch.int16))


@given(tensors(cols=st.sampled_from([8, 16])), st.integers(2, 8), st.booleans())
def test_group_of_a_whole_row_equals_per_channel(x, bits, symmetric):
    per_channel = QuantSpec(bits=bits, symmetric=symmetric, granularity="channel", axis=0)
    per_group = QuantSpec(bits=bits, symmetric=symmetric, granularity="group", group_size=x.shape[1])
    assert torch.equal(quant.fake_quantize(x, per_channel), quant.fake_quantize(x, per_group))


@given(tensors(), st.integers(2, 8), st.booleans(), st.booleans())
def test_bit_exact_with_torch_per_tensor(x, bits, signed, symmetric):
    spec = QuantSpec(bits=bits, signed=signed, symmetric=symmetric)
    q = quant.quantize(x, spec)
    ours = quant.dequantize(q)
    theirs = torch.fake_quantize_per_tensor_affine(x, float(q.scale), int(q.zero_point), spec.qmin, spec.qmax)
    assert torch.equal(ours, theirs)


@given(tensors(), st.integers(2, 8), st.booleans(), st.sampled_from([0, 1]))
def test_bit_exact_with_torch_per_channel(x, bits, symmetric, axis):
    spec = QuantSpec(bits=bits, symmetric=symmetric, granularity="channel", axis=axis)
    q = quant.quantize(x, spec)
    theirs = torch.fake_quantize_per_channel_affine(x, q.scale, q.zero_point, axis, spec.qmin, spec.qmax)
    assert torch.equal(quant.dequantize(q), theirs)


def test_int8_ranges():
    assert (QuantSpec(bits=8).qmin, QuantSpec(bits=8).qmax) == (-128, 127)
    assert (QuantSpec(bits=8, restricted_range=True).qmin, QuantSpec(bits=8, restricted_range=True).qmax) == (-127, 127)
    assert (QuantSpec(bits=8, signed=False).qmin, QuantSpec(bits=8, signed=False).qmax) == (0, 255)
    assert (QuantSpec(bits=4).qmin, QuantSpec(bits=4).qmax) == (-8, 7)
    assert QuantSpec(bits=1).levels == 2


def test_scale_and_zero_point_of_a_small_tensor():
    x = torch.tensor([-1.0, 0.0, 0.5, 3.0])
    q = quant.quantize(x, QuantSpec(bits=8, symmetric=False, signed=False))
    assert float(q.scale) == pytest.approx(4.0 / 255)
    assert int(q.zero_point) == 64  # 0 - round(-1 / (4/255)) = round(63.75)
    assert q.codes.tolist() == [0, 64, 96, 255]


def test_binary_is_sign_times_mean_magnitude():
    x = torch.tensor([[0.5, -1.5, 2.0, -0.2]])
    q = quant.quantize(x, QuantSpec(bits=1, granularity="channel"))
    assert q.codes.tolist() == [[1, -1, 1, -1]]
    assert float(q.scale) == pytest.approx(1.05)
    assert quant.dequantize(q)[0].tolist() == pytest.approx([1.05, -1.05, 1.05, -1.05])


def test_stochastic_rounding_is_unbiased():
    x = torch.full((20000,), 0.3)
    spec = QuantSpec(bits=8, rounding="stochastic")
    x_hat = quant.fake_quantize(x, spec, scale=1.0, zero_point=0, generator=torch.Generator().manual_seed(0))
    assert set(x_hat.unique().tolist()) == {0.0, 1.0}
    assert float(x_hat.mean()) == pytest.approx(0.3, abs=0.02)


def test_sqnr_gains_about_6_db_per_bit():
    x = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    sqnr = [quant.sqnr_db(x, quant.fake_quantize(x, QuantSpec(bits=b, granularity="channel"))) for b in (4, 5, 6, 7, 8)]
    gains = [b - a for a, b in zip(sqnr, sqnr[1:])]
    assert all(5.0 < g < 7.0 for g in gains), gains
    assert quant.sqnr_db(x, x) == math.inf and quant.mse(x, x) == 0 and quant.max_error(x, x) == 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(bits=0), "bits must be an integer from 1 to 8"),
        (dict(bits=9), "bits must be an integer from 1 to 8 \\(or 16"),
        (dict(granularity="row"), "granularity must be one of"),
        (dict(granularity="group"), "group_size must be a positive integer"),
        (dict(group_size=32), "group_size is only used with granularity='group'"),
        (dict(rounding="up"), "rounding must be one of"),
        (dict(bits=1, symmetric=False), "binary"),
    ],
)
def test_bad_specs_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantSpec(**kwargs)


def test_bad_tensors_name_the_problem():
    with pytest.raises(ValueError, match="group_size 5 does not divide the last dimension 8"):
        quant.quantize(torch.randn(2, 8), QuantSpec(granularity="group", group_size=5))
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        quant.quantize(torch.randn(2, 8), QuantSpec(granularity="channel", axis=2))
    with pytest.raises(TypeError, match="floating-point"):
        quant.quantize(torch.arange(8), QuantSpec())
    with pytest.raises(ValueError, match="NaN or inf"):
        quant.quantize(torch.tensor([1.0, float("nan")]), QuantSpec())
    with pytest.raises(ValueError, match="codes must lie in"):
        quant.pack(torch.tensor([9]), 4, -8)


def test_given_qparams_must_match_the_granularity():
    spec = QuantSpec(granularity="channel", axis=0)
    with pytest.raises(ValueError, match="scale has 3 values but this granularity needs 1 or 2"):
        quant.quantize(torch.randn(2, 8), spec, scale=torch.ones(3))
    with pytest.raises(ValueError, match="zero_point was given without scale"):
        quant.quantize(torch.randn(2, 8), spec, zero_point=0)


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_16_bit_float_specs_are_casts_for_comparison(fmt):
    spec = QuantSpec(bits=16, float_format=fmt)
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    dtype = getattr(torch, fmt)
    assert torch.equal(quant.fake_quantize(x, spec), x.to(dtype).float())
    assert quant.sqnr_db(x, quant.fake_quantize(x, spec)) > quant.sqnr_db(x, quant.fake_quantize(x, QuantSpec(bits=8, granularity="channel")))
    stored = quant.storage.pack_tensor(x, spec)
    assert torch.equal(quant.storage.unpack_tensor(stored, spec), x.to(dtype).float())
    assert quant.storage.stored_bytes(x, spec)["codes"] == 64 * 32 * 2
    assert "cast" in spec.describe()


def test_16_bit_float_specs_refuse_bad_combinations():
    with pytest.raises(ValueError, match="float_format in float16, bfloat16"):
        QuantSpec(bits=16)
    with pytest.raises(ValueError, match="float_format in float16, bfloat16"):
        QuantSpec(bits=8, float_format="bfloat16")
    with pytest.raises(ValueError, match="no scales"):
        QuantSpec(bits=16, float_format="float16", granularity="channel")
