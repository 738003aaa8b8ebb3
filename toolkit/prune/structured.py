"""Structured pruning: remove whole attention heads, FFN neurons and layers, so the matrices shrink.

A mask (Chapter 6) leaves every matrix its full size. Here the rows and columns that belong to
a removed structure are cut out of the weights, and the model really computes less.

For one BERT-style encoder layer with hidden size d, H heads of size d_h = d / H and FFN size f:

- **head h** owns rows [h d_h, (h + 1) d_h) of the query, key and value weights (out, in) and the
  same *columns* of the attention-output weight: removing it cuts 3 row blocks and 1 column
  block. The head size and the attention ``scaling`` = 1 / sqrt(d_h) never change;
  ``num_attention_heads`` and ``all_head_size`` of the self-attention module do.
- **FFN neuron j** owns row j of the intermediate (d -> f) weight and its bias, and column j of the
  output (f -> d) weight: removing it cuts one row and one column.
- **layer i** is dropped from the encoder's ``ModuleList``; its residual path simply disappears.

The surgery uses ``transformers.pytorch_utils.prune_linear_layer`` (it keeps the chosen rows or
columns and their bias) and works on any model with the BERT layout (``encoder.layer[i]`` with
``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense`` and
``output.dense``), RoBERTa included. Functions ending in ``_`` change the model they are given;
the others return a pruned copy.

A pruned model no longer fits a ``BertConfig`` (heads and FFN sizes differ per layer), so
``save_pruned`` records every layer's shape in the file's metadata and ``load_pruned`` rebuilds
those shapes before loading the weights.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

import torch
from transformers.pytorch_utils import prune_linear_layer

from toolkit import artifacts
from toolkit.data import batches
from toolkit.layers import device_of, encoder_layers, eval_mode, ffn_sizes, head_size, heads_per_layer

FORMAT = "compression-workbook/structured-pruned"
FORMAT_VERSION = 1


class PrunedFileError(artifacts.ArtifactError):
    """A pruned-model file whose metadata or tensors do not fit together."""


# ----------------------------------------------------------------------------- where things are
def head_rows(head: int, size: int) -> slice:
    """Rows of query/key/value (and columns of the attention output) that belong to ``head``."""
    return slice(head * size, (head + 1) * size)


def _layer(model: torch.nn.Module, index: int):
    layers = encoder_layers(model)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(layers):
        raise ValueError(f"layer index must be an integer in [0, {len(layers) - 1}]; got {index!r}")
    return layers[index]


def _kept(total: int, removed: Iterable[int], what: str) -> torch.Tensor:
    removed = sorted(set(removed))
    bad = [i for i in removed if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < total]
    if bad:
        raise ValueError(f"{what} indices must be integers in [0, {total - 1}]; got {bad}")
    if len(removed) == total:
        raise ValueError(f"removing all {total} {what}s of a layer leaves nothing to compute; drop the layer instead")
    return torch.tensor([i for i in range(total) if i not in set(removed)], dtype=torch.long)


# ----------------------------------------------------------------------------- surgery
def prune_heads_(model: torch.nn.Module, heads: Mapping[int, Iterable[int]]) -> torch.nn.Module:
    """Remove attention heads in place: ``heads`` maps a layer index to the head indices to remove.

    Head indices count the heads the layer has *now* (0 .. num_attention_heads - 1).
    """
    for index, removed in heads.items():
        attention = _layer(model, index).attention
        self_attn, size = attention.self, attention.self.attention_head_size
        kept_heads = _kept(self_attn.num_attention_heads, removed, "head")
        rows = torch.cat([torch.arange(h * size, (h + 1) * size) for h in kept_heads.tolist()])  # (kept * d_h,)
        self_attn.query = prune_linear_layer(self_attn.query, rows, dim=0)
        self_attn.key = prune_linear_layer(self_attn.key, rows, dim=0)
        self_attn.value = prune_linear_layer(self_attn.value, rows, dim=0)
        attention.output.dense = prune_linear_layer(attention.output.dense, rows, dim=1)
        self_attn.num_attention_heads = len(kept_heads)
        self_attn.all_head_size = len(kept_heads) * size
    return model


def prune_ffn_(model: torch.nn.Module, neurons: Mapping[int, Iterable[int]], fold_bias: bool = False) -> torch.nn.Module:
    """Remove FFN neurons in place: ``neurons`` maps a layer index to the neuron indices to remove.

    With ``fold_bias``, each removed neuron j leaves behind the output it has when its input weights
    are zero: the FFN computes y = W_out · act(W_in x + b_in) + b_out, and a neuron with W_in[j] = 0
    adds the constant W_out[:, j] · act(b_in[j]) for every token, so

        b_out ← b_out + W_out[:, R] · act(b_in[R])        (R: the removed neurons)

    keeps the layer's output exactly for such neurons (a group-lasso model empties them), and to
    first order for neurons whose input weights are merely small.

    Taught in: chapter 8, section 4 (Regularisation toward sparsity: L1, L2, group lasso).
    """
    if not isinstance(fold_bias, bool):
        raise ValueError(f"fold_bias must be True or False; got {fold_bias!r}")
    for index, removed in neurons.items():
        layer = _layer(model, index)
        kept = _kept(layer.intermediate.dense.out_features, removed, "FFN neuron")
        if fold_bias:
            gone = torch.ones(layer.intermediate.dense.out_features, dtype=torch.bool)
            gone[kept] = False  # (f,) True for the removed neurons
            with torch.no_grad():
                constant = layer.intermediate.intermediate_act_fn(layer.intermediate.dense.bias[gone])  # (|R|,)
                layer.output.dense.bias += layer.output.dense.weight[:, gone] @ constant.to(layer.output.dense.weight.dtype)  # (d,)
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, kept, dim=0)  # (kept, d)
        layer.output.dense = prune_linear_layer(layer.output.dense, kept, dim=1)  # (d, kept)
    return model


def drop_layers_(model: torch.nn.Module, layers: Iterable[int]) -> torch.nn.Module:
    """Remove whole encoder layers in place (their residual path disappears with them)."""
    encoder = encoder_layers(model)
    removed = set(layers)
    bad = [i for i in removed if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(encoder)]
    if bad:
        raise ValueError(f"layer indices must be integers in [0, {len(encoder) - 1}]; got {sorted(bad, key=str)}")
    if len(removed) == len(encoder):
        raise ValueError("dropping every layer leaves no encoder; keep at least one")
    kept = [layer for i, layer in enumerate(encoder) if i not in removed]
    getattr(model, "base_model", model).encoder.layer = torch.nn.ModuleList(kept)
    model.config.num_hidden_layers = len(kept)
    return model


def prune_structures(
    model: torch.nn.Module,
    heads: Mapping[int, Iterable[int]] | None = None,
    neurons: Mapping[int, Iterable[int]] | None = None,
    layers: Iterable[int] = (),
) -> torch.nn.Module:
    """A pruned copy of ``model``: heads, then FFN neurons, then whole layers removed (indices of the original).

    Taught in: chapter 7, section 2 (Which heads and neurons matter).
    """
    result = copy.deepcopy(model)
    prune_heads_(result, heads or {})
    prune_ffn_(result, neurons or {})
    drop_layers_(result, layers)
    return result


def linear_macs_per_token(model: torch.nn.Module) -> int:
    """Multiply-adds per token of the encoder's linear layers (weights only: in * out per layer).

    Taught in: chapter 7.
    """
    total = 0
    for layer in encoder_layers(model):
        for linear in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value,
                       layer.attention.output.dense, layer.intermediate.dense, layer.output.dense):
            total += linear.in_features * linear.out_features
    return total


# ----------------------------------------------------------------------------- importance of structures
def structure_importance(model: torch.nn.Module, tokenizer, examples, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Importance of every head and FFN neuron from the gradient of the loss (eval mode, no dropout).

    - **heads** (Michel et al. 2019): a gate ξ_h = 1 multiplies head h's context before the attention
      output projection; I_h = Σ_b |∂L_b/∂ξ_h| over batches b. transformers 5 has no ``head_mask``,
      so the gates are a forward pre-hook on ``attention.output.dense``.
    - **FFN neurons** (first-order Taylor on the activation): I_j = Σ_b |Σ_tokens a_j ∂L_b/∂a_j|, with a_j
      the neuron's output after GELU; removing the neuron sets a_j to 0.

    Returns {"heads": (layers, H), "ffn": (layers, f)}: one row per layer, padded with NaN where a
    pruned layer has fewer heads or neurons. The model's weights, gradients, flags and mode are
    left as they were.

    Taught in: chapter 7, section 2 (Which heads and neurons matter).
    """
    if tokenizer is None or not examples:
        raise ValueError("structure_importance needs tokenizer= and a non-empty examples= (labelled sentences)")
    layers = encoder_layers(model)
    n_heads, n_ffn = heads_per_layer(model), ffn_sizes(model)
    head_scores = torch.full((len(layers), max(n_heads)), float("nan"))
    ffn_scores = torch.full((len(layers), max(n_ffn)), float("nan"))
    for i in range(len(layers)):
        head_scores[i, : n_heads[i]] = 0.0
        ffn_scores[i, : n_ffn[i]] = 0.0
    gates = [torch.ones(h, requires_grad=True) for h in n_heads]
    activations: list[torch.Tensor | None] = [None] * len(layers)
    size = head_size(model)

    def gate_hook(i):
        def hook(module, inputs):
            context = inputs[0]  # (batch, seq, heads * d_h)
            shaped = context.unflatten(-1, (n_heads[i], size))  # (batch, seq, heads, d_h)
            return ((shaped * gates[i].to(context.dtype).view(1, 1, -1, 1)).flatten(-2),)
        return hook

    def ffn_hook(i):
        def hook(module, inputs, output):  # output: (batch, seq, f) after GELU
            output.retain_grad()
            activations[i] = output
        return hook

    handles = [layer.attention.output.dense.register_forward_pre_hook(gate_hook(i)) for i, layer in enumerate(layers)]
    handles += [layer.intermediate.register_forward_hook(ffn_hook(i)) for i, layer in enumerate(layers)]
    flags = {p: p.requires_grad for p in model.parameters()}
    dev = device_of(model)
    for p in model.parameters():
        p.requires_grad_(False)  # gradients are needed for the gates and activations only
    try:
        with eval_mode(model), torch.enable_grad():
            for batch in batches(tokenizer, examples, batch_size=batch_size):
                for g in gates:
                    g.grad = None
                model(**{k: v.to(dev) for k, v in batch.items()}).loss.backward()
                with torch.no_grad():
                    for i, g in enumerate(gates):
                        head_scores[i, : n_heads[i]] += g.grad.abs().cpu()
                        a = activations[i]
                        # Σ over tokens of a dL/da: no token attends to padding, so padded positions have dL/da = 0
                        ffn_scores[i, : n_ffn[i]] += (a * a.grad).sum(dim=(0, 1)).abs().float().cpu()
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return {"heads": head_scores, "ffn": ffn_scores}


