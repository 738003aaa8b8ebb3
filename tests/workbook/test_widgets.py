"""The quantization explorer, driven without a browser."""

import statistics

import matplotlib
import pytest
import torch

from toolkit import models, quant
from toolkit.workbook.widgets import QuantizationExplorer

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def explorer():
    encoder = models.encoder()
    tensors = {
        "ffn_in": encoder.encoder.layer[2].intermediate.dense.weight,  # (1536, 384), the largest choice in chapter 2
        "acts": torch.randn(256, 1536, generator=torch.Generator().manual_seed(0)).clamp(min=-0.17) * 3,
    }
    ex = QuantizationExplorer(tensors, channel_axis={"acts": -1})
    ex.update("ffn_in")  # first draw creates the figure
    return ex


SETTINGS = [
    ("ffn_in", 8, True, "tensor", "minmax"),
    ("ffn_in", 4, True, "channel", "minmax"),
    ("ffn_in", 4, False, "channel", "mse"),
    ("ffn_in", 2, True, "group", "minmax"),
    ("ffn_in", 1, True, "channel", "minmax"),
    ("acts", 4, False, "tensor", "histogram"),
    ("acts", 4, False, "channel", "percentile"),
    ("acts", 8, False, "tensor", "moving_average"),
]


# The explorer's update time is a figure to report (it is printed, about 0.1 s on a 2-core
# machine), not a pass/fail speed test: the guard only catches a gross regression, e.g. an
# update that recomputes every activation, on any machine however slow or busy.
GROSS_REGRESSION_S = 10.0


def test_explorer_updates_report_their_time(explorer):
    times = []
    for setting in SETTINGS:
        view = explorer.update(*setting)
        times.append(view.seconds)
    print(f"explorer update seconds: median {statistics.median(times):.3f}, all {[round(t, 3) for t in times]}")
    assert max(times) < GROSS_REGRESSION_S, times


def test_explorer_numbers_match_the_toolkit(explorer):
    view = explorer.update("ffn_in", 4, True, "channel", "minmax")
    w = explorer.tensors["ffn_in"]
    spec = quant.QuantSpec(bits=4, granularity="channel", axis=0)
    assert view.sqnr_db == pytest.approx(quant.sqnr_db(w, quant.fake_quantize(w, spec)))
    assert view.bytes_packed == 1536 * 384 // 2 + 1536 * 4
    assert len(explorer.figure.axes) == 2 and explorer.figure.axes[0].patches


def test_incompatible_choices_are_explained_not_raised(explorer):
    view = explorer.update("acts", 4, False, "channel", "histogram")
    assert "not used" in view.note and view.observer == "minmax"
    view = explorer.update("ffn_in", 2, True, "group", "mse")
    assert "groups use min-max" in view.note


def test_widget_reacts_to_its_controls(explorer):
    panel = explorer.widget()
    before = panel.metrics.value
    panel.controls["bits"].value = 2
    assert panel.metrics.value != before and "int2" in panel.metrics.value
    panel.controls["granularity"].value = "group"
    assert "per group of 32" in panel.metrics.value


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="must be 2-D"):
        QuantizationExplorer({"x": torch.randn(3)})
    with pytest.raises(ValueError, match="tensors is empty"):
        QuantizationExplorer({})
    ex = QuantizationExplorer({"x": torch.randn(4, 8)})
    with pytest.raises(ValueError, match="label 'y' is not one of x"):
        ex.compute("y")


def test_sentence_demo_answers_for_every_model_and_explains_bad_input():
    from toolkit import deploy, models
    from toolkit.workbook.widgets import SentenceDemo
    from transformers import BertConfig, BertForSequenceClassification

    tok = models.tokenizer()
    torch.manual_seed(0)
    tiny = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=2)).eval()
    classifier = deploy.Classifier(tiny, tok, {"labels": ["negative", "positive"], "max_length": 64})
    demo = SentenceDemo({"a": classifier, "b": classifier})
    rows = demo.update("great phone")
    expected = classifier.predict(["great phone"])[0]
    assert [r.model for r in rows] == ["a", "b"] and all(r.label == expected.label and r.milliseconds > 0 for r in rows)
    assert demo.update("   ") == [] and "Type a sentence" in demo.html("", [])
    assert "&lt;b&gt;" in demo.html("<b>", rows), "the sentence is escaped"
    view = demo.widget()
    view.text.value = "awful battery"
    assert "awful battery" in view.answers.value and "ms</td>" in view.answers.value
    with pytest.raises(ValueError, match="models must map names to classifiers"):
        SentenceDemo({"x": object()})
    with pytest.raises(TypeError, match="text must be a string"):
        demo.update(3)
