"""Chapter 7 exercises: the rows a head owns; an FFN neuron cut by hand; a layer's multiply-adds; filters kept in a residual stage."""

from __future__ import annotations

import math

import torch

from toolkit.workbook.exercises import Exercise, Quiz, register


def head_rows(heads: list, head_size: int) -> torch.Tensor:
    """Rows of W_q, W_k, W_v (and columns of W_o) that belong to ``heads``: h*d_h ... (h+1)*d_h - 1 for each h, sorted."""
    return torch.cat([torch.arange(h * head_size, (h + 1) * head_size) for h in sorted(heads)])


def remove_ffn_neuron(w_in: torch.Tensor, b_in: torch.Tensor, w_out: torch.Tensor, j: int):
    """Neuron j of an FFN: row j of W_in (f, d), entry j of b_in (f,), column j of W_out (d, f). Returns the three without it."""
    keep = [i for i in range(w_in.shape[0]) if i != j]
    return w_in[keep], b_in[keep], w_out[:, keep]


def layer_macs(d: int, heads: int, head_size: int, ffn: int) -> int:
    """Multiply-adds per token of one encoder layer's linear layers: q, k, v, o (4 d H d_h) and the FFN (2 d f)."""
    return 4 * d * heads * head_size + 2 * d * ffn


def stage_kept_filters(writer_norms: list, keep: float) -> torch.Tensor:
    """Channels of a residual stream kept by the L1 criterion: s_c = sum over writers of ||W[c]||_1, top ceil(keep * C), sorted."""
    total = sum(writer_norms)
    k = max(1, math.ceil(keep * total.numel() - 1e-9))
    return total.topk(k).indices.sort().values


_g = torch.Generator().manual_seed(7)
_W_IN, _B_IN, _W_OUT = torch.randn(6, 4, generator=_g), torch.randn(6, generator=_g), torch.randn(4, 6, generator=_g)
_NORMS = [torch.tensor([1.0, 9.0, 2.0, 3.0]), torch.tensor([5.0, 0.5, 0.2, 4.0]), torch.tensor([0.1, 0.2, 0.3, 0.4])]

register(
    Exercise(
        name="07.head_rows",
        title="Exercise 7.1 (the rows a head owns)",
        reference=head_rows,
        cases=(
            (([0, 2], 4), torch.tensor([0, 1, 2, 3, 8, 9, 10, 11])),
            (([3], 32), torch.arange(96, 128)),
            (([5, 1], 2), torch.tensor([2, 3, 10, 11])),
        ),
        hint=(
            "the heads' query vectors sit one after another in the rows of W_q; head h owns a block of head_size consecutive rows.",
            'rows of head h: h · d_h … (h + 1) · d_h − 1, concatenated over the heads in increasing order.',
            'return torch.cat([torch.arange(h * head_size, (h + 1) * head_size) for h in sorted(heads)])',
        ),
    )
)

register(
    Exercise(
        name="07.remove_ffn_neuron",
        title="Exercise 7.3 (an FFN neuron cut by hand)",
        reference=remove_ffn_neuron,
        cases=(
            # neuron 2 of 6: rows 0, 1, 3, 4, 5 of W_in and b_in; the same columns of W_out
            ((_W_IN, _B_IN, _W_OUT, 2), (_W_IN[[0, 1, 3, 4, 5]], _B_IN[[0, 1, 3, 4, 5]], _W_OUT[:, [0, 1, 3, 4, 5]])),
            ((_W_IN, _B_IN, _W_OUT, 0), (_W_IN[1:], _B_IN[1:], _W_OUT[:, 1:])),
            ((_W_IN, _B_IN, _W_OUT, 5), (_W_IN[:5], _B_IN[:5], _W_OUT[:, :5])),
        ),
        hint=(
            'an FFN neuron is written by one row of W_in (and its bias) and read by one column of W_out; remove all three together.',
            'keep = every index except j; W_in[keep], b_in[keep], W_out[:, keep].',
            'keep = [i for i in range(w_in.shape[0]) if i != j]; return w_in[keep], b_in[keep], w_out[:, keep]',
        ),
    )
)

register(
    Exercise(
        name="07.layer_macs",
        title="Exercise 7.2 (a layer's multiply-adds per token)",
        reference=layer_macs,
        cases=(((384, 12, 32, 1536), 1_769_472), ((384, 6, 32, 768), 884_736), ((4, 1, 2, 3), 56)),
        hint=(
            'a linear layer from in to out features costs in × out multiply-adds per token; add up the layers of one block.',
            'q, k, v: 3 · d · H d_h; attention output: H d_h · d; FFN: d · f + f · d; total 4 d H d_h + 2 d f.',
            'return 4 * d * heads * head_size + 2 * d * ffn',
        ),
    )
)

register(
    Exercise(
        name="07.stage_kept_filters",
        title="Exercise 7.4 (filters kept in a residual stage)",
        reference=stage_kept_filters,
        cases=(
            ((_NORMS, 0.5), torch.tensor([1, 3])),
            ((_NORMS, 0.75), torch.tensor([0, 1, 3])),
            ((_NORMS[:1], 0.25), torch.tensor([1])),
        ),
        hint=(
            'channels joined by a residual connection must be kept or removed together, so score a channel by every layer that writes to it.',
            's_c = Σ_writers ||W_c||₁; keep the ⌈keep · C⌉ channels with the largest s, in increasing order.',
            'total = sum(writer_norms); k = max(1, math.ceil(keep * total.numel() - 1e-9)); return total.topk(k).indices.sort().values',
        ),
    )
)

