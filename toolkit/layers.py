"""Which layers of a model are "linear", and which ones a tool leaves alone (and why).

Hugging Face models multiply by weight matrices through more than one module type:

- ``torch.nn.Linear``: y = x Wᵀ + b with W of shape (out, in) (BERT, MiniLM, most models);
- transformers' ``Conv1D`` (GPT-2 and relatives): y = x W + b with W stored **transposed**,
  shape (in, out). Despite its name it is a linear layer, not a convolution.

Quantization and QAT handle both: a ``Conv1D`` is first rewritten as the equivalent
``nn.Linear`` (``as_linear``). Pruning scores ``nn.Linear`` only; other linear-like layers are
reported, in a warning and in what the function returns, never skipped in silence. A tool
that would touch nothing inside the model's blocks (the repeated layers of a ``ModuleList``)
raises instead of returning an unchanged model as if it had worked.
"""

from __future__ import annotations

import warnings

import torch

try:  # transformers' GPT-2 style layer
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a dependency
    Conv1D = None

# Layers that compute with a weight matrix but that no tool of the workbook rewrites.
_OTHER_WEIGHTED = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Bilinear)


def is_conv1d(module: torch.nn.Module) -> bool:
    return Conv1D is not None and isinstance(module, Conv1D)


def linear_layers(model: torch.nn.Module, *, conv1d: bool = True) -> dict[str, str]:
    """{name: "linear" | "conv1d"} for every ``nn.Linear`` (and, with ``conv1d``, transformers ``Conv1D``)."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            found[name] = "linear"
        elif conv1d and is_conv1d(module):
            found[name] = "conv1d"
    return found


def left_alone(model: torch.nn.Module, handled: set[str], *, conv1d_handled: bool) -> dict[str, str]:
    """{name: why} for layers with a weight matrix that a tool handling ``handled`` does not touch
    because of their type (layers skipped on purpose, e.g. the head, are not listed)."""
    reasons = {}
    for name, module in model.named_modules():
        if name in handled:
            continue
        if is_conv1d(module) and not conv1d_handled:
            reasons[name] = "transformers Conv1D (a linear layer with a transposed weight): not supported by this tool"
        elif isinstance(module, _OTHER_WEIGHTED):
            reasons[name] = f"{type(module).__name__}: a convolution, not a linear layer"
    return reasons


def warn_left_alone(reasons: dict[str, str], tool: str) -> None:
    """One warning that names every layer ``tool`` left alone, and why."""
    if reasons:
        listed = "; ".join(f"{n} ({why})" for n, why in list(reasons.items())[:8])
        more = f" and {len(reasons) - 8} more" if len(reasons) > 8 else ""
        warnings.warn(f"{tool} left {len(reasons)} weight layer(s) unchanged: {listed}{more}", UserWarning, stacklevel=3)


def block_layers(model: torch.nn.Module) -> set[str]:
    """Names of the modules that live inside the model's repeated blocks (any ``nn.ModuleList``)."""
    inside = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList):
            prefix = f"{name}." if name else ""
            inside |= {f"{prefix}{child}" for child, _ in module.named_modules() if child}
    return inside


def require_block_layers(model: torch.nn.Module, chosen: set[str] | list[str], tool: str, reasons: dict[str, str]) -> None:
    """Raise if ``chosen`` holds no layer inside the model's blocks although the model has blocks."""
    blocks = block_layers(model)
    if not chosen or (blocks and not (set(chosen) & blocks)):
        detail = f" Layers left alone: {'; '.join(f'{n} ({w})' for n, w in list(reasons.items())[:4])}." if reasons else ""
        raise ValueError(
            f"{tool} would change no layer inside the model's blocks (chosen: {sorted(chosen)[:4] or 'none'}); "
            f"check modules= and skip=, or the model's layer types.{detail}"
        )


def linear_shape(module: torch.nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an ``nn.Linear`` (weight (out, in)) or a ``Conv1D`` (weight (in, out))."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if is_conv1d(module):
        return tuple(module.weight.shape)  # (in, out)
    raise TypeError(f"module must be nn.Linear or transformers Conv1D; got {type(module).__name__}")


def as_linear(module: torch.nn.Module) -> torch.nn.Linear:
    """An ``nn.Linear`` computing what ``module`` computes: itself, or a ``Conv1D`` rewritten.

    Conv1D: y = x W + b with W (in, out)  ->  Linear: y = x (Wᵀ)ᵀ + b with weight Wᵀ (out, in).
    """
    if isinstance(module, torch.nn.Linear):
        return module
    if is_conv1d(module):
        in_features, out_features = module.weight.shape  # (in, out)
        linear = torch.nn.Linear(in_features, out_features, bias=module.bias is not None,
                                 device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(module.weight.t())  # (out, in)
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        return linear
    raise TypeError(f"module must be nn.Linear or transformers Conv1D; got {type(module).__name__}")
