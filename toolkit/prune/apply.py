"""Putting masks to work.

- ``apply_masks`` returns a pruned **copy**: W <- W * M, plain tensors, nothing to undo.
- ``apply_masks_`` prunes **in place** with ``torch.nn.utils.prune.custom_from_mask``: the layer
  keeps ``weight_orig`` (trainable) and ``weight_mask`` (a buffer), and a forward pre-hook
  recomputes weight = weight_orig * weight_mask before every call. Gradients reach only kept
  weights, so a retrained model keeps its mask.
- ``remove_masks_`` makes it permanent (``prune.remove``): the hook and the mask go, the zeros stay.
"""

from __future__ import annotations

import copy

import torch
from torch.nn.utils import prune

from toolkit.prune.importance import prunable_modules


def _check_names(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    modules = dict(model.named_modules())
    unknown = [n for n in masks if n not in modules or not hasattr(modules[n], "weight")]
    if unknown:
        raise ValueError(f"module names {unknown} are not layers with a weight in this model")
    wrong = [n for n, m in masks.items() if m.shape != modules[n].weight.shape]
    if wrong:
        raise ValueError(f"masks for {wrong} do not have their layer's weight shape")


def apply_masks(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A copy of ``model`` with W * M in every masked layer (``model`` is not changed).

    Taught in: chapter 6, section 3 (Smoothness: how does the model react to small changes?).
    """
    _check_names(model, masks)
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for name, mask in masks.items():
            weight = pruned.get_submodule(name).weight
            weight.mul_(mask.to(weight.device, weight.dtype))
    return pruned


def apply_masks_(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Prune ``model`` in place with torch.nn.utils.prune hooks (see the module doc); returns it.

    Taught in: chapter 6, section 7 (A short recovery: fine-tune with the mask fixed).
    """
    _check_names(model, masks)
    for name, mask in masks.items():
        module = model.get_submodule(name)
        prune.custom_from_mask(module, "weight", mask.to(module.weight.device, module.weight.dtype))
    return model


def remove_masks_(model: torch.nn.Module) -> int:
    """Make every torch.nn.utils.prune mask permanent (in place); returns how many were removed.

    Taught in: chapter 6, section 5 (`torch.nn.utils.prune`: masks as hooks).
    """
    removed = 0
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_orig"):
            prune.remove(module, "weight")
            removed += 1
    return removed


def sparsity_report(model: torch.nn.Module, modules=None) -> dict[str, float]:
    """Fraction of exact zeros in the weight of each layer (default: every prunable linear layer)."""
    return {n: float((model.get_submodule(n).weight == 0).float().mean()) for n in prunable_modules(model, modules)}
