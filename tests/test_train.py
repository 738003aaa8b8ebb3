"""The fast training loop: length buckets, cached teacher outputs, bf16 autocast where the CPU has it, re-warmed rates."""

import copy

import pytest
import torch

from toolkit import data, models, train
from toolkit.measure import Hardware
from toolkit.prune import gradual, schedule
from toolkit.train import FineTuneConfig, TeacherOutputs, autocast_dtype, distillation_loss, fine_tune_


# ----------------------------------------------------------------------------- length buckets
def test_length_buckets_use_every_index_once_and_cut_padding(tokenizer, splits):
    examples = splits.train[:300]
    lengths = [len(ids) for ids in tokenizer([e.text for e in examples])["input_ids"]]
    groups = data.length_bucketed_order(lengths, 32, seed=3)
    assert sorted(i for g in groups for i in g) == list(range(300))
    assert [len(g) for g in groups[:-1]] == [32] * 9 and len(groups[-1]) == 300 - 9 * 32  # only the last batch is short
    assert groups == data.length_bucketed_order(lengths, 32, seed=3), "deterministic for a seed"
    assert groups != data.length_bucketed_order(lengths, 32, seed=4)

    def padded_tokens(batches_):
        return sum(max(lengths[i] for i in g) * len(g) for g in batches_)

    plain = [list(range(300))[s : s + 32] for s in range(0, 300, 32)]
    assert padded_tokens(groups) < 0.8 * padded_tokens(plain), "buckets should remove most of the padding"
    # the batches the loop sees hold the same sentences as the index groups
    seen = [b["input_ids"].shape for b in data.batches(tokenizer, examples, 32, shuffle=True, seed=3, bucket_lengths=lengths)]
    assert [shape[0] for shape in seen] == [len(g) for g in groups]
    assert [shape[1] for shape in seen] == [max(lengths[i] for i in g) for g in groups]


def test_length_buckets_refuse_bad_input():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        data.length_bucketed_order([3, 4], 0)
    with pytest.raises(ValueError, match="pool must be a positive integer"):
        data.length_bucketed_order([3, 4], 2, pool=0)


# ----------------------------------------------------------------------------- teacher outputs
def test_cached_teacher_outputs_equal_a_fresh_forward_and_run_the_teacher_once_per_sentence(tokenizer, splits):
    teacher = models.sentiment_classifier(smoke=True, progress=False)
    before = copy.deepcopy(teacher.state_dict())
    teacher.train()  # the cache must still use eval mode (no dropout) and give the mode back
    cache = TeacherOutputs(teacher, signals=("logits", "hidden_states"))
    exact = TeacherOutputs(teacher, signals=("logits", "hidden_states"), hidden_dtype=torch.float32)
    lean = TeacherOutputs(teacher, signals=("logits", "hidden_states"), keep="logits")  # hidden states recomputed per batch
    first = data.encode(tokenizer, splits.train[:6])
    other = data.encode(tokenizer, splits.train[3:10])  # overlaps rows 3-5, padded to another length
    for batch in (first, other, first):
        logits, hidden = cache(batch)
        _, hidden_fp32 = exact(batch)
        lean_logits, hidden_lean = lean(batch)
        with torch.no_grad():
            fresh = copy.deepcopy(teacher).eval()(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True)
        torch.testing.assert_close(logits, fresh.logits, atol=1e-5, rtol=1e-4)
        mask = batch["attention_mask"].unsqueeze(-1).bool()  # padding positions are not compared (they are masked out)
        torch.testing.assert_close(lean_logits, fresh.logits, atol=1e-5, rtol=1e-4)
        for mine, mine_fp32, mine_lean, theirs in zip(hidden, hidden_fp32, hidden_lean, fresh.hidden_states):
            assert mine.dtype == torch.float32  # kept in float16, handed back in float32
            theirs = theirs.masked_fill(~mask, 0)
            torch.testing.assert_close(mine_fp32.masked_fill(~mask, 0), theirs, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(mine_lean.masked_fill(~mask, 0), theirs, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(mine.masked_fill(~mask, 0), theirs, atol=1e-4, rtol=2 ** -11)  # plus float16 rounding
    assert cache.forwards == 10 and len(cache) == 10, "each sentence went through the teacher once"
    assert lean.forwards == 6 + 7 + 6 and len(lean) == 10, "keep='logits': every row runs again for its hidden states"
    assert all(entry[1] is None for entry in lean._store.values()), "keep='logits' keeps no hidden state"
    stored = next(iter(cache._store.values()))[1]
    assert all(h.dtype == torch.float16 for h in stored), "hidden states are kept in float16: half the memory"
    assert teacher.training, "the teacher's mode is restored"
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items()), "the teacher is never changed"


def test_teacher_outputs_and_distillation_refuse_bad_input():
    teacher = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="signals must include 'logits' and be among logits, hidden_states"):
        TeacherOutputs(teacher, signals=("logits", "attention"))
    with pytest.raises(ValueError, match="signals"):
        TeacherOutputs(teacher, signals=("hidden_states",))
    with pytest.raises(ValueError, match="keep must be True, False or 'logits'; got 'hidden'"):
        TeacherOutputs(teacher, keep="hidden")
    with pytest.raises(ValueError, match="hidden_dtype must be one of"):
        TeacherOutputs(teacher, signals=("logits", "hidden_states"), hidden_dtype=torch.int8)
    with pytest.raises(ValueError, match="hidden_weight > 0 needs"):
        distillation_loss(TeacherOutputs(teacher), hidden_weight=1.0)


