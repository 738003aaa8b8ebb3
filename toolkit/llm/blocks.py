"""Walking a decoder block by block on calibration text: the loop GPTQ, AWQ, Wanda and SparseGPT share.

Compressing a 30-block model one layer at a time needs, for each block, the inputs that block sees
*in the compressed model so far*:

    h_0 = embeddings(calibration tokens)          (captured at the first block's door)
    for each block i:   change block i using h_i (its linear layers' inputs are recorded by hooks)
                        h_{i+1} = block_i(h_i)    (with block i already changed)

Only one block's activations live at a time, so the memory is that of the calibration hidden states
(count x length x hidden floats), not of a whole forward pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch


class _Captured(Exception):
    pass


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of decoder blocks of a transformers causal LM (``model.model.layers`` for llama-like models)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"model: {type(model).__name__} has no model.layers list of decoder blocks (a llama-like causal LM is expected)")
    return layers


@dataclass
class BlockInputs:
    """What the blocks are called with: hidden states (count, length, hidden) and the keyword arguments
    the model passes every block (rotary position embeddings, mask, positions)."""

    hidden: torch.Tensor
    kwargs: dict = field(default_factory=dict)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, dict]]:
        """(hidden, kwargs) for consecutive slices of ``batch_size`` segments; batch-sized tensors in kwargs are sliced too."""
        n = self.hidden.shape[0]
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield self.hidden[start:stop], {key: _slice(value, start, stop, n) for key, value in self.kwargs.items()}


def _slice(value, start: int, stop: int, n: int):
    if isinstance(value, torch.Tensor):
        return value[start:stop] if value.dim() and value.shape[0] == n and n > 1 else value
    if isinstance(value, tuple):
        return tuple(_slice(v, start, stop, n) for v in value)
    return value


def first_block_inputs(model: torch.nn.Module, segments: torch.Tensor) -> BlockInputs:
    """The hidden states and keyword arguments the first block receives for ``segments`` (count, length).

    Taught in: chapter 10, section 5 (AWQ from scratch).
    """
    if segments.dim() != 2 or segments.numel() == 0:
        raise ValueError(f"segments must be non-empty (count, length) token ids; got shape {tuple(segments.shape)}")
    captured = {}

    def stop(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        captured["kwargs"] = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "use_cache", "hidden_states")}
        raise _Captured

    handle = decoder_layers(model)[0].register_forward_pre_hook(stop, with_kwargs=True)
    try:
        with torch.inference_mode(), contextlib.suppress(_Captured):
            model(segments, use_cache=False)
    finally:
        handle.remove()
    return BlockInputs(captured["hidden"].detach().clone(), captured["kwargs"])


def run_block(block: torch.nn.Module, inputs: BlockInputs, batch_size: int = 8) -> torch.Tensor:
    """The block's outputs for all the inputs, in batches: (count, length, hidden)."""
    with torch.inference_mode():
        outs = [block(hidden, **kwargs) for hidden, kwargs in inputs.batches(batch_size)]
    return torch.cat([o[0] if isinstance(o, tuple) else o for o in outs])


@contextlib.contextmanager
def recording_inputs(block: torch.nn.Module, names: list[str], record: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    """While open, every call of the block's submodule ``name`` passes its input, flattened to (tokens, features),
    to ``record(name, x)``."""
    handles = [block.get_submodule(name).register_forward_pre_hook(
        lambda module, args, name=name: record(name, args[0].detach().reshape(-1, args[0].shape[-1]))) for name in names]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def block_linears(block: torch.nn.Module) -> list[str]:
    """Names of the linear layers inside one block, in the order they run (attention, then MLP)."""
    return [name for name, m in block.named_modules() if isinstance(m, torch.nn.Linear)]


def walk_blocks_(model: torch.nn.Module, segments: torch.Tensor, change: Callable[[int, torch.nn.Module, BlockInputs], None],
                 batch_size: int = 8) -> None:
    """Call ``change(index, block, inputs)`` for every block in order, in place, where ``inputs`` are what that
    block receives from the blocks before it *after* their change; ``model`` is modified by ``change``."""
    inputs = first_block_inputs(model, segments)
    for index, block in enumerate(decoder_layers(model)):
        change(index, block, inputs)
        inputs = BlockInputs(run_block(block, inputs, batch_size), inputs.kwargs)


def record_inputs(block: torch.nn.Module, inputs: BlockInputs, names: list[str] | None = None,
                  batch_size: int = 8) -> dict[str, torch.Tensor]:
    """Run the block on ``inputs`` and return what each linear layer ``names`` (default: all) received:
    name -> (tokens, in_features).

    Taught in: chapter 10, section 5 (AWQ from scratch).
    """
    names = block_linears(block) if names is None else names
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    with recording_inputs(block, names, lambda name, x: seen[name].append(x.clone())):
        run_block(block, inputs, batch_size)
    return {name: torch.cat(xs) for name, xs in seen.items()}


def same_input_groups(tensors: dict[str, torch.Tensor]) -> list[list[str]]:
    """The names grouped by equal tensors, in first-seen order: layers that read the same input (q, k and v;
    gate and up) have equal recorded inputs and Hessians, so GPTQ and SparseGPT can treat them as one
    stacked matrix."""
    groups: list[list[str]] = []
    for name, tensor in tensors.items():
        match = next((g for g in groups if torch.equal(tensors[g[0]], tensor)), None)
        if match is None:
            groups.append([name])
        else:
            match.append(name)
    return groups
