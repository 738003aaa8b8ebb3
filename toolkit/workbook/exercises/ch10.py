"""Chapter 10 exercises: the bytes of a group-quantized matrix; one step of GPTQ's column update; the bytes of a KIVI cache."""

from __future__ import annotations

import torch

from toolkit.workbook.exercises import Exercise, Quiz, register


def group_bytes(rows: int, cols: int, bits: int, group_size: int) -> int:
    """Bytes of a (rows, cols) matrix stored with ``bits``-bit codes in groups of ``group_size`` along each row,
    each group with an fp16 scale and an fp16 minimum (the last group of a row may be shorter):
    ceil(rows * cols * bits / 8) + rows * ceil(cols / group_size) * 4."""
    return (rows * cols * bits + 7) // 8 + rows * -(-cols // group_size) * 4


def obq_step(w: torch.Tensor, h_inv: torch.Tensor, q: int, quantized: torch.Tensor) -> torch.Tensor:
    """GPTQ's update after column ``q`` of ``w`` (N, K) is rounded to ``quantized`` (N,): the error, divided by
    [H^-1]_qq, is spread over columns q..K-1 along row q of the inverse Hessian ``h_inv`` (K, K):
    W[:, q:] -= ((W[:, q] - quantized) / [H^-1]_qq) [H^-1]_q,q: . Returns a new matrix; ``w`` is unchanged."""
    err = (w[:, q] - quantized) / h_inv[q, q]  # (N,)
    out = w.clone()
    out[:, q:] -= err[:, None] * h_inv[q, q:][None, :]
    return out


def kivi_bytes(layers: int, kv_heads: int, head_dim: int, tokens: int, bits: int, group: int) -> int:
    """Bytes of a KIVI cache holding ``tokens`` (a multiple of ``group``) per layer: the keys' and values' codes,
    plus fp16 (scale, minimum) pairs: the keys one per channel per group of tokens, the values one per token per head."""
    codes = 2 * tokens * kv_heads * head_dim * bits // 8
    key_pairs = (tokens // group) * kv_heads * head_dim
    value_pairs = tokens * kv_heads
    return layers * (codes + 4 * (key_pairs + value_pairs))


register(
    Exercise(
        name="10.group_bytes",
        title="Exercise 10.1 (bytes of a group-quantized matrix)",
        reference=group_bytes,
        cases=(
            # SmolLM2's MLP up projection, 1,536 x 576, in Q4_1's groups of 32: 442,368 code bytes + 1,536 x 18 groups x 4
            ((1536, 576, 4, 32), 442_368 + 110_592),
            # groups of 128 do not divide 576: 4 whole groups and one of 64, so 5 pairs per row
            ((1536, 576, 4, 128), 442_368 + 30_720),
            ((576, 576, 3, 128), 124_416 + 11_520),
            ((3, 5, 3, 4), 6 + 24),  # 45 bits round up to 6 bytes; 2 groups per row
        ),
        hint=(
            "the codes take bits/8 bytes per weight, packed; every group of a row adds its own scale and minimum, two fp16 numbers.",
            "bytes = ⌈rows · cols · bits / 8⌉ + rows · ⌈cols / group_size⌉ · 4 (a shorter last group still needs its pair).",
            "return (rows * cols * bits + 7) // 8 + rows * -(-cols // group_size) * 4",
        ),
    )
)

register(
    Exercise(
        name="10.obq_step",
        title="Exercise 10.2 (GPTQ's update on a 3 x 4 matrix)",
        reference=obq_step,
        rel_tol=1e-6,
        cases=(
            # column 0 rounded: only the middle row had an error, 0.5 / [H^-1]_00 = 0.25, spread along row 0 of H^-1
            ((torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0], [-2.0, 1.0, 1.5, -0.5]]),
              torch.tensor([[2.0, 1.0, 0.0, 0.0], [1.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 1.0], [0.0, 0.0, 1.0, 2.0]]),
              0, torch.tensor([1.0, 0.0, -2.0])),
             torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, -1.25, 0.0, 2.0], [-2.0, 1.0, 1.5, -0.5]])),
            # column 1: errors (-0.125, -0.0625, -0.0625) compensated in column 2 through [H^-1]_12 = 1; column 0 is done
            ((torch.tensor([[0.25, 0.75, -0.5, 1.25], [1.5, -0.625, 1.0, 0.125], [-1.0, 0.375, 0.5, -0.75]]),
              torch.tensor([[2.0, 1.0, 0.0, 0.0], [1.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 1.0], [0.0, 0.0, 1.0, 2.0]]),
              1, torch.tensor([1.0, -0.5, 0.5])),
             torch.tensor([[0.25, 1.0, -0.375, 1.25], [1.5, -0.5, 1.0625, 0.125], [-1.0, 0.5, 0.5625, -0.75]])),
        ),
        hint=(
            "the rounding error of column q, scaled by the inverse Hessian, is subtracted from the columns not yet "
            "quantized; the same formula sets column q itself to its rounded value.",
            "δ = (W[:, q] − quantized) / [H⁻¹]_qq;  W[:, q:] ← W[:, q:] − δ ⊗ [H⁻¹]_(q, q:)  (work on a copy).",
            "err = (w[:, q] - quantized) / h_inv[q, q]; out = w.clone(); out[:, q:] -= err[:, None] * h_inv[q, q:][None, :]; return out",
        ),
    )
)

