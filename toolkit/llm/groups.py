"""Group-wise round-to-nearest (RTN) weight quantization, as LLM formats store it.

A weight matrix W (out_features N, in_features K) is cut along each row into groups of
``group_size`` consecutive weights (``None``: one group per row, i.e. per output channel). When the
group size does not divide K (128 into SmolLM2's 576), the last group of each row is shorter, as in
GPTQ's reference code; the int4 kernel needs groups that divide K (``kernels.Int4Linear`` says so). Each
group gets a scale s and a float minimum m, both stored as fp16 (as GGUF's Q4_1 and PyTorch's
int4 CPU kernel store them):

    s = (max(w) - min(w)) / (2**bits - 1),   m = min(w)
    q = clamp(round((w - m) / s), 0, 2**bits - 1)          (bits-bit code)
    w_hat = q * s + m

Chapter 2's asymmetric quantizer keeps real 0 on the grid with an *integer* zero-point; LLM
formats use a float minimum instead, which fits the group's range exactly (0 need not be on it).

Bytes stored: N*K*bits/8 for the codes + 2 * 2 bytes per group (fp16 s and m).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass

import torch

from toolkit import artifacts
from toolkit.layers import linear_layers
from toolkit.quant.packing import pack, unpack

FORMAT = "workbook-llm-weight-only"
VERSION = 1


def check_bits(bits) -> int:
    """``bits`` if it is an integer from 2 to 8, else a ValueError naming the argument."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8; got {bits!r}")
    return bits


def group_width(in_features: int, group_size: int | None) -> int:
    """The group size for a row of ``in_features`` weights: ``group_size``, or the whole row for None;
    a ValueError naming ``group_size`` unless it is a positive integer no larger than the row."""
    if group_size is None:
        return in_features
    if isinstance(group_size, bool) or not isinstance(group_size, int) or not 1 <= group_size <= in_features:
        raise ValueError(f"group_size must be None (per channel) or an integer from 1 to the layer's "
                         f"{in_features} input features; got {group_size!r}")
    return group_size


