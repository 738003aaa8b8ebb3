"""Chapter 3 exercises: predict a packed file's size; a layer's output error; calibrate a range."""

from __future__ import annotations

import math

import torch

from toolkit.workbook.exercises import Exercise, Quiz, register


def packed_weight_bytes(num_values: int, bits: int, group_size: int, scale_bytes: int = 4) -> int:
    """Bytes of one weight stored as packed codes plus one scale per group (symmetric: no zero-points).

    Both counts round up: the last byte may be partly filled, and a last, partial group still needs its scale.
    """
    return math.ceil(num_values * bits / 8) + math.ceil(num_values / group_size) * scale_bytes


def output_sqnr_db(weight: torch.Tensor, weight_hat: torch.Tensor, x: torch.Tensor) -> float:
    """SQNR (dB) of a linear layer's output y = x W^T when W is replaced by W_hat."""
    y, y_hat = x @ weight.T, x @ weight_hat.T
    return float(10 * torch.log10((y**2).sum() / ((y - y_hat) ** 2).sum()))


def minmax_range(batches: list) -> tuple[float, float]:
    """The range a min-max observer proposes after seeing every batch: (min over all, max over all)."""
    return float(min(b.min() for b in batches)), float(max(b.max() for b in batches))


_BATCHES = [torch.tensor([0.5, -1.0, 2.0]), torch.tensor([[3.5, 0.0]]), torch.tensor([-2.5])]

register(
    Exercise(
        name="03.packed_weight_bytes",
        title="Exercise 3.1 (the size of a packed weight, before writing it)",
        reference=packed_weight_bytes,
        cases=(
            # an FFN matrix at 4 bits, groups of 32: 589,824 · 4 / 8 = 294,912 code bytes + 18,432 scales · 4 = 368,640
            ((1536 * 384, 4, 32), 368_640),
            # at 2 bits, groups of 128: 147,456 + 4,608 · 4 = 165,888
            ((1536 * 384, 2, 128), 165_888),
            # 3,000 bits = 375 bytes, 125 groups of 8: 375 + 500 = 875
            ((1000, 3, 8), 875),
            # 3 full groups and a partial one need 4 scales: 50 + 16 = 66
            ((100, 4, 32), 66),
            # the word embeddings at 8 bits, one scale per row of 384: 11,720,448 + 30,522 · 4 = 11,842,536
            ((30522 * 384, 8, 384), 11_842_536),
        ),
        hint=(
            'a packed tensor stores codes and scales; count each in whole bytes.',
            'bytes = ⌈n · bits / 8⌉ + ⌈n / group_size⌉ · scale_bytes (a last partial group needs a scale too).',
            'return math.ceil(num_values * bits / 8) + math.ceil(num_values / group_size) * scale_bytes',
        ),
    )
)

register(
    Exercise(
        name="03.output_sqnr_db",
        title="Exercise 3.2 (how much does quantizing W disturb the layer's output?)",
        reference=output_sqnr_db,
        cases=(
            # x = I: y = (1, 0), ŷ = (1, 0.1); Σy² = 1, Σ(y − ŷ)² = 0.01: 10 log10(100) = 20 dB
            ((torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.1]]), torch.eye(2)), 20.0),
            # x = (1, 1): y = 7, ŷ = 6: 10 log10(49 / 1) = 16.902 dB
            ((torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 3.0]]), torch.tensor([[1.0, 1.0]])), 16.9019604),
        ),
        hint=(
            "judge the quantized weight by what it does: compare the layer's outputs, not its weights.",
            'y = x Wᵀ, ŷ = x Ŵᵀ; SQNR = 10 · log10(Σ y² / Σ (y − ŷ)²) in dB.',
            'y, y_hat = x @ weight.T, x @ weight_hat.T; return float(10 * torch.log10((y ** 2).sum() / ((y - y_hat) ** 2).sum()))',
        ),
        rel_tol=1e-4,
    )
)

register(
    Exercise(
        name="03.minmax_range",
        title="Exercise 3.3 (calibrate a min-max observer by hand)",
        reference=minmax_range,
        cases=(((_BATCHES,), (-2.5, 3.5)), (([torch.tensor([1.0, 2.0])],), (1.0, 2.0))),
        hint=(
            'a min/max observer remembers the most extreme values it has seen over every batch.',
            'lo = min over batches of min(b), hi = max over batches of max(b).',
            'return float(min(b.min() for b in batches)), float(max(b.max() for b in batches))',
        ),
        rel_tol=1e-9,
    )
)

register(
    Quiz(
        name="03.int8_vs_bf16",
        question="On CPUs with AMX, bf16 can run the classifier faster than every int8 path of this chapter at batch 64 "
        "(section 7 says whether it did on yours). Why can int8 lose to bf16 although its weights are half the size?",
        choices={
            "a": "int8 arithmetic is always slower than floating point.",
            "b": "Dynamic int8 quantizes every activation on the fly and converts each result back to float; bf16 runs "
            "every matrix product natively with no conversion between layers. Softmax, GELU and layer norm run on vector "
            "units in both.",
            "c": "The int8 model has more parameters.",
        },
        answer="b",
        explanations={
            "a": "No: with VNNI or AMX an int8 dot product does more multiply-adds per instruction than fp32. The cost is "
            "around the product: quantizing inputs, rescaling outputs, and the parts of the model that stay float.",
            "b": "Speed is end to end: the conversions and the float parts of the model are paid on every call, while "
            "AMX multiplies bf16 matrices natively too, so int8's faster product is a small part of the total. A CPU "
            "without native bf16 (no AMX, no AVX512-BF16) is where int8 has its best chance; on bytes it always wins.",
            "c": "Quantization does not change the number of parameters, only the bits of each.",
        },
    )
)

