"""Chapter 3 exercises: predict a packed file's size; a layer's output error; calibrate a range."""

from __future__ import annotations

import math

import torch

from toolkit.exercises import Exercise, Quiz, register


def packed_weight_bytes(num_values: int, bits: int, group_size: int, scale_bytes: int = 4) -> int:
    """Bytes of one weight stored as packed codes plus one scale per group (symmetric: no zero-points).

    Both counts round up: the last byte may be partly filled, and a last, partial group still needs its scale.
    """
    return math.ceil(num_values * bits / 8) + math.ceil(num_values / group_size) * scale_bytes


def output_sqnr_db(weight: torch.Tensor, weight_hat: torch.Tensor, x: torch.Tensor) -> float:
    """SQNR (dB) of a linear layer's output y = x W^T when W is replaced by W_hat."""
    y, y_hat = x @ weight.T, x @ weight_hat.T
    return float(10 * torch.log10((y**2).sum() / ((y - y_hat) ** 2).sum()))


def minmax_range(batches: list) -> tuple[float, float]:
    """The range a min-max observer proposes after seeing every batch: (min over all, max over all)."""
    return float(min(b.min() for b in batches)), float(max(b.max() for b in batches))


_g = torch.Generator().manual_seed(3)
_W = torch.randn(6, 8, generator=_g)
_X = torch.randn(5, 8, generator=_g)
_W_HAT = torch.round(_W * 4) / 4  # a 0.25 grid
_BATCHES = [torch.tensor([0.5, -1.0, 2.0]), torch.tensor([[3.5, 0.0]]), torch.tensor([-2.5])]

register(
    Exercise(
        name="03.packed_weight_bytes",
        title="Exercise 3.1 (the size of a packed weight, before writing it)",
        reference=packed_weight_bytes,
        cases=(
            ((1536 * 384, 4, 32), packed_weight_bytes(1536 * 384, 4, 32)),
            ((1536 * 384, 2, 128), packed_weight_bytes(1536 * 384, 2, 128)),
            ((1000, 3, 8), packed_weight_bytes(1000, 3, 8)),
            ((100, 4, 32), packed_weight_bytes(100, 4, 32)),  # 3 full groups and a partial one: 4 scales
            ((30522 * 384, 8, 384), packed_weight_bytes(30522 * 384, 8, 384)),
        ),
        hint="Codes: num_values * bits bits, rounded up to whole bytes (math.ceil(... / 8)). Scales: one "
        "per group, math.ceil(num_values / group_size) of them (a last partial group needs one too), each "
        "scale_bytes long. Add the two.",
    )
)

register(
    Exercise(
        name="03.output_sqnr_db",
        title="Exercise 3.2 (how much does quantizing W disturb the layer's output?)",
        reference=output_sqnr_db,
        cases=(((_W, _W_HAT, _X), output_sqnr_db(_W, _W_HAT, _X)), ((_W, _W * 1.01, _X), output_sqnr_db(_W, _W * 1.01, _X))),
        hint="Compute y = x @ W.T and y_hat = x @ W_hat.T; SQNR = 10 * log10(sum(y**2) / sum((y - y_hat)**2)). "
        "Return a Python float.",
        rel_tol=1e-4,
    )
)

register(
    Exercise(
        name="03.minmax_range",
        title="Exercise 3.3 (calibrate a min-max observer by hand)",
        reference=minmax_range,
        cases=(((_BATCHES,), (-2.5, 3.5)), (([torch.tensor([1.0, 2.0])],), (1.0, 2.0))),
        hint="Keep the smallest minimum and the largest maximum over all batches: min(b.min() for b in batches), "
        "and likewise for max; return two floats.",
        rel_tol=1e-9,
    )
)

register(
    Quiz(
        name="03.int8_vs_bf16",
        question="On CPUs with AMX, bf16 can run the classifier faster than every int8 path of this chapter at batch 64 "
        "(section 7 says whether it did on yours). Why can int8 lose to bf16 although its weights are half the size?",
        choices={
            "a": "int8 arithmetic is always slower than floating point.",
            "b": "Dynamic int8 quantizes every activation on the fly and converts each result back to float; bf16 runs "
            "every matrix product natively with no conversion between layers. Softmax, GELU and layer norm run on vector "
            "units in both.",
            "c": "The int8 model has more parameters.",
        },
        answer="b",
        explanations={
            "a": "No: with VNNI or AMX an int8 dot product does more multiply-adds per instruction than fp32. The cost is "
            "around the product: quantizing inputs, rescaling outputs, and the parts of the model that stay float.",
            "b": "Speed is end to end: the conversions and the float parts of the model are paid on every call, while "
            "AMX multiplies bf16 matrices natively too, so int8's faster product is a small part of the total. A CPU "
            "without native bf16 (no AMX, no AVX512-BF16) is where int8 has its best chance; on bytes it always wins.",
            "c": "Quantization does not change the number of parameters, only the bits of each.",
        },
    )
)