def n_groups(in_features: int, group_size: int | None) -> int:
    """Groups per row: ceil(K / group)."""
    return -(-in_features // group_width(in_features, group_size))


def grouped(w: torch.Tensor, g: int) -> torch.Tensor:
    """(N, K) -> (N, groups, g); a short last group is padded with copies of its own first value
    (which changes neither its minimum nor its maximum)."""
    n, k = w.shape
    pad = -k % g
    if pad:
        w = torch.cat([w, w[:, k - (k % g):k - (k % g) + 1].expand(n, pad)], 1)
    return w.reshape(n, -1, g)


def _per_weight(t: torch.Tensor, g: int, k: int) -> torch.Tensor:
    """(N, groups) -> (N, K): each group's value repeated over its weights."""
    return t.repeat_interleave(g, dim=1)[:, :k]


@dataclass
class GroupQuantized:
    """One quantized matrix: codes (N, K) uint8, scale and minimum (N, K / group) fp16."""

    codes: torch.Tensor
    scale: torch.Tensor
    minimum: torch.Tensor
    bits: int

    group_size: int

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """w_hat = q * s + m, (N, K)."""
        k = self.codes.shape[1]
        return (self.codes.to(dtype) * _per_weight(self.scale.to(dtype), self.group_size, k)
                + _per_weight(self.minimum.to(dtype), self.group_size, k))

    def stored_bytes(self) -> int:
        return stored_bytes(tuple(self.codes.shape), self.bits, self.group_size)


def group_range(weight: torch.Tensor, bits: int, group_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, minimum) of every group by min-max, rounded to fp16 as stored: each (N, K / group)."""
    check_bits(bits)
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D (out_features, in_features) matrix; got shape {tuple(weight.shape)}")
    g = grouped(weight.detach().float(), group_width(weight.shape[1], group_size))  # (N, groups, group)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / (2**bits - 1)).half()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant group: any scale, every code 0
    return scale, lo.half()


def quantize_with(weight: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor, bits: int, group_size: int) -> GroupQuantized:
    """Codes of ``weight`` on a given grid (scale, minimum per group of ``group_size``): q = clamp(round((w - m) / s), 0, 2**bits - 1)."""
    k = weight.shape[1]
    w = weight.detach().float()
    q = torch.round((w - _per_weight(minimum.float(), group_size, k)) / _per_weight(scale.float(), group_size, k))
    return GroupQuantized(q.clamp_(0, 2**bits - 1).to(torch.uint8), scale, minimum, bits, group_size)


def quantize_groups(weight: torch.Tensor, bits: int, group_size: int | None = 128) -> GroupQuantized:
    """Round-to-nearest codes of ``weight`` (N, K), min-max per group of ``group_size`` (None: per row).

    Taught in: chapter 10, section 1 (The model you start from is already 4-bit).
    """
    scale, minimum = group_range(weight, bits, group_size)
    return quantize_with(weight, scale, minimum, bits, group_width(weight.shape[1], group_size))


def fake_quantize_groups(weight: torch.Tensor, bits: int, group_size: int | None = 128) -> torch.Tensor:
    """dequantize(quantize(weight)) in the weight's dtype: what the model computes with.

    Taught in: chapter 10, section 1 (The model you start from is already 4-bit).
    """
    return quantize_groups(weight, bits, group_size).dequantize(weight.dtype)


def stored_bytes(shape: tuple[int, int], bits: int, group_size: int | None) -> int:
    """Bytes of one (N, K) matrix: packed codes + fp16 scale and minimum per group.

    Taught in: chapter 10, section 3 (Round-to-nearest in groups: the baseline every method must beat).
    """
    n, k = shape
    groups = n * n_groups(k, group_size)
    return (n * k * check_bits(bits) + 7) // 8 + 4 * groups


def block_linear_names(model: torch.nn.Module) -> list[str]:
    """The linear layers inside the decoder blocks (attention and MLP projections), in order; the
    output projection (tied to the embedding in SmolLM2) is left alone, as GPTQ and AWQ leave it.

    Taught in: chapter 10, section 1 (The model you start from is already 4-bit).
    """
    return [name for name in linear_layers(model) if ".layers." in f".{name}"]


def quantize_model_rtn(model: torch.nn.Module, bits: int, group_size: int | None = 128,
                       names: list[str] | None = None) -> tuple[torch.nn.Module, dict[str, GroupQuantized]]:
    """A copy of ``model`` whose layers ``names`` (default: every block linear) hold RTN-quantized weights
    (dequantized to float, so any kernel runs them), and the quantized matrices by name. ``model`` is unchanged.

    Taught in: chapter 10, section 3 (Round-to-nearest in groups: the baseline every method must beat).
    """
    names = block_linear_names(model) if names is None else list(names)
    quantized = copy.deepcopy(model)
    found = {}
    with torch.no_grad():
        for name in names:
            layer = quantized.get_submodule(name)
            found[name] = quantize_groups(layer.weight, bits, group_size)
            layer.weight.copy_(found[name].dequantize(layer.weight.dtype))
    return quantized, found


# ----------------------------------------------------------------------------- the file
def save_weight_only(model: torch.nn.Module, quantized: dict[str, GroupQuantized], path: str | os.PathLike) -> int:
    """One safetensors file: for each quantized layer its packed codes, fp16 scales and minima; every other
    tensor of the model in fp16 (tied tensors once). Returns the file's bytes (written atomically).

    Taught in: chapter 10, section 3 (Round-to-nearest in groups: the baseline every method must beat).
    """
    tensors: dict[str, torch.Tensor] = {}
    layers = {}
    for name, q in quantized.items():
        tensors[f"{name}.codes"] = pack(q.codes.reshape(-1).to(torch.int16), q.bits, 0)
        tensors[f"{name}.scale"], tensors[f"{name}.minimum"] = q.scale.half(), q.minimum.half()
        layers[name] = {"bits": q.bits, "shape": list(q.codes.shape), "group_size": q.group_size}
    seen = {model.get_submodule(name).weight.data_ptr() for name in quantized}  # a tied copy of a quantized weight too
    for name, tensor in model.state_dict().items():
        if name.removesuffix(".weight") in quantized and name.endswith(".weight") or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().half()
    return artifacts.save_tensors(path, tensors, format=FORMAT, version=VERSION,
                                  fields={"layers": layers, "config": artifacts.config_json(model)})


def load_weight_only(path: str | os.PathLike) -> torch.nn.Module:
    """The model saved by ``save_weight_only``, rebuilt from its config, weights dequantized to float32.
    Each tensor is written straight into the new model's own, one at a time, so no second float copy of
    the model is ever alive (a state dict of float tensors would double the peak memory).

    Taught in: chapter 10, section 9 (The task: zero-shot sentiment on the workbook's test sentences).
    """
    metadata, tensors = artifacts.load_tensors(path, format=FORMAT, versions={VERSION}, writer="toolkit.llm.groups.save_weight_only")
    model = artifacts.model_from_config(metadata["config"])
    target = model.state_dict()  # name -> the model's own tensor (same storage), filled in place
    layers = json.loads(metadata["layers"])
    filled, unexpected = set(), []
    for name, tensor in tensors.items():
        if name.endswith((".codes", ".scale", ".minimum")):
            continue
        if name not in target or target[name].shape != tensor.shape:
            unexpected.append(name)
            continue
        target[name].copy_(tensor)
        filled.add(name)
    for name, layer in layers.items():
        n, k = layer["shape"]
        if f"{name}.weight" not in target or target[f"{name}.weight"].shape != (n, k):
            unexpected.append(f"{name}.codes")
            continue
        codes = unpack(tensors[f"{name}.codes"], layer["bits"], 0, n * k).reshape(n, k).to(torch.uint8)
        target[f"{name}.weight"].copy_(GroupQuantized(codes, tensors[f"{name}.scale"], tensors[f"{name}.minimum"], layer["bits"],
                                                      layer["group_size"]).dequantize())
        filled.add(f"{name}.weight")
    missing = [m for m in target if m not in filled and m not in _tied_names(model)]
    if missing or unexpected:
        raise artifacts.FormatError(f"{path}: tensors do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.eval()


def _tied_names(model: torch.nn.Module) -> set[str]:
    keys = getattr(model, "_tied_weights_keys", None) or {}
    return set(keys) if not isinstance(keys, dict) else set(keys)
