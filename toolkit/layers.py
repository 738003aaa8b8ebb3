"""The bottom layer for model plumbing: which layers are linear, where a BERT's parts are, how to
swap a child, switch to eval mode, find a device and run sentences with hooks.

Every other part of the toolkit (``quant``, ``prune``, ``measure``, ``train``...) asks these
questions through this module, so each is answered once.

**Which layers are linear, and which ones a tool leaves alone (and why).**

Hugging Face models multiply by weight matrices through more than one module type:

- ``torch.nn.Linear``: y = x Wᵀ + b with W of shape (out, in) (BERT, MiniLM, most models);
- transformers' ``Conv1D`` (GPT-2 and relatives): y = x W + b with W stored **transposed**,
  shape (in, out). Despite its name it is a linear layer, not a convolution.

Quantization and QAT handle both: a ``Conv1D`` is first rewritten as the equivalent
``nn.Linear`` (``as_linear``). Pruning scores ``nn.Linear`` only; other linear-like layers are
reported, in a warning and in what the function returns, never skipped in silence. A tool
that would touch nothing inside the model's blocks (the repeated layers of a ``ModuleList``)
raises instead of returning an unchanged model as if it had worked.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import warnings
from typing import Callable, Iterator, Sequence

import torch

from toolkit.data import Example, batches, encode, token_lengths
from toolkit.runtime import check_int

try:  # transformers' GPT-2 style layer
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a dependency
    Conv1D = None

# Layers that compute with a weight matrix but that no tool of the workbook rewrites.
_OTHER_WEIGHTED = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Bilinear)


def is_conv1d(module: torch.nn.Module) -> bool:
    return Conv1D is not None and isinstance(module, Conv1D)


def linear_layers(model: torch.nn.Module, *, conv1d: bool = True) -> dict[str, str]:
    """{name: "linear" | "conv1d"} for every ``nn.Linear`` (and, with ``conv1d``, transformers ``Conv1D``)."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            found[name] = "linear"
        elif conv1d and is_conv1d(module):
            found[name] = "conv1d"
    return found


def left_alone(model: torch.nn.Module, handled: set[str], *, conv1d_handled: bool) -> dict[str, str]:
    """{name: why} for layers with a weight matrix that a tool handling ``handled`` does not touch
    because of their type (layers skipped on purpose, e.g. the head, are not listed)."""
    reasons = {}
    for name, module in model.named_modules():
        if name in handled:
            continue
        if is_conv1d(module) and not conv1d_handled:
            reasons[name] = "transformers Conv1D (a linear layer with a transposed weight): not supported by this tool"
        elif isinstance(module, _OTHER_WEIGHTED):
            reasons[name] = f"{type(module).__name__}: a convolution, not a linear layer"
    return reasons


def warn_left_alone(reasons: dict[str, str], tool: str) -> None:
    """One warning that names every layer ``tool`` left alone, and why."""
    if reasons:
        listed = "; ".join(f"{n} ({why})" for n, why in list(reasons.items())[:8])
        more = f" and {len(reasons) - 8} more" if len(reasons) > 8 else ""
        warnings.warn(f"{tool} left {len(reasons)} weight layer(s) unchanged: {listed}{more}", UserWarning, stacklevel=3)


def block_layers(model: torch.nn.Module) -> set[str]:
    """Names of the modules that live inside the model's repeated blocks (any ``nn.ModuleList``)."""
    inside = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList):
            prefix = f"{name}." if name else ""
            inside |= {f"{prefix}{child}" for child, _ in module.named_modules() if child}
    return inside


def require_block_layers(model: torch.nn.Module, chosen: set[str] | list[str], tool: str, reasons: dict[str, str]) -> None:
    """Raise if ``chosen`` holds no layer inside the model's blocks although the model has blocks."""
    blocks = block_layers(model)
    if not chosen or (blocks and not (set(chosen) & blocks)):
        detail = f" Layers left alone: {'; '.join(f'{n} ({w})' for n, w in list(reasons.items())[:4])}." if reasons else ""
        raise ValueError(
            f"{tool} would change no layer inside the model's blocks (chosen: {sorted(chosen)[:4] or 'none'}); "
            f"check modules= and skip=, or the model's layer types.{detail}"
        )


