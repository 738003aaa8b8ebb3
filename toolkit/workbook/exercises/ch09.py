"""Chapter 9 exercises: the bytes of a product-quantized table; the nearest codebook entry; the id lookup of a trimmed vocabulary."""

from __future__ import annotations

import torch

from toolkit.workbook.exercises import Exercise, Quiz, register


def pq_bytes(rows: int, dim: int, subvector: int, codebook_size: int = 256, codebook_bytes: int = 2) -> int:
    """Bytes of a product-quantized table: one byte per code, rows * dim / subvector codes, plus the codebooks:
    dim / subvector positions, each with codebook_size entries of subvector numbers of codebook_bytes bytes."""
    return rows * (dim // subvector) + dim * codebook_size * codebook_bytes


def nearest_codes(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """For every row of x (n, s), the index of the nearest row of centres (k, s) in Euclidean distance: (n,) int64."""
    return torch.cdist(x, centres).argmin(dim=1)


def remap_ids(ids: torch.Tensor, kept_ids: torch.Tensor, unk_id: int) -> torch.Tensor:
    """New ids after trimming: the position of each id in the sorted kept_ids, or the position of unk_id if it was not kept."""
    position = {int(v): i for i, v in enumerate(kept_ids.tolist())}
    unk = position[unk_id]
    return torch.tensor([position.get(int(v), unk) for v in ids.flatten().tolist()], dtype=torch.int64).reshape(ids.shape)


register(
    Exercise(
        name="09.pq_bytes",
        title="Exercise 9.1 (bytes of a product-quantized table)",
        reference=pq_bytes,
        cases=(
            # MiniLM: 30,522 x 384 at 4 numbers per code: 30,522 * 96 codes + 384 * 256 * 2 bytes of codebooks
            ((30522, 384, 4), 2_930_112 + 196_608),
            ((30522, 384, 8), 1_465_056 + 196_608),
            ((1000, 16, 2, 16, 4), 8_000 + 1_024),  # 8 codes per row; 16 numbers x 16 entries x 4 bytes
        ),
        hint=(
            'product quantization stores a one-byte code per piece of every row, plus the codebooks that the codes point into.',
            'bytes = rows · (dim / subvector) + dim · codebook_size · codebook_bytes (one codebook per piece position, each entry subvector numbers long).',
            'return rows * (dim // subvector) + dim * codebook_size * codebook_bytes',
        ),
    )
)

register(
    Exercise(
        name="09.nearest_codes",
        title="Exercise 9.2 (the nearest codebook entry)",
        reference=nearest_codes,
        cases=(
            # centres (0,0), (10,0), (0,10): (1,1) is nearest (0,0); (9,2) nearest (10,0); (2,7) nearest (0,10); (6,5): 61 vs 41 vs 61
            ((torch.tensor([[1.0, 1.0], [9.0, 2.0], [2.0, 7.0], [6.0, 5.0]]), torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])),
             torch.tensor([0, 1, 2, 1])),
            ((torch.tensor([[0.4], [0.6], [-3.0]]), torch.tensor([[0.0], [1.0]])), torch.tensor([0, 1, 0])),
        ),
        hint=(
            'each piece gets the index of the centre closest to it.',
            'code(x) = argmin_k ||x − c_k||², computed for all pieces at once from the (n, k) distance matrix.',
            'return torch.cdist(x, centres).argmin(dim=1)',
        ),
    )
)

register(
    Exercise(
        name="09.remap_ids",
        title="Exercise 9.3 (the id lookup of a trimmed vocabulary)",
        reference=remap_ids,
        cases=(
            # kept [0, 100, 101, 102, 2307]: 2307 -> 4, 101 -> 2, 9999 (not kept) -> position of 100 = 1
            ((torch.tensor([[101, 2307, 9999, 102]]), torch.tensor([0, 100, 101, 102, 2307]), 100), torch.tensor([[2, 4, 1, 3]])),
            ((torch.tensor([5, 7, 5]), torch.tensor([3, 5, 9]), 3), torch.tensor([1, 0, 1])),
        ),
        hint=(
            'a trimmed vocabulary renumbers the kept tokens 0, 1, 2, ... in order; any other token becomes the unknown token.',
            "new_id(v) = position of v in kept_ids if v is kept, else position of unk_id; the output keeps the input's shape.",
            'position = {int(t): i for i, t in enumerate(kept_ids.tolist())}; unk = position[unk_id]; return torch.tensor([position.get(int(v), unk) for v in ids.flatten().tolist()], dtype=torch.int64).reshape(ids.shape)',
        ),
    )
)

