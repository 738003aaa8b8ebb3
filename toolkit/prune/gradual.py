"""Pruning while training: one loop for one-shot, iterative and gradual pruning (the schedules and mask updates;
``toolkit.train.prune_during_training_`` runs them inside the fine-tuning loop).

A **schedule** says which sparsity the model must have after each training step t = 0, 1, ..., T
(t = 0 is before the first step). The three methods differ only in their schedule; the training
steps, the learning rate and the loss are the same, so a comparison between them is fair:

    one-shot:   s_t = s_f for every t: prune once, then train the survivors for all T steps
    iterative:  k rounds of T/k steps; round r (r = 1..k) starts by pruning to 1 - (1 - s_f)^(r/k)
    gradual:    the cubic schedule of Zhu & Gupta (2017): dense training until step t0, a first cut to s_i
                at t0 (oBERT and GMP* cut 30-70% at once), then a cut every Δt steps during
                ``pruning_fraction`` of T, then a hold phase of training at s_f:
                s_t = s_f + (s_i - s_f) · (1 - k/n)³,  k = min(n, ⌊(t - t0) / Δt⌋),  for t ≥ t0

The published recipes also **re-warm the learning rate** after every cut (GMP*, oBERT's
"cyclic linear" schedule): the rate jumps back to its peak and decays linearly until the next cut,
so the survivors get a full-strength recovery phase each time (``PruningSchedule.lr_factor``).

Masks are ``torch.nn.utils.prune`` buffers (``apply.apply_masks_``): the layer trains
``weight_orig`` and multiplies by ``weight_mask`` in a forward pre-hook, so a removed weight gets
no gradient and stays removed. At each update magnitude scores the weights that are still in;
removed weights score -inf, so masks only ever lose weights and the sparsity follows the schedule
exactly. Movement pruning instead learns a score per weight and recomputes its masks from the
scores at every step (``toolkit.prune.movement``), so its removed weights can return.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from toolkit.prune import masks as masks_module
from toolkit.prune.masks import check_sparsity
from toolkit.prune.schedule import cubic_sparsity, iterative_sparsities
from toolkit.runtime import check_int

METHODS = ("one-shot", "iterative", "gradual")
CRITERIA = ("magnitude", "movement")
SCOPES = ("local", "global")


@dataclass(frozen=True)
class PruningSchedule:
    """Target sparsity at every training step for one of ``METHODS``.

    ``steps`` is the number of training steps T; ``rounds`` the k of iterative pruning;
    ``pruning_fraction`` the share of T over which gradual pruning raises the sparsity, every
    ``frequency`` steps (Δt); ``initial`` the sparsity s_i of gradual pruning's first cut, at t0.
    What is left of T after t0 + n Δt is the hold phase, trained at s_f.

    Taught in: chapter 8, section 1 (Three ways to spend the same training steps).
    """

    method: str
    final: float
    steps: int
    rounds: int = 3
    pruning_fraction: float = 0.75
    frequency: int = 2
    start_fraction: float = 0.0  # gradual: t0 = start_fraction · T, training before any pruning (movement scores need it)
    initial: float = 0.0  # gradual: s_i, the sparsity of the first cut at t0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        for name in ("final", "initial"):
            try:
                check_sparsity(getattr(self, name))
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
        for name in ("steps", "rounds", "frequency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.method == "iterative" and self.rounds > self.steps:
            raise ValueError(f"rounds ({self.rounds}) must not exceed steps ({self.steps}): every round needs a training step")
        if not 0 < self.pruning_fraction <= 1:
            raise ValueError(f"pruning_fraction must be in (0, 1]; got {self.pruning_fraction!r}")
        if not 0 <= self.start_fraction < 1 or self.start_fraction + self.pruning_fraction > 1:
            raise ValueError(f"start_fraction must be in [0, 1) with start_fraction + pruning_fraction <= 1; "
                             f"got {self.start_fraction!r} + {self.pruning_fraction!r}")
        if self.initial > self.final:
            raise ValueError(f"initial must not exceed final; got initial {self.initial!r} > final {self.final!r}")

    @property
    def start(self) -> int:
        """t0, the step gradual pruning starts at."""
        return round(self.start_fraction * self.steps)

    @property
    def pruning_steps(self) -> int:
        """n, the number of gradual pruning updates: n Δt ≈ pruning_fraction · T."""
        return max(1, round(self.pruning_fraction * self.steps / self.frequency))

    def round_starts(self) -> list[int]:
        """Iterative pruning: the step at which each round prunes (0 for the first)."""
        return [math.floor(r * self.steps / self.rounds) for r in range(self.rounds)]

    def at(self, step: int, final: float | None = None) -> float:
        """The sparsity the model must have after ``step`` training steps (``final`` overrides s_f, e.g. per layer)."""
        final = self.final if final is None else check_sparsity(final)
        check_int("step", step, minimum=0)
        if self.method == "one-shot":
            return final
        if self.method == "iterative":
            reached = sum(start <= step for start in self.round_starts())  # rounds that have pruned by now
            return iterative_sparsities(final, self.rounds)[reached - 1]
        if step < self.start:
            return 0.0  # dense training before t0
        initial = self.initial * final / self.final if self.final > 0 else 0.0  # a layer's own s_f scales its first cut
        return cubic_sparsity(step, final, initial=initial, start=self.start, steps=self.pruning_steps, frequency=self.frequency)

    def cuts(self) -> list[int]:
        """The steps after which the masks change (0 is before the first training step)."""
        return list(self._cuts)

    @functools.cached_property
    def _cuts(self) -> tuple[int, ...]:
        values = [self.at(t) for t in range(self.steps + 1)]
        return tuple(t for t in range(self.steps + 1) if (values[t] > 0 if t == 0 else values[t] != values[t - 1]))

    def lr_factor(self, step: int, floor: float = 0.1) -> float:
        """Learning-rate multiplier for the optimizer step taken after ``step`` completed steps, re-warmed at every cut.

        Between a cut at step c and the next change point c' (the next cut, or T), the rate decays linearly
        from the peak to ``floor`` · peak: factor = 1 - (1 - floor) · (step - c) / (c' - c). Before the first
        cut (dense training before t0) the same decay runs from step 0 to t0. Pass it as
        ``fine_tune_(..., lr_factor=schedule.lr_factor)`` (oBERT decays 5e-5 -> 5e-6, floor 0.1)."""
        check_int("step", step, minimum=0)
        if not 0 <= floor <= 1:
            raise ValueError(f"floor must be in [0, 1]; got {floor!r}")
        points = sorted({0, *self._cuts, self.steps})  # change points; the last is T
        begin = max(p for p in points[:-1] if p <= step)
        end = min(p for p in points if p > begin)
        return max(floor, 1 - (1 - floor) * (step - begin) / (end - begin))


@dataclass
class PruningLog:
    """What happened: the sparsity after every update and the masks at the end."""

    steps: list[int] = field(default_factory=list)
    sparsity: list[float] = field(default_factory=list)  # fraction of the pruned layers' weights removed
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (out, in) bool, True where kept (a quarter of a float mask)
    returned: int = 0  # weights out of the mask at one of the updates and back in the final mask (movement only)


def current_masks(model: torch.nn.Module, names: Sequence[str]) -> dict[str, torch.Tensor]:
    return {n: model.get_submodule(n).weight_mask for n in names}


@torch.no_grad()
def update_masks_(model: torch.nn.Module, names: Sequence[str], targets: dict[str, float] | float, scores: dict[str, torch.Tensor],
                  scope: str = "local") -> float:
    """Shrink the masks of ``names`` (already hooked by ``apply_masks_``) so each layer reaches its target
    sparsity (``local``), or the whole set reaches one target with one threshold (``global``).
    Weights already removed score -inf and stay removed. Returns the sparsity over all ``names``."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    current = current_masks(model, names)
    live = {n: torch.where(current[n] > 0, scores[n].float(), torch.full_like(current[n], -math.inf)) for n in names}
    if scope == "global":
        if not isinstance(targets, float):
            raise ValueError("a global scope takes one target sparsity for all layers, not one per layer")
        new = masks_module.global_masks(live, targets)
        # ties at -inf: global_masks keeps nothing at or below the threshold, which only ever removes more of the removed
    else:
        per_layer = targets if isinstance(targets, dict) else {n: targets for n in names}
        new = {n: masks_module.local_masks({n: live[n]}, per_layer[n])[n] for n in names}
    for n in names:
        current[n].copy_(new[n] * current[n])  # (out, in): never revive a removed weight
    removed = sum(int((current[n] == 0).sum()) for n in names)
    return removed / sum(current[n].numel() for n in names)


def allocate_sparsity(damage: dict[str, float], sizes: dict[str, int], target: float, spread: float = 0.1,
                      ceiling: float = 0.99) -> dict[str, float]:
    """Per-layer sparsities from a sensitivity scan, at the same overall sparsity as a uniform ``target``.

    Layers are ranked by ``damage`` (what pruning that layer alone cost, e.g. a KL divergence); the least
    sensitive gets target + spread, the most sensitive target - spread, linearly by rank (the rule of OWL,
    Yin et al. 2023, with ranks instead of outlier ratios). A shift c, found by bisection, makes the
    weighted mean exact:  Σ_l n_l · clip(s_l + c, 0, ceiling) = target · Σ_l n_l.

    Taught in: chapter 8, section 5 (Evaluate and adjust: how much sparsity each layer gets).
    """
    check_sparsity(target)
    if not 0 <= spread < 1:
        raise ValueError(f"spread must be in [0, 1); got {spread!r}")
    if set(damage) != set(sizes) or not damage:
        raise ValueError("damage and sizes must name the same, non-empty set of layers")
    order = sorted(damage, key=damage.get)  # least sensitive first
    last = max(len(order) - 1, 1)
    base = {n: target + spread * (1 - 2 * rank / last) for rank, n in enumerate(order)}
    total = sum(sizes.values())

    def shifted(c):
        return {n: min(max(base[n] + c, 0.0), ceiling) for n in order}

    def mean(c):
        return sum(sizes[n] * s for n, s in shifted(c).items()) / total

    low, high = -1.0, 1.0
    for _ in range(60):  # mean(c) rises with c: bisection to ~1e-18
        middle = (low + high) / 2
        low, high = (middle, high) if mean(middle) < target else (low, middle)
    return shifted((low + high) / 2)
