"""Pruning schedules, movement scores and sparsity-inducing penalties (toolkit.prune.schedule, toolkit.prune.regularize)."""

import copy

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


# --- toolkit.prune.gradual: one training loop for three schedules -------------------------------------------------

from toolkit import models  # noqa: E402
from toolkit.train import prune_during_training_  # noqa: E402
from toolkit.prune import gradual, speed  # noqa: E402


@pytest.mark.parametrize("method", gradual.METHODS)
def test_every_schedule_ends_exactly_at_its_target_and_never_goes_back(method):
    schedule = gradual.PruningSchedule(method, 0.9, 40, rounds=4, start_fraction=0.25, pruning_fraction=0.5, frequency=2)
    values = [schedule.at(t) for t in range(41)]
    assert values == sorted(values), "sparsity never decreases"
    assert values[-1] == pytest.approx(0.9, abs=1e-12)
    if method == "one-shot":
        assert set(values) == {0.9}
    if method == "iterative":
        # 4 rounds starting at steps 0, 10, 20, 30: 1 - 0.1^(r/4)
        assert [schedule.at(t) for t in (0, 9, 10, 30)] == pytest.approx([1 - 0.1**0.25, 1 - 0.1**0.25, 1 - 0.1**0.5, 0.9])
    if method == "gradual":
        # t0 = 10, n Δt = 20 (10 pruning steps of 2): s_i = 0 until t0, s_f from t0 + 20 on, halfway 0.9 (1 - 1/8)
        assert values[10] == 0.0 and values[30] == pytest.approx(0.9) and values[20] == pytest.approx(0.7875)


def test_schedules_refuse_bad_input():
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        gradual.PruningSchedule("gradual", 1.0, 10)
    with pytest.raises(ValueError, match="rounds must be a positive integer"):
        gradual.PruningSchedule("iterative", 0.5, 10, rounds=0)
    with pytest.raises(ValueError, match="method must be one of one-shot, iterative, gradual"):
        gradual.PruningSchedule("cyclic", 0.5, 10)
    with pytest.raises(ValueError, match="start_fraction must be in"):
        gradual.PruningSchedule("gradual", 0.5, 10, start_fraction=0.6, pruning_fraction=0.5)
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        gradual.PruningSchedule("gradual", 0.5, 10).at(-1)


def test_penalty_gradients_on_small_tensors():
    w = torch.tensor([[3.0, -4.0], [0.0, 0.5]], requires_grad=True)
    regularize.l1_penalty([w]).backward()
    assert w.grad.tolist() == [[1.0, -1.0], [0.0, 1.0]], "sign(w); torch's subgradient at 0 is 0"
    w.grad = None
    regularize.group_lasso_penalty(w, dim=1).backward()
    # row (3, -4) has norm 5: gradient (0.6, -0.8); row (0, 0.5) norm 0.5: (0, 1)
    assert torch.allclose(w.grad, torch.tensor([[0.6, -0.8], [0.0, 1.0]]))
    w.grad = None
    regularize.l2_penalty([w]).backward()
    assert w.grad.tolist() == [[6.0, -8.0], [0.0, 1.0]]


def test_near_zero_share_counts_weights_within_the_tolerance():
    assert regularize.near_zero_share([torch.tensor([0.0, 0.0005, -0.002, 1.0])], 1e-3) == 0.5


def test_movement_scores_attach_accumulates_after_each_backward():
    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
    model = torch.nn.Sequential(layer)
    scores = schedule.MovementScores(model, ["0"]).attach()
    for _ in range(2):
        (layer.weight * torch.tensor([[1.0, -1.0]])).sum().backward()
        layer.weight.grad = None
    assert scores.scores["0"].tolist() == [[-2.0, 4.0]], "-w·g twice: -(1·1) · 2 and -(2·-1) · 2"
    scores.detach()
    (layer.weight.sum()).backward()
    assert scores.scores["0"].tolist() == [[-2.0, 4.0]], "detached: no more updates"


def test_allocate_sparsity_keeps_the_overall_target_and_spares_sensitive_layers():
    damage = {"a": 0.1, "b": 0.5, "c": 0.01}
    sizes = {"a": 100, "b": 100, "c": 200}
    plan = gradual.allocate_sparsity(damage, sizes, 0.8, spread=0.1)
    assert sum(sizes[n] * plan[n] for n in plan) / 400 == pytest.approx(0.8, abs=1e-9)
    assert plan["b"] < plan["a"] < plan["c"], "the most sensitive layer is pruned least"
    assert gradual.allocate_sparsity(damage, sizes, 0.8, spread=0.0) == pytest.approx({"a": 0.8, "b": 0.8, "c": 0.8})
    with pytest.raises(ValueError, match="same, non-empty set of layers"):
        gradual.allocate_sparsity(damage, {"a": 1}, 0.5)


