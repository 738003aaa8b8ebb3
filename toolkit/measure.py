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
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import save_model

from toolkit.data import Example, encode
from toolkit.layers import device_of, eval_mode, predict
from toolkit.runtime import check_int

CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


# ----------------------------------------------------------------------------- counts
def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (shared tensors counted once), quantized weights included.

    Quantized layers keep their weights outside ``parameters()``: the toolkit's as packed
    codes (``weight_q``), torch's dynamic int8 Linear inside packed params. Both are counted.

    Taught in: chapter 6.
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

    Taught in: chapter 2, section 4 (Bit levels: 8, 4, 2 and 1).
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
    """Describe this machine: CPU model, thread count, the SIMD/matrix features that matter.

    Taught in: chapter 1, section 3 (The baseline, measured).
    """
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
    other_load: float | None = None  # share of the machine's CPU time other processes used meanwhile (0..1)

    def __str__(self) -> str:
        return (
            f"{self.median_ms:.2f} ms median (p10-p90 {self.p10_ms:.2f}-{self.p90_ms:.2f}) at "
            f"batch {self.batch_size} x {self.seq_len} tokens, {self.repeats} repeats, "
            f"{self.threads} threads; {_load_text(self.other_load)}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def _deciles(values: Sequence[float]) -> tuple[float, float]:
    """(10th, 90th) percentile, interpolated between the nearest ranks (``statistics.quantiles``' inclusive method,
    numpy's default); one value is its own percentiles."""
    if len(values) == 1:
        return values[0], values[0]
    cuts = statistics.quantiles(values, n=10, method="inclusive")  # 9 cut points
    return cuts[0], cuts[-1]


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
    check_int("repeats", repeats)
    check_int("warmup", warmup, minimum=0)
    dev = device_of(model)
    inputs = {k: v.to(dev) for k, v in batch.items() if k != "labels"}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = []
    with eval_mode(model), torch.inference_mode():
        for step in range(warmup + repeats):
            if step == warmup:
                start_wall, start_cpu = time.perf_counter(), _cpu_seconds()
            sync()
            start = time.perf_counter()
            model(**inputs)
            sync()
            if step >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    other_load = _other_load(start_wall, start_cpu)
    times.sort()
    batch_size, seq_len = inputs["input_ids"].shape  # (batch, seq)
    return Latency(
        median_ms=statistics.median(times),
        p10_ms=_deciles(times)[0],
        p90_ms=_deciles(times)[1],
        repeats=repeats,
        warmup=warmup,
        batch_size=int(batch_size),
        seq_len=int(seq_len),
        threads=torch.get_num_threads(),
        other_load=other_load,
    )


def latency_batch(tokenizer, examples: Sequence[Example], batch_size: int, max_length: int = 64):
    """A realistic input for timing: the first ``batch_size`` test sentences, padded together.

    Taught in: chapter 1, section 5 (The landscape of techniques).
    """
    if batch_size > len(examples):
        raise ValueError(f"batch_size {batch_size} is larger than the {len(examples)} examples given")
    return encode(tokenizer, list(examples[:batch_size]), max_length)


# ----------------------------------------------------------------------------- accuracy
def accuracy(model: torch.nn.Module, tokenizer, examples: Sequence[Example], batch_size: int = 64) -> float:
    """Fraction of ``examples`` whose arg-max prediction equals the label (0..1).

    Taught in: chapter 1, section 7 (Design task: under 34 MB with casts only).
    """
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
    """Parameters and bytes per group: {group: {"parameters": n, "bytes": b}}, in PARAMETER_GROUPS order.

    Taught in: chapter 1, section 4 (Where the parameters and the bytes live).
    """
    table = {group: {"parameters": 0, "bytes": 0} for group in PARAMETER_GROUPS}
    for name, tensor in model.named_parameters():
        row = table[parameter_group(name)]
        row["parameters"] += tensor.numel()
        row["bytes"] += tensor.numel() * tensor.element_size()
    return table


def agreement(model_a: torch.nn.Module, model_b: torch.nn.Module, tokenizer, examples: Sequence[Example]) -> dict[str, float]:
    """How closely two models answer: largest logit difference and share of equal predictions.

    Taught in: chapter 1, section 7 (Design task: under 34 MB with casts only).
    """
    logits_a = predict(model_a, tokenizer, examples)  # (n, n_labels)
    logits_b = predict(model_b, tokenizer, examples)
    return {
        "max_logit_diff": float((logits_a - logits_b).abs().max()),
        "same_prediction": float((logits_a.argmax(-1) == logits_b.argmax(-1)).float().mean()),
    }


# ----------------------------------------------------------------------------- A/B speed
@dataclass(frozen=True)
class SpeedComparison:
    """Two models timed in alternation: how many times faster ``candidate`` is than ``baseline``.

    ``ratio`` is the median over rounds of baseline_ms / candidate_ms, each round timing both
    models back to back (in the order A B, then B A, ...). Whatever else the machine does
    during a round slows both models alike, so the *ratio* survives a busy machine far better
    than two medians taken minutes apart. ``ratio_p10``/``ratio_p90`` give its spread.
    """

    baseline: str
    candidate: str
    ratio: float  # > 1: candidate is faster
    ratio_p10: float
    ratio_p90: float
    baseline_ms: float  # median over rounds
    candidate_ms: float
    rounds: int
    workload: str  # what was timed, e.g. "batch 64 x 40 tokens"
    threads: int
    other_load: float | None = None  # share of the machine's CPU time other processes used during the rounds (0..1)

    def __str__(self) -> str:
        return (
            f"{self.candidate} {self.ratio:.2f}x the speed of {self.baseline} (rounds p10-p90 "
            f"{self.ratio_p10:.2f}-{self.ratio_p90:.2f}; {self.candidate_ms:.2f} vs {self.baseline_ms:.2f} ms median), "
            f"{self.rounds} alternating rounds, {self.workload}, {self.threads} threads; {_load_text(self.other_load)}"
        )

    @property
    def spread(self) -> float:
        """p90 / p10 of the per-round ratios: 1.0 is a perfectly quiet machine."""
        return self.ratio_p90 / self.ratio_p10

    def as_dict(self) -> dict:
        return asdict(self)


def compare_calls(
    baseline_call,
    candidate_call,
    *,
    rounds: int = 15,
    warmup: int = 2,
    names: tuple[str, str] = ("baseline", "candidate"),
    workload: str = "",
    sync=lambda: None,
) -> SpeedComparison:
    """Time two zero-argument callables in alternating rounds (A B, then B A, ...).

    ratio_r = t_baseline,r / t_candidate,r for each round r; the result is the median of the
    ratios with their 10th-90th percentile, after ``warmup`` untimed calls of each.

    Alternation protects the ratio from slow drifts, not from a CPU shared with another busy
    process: two torch threads on two cores, one of them also running something else, make
    every parallel step wait for the slower thread, and that changes the ratio itself. So the
    result also says how much of the machine's CPU time *other* processes used meanwhile
    (``other_load``); speed claims treat a busy machine as inconclusive.

    Taught in: chapter 7, section 8 (Convolution filters: the article's example, done right).
    """
    check_int("rounds", rounds)
    check_int("warmup", warmup, minimum=0)
    calls = (baseline_call, candidate_call)
    for _ in range(warmup):
        for call in calls:
            call()
    start_wall, start_cpu = time.perf_counter(), _cpu_seconds()
    times: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):  # A B, then B A: a slow drift cancels
            sync()
            start = time.perf_counter()
            calls[i]()
            sync()
            times[i].append((time.perf_counter() - start) * 1e3)
    ratios = sorted(b / c for b, c in zip(*times))
    other_load = _other_load(start_wall, start_cpu)
    return SpeedComparison(
        baseline=names[0],
        candidate=names[1],
        ratio=statistics.median(ratios),
        ratio_p10=_deciles(ratios)[0],
        ratio_p90=_deciles(ratios)[1],
        baseline_ms=statistics.median(times[0]),
        candidate_ms=statistics.median(times[1]),
        rounds=rounds,
        workload=workload,
        threads=torch.get_num_threads(),
        other_load=other_load,
    )


