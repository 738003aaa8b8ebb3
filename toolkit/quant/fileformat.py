"""The workbook's quantized file: packed integer codes in safetensors, loadable into transformers.

One ``.safetensors`` file holds everything:

- tensors: for each quantized layer ``<name>.weight_q.codes`` (uint8, packed),
  ``.scale`` (float32, or float16 as GPTQ, AWQ and llama.cpp store them: ``scale_dtype``) and
  ``.zero_point`` (int16); every other tensor as it was;
- metadata (strings), on ``toolkit.artifacts``' self-describing tensor file: ``format`` and
  ``format_version``; ``config``, the model's transformers config as JSON with its class in
  ``architectures``; ``layers``, {name: {"kind", "spec", "input_spec"}} as JSON; ``scale_dtype``;
  ``sha256``, a hash of all tensor bytes in name order.

Version 2 records the model's class, so a GPT-2 or a causal LM is rebuilt as what it was; version 1
files (sequence classifiers only, the class not recorded) still load.

A float16 scale is the float32 one rounded: each dequantized weight moves by at most 2^-11 of
itself (the codes stay those of the float32 scale), and the file is measured as reloaded.

``load_quantized`` checks the format, the version and the hash (a mismatch is an error that
says which), rebuilds the transformers model from its config, swaps in empty quantized
layers (shaped from the fresh model's layers, ``Conv1D`` included) and loads the tensors
strictly, so a file either loads completely or not at all.
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from toolkit import artifacts, layers as layer_types
from toolkit.quant.modules import QuantEmbedding, QuantLinear
from toolkit.quant.ptq import quantized_layers
from toolkit.quant.spec import QuantSpec

FORMAT = "compression-workbook/quantized"
FORMAT_VERSION = 2
READS = (1, 2)  # version 1: a sequence classifier, its class not recorded
SCALE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class QuantizedFileError(artifacts.ArtifactError):
    """A quantized file whose layers do not fit the model its config builds."""


def save_quantized(model: torch.nn.Module, path: str | os.PathLike, scale_dtype: torch.dtype = torch.float32) -> int:
    """Write ``model`` (with quantized layers) to ``path`` atomically, its weight scales in ``scale_dtype``
    (float32 or float16); return the file's bytes. A model the file could not rebuild is refused here.

    Taught in: chapter 3, section 3 (Dynamic int8: weights ahead of time, activations on the fly).
    """
    if scale_dtype not in SCALE_DTYPES.values():
        raise ValueError(f"scale_dtype must be one of torch.{', torch.'.join(SCALE_DTYPES)}; got {scale_dtype!r}")
    try:
        config = artifacts.config_json(model)
    except TypeError as error:
        raise TypeError(f"save_quantized: {error}") from None
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    quantized = {}
    for name, (kind, spec) in quantized_layers(model).items():
        tensors[f"{name}.weight_q.scale"] = tensors[f"{name}.weight_q.scale"].to(scale_dtype)
        input_spec = getattr(model.get_submodule(name), "input_spec", None)
        quantized[name] = {"kind": kind, "spec": dataclasses.asdict(spec),
                           "input_spec": dataclasses.asdict(input_spec) if input_spec is not None else None}
    fields = {"config": config, "layers": json.dumps(quantized, sort_keys=True),
              "scale_dtype": next(k for k, d in SCALE_DTYPES.items() if d == scale_dtype)}
    return artifacts.save_tensors(path, tensors, format=FORMAT, version=FORMAT_VERSION, fields=fields)


def _read(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a quantized model file, with the format, version and hash checked."""
    return artifacts.load_tensors(path, format=FORMAT, versions=READS, writer="save_quantized")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    return _read(path)[0]


def _shell(kind: str, float_module: torch.nn.Module, spec: QuantSpec, input_spec: QuantSpec | None) -> torch.nn.Module:
    """An empty quantized layer shaped like ``float_module`` (Linear, transformers Conv1D or Embedding)."""
    if kind == "linear":
        in_features, out_features = layer_types.linear_shape(float_module)
        return QuantLinear(in_features, out_features, float_module.bias is not None, spec, input_spec)
    return QuantEmbedding(float_module.num_embeddings, float_module.embedding_dim, spec, float_module.padding_idx)


def load_quantized(path: str | os.PathLike) -> torch.nn.Module:
    """Rebuild the quantized transformers model saved in ``path`` (eval mode, CPU).

    Taught in: chapter 3, section 3 (Dynamic int8: weights ahead of time, activations on the fly).
    """
    metadata, tensors = _read(path)
    legacy = metadata["format_version"] == "1"
    model = artifacts.model_from_config(metadata["config"], architecture="AutoModelForSequenceClassification" if legacy else None)
    for name, layer in json.loads(metadata["layers"]).items():
        input_spec = QuantSpec(**layer["input_spec"]) if layer.get("input_spec") else None
        float_module = model.get_submodule(name)
        layer_types.swap_child_(model, name, _shell(layer["kind"], float_module, QuantSpec(**layer["spec"]), input_spec))
    try:
        model.load_state_dict(tensors, strict=True)  # float16 scales are widened to the float32 buffers
    except RuntimeError as error:
        raise QuantizedFileError(f"{path}: its tensors do not fit the model its config builds ({error})") from error
    return model.eval()
