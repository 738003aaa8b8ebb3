"""GPTQ (Frantar et al., 2022): quantize a layer's columns one at a time, each time pushing the
rounding error onto the columns not yet quantized, through the inverse Hessian.

The layer-wise objective, for a weight W (N, K) and calibration inputs X (K, tokens):

    min over quantized Q of  || W X - Q X ||_F^2  =  tr( (W - Q) H (W - Q)^T ),   H = 2 X X^T  (K, K)

Optimal Brain Quantization quantizes one column q and updates the others to compensate:

    e = (w_q - quant(w_q)) / [H^-1]_qq                 (N,)
    W[:, q+1:] -= e [H^-1]_{q, q+1:}                      (the error spread on the rest)
    H^-1 <- H^-1 without row and column q               (Gaussian elimination)

GPTQ's three changes make this fast enough for LLMs: every row uses the same column order, so one
inverse serves all rows; the successive eliminations are the rows of the upper Cholesky factor of
H^-1, computed once; and updates are applied lazily, ``block_size`` columns at a time. Damping
(adding ``damp * mean(diag H)`` to the diagonal) keeps H invertible; act-order quantizes the columns
with the largest diag(H) (the most active inputs) first.
"""

from __future__ import annotations

import time

import torch

from toolkit.llm.groups import GroupQuantized, check_bits, group_range, group_width, n_groups
from toolkit.runtime import check_int


