"""Penalties that push weights, or whole structures, towards zero during training.

Added to the task loss L with a strength λ:

    L1 (lasso):        λ Σ |w|            subgradient λ·sign(w): a constant pull, so small weights reach 0
    L2 (weight decay): λ/2 Σ w²           gradient λw: a pull proportional to w, so weights shrink but rarely reach 0
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


def _check_threshold(threshold: float) -> None:
    if threshold < 0:
        raise ValueError(f"threshold must be non-negative; got {threshold!r}")


@torch.no_grad()
def soft_threshold_(weights: Iterable[torch.Tensor], threshold: float) -> int:
    """Proximal L1 step in place: w ← sign(w)·max(|w| - threshold, 0), with threshold = learning rate × λ.
    Returns how many weights are exactly zero afterwards."""
    _check_threshold(threshold)
    zeros = 0
    for w in weights:
        w.copy_(w.sign() * (w.abs() - threshold).clamp(min=0))
        zeros += int((w == 0).sum())
    return zeros


PENALTIES = ("none", "l1", "l2", "group lasso")


@torch.no_grad()
def group_soft_threshold_(weights: Iterable[torch.Tensor], threshold: float) -> int:
    """Proximal group-lasso step in place, one group per row: w_row ← w_row · max(0, 1 - threshold / ||w_row||₂).
    Returns how many rows are exactly zero afterwards."""
    _check_threshold(threshold)
    zero_rows = 0
    for w in weights:
        norms = w.norm(dim=1, keepdim=True)  # (rows, 1)
        w.mul_((1 - threshold / norms.clamp(min=1e-12)).clamp(min=0))
        zero_rows += int((w.abs().sum(dim=1) == 0).sum())
    return zero_rows


class ProximalPenalty:
    """A penalty applied exactly after every optimizer step (decoupled from the optimizer, like AdamW's weight
    decay), with η_t the learning rate of that step and λ the strength:

        none:        w unchanged
        l1:          w ← sign(w) · max(|w| - η_t λ, 0)          (soft thresholding: the proximal step of λ Σ|w|)
        l2:          w ← w · (1 - η_t λ)                         (decoupled weight decay: the gradient step of λ/2 Σ w²)
        group lasso: w_row ← w_row · max(0, 1 - η_t λ / ||w_row||₂)   (one group per row)

    Added to the loss (λ Σ|w| and so on), a penalty's gradient would be rescaled by Adam together with the task's, so
    its pull would stop depending on λ; applied here, it pulls at rate η_t λ whatever the optimizer does. Pass
    ``on_step=penalty.step_`` to ``fine_tune_``, which hands it each step's η_t as its scheduler set it.

    Taught in: chapter 8, section 4 (Regularisation toward sparsity: L1, L2, group lasso).
    """

    def __init__(self, weights: dict[str, torch.Tensor], penalty: str, strength: float):
        if penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {', '.join(PENALTIES)}; got {penalty!r}")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or strength < 0:
            raise ValueError(f"strength must be a non-negative number (λ); got {strength!r}")
        self.weights, self.penalty, self.strength = list(weights.values()), penalty, float(strength)

    def step_(self, step: int, learning_rate: float) -> None:
        """Apply the penalty's step to the weights, in place, for optimizer step ``step`` taken at ``learning_rate`` (η_t)."""
        threshold = learning_rate * self.strength
        if self.penalty == "l1":
            soft_threshold_(self.weights, threshold)
        elif self.penalty == "group lasso":
            group_soft_threshold_(self.weights, threshold)
        elif self.penalty == "l2":
            with torch.no_grad():
                for w in self.weights:
                    w.mul_(1 - threshold)


def near_zero_share(weights: Iterable[torch.Tensor], tolerance: float = 1e-3) -> float:
    """Fraction of weights with |w| <= tolerance.

    Taught in: chapter 8, section 4 (Regularisation toward sparsity: L1, L2, group lasso).
    """
    weights = list(weights)
    return sum(int((w.detach().abs() <= tolerance).sum()) for w in weights) / sum(w.numel() for w in weights)
