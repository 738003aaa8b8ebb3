"""Inference engines: the same classifier exported to ONNX Runtime and OpenVINO, and their int8/int4 tools.

PyTorch eager runs one operator at a time from Python. An inference engine takes the whole graph,
fuses operators (attention, layer norms, GELU), picks kernels for the CPU it runs on and, with
quantization, runs int8 matrix products end to end. Two engines are used here:

- **ONNX Runtime**: the model is exported with ``torch.onnx.export`` (opset 17, batch and sequence
  axes dynamic) and optionally quantized with ``onnxruntime.quantization.quantize_dynamic``
  (int8 weights per channel, activations quantized on the fly);
- **OpenVINO**: the PyTorch model is converted with ``openvino.convert_model``; NNCF then
  quantizes it statically (``nncf.quantize``: int8 weights and activations, activation ranges
  from calibration sentences) or compresses only its weights (``nncf.compress_weights``: int4 in
  groups).

Every engine model is wrapped as a ``torch.nn.Module`` (``EngineClassifier``) whose forward takes
the tokenizer's tensors and returns an object with ``.logits``, so the toolkit's accuracy, latency
and A/B functions measure it exactly as they measure PyTorch models. ``check_against`` compares
an exported model's logits with PyTorch's: an export can be silently wrong (inputs given in the
wrong order swap the mask and the token types, and accuracy falls to chance).
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from toolkit import artifacts
from toolkit.layers import eval_mode
from toolkit.runtime import quiet_loggers

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # the positional order of BertForSequenceClassification.forward
PRECISIONS = ("f32", "bf16")  # OpenVINO's INFERENCE_PRECISION_HINT values accepted here


@contextlib.contextmanager
def _quiet():
    """Silence the tools' known chatter: the TorchScript tracer's deprecation notices; its TracerWarnings on
    shape-dependent Python conditions in transformers' masking and attention code (for an encoder given its
    attention mask they always take the same branch, and the tests check the exported graphs at other batch
    and sequence sizes); the exporter's note on advanced indexing (the indices here are never negative);
    ONNX Runtime's advice logged on the root logger; NNCF's progress bars (drawn by rich on its global console,
    which is pointed at a discarded buffer meanwhile)."""
    import io

    import rich
    from rich.console import Console

    console, rich._console = rich._console, Console(file=io.StringIO(), force_jupyter=False)  # not a widget in Jupyter
    with warnings.catch_warnings(), quiet_loggers(("", "nncf")):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*TorchScript-based ONNX export.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")  # the TorchScript exporter's own
        try:
            yield
        finally:
            rich._console = console


@dataclass
class Logits:
    logits: torch.Tensor


class EngineClassifier(torch.nn.Module):
    """A compiled engine model behind the ``model(**batch).logits`` interface of a PyTorch classifier."""

    device = torch.device("cpu")  # where its inputs go (layers.device_of reads it: an engine has no parameters)

    def __init__(self, run: Callable[[dict], object], name: str, files: Sequence[Path]):
        super().__init__()
        self._run, self.name, self.files = run, name, [Path(f) for f in files]

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None) -> Logits:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return Logits(torch.as_tensor(self._run({k: v.cpu().numpy() for k, v in feeds.items()})))

    @property
    def bytes_on_disk(self) -> int:
        """Bytes of the files the engine loads (an .onnx file; an OpenVINO .xml with its .bin)."""
        return sum(f.stat().st_size for f in self.files)


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
    deprecation warning is silenced (``_quiet``) so that a chapter's output stays readable, not because it
    does not apply.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if eager_attention:
        model = copy.deepcopy(model)
        model.set_attn_implementation("eager")
    args = tuple(batch[name] for name in INPUT_NAMES)  # each (batch, sequence)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES} | {"logits": {0: "batch"}}
    with eval_mode(model), artifacts.atomic_path(path) as tmp, torch.no_grad(), _quiet():
        torch.onnx.export(model, args, str(tmp), input_names=list(INPUT_NAMES), output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    return path


def onnxruntime_classifier(path: str | os.PathLike, threads: int | None = None) -> EngineClassifier:
    """An ONNX Runtime CPU session for ``path``, with ``threads`` intra-op threads (default: torch's)."""
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
    them from the graph). Writes ``target`` atomically; returns it."""
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
        with artifacts.atomic_path(target) as tmp, _quiet():
            quant_pre_process(str(source), str(shaped), auto_merge=True)
            optimize_model(str(shaped), model_type="bert", num_heads=num_heads, hidden_size=hidden_size).save_model_to_file(str(tmp))
    finally:
        shaped.unlink(missing_ok=True)
    return target


def onnx_operator_counts(path: str | os.PathLike) -> dict[str, int]:
    """How many nodes of each operator type the ONNX graph at ``path`` holds (e.g. {"Attention": 6, ...})."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def quantize_onnx_dynamic(source: str | os.PathLike, target: str | os.PathLike, per_channel: bool = True) -> Path:
    """ONNX Runtime dynamic quantization: int8 weights (per output channel by default), int8 activations
    quantized per batch at run time (``onnxruntime.quantization.quantize_dynamic``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(target)
    with _quiet():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=per_channel)
    return target


# ----------------------------------------------------------------------------- OpenVINO and NNCF
def openvino_model(model: torch.nn.Module, batch: dict):
    """Convert a PyTorch classifier to an OpenVINO model (every input dimension dynamic)."""
    import openvino as ov

    with eval_mode(model), torch.no_grad(), _quiet():
        return ov.convert_model(model, example_input={name: batch[name] for name in INPUT_NAMES})


def nncf_int8(ov_model, calibration_batches: Sequence[dict]):
    """Static int8 with NNCF: activation ranges from every batch of ``calibration_batches`` (tokenizer
    outputs), with the transformer preset (``ModelType.TRANSFORMER``: SmoothQuant, and sensitive
    operations such as softmax left in float)."""
    import nncf

    if not calibration_batches:
        raise ValueError("calibration_batches must hold at least one batch of tokenized sentences")
    data = nncf.Dataset([{k: v.numpy() for k, v in b.items() if k in INPUT_NAMES} for b in calibration_batches])
    with _quiet():
        return nncf.quantize(ov_model, data, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration_batches))


def nncf_int4_weights(ov_model, group_size: int = 32, all_layers: bool = False):
    """Weight-only compression with NNCF: linear weights in int4 (symmetric, one scale per ``group_size``).

    NNCF's default (``all_layers=False``) keeps the embedding tables and the last layer in int8 (its
    backup precision), because they hurt most at 4 bits; on MiniLM the word-embedding table is 40% of
    the weights, so the default file is far from "4 bits everywhere". ``all_layers=True`` puts them in
    int4 too. ``nncf.compress_weights`` rewrites the model it is given, so it gets a clone: ``ov_model``
    is not changed.
    """
    import nncf

    if group_size not in (32, 64, 128):
        raise ValueError(f"group_size must be one of 32, 64, 128; got {group_size!r}")
    if not isinstance(all_layers, bool):
        raise ValueError(f"all_layers must be True or False; got {all_layers!r}")
    with _quiet():
        return nncf.compress_weights(ov_model.clone(), mode=nncf.CompressWeightsMode.INT4_SYM, group_size=group_size, ratio=1.0,
                                     all_layers=all_layers)


def compile_openvino(path: str | os.PathLike, threads: int | None = None, precision: str | None = None) -> EngineClassifier:
    """Compile a saved OpenVINO model (``path``: the .xml, its .bin beside it) for the CPU.

    ``precision`` is the precision OpenVINO computes the float parts in: ``"f32"``, ``"bf16"``, or
    ``None`` for OpenVINO's own choice, which is bf16 on CPUs with AVX512-BF16 or AMX and f32
    elsewhere (what a practitioner gets by default). The precision used is part of the name.
    """
    import openvino as ov

    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or None; got {precision!r}")
    path = Path(path)
    config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32" or "bf16"
    output = compiled.outputs[0]
    return EngineClassifier(lambda feeds: compiled(feeds)[output], f"openvino:{path.name} ({used})",
                            [path, path.with_suffix(".bin")])


def openvino_classifier(ov_model, path: str | os.PathLike, threads: int | None = None, precision: str | None = "f32") -> EngineClassifier:
    """Save ``ov_model`` as ``path`` (.xml + .bin, weights as they are: no fp16 compression) and compile it for the CPU.

    ``precision`` is the precision OpenVINO computes the float parts in. Left to itself (``None``),
    OpenVINO picks bf16 on CPUs with AVX512-BF16 or AMX, so an "fp32" model would silently run in
    bf16; the default here is explicit: ``"f32"``. Accepted: ``"f32"``, ``"bf16"``, ``None``.
    """
    import openvino as ov

    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or None; got {precision!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return compile_openvino(path, threads, precision)


# ----------------------------------------------------------------------------- checks
def check_against(engine: EngineClassifier, model: torch.nn.Module, batch: dict, atol: float = 1e-3) -> float:
    """Largest absolute difference between the engine's and PyTorch's logits on ``batch``.

    Raises ``AssertionError`` above ``atol``: an export that disagrees with its source must not
    be measured as if it were the same model. Quantized engines need a larger ``atol``.
    """
    inputs = {k: v for k, v in batch.items() if k in INPUT_NAMES}
    with eval_mode(model), torch.inference_mode():  # no dropout; the model's mode is restored after
        difference = float((engine(**inputs).logits.float() - model(**inputs).logits.float()).abs().max())
    if difference > atol:
        raise AssertionError(f"{engine.name}: logits differ from PyTorch's by up to {difference:.3g} (> atol {atol:g})")
    return difference
