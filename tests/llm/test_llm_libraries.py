"""Chapter 10's libraries doing the same: HQQ's grids against round to nearest, torchao's int8 against the aten kernel."""

import pytest
import torch

from toolkit.llm import decode, groups, kernels, libraries


def test_hqq_starts_from_round_to_nearest_and_lowers_its_weight_error():
    """Without its optimisation hqq's grid is round to nearest's (min-max, float zero), up to the fp16 rounding of
    the scales; with it, the robust (p = 0.7) weight error it minimises is lower."""
    from hqq.core.quantize import Quantizer

    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(0))
    codes, meta = Quantizer.quantize(w, nbits=4, group_size=32, optimize=False, axis=1, bitpack=False,
                                     compute_dtype=torch.float32, device="cpu")
    plain = Quantizer.dequantize(codes, meta).reshape(w.shape)
    rtn = groups.quantize_groups(w, 4, 32)
    step = groups._per_weight(rtn.scale.float(), 32, 96)                            # (16, 96) each weight's grid step
    moved = (plain - rtn.dequantize()).abs()
    assert (moved <= 1.01 * step).all()                                                # never more than one grid step apart,
    assert (moved > step / 2).float().mean() < 0.01                                    # and that only on a boundary, where fp16 scales tip a tie
    optimized = libraries.hqq_fake_quantize(w, 4, 32)
    robust = lambda w_hat: (w - w_hat).abs().pow(0.7).sum()  # noqa: E731
    assert robust(optimized) < robust(plain)


def test_hqq_keeps_groups_inside_rows_when_the_group_size_does_not_divide_them():
    """576 = 4.5 x 128: a flat grouping would mix two rows' weights in one group; padded rows keep the short last
    group on its own range, so a row of large weights leaves its neighbour's error small."""
    w = torch.cat([0.01 * torch.randn(1, 192), 100 * torch.randn(1, 192)])          # (2, 192), groups of 128: 1.5 per row
    w_hat = libraries.hqq_fake_quantize(w, 4, 128)
    assert w_hat.shape == w.shape and w_hat.dtype == w.dtype
    assert (w_hat[0] - w[0]).abs().max() < 0.01


@pytest.mark.parametrize("bits", [1, 5, 4.0, True])
def test_hqq_refuses_widths_it_does_not_pack(bits):
    with pytest.raises(ValueError, match=r"bits must be one of \(2, 3, 4, 8\)"):
        libraries.hqq_fake_quantize(torch.randn(2, 32), bits, 32)
    with pytest.raises(ValueError, match="group_size must be None"):
        libraries.hqq_fake_quantize(torch.randn(2, 32), 4, 64)


def test_hqq_model_changes_a_copy_only(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    quantized = libraries.hqq_model(tiny, 3, 32)
    assert all(torch.equal(v, before[k]) for k, v in tiny.state_dict().items())
    layer = quantized.model.layers[0].mlp.down_proj.weight                       # (64, 128): 4 groups of 32 per row
    assert max(group.unique().numel() for group in layer.reshape(-1, 32)) <= 8  # 3 bits: at most 8 values per group
    assert not torch.equal(layer, tiny.model.layers[0].mlp.down_proj.weight)
    assert torch.equal(quantized.lm_head.weight, tiny.lm_head.weight)           # the head is not a block layer


def test_torchao_int8_matches_the_aten_kernel_and_counts_its_bytes(tiny):
    ids = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(2))
    ao = libraries.torchao_int8(tiny)
    aten = decode.with_kernels(tiny, "int8", dtype=torch.float32)
    with torch.inference_mode():
        reference, by_ao, by_aten = (m(ids).logits for m in (tiny, ao, aten))
    assert torch.allclose(by_ao, by_aten, atol=0.02) and not torch.equal(by_ao, reference)
    assert isinstance(tiny.model.layers[0].mlp.up_proj.weight, torch.nn.Parameter)  # the original untouched
    assert type(tiny.model.layers[0].mlp.up_proj.weight.data) is torch.Tensor
    # bytes per token: int8 codes and fp32 scales, as the aten kernel's model reads them
    assert decode.bytes_per_token(ao) == pytest.approx(decode.bytes_per_token(aten), rel=0.05)
    assert kernels.weight_bytes(ao) < kernels.weight_bytes(tiny) / 2
