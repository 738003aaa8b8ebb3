"""Second-order sensitivity (Hutchinson's trace) and the exact bit allocation under a byte budget."""

import itertools
import random

import pytest
import torch

from toolkit.quant import sensitivity


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    # L = 1/2 sum a_i w_i^2: H = diag(a); for Rademacher v, v^T H v = sum a_i exactly
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w = torch.randn(4, requires_grad=True)
    assert sensitivity.hutchinson_trace(lambda: 0.5 * (a * w * w).sum(), [w], probes=1) == [pytest.approx(10.0)]


def test_hutchinson_estimates_the_trace_of_a_dense_quadratic_per_tensor():
    torch.manual_seed(0)
    m = torch.randn(6, 6)
    h = m @ m.T + torch.eye(6)  # symmetric positive definite, trace known
    w = torch.randn(6, requires_grad=True)
    u = torch.randn(3, requires_grad=True)  # a second tensor with its own block: L = 1/2 w^T H w + 5 u.u, Tr = 10 * 3
    traces = sensitivity.hutchinson_trace(lambda: 0.5 * w @ h @ w + 5 * (u * u).sum(), [w, u], probes=400)
    assert traces[0] == pytest.approx(float(torch.trace(h)), rel=0.1)
    assert traces[1] == pytest.approx(30.0)


def brute_force(costs, damages, budget):
    best = None
    for choice in itertools.product(*[range(len(c)) for c in costs]):
        cost = sum(costs[i][j] for i, j in enumerate(choice))
        damage = sum(damages[i][j] for i, j in enumerate(choice))
        if cost <= budget and (best is None or damage < best[0] - 1e-12):
            best = (damage, choice)
    return best


def test_allocation_matches_brute_force_on_random_toys():
    rng = random.Random(0)
    for _ in range(30):
        layers = rng.randint(1, 4)
        costs = [[rng.randint(1, 12) for _ in range(3)] for _ in range(layers)]
        damages = [[rng.random() for _ in range(3)] for _ in range(layers)]
        budget = rng.randint(sum(min(c) for c in costs), sum(max(c) for c in costs))
        chosen = sensitivity.allocate_bits(costs, damages, budget)
        assert sum(costs[i][j] for i, j in enumerate(chosen)) <= budget
        assert sum(damages[i][j] for i, j in enumerate(chosen)) == pytest.approx(brute_force(costs, damages, budget)[0])


def test_allocation_with_granularity_never_exceeds_the_budget():
    # two layers, options 2/4/8 bits of 1,000 numbers: 250, 500, 1,000 bytes; damage falls with bits
    costs = [[250, 500, 1000], [250, 500, 1000]]
    damages = [[9.0, 3.0, 1.0], [4.0, 1.0, 0.5]]
    chosen = sensitivity.allocate_bits(costs, damages, budget=1000, granularity=64)
    assert sum(costs[i][j] for i, j in enumerate(chosen)) <= 1000
    # in 64-byte units: 250 -> 4, 500 -> 8, budget 1000 -> 15 units; 500 + 500 (damage 4) would fit exactly in bytes but
    # takes 16 units: coarse units are safe (never over budget) and can miss an exact fit. Best in units: 500 + 250.
    assert chosen == [1, 0]
    assert sensitivity.allocate_bits(costs, damages, budget=1000) == [1, 1]  # in single bytes the exact fit is found


def test_allocation_bad_input():
    with pytest.raises(ValueError, match="below the smallest possible total"):
        sensitivity.allocate_bits([[10, 20]], [[1.0, 0.5]], budget=5)
    with pytest.raises(ValueError, match="one non-empty row per layer"):
        sensitivity.allocate_bits([[10, 20]], [[1.0]], budget=50)
    with pytest.raises(ValueError, match="budget must be a non-negative integer"):
        sensitivity.allocate_bits([[10]], [[1.0]], budget=-1)
    with pytest.raises(ValueError, match="probes must be a positive integer"):
        sensitivity.hutchinson_trace(lambda: torch.zeros(()), [torch.zeros(1, requires_grad=True)], probes=0)
