"""Pruning, one idea per module.

- ``importance`` scores per weight: magnitude, gradient, first-order Taylor, activation-aware (Wanda)
- ``masks``      which weights to keep: local (per layer), global, N:M; how much two masks agree
- ``apply``      masks applied to a copy, or in place with torch.nn.utils.prune (hooks) and made permanent
- ``storage``    sparse weights as CSR or bitmask + values, with the bytes of a written file
- ``speed``      sparse weights that compute: random sparse matrices, linear layers on a CSR kernel
- ``structured`` heads, FFN neurons and layers cut out of BERT-layout models; their scores; pruned files
- ``filters``    convolution filters removed by channel groups that respect residual connections (ResNet)
- ``library``    the same head and FFN pruning done by Torch-Pruning's dependency graph, for comparison
- ``schedule``   the cubic (Zhu & Gupta) and iterative sparsity schedules
- ``gradual``    pruning schedules with re-warmed learning rates, mask updates during training, per-layer sparsity
- ``movement``   movement pruning: learned scores, a straight-through top-k mask
- ``regularize`` L1, L2 and group-lasso penalties as proximal steps after each optimizer step
- ``vocab``      a vocabulary trimmed to the tokens a task uses (the embedding table loses rows)

Training while pruning (the loop) lives in ``toolkit.train.prune_during_training_``.
"""

from toolkit.prune.apply import apply_masks, apply_masks_, remove_masks_, sparsity_report
from toolkit.prune.importance import CRITERIA, importance, prunable_modules
from toolkit.prune.masks import check_sparsity, global_masks, kept_overlap, local_masks, nm_masks, row_masks
from toolkit.prune import filters, gradual, library, movement, regularize, schedule, speed, storage, structured, vocab  # noqa: F401

__all__ = [
    "CRITERIA", "apply_masks", "apply_masks_", "check_sparsity", "global_masks", "importance", "kept_overlap",
    "local_masks", "nm_masks", "prunable_modules", "remove_masks_", "row_masks", "sparsity_report",
]
