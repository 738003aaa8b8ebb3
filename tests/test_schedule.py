"""Pruning schedules, movement scores and sparsity-inducing penalties (toolkit.prune.schedule, toolkit.prune.regularize)."""

import pytest
import torch

from toolkit.prune import regularize, schedule


def test_cubic_schedule_hand_values():
    # s_f = 0.9, s_i = 0, 10 steps of 1 from t0 = 0: at t = 5, 0.9 + (0 - 0.9)(1 - 0.5)^3 = 0.9 - 0.1125 = 0.7875
    assert schedule.cubic_sparsity(5, 0.9, steps=10) == pytest.approx(0.7875)
    assert schedule.cubic_sparsity(0, 0.9, steps=10) == 0.0 and schedule.cubic_sparsity(10, 0.9, steps=10) == pytest.approx(0.9)
    assert schedule.cubic_sparsity(99, 0.9, steps=10) == pytest.approx(0.9)
    assert schedule.cubic_sparsity(3, 0.8, initial=0.2, start=5, steps=4, frequency=5) == 0.2  # before t0
    values = [schedule.cubic_sparsity(t, 0.9, steps=20) for t in range(21)]
    assert values == sorted(values) and values[1] - values[0] > values[20] - values[19], "fast first, slow last"
    with pytest.raises(ValueError, match="must not exceed final"):
        schedule.cubic_sparsity(1, 0.5, initial=0.6)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        schedule.cubic_sparsity(1, 0.5, steps=0)


def test_iterative_rounds_remove_the_same_share_of_what_remains():
    # 3 rounds to 0.875 sparsity: keep 1/2 each round -> 0.5, 0.75, 0.875
    assert schedule.iterative_sparsities(0.875, 3) == pytest.approx([0.5, 0.75, 0.875])
    with pytest.raises(ValueError, match="rounds must be a positive integer"):
        schedule.iterative_sparsities(0.5, 0)


def test_movement_scores_reward_weights_that_grow_and_punish_weights_that_shrink():
    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0]]))
    model = torch.nn.Sequential(layer)
    scores = schedule.MovementScores(model, ["0"])
    loss = (layer.weight * torch.tensor([[1.0, -1.0]])).sum()  # dL/dw = (1, -1): descent shrinks w_0 and grows w_1
    loss.backward()
    scores.update()
    assert scores.scores["0"].tolist() == [[-1.0, 1.0]] and scores.updates == 1
    with pytest.raises(ValueError, match="modules with a weight"):
        schedule.MovementScores(model, ["nope"])


def test_penalties_and_the_proximal_step():
    w = torch.tensor([[3.0, -4.0], [0.0, 0.5]])
    assert float(regularize.l1_penalty([w])) == 7.5 and float(regularize.l2_penalty([w])) == 25.25
    assert float(regularize.group_lasso_penalty(w, dim=1)) == pytest.approx(5.5)  # row norms 5 and 0.5
    zeros = regularize.soft_threshold_([w], 1.0)
    assert w.tolist() == [[2.0, -3.0], [0.0, 0.0]] and zeros == 2
    with pytest.raises(ValueError, match="threshold must be non-negative"):
        regularize.soft_threshold_([w], -1.0)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        regularize.group_lasso_penalty(torch.zeros(3))
