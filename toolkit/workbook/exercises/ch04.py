"""Chapter 4 exercises: the STE backward, the LSQ scale gradient, a QAT layer as integer codes."""

from __future__ import annotations

import torch

from toolkit.workbook.exercises import Exercise, Quiz, register


def ste_backward(grad_output: torch.Tensor, x: torch.Tensor, scale: float, qmin: int, qmax: int) -> torch.Tensor:
    """Straight-through gradient of fake quantization: pass dL/dx_hat where round(x / s) is in [qmin, qmax], else 0."""
    q = torch.round(x / scale)
    return grad_output * ((q >= qmin) & (q <= qmax))


def lsq_scale_gradient(x: torch.Tensor, scale: float, qmin: int, qmax: int) -> torch.Tensor:
    """d x_hat / d s for x_hat = round(clamp(x / s, qmin, qmax)) * s, per element (before LSQ's gradient scaling)."""
    v = x / scale
    inside = torch.round(v) - v
    return torch.where(v < qmin, torch.full_like(v, qmin), torch.where(v > qmax, torch.full_like(v, qmax), inside))


def integer_codes(weight: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Codes of a symmetric per-channel weight (out, in) with one scale per row (out,): clamp(round(W / s), qmin, qmax) as int8.

    W / s is computed as W * (1 / s), as PyTorch's kernels and the toolkit do: at a row's
    extreme, W / s can land exactly on a tie (x.5) that the two formulas round differently.
    """
    return torch.clamp(torch.round(weight * (1.0 / scale.reshape(-1, 1))), qmin, qmax).to(torch.int8)



register(
    Exercise(
        name="04.ste_backward",
        title="Exercise 4.1 (the straight-through backward pass)",
        reference=ste_backward,
        cases=(
            # x / 0.25 rounds to -12, -3, 0, 1, 4, 20: only -3, 0 and 1 lie in [-4, 3], so only they pass the gradient
            ((torch.ones(6), torch.tensor([-3.0, -0.74, 0.0, 0.26, 0.9, 5.0]), 0.25, -4, 3), torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0, 0.0])),
            # x / 0.5 rounds to 2 (clipped to 1: blocked), -1 and 0 (inside): the incoming gradient passes unchanged there
            ((torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.1, -0.4, 0.2]), 0.5, -2, 1), torch.tensor([0.0, -1.0, 0.5])),
        ),
        hint=(
            'the straight-through estimator pretends rounding is the identity, but clipping is real: where the code was clipped, the output does not move with x.',
            '∂L/∂x = ∂L/∂x̂ · 1[qmin ≤ round(x/s) ≤ qmax].',
            'q = torch.round(x / scale); return grad_output * ((q >= qmin) & (q <= qmax))',
        ),
        rel_tol=1e-6,
    )
)

register(
    Exercise(
        name="04.lsq_scale_gradient",
        title="Exercise 4.2 (the gradient that makes the scale learnable)",
        reference=lsq_scale_gradient,
        cases=(
            ((torch.tensor([0.3, -0.55, 2.0, -5.0]), 0.5, -4, 3), torch.tensor([0.4, 0.1, 3.0, -4.0])),
            # v = 0.7 inside: round(v) - v = 1 - 0.7 = 0.3; v = -2.4 < qmin: -2; v = 6 > qmax: 1
            ((torch.tensor([0.35, -1.2, 3.0]), 0.5, -2, 1), torch.tensor([0.3, -2.0, 1.0])),
        ),
        hint=(
            'x̂ = round(x/s)·s depends on s in two ways, through the multiplication and through x/s; the rounding itself counts as a constant.',
            'with v = x/s: ∂x̂/∂s = round(v) − v inside [qmin, qmax], qmin where v < qmin, qmax where v > qmax.',
            'v = x / scale; inside = torch.round(v) - v; return torch.where(v < qmin, torch.full_like(v, qmin), torch.where(v > qmax, torch.full_like(v, qmax), inside))',
        ),
        rel_tol=1e-5,
    )
)

register(
    Exercise(
        name="04.integer_codes",
        title="Exercise 4.3 (from a fake-quantized layer to integer codes)",
        reference=integer_codes,
        cases=(
            # row scales 0.25 and 0.5: 0.5 / 0.25 = 2, -1 / 0.25 = -4, 0.26 / 0.25 = 1.04 -> 1; 4, 0.2 -> 0, -6
            ((torch.tensor([[0.5, -1.0, 0.26], [2.0, 0.1, -3.0]]), torch.tensor([0.25, 0.5]), -8, 7),
             torch.tensor([[2, -4, 1], [4, 0, -6]], dtype=torch.int8)),
            # scales 0.75 and 1.5, codes in [-2, 1]: 0.67 -> 1, -1.33 -> -1, 0.35 -> 0; 1.33 -> 1, 0.07 -> 0, -2
            ((torch.tensor([[0.5, -1.0, 0.26], [2.0, 0.1, -3.0]]), torch.tensor([0.75, 1.5]), -2, 1),
             torch.tensor([[1, -1, 0], [1, 0, -2]], dtype=torch.int8)),
        ),
        hint=(
            'each row has its own scale; divide the row by it, round, clip, and store the result as int8.',
            "q_ij = clamp(round(W_ij · (1 / s_i)), qmin, qmax); multiply by the reciprocal as PyTorch's kernels do, or a tie can round the other way.",
            'return torch.clamp(torch.round(weight * (1.0 / scale.reshape(-1, 1))), qmin, qmax).to(torch.int8)',
        ),
    )
)

register(
    Quiz(
        name="04.ste_why",
        question="Why does QAT need the straight-through estimator at all?",
        choices={
            "a": "Because rounding is slow to compute on a CPU.",
            "b": "Because the derivative of round() is zero almost everywhere: without a surrogate, no gradient reaches "
            "the weights through a fake-quantized layer.",
            "c": "Because integer weights cannot be stored in a float tensor.",
        },
        answer="b",
        explanations={
            "a": "Rounding is cheap. The problem is its derivative, not its cost.",
            "b": "round() is a staircase: flat steps (derivative 0) and jumps (undefined). The STE treats it as the "
            "identity inside the clipping range, so the float master weights still learn.",
            "c": "Fake quantization keeps floats on purpose: the values lie on the integer grid, the storage stays float.",
        },
    )
)

register(
    Quiz(
        name='04.forward',
        question='In quantization-aware training, what does the forward pass compute with?',
        choices={
            'a': 'int8 tensors and integer kernels, so that training sees exactly the arithmetic of the deployed model',
            'b': 'The float weights, unchanged; the rounding is applied only once, when the model is exported at the end',
            'c': 'The float weights plus random noise of half a quantization step, which is cheaper than rounding',
            'd': 'Weights rounded to the grid and mapped back to float, with float copies kept for the updates',
        },
        answer='d',
        explanations={
            'a': 'Training runs in float; integer kernels come only at deployment.',
            'b': 'Then the model would never learn to tolerate the rounding; that is post-training quantization.',
            'c': 'Noise injection is a related idea, but QAT uses the real rounding it will meet.',
            'd': 'Right: that is fake quantization; the loss sees the rounding error, and the straight-through estimator lets gradients reach the float weights.',
        },
    )
)

register(
    Quiz(
        name='04.lsq',
        question='What does LSQ learn that QAT with fixed min-max scales does not?',
        choices={
            'a': 'The step size of each quantizer, trained with the weights',
            'b': 'The number of bits of each layer',
            'c': 'Which weights to prune',
            'd': 'The zero-point of each activation, from calibration data',
        },
        answer='a',
        explanations={
            'a': 'Right: Exercise 4.2 derives the gradient that makes the scale learnable.',
            'b': 'Bit widths are fixed in QAT; chapter 5 chooses them per layer.',
            'c': 'Pruning is chapters 6-8.',
            'd': 'Zero-points from calibration are static quantization (chapter 3), not learned.',
        },
    )
)

register(
    Quiz(
        name='04.clipped',
        question='With scale 0.25 and codes in [-4, 3], which entries of x = (-3.0, -0.5, 0.6, 2.0) get a zero gradient through RoundClipSTE?',
        choices={
            'a': 'Only -3.0',
            'b': '-3.0 and 2.0',
            'c': 'None of them',
            'd': 'All four',
        },
        answer='b',
        explanations={
            'a': '2.0 / 0.25 = 8 is clipped at 3 too.',
            'b': 'Right: x / 0.25 rounds to -12, -2, 2 and 8; -12 and 8 fall outside [-4, 3], so those outputs do not move with x.',
            'c': 'The estimator passes the gradient through the rounding, not through the clipping.',
            'd': '-0.5 and 0.6 round to -2 and 2, inside the range: their gradient passes.',
        },
    )
)

register(
    Quiz(
        name='04.worth_it',
        question='When is QAT worth its training cost over post-training quantization?',
        choices={
            'a': 'Always: QAT is strictly better at every bit width',
            'b': 'Never on a CPU, since CPUs run only 8-bit kernels',
            'c': 'At 2 bits here, where PTQ loses many points',
            'd': 'Only for models without LayerNorm',
        },
        answer='c',
        explanations={
            'a': 'At 8 and 4 bits PTQ is already within about a point of fp32 on this model, so a training run buys little there.',
            'b': "The bit width on disk and the CPU kernel are separate choices; QAT's gain is in accuracy.",
            'c': "Right: W2 per-channel PTQ loses tens of points and one epoch of QAT wins most of them back, while the chapter's checked claim says W8A8 and W4A8 PTQ stay within 1.5 points of fp32, leaving QAT little to win. The line moves with the model: larger models and outlier-heavy layers can need QAT at 4 bits.",
            'd': 'LayerNorm has nothing to do with whether QAT pays.',
        },
    )
)


register(
    Quiz(
        name='04.which_plot',
        question='A line chart shows validation accuracy against training steps: a steep rise over the first quarter of the steps, then a slow climb. Which run is it, and what does its shape say?',
        choices={
            'a': 'The fp32 fine-tune of Chapter 1: accuracy always rises fastest at the start of any training',
            'b': 'The learning-rate sweep of section 4: each point is a run with a different learning rate',
            'c': 'The W2 per-channel QAT run: most of what QAT recovers comes early',
            'd': 'The W4A8 run with observers frozen halfway: the slow climb begins where the activation ranges stop moving',
        },
        answer='c',
        explanations={
            'a': "Chapter 1's fine-tune is not tracked step by step; this chapter tracks the W2 QAT run (section 8).",
            'b': "The sweep's x-axis would be the learning rate, and each run reports one validation accuracy at its end.",
            'c': 'Right: section 8 tracks the W2 per-channel run four times an epoch; a curve of this shape says that most of the recovery comes early and the last points come slowly.',
            'd': 'The frozen-observer runs report one accuracy each, and the W2 runs quantize no activations.',
        },
    )
)
