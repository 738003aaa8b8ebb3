"""Which weights to keep. A mask is a 0/1 float tensor of the weight's shape (1 = keep).

- **local**:  every layer loses the same fraction s: in each layer, drop the s*n lowest scores.
- **per row**: every output row of every layer loses the same fraction s: in each row of W (out, in),
  drop the s*in lowest scores. This is how Wanda (Sun et al. 2023) compares weights: only with the
  other weights that feed the same output.
- **global**: one threshold t for all layers together, the (s*N)-th smallest of all N scores;
  drop every weight whose score is <= t. Layers whose scores are small lose more.
- **N:M**:    in every group of M consecutive weights along the input dimension keep the N with
  the highest scores (2:4 is what sparse tensor cores accelerate; Chapter 7).
"""

from __future__ import annotations

import torch


def check_sparsity(sparsity: float) -> float:
    """Sparsity is the fraction of weights removed, a number in [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be a number in [0, 1) (the fraction of weights removed); got {sparsity!r}")
    return float(sparsity)


def _check_scores(scores: dict[str, torch.Tensor]) -> None:
    if not scores:
        raise ValueError("scores is empty: compute them with toolkit.prune.importance first")


def local_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Per layer: keep the round((1 - s) * n) highest-scoring weights (exactly; ties by position).

    Taught in: chapter 6, section 2 (Importance: which weights matter?).
    """
    sparsity = check_sparsity(sparsity)
    _check_scores(scores)
    masks = {}
    for name, s in scores.items():
        n_keep = s.numel() - round(sparsity * s.numel())
        mask = torch.zeros(s.numel())
        mask[s.flatten().float().topk(n_keep, sorted=False).indices] = 1.0
        masks[name] = mask.reshape(s.shape)
    return masks


def row_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Per output row: keep the round((1 - s) * in) highest scores of every row (exactly).

    Taught in: chapter 6, section 4 (Local vs global pruning, for each criterion).
    """
    sparsity = check_sparsity(sparsity)
    _check_scores(scores)
    masks = {}
    for name, s in scores.items():
        rows = s.reshape(s.shape[0], -1).float()  # (out, in)
        n_keep = rows.shape[1] - round(sparsity * rows.shape[1])
        mask = torch.zeros_like(rows)
        mask.scatter_(1, rows.topk(n_keep, dim=1, sorted=False).indices, 1.0)  # (out, n_keep) positions set to 1
        masks[name] = mask.reshape(s.shape)
    return masks


def global_threshold(scores: dict[str, torch.Tensor], sparsity: float) -> float:
    """The (s*N)-th smallest score over all layers (kthvalue); -inf when s = 0.

    Taught in: chapter 6, section 2 (Importance: which weights matter?).
    """
    sparsity = check_sparsity(sparsity)
    _check_scores(scores)
    flat = torch.cat([s.flatten().float() for s in scores.values()])  # (N,)
    k = round(sparsity * flat.numel())
    return float("-inf") if k == 0 else float(flat.kthvalue(k).values)


def global_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """One threshold for every layer: keep the weights whose score is above it.

    Taught in: chapter 6, section 4 (Local vs global pruning, for each criterion).
    """
    t = global_threshold(scores, sparsity)
    return {name: (s.float() > t).float() for name, s in scores.items()}


def nm_masks(scores: dict[str, torch.Tensor], n: int, m: int) -> dict[str, torch.Tensor]:
    """Keep the n highest scores in every group of m consecutive inputs of each row.

    Taught in: chapter 7, section 9 (N:M sparsity: 2:4).
    """
    if not (isinstance(m, int) and isinstance(n, int) and 0 < n < m):
        raise ValueError(f"N:M sparsity needs integers 0 < n < m; got n={n!r}, m={m!r}")
    _check_scores(scores)
    masks = {}
    for name, s in scores.items():
        if s.shape[-1] % m:
            raise ValueError(f"m={m} does not divide the input dimension {s.shape[-1]} of {name}")
        groups = s.float().reshape(-1, m)  # (out * in / m, m)
        mask = torch.zeros_like(groups)
        mask.scatter_(1, groups.topk(n, dim=1).indices, 1.0)
        masks[name] = mask.reshape(s.shape)
    return masks


def kept_overlap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """How much two masks agree: |kept by both| / |kept by a| (the masks keep equally many).

    Taught in: chapter 6, section 2 (Importance: which weights matter?).
    """
    if a.keys() != b.keys():
        raise ValueError("the masks cover different layers")
    both = sum(float((a[n] * b[n]).sum()) for n in a)
    kept = sum(float(a[n].sum()) for n in a)
    return both / kept if kept else 1.0
