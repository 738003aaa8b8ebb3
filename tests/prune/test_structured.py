"""Structured pruning: heads, FFN neurons and layers really removed, saved and loaded back."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

from toolkit import artifacts, layers, models
from toolkit.prune import structured as st


def tiny(cls=BertForSequenceClassification, config_cls=BertConfig, **extra):
    torch.manual_seed(0)
    config = config_cls(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=40, num_labels=2, **extra)
    return cls(config).eval()


IDS = torch.randint(5, 100, (3, 11), generator=torch.Generator().manual_seed(1))
MASK = torch.ones_like(IDS)


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


def with_zeroed(model, heads=None, neurons=None):
    """The unpruned model, with the removed heads' context and the removed neurons' activations set to 0."""
    handles = []
    size = layers.head_size(model)
    for i, layer in enumerate(layers.encoder_layers(model)):
        if heads and i in heads:
            def pre(module, inputs, removed=heads[i]):
                x = inputs[0].clone()
                for h in removed:
                    x[..., st.head_rows(h, size)] = 0
                return (x,)
            handles.append(layer.attention.output.dense.register_forward_pre_hook(pre))
        if neurons and i in neurons:
            def post(module, inputs, output, removed=neurons[i]):
                output = output.clone()
                output[..., list(removed)] = 0
                return output
            handles.append(layer.intermediate.register_forward_hook(post))
    try:
        return logits(model)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("cls, config_cls", [(BertForSequenceClassification, BertConfig),
                                             (RobertaForSequenceClassification, RobertaConfig)])
def test_a_pruned_model_computes_the_unpruned_model_without_those_structures(cls, config_cls):
    model = tiny(cls, config_cls)
    heads, neurons = {0: [1], 2: [0, 3]}, {1: [0, 5, 63], 2: list(range(10))}
    pruned = st.prune_structures(model, heads=heads, neurons=neurons)
    assert layers.heads_per_layer(pruned) == [3, 4, 2] and layers.ffn_sizes(pruned) == [64, 61, 54]
    assert layers.heads_per_layer(model) == [4, 4, 4], "prune_structures copies; the model given is unchanged"
    assert torch.allclose(logits(pruned), with_zeroed(model, heads, neurons), atol=1e-5)
    q = pruned.base_model.encoder.layer[2].attention.self
    assert q.query.weight.shape == (16, 32) and q.all_head_size == 16 and q.attention_head_size == 8
    assert pruned.base_model.encoder.layer[2].attention.output.dense.weight.shape == (32, 16)


def test_folding_keeps_a_neuron_with_zero_input_weights_exactly_and_needs_the_fold():
    model = tiny()
    removed = {0: [2, 7], 2: [0, 1, 40]}
    with torch.no_grad():
        for i, rows in removed.items():
            layer = layers.encoder_layers(model)[i]
            layer.intermediate.dense.weight[rows] = 0.0  # what group lasso leaves: act(b_in[j]) for every token
            layer.intermediate.dense.bias[rows] = torch.tensor([0.7, -1.3, 2.0][: len(rows)])
    folded = st.prune_ffn_(st.prune_structures(model), removed, fold_bias=True)
    assert layers.ffn_sizes(folded) == [62, 64, 61]
    def hidden(m):
        return m.base_model(input_ids=IDS, attention_mask=MASK).last_hidden_state.detach()  # (3, 11, 32)

    assert torch.allclose(hidden(folded), hidden(model), atol=1e-5)
    cut = st.prune_structures(model, neurons=removed)  # no fold: the constants are lost
    assert (hidden(cut) - hidden(model)).abs().max() > 0.01
    with pytest.raises(ValueError, match="fold_bias must be True or False"):
        st.prune_ffn_(st.prune_structures(model), removed, fold_bias="yes")


def test_macs_and_file_shrink_by_what_was_removed(tmp_path):
    model = tiny()
    pruned = st.prune_structures(model, heads={i: [0, 1] for i in range(3)}, neurons={i: range(32) for i in range(3)})
    assert st.linear_macs_per_token(pruned) == st.linear_macs_per_token(model) // 2
    removed = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in pruned.parameters())
    full, small = st.save_pruned(model, tmp_path / "a.safetensors"), st.save_pruned(pruned, tmp_path / "b.safetensors")
    assert 0 <= (full - small) - 4 * removed < 2_000  # the tensors shrink by 4 bytes per parameter; headers differ a little


def test_uneven_shapes_survive_save_and_load(tmp_path):
    model = tiny()
    pruned = st.prune_structures(model, heads={0: [0, 1, 2], 1: [3]}, neurons={0: [7], 2: range(40)}, layers=[1])
    path = tmp_path / "pruned.safetensors"
    st.save_pruned(pruned, path)
    back = st.load_pruned(path)
    assert st.shapes(back) == st.shapes(pruned) == {"heads": [1, 4], "ffn": [63, 24]}
    assert torch.equal(logits(back), logits(pruned))


def test_broken_or_inconsistent_files_are_clear_errors(tmp_path):
    import json

    from safetensors.torch import save_file

    pruned = st.prune_structures(tiny(), heads={0: [0]})
    path = tmp_path / "p.safetensors"
    st.save_pruned(pruned, path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    lying = dict(meta, shapes=json.dumps({"heads": [4, 4, 4], "ffn": [64, 64, 64]}))  # says layer 0 has 4 heads
    save_file(tensors, str(tmp_path / "lying.safetensors"), metadata=lying)
    with pytest.raises(st.PrunedFileError, match="do not fit the shapes in its metadata"):
        st.load_pruned(tmp_path / "lying.safetensors")
    short = dict(meta, shapes=json.dumps({"heads": [3, 4], "ffn": [64, 64]}))
    save_file(tensors, str(tmp_path / "short.safetensors"), metadata=short)
    with pytest.raises(st.PrunedFileError, match="metadata shapes do not fit the config"):
        st.load_pruned(tmp_path / "short.safetensors")
    tensors["classifier.bias"] = tensors["classifier.bias"] + 1
    save_file(tensors, str(tmp_path / "changed.safetensors"), metadata=meta)
    with pytest.raises(artifacts.IntegrityError, match="sha256"):
        st.load_pruned(tmp_path / "changed.safetensors")


def test_bad_input_is_refused_with_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match="removing all 4 heads of a layer"):
        st.prune_structures(model, heads={0: [0, 1, 2, 3]})
    with pytest.raises(ValueError, match=r"head indices must be integers in \[0, 3\]; got \[4\]"):
        st.prune_structures(model, heads={0: [4]})
    with pytest.raises(ValueError, match=r"layer index must be an integer in \[0, 2\]; got 7"):
        st.prune_structures(model, neurons={7: [0]})
    with pytest.raises(ValueError, match="dropping every layer"):
        st.prune_structures(model, layers=[0, 1, 2])
    with pytest.raises(ValueError, match="BERT layout"):
        layers.encoder_layers(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"keep must be an integer in \[1, 4\]"):
        st.lowest(torch.rand(3, 4), 0)


def test_lowest_removes_the_lowest_scores_of_each_layer():
    scores = torch.tensor([[0.3, 0.1, 0.9, 0.5], [1.0, 2.0, float("nan"), float("nan")]])
    assert st.lowest(scores, {0: 2, 1: 1}) == {0: [0, 1], 1: [0]}


def test_structure_importance_scores_every_head_and_neuron_and_leaves_the_model_alone(tokenizer, splits):
    model = models.sentiment_classifier(smoke=True, progress=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = st.prune_structures(model, heads={0: [0, 1]})
    scores = st.structure_importance(pruned, tokenizer, splits.train[:16])
    assert scores["heads"].shape == (6, 12) and scores["ffn"].shape == (6, 1536)
    assert torch.isnan(scores["heads"][0, 10:]).all() and (scores["heads"][1:] >= 0).all()
    assert (scores["heads"][~torch.isnan(scores["heads"])] > 0).all() and (scores["ffn"] >= 0).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in pruned.parameters()) and not pruned.training


def test_lowest_across_layers_ranks_the_whole_model_and_never_empties_a_layer():
    scores = torch.tensor([[0.3, 0.1, 0.9, 0.5], [0.05, 0.02, 0.01, float("nan")]])
    # the 3 best of the model are all in layer 0; layer 1 still keeps its best structure
    assert st.lowest_across_layers(scores, 3) == {0: [1], 1: [1, 2]}
    assert st.lowest_across_layers(scores, 7) == {0: [], 1: []}
    with pytest.raises(ValueError, match=r"keep must be an integer in \[1, 7\] \(structures in the whole model\)"):
        st.lowest_across_layers(scores, 8)


def test_normalizing_per_layer_removes_each_layers_scale_before_a_global_ranking():
    scores = torch.tensor([[0.3, 0.1, 0.9, 0.5], [0.05, 0.02, 0.01, float("nan")]])
    normalized = st.normalize_per_layer(scores)
    assert torch.allclose(normalized[0], scores[0] / scores[0].norm())
    assert torch.allclose(normalized[1, :3], scores[1, :3] / scores[1, :3].norm()) and torch.isnan(normalized[1, 3])
    assert torch.allclose(st.normalize_per_layer(scores * torch.tensor([[10.0], [0.1]])), normalized, equal_nan=True), \
        "a layer's scale does not matter"
    # raw scores starve layer 1 (its scores are 20x smaller); normalised, each layer keeps its share
    assert st.lowest_across_layers(normalized, 4) == {0: [0, 1], 1: [2]}


def test_torch_pruning_reaches_the_same_shapes_and_leaves_the_model_alone():
    from toolkit.prune.library import torch_pruning_heads_and_ffn

    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = torch_pruning_heads_and_ffn(model, {"input_ids": IDS, "attention_mask": MASK}, heads=2, ffn=32)
    assert result.error == "" and result.model is not None
    assert layers.heads_per_layer(result.model) == [2, 2, 2] and layers.ffn_sizes(result.model) == [32, 32, 32]
    assert result.model.bert.embeddings.word_embeddings.weight.shape == (120, 32)  # the hidden size stays
    assert logits(result.model).shape == (3, 2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"heads must be an integer in \[1, 4\]"):
        torch_pruning_heads_and_ffn(model, {"input_ids": IDS}, heads=0, ffn=32)
    with pytest.raises(ValueError, match=r"ffn must be an integer in \[1, 64\]"):
        torch_pruning_heads_and_ffn(model, {"input_ids": IDS}, heads=2, ffn=65)
