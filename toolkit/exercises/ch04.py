"""Chapter 4 exercises: the STE backward, the LSQ scale gradient, a QAT layer as integer codes."""

from __future__ import annotations

import torch

from toolkit.exercises import Exercise, Quiz, register


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


_g = torch.Generator().manual_seed(4)
_X = torch.tensor([-3.0, -0.74, 0.0, 0.26, 0.9, 5.0])
_X2 = torch.randn(20, generator=_g) * 2
_GRAD = torch.randn(20, generator=_g)
_W = torch.randn(4, 6, generator=_g)
_S = _W.abs().amax(dim=1) / 7

register(
    Exercise(
        name="04.ste_backward",
        title="Exercise 4.1 (the straight-through backward pass)",
        reference=ste_backward,
        cases=(
            ((torch.ones(6), _X, 0.25, -4, 3), ste_backward(torch.ones(6), _X, 0.25, -4, 3)),
            ((_GRAD, _X2, 0.5, -2, 1), ste_backward(_GRAD, _X2, 0.5, -2, 1)),
        ),
        hint="Compute q = torch.round(x / scale); the gradient passes where qmin <= q <= qmax and is 0 elsewhere: "
        "grad_output * ((q >= qmin) & (q <= qmax)).",
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
            ((_X2, 0.5, -2, 1), lsq_scale_gradient(_X2, 0.5, -2, 1)),
        ),
        hint="With v = x / scale: inside [qmin, qmax] the derivative of round(v) * s with respect to s is round(v) - v "
        "(round counts as a constant times s, minus the v that s divides); where v < qmin it is qmin, where v > qmax it is qmax.",
        rel_tol=1e-5,
    )
)

register(
    Exercise(
        name="04.integer_codes",
        title="Exercise 4.3 (from a fake-quantized layer to integer codes)",
        reference=integer_codes,
        cases=(((_W, _S, -8, 7), integer_codes(_W, _S, -8, 7)), ((_W, _S * 3, -2, 1), integer_codes(_W, _S * 3, -2, 1))),
        hint="Multiply each row by the reciprocal of its own scale (weight * (1.0 / scale.reshape(-1, 1)); the reshape "
        "broadcasts over the columns), round, clamp to [qmin, qmax], and return .to(torch.int8). Use the reciprocal, as "
        "PyTorch's kernels do: plain division can round a tie the other way.",
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
