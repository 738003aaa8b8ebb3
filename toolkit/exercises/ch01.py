"""Chapter 1 exercises: predict a file's size; sort parameters into the model's parts."""

from __future__ import annotations

import torch

from toolkit.exercises import Exercise, Quiz, register
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
            "a": "Memory traffic halves, but arithmetic needs hardware support: a CPU without "
            "bf16/fp16 instructions converts every value back to fp32 and can end up slower.",
            "b": "Speed comes from instructions (AVX512-BF16, AMX, AVX512-FP16) as much as from bytes. "
            "The chapter prints this machine's features beside its timings for that reason.",
            "c": "bf16 keeps fp32's 8-bit exponent and drops mantissa bits; a trained classifier's "
            "decisions rarely depend on the 8th significant bit. The chapter measures the change.",
        },
    )
)
