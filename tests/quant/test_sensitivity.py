"""Second-order sensitivity (Hutchinson's trace) and the exact bit allocation under a byte budget."""

import itertools
import random

import pytest
import torch

from toolkit.quant import sensitivity, smooth


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
    scales = smooth.smoothquant_scales(x.abs().amax(0), linear.weight.detach().abs().amax(0), alpha=0.5)
    smoothed = smooth.smooth_linear(linear, scales)
    torch.testing.assert_close(smoothed(x / scales), linear(x), rtol=1e-4, atol=1e-4)
    ratio = lambda t: float(t.abs().amax(0).max() / t.abs().amax(0).median())  # noqa: E731
    assert ratio(x / scales) < ratio(x) / 3, "the outlier channel's range moved into the weights"
    assert torch.equal(smooth.smoothquant_scales(x.abs().amax(0), linear.weight.detach().abs().amax(0), alpha=0.0),
                       (1 / linear.weight.detach().abs().amax(0).clamp(min=1e-5)).clamp(min=1e-5))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        smooth.smoothquant_scales(x.abs().amax(0), linear.weight.detach().abs().amax(0), alpha=1.5)
    with pytest.raises(ValueError, match=r"scales must be \(8,\)"):
        smooth.smooth_linear(linear, torch.ones(3))


# ----------------------------------------------------------------------------- chapter 5's other tools
def tiny_bert(layers: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    from toolkit import models

    tokenizer = models.tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(config).eval(), tokenizer


def few_examples():
    from toolkit.data import Example

    return [Example(t, i % 2, "test") for i, t in enumerate(["great phone", "awful battery life", "works well", "broke", "fine"] * 4)]


def test_predicted_damage_is_half_the_mean_curvature_times_the_squared_error():
    from toolkit.quant.spec import QuantSpec

    w = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    spec = QuantSpec(bits=2, signed=False, symmetric=False)  # per tensor, 4 levels over [0, 3]: every value exact
    assert sensitivity.predicted_damage(8.0, w, spec) == 0.0
    w = torch.tensor([[0.0, 1.0], [1.5, 3.0]])  # 1.5 rounds to 2 (ties to even): error 0.5, squared 0.25
    assert sensitivity.predicted_damage(8.0, w, spec) == pytest.approx(0.5 * 8.0 / 4 * 0.25)


def test_layer_type_and_depth_read_bert_names():
    assert sensitivity.layer_type("bert.encoder.layer.3.attention.output.dense") == "attention output"
    assert sensitivity.layer_type("bert.encoder.layer.3.output.dense") == "FFN out"
    assert sensitivity.layer_type("bert.embeddings.word_embeddings") == "word embeddings"
    assert sensitivity.layer_depth("bert.encoder.layer.11.intermediate.dense") == 11
    assert sensitivity.layer_depth("bert.embeddings.word_embeddings") is None
    with pytest.raises(ValueError, match="accepted suffixes"):
        sensitivity.layer_type("bert.pooler.dense")


def test_block_sqnr_is_infinite_for_the_same_model_and_falls_with_fewer_bits():
    from toolkit.quant import quantize_weights
    from toolkit.quant.spec import QuantSpec

    model, tokenizer = tiny_bert()
    examples = few_examples()
    assert sensitivity.block_sqnr_db(model, model, tokenizer, examples) == [float("inf")] * 3
    eight = sensitivity.block_sqnr_db(model, quantize_weights(model, QuantSpec(bits=8, granularity="channel")), tokenizer, examples)
    two = sensitivity.block_sqnr_db(model, quantize_weights(model, QuantSpec(bits=2, granularity="channel")), tokenizer, examples)
    assert len(eight) == 3 and eight[0] == float("inf"), "the embeddings are not quantized: their output is exact"
    assert all(e > t + 10 for e, t in zip(eight[1:], two[1:])), (eight, two)
    with pytest.raises(ValueError, match="examples is empty"):
        sensitivity.block_sqnr_db(model, model, tokenizer, [])


def test_smooth_model_computes_the_same_function_and_shares_scales_within_a_group():
    model, tokenizer = tiny_bert()
    examples = few_examples()
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder." in n]
    absmax = smooth.input_absmax(model, tokenizer, examples, names)
    assert set(absmax) == set(names) and absmax[names[0]].shape == (32,)
    groups = smooth.bert_input_groups(model)
    assert groups[0] == [f"bert.encoder.layer.0.attention.self.{p}" for p in ("query", "key", "value")] and len(groups) == 2
    smoothed = smooth.smooth_model(model, absmax, alpha=0.5, groups=groups)
    from toolkit.measure import predict

    torch.testing.assert_close(predict(smoothed, tokenizer, examples), predict(model, tokenizer, examples), rtol=1e-4, atol=1e-4)
    q, k = smoothed.bert.encoder.layer[0].attention.self.query, smoothed.bert.encoder.layer[0].attention.self.key
    assert isinstance(q, smooth.ScaledInput) and torch.equal(q.inverse_scales, k.inverse_scales)
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, torch.nn.Linear), "the model given is not changed"
    with pytest.raises(ValueError, match="names must be linear layers"):
        smooth.input_absmax(model, tokenizer, examples, ["bert.encoder.layer.0"])
    with pytest.raises(ValueError, match="groups name layers that absmax has no ranges for"):
        smooth.smooth_model(model, {names[0]: absmax[names[0]]}, groups=groups)


