"""Chapter 6 exercises: a global threshold with kthvalue; Taylor importance; the bytes of a CSR matrix."""

from __future__ import annotations

import torch

from toolkit.workbook.exercises import Exercise, Quiz, register
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

register(
    Quiz(
        name='06.global_vs_local',
        question='At the same overall sparsity, what distinguishes global from local magnitude pruning?',
        choices={
            'a': 'Global removes whole layers whose weights are small; local removes single weights inside every layer',
            'b': 'Local ranks weights by their gradient and global by their size, so the two need different data',
            'c': 'One threshold for all layers versus the same share removed from each layer',
            'd': 'Global prunes the whole model at once; local prunes one layer at a time, with retraining in between',
        },
        answer='c',
        explanations={
            'a': "Both remove single weights; removing whole layers is chapter 7's structured pruning.",
            'b': 'Both scopes work with any score; the chapter compares them for magnitude, Taylor and activation scores.',
            'c': "Right: global lets layers with small weights lose more; section 4's heatmap shows how unequally one threshold treats the layers.",
            'd': 'Both prune in one shot here; retraining between layers is a schedule (chapter 8), not a scope.',
        },
    )
)

register(
    Quiz(
        name='06.taylor_sum',
        question='The Taylor score sums |w · ∂L_b/∂w| over batches b instead of taking |w · Σ_b ∂L_b/∂w|. Why?',
        choices={
            'a': 'Per-batch terms keep their size; the summed gradient of a converged model is near zero',
            'b': 'Summing absolute values is cheaper than summing the gradients first',
            'c': 'The two are equal by the triangle inequality, so either order works',
            'd': 'The summed gradient would overflow float32 on large models',
        },
        answer='a',
        explanations={
            'a': 'Right: the signed first-order prediction cancels across batches; the sensitivity does not.',
            'b': 'Both cost the same backward passes; the difference is what the score measures.',
            'c': 'The triangle inequality says the sum of magnitudes is at least the magnitude of the sum; they are rarely equal.',
            'd': 'The values are small; overflow is not the issue.',
        },
    )
)

register(
    Quiz(
        name='06.csr_crossover',
        question='With int16 column indices and fp32 values, above what sparsity is CSR smaller than a bitmask with values?',
        choices={
            'a': '50%',
            'b': '75%',
            'c': '90%',
            'd': '93.75%',
        },
        answer='d',
        explanations={
            'a': 'At 50% the bitmask is far smaller: CSR pays 2 index bytes per kept weight, the bitmask 1/8 byte per position.',
            'b': 'Still the bitmask: 2 · 0.25 = 0.5 byte per position against 0.125.',
            'c': 'Still the bitmask: 2 · 0.1 = 0.2 byte per position against 0.125.',
            'd': 'Right: both pay the values; CSR pays 2 (1 - s) bytes of index per position, the bitmask 1/8, so CSR wins when 1 - s < 1/16.',
        },
    )
)

register(
    Quiz(
        name='06.prune_remove',
        question="After `prune.global_unstructured(...)`, what does `prune.remove(module, 'weight')` do?",
        choices={
            'a': 'It undoes the pruning: weight_orig becomes the weight again and the removed values come back',
            'b': 'Makes the pruning permanent: the hook and the mask go, the zeros stay in a plain weight',
            'c': 'It deletes the pruned entries from the tensor, so the weight becomes smaller on disk and in memory',
            'd': 'It removes the mask from the optimizer but keeps the hook, so later training cannot revive the weights',
        },
        answer='b',
        explanations={
            'a': 'weight_orig is discarded, not restored; the masked values stay zero.',
            'b': 'Right: the forward pre-hook and the weight_mask buffer go, weight_orig becomes a plain weight with the zeros in it; section 5 prints the parameters and hooks before and after.',
            'c': 'The tensor keeps its shape; the zeros are still stored (section 6).',
            'd': 'The hook goes too; the optimizer never held the mask (it is a buffer, not a parameter).',
        },
    )
)


register(
    Quiz(
        name='06.which_plot',
        question='A 4 × 4 grid of numbers between 0.5 and 1 has 1.00 on its diagonal. What does it show?',
        choices={
            'a': "The correlation between the four criteria's accuracy-vs-sparsity curves",
            'b': 'How often two criteria choose the same layer to prune hardest',
            'c': 'The test accuracy of each criterion (rows) pruned to each of four sparsities (columns), from 50% to 90%',
            'd': "The share of kept weights that two criteria's 50% masks have in common",
        },
        answer='d',
        explanations={
            'a': "The curves are compared in section 4's chart and table, not as correlations.",
            'b': 'Which layers global pruning empties is the per-layer heatmap of section 4, with one row per block.',
            'c': "Accuracies per sparsity are section 4's table; a 4 × 4 grid with 1.00 on the diagonal compares criteria with each other.",
            'd': 'Right: the overlap of section 2. Two random 50% masks share half their kept weights (0.5), a criterion with itself all of them (1.00).',
        },
    )
)
