"""Chapter 10's weight quantizers: round to nearest in groups, GPTQ against the slow OBQ and brute force, AWQ's scales."""

import itertools

import pytest
import torch

from toolkit.llm import awq, gptq, groups


def correlated_inputs(tokens=256, k=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g)
    return torch.randn(tokens, k, generator=g) @ mix + 0.1 * torch.randn(tokens, k, generator=g)


def test_round_to_nearest_reproduces_a_grid_it_already_lies_on():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (8, 64), generator=g, dtype=torch.uint8)
    codes[:, ::32] = 0  # every group reaches both ends of the grid, as llama.cpp's Q4_1 blocks do
    codes[:, 1::32] = 15
    scale = (torch.rand(8, 2, generator=g) * 0.01 + 0.001).half()
    minimum = (-torch.rand(8, 2, generator=g) * 0.1).half()
    w = groups.GroupQuantized(codes, scale, minimum, 4, 32).dequantize()
    again = groups.quantize_groups(w, 4, 32)
    assert torch.equal(again.codes, codes)
    assert torch.equal(again.dequantize(), w)


def test_group_quantization_error_bounded_by_half_a_step_and_bytes_counted():
    w = torch.randn(4, 96)
    q = groups.quantize_groups(w, 3, 32)
    step = groups._per_weight(q.scale.float(), 32, 96)
    assert ((q.dequantize() - w).abs() <= step / 2 + 1e-3).all()
    assert groups.stored_bytes((4, 96), 3, 32) == 4 * 96 * 3 // 8 + 4 * 4 * 3
    assert groups.stored_bytes((576, 576), 4, 128) == 576 * 576 // 2 + 4 * 576 * 5  # 4 full groups and a short one


def test_a_short_last_group_gets_its_own_range():
    w = torch.cat([torch.randn(2, 128), 100 * torch.randn(2, 64)], 1)
    q = groups.quantize_groups(w, 4, 128)
    assert q.scale.shape == (2, 2)
    assert (q.dequantize()[:, :128] - w[:, :128]).abs().max() < 0.5  # the large tail does not widen the first group


@pytest.mark.parametrize("bits", [1, 9, 4.0, True, "4"])
def test_bits_outside_2_to_8_are_refused(bits):
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        groups.quantize_groups(torch.randn(2, 8), bits, 8)


@pytest.mark.parametrize("group_size", [0, -32, 65, 3.0])
def test_impossible_group_sizes_are_refused(group_size):
    with pytest.raises(ValueError, match="group_size"):
        groups.quantize_groups(torch.randn(2, 64), 4, group_size)


def test_gptq_equals_the_slow_column_by_column_obq():
    x = correlated_inputs()
    w = torch.randn(6, 16)
    h = gptq.hessian(x)
    for group_size in (None, 8):
        fast = gptq.gptq_quantize(w, h, 3, group_size, block_size=8).dequantize()
        slow = gptq.obq_quantize(w, h, 3, group_size)
        assert torch.allclose(fast, slow, atol=1e-4), group_size


def test_no_code_choice_beats_the_brute_force_optimum_on_a_tiny_layer():
    """On a 1x4 layer at 2 bits every one of the 4**4 = 256 codes can be tried: the optimum of the layer
    objective on the grid. GPTQ and RTN pick codes on the same grid, so neither can beat it."""
    x = correlated_inputs(k=4, seed=1)
    h = gptq.hessian(x)
    for seed in range(10):
        w = torch.randn(1, 4, generator=torch.Generator().manual_seed(seed))
        scale, minimum = groups.group_range(w, 2, None)
        grid = [float(minimum[0, 0]) + q * float(scale[0, 0]) for q in range(4)]
        best = min(gptq.layer_error(w, torch.tensor([list(c)]), h) for c in itertools.product(grid, repeat=4))
        for chosen in (groups.fake_quantize_groups(w, 2, None), gptq.gptq_quantize(w, h, 2, None, damp=0.0).dequantize()):
            assert best <= gptq.layer_error(w, chosen, h) + 1e-5


@pytest.mark.parametrize("bits,group_size", [(3, None), (3, 32), (4, 32)])
def test_gptq_roughly_halves_round_to_nearest_layer_error_on_correlated_inputs(bits, group_size):
    for seed in range(3):
        h = gptq.hessian(correlated_inputs(tokens=1024, k=64, seed=seed))
        w = torch.randn(32, 64, generator=torch.Generator().manual_seed(seed))
        rtn = gptq.layer_error(w, groups.fake_quantize_groups(w, bits, group_size), h)
        assert gptq.layer_error(w, gptq.gptq_quantize(w, h, bits, group_size).dequantize(), h) < 0.7 * rtn


