"""Which layers can bear fewer bits: a second-order sensitivity estimate and an exact bit allocation under a byte budget.

**Sensitivity, predicted (HAWQ-v2 style).** Quantizing a weight w to w + Δ changes the loss by

    ΔL ≈ gᵀΔ + ½ ΔᵀHΔ

At a trained minimum g ≈ 0, and with Δ roughly uncorrelated between weights the second term is
about ½ · (Tr(H) / n) · ||Δ||². The Hessian trace comes without ever forming H (n² numbers) from
Hutchinson's estimator with Rademacher probes v (entries ±1, E[vvᵀ] = I):

    Tr(H) = E_v[vᵀ H v],   H v = ∇_w (∇_w L · v)      (a Hessian-vector product: two backward passes)

**Mixed precision under a budget.** Each layer i picks one option j (a bit width) with a cost b_ij
(bytes) and an estimated damage e_ij; choose one option per layer to minimise Σ e_ij subject to
Σ b_ij ≤ B. This multiple-choice knapsack is solved exactly by dynamic programming over the budget
in units of ``granularity`` bytes:

    D_i(c) = min_j [ D_{i-1}(c - b_ij) + e_ij ],   D_0(c) = 0 for c ≥ 0
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def hutchinson_trace(loss_fn: Callable[[], torch.Tensor], parameters: Sequence[torch.Tensor], probes: int = 8,
                     seed: int = 0) -> list[float]:
    """Estimate Tr(H) of ``loss_fn()`` for each tensor in ``parameters`` (the Hessian block of that tensor).

    ``loss_fn`` recomputes the loss (a scalar) from the current parameters; every probe draws a fresh
    Rademacher vector per tensor and costs one forward and two backward passes. Returns one estimate
    per tensor, the mean of ``probes`` samples of vᵀHv.
    """
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be a positive integer; got {probes!r}")
    parameters = list(parameters)
    if not parameters or not all(p.requires_grad for p in parameters):
        raise ValueError("parameters must be a non-empty list of tensors with requires_grad=True")
    generator = torch.Generator().manual_seed(seed)
    totals = [0.0] * len(parameters)
    for _ in range(probes):
        loss = loss_fn()
        grads = torch.autograd.grad(loss, parameters, create_graph=True)
        vs = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.dtype).to(p.device) for p in parameters]
        hvs = torch.autograd.grad(grads, parameters, grad_outputs=vs)  # H v for each tensor's block
        for i, (v, hv) in enumerate(zip(vs, hvs)):
            totals[i] += float((v * hv).sum())
    return [t / probes for t in totals]


def allocate_bits(costs: Sequence[Sequence[int]], damages: Sequence[Sequence[float]], budget: int,
                  granularity: int = 1) -> list[int]:
    """Choose one option per layer (an index into its ``costs``/``damages`` rows) minimising the summed damage with
    the summed cost (bytes) at most ``budget``; exact dynamic programming. Costs are rounded *up* to multiples of
    ``granularity`` bytes, so a returned choice never exceeds the budget. Raises ``ValueError`` if no choice fits."""
    if len(costs) != len(damages) or any(len(c) != len(d) or not c for c, d in zip(costs, damages)):
        raise ValueError("costs and damages must have one non-empty row per layer, of equal lengths")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"budget must be a non-negative integer number of bytes; got {budget!r}")
    if isinstance(granularity, bool) or not isinstance(granularity, int) or granularity < 1:
        raise ValueError(f"granularity must be a positive integer number of bytes; got {granularity!r}")
    units = budget // granularity
    inf = float("inf")
    best = [0.0] * (units + 1)  # D_0(c)
    choices: list[list[int]] = []
    for layer_costs, layer_damages in zip(costs, damages):
        steps = [-(-int(c) // granularity) for c in layer_costs]  # ceil: never under-count bytes
        row, pick = [inf] * (units + 1), [-1] * (units + 1)
        for c in range(units + 1):
            for j, (step, damage) in enumerate(zip(steps, layer_damages)):
                if step <= c and best[c - step] + damage < row[c]:
                    row[c], pick[c] = best[c - step] + damage, j
        best = row
        choices.append(pick)
    if best[units] == inf:
        smallest = sum(min(c) for c in costs)
        raise ValueError(f"budget {budget} bytes is below the smallest possible total ({smallest} bytes)")
    chosen, c = [], units  # walk back through the tables
    for layer_costs, pick in zip(reversed(costs), reversed(choices)):
        j = pick[c]
        chosen.append(j)
        c -= -(-int(layer_costs[j]) // granularity)
    return chosen[::-1]
