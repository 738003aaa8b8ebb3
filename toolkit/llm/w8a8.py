"""W8A8 in a decoder: int8 weights *and* int8 activations, the outliers that make it hard, and SmoothQuant.

Weight-only formats keep the activations in float; W8A8 quantizes both, so that every product can run on
int8 units (VNNI, AMX, tensor cores). That pays where products are compute-bound (prefill, large batches),
not in batch-1 decoding. The formats simulated here (fake quantization: round, then compute in float):

    weights      per output channel, symmetric:      W_hat[i, :] = round(W[i, :] / s_i) s_i,   s_i = max|W[i, :]| / 127
    activations  per token (dynamic, at run time):   s_t = max|x[t, :]| / 127
                 or per tensor (static, calibrated): s = max over the calibration text of |x| / 127

Decoders carry **massive activations** (Sun et al., 2024): a handful of hidden-state entries, in fixed
channels and on a few tokens (the first token, delimiters), hundreds or thousands of times the median.
One scale per tensor must cover them, so every other value gets few levels. SmoothQuant (Xiao et al.,
2023; chapter 5) moves that range into the weights, per input channel j of a group of layers that read
one input:

    s_j = max|X_j|^alpha / max|W[:, j]|^(1 - alpha),    X diag(s)^-1 . (W diag(s))^T = X W^T

with the division folded into the operation before the layers (an RMSNorm's weight, or up_proj's rows for
down_proj), as AWQ folds its scales (``toolkit.llm.awq.scale_layers_``, ``llama_groups``).
"""

from __future__ import annotations

import copy

import torch

from toolkit.layers import eval_mode, swap_modules_
from toolkit.llm.awq import llama_groups, scale_layers_
from toolkit.llm.blocks import decoder_layers
from toolkit.llm.evaluate import check_segments
from toolkit.llm.groups import block_linear_names
from toolkit.quant.smooth import smoothquant_scales
from toolkit.runtime import check_int

ACTIVATIONS = ("token", "tensor")
QMAX = 127  # symmetric int8 codes in [-127, 127]


def fake_int8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """round(x / scale) clamped to [-127, 127], times scale: what an int8 product computes with."""
    return torch.round(x / scale).clamp_(-QMAX, QMAX) * scale


