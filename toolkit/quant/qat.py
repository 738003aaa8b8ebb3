"""Quantization-aware training: train through the rounding.

**Fake quantization with a straight-through estimator (STE).** The forward pass rounds and
clips, exactly as the integer model will; the backward pass pretends rounding was the
identity, except where the value was clipped:

    forward:   x_hat = (clamp(round(x / s) + z, qmin, qmax) - z) * s
    backward:  dL/dx = dL/dx_hat  if qmin <= round(x / s) + z <= qmax,  else 0

Without the STE the gradient of round() is zero almost everywhere and nothing would learn.
The float ("master") weights receive these gradients and keep their full precision; only
what the forward pass *uses* is quantized.

**Learned step size (LSQ, Esser et al. 2020).** The scale s becomes a trainable parameter.
With v = x / s and x_hat = round(clamp(v, qmin, qmax)) * s, the gradient of x_hat w.r.t. s is

    round(v) - v   inside the range,   qmin or qmax   where clipped,

scaled by g = 1 / sqrt(n * qmax) (n values share the scale) so that the scale's updates are
as large, relative to it, as the weights' updates are relative to them.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from toolkit import layers

from toolkit.quant.affine import as_rows, qparams_from_range
from toolkit.quant.modules import QuantLinear
from toolkit.quant.observers import MovingAverageMinMaxObserver
from toolkit.layers import swap_modules
from toolkit.quant.ptq import DEFAULT_SKIP, choose_modules
from toolkit.quant.spec import QuantSpec


class FakeQuantizeSTE(torch.autograd.Function):
    """Round-and-clip forward, straight-through (masked) backward. Shapes: x and scale broadcast."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin: int, qmax: int):
        q = torch.round(x * (1.0 / scale)) + zero_point  # same arithmetic as PyTorch's kernels
        inside = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(inside)
        return (q.clamp(qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad_output):
        (inside,) = ctx.saved_tensors
        return grad_output * inside, None, None, None, None


def fake_quantize_ste(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None, zero_point: torch.Tensor | None = None) -> torch.Tensor:
    """Fake-quantize ``x`` with the STE; scales from min-max of each row unless given."""
    if spec.is_float or spec.binary:
        raise ValueError(f"fake_quantize_ste takes integer specs of 2-8 bits; got {spec.describe()}")
    rows, restore, _ = as_rows(x, spec)  # (n_rows, row_len)
    if scale is None:
        with torch.no_grad():
            scale, zero_point = qparams_from_range(rows.amin(dim=1, keepdim=True), rows.amax(dim=1, keepdim=True), spec)
    scale = scale.reshape(-1, 1).to(rows.dtype)
    zero_point = (torch.zeros_like(scale) if zero_point is None else zero_point.reshape(-1, 1)).to(rows.dtype)
    return restore(FakeQuantizeSTE.apply(rows, scale, zero_point, spec.qmin, spec.qmax))


def _grad_scale(t: torch.Tensor, g: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by g backward."""
    return (t - t * g).detach() + t * g


def _round_ste(t: torch.Tensor) -> torch.Tensor:
    """round() forward; identity backward."""
    return (t.round() - t).detach() + t


def lsq_fake_quantize(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor) -> torch.Tensor:
    """LSQ: x_hat = round(clamp(x / s, qmin, qmax)) * s, with s trainable (symmetric specs)."""
    if not spec.symmetric or spec.is_float or spec.binary:
        raise ValueError(f"LSQ here learns symmetric integer scales (2-8 bits); got {spec.describe()}")
    rows, restore, _ = as_rows(x, spec)  # (n_rows, row_len)
    g = 1.0 / math.sqrt(rows.shape[1] * spec.qmax)
    s = _grad_scale(scale.reshape(-1, 1), g)
    return restore(_round_ste(torch.clamp(rows / s, spec.qmin, spec.qmax)) * s)


class QATLinear(torch.nn.Module):
    """A linear layer trained with fake-quantized weights (and optionally inputs).

    ``weight`` stays a float parameter (the master copy). Each forward uses
    x_hat W_hat^T + b, where W_hat is the fake-quantized weight: min-max scales recomputed
    from the current weights, or learned scales (``lsq=True``). With ``input_spec`` the
    inputs are fake-quantized too, with ranges from a moving-average observer that can be
    frozen (``freeze_observers``) once they have settled.
    """

    def __init__(self, linear: torch.nn.Linear, spec: QuantSpec, input_spec: QuantSpec | None = None, lsq: bool = False):
        super().__init__()
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"QATLinear wraps nn.Linear layers; got {type(linear).__name__}")
        if spec.is_float or spec.binary:
            raise ValueError(f"QAT weights need an integer spec of 2-8 bits; got {spec.describe()}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.spec, self.input_spec, self.lsq = spec, input_spec, lsq
        self.weight = torch.nn.Parameter(linear.weight.detach().clone())
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone())
        if lsq:
            rows, _, param_shape = as_rows(self.weight.detach(), spec)
            init = 2 * rows.abs().mean(dim=1) / math.sqrt(spec.qmax)  # the LSQ paper's initialisation
            self.weight_scale = torch.nn.Parameter(init.reshape(param_shape).clone())
        if input_spec is not None:
            self.input_observer = MovingAverageMinMaxObserver(input_spec, averaging_constant=0.01)
            self.observer_frozen = False

    def weight_hat(self) -> torch.Tensor:
        if self.lsq:
            return lsq_fake_quantize(self.weight, self.spec, self.weight_scale.abs() + 1e-12)
        return fake_quantize_ste(self.weight, self.spec)

    def input_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input_observer.qparams()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in_features)
        if self.input_spec is not None:
            if self.training and not self.observer_frozen:
                self.input_observer.observe(x.detach().reshape(-1, x.shape[-1]))
            scale, zero_point = self.input_qparams()
            x = fake_quantize_ste(x, self.input_spec, scale.reshape(1), zero_point.reshape(1))
        return torch.nn.functional.linear(x, self.weight_hat(), self.bias)

    def extra_repr(self) -> str:
        inputs = f", inputs {self.input_spec.describe()}" if self.input_spec is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.spec.describe()}{', LSQ' if self.lsq else ''}{inputs}"


def prepare_qat(
    model: torch.nn.Module,
    spec: QuantSpec,
    input_spec: QuantSpec | None = None,
    lsq: bool = False,
    modules: Iterable[str] | None = None,
    skip: Iterable[str] = DEFAULT_SKIP,
) -> torch.nn.Module:
    """A copy of ``model`` whose linear layers train with fake quantization (``QATLinear``).

    ``nn.Linear`` and transformers' ``Conv1D`` (rewritten as the equivalent Linear) are
    prepared; other weight layers are named in a warning and in ``skipped_layers`` of the
    result. Preparing nothing inside the model's blocks is an error.

    Taught in: chapter 4, section 2 (QAT layers: float master weights, quantized forward pass).
    """
    linears = list(layers.linear_layers(model))
    chosen = choose_modules(linears, modules, skip, "linear layers (nn.Linear or Conv1D)")
    skipped = layers.left_alone(model, set(linears), conv1d_handled=True)
    layers.require_block_layers(model, chosen, "prepare_qat", skipped)
    layers.warn_left_alone(skipped, "prepare_qat")
    result, _ = swap_modules(
        model, lambda name, module: QATLinear(layers.as_linear(module), spec, input_spec, lsq) if name in chosen else None
    )
    result.skipped_layers = skipped
    return result


def freeze_observers_(model: torch.nn.Module) -> int:
    """Stop updating activation ranges in every QATLinear (in place); returns how many were frozen.

    Taught in: chapter 4, section 4 (The training loop, and a small sweep to choose the learning rate).
    """
    frozen = 0
    for module in model.modules():
        if isinstance(module, QATLinear) and module.input_spec is not None:
            module.observer_frozen = True
            frozen += 1
    return frozen


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """A copy in which every QATLinear becomes a QuantLinear with the same integer codes.

    The codes are computed with the scales the QAT forward pass used (min-max of the final
    weights, or the learned LSQ scales), so the converted model computes what the
    fake-quantized one did, now from packed integers.

    Taught in: chapter 4, section 6 (From fake quantization to a real integer file).
    """
    def build(name, module):
        if not isinstance(module, QATLinear):
            return None
        layer = QuantLinear(module.in_features, module.out_features, module.bias is not None, module.spec, module.input_spec)
        with torch.no_grad():
            scale = (module.weight_scale.abs() + 1e-12) if module.lsq else None
            layer.weight_q.set_from(module.weight.detach(), scale=scale)
            if module.bias is not None:
                layer.bias = torch.nn.Parameter(module.bias.detach().clone(), requires_grad=False)
            if module.input_spec is not None:
                scale_x, zero_x = module.input_qparams()
                layer.input_scale = scale_x.reshape(()).float()
                layer.input_zero_point = zero_x.reshape(()).to(torch.int32)
        return layer

    result, converted = swap_modules(model, build)
    if converted == 0:
        raise ValueError("the model has no QATLinear layers: prepare it with prepare_qat first")
    return result.eval()
