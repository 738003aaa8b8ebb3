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


_g = torch.Generator().manual_seed(6)
_S = [torch.rand(4, 5, generator=_g), torch.rand(3, 5, generator=_g)]
_W = torch.randn(3, 4, generator=_g)
_G = [torch.randn(3, 4, generator=_g) for _ in range(3)]

register(
    Exercise(
        name="06.global_threshold",
        title="Exercise 6.1 (a global magnitude threshold with kthvalue)",
        reference=global_threshold,
        cases=(((_S, 0.5), global_threshold(_S, 0.5)), ((_S, 0.2), global_threshold(_S, 0.2)), (([torch.tensor([3.0, 1.0, 2.0, 4.0])], 0.5), 2.0)),
        hint="Flatten every layer's scores and concatenate them (torch.cat); k = round(sparsity * total); the threshold is "
        "flat.kthvalue(k).values (the k-th smallest). Return a Python float.",
        rel_tol=1e-6,
    )
)

register(
    Exercise(
        name="06.taylor_importance",
        title="Exercise 6.2 (Taylor importance for one layer)",
        reference=taylor_importance,
        cases=(((_W, _G), taylor_importance(_W, _G)), ((_W, _G[:1]), (_W * _G[0]).abs())),
        hint="For each batch's gradient g, the estimated loss change of zeroing w is |w * g|; add these up over the "
        "batches: sum((weight * g).abs() for g in gradients).",
        rel_tol=1e-6,
    )
)

register(
    Exercise(
        name="06.csr_bytes",
        title="Exercise 6.3 (the bytes of a CSR matrix)",
        reference=csr_bytes,
        cases=(((1536, 384, 58982), csr_bytes(1536, 384, 58982)), ((384, 1536, 0), csr_bytes(384, 1536, 0)), ((10, 40000, 7), csr_bytes(10, 40000, 7))),
        hint="Row pointers: (rows + 1) int32 = 4 bytes each. Column indices: nnz of them, 2 bytes each if cols < 32768 "
        "(int16), else 4. Values: nnz * 4 bytes (fp32).",
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
