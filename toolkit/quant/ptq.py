"""Post-training quantization of a whole model's weights: swap layers for packed ones.

``quantize_weights(model, linear_spec, embedding_spec)`` returns a **copy** of ``model`` in
which every chosen ``nn.Linear`` becomes a ``QuantLinear`` and every ``nn.Embedding`` a
``QuantEmbedding``. The model you pass in is not changed. By default the classification
head stays in float: it is tiny (768 weights here) and sits right before the decision.
"""

from __future__ import annotations

from typing import Iterable

import torch

from toolkit import layers
from toolkit.layers import run_with_hooks, swap_modules
from toolkit.quant.modules import QuantEmbedding, QuantLinear
from toolkit.quant.observers import make_observer
from toolkit.quant.spec import QuantSpec

DEFAULT_SKIP = ("classifier",)


def choose_modules(known: Iterable[str], modules: Iterable[str] | None, skip: Iterable[str], what: str) -> set[str]:
    """The names to swap: ``modules`` (all ``known`` if None) minus ``skip``; unknown names are an error."""
    known = list(known)
    chosen = known if modules is None else list(modules)
    unknown = [n for n in chosen if n not in set(known)]
    if unknown:
        raise ValueError(f"module names {unknown} are not {what} of the model; accepted names look like: {', '.join(known[:6])}, ...")
    return set(chosen) - set(skip)


def quantizable(model: torch.nn.Module) -> dict[str, str]:
    """{module name: "linear" or "embedding"} for every layer ``quantize_weights`` can swap
    (``nn.Linear`` and transformers' ``Conv1D``, rewritten as the equivalent Linear, count as linear)."""
    kinds = {}
    linear = layers.linear_layers(model)
    for name, module in model.named_modules():
        if name in linear:
            kinds[name] = "linear"
        elif isinstance(module, torch.nn.Embedding):
            kinds[name] = "embedding"
    return kinds


def quantize_weights(
    model: torch.nn.Module,
    linear_spec: QuantSpec | None = None,
    embedding_spec: QuantSpec | None = None,
    modules: Iterable[str] | None = None,
    skip: Iterable[str] = DEFAULT_SKIP,
    input_spec: QuantSpec | None = None,
) -> torch.nn.Module:
    """A copy of ``model`` with weights quantized (weight-only PTQ; no calibration needed).

    ``modules`` limits the swap to these names (default: every Linear and Embedding);
    ``skip`` names modules to keep in float (default: the classifier head). With
    ``input_spec`` the linear layers also quantize their inputs (static activation
    quantization): run ``calibrate_`` before using the model.

    Layers with a weight matrix that are not linear (convolutions) are left in float, named
    in a warning and in the returned model's ``skipped_layers`` ({name: why}). Quantizing
    linear layers of which none lies inside the model's blocks is an error.

    Taught in: chapter 3, section 3 (Dynamic int8: weights ahead of time, activations on the fly).
    """
    if linear_spec is None and embedding_spec is None:
        raise ValueError("give linear_spec, embedding_spec or both: nothing would be quantized")
    for name, spec in (("linear_spec", linear_spec), ("embedding_spec", embedding_spec)):
        if spec is not None and (not isinstance(spec, QuantSpec) or spec.is_float):
            raise ValueError(f"{name} must be an integer QuantSpec (bits 1-8); got {spec!r}")
    kinds = quantizable(model)
    chosen = choose_modules(kinds, modules, skip, "Linear or Embedding layers")
    skipped = layers.left_alone(model, set(kinds), conv1d_handled=True)
    if linear_spec is not None:
        layers.require_block_layers(model, {n for n in chosen if kinds[n] == "linear"}, "quantize_weights", skipped)
    layers.warn_left_alone(skipped, "quantize_weights")

    def build(name, module):
        if name not in chosen:
            return None
        if kinds[name] == "linear" and linear_spec is not None:
            return QuantLinear.from_float(layers.as_linear(module), linear_spec, input_spec)
        if kinds[name] == "embedding" and embedding_spec is not None:
            return QuantEmbedding.from_float(module, embedding_spec)
        return None

    result, _ = swap_modules(model, build)
    result.skipped_layers = skipped
    return result.eval()


def quantized_layers(model: torch.nn.Module) -> dict[str, tuple[str, QuantSpec]]:
    """{name: (kind, spec)} of the quantized layers of a model.

    Taught in: chapter 3, section 5 (Weight-only int8, int4, int2, and the embeddings).
    """
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            found[name] = ("linear", module.spec)
        elif isinstance(module, QuantEmbedding):
            found[name] = ("embedding", module.spec)
    return found


def calibrate_(model: torch.nn.Module, tokenizer, examples, observer: str = "minmax", batch_size: int = 32, **options) -> torch.nn.Module:
    """Set the input ranges of every statically quantized linear layer from calibration sentences.

    Changes ``model`` in place (hence the ``_``): a forward pre-hook on each such layer feeds
    its inputs (padding positions removed) to an observer, with the model in eval mode on its
    own device; afterwards each layer gets the observer's scale and zero-point. Returns the model.

    Taught in: chapter 3, section 4 (Static int8: calibrate the activation ranges once).
    """
    static = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear) and m.input_spec is not None}
    if not static:
        raise ValueError("the model has no statically quantized layers: build it with quantize_weights(..., input_spec=...)")
    if len(examples) == 0:
        raise ValueError("examples is empty: calibration needs at least one sentence")
    observers = {n: make_observer(observer, m.input_spec, **options) for n, m in static.items()}
    mask: list[torch.Tensor] = []

    def hook_for(name):
        def hook(module, args):
            x = args[0]  # (batch, seq, in_features)
            keep = mask[0].bool() if x.dim() == 3 and mask and mask[0].shape == x.shape[:2] else None
            observers[name].observe(x[keep] if keep is not None else x.reshape(-1, x.shape[-1]))
        return hook

    for module in static.values():  # observe float inputs: switch quantization off while calibrating
        module._calibrating_spec, module.input_spec = module.input_spec, None
    try:
        run_with_hooks(model, {m: hook_for(n) for n, m in static.items()}, tokenizer, examples, mask, batch_size, pre=True)
    finally:
        for module in static.values():
            module.input_spec = module._calibrating_spec
            del module._calibrating_spec
    for name, module in static.items():
        scale, zero_point = observers[name].qparams()
        module.input_scale = scale.reshape(()).float()
        module.input_zero_point = zero_point.reshape(()).to(torch.int32)
    return model
