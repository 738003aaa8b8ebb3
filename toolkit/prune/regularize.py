"""Penalties that push weights, or whole structures, towards zero during training.

Added to the task loss L with a strength λ:

    L1 (lasso):        λ Σ |w|            subgradient λ·sign(w): a constant pull, so small weights reach 0
    L2 (weight decay): λ Σ w²             gradient 2λw: a pull proportional to w, so weights shrink but rarely reach 0
    group lasso:       λ Σ_g ||w_g||₂     the L1 of group norms: whole groups (an FFN neuron's row, a head's rows) reach 0

Plain gradient descent with an L1 term oscillates around zero instead of landing on it; the
proximal step (soft thresholding) applies the penalty exactly after each optimizer step:

    w ← sign(w) · max(|w| - η λ, 0)
"""

from __future__ import annotations

from typing import Iterable

import torch


def l1_penalty(weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """Σ |w| over all tensors (multiply by λ and add to the loss)."""
    return sum(w.abs().sum() for w in weights)


def l2_penalty(weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """Σ w² over all tensors."""
    return sum((w * w).sum() for w in weights)


def group_lasso_penalty(weight: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Σ_g ||w_g||₂ where each group is a slice along ``dim`` (dim=1: one group per row, e.g. an FFN neuron of W_in (f, d))."""
    if weight.dim() != 2 or dim not in (0, 1):
        raise ValueError(f"weight must be 2-D and dim 0 or 1; got shape {tuple(weight.shape)} and dim {dim!r}")
    return weight.norm(dim=dim).sum()


@torch.no_grad()
def soft_threshold_(weights: Iterable[torch.Tensor], threshold: float) -> int:
    """Proximal L1 step in place: w ← sign(w)·max(|w| - threshold, 0), with threshold = learning rate × λ.
    Returns how many weights are exactly zero afterwards."""
    if threshold < 0:
        raise ValueError(f"threshold must be non-negative; got {threshold!r}")
    zeros = 0
    for w in weights:
        w.copy_(w.sign() * (w.abs() - threshold).clamp(min=0))
        zeros += int((w == 0).sum())
    return zeros
