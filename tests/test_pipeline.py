"""The cached pruning + distillation stage (toolkit.pipeline)."""

import torch
from transformers import BertConfig, BertForSequenceClassification

from toolkit import layers, models, pipeline
from toolkit.data import Example
from toolkit.train import FineTuneConfig

TRAIN = [Example(text, label, "test") for text, label in
         [("great phone", 1), ("awful battery", 0), ("works well", 1), ("broke fast", 0)] * 4]


def teacher_model(tokenizer):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(config).eval()


def test_student_is_pruned_distilled_cached_and_verified(tmp_path, capsys):
    tokenizer = models.tokenizer()
    teacher = teacher_model(tokenizer)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    kwargs = dict(heads=2, neurons=16, config=FineTuneConfig(epochs=1, learning_rate=1e-3, batch_size=8),
                  teacher_key="tiny", cache=tmp_path, progress=False)
    first = pipeline.distilled_student(teacher, tokenizer, TRAIN, TRAIN[:4], **kwargs)
    assert not first.cached and layers.heads_per_layer(first.model) == [2, 2] and layers.ffn_sizes(first.model) == [16, 16]
    assert any(not torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), first.raw.state_dict().values())), \
        "distillation changed the weights"
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items()), "the teacher is not changed"
    second = pipeline.distilled_student(teacher, tokenizer, TRAIN, TRAIN[:4], **kwargs)
    assert second.cached and second.folder == first.folder
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()))
    other = pipeline.distilled_student(teacher, tokenizer, TRAIN, TRAIN[:4], **(kwargs | {"neurons": 8}))
    assert not other.cached and other.folder != first.folder, "other inputs, other cache"
    with open(first.folder / "model.safetensors", "r+b") as f:  # damage the cached weights
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    third = pipeline.distilled_student(teacher, tokenizer, TRAIN, TRAIN[:4], **kwargs)
    assert not third.cached and "model.safetensors is truncated or changed since it was written" in capsys.readouterr().out
    assert not list(tmp_path.rglob("*.partial-*"))
