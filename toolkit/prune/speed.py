"""Does sparsity make a matrix product faster? Time it.

y = W x for W (out, in) at a given sparsity and x (in, tokens): dense ``W @ x`` against
``torch.sparse.mm`` with W in CSR. A sparse kernel skips the zeros but pays for indirect
memory access and loses the dense kernel's blocking and vector units, so it wins only above
some sparsity: the crossover, which depends on the CPU, the shape and the library.
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch

from toolkit.prune.masks import check_sparsity


def _median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def random_sparse(out_features: int, in_features: int, sparsity: float, seed: int = 0) -> torch.Tensor:
    """A random weight (out, in) with round(sparsity * n) entries set to zero."""
    sparsity = check_sparsity(sparsity)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=g)
    drop = torch.randperm(w.numel(), generator=g)[: round(sparsity * w.numel())]
    w.view(-1)[drop] = 0.0
    return w


def sparse_vs_dense(weight: torch.Tensor, tokens: int = 1024, warmup: int = 3, repeats: int = 15) -> dict[str, float]:
    """Median ms of W @ x dense and with W as CSR (torch.sparse.mm), x of shape (in, tokens)."""
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer; got {tokens!r}")
    x = torch.randn(weight.shape[1], tokens, generator=torch.Generator().manual_seed(1))  # (in, tokens)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.to_sparse_csr()
    with torch.inference_mode():
        dense_ms = _median_ms(lambda: weight @ x, warmup, repeats)  # (out, tokens)
        sparse_ms = _median_ms(lambda: torch.sparse.mm(csr, x), warmup, repeats)
    return {"dense_ms": dense_ms, "sparse_ms": sparse_ms, "speedup": dense_ms / sparse_ms, "threads": torch.get_num_threads()}
