"""One-shot sparsity for an LLM: magnitude, Wanda (Sun et al., 2023) and SparseGPT (Frantar & Alistarh, 2023).

Which weights of W (N, K) to remove, with the inputs X (tokens, K) seen on calibration text:

    magnitude:  score |W_ij|                               compared within the whole layer
    Wanda:      score |W_ij| * ||X_:,j||_2                 compared within each output row
    SparseGPT:  score W_ij^2 / [H^-1]_jj^2  (OBS saliency), chosen block by block, and the weights
                that stay are *updated* to compensate, column by column, exactly as GPTQ does for
                rounding:  e = w_j / [H^-1]_jj for a removed weight, W[:, j+1:] -= e [H^-1]_{j, j+1:}

Patterns: "unstructured" (any ``sparsity`` fraction) or "2:4" (in every 4 consecutive inputs of a row,
2 are zero: the pattern sparse tensor cores and some CPU kernels run at 2x).
"""

from __future__ import annotations

import torch

from toolkit.runtime import check_int

METHODS = ("magnitude", "wanda", "sparsegpt")
PATTERNS = ("unstructured", "2:4")


def _check(method: str, pattern: str, sparsity: float) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}; got {pattern!r}")
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be a fraction in [0, 1); got {sparsity!r}")


def mask_from_scores(scores: torch.Tensor, pattern: str, sparsity: float = 0.5, per_row: bool = True) -> torch.Tensor:
    """True where a weight is removed: the lowest-scoring ``sparsity`` of each row (or of the layer), or for
    "2:4" the two lowest of every four consecutive weights of a row. (N, K) bool."""
    n, k = scores.shape
    if pattern == "2:4":
        if k % 4:
            raise ValueError(f"scores: a 2:4 pattern needs in_features divisible by 4; got {k}")
        groups = scores.reshape(n, k // 4, 4)
        lowest = groups.topk(2, dim=-1, largest=False).indices
        return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, lowest, True).reshape(n, k)
    if pattern != "unstructured":
        raise ValueError(f"pattern must be one of {PATTERNS}; got {pattern!r}")
    if per_row:
        removed = int(k * sparsity)
        lowest = scores.topk(removed, dim=1, largest=False).indices if removed else torch.empty(n, 0, dtype=torch.long)
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, lowest, True)
    removed = int(scores.numel() * sparsity)
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    if removed:
        mask[scores.flatten().topk(removed, largest=False).indices] = True
    return mask.reshape(n, k)


def wanda_scores(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_:,j||_2 for inputs x (tokens, K): (N, K)."""
    return weight.detach().abs().float() * x.float().norm(dim=0)[None, :]


def sparsegpt_prune(weight: torch.Tensor, h: torch.Tensor, pattern: str = "unstructured", sparsity: float = 0.5, *,
                    block_size: int = 128, damp: float = 0.01, rows: list[int] | None = None) -> torch.Tensor:
    """SparseGPT's pruned and updated weight (N, K) for the Hessian ``h`` (K, K) of the layer's inputs.

    ``rows`` splits a matrix of several layers stacked on top of each other (they share ``h``) into the
    layers' row counts: the unstructured mask is then chosen within each layer, as if it were pruned alone."""
    from toolkit.llm.gptq import _prepare

    _check("sparsegpt", pattern, sparsity)
    check_int("block_size", block_size)
    n, k = weight.shape
    rows = [n] if rows is None else list(rows)
    if sum(rows) != n:
        raise ValueError(f"rows must add up to the weight's {n} rows; got {rows}")
    w, h = _prepare(weight, h, damp)
    h_inv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        w1, err1, hinv1 = w[:, i1:i2].clone(), torch.zeros(n, i2 - i1), h_inv[i1:i2, i1:i2]
        saliency = w1**2 / torch.diag(hinv1)[None, :] ** 2  # (N, block): the OBS cost of removing each weight
        mask1 = torch.cat([mask_from_scores(part, "unstructured", sparsity, per_row=False) for part in saliency.split(rows)]) \
            if pattern == "unstructured" else None
        for i in range(i2 - i1):
            if pattern == "2:4" and i % 4 == 0:
                tmp = w1[:, i:i + 4] ** 2 / torch.diag(hinv1)[i:i + 4][None, :] ** 2
                mask_group = mask_from_scores(tmp, "2:4")
                mask1 = mask_group if i == 0 else torch.cat([mask1, mask_group], 1)
            kept = torch.where(mask1[:, i], torch.zeros_like(w1[:, i]), w1[:, i])
            err = (w1[:, i] - kept) / hinv1[i, i]
            w1[:, i:] -= err[:, None] * hinv1[i, i:][None, :]
            w1[:, i] = kept
            err1[:, i] = err
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ h_inv[i1:i2, i2:]
    return w.to(weight.dtype)


def prune_model_(model: torch.nn.Module, segments: torch.Tensor | None, method: str, pattern: str = "unstructured",
                 sparsity: float = 0.5, *, batch_size: int = 8) -> float:
    """Prune every linear layer of every decoder block in place with ``method``, block by block (Wanda and
    SparseGPT see the calibration ``segments`` as the already-pruned blocks pass them on; magnitude needs none).
    Returns the sparsity reached over those layers.

    Taught in: chapter 10, section 8 (One-shot sparsity: magnitude, Wanda, SparseGPT).
    """
    from toolkit.llm.blocks import block_linears, decoder_layers, record_inputs, same_input_groups, walk_blocks_
    from toolkit.llm.gptq import hessian

    _check(method, pattern, sparsity)
    if method == "magnitude":
        with torch.no_grad():
            for block in decoder_layers(model):
                for name in block_linears(block):
                    layer = block.get_submodule(name)
                    layer.weight[mask_from_scores(layer.weight.abs(), pattern, sparsity, per_row=False)] = 0
    else:
        if segments is None:
            raise ValueError(f"segments: {method} needs calibration text; got None")

        def change(index, block, inputs):
            recorded = record_inputs(block, inputs, batch_size=batch_size)
            with torch.no_grad():
                if method == "wanda":
                    for name, x in recorded.items():
                        layer = block.get_submodule(name)
                        layer.weight[mask_from_scores(wanda_scores(layer.weight, x), pattern, sparsity)] = 0
                    return
                for together in same_input_groups(recorded):  # pruned as one stacked matrix, each layer keeping its own mask
                    first = together[0]
                    layers = [block.get_submodule(n) for n in together]
                    pruned = sparsegpt_prune(torch.cat([layer.weight for layer in layers]), hessian(recorded[first]), pattern, sparsity,
                                             rows=[layer.out_features for layer in layers])
                    for layer, part in zip(layers, pruned.split([layer.out_features for layer in layers])):
                        layer.weight.copy_(part)

        walk_blocks_(model, segments, change, batch_size)
    weights = [block.get_submodule(n).weight for block in decoder_layers(model) for n in block_linears(block)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
