"""OpenVINO and NNCF: the PyTorch model converted with ``openvino.convert_model``; NNCF then quantizes it
statically (``nncf.quantize``: int8 weights and activations, activation ranges from calibration sentences)
or compresses only its weights (``nncf.compress_weights``: int4 in groups)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from toolkit.engines.base import INPUT_NAMES, PRECISIONS, EngineClassifier, quiet_tools
from toolkit.layers import eval_mode


# ----------------------------------------------------------------------------- OpenVINO and NNCF
def openvino_model(model: torch.nn.Module, batch: dict):
    """Convert a PyTorch classifier to an OpenVINO model (every input dimension dynamic).

    Taught in: chapter 9, section 1 (The anchors: what the one-line tools give).
    """
    import openvino as ov

    with eval_mode(model), torch.no_grad(), quiet_tools():
        return ov.convert_model(model, example_input={name: batch[name] for name in INPUT_NAMES})


def nncf_int8(ov_model, calibration_batches: Sequence[dict]):
    """Static int8 with NNCF: activation ranges from every batch of ``calibration_batches`` (tokenizer
    outputs), with the transformer preset (``ModelType.TRANSFORMER``: SmoothQuant, and sensitive
    operations such as softmax left in float).

    Taught in: chapter 9, section 1 (The anchors: what the one-line tools give).
    """
    import nncf

    if not calibration_batches:
        raise ValueError("calibration_batches must hold at least one batch of tokenized sentences")
    data = nncf.Dataset([{k: v.numpy() for k, v in b.items() if k in INPUT_NAMES} for b in calibration_batches])
    with quiet_tools():
        return nncf.quantize(ov_model, data, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration_batches))


def nncf_int4_weights(ov_model, group_size: int = 32, all_layers: bool = False):
    """Weight-only compression with NNCF: linear weights in int4 (symmetric, one scale per ``group_size``).

    NNCF's default (``all_layers=False``) keeps the embedding tables and the last layer in int8 (its
    backup precision), because they hurt most at 4 bits; on MiniLM the word-embedding table is 40% of
    the weights, so the default file is far from "4 bits everywhere". ``all_layers=True`` puts them in
    int4 too. ``nncf.compress_weights`` rewrites the model it is given, so it gets a clone: ``ov_model``
    is not changed.

    Taught in: chapter 9, section 1 (The anchors: what the one-line tools give).
    """
    import nncf

    if group_size not in (32, 64, 128):
        raise ValueError(f"group_size must be one of 32, 64, 128; got {group_size!r}")
    if not isinstance(all_layers, bool):
        raise ValueError(f"all_layers must be True or False; got {all_layers!r}")
    with quiet_tools():
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

    Taught in: chapter 9, section 1 (The anchors: what the one-line tools give).
    """
    import openvino as ov

    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or None; got {precision!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return compile_openvino(path, threads, precision)
