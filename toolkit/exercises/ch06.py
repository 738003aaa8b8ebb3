"""Chapter 6 exercises: a global threshold with kthvalue; Taylor importance; the bytes of a CSR matrix."""

from __future__ import annotations

import torch

from toolkit.exercises import Exercise, Quiz, register
from toolkit.prune.storage import csr_bytes as _csr_bytes


def global_threshold(scores: list, sparsity: float) -> float:
    """The score at or below which a fraction ``sparsity`` of all scores lies: the k-th smallest, k = round(s * N)."""
    flat = torch.cat([s.flatten() for s in scores])
    k = round(sparsity * flat.numel())
    return float("-inf") if k == 0 else float(flat.kthvalue(k).values)


def taylor_importance(weight: torch.Tensor, gradients: list) -> torch.Tensor:
    """First-order Taylor importance accumulated over batches: sum_b |W * dL_b/dW| (same shape as W)."""
    return sum((weight * g).abs() for g in gradients)


def csr_bytes(rows: int, cols: int, nnz: int) -> int:
    """Bytes of a CSR fp32 matrix: int32 row pointers (rows + 1), int16 column indices if cols < 2^15 else int32, fp32 values."""
    return _csr_bytes(rows, cols, nnz, value_bytes=4)



register(
    Exercise(
        name="06.global_threshold",
        title="Exercise 6.1 (a global magnitude threshold with kthvalue)",
        reference=global_threshold,
        cases=(
            # five scores over two layers, 40%: k = 2, the 2nd smallest of 0.1, 0.2, 0.3, 0.4, 0.5
            (([torch.tensor([0.3, 0.1]), torch.tensor([0.4, 0.2, 0.5])], 0.4), 0.2),
            # nothing to remove: the threshold is -inf, below every score
            (([torch.tensor([0.3, 0.1])], 0.0), float("-inf")),
            (([torch.tensor([3.0, 1.0, 2.0, 4.0])], 0.5), 2.0),
        ),
        hint=(
            'one threshold for every layer: pool all scores and find the value below which the given share of them lies.',
            'k = round(s · N) over all N scores; the threshold is the k-th smallest score (−inf when k = 0).',
            "flat = torch.cat([x.flatten().float() for x in scores]); k = round(sparsity * flat.numel()); return float('-inf') if k == 0 else float(flat.kthvalue(k).values)",
        ),
        rel_tol=1e-6,
    )
)

register(
    Exercise(
        name="06.taylor_importance",
        title="Exercise 6.2 (Taylor importance for one layer)",
        reference=taylor_importance,
        cases=(
            # w = (1, -2); batches g = (0.5, 0.5) and (-1, 1): |0.5| + |-1| = 1.5 and |-1| + |-2| = 3
            ((torch.tensor([[1.0, -2.0]]), [torch.tensor([[0.5, 0.5]]), torch.tensor([[-1.0, 1.0]])]), torch.tensor([[1.5, 3.0]])),
            # one batch: just |w · g|
            ((torch.tensor([[1.0, -2.0]]), [torch.tensor([[-0.25, 0.5]])]), torch.tensor([[0.25, 1.0]])),
        ),
        hint=(
            'a weight matters if zeroing it would change the loss; the first-order change for one batch is w times its gradient, and its size counts, not its sign.',
            'S = Σ_b |W ⊙ ∂L_b/∂W| over the batches b.',
            'return sum((weight * g).abs() for g in gradients)',
        ),
        rel_tol=1e-6,
    )
)

register(
    Exercise(
        name="06.csr_bytes",
        title="Exercise 6.3 (the bytes of a CSR matrix)",
        reference=csr_bytes,
        cases=(
            # 4 · 1,537 row pointers + 58,982 · (2-byte column + 4-byte value) = 6,148 + 353,892
            ((1536, 384, 58982), 360_040),
            ((384, 1536, 0), 1_540),  # only the 385 row pointers
            ((10, 40000, 7), 100),  # 44 + 7 · (4-byte column, since 40,000 ≥ 2^15, + 4)
        ),
        hint=(
            'CSR stores one pointer per row (plus one), and for every non-zero its column and its value.',
            'bytes = 4 (rows + 1) + nnz · (2 if cols < 2^15 else 4) + nnz · 4.',
            'return 4 * (rows + 1) + nnz * ((2 if cols < 2 ** 15 else 4) + 4)',
        ),
    )
)

register(
    Quiz(
        name="06.masked_speed",
        question="You zero half the weights of every linear layer with a mask and save the model. What happens to the "
        "file size and the latency?",
        choices={
            "a": "Both halve: half the weights are gone.",
            "b": "Neither changes: a zero in a dense tensor takes 4 bytes and costs a multiply-add like any other number.",
            "c": "The file halves, the latency stays.",
        },
        answer="b",
        explanations={
            "a": "Only a sparse layout (CSR, bitmask) or removing whole rows/heads makes the model smaller or faster.",
            "b": "Dense storage and dense kernels do not look at values. Gains need sparse formats, sparse kernels "
            "(which win only at high sparsity on a CPU) or structured pruning (Chapter 7).",
            "c": "safetensors stores the dense tensor, zeros included: the file does not change.",
        },
    )
)
