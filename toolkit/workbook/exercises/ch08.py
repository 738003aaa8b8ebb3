"""Chapter 8 exercises: the cubic schedule; the sparsity of each iterative round; the proximal L1 step."""

from __future__ import annotations

import torch

from toolkit.workbook.exercises import Exercise, Quiz, register


def cubic_schedule(step: int, final: float, steps: int) -> float:
    """Zhu & Gupta's sparsity after ``step`` of ``steps`` pruning steps, from 0 to ``final``: s_f (1 - (1 - t/n)³)."""
    progress = min(step, steps) / steps
    return final * (1 - (1 - progress) ** 3)


def round_sparsities(final: float, rounds: int) -> list:
    """Sparsity after each of ``rounds`` rounds that each remove the same share of the weights still there."""
    return [1 - (1 - final) ** (r / rounds) for r in range(1, rounds + 1)]


def l1_prox_step(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """The proximal step of an L1 penalty (soft thresholding): sign(w) · max(|w| - threshold, 0), as a new tensor."""
    return weight.sign() * (weight.abs() - threshold).clamp(min=0)


register(
    Exercise(
        name="08.cubic_schedule",
        title="Exercise 8.1 (the cubic schedule)",
        reference=cubic_schedule,
        cases=(
            # halfway: 0.9 (1 - 0.5³) = 0.9 · 0.875 = 0.7875
            ((5, 0.9, 10), 0.7875),
            ((0, 0.9, 10), 0.0),
            # a tenth of the way already removes 0.8 (1 - 0.9³) = 0.8 · 0.271 = 0.2168: fast at first
            ((1, 0.8, 10), 0.2168),
            # after the last pruning step the sparsity stays at s_f
            ((25, 0.9, 10), 0.9),
        ),
        rel_tol=1e-9,
        hint=(
            'the sparsity rises from 0 to s_f like a cubic that is steep at first and flat at the end; after the last pruning step it stays at s_f.',
            's_t = s_f · (1 − (1 − t/n)³) with t capped at n.',
            'progress = min(step, steps) / steps; return final * (1 - (1 - progress) ** 3)',
        ),
    )
)

register(
    Exercise(
        name="08.round_sparsities",
        title="Exercise 8.2 (the sparsity each iterative round must reach)",
        reference=round_sparsities,
        cases=(
            # keep half each round: 1/2, 1/4, 1/8 remain
            ((0.875, 3), [0.5, 0.75, 0.875]),
            # two rounds to 99%: keep 10% of what is left each time
            ((0.99, 2), [0.9, 0.99]),
            ((0.9, 1), [0.9]),
        ),
        rel_tol=1e-9,
        hint=(
            'every round keeps the same fraction q of the weights that are still there, so after k rounds q^k of them remain, and that must be 1 − s_f.',
            'q = (1 − s_f)^(1/k); after round r the sparsity is 1 − q^r = 1 − (1 − s_f)^(r/k).',
            'return [1 - (1 - final) ** (r / rounds) for r in range(1, rounds + 1)]',
        ),
    )
)

register(
    Exercise(
        name="08.l1_prox_step",
        title="Exercise 8.3 (the proximal step of L1)",
        reference=l1_prox_step,
        cases=(
            # threshold 1: 3 → 2, -4 → -3, 0 stays 0, 0.5 → 0 (it would cross zero, so it stops there)
            ((torch.tensor([3.0, -4.0, 0.0, 0.5]), 1.0), torch.tensor([2.0, -3.0, 0.0, 0.0])),
            ((torch.tensor([[0.25, -0.25], [2.0, -0.75]]), 0.5), torch.tensor([[0.0, 0.0], [1.5, -0.25]])),
            ((torch.tensor([0.125, -8.0]), 0.0), torch.tensor([0.125, -8.0])),
        ),
        hint=(
            'an L1 penalty pulls every weight towards zero by the same amount, whatever its size; a weight smaller than that amount lands exactly on zero instead of crossing it.',
            'w ← sign(w) · max(|w| − t, 0).',
            'return weight.sign() * (weight.abs() - threshold).clamp(min=0)',
        ),
    )
)

register(
    Quiz(
        name='08.why_gradual',
        question='At the same number of training steps, what does gradual pruning give the model that one-shot pruning does not?',
        choices={
            'a': 'Late removals are chosen after the survivors adapted to the earlier ones',
            'b': 'More training steps at the final sparsity, which is where accuracy is recovered',
            'c': 'A different criterion: gradual pruning ranks weights by their gradients instead of their size',
            'd': 'Nothing: both end at the same sparsity, so they end at the same accuracy',
        },
        answer='a',
        explanations={
            'a': 'Right: the mask is decided step by step on a model that keeps learning. Whether that pays within a short budget is what section 2 measured; it is not guaranteed. In full: Weights removed late are chosen after the survivors have adapted to the earlier removals, and each removal is small enough for training to repair before the next.',
            'b': 'The opposite: one-shot trains every step at s_f; gradual reaches s_f only after its pruning phase.',
            'c': 'Both use |w| here; the schedule, not the criterion, is what differs. Movement pruning (section 3) changes the criterion.',
            'd': 'Which weights are removed, and when, decides what the survivors can learn; the chart compares the outcomes.',
        },
    )
)

register(
    Quiz(
        name='08.l1_zeros',
        question='After fine-tuning with an L2 penalty, hardly any weight is exactly zero; with L1 many are close to it. Why?',
        choices={
            'a': 'L2 is weaker than L1 at every strength λ',
            'b': "L2's gradient λw fades near zero; L1's pull λ·sign(w) does not",
            'c': 'AdamW undoes the L2 penalty but not the L1 penalty',
            'd': 'L1 penalises large weights more than L2 does',
        },
        answer='b',
        explanations={
            'a': "Strength is λ's job; at any λ the L2 pull vanishes near zero, which is the point.",
            'b': 'Right: the weight histograms show it, and the proximal step (Exercise 8.3) lands weights exactly on zero. In full: The gradient of λ/2·w² is λw: it fades as w approaches zero, so the pull stops before zero. The subgradient of λ|w| is λ·sign(w): the same pull at every size, so small weights are pushed all the way.',
            'c': 'The chapter applies both penalties as proximal steps after the AdamW step, so AdamW never rescales or undoes either; the difference is in the penalties themselves.',
            'd': 'The opposite: L2\'s pull λw is stronger than L1\'s λ for |w| > 1, so L2 punishes large weights more.',
        },
    )
)

register(
    Quiz(
        name='08.movement_sign',
        question='During fine-tuning a weight w = 0.2 keeps getting the gradient ∂L/∂w = +0.01. What does movement pruning think of it?',
        choices={
            'a': 'It is important: its gradient is large, so the loss depends on it',
            'b': 'Nothing yet: movement scores only count once the weight changes sign',
            'c': 'Training shrinks it, so its score falls and it is removed early',
            'd': 'It is moving away from zero, so its score rises and it is kept',
        },
        answer='c',
        explanations={
            'a': 'That is the gradient criterion of Chapter 6 (|∂L/∂w|); movement looks at the sign of w·∂L/∂w.',
            'b': 'The score accumulates from the first step; no sign change is needed.',
            'c': 'Right: training is shrinking it, so movement pruning removes it even though 0.2 is a large weight. Magnitude pruning would keep it. In full: It is moving towards zero (gradient descent subtracts a positive gradient from a positive weight), so its score -w·∂L/∂w = -0.002 per step falls and it is among the first removed.',
            'd': 'w > 0 and ∂L/∂w > 0 means the update w - η ∂L/∂w moves it towards zero, not away.',
        },
    )
)

register(
    Quiz(
        name="08.rounds_code",
        question="What does `[1 - (1 - 0.9375) ** (r / 4) for r in range(1, 5)]` evaluate to?",
        choices={
            "a": "[0.234, 0.469, 0.703, 0.9375]: the same sparsity added each round",
            "b": "[0.9375, 0.9375, 0.9375, 0.9375]: every round prunes to the target",
            "c": "[0.25, 0.5, 0.75, 1.0]",
            "d": "[0.5, 0.75, 0.875, 0.9375]: each round removes half of what is left",
        },
        answer="d",
        explanations={
            "a": "That is a linear schedule; this one keeps (1 - 0.9375)^(1/4) = 1/2 of the remaining weights per round.",
            "b": "That would be one-shot pruning repeated four times.",
            "c": "Sparsity 1.0 would remove every weight; the last round ends exactly at 0.9375.",
            "d": "Right: 0.0625 = (1/2)⁴, so each round keeps half: 50%, 75%, 87.5%, 93.75% sparse.",
        },
    )
)

register(
    Quiz(
        name='08.sparse_speed',
        question="The 90%-sparse model's linear layers run through torch.sparse (CSR) on this CPU. What does the chapter's A/B timing tell you to expect?",
        choices={
            'a': 'A 10x speed-up, since 90% of the multiply-adds are gone',
            'b': 'Whatever the A/B timing measures: far below 10x, possibly below 1',
            'c': 'No change, since the sparse and the dense kernel are the same code',
            'd': 'A slowdown on every CPU, since sparse kernels never beat dense ones',
        },
        answer='b',
        explanations={
            'a': 'Removed multiply-adds are not removed time: memory access and vectorisation decide CPU speed.',
            'b': "Right: Chapter 6 found the crossover for one matrix; section 6 times the whole model, and the verdict printed there comes from this run. In full: Whatever the measurement says: the sparse kernel skips the zeros but pays for indirect memory access and loses the dense kernel's blocking, so its speed-up is far below 10x and can be below 1.",
            'c': 'torch.sparse.mm is a different kernel with its own memory pattern.',
            'd': 'At high enough sparsity the sparse kernel can win; where depends on the CPU, shape and library.',
        },
    )
)