def lowest(scores: torch.Tensor, keep: Mapping[int, int] | int) -> dict[int, list[int]]:
    """The indices to remove in each layer so that ``keep`` (per layer, or the same for all) highest scores stay.

    Taught in: chapter 7, section 2 (Which heads and neurons matter).
    """
    removed = {}
    for i, row in enumerate(scores):
        present = row[~torch.isnan(row)]
        k = keep if isinstance(keep, int) else keep[i]
        if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= present.numel():
            raise ValueError(f"keep must be an integer in [1, {present.numel()}] for layer {i}; got {k!r}")
        order = present.argsort(descending=True)
        removed[i] = sorted(order[k:].tolist())
    return removed



def normalize_per_layer(scores: torch.Tensor) -> torch.Tensor:
    """Each layer's scores divided by their ℓ2 norm, s_ij / sqrt(Σ_j s_ij²) (NaN entries, absent structures, ignored).

    Michel et al. (2019), after Molchanov et al. (2017), rank heads across layers on these normalised
    scores (``run_bertology.py``'s default): raw gradient-based scores differ between layers for reasons
    that have nothing to do with importance (depth, LayerNorm), and normalising removes each layer's scale.

    Taught in: chapter 7, section 4 (Where to cut: the same in every layer, or where the scores say).
    """
    norms = torch.nan_to_num(scores, nan=0.0).norm(dim=1, keepdim=True)  # (layers, 1)
    return scores / norms.clamp_min(1e-12)


