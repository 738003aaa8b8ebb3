"""Chapter 1 exercises: predict a file's size; sort parameters into the model's parts."""

from __future__ import annotations

import torch

from toolkit.workbook.exercises import Exercise, Quiz, register
from toolkit.measure import parameter_group


def expected_bytes(num_parameters: int, dtype: torch.dtype) -> int:
    """Bytes needed to store ``num_parameters`` values of ``dtype``: n * bits / 8."""
    bits = torch.finfo(dtype).bits if dtype.is_floating_point else torch.iinfo(dtype).bits
    return num_parameters * bits // 8


register(
    Exercise(
        name="01.expected_bytes",
        title="Exercise 1.1 (predict the file size)",
        reference=expected_bytes,
        cases=(
            ((1000, torch.float32), 4000),
            ((1000, torch.bfloat16), 2000),
            ((1000, torch.float16), 2000),
            ((7, torch.int8), 7),
            ((22_713_216, torch.float32), 90_852_864),
        ),
        hint=(
            'every number of a tensor takes the same number of bits, fixed by its dtype; a byte is 8 bits.',
            'bytes = num_parameters × bits_per_value / 8, with bits_per_value = torch.finfo(dtype).bits (torch.iinfo for integers).',
            'bits = (torch.finfo(dtype) if dtype.is_floating_point else torch.iinfo(dtype)).bits; return num_parameters * bits // 8',
        ),
    )
)

register(
    Exercise(
        name="01.parameter_group",
        title="Exercise 1.2 (which part of the model is this?)",
        reference=parameter_group,
        cases=(
            (("bert.embeddings.word_embeddings.weight",), "embeddings"),
            (("bert.embeddings.LayerNorm.weight",), "embeddings"),
            (("bert.encoder.layer.0.attention.self.query.weight",), "attention"),
            (("bert.encoder.layer.3.attention.output.dense.bias",), "attention"),
            (("bert.encoder.layer.3.attention.output.LayerNorm.weight",), "layer norms"),
            (("bert.encoder.layer.5.intermediate.dense.weight",), "feed-forward"),
            (("bert.encoder.layer.5.output.dense.weight",), "feed-forward"),
            (("bert.encoder.layer.5.output.LayerNorm.bias",), "layer norms"),
            (("bert.pooler.dense.weight",), "pooler + classifier"),
            (("classifier.bias",), "pooler + classifier"),
        ),
        hint=(
            "the parameter's name says where it lives; test the most specific parts first, because some names contain two of them.",
            "embeddings if the name is under bert.embeddings; then 'LayerNorm'; then '.attention.'; then '.intermediate.' or '.output.dense.' (feed-forward); else pooler/classifier. 'attention.output.dense' is attention.",
            "if '.embeddings.' in f'.{name}': return 'embeddings'; if 'LayerNorm' in name: return 'layer norms'; if '.attention.' in name: return 'attention'; if '.intermediate.' in name or '.output.dense.' in name: return 'feed-forward'; return 'pooler + classifier'",
        ),
    )
)

register(
    Quiz(
        name="01.half_precision",
        question="A bf16 copy of the classifier is half the bytes of the fp32 one. Which statement is true?",
        choices={
            "a": "It is always twice as fast, because every operation moves half the bytes.",
            "b": "Its speed depends on whether the CPU has native 16-bit arithmetic; without it, "
            "values are widened to fp32 for each operation and the gain can vanish or reverse.",
            "c": "It must lose accuracy, because half the bits are thrown away.",
        },
        answer="b",
        explanations={
            "a": "Memory traffic halves, which alone speeds up work limited by memory bandwidth (an LLM "
            "generating one token at a time); but the classifier's batched products are limited by arithmetic, "
            "and a CPU without bf16/fp16 instructions converts every value back to fp32 and can end up slower.",
            "b": "Speed comes from instructions (AVX512-BF16, AMX, AVX512-FP16) as much as from bytes. "
            "The chapter prints this machine's features beside its timings for that reason.",
            "c": "bf16 keeps fp32's 8-bit exponent and drops mantissa bits; a trained classifier's "
            "decisions rarely depend on the 8th significant bit. The chapter measures the change.",
        },
    )
)

register(
    Quiz(
        name='01.where_bytes',
        question='Which part of MiniLM holds about half of its parameters?',
        choices={
            'a': 'The attention layers: query, key, value and output projections of all six blocks',
            'b': 'The feed-forward layers, four times wider than the hidden size',
            'c': 'The word-embedding table: one 384-number row for each of 30,522 tokens',
            'd': 'The LayerNorm weights and biases, one pair per sub-layer',
        },
        answer='c',
        explanations={
            'a': 'The attention projections are four 384 × 384 matrices per block, about 3.5M numbers in all: far from half.',
            'b': 'The FFN matrices are the largest per block (2 × 384 × 1,536), about 7M in all, still less than the table.',
            'c': 'Right: 30,522 × 384 ≈ 11.7M of about 22.7M parameters. They cost bytes, not multiply-adds: a row is only read.',
            'd': 'LayerNorms hold 768 numbers each; together they are a rounding error in the count.',
        },
    )
)

