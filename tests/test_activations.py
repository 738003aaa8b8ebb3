import pytest
import torch

from toolkit import activations, models


def test_records_real_tokens_only_and_removes_hooks(tokenizer, splits):
    encoder = models.encoder()
    examples = splits.test[:6]
    names = ["encoder.layer.0.intermediate", "encoder.layer.5.output"]
    out = activations.record_outputs(encoder, names, tokenizer, examples, batch_size=4)
    n_tokens = sum(len(tokenizer(e.text, truncation=True, max_length=64)["input_ids"]) for e in examples)
    assert out[names[0]].shape == (n_tokens, 1536) and out[names[1]].shape == (n_tokens, 384)
    assert float(out[names[0]].min()) > -0.2, "post-GELU values are never far below zero"
    assert all(not m._forward_hooks for m in encoder.modules()), "hooks are removed"


def test_unknown_module_names_are_a_clear_error(tokenizer, splits):
    encoder = models.encoder()
    with pytest.raises(ValueError, match=r"module names \['encoder.layer.9.output'\] are not in the model; names look like"):
        activations.record_outputs(encoder, ["encoder.layer.9.output"], tokenizer, splits.test[:2])
    with pytest.raises(ValueError, match="examples is empty"):
        activations.record_outputs(encoder, ["encoder.layer.0.output"], tokenizer, [])


def test_module_names_by_type():
    encoder = models.encoder()
    linears = activations.module_names(encoder, torch.nn.Linear)
    assert len(linears) == 6 * 6 + 1 and "encoder.layer.0.attention.self.query" in linears