register(
    Exercise(
        name="10.kivi_bytes",
        title="Exercise 10.3 (the bytes of a KIVI cache)",
        reference=kivi_bytes,
        cases=(
            # SmolLM2: 30 layers, 3 key-value heads of 64; 1,024 tokens at 4 bits in groups of 32
            ((30, 3, 64, 1024, 4, 32), 30 * (196_608 + 4 * (32 * 192 + 1024 * 3))),
            ((30, 3, 64, 1024, 8, 32), 30 * (393_216 + 4 * (32 * 192 + 1024 * 3))),
            ((1, 1, 4, 8, 2, 4), 16 + 4 * (8 + 8)),  # 2 x 32 two-bit codes = 16 bytes; 8 key pairs, 8 value pairs
        ),
        hint=(
            "codes for every key and value; then count the (scale, minimum) pairs: keys share one per channel over a group "
            "of tokens, values one per token.",
            "per layer: 2·T·h·d·bits/8 + 4·((T/g)·h·d + T·h) bytes, times the layers (T tokens, h heads, d head size, g group).",
            "codes = 2 * tokens * kv_heads * head_dim * bits // 8; return layers * (codes + 4 * ((tokens // group) * kv_heads * head_dim + tokens * kv_heads))",
        ),
    )
)

register(
    Quiz(
        name="10.decode_bound",
        question="Generating one token at a time, SmolLM2 in fp32 runs far below the machine's arithmetic peak. What limits it?",
        choices={
            "a": "the tokenizer, which runs in Python for every new token",
            "b": "memory traffic: every weight is read once per token and used for one multiply-add",
            "c": "the softmax over the 49,152-word vocabulary",
            "d": "the KV cache, which must be copied in full at every step",
        },
        answer="b",
        explanations={
            "a": "The timed steps take token ids in and give logits out; no tokenizer runs inside them.",
            "b": "Right: a batch-1 step is a matrix-vector product per layer, one multiply-add per weight read, so the bytes "
                 "of the weights divided by the memory bandwidth bound the tokens per second; fewer bytes per weight raise that ceiling.",
            "c": "It is one vector of 49,152 numbers per step: the output projection that computes its inputs reads 28 M "
                 "weights, and that read is the cost.",
            "d": "The cache grows by one token per step and is read, not copied; at a 64-token prompt it is small beside the weights.",
        },
    )
)