register(
    Quiz(
        name='07.mask_vs_surgery',
        question='Chapter 6 zeroed half of every weight matrix with a mask; this chapter removed half the heads and FFN neurons. Why is only the second one faster?',
        choices={
            'a': 'Because heads matter less than single weights, so removing them costs less accuracy',
            'b': 'Because the pruned model was also distilled, and distillation speeds up inference',
            'c': 'Surgery shrinks the matrices, so dense kernels do fewer multiply-adds',
            'd': 'The mask runs as a hook on every call, and the hook costs as much as the zeros save',
        },
        answer='c',
        explanations={
            'a': 'Importance decides accuracy, not speed. Speed comes from the shapes of the matrix products.',
            'b': "Distillation changes the weights' values, not their shapes, so it cannot change the speed.",
            'c': 'A zero in a dense matrix still costs a multiply-add; a removed row costs nothing. In full: Because removing heads and neurons makes the matrices smaller, so the same dense kernels do fewer multiply-adds; a mask keeps every matrix its full size.',
            'd': "The masks were made permanent (no hook runs): the model multiplies by its zeros like by any other number, and a zero costs as much.",
        },
    )
)

register(
    Quiz(
        name='07.scaling',
        question='After removing 6 of the 12 heads of a layer, what happens to the attention scaling 1/sqrt(d_h)?',
        choices={
            'a': 'It stays: every kept head still has d_h = 32 dimensions',
            'b': 'It becomes 1/sqrt(d_h / 2), because the layer has half the heads.',
            'c': 'It becomes 1/sqrt(6), one over the root of the number of heads.',
            'd': 'It is recomputed from the pruned weights in the next forward pass.',
        },
        answer='a',
        explanations={
            'a': "The scaling normalises one head's dot product q·k over its d_h dimensions; a head that stays is unchanged. In full: It stays: every kept head still has d_h = 32 dimensions, only their number changed.",
            'b': 'The head size does not change; only num_attention_heads and all_head_size do.',
            'c': 'The scaling depends on the head size, never on the number of heads.',
            'd': 'The scaling is a constant of the architecture, one over the root of the head size; nothing recomputes it from weights.',
        },
    )
)

register(
    Quiz(
        name='07.flops_vs_speed',
        question="A pruned model keeps exactly half the encoder's linear multiply-adds. Why is it usually less than 2x faster?",
        choices={
            'a': 'The timer is inaccurate at these durations, so the measured ratio is pulled towards 1',
            'b': 'Part of the time is outside those linear layers, and small products run less efficiently',
            'c': 'Pruning adds index arithmetic to every forward pass, which eats part of the saving',
            'd': 'Attention time grows with the square of the number of heads, so it shrinks more slowly',
        },
        answer='b',
        explanations={
            'a': 'The ratio is the median of alternating rounds, a robust measurement; the gap is real.',
            'b': "Amdahl's law: only the part you shrink gets faster. The chapter's table of predicted vs measured speed-ups shows the gap. In full: Part of the time is not in those linear layers (embeddings, layer norms, softmax, GELU, residual adds, the pooler and classifier), and smaller matrix products run a little less efficiently.",
            'c': 'A pruned model is an ordinary, smaller model: no masks or hooks run.',
            'd': 'Attention scores grow with the square of the sequence length, not of the number of heads; removing heads shrinks them in proportion.',
        },
    )
)

register(
    Quiz(
        name='07.residual_groups',
        question="In a ResNet stage, why must output channel c of every block's last convolution be removed together?",
        choices={
            'a': 'The blocks add into one residual stream, so their channels must match',
            'b': 'Because convolutions of one stage share their weights across the blocks of that stage',
            'c': 'They need not: each block can keep different channels, and the adds realign them',
            'd': 'Batch normalisation needs every block of a stage to keep the same statistics',
        },
        answer='a',
        explanations={
            'a': 'Residual additions tie the channels of a stage into one group; removing c means removing it from every writer and reader. In full: Because the blocks add their outputs into the same residual stream, x + F(x): channel c of one block is added to channel c of the others, so the shapes must agree.',
            'b': 'Each block has its own weights; it is the addition, not sharing, that couples them.',
            'c': 'Then x + F(x) would add tensors with different channels: a shape error, or silently wrong channels.',
            'd': 'Each convolution has its own batch-norm layer and statistics; it is the residual addition that needs matching channels.',
        },
    )
)

register(
    Quiz(
        name='07.two_four',
        question='You prune every linear layer to 2:4 sparsity (two zeros in every four weights). What does it buy on this CPU?',
        choices={
            'a': 'A 2x speed-up, since half the multiply-adds are zeros that the CPU skips',
            'b': 'A file half the size, since the zeros of a 2:4 pattern are not stored',
            'c': 'No speed-up: the matrices are still dense and this CPU has no 2:4 kernel',
            'd': 'Half the accuracy is lost, because a 2:4 pattern ignores which weights matter',
        },
        answer='c',
        explanations={
            'a': "Only hardware with 2:4 kernels skips the zeros; a CPU's dense kernels multiply them like any other number.",
            'b': 'A dense file stores the zeros; a compressed layout (values plus 2-bit positions) would be needed.',
            'c': "N:M is structured for the hardware, not for the shapes: the matrix keeps its size on a CPU. In full: Nothing in speed: the matrices are still dense. 2:4 is accelerated by GPU sparse tensor cores (NVIDIA Ampere and later), where PyTorch's semi-structured sparse tensors use it.",
            'd': 'Within every group of four the two least important weights go, so the pattern follows importance locally; its accuracy cost is measured like any mask, and is far from half.',
        },
    )
)
