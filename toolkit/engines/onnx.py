"""ONNX Runtime: the classifier exported with ``torch.onnx.export`` (opset 17, batch and sequence axes dynamic),
optionally fused for BERT and quantized with ``onnxruntime.quantization.quantize_dynamic`` (int8 weights per
channel, activations quantized on the fly)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from toolkit import artifacts
from toolkit.engines.base import INPUT_NAMES, EngineClassifier, quiet_tools
from toolkit.layers import eval_mode


# ----------------------------------------------------------------------------- ONNX Runtime
def export_onnx(model: torch.nn.Module, batch: dict, path: str | os.PathLike, opset: int = 17,
                eager_attention: bool = False) -> Path:
    """Export a BERT-layout classifier to ONNX with dynamic batch and sequence axes; returns the path.

    The inputs are passed positionally in ``INPUT_NAMES`` order, the order of the model's
    ``forward``; naming them in another order would bind the mask to the token types.
    ``eager_attention=True`` exports a copy that computes attention step by step (transformers'
    "eager" implementation) instead of through ``scaled_dot_product_attention``: the graph ONNX
    Runtime's transformer optimizer knows how to fuse (``optimize_onnx_bert``). The model given is
    not changed.

    This uses the TorchScript-based exporter (``dynamo=False``), which PyTorch has deprecated in favour of
    ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export`` path). It is kept because the graph it
    writes is the one ONNX Runtime's BERT fusion patterns and OpenVINO were checked against here; its
    deprecation warning is silenced (``quiet_tools``) so that a chapter's output stays readable, not because it
    does not apply.

    Taught in: chapter 9, section 1 (The anchors: what the one-line tools give).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if eager_attention:
        model = copy.deepcopy(model)
        model.set_attn_implementation("eager")
    args = tuple(batch[name] for name in INPUT_NAMES)  # each (batch, sequence)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES} | {"logits": {0: "batch"}}
    with eval_mode(model), artifacts.atomic_path(path) as tmp, torch.no_grad(), quiet_tools():
        torch.onnx.export(model, args, str(tmp), input_names=list(INPUT_NAMES), output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    return path


def onnxruntime_classifier(path: str | os.PathLike, threads: int | None = None) -> EngineClassifier:
    """An ONNX Runtime CPU session for ``path``, with ``threads`` intra-op threads (default: torch's).

    Taught in: chapter 9, section 1 (The anchors: what the one-line tools give).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    return EngineClassifier(lambda feeds: session.run(["logits"], {k: v for k, v in feeds.items() if k in wanted})[0],
                            f"onnxruntime:{Path(path).name}", [path])


def optimize_onnx_bert(source: str | os.PathLike, target: str | os.PathLike, num_heads: int, hidden_size: int) -> Path:
    """ONNX Runtime's preparation of a BERT graph for quantization, the order its documentation gives:

    0. the model exported with ``export_onnx(..., eager_attention=True)``: the fusions below match
       the eager attention graph, not the one ``scaled_dot_product_attention`` exports;
    1. ``quant_pre_process``: symbolic shape inference and graph optimisation of the exported graph,
       so that every tensor's shape is known (it cannot infer the fused operators of step 2, so it
       runs first);
    2. the transformer optimizer (``onnxruntime.transformers.optimizer.optimize_model``, model type
       "bert"): each layer's MatMul/Add/Softmax chain becomes one ``Attention`` operator, LayerNorm
       and GELU chains become ``LayerNormalization``/``Gelu``; ``quantize_dynamic`` then turns the
       fused attention into ``QAttention`` and the other products into integer MatMuls.

    ``num_heads`` and ``hidden_size`` come from the model's config (the optimizer cannot always infer
    them from the graph). Writes ``target`` atomically; returns it.

    Taught in: chapter 9, section 1 (The anchors: what the one-line tools give).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.optimizer import optimize_model

    for name, value in (("num_heads", num_heads), ("hidden_size", hidden_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (from the model's config); got {value!r}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})")
    target = Path(target)
    shaped = target.with_name(f".{target.name}.shaped-{os.getpid()}")
    try:
        with artifacts.atomic_path(target) as tmp, quiet_tools():
            quant_pre_process(str(source), str(shaped), auto_merge=True)
            optimize_model(str(shaped), model_type="bert", num_heads=num_heads, hidden_size=hidden_size).save_model_to_file(str(tmp))
    finally:
        shaped.unlink(missing_ok=True)
    return target


def onnx_operator_counts(path: str | os.PathLike) -> dict[str, int]:
    """How many nodes of each operator type the ONNX graph at ``path`` holds (e.g. {"Attention": 6, ...}).

    Taught in: chapter 9, section 1 (The anchors: what the one-line tools give).
    """
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def quantize_onnx_dynamic(source: str | os.PathLike, target: str | os.PathLike, per_channel: bool = True) -> Path:
    """ONNX Runtime dynamic quantization: int8 weights (per output channel by default), int8 activations
    quantized per batch at run time (``onnxruntime.quantization.quantize_dynamic``).

    Taught in: chapter 9, section 1 (The anchors: what the one-line tools give).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(target)
    with quiet_tools():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=per_channel)
    return target