register(
    Quiz(
        name="10.gguf_grid",
        question="Chapter 2's asymmetric 4-bit quantizer, in groups of 32 with a float minimum, reproduced the GGUF file's "
                 "weights exactly. What does that tell you?",
        choices={
            "a": "that 4 bits lose nothing on any model",
            "b": "that the file was stored in fp32 and quantized when loaded",
            "c": "that the file's weights already lie on that grid: quantizing them again finds the same codes",
            "d": "that transformers re-quantized the weights while it loaded them",
        },
        answer="c",
        explanations={
            "a": "The original fp32 weights are gone; the file is the 4-bit model. Quantizing it to 3 bits costs a lot, as section 3 measures.",
            "b": "The file holds Q4_1 blocks (codes, an fp16 scale and minimum per 32 weights), 98 MB for 135 M weights.",
            "c": "Right: Q4_1 is that grid (w = q·d + m per group of 32); each group's minimum and maximum are grid points, so "
                 "min-max quantization recovers the same scale, minimum and codes. The 'reference' of this chapter is itself a 4-bit model.",
            "d": "transformers dequantizes the blocks to float once; the section compares against the blocks decoded by hand.",
        },
    )
)

register(
    Quiz(
        name="10.gptq_update",
        question="In GPTQ, after a column is rounded, why do the columns not yet rounded change?",
        choices={
            "a": "to cancel the rounding error in the layer's output on the calibration inputs",
            "b": "so that every column keeps the same mean as it had before any rounding",
            "c": "because each group's scale and minimum are recomputed after every single column",
            "d": "to make the weights sparser before they are rounded",
        },
        answer="a",
        explanations={
            "a": "Right: minimizing ||WX − ŴX||² with column q fixed gives the other columns' optimal change, δ·[H⁻¹]_(q,:)/[H⁻¹]_qq "
                 "(Exercise 10.2); columns whose inputs correlate with column q's take up its error.",
            "b": "The update follows the inputs' correlations (H = 2XXᵀ), not any column statistic.",
            "c": "Each group's scale is set once, when its first column is reached (or, with act-order, from the original weights).",
            "d": "Nothing is set to zero; that is SparseGPT, which uses the same update to compensate pruned weights.",
        },
    )
)

register(
    Quiz(
        name="10.awq_free",
        question="AWQ multiplies some input channels of a layer's weights by s and divides the previous operation's output "
                 "by s. Why does the float model not change?",
        choices={
            "a": "because s is always rounded to a power of two, which floating point represents exactly",
            "b": "because AWQ fine-tunes the model afterwards",
            "c": "because the scales are applied only while quantizing and then removed",
            "d": "because (x / s)(W s)ᵀ = x Wᵀ, with 1/s folded into the operation before the layer",
        },
        answer="d",
        explanations={
            "a": "AWQ searches s = mean|x|^α over a grid of α; s is any float.",
            "b": "AWQ needs no gradient and no training: a search on calibration activations, then round-to-nearest.",
            "c": "The scales stay in the model: the RMSNorm's weight (or the previous layer's rows) holds 1/s, the layer's columns hold s.",
            "d": "Right: the product is unchanged in exact arithmetic; only the rounding changes, since the salient channels' weights, "
                 "multiplied by s > 1, lose less to the grid.",
        },
    )
)

register(
    Quiz(
        name="10.kivi_axes",
        question="A KIVI cache quantizes keys per channel and values per token. Why not both per token?",
        choices={
            "a": "because values are not used in attention",
            "b": "because a few key channels are large for every token and would set each token's range",
            "c": "because per-channel quantization needs far fewer bytes than per-token quantization would need",
            "d": "because keys are stored in fp16 and values in fp32",
        },
        answer="b",
        explanations={
            "a": "Values are what attention averages; their error goes straight into the output.",
            "b": "Right: the outlier channels of the keys are the same channels token after token, so a per-channel range isolates them; "
                 "values have no such channels, and each token's output mixes them, so per token works.",
            "c": "The counts are similar: one pair per channel per group of tokens against one pair per token (Exercise 10.3).",
            "d": "Both are stored at the same bits; the difference is only the axis of their ranges.",
        },
    )
)