def test_mixed_precision_allocation_files_and_bad_input(tmp_path_factory):
    from toolkit.quant import fileformat, mixed
    from toolkit.quant.ptq import quantized_layers
    from toolkit.quant.spec import QuantSpec

    model, tokenizer = tiny_bert(layers=1)
    names = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.intermediate.dense"]
    specs = [QuantSpec(bits=b, granularity="group", group_size=16) for b in (2, 4, 8)]
    costs = mixed.layer_bytes(model, names, specs)
    # query 32 x 32 = 1,024 weights in 64 groups: 2 bits -> 256 bytes of codes + 64 x 4 bytes of scales
    assert costs[0] == [256 + 256, 512 + 256, 1024 + 256]
    assert costs[1] == [512 + 512, 1024 + 512, 2048 + 512]  # intermediate: 64 x 32 = 2,048 weights, 128 groups
    damages = [[1.0, 0.1, 0.0], [0.2, 0.05, 0.0]]  # the query is the sensitive one
    plan = mixed.allocate(model, names, specs, damages, budget_bytes=768 + 1024, granularity=1)
    assert [plan.specs[n].bits for n in names] == [4, 2] and plan.weight_bytes == 768 + 1024
    assert plan.average_bits == pytest.approx((1024 * 4 + 2048 * 2) / 3072)
    quantized = mixed.quantize_mixed(model, plan.specs)
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, torch.nn.Linear), "the model given is not changed"
    path = tmp_path_factory.mktemp("mixed") / "mixed.safetensors"
    fileformat.save_quantized(quantized, path)
    reloaded = fileformat.load_quantized(path)
    layers_found = {n: spec.bits for n, (_, spec) in quantized_layers(reloaded).items()}
    assert layers_found == {names[0]: 4, names[1]: 2}
    with pytest.raises(ValueError, match="cannot hold these layers"):
        mixed.allocate(model, names, specs, damages, budget_bytes=100)
    with pytest.raises(ValueError, match="not Linear or Embedding layers"):
        mixed.layer_bytes(model, ["bert.encoder.layer.0.nothing"], specs)
    with pytest.raises(ValueError, match="at least one integer QuantSpec"):
        mixed.layer_bytes(model, names, [])
    with pytest.raises(ValueError, match="damages must be a 2 x 3 table"):
        mixed.allocate(model, names, specs, [[1.0, 0.0]], budget_bytes=10_000)


