"""Product quantization of an embedding table: a few bits per number, and every row kept.

Scalar quantization (chapters 2-4) rounds every number on its own. *Vector* quantization rounds a
whole short vector at once to the nearest entry of a learned list of vectors, a codebook, and
stores only the entry's index. *Product* quantization (Jégou et al. 2011) cuts each row of the
table into M sub-vectors of ``subvector`` numbers and gives every one of the M positions its own
codebook of K = 256 entries, learned with k-means:

    row e ∈ R^d  ->  (e_1, ..., e_M), e_m ∈ R^(d/M)
    code_m(e)    = argmin_k ||e_m - C_m[k]||²            # one byte per sub-vector
    ê            = (C_1[code_1], ..., C_M[code_M])       # the decoded row

Storage per row: M bytes instead of 4d (fp32), i.e. 8 / subvector bits per number: subvector=4
gives 2 bits per number, subvector=8 gives 1 bit. The codebooks add M·K·(d/M) numbers, d·K in
all (98,304 for MiniLM), stored in fp16. Decoding is a table lookup (a gather), so it runs inside
any inference engine and costs nothing measurable beside the encoder.

k-means (Lloyd's algorithm), per position m, over the V rows:

    assign:  code[v] = argmin_k ||x_v - c_k||²,  with ||x - c||² = ||x||² - 2 x·c + ||c||²
    update:  c_k = mean of the x_v with code[v] = k  (an empty cluster keeps its centre)
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from toolkit.runtime import check_int

CODEBOOK_SIZE = 256  # one byte per code


def _check(weight: torch.Tensor, subvector: int) -> None:
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D table (rows, dim); got shape {tuple(weight.shape)}")
    if isinstance(subvector, bool) or not isinstance(subvector, int) or subvector < 1 or weight.shape[1] % subvector:
        divisors = [s for s in range(1, weight.shape[1] + 1) if weight.shape[1] % s == 0 and s <= 32]
        raise ValueError(f"subvector must divide the row length {weight.shape[1]}; accepted: {divisors}; got {subvector!r}")
    if weight.shape[0] < CODEBOOK_SIZE:
        raise ValueError(f"weight needs at least {CODEBOOK_SIZE} rows to learn {CODEBOOK_SIZE} codebook entries; got {weight.shape[0]}")


def _nearest(x: torch.Tensor, centres: torch.Tensor, chunk: int) -> torch.Tensor:
    """(M, V, s), (M, K, s) -> (M, V) index of the nearest centre, computed a few positions at a time."""
    codes = torch.empty(x.shape[:2], dtype=torch.int64)
    for m in range(0, x.shape[0], chunk):
        xs, cs = x[m : m + chunk], centres[m : m + chunk]
        # ||x||² is the same for every centre, so argmin ||x - c||² = argmin (||c||² - 2 x·c)
        distances = (cs * cs).sum(-1).unsqueeze(1) - 2 * torch.bmm(xs, cs.transpose(1, 2))  # (chunk, V, K)
        codes[m : m + chunk] = distances.argmin(-1)
    return codes


def product_quantize(
    weight: torch.Tensor, subvector: int = 4, iterations: int = 12, seed: int = 0, sample_rows: int | None = 8192,
    row_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Learn the codebooks of ``weight`` (V, d) and encode it: returns codes (V, M) uint8 and codebooks (M, 256, subvector).

    The codebooks are learned on ``sample_rows`` rows drawn at random (all rows if None), as FAISS
    does: 8,192 rows give each of the 256 centres 32 points on average, and every row is then
    encoded with the learned codebooks.

    ``row_weights`` (V,) makes it *weighted* k-means, which minimises Σ_v w_v ||x_v - ĉ(x_v)||²
    instead of the plain sum: the sample is drawn with replacement with probability w_v / Σ w
    (a row drawn twice counts twice, which is what its weight means), so the centres follow the
    rows that weigh most. With token counts as weights (``toolkit.prune.vocab.token_counts``), the tokens a task
    reads often get the most accurate rows. Needs ``sample_rows``.
    """
    _check(weight, subvector)
    if row_weights is not None:
        if sample_rows is None:
            raise ValueError("row_weights needs sample_rows (the size of the weighted sample); got sample_rows=None")
        if row_weights.shape != (weight.shape[0],) or not bool(torch.isfinite(row_weights).all()) or bool((row_weights < 0).any()) \
                or int((row_weights > 0).sum()) < CODEBOOK_SIZE:
            raise ValueError(f"row_weights must be ({weight.shape[0]},) finite, non-negative, with at least {CODEBOOK_SIZE} "
                             f"positive entries; got shape {tuple(row_weights.shape)}")
    check_int("iterations", iterations)
    if sample_rows is not None and (isinstance(sample_rows, bool) or not isinstance(sample_rows, int) or sample_rows < CODEBOOK_SIZE):
        raise ValueError(f"sample_rows must be None or an integer of at least {CODEBOOK_SIZE}; got {sample_rows!r}")
    rows, dim = weight.shape
    positions = dim // subvector
    x = weight.detach().float().reshape(rows, positions, subvector).transpose(0, 1).contiguous()  # (M, V, s)
    generator = torch.Generator().manual_seed(seed)
    if row_weights is None:
        order = torch.randperm(rows, generator=generator)
        sample = x[:, order[: sample_rows or rows]]  # (M, n, s) the rows k-means learns from
        start = order[:CODEBOOK_SIZE]  # K distinct rows to start from
    else:
        drawn = torch.multinomial(row_weights.double(), sample_rows, replacement=True, generator=generator)  # (n,)
        sample = x[:, drawn]  # (M, n, s): a row appears about n·w_v/Σw times
        first = torch.unique(drawn, sorted=False)
        start = first[torch.randperm(len(first), generator=generator)]
        if len(start) < CODEBOOK_SIZE:  # too few distinct rows drawn: complete with other positive-weight rows
            others = torch.nonzero(row_weights > 0).flatten()
            start = torch.cat([start, others[~torch.isin(others, start)]])
        start = start[:CODEBOOK_SIZE]
    centres = x[:, start].clone()  # (M, K, s)
    chunk = max(1, 2**28 // (rows * CODEBOOK_SIZE * 4))  # positions per distance block: about 256 MiB of float32
    for _ in range(iterations):
        codes = _nearest(sample, centres, chunk)  # (M, n)
        sums = torch.zeros_like(centres).scatter_add_(1, codes.unsqueeze(-1).expand(-1, -1, subvector), sample)
        counts = torch.zeros(positions, CODEBOOK_SIZE).scatter_add_(1, codes, torch.ones(codes.shape))
        centres = torch.where(counts.unsqueeze(-1) > 0, sums / counts.clamp(min=1).unsqueeze(-1), centres)
    return _nearest(x, centres, chunk).T.to(torch.uint8).contiguous(), centres


def decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """(..., M) uint8 codes, (M, K, s) codebooks -> (..., M·s) decoded rows."""
    positions, size, subvector = codebooks.shape
    offsets = torch.arange(positions, device=codes.device) * size  # code m indexes the m-th block of the flat table
    flat = codebooks.reshape(positions * size, subvector)
    return F.embedding(codes.long() + offsets, flat).flatten(-2)  # (..., M, s) -> (..., M·s)


class ProductQuantizedEmbedding(torch.nn.Module):
    """An embedding table stored as one byte per ``subvector`` numbers plus fp16 codebooks; ``forward`` decodes the rows it needs."""

    def __init__(self, codes: torch.Tensor, codebooks: torch.Tensor):
        super().__init__()
        if codes.dtype != torch.uint8 or codes.dim() != 2 or codebooks.dim() != 3 or codes.shape[1] != codebooks.shape[0]:
            raise ValueError(f"codes must be (rows, M) uint8 and codebooks (M, 256, subvector); got {tuple(codes.shape)} "
                             f"{codes.dtype} and {tuple(codebooks.shape)}")
        positions, size, subvector = codebooks.shape
        self.register_buffer("codes", codes.clone())  # (V, M) uint8
        # the codebooks stored flat, (M·K, s) fp16, so the graph an engine sees is one gather from a 2-D constant
        self.register_buffer("table", codebooks.to(torch.float16).reshape(positions * size, subvector).clone())
        self.register_buffer("offsets", torch.arange(positions) * size)  # (M,) start of each position's codebook
        self.subvector = subvector

    @property
    def codebooks(self) -> torch.Tensor:
        """(M, 256, s) fp16."""
        return self.table.reshape(-1, CODEBOOK_SIZE, self.subvector)

    @property
    def num_embeddings(self) -> int:
        return int(self.codes.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.codes.shape[1] * self.subvector)

    @property
    def weight(self) -> torch.Tensor:
        """The decoded table (V, d), for code that reads ``embedding.weight``."""
        return decode(self.codes, self.codebooks.float())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # (batch, seq) -> (batch, seq, d)
        codes = self.codes[input_ids].long() + self.offsets  # (batch, seq, M): rows of the flat table
        return F.embedding(codes, self.table.float()).flatten(-2)  # (batch, seq, M, s) -> (batch, seq, M·s)

    def stored_bytes(self) -> int:
        """Bytes of the codes and the codebooks (the offsets are recomputed from the shapes)."""
        return self.codes.numel() * self.codes.element_size() + self.table.numel() * self.table.element_size()

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings} rows x {self.embedding_dim}, {self.codes.shape[1]} codes of {self.subvector} numbers "
                f"({8 / self.subvector:g} bits per number)")


def quantize_word_embeddings(
    model: torch.nn.Module, subvector: int = 4, iterations: int = 12, seed: int = 0, sample_rows: int | None = 8192,
    row_weights: torch.Tensor | None = None,
) -> torch.nn.Module:
    """A copy of a BERT-layout ``model`` whose word-embedding table is product-quantized (the original is not changed);
    ``row_weights`` (one per token) as in ``product_quantize``.

    Taught in: chapter 9, section 3 (Stage two: the embedding table).
    """
    table = model.base_model.embeddings.word_embeddings
    if not isinstance(table, torch.nn.Embedding):
        raise ValueError(f"model's word embeddings must be a torch.nn.Embedding; got {type(table).__name__}")
    codes, codebooks = product_quantize(table.weight, subvector, iterations, seed, sample_rows, row_weights)
    result = copy.deepcopy(model)
    result.base_model.embeddings.word_embeddings = ProductQuantizedEmbedding(codes, codebooks)
    return result