def sparse_vs_dense(weight: torch.Tensor, tokens: int = 1024, warmup: int = 3, repeats: int = 15) -> dict:
    """y = W x dense against ``torch.sparse.mm`` with W in CSR, x of shape (in, tokens), timed in
    ``repeats`` alternating rounds (``compare_calls``); ``weight`` from e.g. ``toolkit.prune.speed.random_sparse``.

    Returns the two medians in ms, ``speedup`` (dense time / sparse time, the median of the
    per-round ratios), the thread count and the whole ``SpeedComparison`` under ``"comparison"``.

    Taught in: chapter 6, section 6 (What sparsity buys, and what it does not).
    """
    check_int("tokens", tokens)
    x = torch.randn(weight.shape[1], tokens, generator=torch.Generator().manual_seed(1))  # (in, tokens)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.to_sparse_csr()
    workload = f"W {weight.shape[0]}x{weight.shape[1]} at {1 - csr.values().numel() / weight.numel():.0%} sparsity @ x {weight.shape[1]}x{tokens}"
    with torch.inference_mode():
        comparison = compare_calls(lambda: weight @ x, lambda: torch.sparse.mm(csr, x), rounds=repeats, warmup=warmup,
                                   names=("dense", "CSR"), workload=workload)  # (out, tokens) each
    return {"dense_ms": comparison.baseline_ms, "sparse_ms": comparison.candidate_ms, "speedup": comparison.ratio,
            "threads": comparison.threads, "comparison": comparison}


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds this process has used), from psutil.

    Busy = all CPU time except idle and I/O wait (guest time is already inside user time). Their
    difference over an interval is what *other* processes took while we were timing.
    """
    import psutil

    t = psutil.cpu_times()
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    me = psutil.Process().cpu_times()
    return busy, me.user + me.system


# CPU times come in clock ticks (10 ms): over a window shorter than this many CPU-seconds, one
# tick more or less would move the share by several percent, so the share is not reported.
MIN_LOAD_WINDOW_S = 1.0


def _other_load(start_wall: float, start_cpu: tuple[float, float]) -> float | None:
    """Share (0..1) of the machine's CPU time used by other processes since ``start_wall``; None if too short to tell."""
    machine, mine = (end - begin for end, begin in zip(_cpu_seconds(), start_cpu))
    capacity = (time.perf_counter() - start_wall) * (os.cpu_count() or 1)  # CPU-seconds the machine had
    if capacity < MIN_LOAD_WINDOW_S:
        return None
    return min(1.0, max(0.0, (machine - mine) / capacity))