def lowest_across_layers(scores: torch.Tensor, keep: int) -> dict[int, list[int]]:
    """Like ``lowest``, but ranked across all layers: the ``keep`` highest scores of the whole model stay.

    Layers whose structures score low lose more of them (a per-layer allocation decided by the
    scores); every layer keeps at least its best structure, so the total kept may exceed ``keep``
    by at most one per layer. Pass ``normalize_per_layer(scores)`` to rank as Michel et al. do.

    Taught in: chapter 7, section 4 (Where to cut: the same in every layer, or where the scores say).
    """
    present = scores[~torch.isnan(scores)]
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 < keep <= present.numel():
        raise ValueError(f"keep must be an integer in [1, {present.numel()}] (structures in the whole model); got {keep!r}")
    threshold = present.sort(descending=True).values[keep - 1]  # the keep-th highest score
    removed = {}
    for i, row in enumerate(scores):
        values = row[~torch.isnan(row)]
        kept = (values >= threshold)
        kept[values.argmax()] = True  # never empty a layer
        removed[i] = torch.nonzero(~kept).flatten().tolist()
    return removed

# ----------------------------------------------------------------------------- file
def shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    """What a pruned model's config cannot say: heads and FFN neurons in every layer."""
    return {"heads": heads_per_layer(model), "ffn": ffn_sizes(model)}