def hessian(inputs: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """H = 2/n * X X^T from layer inputs given as (tokens, K) pieces: (K, K) float32.

    Taught in: chapter 10, section 4 (GPTQ from scratch).
    """
    pieces = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    if not pieces or sum(p.shape[0] for p in pieces) == 0:
        raise ValueError("inputs must hold at least one token: the Hessian of an empty calibration set is undefined")
    k = pieces[0].shape[-1]
    h, n = torch.zeros(k, k), 0
    for x in pieces:
        x = x.reshape(-1, k).float()
        h.addmm_(x.T, x)
        n += x.shape[0]
    return h * (2 / n)


def layer_error(weight: torch.Tensor, quantized: torch.Tensor, h: torch.Tensor) -> float:
    """The layer-wise objective tr((W - Q) H (W - Q)^T) (with H = 2 X X^T / n: twice the mean squared output error per token).

    Taught in: chapter 10, section 4 (GPTQ from scratch).
    """
    d = (weight - quantized).float()
    return float(torch.einsum("nk,kl,nl->", d, h, d))


def _quantize_column(w: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.round((w - minimum) / scale).clamp_(0, 2**bits - 1)
    return q, q * scale + minimum


def _prepare(weight: torch.Tensor, h: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    w, h = weight.detach().float().clone(), h.float().clone()
    if h.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"h must be ({w.shape[1]}, {w.shape[1]}) for a weight of shape {tuple(w.shape)}; got {tuple(h.shape)}")
    if not 0 <= damp < 1:
        raise ValueError(f"damp must be a fraction in [0, 1); got {damp!r}")
    dead = torch.diag(h) == 0  # inputs that are always zero: any weight works; set it to 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0])
    return w, h


def gptq_quantize(weight: torch.Tensor, h: torch.Tensor, bits: int, group_size: int | None = 128, *, block_size: int = 128,
                  damp: float = 0.01, act_order: bool = False) -> GroupQuantized:
    """GPTQ's codes for ``weight`` (N, K) given the Hessian ``h`` (K, K) of its inputs.

    Groups: without act-order each group's scale and minimum are taken from the (already updated)
    weights when its first column is reached, as in the paper's code; with act-order the columns are
    visited out of order, so the groups' grids are fixed from the original weights first ("static
    groups"), which keeps the groups contiguous in storage. ``weight`` is not changed.

    Taught in: chapter 10, section 4 (GPTQ from scratch).
    """
    check_bits(bits)
    check_int("block_size", block_size)
    n, k = weight.shape
    g = group_width(k, group_size)
    w, h = _prepare(weight, h, damp)
    order = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(k)
    w, h = w[:, order], h[order][:, order]
    h_inv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)  # rows: the eliminations
    scale = torch.empty(n, n_groups(k, g), dtype=torch.float16)
    minimum = torch.empty_like(scale)
    if act_order:
        scale[:], minimum[:] = group_range(weight.detach().float(), bits, g)
    codes = torch.empty(n, k, dtype=torch.uint8)
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        w1, err1, hinv1 = w[:, i1:i2].clone(), torch.zeros(n, i2 - i1), h_inv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            column = int(order[i1 + i])  # the original column this is
            group = column // g
            if not act_order and column % g == 0:  # the group's grid from the weights as they are now
                width = min(g, k - column)
                ahead = w1[:, i:i + width] if i + width <= i2 - i1 else torch.cat([w1[:, i:], w[:, i2:i2 + width - (i2 - i1 - i)]], 1)
                scale[:, group], minimum[:, group] = (t[:, 0] for t in group_range(ahead, bits, width))
            s, m = scale[:, group].float(), minimum[:, group].float()
            q, dequantized = _quantize_column(w1[:, i], s, m, bits)
            codes[:, column] = q.to(torch.uint8)
            err = (w1[:, i] - dequantized) / hinv1[i, i]
            w1[:, i:] -= err[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ h_inv[i1:i2, i2:]
    return GroupQuantized(codes, scale, minimum, bits, g)


def obq_quantize(weight: torch.Tensor, h: torch.Tensor, bits: int, group_size: int | None = None, *, damp: float = 0.01) -> torch.Tensor:
    """The same column-by-column method written out the slow way, for checking: an explicit inverse,
    one column at a time, the inverse Hessian updated by Gaussian elimination after each column, groups'
    grids taken when their first column is reached. Returns the dequantized weight (N, K).

    Taught in: chapter 10, section 4 (GPTQ from scratch).
    """
    check_bits(bits)
    n, k = weight.shape
    g = group_width(k, group_size)
    w, h = _prepare(weight, h, damp)
    h_inv = torch.linalg.inv(h.double()).float()
    out = torch.empty_like(w)
    for q in range(k):
        if q % g == 0:
            s, m = (t[:, 0].float() for t in group_range(w[:, q:q + g], bits, w[:, q:q + g].shape[1]))
        _, out[:, q] = _quantize_column(w[:, q], s, m, bits)
        err = (w[:, q] - out[:, q]) / h_inv[q, q]
        w[:, q:] -= err[:, None] * h_inv[q, q:][None, :]
        h_inv -= h_inv[:, q:q + 1] @ h_inv[q:q + 1, :] / h_inv[q, q]  # eliminate column q
    return out


def gptq_block_(block: torch.nn.Module, hessians: dict[str, torch.Tensor], bits: int, group_size: int | None = 128,
                **options) -> dict[str, tuple[GroupQuantized, float]]:
    """Quantize the block's layers named in ``hessians`` with GPTQ, in place (weights set to the dequantized
    codes); returns name -> (codes, seconds taken). Layers with the same Hessian (q, k and v read the same
    input; so do gate and up) are quantized as one stacked matrix: GPTQ treats every row alike, so this
    gives the same codes in one pass over the columns instead of several."""
    from toolkit.llm.blocks import same_input_groups

    done = {}
    for together in same_input_groups(hessians):
        first = together[0]
        layers = [block.get_submodule(n) for n in together]
        start = time.perf_counter()
        stacked = gptq_quantize(torch.cat([layer.weight for layer in layers]), hessians[first], bits, group_size, **options)
        seconds = (time.perf_counter() - start) / len(together)
        row = 0
        for name, layer in zip(together, layers):
            rows = slice(row, row + layer.out_features)
            part = GroupQuantized(stacked.codes[rows], stacked.scale[rows], stacked.minimum[rows], bits, stacked.group_size)
            with torch.no_grad():
                layer.weight.copy_(part.dequantize(layer.weight.dtype))
            done[name] = (part, seconds)
            row += layer.out_features
    return done


def gptq_model_(model: torch.nn.Module, segments: torch.Tensor, bits: int, group_size: int | None = 128, *,
                batch_size: int = 8, **options) -> dict[str, tuple[GroupQuantized, float]]:
    """GPTQ on every linear layer of every decoder block, in place, block by block: each block's Hessians come
    from the calibration ``segments`` as the already-quantized blocks before it transform them. Returns
    "block.layer" -> (codes, seconds).

    Taught in: chapter 10, section 4 (GPTQ from scratch).
    """
    from toolkit.llm.blocks import record_inputs, walk_blocks_

    done: dict[str, tuple[GroupQuantized, float]] = {}

    def change(index, block, inputs):
        recorded = record_inputs(block, inputs, batch_size=batch_size)
        hessians = {name: hessian(x) for name, x in recorded.items()}
        del recorded
        for name, result in gptq_block_(block, hessians, bits, group_size, **options).items():
            done[f"model.layers.{index}.{name}"] = result

    walk_blocks_(model, segments, change, batch_size)
    return done
