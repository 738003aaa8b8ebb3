"""SmoothQuant: move activation outliers into the weights before quantizing both (Xiao et al. 2023).

A few input channels j of a linear layer carry values far larger than the rest. One scale per
tensor for the activations must cover them, so every other channel gets only a few integer
levels. Since X Wᵀ = (X diag(s)⁻¹)(W diag(s))ᵀ for any positive s, divide channel j of the
input by s_j and multiply column j of the weight by s_j:

    s_j = max|X_j|^α / max|W_{:,j}|^(1-α)

α = 1 moves all of the activations' range into the weights; α = 0 does the opposite, flattening the
weights' columns at the activations' expense. α ≈ 0.5 balances the two difficulties (Xiao et al. §4):
it pays because trained weights start flat and have headroom to spare. Per-output-channel weight scales
do not isolate an enlarged column j (it raises the maximum of every row), so at low weight bit widths
the migrated range costs the weights accuracy. Not smoothing at all (s = 1) is the baseline.

Where the division goes: in pre-LayerNorm transformers (OPT, LLaMA) it is folded into the
LayerNorm before the layer, at no cost. In BERT the LayerNorm's output also feeds the residual
connection, so it cannot absorb the division for query, key, value and FFN-in; FFN-out reads GELU's
output, which no linear step precedes. The attention-output layer is the exception: its input, the
attention context, is a weighted average of the value vectors, so 1/s folds exactly into the value
projection's output rows and bias, free in deployment. Here every smoothed layer multiplies its input
by 1/s (``ScaledInput``) for simplicity, an element-wise step a deployment fuses into the quantize
operation.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch

from toolkit import layers
from toolkit.data import Example
from toolkit.layers import run_with_hooks, swap_child_


def smoothquant_scales(activation_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Per input channel j: s_j = max|X_j|^α / max|W_{:,j}|^(1-α); shapes (in_features,) -> (in_features,)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}")
    if activation_absmax.shape != weight_absmax.shape or activation_absmax.dim() != 1:
        raise ValueError(f"activation_absmax and weight_absmax must be (in_features,) vectors of one shape; got "
                         f"{tuple(activation_absmax.shape)} and {tuple(weight_absmax.shape)}")
    a, w = activation_absmax.clamp(min=1e-5), weight_absmax.clamp(min=1e-5)
    return (a.pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)


def smooth_linear(linear: torch.nn.Linear, scales: torch.Tensor) -> torch.nn.Linear:
    """A copy of ``linear`` with column j of its weight multiplied by scales[j]: ``smooth_linear(l, s)(x / s) == l(x)``."""
    if scales.shape != (linear.in_features,):
        raise ValueError(f"scales must be ({linear.in_features},) for this layer; got {tuple(scales.shape)}")
    result = copy.deepcopy(linear)
    with torch.no_grad():
        result.weight.mul_(scales.to(result.weight.dtype))  # (out, in) * (in,): scales the columns
    return result


class ScaledInput(torch.nn.Module):
    """``inner(x * inverse_scales)``: a smoothed layer with the division by s in front of it.

    ``inner`` is an ``nn.Linear`` whose columns were multiplied by s, so the pair computes what the
    original layer did; quantizing ``inner`` (e.g. ``quantize_weights(..., input_spec=...)``) then
    quantizes the smoothed activations.
    """

    def __init__(self, inner: torch.nn.Module, scales: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("inverse_scales", (1.0 / scales).float())  # (in_features,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in_features)
        return self.inner(x * self.inverse_scales.to(x.dtype))


def input_absmax(model: torch.nn.Module, tokenizer, examples: Sequence[Example], names: Sequence[str],
                 batch_size: int = 32) -> dict[str, torch.Tensor]:
    """max |x_j| over every real token (padding dropped) of the input of each named linear layer: {name: (in_features,)}.

    Taught in: chapter 5, section 4 (Activation outliers and SmoothQuant).
    """
    linears = layers.linear_layers(model)
    unknown = [n for n in names if n not in linears]
    if unknown:
        raise ValueError(f"names must be linear layers of the model; not found or not linear: {unknown[:5]}")
    if len(examples) == 0:
        raise ValueError("examples is empty: input ranges need at least one sentence")
    modules = dict(model.named_modules())
    absmax: dict[str, torch.Tensor] = {}
    mask: list[torch.Tensor] = []

    def hook_for(name):
        def hook(module, args):
            x = args[0]  # (batch, seq, in_features)
            real = x[mask[0].bool()] if x.dim() == 3 else x.reshape(-1, x.shape[-1])  # (tokens, in_features)
            value = real.detach().abs().amax(dim=0).float().cpu()
            absmax[name] = value if name not in absmax else torch.maximum(absmax[name], value)
        return hook

    run_with_hooks(model, {modules[n]: hook_for(n) for n in names}, tokenizer, examples, mask, batch_size, pre=True)
    return absmax


def smooth_model(model: torch.nn.Module, absmax: dict[str, torch.Tensor], alpha: float = 0.5,
                 groups: Sequence[Sequence[str]] | None = None) -> torch.nn.Module:
    """A copy of ``model`` in which every layer named in ``absmax`` is smoothed: its columns multiplied by s and its
    input divided by s (``ScaledInput``). Layers in one of ``groups`` read the same input (e.g. query, key and value)
    and share one s, computed from the largest weight column over the group. ``model`` is not changed.

    Taught in: chapter 5, section 4 (Activation outliers and SmoothQuant).
    """
    if not absmax:
        raise ValueError("absmax is empty: record input ranges with input_absmax first")
    groups = [list(g) for g in groups] if groups is not None else []
    grouped = {n for g in groups for n in g}
    missing = sorted(grouped - set(absmax))
    if missing:
        raise ValueError(f"groups name layers that absmax has no ranges for: {missing[:5]}")
    groups += [[n] for n in absmax if n not in grouped]
    result = copy.deepcopy(model)
    modules = dict(result.named_modules())
    for group in groups:
        linears = [layers.as_linear(modules[n]) for n in group]
        weight_absmax = torch.stack([lin.weight.detach().abs().amax(dim=0) for lin in linears]).amax(dim=0)  # (in,)
        scales = smoothquant_scales(absmax[group[0]], weight_absmax.float(), alpha)
        for name, linear in zip(group, linears):
            swap_child_(result, name, ScaledInput(smooth_linear(linear, scales), scales))
    return result.eval()


def bert_input_groups(model: torch.nn.Module) -> list[list[str]]:
    """The query, key and value layers of every BERT attention block: three layers that read one input.

    Taught in: chapter 5, section 4 (Activation outliers and SmoothQuant).
    """
    names = [n for n, _ in model.named_modules()]
    return [[f"{n}.query", f"{n}.key", f"{n}.value"] for n in names
            if n.endswith("attention.self") and f"{n}.query" in names]