def save_pruned(model: torch.nn.Module, path: str | os.PathLike) -> int:
    """Write a structurally pruned model as safetensors with its per-layer shapes; returns the file's bytes.

    The file holds a BERT-layout sequence classifier (BERT, MiniLM, RoBERTa); any other model is refused here.

    Taught in: chapter 7, section 3 (Surgery: cutting the matrices).
    """
    if not type(model).__name__.endswith("ForSequenceClassification"):
        raise TypeError(f"save_pruned holds BERT-layout sequence classifiers; got a {type(model).__name__}")
    fields = {"config": model.config.to_json_string(use_diff=False), "shapes": shapes(model)}  # shapes: BERT layout or an error
    return artifacts.save_tensors(path, model.state_dict(), format=FORMAT, version=FORMAT_VERSION, fields=fields)


def load_pruned(path: str | os.PathLike) -> torch.nn.Module:
    """Rebuild a model written by ``save_pruned``: its config, then its per-layer shapes, then its weights.

    Taught in: chapter 7, section 3 (Surgery: cutting the matrices).
    """
    path = Path(path)
    metadata, tensors = artifacts.load_tensors(path, format=FORMAT, versions=(FORMAT_VERSION,), writer="save_pruned")
    model = artifacts.model_from_config(metadata["config"], architecture="AutoModelForSequenceClassification")
    config = model.config
    recorded = json.loads(metadata["shapes"])
    heads, ffn = recorded.get("heads"), recorded.get("ffn")
    if not (isinstance(heads, list) and isinstance(ffn, list) and len(heads) == len(ffn) == config.num_hidden_layers):
        raise PrunedFileError(
            f"{path}: metadata shapes do not fit the config ({config.num_hidden_layers} layers): heads={heads!r}, ffn={ffn!r}"
        )
    for index, (n_heads, n_ffn) in enumerate(zip(heads, ffn)):  # cut the fresh model to the recorded shapes
        prune_heads_(model, {index: range(n_heads, config.num_attention_heads)})
        prune_ffn_(model, {index: range(n_ffn, config.intermediate_size)})
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise PrunedFileError(f"{path}: its tensors do not fit the shapes in its metadata ({error})") from error
    return model.eval()
