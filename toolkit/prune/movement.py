"""Movement pruning as Sanh, Wolf & Rush (2020) run it: learned scores, a straight-through TopK, masks that can regrow.

Each pruned layer gets a score matrix S of its weight's shape, a parameter trained by the optimizer
with its own learning rate. The forward pass uses the weight

    W' = W ⊙ M,   M = TopK(S, keep)    (1 for the ``keep`` share of highest scores in the layer, else 0)

TopK has no useful gradient, so the backward pass treats it as the identity (a straight-through
estimator): ∂L/∂S = ∂L/∂M = ∂L/∂W' ⊙ W. A gradient step on S therefore adds -η · ∂L/∂W' ⊙ W: a weight
that training pushes away from zero (W and -∂L/∂W' of the same sign) gains score, one pushed
towards zero loses it. Summed over the steps this is the movement score -Σ_t W ⊙ ∂L/∂W', now
*learned*: the optimizer normalises it, and the mask is recomputed from S at **every** forward pass,
so a pruned weight whose score climbs back into the top ``keep`` returns (its W was kept; it only
received no gradient while masked out). Sanh et al. start from the pre-trained model and prune
while fine-tuning on the task, raising the sparsity on a cubic schedule; at a converged model the
gradients are mostly noise and the scores learn little (chapter 8, section 3).

``attach_scores_`` adds the scores as a parametrization (``torch.nn.utils.parametrize``): the
layer's ``weight`` becomes W ⊙ TopK(S), its trained tensor ``parametrizations.weight.original``
and its score ``parametrizations.weight.0.scores``. ``remove_scores_`` bakes the final mask in.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn.utils import parametrize

from toolkit.prune.masks import check_sparsity


class TopKStraightThrough(torch.autograd.Function):
    """M = 1 for the ``keep`` count of largest scores, 0 elsewhere; the gradient passes through unchanged."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, keep: int) -> torch.Tensor:
        mask = torch.zeros_like(scores)
        if keep > 0:
            mask.view(-1)[scores.reshape(-1).topk(keep, sorted=False).indices] = 1.0
        return mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None  # straight-through: ∂L/∂S = ∂L/∂M


SCORE_INITS = ("constant", "magnitude")


class ScoredMask(torch.nn.Module):
    """The parametrization W -> W ⊙ TopK(S, keep); ``sparsity`` is set from outside (the schedule).

    ``init="constant"``: the scores start equal (Sanh et al.), ties broken by a tiny multiple of |W|; Adam's
    first steps, about ±lr each, then decide the mask, so the scores need a dense warm-up and many steps.
    ``init="magnitude"``: S starts at |W| / mean |W| of the layer, a magnitude prior that training revises
    by about ±lr per step (the first cut is then exactly a magnitude cut)."""

    def __init__(self, weight: torch.Tensor, init: str = "constant"):
        super().__init__()
        if init not in SCORE_INITS:
            raise ValueError(f"init must be one of {', '.join(SCORE_INITS)}; got {init!r}")
        size = weight.detach().abs().float()
        start = size / size.mean().clamp_min(1e-12) if init == "magnitude" else 1e-6 * size
        self.scores = torch.nn.Parameter(start)
        self.sparsity = 0.0

    def mask(self) -> torch.Tensor:
        keep = self.scores.numel() - round(self.sparsity * self.scores.numel())
        return TopKStraightThrough.apply(self.scores, keep)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask().to(weight.dtype)


def attach_scores_(model: torch.nn.Module, names: Sequence[str], init: str = "constant") -> dict[str, ScoredMask]:
    """Give every layer in ``names`` learned movement scores (in place); returns the parametrizations by layer name."""
    masks = {}
    for name in names:
        module = model.get_submodule(name)
        if not isinstance(getattr(module, "weight", None), torch.nn.Parameter):
            raise ValueError(f"names must be layers with a weight parameter; {name!r} is not")
        parametrize.register_parametrization(module, "weight", ScoredMask(module.weight, init))
        masks[name] = module.parametrizations.weight[0]
    return masks


def set_sparsity_(masks: dict[str, ScoredMask], sparsity: float | dict[str, float]) -> None:
    """Set every layer's target sparsity (one number, or one per layer name); the next forward pass uses it."""
    for name, scored in masks.items():
        scored.sparsity = check_sparsity(sparsity[name] if isinstance(sparsity, dict) else sparsity)


@torch.no_grad()
def current_masks(masks: dict[str, ScoredMask]) -> dict[str, torch.Tensor]:
    """The 0/1 mask each layer uses now (out, in)."""
    return {name: scored.mask().detach().clone() for name, scored in masks.items()}


def remove_scores_(model: torch.nn.Module, names: Sequence[str]) -> None:
    """Make the current masks permanent (W <- W ⊙ M, exact zeros) and drop the scores (in place)."""
    for name in names:
        parametrize.remove_parametrizations(model.get_submodule(name), "weight", leave_parametrized=True)