def _load_text(other_load: float | None) -> str:
    if other_load is None:
        return "other processes' CPU use not measurable over so short a timing"
    return f"other processes used {other_load:.0%} of the CPU meanwhile"


def compare_latency(
    baseline: torch.nn.Module,
    candidate: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    rounds: int = 15,
    warmup: int = 2,
    names: tuple[str, str] = ("baseline", "candidate"),
) -> SpeedComparison:
    """Time ``baseline(**batch)`` and ``candidate(**batch)`` in alternating rounds (``compare_calls``).

    Both models run in eval mode under ``torch.inference_mode`` on their own devices; their
    training flags are restored afterwards.

    Taught in: chapter 1, section 5 (The landscape of techniques).
    """
    models = (baseline, candidate)
    devices = [device_of(m) for m in models]
    inputs = [{k: v.to(d) for k, v in batch.items() if k != "labels"} for d in devices]
    sync = torch.cuda.synchronize if any(d.type == "cuda" for d in devices) else (lambda: None)
    batch_size, seq_len = inputs[0]["input_ids"].shape  # (batch, seq)
    with eval_mode(*models), torch.inference_mode():
        return compare_calls(
            lambda: baseline(**inputs[0]), lambda: candidate(**inputs[1]), rounds=rounds, warmup=warmup,
            names=names, workload=f"batch {batch_size} x {seq_len} tokens", sync=sync,
        )


# ----------------------------------------------------------------------------- uncertainty
def accuracy_interval(accuracy: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for an accuracy measured on ``n`` sentences.

    With p = accuracy and z the normal quantile (1.96 for 95%):
    centre = (p + z²/2n) / (1 + z²/n), half-width = z √(p(1-p)/n + z²/4n²) / (1 + z²/n).
    On 450 test sentences one sentence is 0.22 points and the 95% interval at 93% is about
    ±2.4 points: differences smaller than that are not evidence by themselves.

    Taught in: chapter 9, section 4 (Stage three: an int8 engine).
    """
    check_int("n", n, detail=' (sentences evaluated)')
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy must be a fraction in [0, 1]; got {accuracy!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    denominator = 1 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / denominator
    half = z * ((accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) ** 0.5) / denominator
    low = 0.0 if accuracy == 0 else max(0.0, centre - half)  # exact ends: no rounding residue
    high = 1.0 if accuracy == 1 else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class McNemar:
    """Paired comparison of two models on the same sentences.

    ``only_a``: sentences A gets right and B wrong; ``only_b``: the reverse. Sentences both get
    right (or both wrong) say nothing about which is better. Under "A and B are equally good"
    each discordant sentence is a fair coin, so ``p_value`` is the exact two-sided binomial
    probability of a split at least this uneven.
    """

    only_a: int
    only_b: int
    p_value: float

    def __str__(self) -> str:
        return f"McNemar: {self.only_a} sentences only A gets right, {self.only_b} only B, exact p = {self.p_value:.3g}"


def mcnemar(correct_a, correct_b) -> McNemar:
    """Exact McNemar test from two boolean vectors (one entry per test sentence).

    Taught in: chapter 3, section 3 (Dynamic int8: weights ahead of time, activations on the fly).
    """
    from scipy.stats import binomtest

    a = torch.as_tensor(correct_a, dtype=torch.bool).reshape(-1)
    b = torch.as_tensor(correct_b, dtype=torch.bool).reshape(-1)
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"correct_a and correct_b must be non-empty and of equal length; got {a.numel()} and {b.numel()}")
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return McNemar(only_a, only_b, p)


def correct(model: torch.nn.Module, tokenizer, examples: Sequence[Example], batch_size: int = 64) -> torch.Tensor:
    """Which ``examples`` the model gets right: a boolean vector (n,), the input of ``mcnemar``.

    Taught in: chapter 3, section 3 (Dynamic int8: weights ahead of time, activations on the fly).
    """
    predictions = predict(model, tokenizer, examples, batch_size).argmax(dim=-1)  # (n,)
    return predictions == torch.tensor([example.label for example in examples])
