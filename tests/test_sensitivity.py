"""Second-order sensitivity (Hutchinson's trace) and the exact bit allocation under a byte budget."""

import itertools
import random

import pytest
import torch

from toolkit.quant import sensitivity


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    # L = 1/2 sum a_i w_i^2: H = diag(a); for Rademacher v, v^T H v = sum a_i exactly
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w = torch.randn(4, requires_grad=True)
    assert sensitivity.hutchinson_trace(lambda: 0.5 * (a * w * w).sum(), [w], probes=1) == [pytest.approx(10.0)]


def test_hutchinson_estimates_the_trace_of_a_dense_quadratic_per_tensor():
    torch.manual_seed(0)
    m = torch.randn(6, 6)
    h = m @ m.T + torch.eye(6)  # symmetric positive definite, trace known
    w = torch.randn(6, requires_grad=True)
    u = torch.randn(3, requires_grad=True)  # a second tensor with its own block: L = 1/2 w^T H w + 5 u.u, Tr = 10 * 3
    traces = sensitivity.hutchinson_trace(lambda: 0.5 * w @ h @ w + 5 * (u * u).sum(), [w, u], probes=400)
    assert traces[0] == pytest.approx(float(torch.trace(h)), rel=0.1)
    assert traces[1] == pytest.approx(30.0)


def brute_force(costs, damages, budget):
    best = None
    for choice in itertools.product(*[range(len(c)) for c in costs]):
        cost = sum(costs[i][j] for i, j in enumerate(choice))
        damage = sum(damages[i][j] for i, j in enumerate(choice))
        if cost <= budget and (best is None or damage < best[0] - 1e-12):
            best = (damage, choice)
    return best


def test_allocation_matches_brute_force_on_random_toys():
    rng = random.Random(0)
    for _ in range(30):
        layers = rng.randint(1, 4)
        costs = [[rng.randint(1, 12) for _ in range(3)] for _ in range(layers)]
        damages = [[rng.random() for _ in range(3)] for _ in range(layers)]
        budget = rng.randint(sum(min(c) for c in costs), sum(max(c) for c in costs))
        chosen = sensitivity.allocate_bits(costs, damages, budget)
        assert sum(costs[i][j] for i, j in enumerate(chosen)) <= budget
        assert sum(damages[i][j] for i, j in enumerate(chosen)) == pytest.approx(brute_force(costs, damages, budget)[0])


def test_allocation_with_granularity_never_exceeds_the_budget():
    # two layers, options 2/4/8 bits of 1,000 numbers: 250, 500, 1,000 bytes; damage falls with bits
    costs = [[250, 500, 1000], [250, 500, 1000]]
    damages = [[9.0, 3.0, 1.0], [4.0, 1.0, 0.5]]
    chosen = sensitivity.allocate_bits(costs, damages, budget=1000, granularity=64)
    assert sum(costs[i][j] for i, j in enumerate(chosen)) <= 1000
    # in 64-byte units: 250 -> 4, 500 -> 8, budget 1000 -> 15 units; 500 + 500 (damage 4) would fit exactly in bytes but
    # takes 16 units: coarse units are safe (never over budget) and can miss an exact fit. Best in units: 500 + 250.
    assert chosen == [1, 0]
    assert sensitivity.allocate_bits(costs, damages, budget=1000) == [1, 1]  # in single bytes the exact fit is found


def test_allocation_bad_input():
    with pytest.raises(ValueError, match="below the smallest possible total"):
        sensitivity.allocate_bits([[10, 20]], [[1.0, 0.5]], budget=5)
    with pytest.raises(ValueError, match="one non-empty row per layer"):
        sensitivity.allocate_bits([[10, 20]], [[1.0]], budget=50)
    with pytest.raises(ValueError, match="budget must be a non-negative integer"):
        sensitivity.allocate_bits([[10]], [[1.0]], budget=-1)
    with pytest.raises(ValueError, match="probes must be a positive integer"):
        sensitivity.hutchinson_trace(lambda: torch.zeros(()), [torch.zeros(1, requires_grad=True)], probes=0)


def test_layer_sensitivity_scans_one_layer_at_a_time_and_leaves_the_model_alone():
    from transformers import BertConfig, BertForSequenceClassification

    from toolkit import models
    from toolkit.data import Example
    from toolkit.quant.spec import QuantSpec

    tokenizer = models.tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    examples = [Example(t, i % 2, "test") for i, t in enumerate(["great phone", "awful battery", "works well", "broke", "fine"] * 4)]
    layers = ["bert.encoder.layer.0.intermediate.dense", "bert.embeddings.word_embeddings"]
    specs = [QuantSpec(bits=8, granularity="channel"), QuantSpec(bits=2, granularity="channel")]
    results = sensitivity.layer_sensitivity(model, tokenizer, examples, layers, specs)
    assert [(r.layer, r.spec) for r in results] == [(name, s.describe()) for name in layers for s in specs]
    for name in layers:
        eight, two = [r for r in results if r.layer == name]
        assert 0 <= eight.kl < two.kl, "2 bits move the logits more than 8 bits"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "the model is not changed"
    with pytest.raises(ValueError, match="layers must name Linear or Embedding modules"):
        sensitivity.layer_sensitivity(model, tokenizer, examples, ["bert.encoder"], specs)


def test_smoothquant_migration_keeps_the_product_and_flattens_activation_outliers():
    torch.manual_seed(0)
    linear = torch.nn.Linear(8, 4)
    x = torch.randn(16, 8)
    x[:, 3] *= 50  # one outlier channel
    scales = sensitivity.smoothquant_scales(x.abs().amax(0), linear.weight.detach().abs().amax(0), alpha=0.5)
    smoothed = sensitivity.smooth_linear(linear, scales)
    torch.testing.assert_close(smoothed(x / scales), linear(x), rtol=1e-4, atol=1e-4)
    ratio = lambda t: float(t.abs().amax(0).max() / t.abs().amax(0).median())  # noqa: E731
    assert ratio(x / scales) < ratio(x) / 3, "the outlier channel's range moved into the weights"
    assert torch.equal(sensitivity.smoothquant_scales(x.abs().amax(0), linear.weight.detach().abs().amax(0), alpha=0.0),
                       (1 / linear.weight.detach().abs().amax(0).clamp(min=1e-5)).clamp(min=1e-5))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        sensitivity.smoothquant_scales(x.abs().amax(0), linear.weight.detach().abs().amax(0), alpha=1.5)
    with pytest.raises(ValueError, match=r"scales must be \(8,\)"):
        sensitivity.smooth_linear(linear, torch.ones(3))
