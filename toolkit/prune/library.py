"""Structured pruning by a library: Torch-Pruning's dependency graph on a BERT-layout model.

Torch-Pruning (``torch-pruning`` on PyPI, Fang et al., "DepGraph", CVPR 2023) traces one forward
pass, records which layers' rows and columns depend on each other, and removes whole groups. For
multi-head attention it must be told each q/k/v projection's number of heads; afterwards the
attention modules' ``num_attention_heads`` and ``all_head_size`` are updated by hand (the library
changes weights, not a model's own bookkeeping).

To compare it with ``toolkit.prune.structured`` at equal shapes, the hidden size stays: the
embeddings, the output projections (attention output and FFN output), the pooler and the classifier
are left out of the groups the library may shrink, so only heads and FFN neurons go.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from toolkit.layers import encoder_layers, ffn_sizes, heads_per_layer


@dataclass
class LibraryResult:
    model: torch.nn.Module | None  # None when the library could not prune the model
    version: str
    seconds: float
    error: str = ""  # the library's exception, as "Type: message", when model is None


def torch_pruning_heads_and_ffn(model: torch.nn.Module, example_inputs: dict, heads: int, ffn: int) -> LibraryResult:
    """A copy of ``model`` pruned by Torch-Pruning to ``heads`` heads and ``ffn`` FFN neurons in every layer.

    Importance: the library's L1 magnitude, summed over each dependency group. ``model`` is not changed.
    A failure inside the library is returned (``model=None``, ``error``), not raised, so a chapter can show it.

    Taught in: chapter 7, section 7 (A library doing the same: Torch-Pruning).
    """
    from importlib.metadata import version

    import torch_pruning as tp

    layers = encoder_layers(model)
    total_heads, total_ffn = heads_per_layer(model)[0], ffn_sizes(model)[0]
    if isinstance(heads, bool) or not isinstance(heads, int) or not 0 < heads <= total_heads:
        raise ValueError(f"heads must be an integer in [1, {total_heads}]; got {heads!r}")
    if isinstance(ffn, bool) or not isinstance(ffn, int) or not 0 < ffn <= total_ffn:
        raise ValueError(f"ffn must be an integer in [1, {total_ffn}]; got {ffn!r}")
    pruned = copy.deepcopy(model).eval()
    start = time.perf_counter()
    try:
        base = pruned.base_model
        num_heads, ignored = {}, [base.embeddings]
        for extra in ("pooler", "classifier"):
            for owner in (base, pruned):
                if getattr(owner, extra, None) is not None:
                    ignored.append(getattr(owner, extra))
        for layer in encoder_layers(pruned):
            attention = layer.attention.self
            for projection in (attention.query, attention.key, attention.value):
                num_heads[projection] = attention.num_attention_heads
            ignored += [layer.attention.output.dense, layer.output.dense]
        ffn_ratio = 1 - ffn / total_ffn
        pruner = tp.pruner.MetaPruner(
            pruned,
            example_inputs,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ffn_ratio,  # FFN: the share of intermediate neurons removed
            num_heads=num_heads,
            prune_num_heads=True,  # attention: whole heads ...
            prune_head_dims=False,  # ... never a narrower head
            head_pruning_ratio=1 - heads / total_heads,
            ignored_layers=ignored,
            output_transform=lambda out: out.logits.sum(),
        )
        pruner.step()
        for layer in encoder_layers(pruned):
            attention = layer.attention.self
            attention.num_attention_heads = pruner.num_heads[attention.query]
            attention.all_head_size = attention.num_attention_heads * attention.attention_head_size
        pruned.config.num_hidden_layers = len(layers)
    except Exception as error:  # the library's failure is the result to show
        return LibraryResult(None, version("torch-pruning"), time.perf_counter() - start, f"{type(error).__name__}: {error}")
    return LibraryResult(pruned.eval(), version("torch-pruning"), time.perf_counter() - start)