register(
    Quiz(
        name='03.fake_file',
        question="A model's weights were fake-quantized to int4 values and saved with safetensors' `save_model`. How large is the file?",
        choices={
            'a': 'An eighth of fp32, since every weight takes one of 16 values and safetensors stores the distinct values once',
            'b': 'As large as fp32: the values are still stored as 32-bit floats',
            'c': 'About half of fp32, since safetensors compresses runs of repeated values when it writes the file',
            'd': 'It cannot be saved until the model is converted to int4, since save_model refuses fake-quantized tensors',
        },
        answer='b',
        explanations={
            'a': 'Few distinct values do not shrink a float tensor; bits on disk follow the dtype.',
            'b': 'Right: few distinct values do not shrink a float tensor; only packed codes with their scales make the file smaller, which is why the chapter measures written files.',
            'c': 'safetensors stores raw tensors without compression.',
            'd': 'A fake-quantized model is an ordinary float model; it saves like any other.',
        },
    )
)

register(
    Quiz(
        name='03.calibration',
        question='What does calibration decide in static quantization?',
        choices={
            'a': "The weights' scales: each layer's weight range is measured while the sentences flow through it",
            'b': 'The learning rate of the quantized model, chosen so that the first steps do not leave the grid',
            'c': 'The ranges of the activations entering each quantized layer',
            'd': 'Which layers are quantized: those whose activations stay inside the int8 range on the sentences',
        },
        answer='c',
        explanations={
            'a': 'Weight scales come from the weights alone; no data is needed for them.',
            'b': 'Nothing is trained in post-training quantization.',
            'c': "Right: an observer watches the activations on calibration sentences and sets a scale (and zero-point) for each layer's input; the chapter measures how much the observer and the number of sentences matter.",
            'd': 'Which layers to quantize is the modules argument, chosen before calibration; calibration sets their ranges.',
        },
    )
)

register(
    Quiz(
        name='03.dynamic',
        question="What is 'dynamic' in dynamic int8 quantization?",
        choices={
            'a': "Activation scales come from each batch's own range, at run time",
            'b': 'The weights are re-quantized after every batch',
            'c': 'The bit width changes from layer to layer at run time',
            'd': 'The model switches between int8 and fp32 depending on the input',
        },
        answer='a',
        explanations={
            'a': "Right: the weights are quantized ahead of time; no calibration data is needed, at the cost of measuring each batch's range and converting results back to float.",
            'b': 'The weights are fixed int8 codes; re-quantizing them would waste time and change nothing.',
            'c': "Every quantized layer uses int8; per-layer bit widths are chapter 5's mixed precision.",
            'd': 'The path is fixed; only the activation scale adapts.',
        },
    )
)

register(
    Quiz(
        name='03.group_bytes',
        question='What does `math.ceil(n * bits / 8) + math.ceil(n / group_size) * 4` give for n = 1024, bits = 4, group_size = 32?',
        choices={
            'a': '512',
            'b': '544',
            'c': '768',
            'd': '640',
        },
        answer='d',
        explanations={
            'a': '512 is the codes alone; the scales are part of the stored weight: 32 groups need 32 scales.',
            'b': '544 counts one scale for the tensor; there is a scale per group of 32.',
            'c': '768 would be 6 bits per value.',
            'd': 'Right: 1024 · 4 / 8 = 512 code bytes, and 1024 / 32 = 32 scales of 4 bytes = 128; one float32 scale per 32 weights adds a bit per weight.',
        },
    )
)


register(
    Quiz(
        name='03.which_plot',
        question='On the trade-off chart of section 7, one point sits far left on the size panel (under 20 MB) but right of fp32 on the latency panel. Which method is it most likely to be?',
        choices={
            'a': 'Dynamic int8 per channel with torch.ao, its weights stored as int8 codes',
            'b': 'The bfloat16 cast of the whole classifier',
            'c': 'Weight-only int4 with int8 embeddings',
            'd': 'Static W8A8, simulated with fake quantization after calibration on 64 sentences',
        },
        answer='c',
        explanations={
            'a': 'Its file is about 59 MB (the float embeddings stay), and it is faster than fp32 on CPUs with VNNI.',
            'b': 'A 16-bit cast halves the file to about 45 MB; on CPUs with native bf16 it is also faster.',
            'c': 'Right: packed int4 codes make the file small, but each layer dequantizes its weight on every call and then multiplies in float, so it is slower than fp32 on a CPU.',
            'd': 'It is slower than fp32 (the fake quantization is extra work), but its file is about 59 MB, not under 20.',
        },
    )
)
