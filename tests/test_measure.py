from types import SimpleNamespace

import pytest
import torch

from toolkit import engines, measure, models


def test_counts_parameters_and_nonzeros():
    layer = torch.nn.Linear(3, 2)  # 6 weights + 2 biases
    assert measure.count_parameters(layer) == 8
    with torch.no_grad():
        layer.weight[0].zero_()
        layer.bias.zero_()
    assert measure.count_nonzero(layer) == 3


def test_bytes_on_disk_is_the_size_of_a_written_file(tmp_path):
    layer = torch.nn.Linear(256, 128)
    path = tmp_path / "layer.safetensors"
    size = measure.bytes_on_disk(layer, path)
    assert path.stat().st_size == size
    assert 4 * (256 * 128 + 128) < size < 4 * (256 * 128 + 128) + 1024  # data + a small header
    half = measure.bytes_on_disk(models.cast(layer, torch.bfloat16))
    assert half < size * 0.51
    assert measure.bytes_by_dtype(layer) == {"float32": 4 * (256 * 128 + 128)}


def test_hardware_line_names_threads_and_features():
    hw = measure.hardware()
    line = hw.line()
    assert f"{torch.get_num_threads()} torch threads" in line and "features:" in line
    assert set(hw.features) <= set(measure.CPU_FEATURES)


class Constant(torch.nn.Module):
    """A stand-in classifier that always predicts `label` after some real work."""

    def __init__(self, label):
        super().__init__()
        self.linear = torch.nn.Linear(8, 2)
        self.label = label

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        logits = torch.zeros(input_ids.shape[0], 2)
        logits[:, self.label] = 1.0
        return SimpleNamespace(logits=logits + 0 * self.linear(torch.ones(1, 8)).sum())


def test_accuracy_counts_correct_predictions(tokenizer, splits):
    test = splits.test[:40]
    positives = sum(e.label for e in test) / len(test)
    assert measure.accuracy(Constant(1), tokenizer, test) == pytest.approx(positives)
    assert measure.accuracy(Constant(0), tokenizer, test) == pytest.approx(1 - positives)
    assert measure.predict(Constant(1), tokenizer, test).shape == (40, 2)
    with pytest.raises(ValueError, match="examples"):
        measure.accuracy(Constant(1), tokenizer, [])


def test_predict_runs_shortest_first_and_returns_rows_in_the_order_given(tokenizer, splits):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=2)
    model = BertForSequenceClassification(config).train()  # predict() must evaluate, then restore train mode
    examples = splits.test[:23]
    lengths = [len(tokenizer(e.text)["input_ids"]) for e in examples]
    assert lengths != sorted(lengths), "the sample must be out of length order for this test to mean anything"
    one_by_one = measure.predict(model, tokenizer, examples, batch_size=1)  # no padding at all, original order
    grouped = measure.predict(model, tokenizer, examples, batch_size=8)
    torch.testing.assert_close(grouped, one_by_one, atol=1e-5, rtol=1e-5)
    assert model.training
    with pytest.raises(ValueError, match="batch_size"):
        measure.predict(model, tokenizer, examples, batch_size=0)


def test_latency_is_a_median_with_its_context(tokenizer, splits):
    batch = measure.latency_batch(tokenizer, splits.test, 4)
    result = measure.latency(Constant(1), batch, warmup=1, repeats=5)
    assert result.p10_ms <= result.median_ms <= result.p90_ms
    assert (result.batch_size, result.repeats, result.threads) == (4, 5, torch.get_num_threads())
    assert "median" in str(result)
    with pytest.raises(ValueError, match="repeats"):
        measure.latency(Constant(1), batch, repeats=0)
    with pytest.raises(ValueError, match="batch_size"):
        measure.latency_batch(tokenizer, splits.test[:3], 4)


def test_every_minilm_parameter_has_a_group():
    names = [f"bert.{n}" for n, _ in models.encoder().named_parameters()]
    groups = {measure.parameter_group(n) for n in names}
    assert groups == {"embeddings", "attention", "feed-forward", "layer norms", "pooler + classifier"}
    assert measure.parameter_group("classifier.weight") == "pooler + classifier"
    with pytest.raises(ValueError, match="parameter name"):
        measure.parameter_group("decoder.weight")


def test_breakdown_adds_up_and_embeddings_are_about_half():
    model = models.encoder()
    wrapped = torch.nn.Module()
    wrapped.bert = model
    breakdown = measure.parameter_breakdown(wrapped)
    total = sum(row["parameters"] for row in breakdown.values())
    assert total == measure.count_parameters(model)
    assert sum(row["bytes"] for row in breakdown.values()) == 4 * total
    assert 0.4 < breakdown["embeddings"]["parameters"] / total < 0.6