def test_teacher_outputs_refuse_hidden_states_that_overflow_float16():
    from types import SimpleNamespace

    class Loud(torch.nn.Module):  # a "teacher" whose last hidden state is beyond float16's 65,504
        def forward(self, input_ids, attention_mask, output_hidden_states=False):
            h = torch.ones(*input_ids.shape, 4)
            return SimpleNamespace(logits=torch.zeros(input_ids.shape[0], 2), hidden_states=(h, h * 1e5))

    batch = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    with pytest.raises(ValueError, match="overflows hidden_dtype=torch.float16; pass hidden_dtype=torch.bfloat16"):
        TeacherOutputs(Loud(), signals=("logits", "hidden_states"))(batch)
    _, hidden = TeacherOutputs(Loud(), signals=("logits", "hidden_states"), hidden_dtype=torch.bfloat16)(batch)
    torch.testing.assert_close(hidden[1], torch.full((1, 3, 4), 1e5), rtol=2 ** -8, atol=0)


def test_distillation_with_a_shared_cache_trains_like_the_uncached_teacher(tokenizer, splits):
    teacher = models.sentiment_classifier(smoke=True, progress=False)
    config = FineTuneConfig(epochs=2, batch_size=8, train_limit=32, learning_rate=1e-4)
    students = []
    for loss in (lambda: distillation_loss(teacher, ce_weight=0.0), lambda: distillation_loss(TeacherOutputs(teacher), ce_weight=0.0)):
        student = copy.deepcopy(teacher)
        with torch.no_grad():
            student.classifier.bias.add_(torch.tensor([1.0, -1.0]))
        fine_tune_(student, tokenizer, splits.train, config, progress=False, loss_fn=loss())
        students.append(student)
    for a, b in zip(students[0].parameters(), students[1].parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- bf16 autocast
def _machine(features):
    return Hardware("test CPU", 2, 2, tuple(features), "AVX512", torch.__version__, "none (CPU only)")


@pytest.mark.parametrize("features, expected", [
    ((), None), (("avx2", "avx512f"), None), (("avx512_bf16",), torch.bfloat16), (("amx_bf16", "amx_int8"), torch.bfloat16),
])
def test_auto_precision_trains_in_bf16_only_where_the_cpu_has_bf16_hardware(monkeypatch, features, expected):
    monkeypatch.setattr(train, "hardware", lambda: _machine(features))
    assert autocast_dtype("auto", "cpu") is expected
    assert autocast_dtype("fp32") is None and autocast_dtype("bf16") is torch.bfloat16  # explicit choices are kept
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto"):
        autocast_dtype("fp16")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto"):
        FineTuneConfig(precision="half")


def test_bf16_training_runs_matrix_products_in_bf16_and_keeps_fp32_weights(tokenizer, splits):
    model = models.sentiment_classifier(smoke=True, progress=False)
    seen = []
    hook = model.classifier.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    logs = fine_tune_(model, tokenizer, splits.train, FineTuneConfig(epochs=1, batch_size=8, train_limit=16, precision="bf16",
                                                                      length_buckets=True), progress=False)
    hook.remove()
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert logs[0].steps == 2 and logs[0].steps_per_second > 0


# ----------------------------------------------------------------------------- schedules
def test_gradual_sparsity_is_constant_inside_each_pruning_window():
    # t0 = 8, Δt = 5, n = 4 (n Δt = 20 = 0.5 T), first cut s_i = 0.5 at t0, hold from 28 to 40
    plan = gradual.PruningSchedule("gradual", 0.9, 40, start_fraction=0.2, pruning_fraction=0.5, frequency=5, initial=0.5)
    values = [plan.at(t) for t in range(41)]
    assert values[:8] == [0.0] * 8, "dense before t0"
    assert plan.cuts() == [8, 13, 18, 23, 28]
    for cut, following in zip(plan.cuts(), plan.cuts()[1:] + [41]):
        assert len(set(values[cut:following])) == 1, f"sparsity changed inside the window {cut}..{following - 1}"
    # k = 0..4: s = 0.9 + (0.5 - 0.9)(1 - k/4)^3
    assert [values[c] for c in plan.cuts()] == pytest.approx([0.9 - 0.4 * (1 - k / 4) ** 3 for k in range(5)])
    assert values[-1] == pytest.approx(0.9)
    # the bare function: Zhu & Gupta's Δt = 3, n = 4 from t0 = 0 holds each value for 3 steps
    assert [schedule.cubic_sparsity(t, 0.8, steps=4, frequency=3) for t in range(7)] == pytest.approx([0, 0, 0, 0.4625, 0.4625, 0.4625, 0.7])


def test_learning_rate_is_re_warmed_after_every_cut_and_decays_to_the_floor():
    plan = gradual.PruningSchedule("gradual", 0.9, 40, start_fraction=0.2, pruning_fraction=0.5, frequency=5, initial=0.5)
    factors = [plan.lr_factor(t) for t in range(41)]
    assert [factors[c] for c in [0] + plan.cuts()] == [1.0] * 6, "peak at the start and after every cut"
    assert factors[7] == pytest.approx(1 - 0.9 * 7 / 8) and factors[12] == pytest.approx(1 - 0.9 * 4 / 5)
    assert factors[40] == pytest.approx(0.1) and factors[39] > factors[40], "the hold phase decays to the floor"
    assert [gradual.PruningSchedule("one-shot", 0.5, 4).lr_factor(t) for t in range(5)] == pytest.approx([1, 0.775, 0.55, 0.325, 0.1])
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        plan.lr_factor(-1)
    with pytest.raises(ValueError, match="floor must be in"):
        plan.lr_factor(3, floor=2.0)


def test_fine_tune_follows_an_lr_factor(tokenizer, splits, monkeypatch):
    model = models.sentiment_classifier(smoke=True, progress=False)
    used = []
    original = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    factors = [1.0, 0.5, 1.0, 0.25, 0.1]  # the scheduler also asks for the factor after the last step
    fine_tune_(model, tokenizer, splits.train, FineTuneConfig(epochs=1, batch_size=8, train_limit=32, learning_rate=1e-3),
               progress=False, lr_factor=lambda t: factors[t])
    assert used == pytest.approx([1e-3, 5e-4, 1e-3, 2.5e-4])


def test_pruning_schedules_refuse_bad_input():
    with pytest.raises(ValueError, match=r"initial: sparsity must be a number in \[0, 1\)"):
        gradual.PruningSchedule("gradual", 0.9, 10, initial=1.2)
    with pytest.raises(ValueError, match="initial must not exceed final"):
        gradual.PruningSchedule("gradual", 0.5, 10, initial=0.7)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        gradual.PruningSchedule("gradual", 0.5, -4)


# ----------------------------------------------------------------------------- learned movement scores
def test_movement_scores_get_the_straight_through_gradient_and_let_a_pruned_weight_return():
    from toolkit.prune import movement

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.4, 0.3, -0.2], [0.1, -0.6, 0.05, 0.7]]))
    masks = movement.attach_scores_(layer_holder := torch.nn.Sequential(layer), ["0"])
    movement.set_sparsity_(masks, 0.5)
    first = movement.current_masks(masks)["0"]
    assert int(first.sum()) == 4 and first[1, 2] == 0, "equal scores: ties broken by |W|, so 0.05 is out"
    # ∂L/∂S = ∂L/∂W' ⊙ W with W' = W ⊙ M: a loss that pulls W'[1, 2] = 0.05 away from zero (positive direction)
    x = torch.eye(4)
    target = torch.zeros(4, 2)
    target[2, 1] = 5.0
    scores = masks["0"].scores
    loss = ((layer_holder(x) - target) ** 2).sum()
    loss.backward()
    w = layer.parametrizations.weight.original.detach()
    effective_grad = 2 * (x @ (w * first).T - target).T @ x  # ∂L/∂W' (out, in)
    torch.testing.assert_close(scores.grad, effective_grad * w)
    assert layer.parametrizations.weight.original.grad[1, 2] == 0, "a pruned weight gets no gradient while masked"
    optimizer = torch.optim.SGD([scores], lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        ((layer_holder(x) - target) ** 2).sum().backward()
        optimizer.step()
    assert movement.current_masks(masks)["0"][1, 2] == 1, "the pruned weight came back"
    assert int(movement.current_masks(masks)["0"].sum()) == 4, "the sparsity stays at the target"
    movement.remove_scores_(layer_holder, ["0"])
    assert not hasattr(layer, "parametrizations") and int((layer.weight == 0).sum()) == 4
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        movement.set_sparsity_(movement.attach_scores_(torch.nn.Sequential(torch.nn.Linear(2, 2)), ["0"]), 1.5)


def test_learning_rates_make_parameter_groups_and_refuse_unknown_names():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    groups = train.parameter_groups(model, 1e-4, {"bias": 1e-2})
    assert [g["lr"] for g in groups] == [1e-4, 1e-2] and len(groups[1]["params"]) == 2 and len(groups[0]["params"]) == 2
    with pytest.raises(ValueError, match="learning_rates names parameters the model does not train: \\['scores'\\]"):
        train.parameter_groups(model, 1e-4, {"scores": 1e-2})
    with pytest.raises(ValueError, match="must be a positive number"):
        train.parameter_groups(model, 1e-4, {"bias": 0})


def test_movement_pruning_during_training_reaches_the_target_and_leaves_plain_weights(tokenizer, splits):
    classifier = models.sentiment_classifier(smoke=True, progress=False)
    names = ["bert.encoder.layer.0.intermediate.dense", "bert.encoder.layer.1.attention.self.query"]
    model = copy.deepcopy(classifier)
    plan = gradual.PruningSchedule("gradual", 0.75, 4, pruning_fraction=0.5, frequency=1)
    log = train.prune_during_training_(model, tokenizer, splits.train, plan, FineTuneConfig(epochs=1, batch_size=16, train_limit=64),
                                         names=names, criterion="movement", progress=False)
    assert log.steps == [0, 1, 2] and log.sparsity[-1] == pytest.approx(0.75, abs=1e-3)
    for n in names:
        weight = model.get_submodule(n).weight
        assert isinstance(weight, torch.nn.Parameter) and not hasattr(model.get_submodule(n), "parametrizations")
        assert float((weight == 0).float().mean()) == pytest.approx(0.75, abs=1e-3)
        assert log.masks[n].dtype == torch.bool and torch.equal(weight == 0, ~log.masks[n])  # bool: kept
    assert not any("scores" in name for name, _ in model.named_parameters())
    with pytest.raises(ValueError, match="movement pruning keeps the top scores of each layer: it needs scope='local'"):
        train.prune_during_training_(copy.deepcopy(classifier), tokenizer, splits.train, plan,
                                       FineTuneConfig(epochs=1, batch_size=16, train_limit=64), names=names, criterion="movement",
                                       scope="global", progress=False)


def test_step_caller_takes_the_loops_steps_and_teacher_label_runs_each_sentence_once(tokenizer, splits):
    teacher = models.sentiment_classifier(smoke=True, progress=False)
    outputs = TeacherOutputs(teacher)
    assert outputs.label(tokenizer, splits.train[:40]) == 40 and outputs.label(tokenizer, splits.train[:50]) == 10
    student = copy.deepcopy(teacher)
    before = student.classifier.weight.detach().clone()
    call = train.step_caller(student, tokenizer, splits.train[:40], FineTuneConfig(batch_size=16, length_buckets=True, precision="bf16"),
                             loss_fn=distillation_loss(outputs, ce_weight=0.0), steps_per_call=2)
    for _ in range(3):  # 6 steps: more than one pass over 3 batches
        call()
    assert not torch.equal(before, student.classifier.weight) and outputs.forwards == 50, "no teacher forward for known sentences"
    with pytest.raises(ValueError, match="steps_per_call must be a positive integer"):
        train.step_caller(student, tokenizer, splits.train[:40], FineTuneConfig(), steps_per_call=0)
