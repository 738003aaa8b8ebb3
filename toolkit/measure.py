"""Measuring a model: parameters, bytes on disk, latency, accuracy, and the machine.

Three rules keep the workbook's numbers honest:

1. **Size is the bytes of a file actually written.** ``bytes_on_disk`` saves the model's
   tensors with safetensors and counts the file; a parameter count times a dtype width is
   a prediction, not a measurement.
2. **Latency is a median after warm-up**, over repeats, with its spread (10th-90th
   percentile), the batch shape, the thread count and the CPU features beside it. The
   first calls of a model allocate memory and pick kernels; they are not what a user waits.
3. **Accuracy is on the held-out test split**, never on data the model was tuned on.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import save_model

from toolkit.data import Example, batches, encode

CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


# ----------------------------------------------------------------------------- counts
def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (shared tensors counted once), quantized weights included.

    Quantized layers keep their weights outside ``parameters()``: the toolkit's as packed
    codes (``weight_q``), torch's dynamic int8 Linear inside packed params. Both are counted.
    """
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    for module in model.modules():
        if hasattr(module, "weight_q"):  # toolkit QuantLinear / QuantEmbedding
            total += module.weight_q.shape.numel()
        elif type(module).__module__.startswith("torch.ao.nn.quantized"):
            weight = module.weight() if callable(getattr(module, "weight", None)) else None
            bias = module.bias() if callable(getattr(module, "bias", None)) else None
            total += (weight.numel() if weight is not None else 0) + (bias.numel() if bias is not None else 0)
    return total


def count_nonzero(model: torch.nn.Module) -> int:
    """Number of parameters that are not exactly zero (what pruning changes)."""
    return sum(int(torch.count_nonzero(p)) for p in {id(p): p for p in model.parameters()}.values())


# ----------------------------------------------------------------------------- bytes
def bytes_on_disk(model: torch.nn.Module, path: str | os.PathLike | None = None) -> int:
    """Write the model's tensors to a safetensors file and return the file's size in bytes.

    ``path`` keeps the file; without it the file goes to a temporary folder that is removed.
    """
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(model, str(path))
        return path.stat().st_size
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "model.safetensors"
        save_model(model, str(file))
        return file.stat().st_size