def test_gptq_with_act_order_keeps_groups_contiguous_and_is_exact_on_its_grid():
    x = correlated_inputs(k=32)
    w = torch.randn(4, 32)
    q = gptq.gptq_quantize(w, gptq.hessian(x), 4, 8, act_order=True)
    scale, minimum = groups.group_range(w, 4, 8)  # static groups: the original weights' grid
    assert torch.equal(q.scale, scale) and torch.equal(q.minimum, minimum)
    assert gptq.layer_error(w, q.dequantize(), gptq.hessian(x)) < gptq.layer_error(w, groups.fake_quantize_groups(w, 4, 8), gptq.hessian(x))


def test_gptq_does_not_change_the_weight_and_refuses_bad_input():
    w = torch.randn(3, 8)
    before = w.clone()
    gptq.gptq_quantize(w, gptq.hessian(torch.randn(20, 8)), 4, 4)
    assert torch.equal(w, before)
    with pytest.raises(ValueError, match="inputs must hold at least one token"):
        gptq.hessian(torch.empty(0, 8))
    with pytest.raises(ValueError, match="h must be"):
        gptq.gptq_quantize(w, torch.eye(4), 4, 4)
    with pytest.raises(ValueError, match="bits"):
        gptq.gptq_quantize(w, torch.eye(8), 1, 4)


def test_awq_scales_leave_the_float_function_unchanged():
    torch.manual_seed(0)
    norm = torch.nn.RMSNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
    layers = [torch.nn.Linear(16, 8, bias=False), torch.nn.Linear(16, 4, bias=False)]
    x = torch.randn(10, 16) * torch.linspace(0.1, 10, 16)
    before = [layer(norm(x)) for layer in layers]
    s = awq.candidate_scales(awq.activation_scale(norm(x)), 0.5)
    awq.scale_layers_(norm, layers, s)
    for y, layer in zip(before, layers):
        assert torch.allclose(layer(norm(x)), y, atol=1e-5)
    up, down = torch.nn.Linear(16, 12, bias=True), torch.nn.Linear(12, 16, bias=False)
    y = down(up(x))
    awq.scale_layers_(up, [down], awq.candidate_scales(up(x).abs().mean(0), 0.7))
    assert torch.allclose(down(up(x)), y, atol=1e-4)


def test_awq_search_prefers_scaling_when_a_channel_dominates():
    torch.manual_seed(0)
    x = torch.randn(256, 64)
    x[:, 3] *= 50  # one salient input channel
    layer = torch.nn.Linear(64, 32, bias=False)
    s, alpha, losses = awq.search_scale(x, [layer], layer, 3, 32, grid=10)
    assert alpha > 0 and losses[alpha] < losses[0.0]
    assert s[3] == s.max()
    assert torch.equal(layer.weight, layer.weight)  # restored below
    before = layer.weight.clone()
    awq.search_scale(x, [layer], layer, 3, 32, grid=4)
    assert torch.equal(layer.weight, before)


def test_awq_clip_never_increases_the_group_output_error():
    torch.manual_seed(0)
    w, x = torch.randn(8, 64), torch.randn(128, 64)
    clipped = awq.search_clip(w, x, 3, 32, grid=10)
    err = lambda v: ((x @ groups.fake_quantize_groups(v, 3, 32).T - x @ w.T) ** 2).mean()  # noqa: E731
    assert err(clipped) <= err(w) * 1.001
    ragged = awq.search_clip(torch.randn(4, 80), torch.randn(64, 80), 4, 32, grid=4)
    assert ragged.shape == (4, 80)


def test_layers_sharing_an_input_are_quantized_together_with_the_same_codes_as_apart():
    torch.manual_seed(0)
    block = torch.nn.ModuleDict({"a": torch.nn.Linear(32, 8, bias=False), "b": torch.nn.Linear(32, 4, bias=False),
                                 "c": torch.nn.Linear(32, 8, bias=False)})
    x = correlated_inputs(k=32)
    h_shared, h_other = gptq.hessian(x), gptq.hessian(x[:100])
    alone = {n: gptq.gptq_quantize(block[n].weight, h_shared if n != "c" else h_other, 3, 8, act_order=True) for n in "abc"}
    done = gptq.gptq_block_(block, {"a": h_shared, "b": h_shared.clone(), "c": h_other}, 3, 8, act_order=True)
    for n in "abc":
        assert torch.equal(done[n][0].codes, alone[n].codes) and torch.equal(block[n].weight, alone[n].dequantize())