def input_absmax(model: torch.nn.Module, segments: torch.Tensor, names: list[str] | None = None,
                 batch_size: int = 4) -> dict[str, torch.Tensor]:
    """max |x_j| of the input of each block linear ``names`` (default: all) over ``segments`` (count, length):
    name -> (in_features,) float32.

    Taught in: chapter 10, section 7 (W8A8 and the outliers of a decoder).
    """
    check_segments(segments)
    check_int("batch_size", batch_size)
    names = block_linear_names(model) if names is None else list(names)
    absmax: dict[str, torch.Tensor] = {}

    def hook_for(name):
        def hook(module, args):
            value = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).float()  # (in_features,)
            absmax[name] = value if name not in absmax else torch.maximum(absmax[name], value)
        return hook

    handles = [model.get_submodule(name).register_forward_pre_hook(hook_for(name)) for name in names]
    try:
        with eval_mode(model), torch.inference_mode():
            for start in range(0, segments.shape[0], batch_size):
                model(segments[start:start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    return absmax


def massive_activations(model: torch.nn.Module, segment: torch.Tensor) -> list[dict]:
    """For the hidden state after every block (the residual stream), on ``segment`` (1, length): the largest |h|,
    its token and channel, and the median |h|. One dict per block.

    Taught in: chapter 10, section 7 (W8A8 and the outliers of a decoder).
    """
    if segment.dim() != 2 or segment.shape[0] != 1:
        raise ValueError(f"segment must be one sequence of shape (1, length); got {tuple(segment.shape)}")
    states: list[torch.Tensor] = []  # one (1, T, H) per block: what it adds to the residual stream, summed in

    def keep(module, args, output):
        states.append((output[0] if isinstance(output, tuple) else output).detach())

    handles = [block.register_forward_hook(keep) for block in decoder_layers(model)]
    try:
        with eval_mode(model), torch.inference_mode():
            model(segment)
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for state in states:
        h = state[0].abs().float()  # (T, H)
        flat = int(h.argmax())
        rows.append({"largest": float(h.max()), "token": flat // h.shape[1], "channel": flat % h.shape[1],
                     "median": float(h.median())})
    return rows


def smooth_model_(model: torch.nn.Module, absmax: dict[str, torch.Tensor], alpha: float = 0.5) -> dict[str, torch.Tensor]:
    """Fold SmoothQuant's scales into every decoder block, in place; the float model computes the same function.

    For each group of layers that read one input (``awq.llama_groups``): s from the input's ``absmax`` and the
    largest weight column over the group. Returns the smoothed inputs' ranges (absmax / s) by layer name, for
    static activation scales; ``absmax`` itself is not changed.

    Taught in: chapter 10, section 7 (W8A8 and the outliers of a decoder).
    """
    prefix = {id(m): name for name, m in model.named_modules()}
    smoothed = dict(absmax)
    for block in decoder_layers(model):
        base = prefix[id(block)]
        for previous, names, _ in llama_groups(block):
            full = [f"{base}.{n}" for n in names]
            missing = [n for n in full if n not in absmax]
            if missing:
                raise ValueError(f"absmax has no input range for {missing[:3]}: record it with input_absmax first")
            layers = [block.get_submodule(n) for n in names]
            weight_absmax = torch.stack([layer.weight.detach().abs().amax(0) for layer in layers]).amax(0).float()  # (K,)
            s = smoothquant_scales(absmax[full[0]], weight_absmax, alpha)
            scale_layers_(block.get_submodule(previous), layers, s)
            for name in full:
                smoothed[name] = absmax[name] / s
    return smoothed


class W8A8Linear(torch.nn.Module):
    """A linear layer computing with int8 weights (per output channel) and int8 inputs (per token, or per tensor
    with a calibrated scale), fake-quantized: y = fake_int8(x) W_hat^T + b."""

    def __init__(self, linear: torch.nn.Linear, activations: str = "token", input_absmax: torch.Tensor | None = None):
        super().__init__()
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}; got {activations!r}")
        if activations == "tensor" and input_absmax is None:
            raise ValueError("input_absmax: per-tensor activations need the calibrated input range; got None")
        w = linear.weight.detach().float()  # (N, K)
        scale = (w.abs().amax(1, keepdim=True) / QMAX).clamp(min=1e-12)  # (N, 1)
        self.register_buffer("codes", torch.round(w / scale).clamp_(-QMAX, QMAX).to(torch.int8))  # (N, K): a quarter of fp32's bytes
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self.activations = activations
        input_scale = torch.ones(()) if input_absmax is None else (input_absmax.max().float() / QMAX).clamp(min=1e-12)
        self.register_buffer("input_scale", input_scale)

    @property
    def weight(self) -> torch.Tensor:
        """W_hat = codes * scale, (N, K) float32: the weight the product computes with (made when asked)."""
        return self.codes.float() * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (..., K) -> (..., N)
        if self.activations == "token":
            scale = (x.abs().amax(-1, keepdim=True) / QMAX).clamp(min=1e-12)  # (..., 1)
        else:
            scale = self.input_scale.to(x.dtype)
        return torch.nn.functional.linear(fake_int8(x, scale), self.weight.to(x.dtype),
                                          None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.codes.shape[1]}, out_features={self.codes.shape[0]}, int8 weights per channel, int8 inputs per {self.activations}"


def _block_linears(model: torch.nn.Module, activations: str, absmax: dict[str, torch.Tensor] | None) -> set[str]:
    """The names of ``model``'s block linears, after checking that per-tensor activations have every input range."""
    names = set(block_linear_names(model))
    if activations == "tensor" and (absmax is None or not names <= set(absmax)):
        raise ValueError("absmax must give the input range of every block linear for per-tensor activations")
    return names


def w8a8_model_(model: torch.nn.Module, activations: str = "token", absmax: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """Turn ``model``'s block linears into ``W8A8Linear``, in place (``absmax``: the input ranges, needed for
    per-tensor activations); returns ``model``. Each float linear is freed as it is replaced: use it on a copy
    you own (a smoothed one, say) so that only one float copy is alive.

    Taught in: chapter 10, section 7 (W8A8 and the outliers of a decoder).
    """
    names = _block_linears(model, activations, absmax)
    swap_modules_(model, lambda name, m: W8A8Linear(m, activations, None if absmax is None else absmax.get(name))
                  if name in names else None)
    return model.eval()


def w8a8_model(model: torch.nn.Module, activations: str = "token", absmax: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """A copy of ``model`` whose block linears run as ``W8A8Linear`` (``w8a8_model_`` on a deep copy).
    ``model`` is unchanged.

    Taught in: chapter 10, section 7 (W8A8 and the outliers of a decoder).
    """
    _block_linears(model, activations, absmax)  # a clear error before a copy is made
    return w8a8_model_(copy.deepcopy(model), activations, absmax)