register(
    Quiz(
        name='09.engine',
        question="In the anchors table, OpenVINO with NNCF int8 runs faster than ONNX Runtime's dynamic int8, although both multiply int8 weights. Why?",
        choices={
            'a': 'OpenVINO stores the weights in fewer bytes, so less memory traffic limits each product',
            'b': 'static int8: ranges calibrated in advance and quantize steps fused into the kernels',
            'c': 'OpenVINO skips the attention layers',
            'd': 'ONNX Runtime runs its int8 products on one thread only, while OpenVINO uses all cores',
        },
        answer='b',
        explanations={
            'a': 'Both files hold int8 weights (about 23 MB each for the unpruned model); bytes are not speed.',
            'b': "Right: calibration (chapter 3's static quantization) moves the range-finding out of the forward pass, and the engine keeps data in int8 across fused operators. On a CPU with AMX, OpenVINO also runs the float parts in bf16. In full: Static int8: the activation ranges were calibrated in advance, so no range is measured at run time, and the engine fuses the quantize and dequantize steps into its kernels; dynamic int8 measures every batch and converts back to float after each product.",
            'c': "It computes the same function: its logits agree with PyTorch's (checked when exported).",
            'd': 'Both ran with the same thread count, printed beside the timings.',
        },
    )
)

register(
    Quiz(
        name='09.embeddings_dominate',
        question='After pruning half the encoder and quantizing it to int8, what takes most of the file, and why?',
        choices={
            'a': 'the attention matrices, because they are square and kept in fp32',
            'b': 'the classifier head',
            'c': "the tokenizer's vocabulary file",
            'd': 'the word-embedding table, which pruning does not touch',
        },
        answer='d',
        explanations={
            'a': "After pruning, each layer's attention holds 4 x 384 x 128 to 4 x 384 x 192 weights: small beside the table.",
            'b': 'The classifier is 384 x 2 weights, and the pooler 384 x 384.',
            'c': 'The tokenizer files are about 0.7 MB, and the chapter reports them apart from the model.',
            'd': 'Right: 11.7 M numbers against about 3.5-5.3 M in the pruned encoder; a row is read per token, so it costs bytes, not time. That is why the chapter compresses it on its own. In full: The word-embedding table: 30,522 rows x 384, more numbers than the six encoder layers, and pruning does not touch it.',
        },
    )
)

register(
    Quiz(
        name='09.trim_vs_pq',
        question="Trimming the vocabulary to the training split's tokens cost several points of accuracy; product quantization of the whole table cost almost none. What explains the difference?",
        choices={
            'a': 'trimming turns unseen sentiment words into [UNK]; PQ keeps every row',
            'b': 'PQ uses more bytes than trimming',
            'c': "trimming changes the tokenizer's lower-casing, so many words are split differently",
            'd': 'PQ retrains the classifier on the compressed table, which recovers the loss',
        },
        answer='a',
        explanations={
            'a': 'Right: the test split shares only part of its vocabulary with 2,100 training sentences, so a trimmed model loses whole words; PQ blurs every row a little but loses none. In full: Trimming sends every unseen word, often the word that carries the sentiment, to [UNK]; PQ keeps an approximate row for every token.',
            'b': 'The chapter compares them at similar bytes; the difference is what is lost, not how much is kept.',
            'c': 'Plain trimming keeps the tokenizer; only the rows of the table differ. (Its strong form gives the model a tokenizer of its own that spells unseen words in pieces, and the chapter measures that it loses about as much.)',
            'd': 'No training is involved: k-means only learns the codebooks from the table itself.',
        },
    )
)

register(
    Quiz(
        name='09.ablation',
        question='In the ablation, the pipeline without its distillation stage ends several points below the final model (a checked claim). What does that measure?',
        choices={
            'a': 'that the stages are independent, so the order in which they run makes no difference at all',
            'b': 'what distillation is worth here: int8 of the pruned model ends higher after it',
            'c': 'that distillation should come after quantization',
            'd': 'that pruning costs no accuracy',
        },
        answer='b',
        explanations={
            'a': 'The ablation removes stages and keeps the order of the rest; it never reorders them, so it says nothing about order. And the stages interact: int8 of an undistilled pruned model ends lower than int8 of a distilled one.',
            'b': "Right: each row removes one stage and keeps the others in place, so its distance to the final model is that stage's worth here. Why the order is prune, distil, then quantize is a separate argument (distillation needs a float model it can train; post-training int8 needs only the final shapes and a calibration set), which this table does not test.",
            'c': "No row puts distillation after quantization, so the table cannot compare the two orders; distilling a quantized model is chapter 5's quantization-aware training with a teacher.",
            'd': "The 'without pruning' row differs from the final model in accuracy too; read it.",
        },
    )
)

register(
    Quiz(
        name='09.batch_one',
        question="The compressed model's gain over the fastest anchor is smaller at batch 1 than at batch 64. Why?",
        choices={
            'a': 'batch 1 uses bf16',
            'b': 'the anchor caches batch-1 answers, so repeated sentences cost it almost nothing',
            'c': 'fixed per-call costs weigh more at batch 1, and pruning does not shrink them',
            'd': 'the tokenizer is slower at batch 1 and its time is counted in both measurements',
        },
        answer='c',
        explanations={
            'a': 'Both models run under the same engine settings at both batch sizes.',
            'b': 'Nothing is cached; every call computes.',
            'c': 'Right: fewer multiply-adds help where multiply-adds dominate. Fewer layers would remove whole groups of operators; the lesson plan lists the layer-dropping variants tried and what they cost in accuracy. In full: At batch 1 the matrix products are tiny, so fixed costs per operator and per call (launching kernels, copying inputs) weigh more, and removing heads and neurons does not shrink them.',
            'd': 'Tokenization is outside the timed call.',
        },
    )
)