def test_quantized_layers_still_count_their_parameters():
    import warnings

    from toolkit import quant

    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    q = quant.ptq.quantize_weights(model, quant.QuantSpec(bits=8, granularity="channel"), skip=())
    assert measure.count_parameters(q) == measure.count_parameters(model) == 16 * 8 + 8 + 8 * 4 + 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = engines.pytorch.to_torch_dynamic(q)
    assert measure.count_parameters(fast) == measure.count_parameters(model)


# ----------------------------------------------------------------------------- A/B timing and uncertainty
class _Sleeper(torch.nn.Module):
    """A 'model' that takes a fixed time per call (and has a parameter, as measure expects)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.p = seconds, torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, **_):
        import time

        time.sleep(self.seconds)
        return input_ids


def test_compare_latency_alternates_and_gives_the_ratio_with_its_spread():
    batch = {"input_ids": torch.zeros(4, 7, dtype=torch.long), "labels": torch.zeros(4)}
    slow, fast = _Sleeper(0.02), _Sleeper(0.01)
    slow.train()
    result = measure.compare_latency(slow, fast, batch, rounds=5, warmup=1, names=("slow", "fast"))
    assert 1.5 < result.ratio < 2.5 and result.ratio_p10 <= result.ratio <= result.ratio_p90
    assert (result.rounds, result.workload) == (5, "batch 4 x 7 tokens")
    assert "fast" in str(result) and "5 alternating rounds" in str(result)
    assert slow.training, "the models' modes are restored"
    with pytest.raises(ValueError, match="rounds must be a positive integer"):
        measure.compare_latency(slow, fast, batch, rounds=0)


@pytest.mark.parametrize("correct, n", [(420, 450), (225, 450), (449, 450), (3, 10), (64, 64), (0, 10)])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_wilson_interval_equals_scipys(correct, n, confidence):
    from scipy.stats import binomtest

    expected = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = measure.accuracy_interval(correct / n, n, confidence)
    assert lo == pytest.approx(expected.low, abs=1e-12) and hi == pytest.approx(expected.high, abs=1e-12)


def test_wilson_interval_matches_the_formula_and_the_edges():
    lo, hi = measure.accuracy_interval(0.933, 450)
    assert 0.905 < lo < 0.91 and 0.952 < hi < 0.956  # about +-2.4 points at 93% on 450 sentences
    assert measure.accuracy_interval(1.0, 64)[1] == 1.0 and measure.accuracy_interval(1.0, 64)[0] < 0.95
    assert measure.accuracy_interval(0.0, 10)[0] == 0.0
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            measure.accuracy_interval(0.5, bad)
    with pytest.raises(ValueError, match="accuracy must be"):
        measure.accuracy_interval(93.3, 450)


def test_mcnemar_counts_only_discordant_sentences():
    a = torch.tensor([True] * 90 + [False] * 10)
    b = a.clone()
    assert measure.mcnemar(a, b).p_value == 1.0
    b[:8] = False  # B loses 8 sentences that A gets right, and wins none
    result = measure.mcnemar(a, b)
    assert (result.only_a, result.only_b) == (8, 0) and abs(result.p_value - 2 * 0.5**8) < 1e-12
    with pytest.raises(ValueError, match="equal length"):
        measure.mcnemar(a, b[:5])


def test_compare_calls_reports_what_other_processes_used():
    import subprocess
    import sys

    short = measure.compare_calls(lambda: sum(range(2_000)), lambda: sum(range(1_000)), rounds=5, warmup=1)
    assert short.other_load is None and "not measurable" in str(short)  # a few ms: clock ticks are 10 ms
    hog = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 5\nwhile time.time() < end: pass"])
    try:
        import time

        time.sleep(0.3)
        busy = measure.compare_calls(lambda: time.sleep(0.02), lambda: time.sleep(0.01), rounds=50, warmup=1)  # 1.5 s
    finally:
        hog.kill()
    import os

    assert busy.other_load > 0.5 / (os.cpu_count() or 1), busy  # one busy loop: about one core's share of the machine
    assert "other processes used" in str(busy)


def test_deciles_agree_with_numpy():
    import numpy as np

    from toolkit.measure import _deciles

    generator = np.random.default_rng(0)
    for n in (1, 2, 3, 15, 40):
        values = sorted(generator.random(n).tolist())
        assert _deciles(values) == pytest.approx((np.quantile(values, 0.1), np.quantile(values, 0.9)), abs=1e-12)