def test_distillation_loss_is_zero_for_a_student_equal_to_its_teacher_and_checks_shapes():
    from toolkit import train
    from toolkit.data import batches

    model, tokenizer = tiny_bert(layers=1)
    batch = next(batches(tokenizer, few_examples(), batch_size=8))
    loss = train.distillation_loss(model, ce_weight=0.0, hidden_weight=1.0)(model, batch)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-7)
    other, _ = tiny_bert(layers=1)
    with torch.no_grad():
        other.bert.encoder.layer[0].output.dense.weight.add_(0.1)
    assert float(train.distillation_loss(model, ce_weight=0.0, hidden_weight=1.0)(other, batch).detach()) > 0
    deeper, _ = tiny_bert(layers=2)
    with pytest.raises(ValueError, match="same depth and width|teacher's depth and width"):
        train.distillation_loss(model, hidden_weight=1.0)(deeper, batch)
    with pytest.raises(ValueError, match="hidden_weight must be zero or positive"):
        train.distillation_loss(model, hidden_weight=-1.0)


def test_estimate_damages_keeps_scanned_values_and_scales_the_rest_by_error_power():
    from toolkit.quant import mixed
    from toolkit.quant.affine import fake_quantize
    from toolkit.quant.spec import QuantSpec

    model, _ = tiny_bert(layers=1)
    names = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.output.dense"]
    scan_specs = [QuantSpec(bits=b, granularity="group", group_size=16) for b in (2, 4)]
    scan = [sensitivity.LayerSensitivity(n, s.describe(), 0.9, 0.0, kl) for n, kl0 in zip(names, (0.4, 0.1))
            for s, kl in zip(scan_specs, (kl0, kl0 / 10))]
    per_channel_3 = QuantSpec(bits=3, granularity="channel")
    options = [scan_specs[0], per_channel_3, QuantSpec(bits=8, granularity="group", group_size=16)]
    layer_names, damages = mixed.estimate_damages(model, scan, scan_specs, options)
    assert layer_names == names and damages[0][0] == 0.4 and damages[1][0] == 0.1  # scanned: kept as measured
    w = dict(model.named_modules())[names[0]].weight.detach()
    power = lambda spec: float((fake_quantize(w, spec) - w).pow(2).sum())  # noqa: E731
    assert damages[0][1] == pytest.approx(0.04 * power(per_channel_3) / power(scan_specs[1]))  # 3 bits: from the 4-bit scan
    assert damages[0][2] == pytest.approx(0.04 * power(options[2]) / power(scan_specs[1])) and damages[0][2] < 0.04 / 100
    with pytest.raises(ValueError, match="scan has no result"):
        mixed.estimate_damages(model, scan[:1], scan_specs, options)
    # with per-channel scans too, each option is scaled from a scan of its own granularity
    channel_4 = QuantSpec(bits=4, granularity="channel")
    both = scan + [sensitivity.LayerSensitivity(n, channel_4.describe(), 0.9, 0.0, kl) for n, kl in zip(names, (0.5, 0.2))]
    _, damages = mixed.estimate_damages(model, both, scan_specs + [channel_4], options)
    assert damages[0][1] == pytest.approx(0.5 * power(per_channel_3) / power(channel_4))  # per channel from per channel
    assert damages[0][2] == pytest.approx(0.04 * power(options[2]) / power(scan_specs[1]))  # groups from groups


def test_recorded_inputs_drop_padding_and_block_sqnr_keeps_the_modes():
    from toolkit.activations import record_outputs

    model, tokenizer = tiny_bert(layers=1)
    examples = few_examples()
    name = "bert.encoder.layer.0.intermediate.dense"
    x = record_outputs(model, [name], tokenizer, examples, inputs=True)[name]
    tokens = sum(len(tokenizer(e.text)["input_ids"]) for e in examples)
    assert x.shape == (tokens, 32)
    torch.testing.assert_close(x, record_outputs(model, ["bert.encoder.layer.0.attention.output"], tokenizer, examples)[
        "bert.encoder.layer.0.attention.output"])  # that layer's input is the attention block's output
    model.train()
    sensitivity.block_sqnr_db(model, model, tokenizer, examples)
    assert model.training, "block_sqnr_db puts the models' modes back"
