"""Sparse weights that compute: a random sparse matrix, and linear layers run by a sparse kernel.

y = W x for W (out, in) at a given sparsity: ``torch.sparse.mm`` with W in CSR skips the zeros
but pays for indirect memory access and loses the dense kernel's blocking and vector units, so it
wins only above some sparsity: the crossover, which depends on the CPU, the shape and the library
(``toolkit.measure.sparse_vs_dense`` times it).
"""

from __future__ import annotations

import warnings

import torch

from toolkit.layers import swap_child_
from toolkit.prune.masks import check_sparsity


def random_sparse(out_features: int, in_features: int, sparsity: float, seed: int = 0) -> torch.Tensor:
    """A random weight (out, in) with round(sparsity * n) entries set to zero.

    Taught in: chapter 6, section 6 (What sparsity buys, and what it does not).
    """
    sparsity = check_sparsity(sparsity)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=g)
    drop = torch.randperm(w.numel(), generator=g)[: round(sparsity * w.numel())]
    w.view(-1)[drop] = 0.0
    return w


class SparseLinear(torch.nn.Module):
    """y = x Wᵀ + b with W stored in CSR and multiplied by ``torch.sparse.mm``: (..., in) -> (..., out)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self.weight = torch.nn.Parameter(linear.weight.detach().to_sparse_csr(), requires_grad=False)  # (out, in)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)  # (tokens, in)
        y = torch.sparse.mm(self.weight, flat.t()).t()  # (out, in) @ (in, tokens) -> (tokens, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def with_sparse_linears(model: torch.nn.Module, names) -> torch.nn.Module:
    """A copy of ``model`` whose linear layers ``names`` run as ``SparseLinear`` (``model`` is not changed).

    Taught in: chapter 8, section 6 (The 90% model on disk and in time).
    """
    import copy

    modules = dict(model.named_modules())
    unknown = [n for n in names if not isinstance(modules.get(n), torch.nn.Linear)]
    if unknown:
        raise ValueError(f"names must be nn.Linear layers of the model; not found: {unknown[:3]}")
    result = copy.deepcopy(model)
    for name in names:
        swap_child_(result, name, SparseLinear(result.get_submodule(name)))
    return result.eval()
