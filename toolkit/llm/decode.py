"""Why decoding is memory-bound, and how fast each weight format decodes.

Prefill runs the whole prompt through the model at once: matrix-matrix products, compute-bound.
Decode produces one token per step: every weight matrix is multiplied by a single row, so each
weight is read once per token and used for one multiply-add. With B bytes of weights read per
step and a memory bandwidth of W bytes/s:

    tokens per second <= W / B          (the roofline of batch-1 decoding)

Halving the bytes (fp32 -> bf16 -> int8 -> int4: 4, 2, 1, 0.5 bytes per weight plus scales)
raises the ceiling; how close a real step gets depends on the kernels and on everything else a
step does (norms, rotary embeddings, attention over the cache, Python).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from toolkit.layers import swap_modules
from toolkit.llm.groups import GroupQuantized, block_linear_names, quantize_groups
from toolkit.llm.kernels import Int4Linear, Int8Linear, weight_bytes
from toolkit.runtime import check_int

KINDS = ("int4", "int8")


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Measured copy bandwidth in GB/s: a ``megabytes`` tensor copied ``repeats`` times (median), counting
    the bytes read and written (2 x size per copy).

    Taught in: chapter 10, section 2 (Why decoding is different).
    """
    check_int("megabytes", megabytes)
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: pages touched once
    times = []
    for _ in range(check_int("repeats", repeats)):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / statistics.median(times) / 1e9


def bytes_per_token(model: torch.nn.Module) -> int:
    """Weight bytes one decode step reads: every parameter and buffer, except the input embedding table
    (one row of it is read) unless the output projection reads it as its tied weight.

    Taught in: chapter 10, section 2 (Why decoding is different).
    """
    total = weight_bytes(model)
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and getattr(head, "weight", None) is not None and head.weight.data_ptr() == embedding.data_ptr()
    return total if tied else total - embedding.numel() * embedding.element_size()


def with_kernels(model: torch.nn.Module, kind: str, *, group_size: int = 32, dtype: torch.dtype = torch.bfloat16,
                 quantized: dict[str, GroupQuantized] | None = None, head: str | None = "int8") -> torch.nn.Module:
    """A copy of ``model`` whose block linear layers run on the ``kind`` ("int4" or "int8") CPU kernel.

    For int4, ``quantized`` may give the codes to use (e.g. GPTQ's, or the GGUF's own grid); otherwise
    round-to-nearest in groups of ``group_size``. ``dtype`` is the activations' (and scales') type inside the
    kernels: bfloat16 by default, since PyTorch's int4 and int8 CPU kernels are vectorized for it and several
    times slower with float32. ``head`` ("int8", "int4" or None) is the format of the
    output projection (SmolLM2 ties it to the embedding; the copy unties it, as llama.cpp stores it apart in Q8_0).
    ``model`` is unchanged.

    Taught in: chapter 10, section 2 (Why decoding is different).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    if head not in (*KINDS, None):
        raise ValueError(f"head must be one of {(*KINDS, None)}; got {head!r}")
    names = set(block_linear_names(model))
    quantized = quantized or {}

    def build(kind_, name, layer):
        if kind_ == "int8":
            return Int8Linear(layer, dtype)
        return Int4Linear(quantized.get(name) or quantize_groups(layer.weight, 4, group_size), dtype)

    head_name = next((n for n, m in model.named_modules() if m is model.get_output_embeddings()), None) if head else None
    copied, _ = swap_modules(model, lambda name, m: build(kind, name, m) if name in names else
                             build(head, name, m) if name == head_name else None)
    return copied.eval()


@dataclass
class DecodeTiming:
    """One model's decoding speed: medians over rounds."""

    prefill_ms: float  # the prompt through the model, plus the first token
    step_ms: float  # one more token
    new_tokens: int

    @property
    def tokens_per_second(self) -> float:
        return 1000 / self.step_ms


class _TokenClock(LogitsProcessor):
    """Notes the time each time ``generate`` has the next token's logits (once per new token)."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def _generate_times(model, input_ids: torch.Tensor, new_tokens: int) -> tuple[float, list[float]]:
    """Seconds to the first new token's logits, and between consecutive new tokens' logits (``new_tokens`` - 1)."""
    clock = _TokenClock()
    start = time.perf_counter()
    model.generate(input_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                   logits_processor=LogitsProcessorList([clock]))
    return clock.times[0] - start, [b - a for a, b in zip(clock.times, clock.times[1:])]


def compare_decoding(models: dict[str, torch.nn.Module], input_ids: torch.Tensor, *, new_tokens: int = 32,
                     rounds: int = 3) -> dict[str, DecodeTiming]:
    """Greedy decoding of ``new_tokens`` after ``input_ids`` (1, T) by every model, interleaved A/B/C...
    round by round (whatever slows one round slows all). Each token is timed as it comes (a logits processor
    notes the clock): prefill = time to the first token's logits; step = the median time between two tokens'
    logits, over the ``new_tokens`` - 1 steps of all ``rounds``, after one warm-up round.

    Taught in: chapter 10, section 2 (Why decoding is different).
    """
    check_int("new_tokens", new_tokens, minimum=2)
    check_int("rounds", rounds)
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must be one prompt of shape (1, T); got {tuple(input_ids.shape)}")
    first, steps = {k: [] for k in models}, {k: [] for k in models}
    with torch.inference_mode():
        for model in models.values():
            _generate_times(model, input_ids, 2)
        for _ in range(rounds):
            for name, model in models.items():
                prefill, between = _generate_times(model, input_ids, new_tokens)
                first[name].append(prefill)
                steps[name] += between
    return {k: DecodeTiming(1000 * statistics.median(first[k]), 1000 * statistics.median(steps[k]), new_tokens) for k in models}


def greedy_text(model: torch.nn.Module, tokenizer, prompt: str, new_tokens: int = 24) -> str:
    """The model's greedy continuation of ``prompt`` (chat template applied for an instruct model).

    Taught in: chapter 10, section 2 (Why decoding is different).
    """
    ids = chat_ids(tokenizer, prompt)
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def chat_ids(tokenizer, prompt: str) -> torch.Tensor:
    """(1, T) token ids of ``prompt`` as one user turn of the chat template, ready for the answer.

    Taught in: chapter 10, section 2 (Why decoding is different).
    """
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids


@contextlib.contextmanager
def _native_stderr_silenced():
    """The C++ profiler (kineto) prints start/stop lines straight to file descriptor 2; send them to /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def profile_step(model: torch.nn.Module, input_ids: torch.Tensor) -> dict[str, float]:
    """Milliseconds of self time per operator (``torch.profiler``) in one decode step after ``input_ids`` (1, T):
    the prompt is prefilled, one step runs to warm up, and the next step is profiled.

    Taught in: chapter 10, section 2 (Why decoding is different).
    """
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        out = model(input_ids, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        out = model(token, past_key_values=out.past_key_values, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
            model(token, past_key_values=out.past_key_values, use_cache=True)
    return {event.key: event.self_cpu_time_total / 1000 for event in prof.key_averages()}
