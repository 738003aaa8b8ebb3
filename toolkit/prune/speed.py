"""Does sparsity make a matrix product faster? Time it.

y = W x for W (out, in) at a given sparsity and x (in, tokens): dense ``W @ x`` against
``torch.sparse.mm`` with W in CSR. A sparse kernel skips the zeros but pays for indirect
memory access and loses the dense kernel's blocking and vector units, so it wins only above
some sparsity: the crossover, which depends on the CPU, the shape and the library.
"""

from __future__ import annotations

import warnings

import torch

from toolkit.prune.masks import check_sparsity


def random_sparse(out_features: int, in_features: int, sparsity: float, seed: int = 0) -> torch.Tensor:
    """A random weight (out, in) with round(sparsity * n) entries set to zero."""
    sparsity = check_sparsity(sparsity)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=g)
    drop = torch.randperm(w.numel(), generator=g)[: round(sparsity * w.numel())]
    w.view(-1)[drop] = 0.0
    return w


def sparse_vs_dense(weight: torch.Tensor, tokens: int = 1024, warmup: int = 3, repeats: int = 15) -> dict:
    """y = W x dense against ``torch.sparse.mm`` with W in CSR, x of shape (in, tokens), timed in
    ``repeats`` alternating rounds (``toolkit.measure.compare_calls``).

    Returns the two medians in ms, ``speedup`` (dense time / sparse time, the median of the
    per-round ratios), the thread count and the whole ``SpeedComparison`` under ``"comparison"``.
    """
    from toolkit.measure import compare_calls

    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer; got {tokens!r}")
    x = torch.randn(weight.shape[1], tokens, generator=torch.Generator().manual_seed(1))  # (in, tokens)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.to_sparse_csr()
    workload = f"W {weight.shape[0]}x{weight.shape[1]} at {1 - csr.values().numel() / weight.numel():.0%} sparsity @ x {weight.shape[1]}x{tokens}"
    with torch.inference_mode():
        comparison = compare_calls(lambda: weight @ x, lambda: torch.sparse.mm(csr, x), rounds=repeats, warmup=warmup,
                                   names=("dense", "CSR"), workload=workload)  # (out, tokens) each
    return {"dense_ms": comparison.baseline_ms, "sparse_ms": comparison.candidate_ms, "speedup": comparison.ratio,
            "threads": comparison.threads, "comparison": comparison}


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
    """A copy of ``model`` whose linear layers ``names`` run as ``SparseLinear`` (``model`` is not changed)."""
    import copy

    modules = dict(model.named_modules())
    unknown = [n for n in names if not isinstance(modules.get(n), torch.nn.Linear)]
    if unknown:
        raise ValueError(f"names must be nn.Linear layers of the model; not found: {unknown[:3]}")
    result = copy.deepcopy(model)
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(result.get_submodule(parent) if parent else result, child, SparseLinear(result.get_submodule(name)))
    return result.eval()
