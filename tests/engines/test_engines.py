"""Inference engines (toolkit.engines): ONNX Runtime and OpenVINO give PyTorch's answers, and their quantizers run."""

import onnxruntime
import pytest
import torch
from packaging.version import Version
from transformers import BertConfig, BertForSequenceClassification

from toolkit import engines, measure
from toolkit.prune import structured


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=40, num_labels=2)
    return BertForSequenceClassification(config).eval()


def batch_of(size, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (size, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, length // 2:] = 0  # one padded sentence: the mask must reach the model as the mask
    types = torch.zeros_like(ids)
    types[:, length // 3:] = 1  # segment ids that differ from the mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def test_onnx_export_matches_pytorch_at_other_shapes(tmp_path, tiny):
    path = engines.export_onnx(tiny, batch_of(2, 7), tmp_path / "tiny.onnx")
    session = engines.onnxruntime_classifier(path)
    for size, length in ((1, 3), (5, 16)):  # batch and sequence axes are dynamic
        assert engines.check_against(session, tiny, batch_of(size, length, seed=size), atol=1e-4) < 1e-4
    assert session.bytes_on_disk == path.stat().st_size and not tiny.training
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_swapped_input_order_is_caught(tmp_path, tiny):
    good = engines.export_onnx(tiny, batch_of(2, 7), tmp_path / "good.onnx")
    session = engines.onnxruntime_classifier(good)
    swapped = engines.EngineClassifier(
        lambda feeds: session._run({**feeds, "attention_mask": feeds["token_type_ids"], "token_type_ids": feeds["attention_mask"]}),
        "swapped", [good])
    with pytest.raises(AssertionError, match="logits differ from PyTorch's"):
        engines.check_against(swapped, tiny, batch_of(3, 9), atol=1e-4)


def test_dynamic_int8_onnx_is_smaller_and_close(tmp_path, tiny):
    fp32 = engines.export_onnx(tiny, batch_of(2, 7), tmp_path / "fp32.onnx")
    int8 = engines.quantize_onnx_dynamic(fp32, tmp_path / "int8.onnx")
    session = engines.onnxruntime_classifier(int8)
    assert int8.stat().st_size < fp32.stat().st_size
    engines.check_against(session, tiny, batch_of(4, 10), atol=0.2)


def test_openvino_runs_a_pruned_model_and_measure_treats_it_like_pytorch(tmp_path, tiny):
    pruned = structured.prune_structures(tiny, heads={0: [1, 2]}, neurons={1: list(range(20))})  # uneven shapes
    compiled = engines.openvino_classifier(engines.openvino_model(pruned, batch_of(2, 7)), tmp_path / "pruned.xml")
    engines.check_against(compiled, pruned, batch_of(3, 11), atol=1e-4)  # f32 by default: no silent bf16
    comparison = measure.compare_latency(pruned, compiled, batch_of(2, 8), rounds=2, warmup=1)
    assert (comparison.rounds, comparison.workload) == (2, "batch 2 x 8 tokens"), "the engine is timed like a PyTorch model"
    assert comparison.candidate_ms > 0 and comparison.ratio_p10 <= comparison.ratio <= comparison.ratio_p90  # the median of the rounds' ratios
    assert compiled.bytes_on_disk == sum(p.stat().st_size for p in compiled.files), "its files, as written"


def test_nncf_int8_and_int4_weights(tmp_path, tiny):
    ov_model = engines.openvino_model(tiny, batch_of(2, 7))
    ops = sorted(op.get_type_name() for op in ov_model.get_ops())
    quantized = engines.nncf_int8(ov_model, [batch_of(4, 8, seed=s) for s in range(3)])
    quantized_ops = [op.get_type_name() for op in quantized.get_ops()]
    assert "FakeQuantize" not in ops and quantized_ops.count("FakeQuantize") >= 6, \
        "NNCF's int8 graph quantizes the inputs of the linear layers (at least q, k, v, out, FFN in and out of a layer)"
    int8_constants = [op for op in quantized.get_ops() if op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() in ("i8", "u8")]
    assert len(int8_constants) >= 6, "and stores their weights as 8-bit constants"
    int8 = engines.openvino_classifier(quantized, tmp_path / "int8.xml")
    tiny.train()
    engines.check_against(int8, tiny, batch_of(3, 9), atol=0.3)
    assert tiny.training, "check_against restores the model's mode"
    tiny.eval()
    with pytest.raises(ValueError, match="calibration_batches must hold at least one batch"):
        engines.nncf_int8(ov_model, [])
    with pytest.raises(ValueError, match="precision must be one of f32, bf16 or None; got 'fp8'"):
        engines.openvino_classifier(ov_model, tmp_path / "x.xml", precision="fp8")
    with pytest.raises(ValueError, match="group_size must be one of 32, 64, 128"):
        engines.nncf_int4_weights(ov_model, group_size=48)
    int4 = engines.openvino_classifier(engines.nncf_int4_weights(engines.openvino_model(tiny, batch_of(2, 7)), group_size=32),
                                       tmp_path / "int4.xml")
    assert int4.bytes_on_disk < int8.bytes_on_disk
    every = engines.openvino_classifier(engines.nncf_int4_weights(engines.openvino_model(tiny, batch_of(2, 7)), group_size=32,
                                                                  all_layers=True), tmp_path / "int4-all.xml")
    assert every.bytes_on_disk < int4.bytes_on_disk, "the default keeps the embeddings in int8; all_layers does not"
    with pytest.raises(ValueError, match="all_layers must be True or False"):
        engines.nncf_int4_weights(ov_model, all_layers="yes")
    engines.nncf_int4_weights(ov_model, group_size=32)
    assert sorted(op.get_type_name() for op in ov_model.get_ops()) == ops, "neither NNCF call changes the model it is given"
    engines.check_against(int4, tiny, batch_of(3, 9), atol=0.5)


def test_onnx_runtime_optimizer_fuses_attention_and_keeps_the_answers(tmp_path, tiny):
    fp32 = engines.export_onnx(tiny, batch_of(2, 7), tmp_path / "fp32.onnx", eager_attention=True)
    assert tiny.config._attn_implementation != "eager", "the model given is not changed"
    optimized = engines.optimize_onnx_bert(fp32, tmp_path / "optimized.onnx", num_heads=4, hidden_size=32)
    before, after = engines.onnx_operator_counts(fp32), engines.onnx_operator_counts(optimized)
    # ONNX Runtime 1.23, the newest release for Python 3.10 (constraints-py3.10.txt), fuses this export's layer norms
    # and GELUs but not its attention or embeddings (seen by make test-pythons); constraints.txt's 1.32 fuses all four.
    fuses_all = Version(onnxruntime.__version__) >= Version("1.32")
    layers = 2 if fuses_all else 0
    assert before.get("Attention", 0) == 0 and after.get("Attention", 0) == layers  # one fused operator per layer
    assert after.get("EmbedLayerNormalization", 0) == int(fuses_all) and after.get("SkipLayerNormalization", 0) == 4
    assert sum(after.values()) < sum(before.values())
    engines.check_against(engines.onnxruntime_classifier(optimized), tiny, batch_of(3, 9, seed=3), atol=1e-4)
    int8 = engines.quantize_onnx_dynamic(optimized, tmp_path / "int8.onnx")
    assert engines.onnx_operator_counts(int8).get("QAttention", 0) == layers  # the quantizer turns the fusions into integer ops
    engines.check_against(engines.onnxruntime_classifier(int8), tiny, batch_of(4, 10), atol=0.2)
    assert not list(tmp_path.glob(".*"))  # no staging file left behind
    with pytest.raises(ValueError, match="num_heads must be a positive integer"):
        engines.optimize_onnx_bert(fp32, tmp_path / "x.onnx", num_heads=0, hidden_size=32)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        engines.optimize_onnx_bert(fp32, tmp_path / "x.onnx", num_heads=5, hidden_size=32)
