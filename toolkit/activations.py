"""Looking inside a model: record what chosen modules output on real sentences.

Quantizing activations needs their real ranges, so we run sentences through the model
with forward hooks on the modules of interest. The hooks are removed afterwards (the model
is left as it was), and padding positions are dropped: a padded token's activation is not
something the model ever uses, and it would distort every range and histogram.
"""

from __future__ import annotations

from typing import Sequence

import torch

from toolkit.data import Example
from toolkit.layers import run_with_hooks


def module_names(model: torch.nn.Module, kind: type | tuple[type, ...] = torch.nn.Module) -> list[str]:
    """Names of the sub-modules of ``model`` of a given type (for choosing what to record)."""
    return [name for name, module in model.named_modules() if name and isinstance(module, kind)]


def record_outputs(
    model: torch.nn.Module,
    names: Sequence[str],
    tokenizer,
    examples: Sequence[Example],
    batch_size: int = 32,
    inputs: bool = False,
) -> dict[str, torch.Tensor]:
    """Outputs of the named modules for every real token: {name: (n_tokens, features)}; with ``inputs=True``
    their inputs (the first argument) instead.

    Taught in: chapter 2, section 2 (Symmetric or asymmetric?).
    """
    return _record(model, names, tokenizer, examples, batch_size, inputs)


def _record(model, names, tokenizer, examples, batch_size, inputs: bool) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        sample = ", ".join(module_names(model)[:8])
        raise ValueError(f"module names {unknown} are not in the model; names look like: {sample}, ...")
    if len(examples) == 0:
        raise ValueError("examples is empty: recording activations needs at least one sentence")
    recorded: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    mask_holder: list[torch.Tensor] = []

    def hook_for(name):
        def keep(value):
            value = value[0] if isinstance(value, tuple) else value  # (batch, seq, features)
            recorded[name].append(value.detach().float()[mask_holder[0].bool()].cpu())  # (real_tokens, features)

        if inputs:
            return lambda module, args: keep(args[0])
        return lambda module, args, output: keep(output)

    run_with_hooks(model, {modules[n]: hook_for(n) for n in names}, tokenizer, examples, mask_holder, batch_size, pre=inputs)
    return {n: torch.cat(parts) for n, parts in recorded.items()}
