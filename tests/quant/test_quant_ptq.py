"""Model-level weight PTQ and the packed file format, on the real (smoke) classifier."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from toolkit import engines, measure, models, quant
from toolkit.quant import QuantSpec
from toolkit.artifacts import FormatError, IntegrityError
from toolkit.quant.modules import QuantEmbedding, QuantLinear

INT4 = QuantSpec(bits=4, granularity="group", group_size=32)
INT8_ROWS = QuantSpec(bits=8, granularity="channel", axis=0)


@pytest.fixture(scope="module")
def classifier():
    return models.sentiment_classifier(smoke=True, progress=False)


@pytest.mark.parametrize("spec", [INT4, INT8_ROWS, QuantSpec(bits=2, symmetric=False, granularity="group", group_size=32), QuantSpec(bits=1, granularity="channel")])
def test_quant_linear_computes_with_the_fake_quantized_weight(spec):
    linear = torch.nn.Linear(64, 48)
    layer = QuantLinear.from_float(linear, spec)
    x = torch.randn(5, 7, 64)
    expected = torch.nn.functional.linear(x, quant.fake_quantize(linear.weight.detach(), spec), linear.bias)
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert layer.weight_q.codes.numel() == 64 * 48 * spec.bits // 8


@pytest.mark.parametrize("spec", [INT8_ROWS, QuantSpec(bits=4, granularity="group", group_size=16), QuantSpec(bits=8)])
def test_quant_embedding_reads_only_what_it_needs_and_matches(spec):
    table = torch.nn.Embedding(100, 32)
    layer = QuantEmbedding.from_float(table, spec)
    ids = torch.tensor([[3, 99, 0], [42, 42, 7]])
    expected = quant.fake_quantize(table.weight.detach(), spec)[ids]
    assert torch.allclose(layer(ids), expected, atol=1e-6)


def test_quantize_weights_copies_and_swaps_the_chosen_layers(classifier):
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    q = quant.quantize_weights(classifier, INT4, INT8_ROWS)
    layers = quant.ptq.quantized_layers(q)
    assert sum(kind == "linear" for kind, _ in layers.values()) == 37  # 36 encoder layers + pooler
    assert sum(kind == "embedding" for kind, _ in layers.values()) == 3
    assert isinstance(q.classifier, torch.nn.Linear), "the head stays in float by default"
    for key, value in classifier.state_dict().items():
        assert torch.equal(value, before[key]), "the model passed in is not changed"
    only = quant.quantize_weights(classifier, INT4, modules=["bert.encoder.layer.0.attention.self.query"])
    assert list(quant.ptq.quantized_layers(only)) == ["bert.encoder.layer.0.attention.self.query"]


def test_bad_arguments_name_what_is_wrong(classifier):
    with pytest.raises(ValueError, match=r"module names \['bert.nope'\] are not Linear or Embedding layers"):
        quant.quantize_weights(classifier, INT4, modules=["bert.nope"])
    with pytest.raises(ValueError, match="nothing would be quantized"):
        quant.quantize_weights(classifier)
    with pytest.raises(ValueError, match="linear_spec must be an integer QuantSpec"):
        quant.quantize_weights(classifier, QuantSpec(bits=16, float_format="bfloat16"))
    with pytest.raises(TypeError, match="needs an nn.Linear"):
        QuantLinear.from_float(torch.nn.Embedding(3, 4), INT4)


def test_save_load_round_trip_is_exact_and_small(classifier, tokenizer, splits, tmp_path):
    q = quant.quantize_weights(classifier, INT4, INT8_ROWS)
    path = tmp_path / "int4.safetensors"
    size = quant.save_quantized(q, path)
    assert size == path.stat().st_size and size < 20_000_000
    assert not list(tmp_path.glob(".*tmp*")), "written atomically"
    reloaded = quant.load_quantized(path)
    test = splits.test[:48]
    assert torch.equal(measure.predict(q, tokenizer, test), measure.predict(reloaded, tokenizer, test))
    with safe_open(str(path), framework="pt") as handle:
        layers = json.loads(handle.metadata()["layers"])
    assert layers["bert.embeddings.word_embeddings"]["kind"] == "embedding"


def test_float16_scales_halve_the_scale_bytes_and_barely_move_the_logits(classifier, tokenizer, splits, tmp_path):
    from toolkit.quant import mixed

    spec = QuantSpec(bits=2, granularity="group", group_size=32)
    names = [n for n, m in classifier.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder.layer." in n]
    q = mixed.quantize_mixed(classifier, mixed.uniform(names, spec))
    size32 = quant.save_quantized(q, tmp_path / "s32.safetensors")
    size16 = quant.save_quantized(q, tmp_path / "s16.safetensors", scale_dtype=torch.float16)
    predicted = [sum(row[0] for row in mixed.layer_bytes(classifier, names, [spec], scale_bytes=b)) for b in (4, 2)]
    assert size32 - size16 == predicted[0] - predicted[1] > 0, "exactly the predicted scale bytes are saved"
    with safe_open(str(tmp_path / "s16.safetensors"), framework="pt") as handle:
        assert handle.metadata()["scale_dtype"] == "float16"
        assert handle.get_tensor(f"{names[0]}.weight_q.scale").dtype == torch.float16
    reloaded = quant.load_quantized(tmp_path / "s16.safetensors")
    assert reloaded.get_submodule(names[0]).weight_q.scale.dtype == torch.float32, "widened on load"
    test = splits.test[:32]
    assert torch.allclose(measure.predict(q, tokenizer, test), measure.predict(reloaded, tokenizer, test), atol=0.05)
    with pytest.raises(ValueError, match="scale_dtype must be one of torch.float32, torch.float16"):
        quant.save_quantized(q, tmp_path / "x.safetensors", scale_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="scale_bytes must be 2"):
        mixed.layer_bytes(classifier, names, [spec], scale_bytes=3)


def test_corrupted_or_foreign_files_are_refused(classifier, tmp_path):
    q = quant.quantize_weights(classifier, INT4)
    path = tmp_path / "q.safetensors"
    quant.save_quantized(q, path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))

    tampered = dict(tensors)
    tampered["classifier.bias"] = tampered["classifier.bias"] + 1
    save_file(tampered, str(tmp_path / "tampered.safetensors"), metadata=metadata)
    with pytest.raises(IntegrityError, match="do not match the sha256"):
        quant.load_quantized(tmp_path / "tampered.safetensors")

    save_file(tensors, str(tmp_path / "v9.safetensors"), metadata={**metadata, "format_version": "9"})
    with pytest.raises(FormatError, match="format version '9'; this toolkit reads version 1, 2 of compression-workbook/quantized"):
        quant.load_quantized(tmp_path / "v9.safetensors")

    save_file(tensors, str(tmp_path / "plain.safetensors"))
    with pytest.raises(FormatError, match="is not a compression-workbook/quantized file"):
        quant.load_quantized(tmp_path / "plain.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.safetensors does not exist .expected a compression-workbook/quantized file"):
        quant.load_quantized(tmp_path / "missing.safetensors")


def test_symmetric_layers_store_no_zero_points_and_asymmetric_ones_do():
    linear = torch.nn.Linear(32, 8)
    assert QuantLinear.from_float(linear, INT4).weight_q.zero_point is None
    asym = QuantLinear.from_float(linear, QuantSpec(bits=4, symmetric=False, granularity="group", group_size=16))
    assert asym.weight_q.zero_point.shape == (8, 2)
    assert "weight_q.zero_point" in asym.state_dict() and "weight_q.zero_point" not in QuantLinear.from_float(linear, INT4).state_dict()


def test_static_activation_quantization_is_calibrated_saved_and_reloaded(classifier, tokenizer, splits, tmp_path):
    spec_in = QuantSpec(bits=8, symmetric=False)
    q = quant.quantize_weights(classifier, INT8_ROWS, input_spec=spec_in)
    with pytest.raises(ValueError, match="examples is empty"):
        quant.ptq.calibrate_(q, tokenizer, [])
    q.train()  # calibration must not see dropout, and must give the model back in the mode it had
    quant.ptq.calibrate_(q, tokenizer, splits.train[:8], observer="minmax")
    assert q.training
    q.eval()
    layer = q.bert.encoder.layer[0].intermediate.dense
    assert float(layer.input_scale) != 1.0 and layer.input_spec == spec_in
    quant.save_quantized(q, tmp_path / "static.safetensors")
    reloaded = quant.load_quantized(tmp_path / "static.safetensors")
    assert torch.equal(reloaded.bert.encoder.layer[0].intermediate.dense.input_scale, layer.input_scale)
    assert torch.equal(measure.predict(q, tokenizer, splits.test[:16]), measure.predict(reloaded, tokenizer, splits.test[:16]))
    with pytest.raises(ValueError, match="no statically quantized layers"):
        quant.ptq.calibrate_(quant.quantize_weights(classifier, INT8_ROWS), tokenizer, splits.train[:4])


def test_backends_run_our_codes_and_refuse_what_they_cannot(classifier, tokenizer, splits):
    import warnings

    q8 = quant.quantize_weights(classifier, INT8_ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = engines.pytorch.to_torch_dynamic(q8)
    agree = measure.agreement(q8, fast, tokenizer, splits.test[:32])
    assert agree["same_prediction"] >= 0.95  # int8 activations on the fly: close, not identical
    with pytest.raises(ValueError, match="backend 'torch-dynamic' runs int8 symmetric weights.*cannot run int4"):
        engines.pytorch.to_torch_dynamic(quant.quantize_weights(classifier, INT4))
    with pytest.raises(ValueError, match="backend 'tpu' is not known"):
        engines.pytorch.check_backend(INT8_ROWS, "tpu")
    floats = engines.pytorch.dequantize_model(q8)
    assert not quant.ptq.quantized_layers(floats)
    assert torch.allclose(measure.predict(floats, tokenizer, splits.test[:8]), measure.predict(q8, tokenizer, splits.test[:8]), atol=1e-4)


def test_torchao_backend_runs_our_int8_codes_and_refuses_what_it_cannot(classifier, tokenizer, splits):
    q8 = quant.quantize_weights(classifier, INT8_ROWS)
    fast = engines.pytorch.to_torchao_int8(q8)  # eager: torchao's int8 tensors, activations quantized on the fly
    agree = measure.agreement(q8, fast, tokenizer, splits.test[:32])
    assert agree["same_prediction"] >= 0.95
    assert not quant.ptq.quantized_layers(fast), "every QuantLinear handed to torchao"
    assert quant.ptq.quantized_layers(q8), "the model given is not changed"
    with pytest.raises(ValueError, match="torchao-int8.*int4"):
        engines.pytorch.to_torchao_int8(quant.quantize_weights(classifier, INT4))
    with pytest.raises(ValueError, match="no QuantLinear layers"):
        engines.pytorch.to_torchao_int8(classifier)