def linear_shape(module: torch.nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an ``nn.Linear`` (weight (out, in)) or a ``Conv1D`` (weight (in, out))."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if is_conv1d(module):
        return tuple(module.weight.shape)  # (in, out)
    raise TypeError(f"module must be nn.Linear or transformers Conv1D; got {type(module).__name__}")


def as_linear(module: torch.nn.Module) -> torch.nn.Linear:
    """An ``nn.Linear`` computing what ``module`` computes: itself, or a ``Conv1D`` rewritten.

    Conv1D: y = x W + b with W (in, out)  ->  Linear: y = x (Wᵀ)ᵀ + b with weight Wᵀ (out, in).
    """
    if isinstance(module, torch.nn.Linear):
        return module
    if is_conv1d(module):
        in_features, out_features = module.weight.shape  # (in, out)
        linear = torch.nn.Linear(in_features, out_features, bias=module.bias is not None,
                                 device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(module.weight.t())  # (out, in)
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        return linear
    raise TypeError(f"module must be nn.Linear or transformers Conv1D; got {type(module).__name__}")


# ----------------------------------------------------------------------------- finding and swapping
def parent_of(model: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    """(the module that holds ``name``, the child's attribute name): ``"a.b.c"`` -> (model.a.b, "c")."""
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def swap_child_(model: torch.nn.Module, name: str, module: torch.nn.Module) -> torch.nn.Module:
    """Put ``module`` where the child ``name`` (dotted) of ``model`` was, in place; returns ``model``."""
    parent, child = parent_of(model, name)
    setattr(parent, child, module)
    return model


def copy_in_dtype(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``model`` with every floating-point parameter and buffer in ``dtype``: ``deepcopy(model).to(dtype)``
    without the full-precision copy in between (the converted tensors go into deepcopy's memo, so a tied weight
    stays tied and each tensor is made once, in its new type). ``model`` is unchanged.

    Taught in: chapter 10, section 2 (Why decoding is different).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype; got {dtype!r}")
    memo: dict[int, torch.Tensor] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if id(tensor) not in memo and tensor.is_floating_point():
            converted = tensor.detach().to(dtype, copy=True)
            memo[id(tensor)] = (torch.nn.Parameter(converted, requires_grad=tensor.requires_grad)
                                if isinstance(tensor, torch.nn.Parameter) else converted)
    return copy.deepcopy(model, memo)


def swap_modules_(model: torch.nn.Module, build: Callable[[str, torch.nn.Module], torch.nn.Module | None]) -> int:
    """Replace, in ``model`` itself, every module for which ``build(name, module)`` returns a module; returns
    the number replaced. The modules inside a replaced one are not offered to ``build``. Each old module (and
    its weights) is freed as soon as it is replaced, so converting a copy you own never holds two models."""
    replaced: list[str] = []
    for name in [name for name, _ in model.named_modules() if name]:  # names only: a list of the modules
        if any(name.startswith(done + ".") for done in replaced):     # would keep every replaced one alive
            continue  # inside a module already replaced
        new = build(name, model.get_submodule(name))
        if new is not None:
            swap_child_(model, name, new)
            replaced.append(name)
    return len(replaced)


def swap_modules(model: torch.nn.Module, build: Callable[[str, torch.nn.Module], torch.nn.Module | None]) -> tuple[torch.nn.Module, int]:
    """A copy of ``model`` in which every module for which ``build(name, module)`` returns a
    module is replaced by it; returns (copy, number replaced): ``swap_modules_`` on a deep copy. The modules
    inside a replaced one are not offered to ``build``. The model passed in is unchanged."""
    result = copy.deepcopy(model)
    return result, swap_modules_(result, build)


# ----------------------------------------------------------------------------- modes and devices
@contextlib.contextmanager
def eval_mode(*models: torch.nn.Module) -> Iterator[None]:
    """Put ``models`` in eval mode (no dropout) for the block, then give each back the mode it had."""
    modes = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for model, mode in zip(models, modes):
            model.train(mode)


def device_of(model: torch.nn.Module) -> torch.device:
    """Where ``model`` computes: the device of its first parameter or buffer, or a ``device`` attribute
    (engines that are not torch modules, which run on the CPU), else the CPU."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device(getattr(model, "device", "cpu"))


# ----------------------------------------------------------------------------- running with hooks
def run_with_hooks(
    model: torch.nn.Module,
    hooks: dict,
    tokenizer,
    examples: Sequence[Example],
    mask_holder: list,
    batch_size: int = 32,
    pre: bool = False,
) -> None:
    """Run ``examples`` through ``model`` (eval mode, no gradients) with temporary hooks.

    ``hooks`` maps modules to forward hooks (forward *pre*-hooks with ``pre=True``). Before each
    batch, ``mask_holder[0]`` is set to its attention mask (batch, seq), so that hooks can drop
    padding positions. Afterwards the hooks are removed and the model's mode is restored.
    """
    register = "register_forward_pre_hook" if pre else "register_forward_hook"
    handles = [getattr(module, register)(hook) for module, hook in hooks.items()]
    dev = device_of(model)
    try:
        with eval_mode(model), torch.inference_mode():
            for batch in batches(tokenizer, examples, batch_size=batch_size):
                mask_holder[:] = [batch["attention_mask"].to(dev)]
                model(**{k: v.to(dev) for k, v in batch.items() if k != "labels"})
    finally:
        for handle in handles:
            handle.remove()


def predict(model: torch.nn.Module, tokenizer, examples: Sequence[Example], batch_size: int = 64) -> torch.Tensor:
    """Logits for every example, in the order given: (n_examples, n_labels), float32 on the CPU.

    The sentences run shortest first, so each batch pads only to a length its neighbours share
    (Hugging Face's ``group_by_length``, sentence-transformers' ``encode``); the rows are put back
    in order afterwards. On the 450 test sentences (mean 17 tokens, longest 64) this halves the
    time of an evaluation; a row's logits do not depend on its batch-mates beyond float rounding.

    Taught in: chapter 1, section 5 (The landscape of techniques).
    """
    check_int("batch_size", batch_size)
    dev = device_of(model)
    lengths = token_lengths(tokenizer, examples)
    order = sorted(range(len(examples)), key=lengths.__getitem__)  # shortest first (stable)
    logits = []
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            # inputs built outside inference mode, like latency's: a compiled model then sees one kind of tensor
            batch = encode(tokenizer, [examples[i] for i in order[start : start + batch_size]])
            inputs = {k: v.to(dev) for k, v in batch.items() if k != "labels"}
            with torch.inference_mode():
                logits.append(model(**inputs).logits.float().cpu())  # (batch, n_labels)
    by_length = torch.cat(logits)  # (n, n_labels), rows in `order`
    out = torch.empty_like(by_length)
    out[torch.tensor(order, dtype=torch.long)] = by_length
    return out


# ----------------------------------------------------------------------------- the BERT layout
def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The encoder's list of layers of a BERT-layout model (``model.base_model.encoder.layer``).

    Each layer holds ``attention.self.{query,key,value}`` (the heads), ``attention.output.dense``,
    ``intermediate.dense`` (d -> f, the FFN's neurons) and ``output.dense`` (f -> d).

    Taught in: chapter 7, section 1 (What a head, a neuron and a layer own).
    """
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(
            f"model must have the BERT layout (base_model.encoder.layer, as BERT, MiniLM and RoBERTa do); "
            f"got {type(model).__name__}"
        )
    return layers


def heads_per_layer(model: torch.nn.Module) -> list[int]:
    """Number of attention heads left in every layer.

    Taught in: chapter 7, section 1 (What a head, a neuron and a layer own).
    """
    return [layer.attention.self.num_attention_heads for layer in encoder_layers(model)]


def ffn_sizes(model: torch.nn.Module) -> list[int]:
    """Number of FFN neurons left in every layer.

    Taught in: chapter 7, section 1 (What a head, a neuron and a layer own).
    """
    return [layer.intermediate.dense.out_features for layer in encoder_layers(model)]


def head_size(model: torch.nn.Module) -> int:
    """d_h = d / H, the width of one attention head (pruning never changes it).

    Taught in: chapter 7, section 1 (What a head, a neuron and a layer own).
    """
    return encoder_layers(model)[0].attention.self.attention_head_size

