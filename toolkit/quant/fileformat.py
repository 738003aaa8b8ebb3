"""The workbook's quantized file: packed integer codes in safetensors, loadable into transformers.

One ``.safetensors`` file holds everything:

- tensors: for each quantized layer ``<name>.weight_q.codes`` (uint8, packed),
  ``.scale`` (float32, or float16 as GPTQ, AWQ and llama.cpp store them: ``scale_dtype``) and
  ``.zero_point`` (int16); every other tensor as it was;
- metadata (strings): ``format`` and ``format_version``; ``config``, the model's transformers
  config as JSON; ``layers``, {name: {"kind", "spec"}} as JSON; ``scale_dtype``; ``sha256``, a
  hash of all tensor bytes in name order.

A float16 scale is the float32 one rounded: each dequantized weight moves by at most 2^-11 of
itself (the codes stay those of the float32 scale), and the file is measured as reloaded.

``load_quantized`` checks the format, the version and the hash (a mismatch is an error that
says which), rebuilds the transformers model from its config, swaps in empty quantized
layers and loads the tensors strictly, so a file either loads completely or not at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch

from toolkit.quant.modules import QuantEmbedding, QuantLinear
from toolkit.quant.ptq import _parent, quantized_layers
from toolkit.quant.spec import QuantSpec
from toolkit.runtime import read_safetensors, save_safetensors_atomically

FORMAT = "compression-workbook/quantized"
FORMAT_VERSION = "1"


class QuantizedFileError(ValueError):
    """A quantized file has another format or version, or its contents do not match its hash."""


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d tensors too
    return digest.hexdigest()


SCALE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def save_quantized(model: torch.nn.Module, path: str | os.PathLike, scale_dtype: torch.dtype = torch.float32) -> int:
    """Write ``model`` (with quantized layers) to ``path`` atomically, its weight scales in ``scale_dtype``
    (float32 or float16); return the file's bytes."""
    if not hasattr(model, "config"):
        raise TypeError("save_quantized needs a transformers model (with a .config) so that it can be rebuilt")
    if scale_dtype not in SCALE_DTYPES.values():
        raise ValueError(f"scale_dtype must be one of torch.{', torch.'.join(SCALE_DTYPES)}; got {scale_dtype!r}")
    path = Path(path)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    layers = {}
    for name, (kind, spec) in quantized_layers(model).items():
        tensors[f"{name}.weight_q.scale"] = tensors[f"{name}.weight_q.scale"].to(scale_dtype)
        input_spec = getattr(model.get_submodule(name), "input_spec", None)
        layers[name] = {"kind": kind, "spec": dataclasses.asdict(spec),
                        "input_spec": dataclasses.asdict(input_spec) if input_spec is not None else None}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_json_string(use_diff=False),
        "layers": json.dumps(layers, sort_keys=True),
        "scale_dtype": next(k for k, d in SCALE_DTYPES.items() if d == scale_dtype),
        "sha256": tensors_sha256(tensors),
    }
    return save_safetensors_atomically(tensors, path, metadata)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    return _read(path)[0]


def _read(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a quantized model file, with the format and version checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no quantized model file at {path}")
    metadata, tensors = read_safetensors(path, f"a {FORMAT} file (save_quantized)")
    if metadata.get("format") != FORMAT:
        raise QuantizedFileError(f"{path} is not a {FORMAT} file (format={metadata.get('format')!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise QuantizedFileError(
            f"{path} has format version {metadata.get('format_version')!r}; this toolkit reads version {FORMAT_VERSION}"
        )
    return metadata, tensors


def load_quantized(path: str | os.PathLike) -> torch.nn.Module:
    """Rebuild the quantized transformers model saved in ``path`` (eval mode, CPU)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    metadata, tensors = _read(path)
    if tensors_sha256(tensors) != metadata.get("sha256"):
        raise QuantizedFileError(f"{path}: tensor contents do not match the sha256 in its metadata (file changed or corrupted)")
    config_dict = json.loads(metadata["config"])
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    model = AutoModelForSequenceClassification.from_config(config)
    for name, layer in json.loads(metadata["layers"]).items():
        spec = QuantSpec(**layer["spec"])
        parent, child = _parent(model, name)
        float_module = getattr(parent, child)
        if layer["kind"] == "linear":
            input_spec = QuantSpec(**layer["input_spec"]) if layer.get("input_spec") else None
            shell = QuantLinear(float_module.in_features, float_module.out_features, float_module.bias is not None, spec, input_spec)
        else:
            shell = QuantEmbedding(float_module.num_embeddings, float_module.embedding_dim, spec, float_module.padding_idx)
        setattr(parent, child, shell)
    model.load_state_dict(tensors, strict=True)  # float16 scales are widened to the float32 buffers
    return model.eval()