register(
    Quiz(
        name='01.median_latency',
        question='Why does the workbook report the median latency of runs after a warm-up, not the mean of all runs?',
        choices={
            'a': 'The mean of all runs is dominated by the slowest run, and the workbook wants the best case the hardware can reach',
            'b': 'Warm runs skip the one-time costs, and the median ignores the rare runs that an interruption made long',
            'c': 'The mean needs independent runs, and consecutive runs on one machine never are, so only a rank statistic is valid',
            'd': 'PyTorch caches intermediate results after the first call, so only the runs after the warm-up measure the model at all',
        },
        answer='b',
        explanations={
            'a': 'The median is not the best case (that would be the minimum); it is the typical warm run, robust to outliers.',
            'b': 'Right: warm-up removes the one-time costs (allocation, kernel choice, cold caches) and the median the outliers; the spread is printed beside it.',
            'c': "Correlated runs make any statistic's spread harder to judge; the median is chosen for its robustness to outliers.",
            'd': 'Nothing is cached between calls in eager PyTorch; every run computes the model again.',
        },
    )
)

register(
    Quiz(
        name='01.ab_interleaved',
        question='Model A is timed 100 times, then model B 100 times, on a laptop. What can go wrong with the ratio?',
        choices={
            'a': 'Nothing: with 100 runs each, the law of large numbers averages out any difference between the two blocks',
            'b': "The second model always benefits from the first model's warm caches, so B looks faster by the warm-up time",
            'c': 'Only the absolute times are off; the ratio cancels any change of the machine, because both models see it',
            'd': 'A change of the machine between the blocks lands on one model only; alternating rounds share it',
        },
        answer='d',
        explanations={
            'a': 'Averaging removes random noise, not a drift that hits one block and not the other.',
            'b': "Caches can favour either order; the larger risk is a drift in the machine's state between the blocks.",
            'c': "A change that happens during B's block is seen only by B; the ratio cancels it only when the rounds alternate.",
            'd': 'Right: clock speed, temperature or another program starting can change between the blocks; every comparison in the workbook alternates rounds (toolkit.measure.compare_latency).',
        },
    )
)

register(
    Quiz(
        name='01.accuracy_noise',
        question='fp32 scores 93.3% and bf16 93.6% on the 450 test sentences. What do you conclude?',
        choices={
            'a': 'No real difference: about one sentence, inside the ±2.4-point interval',
            'b': 'bf16 is more accurate, since rounding acts as a regulariser',
            'c': 'The test split is broken, since a cast cannot change accuracy',
            'd': 'fp32 should be retrained, since it lost to a cheaper copy',
        },
        answer='a',
        explanations={
            'a': 'Right: a difference of a sentence or two is noise at this size; the report prints the interval beside every accuracy.',
            'b': 'Possible in principle, but one sentence cannot show it.',
            'c': 'A cast changes the logits slightly, so a few borderline sentences can flip either way.',
            'd': 'The two models are the same weights; the difference is rounding noise, not a worse model.',
        },
    )
)


register(
    Quiz(
        name='01.which_plot',
        question="The trade-off chart puts fp32, fp16 and bf16 on two panels: accuracy against file size, and against batch-64 latency. Both 16-bit points sit at half of fp32's size, yet on the latency panel they can land far apart. What decides where they land?",
        choices={
            'a': 'Their file headers: the smaller header loads faster, and loading is part of every latency measured',
            'b': 'Their accuracy: a more accurate model needs fewer steps to reach its answer',
            'c': 'The order of measurement: the model timed second runs on a warmer cache',
            'd': 'The CPU: it multiplies some 16-bit formats natively and widens others to fp32',
        },
        answer='d',
        explanations={
            'a': 'Latency is measured on a model already in memory, after warm-up; and the two headers have the same size.',
            'b': 'A forward pass runs the same operations whatever the answer; accuracy does not change the work.',
            'c': 'Each latency is a median after warm-up, and the A/B comparison alternates the order of the two models.',
            'd': 'Right: both files halve, but speed needs instructions. With AMX or AVX512-BF16 bf16 runs natively; without fp16 kernels, fp16 is widened to fp32 for each product and can be slower than fp32.',
        },
    )
)