def test_pruning_during_training_reaches_each_target_exactly(tokenizer, splits):
    from toolkit.train import FineTuneConfig

    classifier = models.sentiment_classifier(smoke=True, progress=False)
    config = FineTuneConfig(epochs=1, learning_rate=1e-3, train_limit=64)  # 2 steps of 32
    names = ["bert.encoder.layer.0.intermediate.dense", "bert.encoder.layer.1.attention.self.query"]
    before = classifier.get_submodule(names[0]).weight.clone()
    for method in gradual.METHODS:
        model = copy.deepcopy(classifier)
        schedule = gradual.PruningSchedule(method, 0.75, 2, rounds=2, pruning_fraction=0.5, frequency=1)
        log = prune_during_training_(model, tokenizer, splits.train, schedule, config, names=names, progress=False)
        for n in names:
            weight = model.get_submodule(n).weight
            assert isinstance(weight, torch.nn.Parameter) and not hasattr(model.get_submodule(n), "weight_orig")
            assert float((weight == 0).float().mean()) == pytest.approx(0.75, abs=1e-3), f"{method} {n}"
            assert log.masks[n].dtype == torch.bool and torch.equal(weight != 0, log.masks[n]), "the log keeps the final mask, True where kept"
        assert log.sparsity[-1] == pytest.approx(0.75, abs=1e-3) and all(p.requires_grad for p in model.parameters())
    assert torch.equal(classifier.get_submodule(names[0]).weight, before), "the copy was pruned, not the original"
    bad = gradual.PruningSchedule("gradual", 0.5, 3)
    with pytest.raises(ValueError, match="the schedule has 3 steps but the training runs 2"):
        prune_during_training_(copy.deepcopy(classifier), tokenizer, splits.train, bad, config, names=names, progress=False)
    ok = gradual.PruningSchedule("gradual", 0.5, 2)
    with pytest.raises(ValueError, match="not nn.Linear layers of the model"):
        prune_during_training_(copy.deepcopy(classifier), tokenizer, splits.train, ok, config, names=["bert.nope"], progress=False)
    with pytest.raises(ValueError, match="layer_sparsity must name exactly the pruned layers"):
        prune_during_training_(copy.deepcopy(classifier), tokenizer, splits.train, ok, config, names=names,
                                       layer_sparsity={names[0]: 0.5}, progress=False)
    untouched = copy.deepcopy(classifier)
    with pytest.raises(ValueError, match="criterion must be one of magnitude, movement"):
        prune_during_training_(untouched, tokenizer, splits.train, gradual.PruningSchedule("one-shot", 0.5, 2),
                                       config, names=names, criterion="taylor", progress=False)
    assert not hasattr(untouched.get_submodule(names[0]), "weight_orig"), "refused before any mask was attached"


def test_sparse_linear_computes_what_the_dense_layer_computes():
    layer = torch.nn.Linear(8, 4)
    with torch.no_grad():
        layer.weight.mul_((torch.rand(4, 8, generator=torch.Generator().manual_seed(0)) > 0.7).float())
    model = torch.nn.Sequential(layer)
    sparse = speed.with_sparse_linears(model, ["0"])
    x = torch.randn(3, 5, 8)  # (batch, seq, in)
    assert torch.allclose(sparse(x), model(x), atol=1e-6) and isinstance(model[0], torch.nn.Linear)
    with pytest.raises(ValueError, match="must be nn.Linear layers"):
        speed.with_sparse_linears(model, ["1"])


def test_proximal_penalties_use_the_learning_rate_of_each_step():
    w = torch.tensor([[0.3, -0.05], [3.0, 4.0]])
    regularize.ProximalPenalty({"w": w}, "l1", 0.2).step_(2, 0.5)  # threshold η λ = 0.1
    assert torch.allclose(w, torch.tensor([[0.2, 0.0], [2.9, 3.9]]))
    v = torch.tensor([[0.3, 0.4], [3.0, 4.0]])
    regularize.ProximalPenalty({"v": v}, "group lasso", 1.0).step_(2, 0.5)  # threshold 0.5: row norms 0.5 and 5
    assert torch.allclose(v, torch.tensor([[0.0, 0.0], [2.7, 3.6]]))
    u = torch.tensor([2.0, -4.0]).reshape(1, 2)
    regularize.ProximalPenalty({"u": u}, "l2", 0.2).step_(2, 0.5)  # w (1 - 0.1)
    assert torch.allclose(u, torch.tensor([[1.8, -3.6]]))
    with pytest.raises(ValueError, match="strength must be a non-negative number"):
        regularize.ProximalPenalty({"u": u}, "l1", -1)
    with pytest.raises(ValueError, match="threshold must be non-negative"):
        regularize.group_soft_threshold_([u], -0.1)