def bytes_by_dtype(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of tensor data per dtype (parameters and buffers), before any file header."""
    totals: dict[str, int] = {}
    for tensor in {id(t): t for t in (*model.parameters(), *model.buffers())}.values():
        key = str(tensor.dtype).replace("torch.", "")
        totals[key] = totals.get(key, 0) + tensor.numel() * tensor.element_size()
    return totals


# ----------------------------------------------------------------------------- hardware
@dataclass(frozen=True)
class Hardware:
    """The machine a timing was taken on: print it beside every latency."""

    cpu: str
    logical_cpus: int
    threads: int
    features: tuple[str, ...]
    torch_capability: str
    torch_version: str
    accelerator: str

    def line(self) -> str:
        features = " ".join(self.features) if self.features else "none of " + "/".join(CPU_FEATURES)
        return (
            f"{self.cpu} | {self.threads} torch threads of {self.logical_cpus} logical CPUs | "
            f"features: {features} | torch {self.torch_version} ({self.torch_capability}) | "
            f"accelerator: {self.accelerator}"
        )


def _cpu_flags() -> tuple[str, set[str]]:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:  # not Linux: report what torch knows
        pass
    return name, flags


def hardware() -> Hardware:
    """Describe this machine: CPU model, thread count, the SIMD/matrix features that matter."""
    name, flags = _cpu_flags()
    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU only)"
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # pragma: no cover
        capability = "unknown"
    return Hardware(
        cpu=name,
        logical_cpus=os.cpu_count() or 1,
        threads=torch.get_num_threads(),
        features=tuple(f for f in CPU_FEATURES if f in flags),
        torch_capability=capability,
        torch_version=torch.__version__,
        accelerator=accelerator,
    )


# ----------------------------------------------------------------------------- latency
@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one forward pass, in milliseconds, over ``repeats`` timed calls."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    warmup: int
    batch_size: int
    seq_len: int
    threads: int

    def __str__(self) -> str:
        return (
            f"{self.median_ms:.2f} ms median (p10-p90 {self.p10_ms:.2f}-{self.p90_ms:.2f}) at "
            f"batch {self.batch_size} x {self.seq_len} tokens, {self.repeats} repeats, "
            f"{self.threads} threads"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    index = q * (len(sorted_values) - 1)
    low = int(index)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (index - low)


def latency(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    warmup: int = 3,
    repeats: int = 20,
) -> Latency:
    """Median wall-clock latency of ``model(**batch)`` after ``warmup`` untimed calls.

    The model runs in eval mode under ``torch.inference_mode`` on the device of its
    parameters; CUDA work is synchronised before each clock read.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer; got {repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer; got {warmup!r}")
    dev = next(model.parameters()).device
    inputs = {k: v.to(dev) for k, v in batch.items() if k != "labels"}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    times = []
    with torch.inference_mode():
        for step in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(**inputs)
            sync()
            if step >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    model.train(was_training)
    times.sort()
    batch_size, seq_len = inputs["input_ids"].shape  # (batch, seq)
    return Latency(
        median_ms=statistics.median(times),
        p10_ms=_quantile(times, 0.10),
        p90_ms=_quantile(times, 0.90),
        repeats=repeats,
        warmup=warmup,
        batch_size=int(batch_size),
        seq_len=int(seq_len),
        threads=torch.get_num_threads(),
    )


def latency_batch(tokenizer, examples: Sequence[Example], batch_size: int, max_length: int = 64):
    """A realistic input for timing: the first ``batch_size`` test sentences, padded together."""
    if batch_size > len(examples):
        raise ValueError(f"batch_size {batch_size} is larger than the {len(examples)} examples given")
    return encode(tokenizer, list(examples[:batch_size]), max_length)


# ----------------------------------------------------------------------------- accuracy
def predict(model: torch.nn.Module, tokenizer, examples: Sequence[Example], batch_size: int = 64) -> torch.Tensor:
    """Logits for every example, in order: (n_examples, n_labels), float32 on the CPU."""
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits = []
    with torch.inference_mode():
        for batch in batches(tokenizer, examples, batch_size=batch_size):
            inputs = {k: v.to(dev) for k, v in batch.items() if k != "labels"}
            logits.append(model(**inputs).logits.float().cpu())  # (batch, n_labels)
    model.train(was_training)
    return torch.cat(logits)


def accuracy(model: torch.nn.Module, tokenizer, examples: Sequence[Example], batch_size: int = 64) -> float:
    """Fraction of ``examples`` whose arg-max prediction equals the label (0..1)."""
    if len(examples) == 0:
        raise ValueError("examples is empty: accuracy needs at least one labelled example")
    predictions = predict(model, tokenizer, examples, batch_size).argmax(dim=-1)  # (n,)
    labels = torch.tensor([example.label for example in examples])
    return float((predictions == labels).float().mean())


# ----------------------------------------------------------------------------- where bytes live
PARAMETER_GROUPS = ("embeddings", "attention", "feed-forward", "layer norms", "pooler + classifier")


def parameter_group(name: str) -> str:
    """Which part of a BERT-style model a parameter belongs to, from its name.

    ``bert.embeddings.*`` -> embeddings; ``*.LayerNorm.*`` -> layer norms;
    ``*.attention.*`` -> attention; ``*.intermediate.*`` and ``*.output.dense.*`` ->
    feed-forward; ``pooler``/``classifier`` -> pooler + classifier.
    """
    if ".embeddings." in f".{name}":
        return "embeddings"
    if "LayerNorm" in name:
        return "layer norms"
    if ".attention." in name:
        return "attention"
    if ".intermediate." in name or ".output.dense." in name:
        return "feed-forward"
    if "pooler" in name or "classifier" in name:
        return "pooler + classifier"
    raise ValueError(f"parameter name {name!r} does not belong to any of {', '.join(PARAMETER_GROUPS)}")


def parameter_breakdown(model: torch.nn.Module) -> dict[str, dict[str, int]]:
    """Parameters and bytes per group: {group: {"parameters": n, "bytes": b}}, in PARAMETER_GROUPS order."""
    table = {group: {"parameters": 0, "bytes": 0} for group in PARAMETER_GROUPS}
    for name, tensor in model.named_parameters():
        row = table[parameter_group(name)]
        row["parameters"] += tensor.numel()
        row["bytes"] += tensor.numel() * tensor.element_size()
    return table


def agreement(model_a: torch.nn.Module, model_b: torch.nn.Module, tokenizer, examples: Sequence[Example]) -> dict[str, float]:
    """How closely two models answer: largest logit difference and share of equal predictions."""
    logits_a = predict(model_a, tokenizer, examples)  # (n, n_labels)
    logits_b = predict(model_b, tokenizer, examples)
    return {
        "max_logit_diff": float((logits_a - logits_b).abs().max()),
        "same_prediction": float((logits_a.argmax(-1) == logits_b.argmax(-1)).float().mean()),
    }
