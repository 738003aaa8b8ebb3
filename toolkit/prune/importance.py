"""How much does each weight matter? Four answers, one score per weight (same shape as W).

For a linear layer y = x W^T with W of shape (out, in):

- **magnitude**:   S = |W|  (p=1) or W^2 (p=2). Element-wise the two rank weights identically;
  they differ once weights are scored in groups (rows, heads: Chapter 7).
- **gradient**:    S = sum_b |dL_b/dW|, accumulated over batches b: how sensitive the loss is.
- **taylor**:      S = sum_b |W * dL_b/dW|, a first-order *sensitivity*. The first-order
  *prediction* of the loss change when w is set to zero is L(W - w e) - L(W) ~ -w * sum_b dL_b/dw,
  a signed number; at a converged model the summed gradient is near zero and that prediction is
  mostly noise, while the per-batch terms are not. Summing |w g_b| over batches measures how
  strongly the loss reacts to the weight, batch by batch; that is the score used here.
- **activation**: S_ij = |W_ij| * ||x_j||_2, the score of Wanda (Sun et al. 2023), where x_j is the
  j-th input feature over every real token (padding excluded): a small weight on a large input
  can matter more than a large weight on an input that is nearly always zero. Wanda ranks these
  scores within each output row (``row_masks``); local and global masks rank them per layer or
  over the whole model instead, and Chapter 6 compares the three.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from toolkit import layers
from toolkit.data import Example, batches
from toolkit.layers import device_of, eval_mode, run_with_hooks

CRITERIA = ("magnitude", "gradient", "taylor", "activation")
DEFAULT_SKIP = ("classifier", "bert.pooler")


def prunable_modules(model: torch.nn.Module, modules: Iterable[str] | None = None, skip: Iterable[str] = DEFAULT_SKIP) -> list[str]:
    """Names of the nn.Linear layers to prune: ``modules`` (checked), or every one not under ``skip``.

    Other weight layers (transformers' ``Conv1D``, convolutions) are not scored: they are named
    in a warning. Choosing no layer inside the model's blocks is an error.

    Taught in: chapter 6.
    """
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    skipped = layers.left_alone(model, set(linears), conv1d_handled=False)
    layers.warn_left_alone(skipped, "pruning")
    if modules is not None:
        modules = list(modules)
        unknown = [n for n in modules if n not in linears]
        if unknown:
            raise ValueError(f"module names {unknown} are not nn.Linear layers of the model; names look like: {', '.join(linears[:4])}, ...")
        return modules
    skip = tuple(skip)
    chosen = [n for n in linears if not any(n == s or n.startswith(s + ".") for s in skip)]
    layers.require_block_layers(model, chosen, "pruning", skipped)
    return chosen


def _needs_data(criterion: str, tokenizer, examples) -> None:
    if tokenizer is None or not examples:
        raise ValueError(f"criterion {criterion!r} needs tokenizer= and a non-empty examples= (sentences to measure on)")


def _gradient_scores(model, names, tokenizer, examples, batch_size, times_weight):
    params = {n: model.get_submodule(n).weight for n in names}  # gradients land in .grad: saved and restored below
    saved_flags = {p: p.requires_grad for p in model.parameters()}
    saved_grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in params.items()}
    scores = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    dev = device_of(model)
    try:
        with eval_mode(model):  # no dropout: the scores are a property of the model, not of a random mask
            for batch in batches(tokenizer, examples, batch_size=batch_size):
                for p in params.values():
                    p.grad = None
                model(**{k: v.to(dev) for k, v in batch.items()}).loss.backward()  # (batch,) labels -> scalar loss
                with torch.no_grad():
                    for n, p in params.items():
                        g = p.grad.float()
                        scores[n] += (p.float() * g).abs() if times_weight else g.abs()
    finally:
        for p, flag in saved_flags.items():
            p.requires_grad_(flag)
        for n, p in params.items():
            p.grad = saved_grads[n]
    return scores


def _input_norms(model, names, tokenizer, examples, batch_size):
    """||x_j||_2 over all real tokens, for the input features j of each named layer: {name: (in,)}."""
    sums = {n: torch.zeros(model.get_submodule(n).in_features) for n in names}
    mask_holder: list[torch.Tensor] = []

    def hook_for(name):
        def hook(module, inputs):
            x = inputs[0].detach().float()  # (batch, seq, in)
            keep = mask_holder[0].bool()  # (batch, seq)
            sums[name] += (x[keep] ** 2).sum(dim=0).cpu()  # (in,)
        return hook

    run_with_hooks(model, {model.get_submodule(n): hook_for(n) for n in names}, tokenizer, examples, mask_holder, batch_size, pre=True)
    return {n: s.sqrt() for n, s in sums.items()}


def importance(
    model: torch.nn.Module,
    criterion: str,
    tokenizer=None,
    examples: Sequence[Example] | None = None,
    modules: Iterable[str] | None = None,
    p: int = 1,
    batch_size: int = 16,
) -> dict[str, torch.Tensor]:
    """Importance scores {layer name: (out, in)} by ``criterion`` (see the module doc).

    ``magnitude`` needs nothing else; ``gradient`` and ``taylor`` need labelled ``examples``
    (the loss is computed on them); ``activation`` needs ``examples`` to measure inputs.
    The model is not changed: its weights, gradients, modes and requires_grad flags are restored.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")
    if p not in (1, 2):
        raise ValueError(f"p must be 1 (|w|) or 2 (w^2); got {p!r}")
    names = prunable_modules(model, modules)
    if criterion == "magnitude":
        return {n: model.get_submodule(n).weight.detach().float().abs().pow(p) for n in names}
    _needs_data(criterion, tokenizer, examples)
    if criterion in ("gradient", "taylor"):
        return _gradient_scores(model, names, tokenizer, examples, batch_size, times_weight=criterion == "taylor")
    norms = _input_norms(model, names, tokenizer, examples, batch_size)
    return {n: model.get_submodule(n).weight.detach().float().abs() * norms[n].reshape(1, -1) for n in names}  # (out, in) * (1, in)
