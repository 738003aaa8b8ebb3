"""Pruning, one idea per module.

- ``importance`` scores per weight: magnitude, gradient, first-order Taylor, activation-aware (Wanda)
- ``masks``      which weights to keep: local (per layer), global, N:M; how much two masks agree
- ``apply``      masks applied to a copy, or in place with torch.nn.utils.prune (hooks) and made permanent
- ``storage``    sparse weights as CSR or bitmask + values, with the bytes of a written file
- ``speed``      sparse vs dense matrix products, timed
- ``structured`` heads, FFN neurons and layers cut out of BERT-layout models; their scores; pruned files
- ``filters``    convolution filters removed by channel groups that respect residual connections (ResNet)
- ``library``    the same head and FFN pruning done by Torch-Pruning's dependency graph, for comparison
"""

from toolkit.prune.apply import apply_masks, apply_masks_, remove_masks_, sparsity_report
from toolkit.prune.importance import CRITERIA, importance, prunable_modules
from toolkit.prune.masks import check_sparsity, global_masks, kept_overlap, local_masks, nm_masks, row_masks
from toolkit.prune import filters, speed, storage, structured  # noqa: F401

__all__ = [
    "CRITERIA", "apply_masks", "apply_masks_", "check_sparsity", "global_masks", "importance", "kept_overlap",
    "local_masks", "nm_masks", "prunable_modules", "remove_masks_", "row_masks", "sparsity_report",
]
