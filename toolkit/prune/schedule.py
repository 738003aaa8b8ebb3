"""Pruning schedules: how sparse the model should be at each step, and movement scores learned during training.

**Gradual pruning** (Zhu & Gupta 2017) raises the sparsity from s_i to s_f over n pruning steps of
Δt training steps each, starting at step t0, fast at first and slowly at the end, when every
removed weight costs more:

    s_t = s_f + (s_i - s_f) · (1 - (t - t0) / (n Δt))³      for t ∈ {t0, t0 + Δt, ..., t0 + n Δt}

and holds each value for the Δt steps until the next pruning step.

**Iterative pruning** removes the same share of the *remaining* weights in each of k rounds, so
that after k rounds the sparsity is s_f: round r ends at 1 - (1 - s_f)^(r / k).

**Movement pruning** (Sanh, Wolf & Rush 2020) scores a weight by how training moves it, not by its
size: S = Σ_t -w_t · ∂L/∂w_t, accumulated over the fine-tuning steps. Weights moving towards
zero get low scores and are removed even if they are still large.
"""

from __future__ import annotations

from typing import Iterable

import torch

from toolkit.prune.masks import check_sparsity
from toolkit.runtime import check_int


def cubic_sparsity(step: int, final: float, initial: float = 0.0, start: int = 0, steps: int = 1, frequency: int = 1) -> float:
    """Target sparsity at training ``step`` on Zhu & Gupta's cubic schedule: ``initial`` until ``start``, ``final``
    from ``start + steps * frequency`` on (``steps`` pruning steps every ``frequency`` training steps).

    The sparsity changes only at the pruning steps t0 + kΔt (k = 1..n) and stays constant for the Δt - 1
    training steps after each, which recover from the cut (Zhu & Gupta's Δt):

        s_t = s_f + (s_i - s_f) · (1 - k/n)³,   k = min(n, ⌊(t - t0) / Δt⌋)
    """
    check_sparsity(final)
    check_sparsity(initial)
    if initial > final:
        raise ValueError(f"initial sparsity {initial} must not exceed final sparsity {final}")
    for name, value in (("start", start), ("steps", steps), ("frequency", frequency)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "start" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'start' else 'positive'} integer; got {value!r}")
    if step <= start:
        return initial
    pruned = min(steps, (step - start) // frequency)  # k: pruning steps taken by now
    return final + (initial - final) * (1 - pruned / steps) ** 3


def iterative_sparsities(final: float, rounds: int) -> list[float]:
    """Sparsity at the end of each of ``rounds`` rounds that each remove the same share of the remaining weights."""
    check_sparsity(final)
    check_int("rounds", rounds)
    return [1 - (1 - final) ** (r / rounds) for r in range(1, rounds + 1)]


class MovementScores:
    """Accumulates S = Σ_t -w · ∂L/∂w for named weights.

    Call ``update()`` after every ``loss.backward()``, or ``attach()`` once: it registers a hook that
    adds each step's term as soon as the gradient is accumulated (``detach()`` removes it). For a layer
    pruned with ``torch.nn.utils.prune`` the trained tensor is ``weight_orig``, and that is the one
    tracked. ``updates`` counts the calls of ``update()``.
    """

    def __init__(self, model: torch.nn.Module, names: Iterable[str]):
        names = list(names)
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules or not hasattr(modules[n], "weight")]
        if missing:
            raise ValueError(f"names must be modules with a weight; not found: {missing[:5]}")
        self.weights = {n: getattr(modules[n], "weight_orig", modules[n].weight) for n in names}
        self.scores = {n: torch.zeros_like(w, dtype=torch.float32) for n, w in self.weights.items()}
        self.updates = 0
        self._hooks = []

    @torch.no_grad()
    def update(self) -> None:
        for name, weight in self.weights.items():
            if weight.grad is not None:
                self.scores[name] -= (weight.detach() * weight.grad).float()
        self.updates += 1

    def attach(self) -> "MovementScores":
        """Accumulate automatically after every backward pass (a post-accumulate-grad hook per weight)."""
        if self._hooks:
            return self
        for name, weight in self.weights.items():
            def hook(param, name=name):
                with torch.no_grad():
                    self.scores[name] -= (param.detach() * param.grad).float()
            self._hooks.append(weight.register_post_accumulate_grad_hook(hook))
        return self

    def detach(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
