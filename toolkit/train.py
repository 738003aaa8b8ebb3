"""A short, readable fine-tuning loop (used to build the baseline, and later to retrain and to prune while training).

The loop is deliberately plain PyTorch: AdamW, a linear learning-rate schedule with a
short warm-up, cross-entropy through the model's own ``labels`` argument, and a progress
bar per epoch. Later chapters reuse it to retrain pruned or fake-quantized models, with the
full model as a teacher (``distillation_loss``) where that helps.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from toolkit.data import Example, batches, token_lengths
from toolkit.layers import device_of, eval_mode
from toolkit.prune import gradual, movement
from toolkit.prune.apply import apply_masks_, remove_masks_
from toolkit.prune.importance import prunable_modules
from toolkit.prune.masks import check_sparsity
from toolkit.measure import accuracy, hardware
from toolkit.runtime import check_int


PRECISIONS = ("fp32", "bf16", "auto")
BF16_FEATURES = ("amx_bf16", "avx512_bf16")  # CPU features with native bf16 matrix products


def autocast_dtype(precision: str, device: torch.device | str = "cpu") -> torch.dtype | None:
    """The dtype ``torch.autocast`` trains in for ``precision``, or None for plain fp32.

    "auto" picks bf16 only where the hardware multiplies bf16 natively (a CPU with AMX or
    AVX512-BF16, a CUDA GPU that supports it); elsewhere bf16 is emulated and slower than fp32.
    Autocast runs matrix products in bf16 and keeps the weights, the optimizer state and the
    reductions (softmax, LayerNorm, losses) in fp32 (mixed precision, Micikevicius et al. 2018).

    Taught in: chapter 8.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if set(BF16_FEATURES) & set(hardware().features) else None


@dataclass(frozen=True)
class FineTuneConfig:
    """Hyper-parameters of a fine-tune. Part of the classifier cache's key.

    Taught in: chapter 4, section 4 (The training loop, and a small sweep to choose the learning rate).
    """

    epochs: int = 3
    learning_rate: float = 5e-5
    batch_size: int = 32
    max_length: int = 64
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    train_limit: int | None = None  # use only the first N training examples (smoke runs)
    length_buckets: bool = False  # batches of sentences of similar length (data.length_bucketed_order)
    precision: str = "fp32"  # "fp32", "bf16" or "auto" (bf16 autocast where the CPU has AVX512-BF16 or AMX)

    def __post_init__(self):
        check_int("epochs", self.epochs)
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive; got {self.learning_rate!r}")
        check_int("batch_size", self.batch_size)
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1); got {self.warmup_fraction!r}")
        if self.train_limit is not None and (not isinstance(self.train_limit, int) or self.train_limit < 1):
            raise ValueError(f"train_limit must be None or a positive integer; got {self.train_limit!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")

    def as_dict(self) -> dict:
        return asdict(self)


TEACHER_SIGNALS = ("logits", "hidden_states")


class TeacherOutputs:
    """A teacher's outputs per sentence, computed once and kept in memory.

    The teacher runs in eval mode (no dropout), so its output for a sentence never changes: a
    distillation run that sees each sentence for several epochs needs its forward pass only once
    per sentence, not once per step. A sentence is keyed by its token ids; a batch's rows not seen
    before go through the teacher together (fp32, no gradients), the others are read back.
    ``keep=False`` forgets every output after use (the teacher then runs on every batch, as
    without a cache); ``keep="logits"`` keeps only the logits (a few bytes per sentence) and runs the
    teacher again on every batch for its hidden states: memory for time.

    ``signals`` names what is kept: "logits" (batch, labels) and, for hidden-state distillation,
    "hidden_states" ((blocks + 1) tensors of (seq, d) per sentence: 7 x 384 numbers per token for MiniLM).
    Hidden states are kept in ``hidden_dtype``: float16 by default, 5.4 kB per token instead of 10.8 kB in
    float32 (chapter 5's 6,300 sentences would still hold about 0.8 GB, so it passes keep="logits"), at a
    rounding error of at most 2^-11 of each value, far below the differences the hidden-state loss is about;
    they are handed back in float32. Logits are kept in float32. The teacher itself is never changed.

    Taught in: chapter 5, section 6 (Quantization-aware training at 2 bits, judged fairly).
    """

    def __init__(self, teacher: torch.nn.Module, signals: Sequence[str] = ("logits",), keep: bool | str = True,
                 hidden_dtype: torch.dtype = torch.float16):
        signals = tuple(signals)
        unknown = [name for name in signals if name not in TEACHER_SIGNALS]
        if unknown or "logits" not in signals:
            raise ValueError(f"signals must include 'logits' and be among {', '.join(TEACHER_SIGNALS)}; got {signals!r}")
        if keep not in (True, False, "logits"):
            raise ValueError(f"keep must be True, False or 'logits'; got {keep!r}")
        dtypes = (torch.float16, torch.bfloat16, torch.float32)
        if hidden_dtype not in dtypes:
            raise ValueError(f"hidden_dtype must be one of {', '.join(map(str, dtypes))}; got {hidden_dtype!r}")
        self.teacher, self.signals, self.keep, self.hidden_dtype = teacher, signals, keep, hidden_dtype
        self._store: dict[tuple[int, ...], tuple] = {}
        self.forwards = 0  # sentences the teacher has run on (cache misses; with keep="logits" and hidden states, every row)

    def __len__(self) -> int:
        return len(self._store)

    def label(self, tokenizer, examples: Sequence[Example], batch_size: int = 64, max_length: int = 64) -> int:
        """Run the teacher once on every sentence of ``examples`` not seen yet (batched by length); returns how many ran."""
        before = self.forwards
        lengths = token_lengths(tokenizer, examples, max_length)
        for batch in batches(tokenizer, examples, batch_size, max_length, bucket_lengths=lengths):
            self(batch)
        return self.forwards - before

    @staticmethod
    def _keys(batch: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
        lengths = batch["attention_mask"].sum(dim=1).tolist()  # (batch,) real tokens per row
        return [tuple(row[:n]) for row, n in zip(batch["input_ids"].tolist(), lengths)]

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The teacher's logits (batch, labels) and, if kept, hidden states (blocks + 1) x (batch, seq, d), padded as ``batch``."""
        keys = self._keys(batch)
        hidden = "hidden_states" in self.signals
        rerun = hidden and self.keep == "logits"  # hidden states are not kept: every row goes through the teacher
        missing = list(range(len(keys))) if rerun else sorted({i for i, key in enumerate(keys) if key not in self._store})
        fresh = {}  # row -> hidden states computed by this call and not kept (keep="logits")
        if missing:
            rows = {k: v[missing] for k, v in batch.items() if k != "labels"}
            width = int(rows["attention_mask"].sum(dim=1).max())
            rows = {k: v[:, :width] for k, v in rows.items()}  # re-padded to the longest missing row
            with eval_mode(self.teacher):
                out = self.teacher(**rows, output_hidden_states=hidden)
            for j, i in enumerate(missing):
                n = len(keys[i])
                if rerun:
                    fresh[i] = tuple(h[j, :n] for h in out.hidden_states)
                    self._store[keys[i]] = (out.logits[j].float().clone(), None)
                    continue
                states = tuple(h[j, :n].to(self.hidden_dtype, copy=True) for h in out.hidden_states) if hidden else None
                if states is not None and not all(bool(torch.isfinite(h).all()) for h in states):
                    raise ValueError(f"a teacher hidden state overflows hidden_dtype={self.hidden_dtype}; "
                                     "pass hidden_dtype=torch.bfloat16 or torch.float32")
                self._store[keys[i]] = (out.logits[j].float().clone(), states)
            self.forwards += len(missing)
        entries = [self._store[key] for key in keys]
        if not self.keep:
            self._store.clear()  # keep=False: the teacher runs on every batch (no cache)
        logits = torch.stack([entry[0] for entry in entries]).to(batch["input_ids"].device)  # (batch, labels)
        if not hidden:
            return logits, None
        per_row = [fresh[i] for i in range(len(keys))] if rerun else [entry[1] for entry in entries]
        seq = batch["input_ids"].shape[1]
        states = []
        for block in range(len(per_row[0])):  # each (batch, seq, d), zero where the batch pads (masked out later)
            padded = pad_sequence([row[block] for row in per_row], batch_first=True).float()
            states.append(F.pad(padded, (0, 0, 0, seq - padded.shape[1])).to(batch["input_ids"].device))
        return logits, tuple(states)


def distillation_loss(teacher: torch.nn.Module | TeacherOutputs, temperature: float = 2.0, ce_weight: float = 0.5,
                      hidden_weight: float = 0.0, cache: bool = True) -> Callable:
    """A loss for ``fine_tune_(..., loss_fn=...)`` that lets ``teacher`` guide the model (Hinton et al. 2015):

        L = T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)) + ce_weight · CE(z_s, y) + hidden_weight · MSE_h

    z_t, z_s are the teacher's and the student's logits. The temperature T > 1 softens both
    distributions, so the student also learns how the teacher ranks the wrong classes; T²
    keeps the KL term's gradients on the scale of the cross-entropy's. ``ce_weight=0`` is the
    published pruning recipes' "hardness 1": the teacher's soft labels only, which is what lets
    the teacher label text that has no label (augmented sentences). With ``hidden_weight`` > 0
    the student also matches the teacher's hidden state after every block (TinyBERT,
    TernaryBERT), which needs both to have the same width and depth:

        MSE_h = mean over blocks k of  Σ_real tokens ||h_s,k - h_t,k||² / (tokens · d)

    ``teacher`` is a model or a ``TeacherOutputs`` (share one between runs with the same teacher:
    its outputs are then computed once for all of them); ``cache=False`` runs a model teacher at every
    step instead (the slow loop, kept for comparison). The teacher is never changed.

    Taught in: chapter 5, section 6 (Quantization-aware training at 2 bits, judged fairly).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature!r}")
    if not ce_weight >= 0:
        raise ValueError(f"ce_weight must be zero or positive; got {ce_weight!r}")
    if not hidden_weight >= 0:
        raise ValueError(f"hidden_weight must be zero or positive; got {hidden_weight!r}")
    hidden = hidden_weight > 0
    if not isinstance(teacher, TeacherOutputs):
        teacher = TeacherOutputs(teacher, ("logits", "hidden_states") if hidden else ("logits",), keep=cache)
    elif hidden and "hidden_states" not in teacher.signals:
        raise ValueError("hidden_weight > 0 needs TeacherOutputs(teacher, signals=('logits', 'hidden_states'))")

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        extra = {"output_hidden_states": True} if hidden else {}
        if ce_weight > 0:
            out = model(**batch, **extra)
        else:  # no labels: no cross-entropy is computed
            out = model(**{k: v for k, v in batch.items() if k != "labels"}, **extra)
        target_logits, target_hidden = teacher(batch)  # (batch, labels), cached
        kl = F.kl_div(F.log_softmax(out.logits.float() / temperature, dim=-1), F.log_softmax(target_logits / temperature, dim=-1),
                      log_target=True, reduction="batchmean")
        loss = temperature**2 * kl
        if ce_weight > 0:
            loss = loss + ce_weight * out.loss
        if hidden:
            loss = loss + hidden_weight * hidden_state_mse(out.hidden_states, target_hidden, batch["attention_mask"])
        return loss

    return loss_fn


def hidden_state_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over blocks (the embeddings' output excluded) of the squared difference per real token and feature.

    ``student`` and ``teacher`` are the ``hidden_states`` tuples of a transformers model, (blocks + 1) x (batch, seq, d);
    ``attention_mask`` is (batch, seq), 1 for real tokens."""
    if len(student) != len(teacher) or student[-1].shape != teacher[-1].shape:
        raise ValueError(f"hidden-state distillation needs a student of the teacher's depth and width; got {len(student)} "
                         f"states of {tuple(student[-1].shape)} vs {len(teacher)} of {tuple(teacher[-1].shape)}")
    mask = attention_mask.unsqueeze(-1).float()  # (batch, seq, 1)
    per_block = [((s.float() - t.float()).pow(2) * mask).sum() / (mask.sum() * s.shape[-1]) for s, t in zip(student[1:], teacher[1:])]
    return torch.stack(per_block).mean()


def _train_step(model, batch, optimizer, scheduler, loss_fn, dtype, device) -> float:
    """One optimizer step on one batch; returns the loss."""
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss  # default: cross-entropy
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def step_caller(model: torch.nn.Module, tokenizer, train: Sequence[Example], config: FineTuneConfig,
                loss_fn: Callable | None = None, steps_per_call: int = 1) -> Callable[[], None]:
    """A zero-argument callable that trains ``model`` in place for ``steps_per_call`` steps of ``fine_tune_``'s loop
    (same batching, precision and loss; a constant learning rate), cycling through ``train``: for timing two loops
    against each other with ``toolkit.measure.compare_calls``.

    Taught in: chapter 8, section 1 (Three ways to spend the same training steps).
    """
    check_int("steps_per_call", steps_per_call)
    device = device_of(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    lengths = None
    if config.length_buckets:
        lengths = token_lengths(tokenizer, train, config.max_length)
    dtype = autocast_dtype(config.precision, device)
    state = {"epoch": 0, "batches": iter(())}

    def call() -> None:
        for _ in range(steps_per_call):
            batch = next(state["batches"], None)
            if batch is None:  # a new pass over ``train``
                state["epoch"] += 1
                state["batches"] = batches(tokenizer, train, config.batch_size, config.max_length, shuffle=True,
                                           seed=config.seed + state["epoch"], bucket_lengths=lengths)
                batch = next(state["batches"])
            _train_step(model, batch, optimizer, None, loss_fn, dtype, device)

    return call


def parameter_groups(model: torch.nn.Module, learning_rate: float, learning_rates: dict[str, float]) -> list[dict]:
    """AdamW's parameter groups: each entry of ``learning_rates`` (last name part -> rate) a group, the rest at ``learning_rate``."""
    for suffix, rate in learning_rates.items():
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not rate > 0:
            raise ValueError(f"learning_rates[{suffix!r}] must be a positive number; got {rate!r}")
    groups: dict[str, list[torch.nn.Parameter]] = {suffix: [] for suffix in learning_rates}
    rest = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        suffix = name.rsplit(".", 1)[-1]
        (groups[suffix] if suffix in groups else rest).append(parameter)
    empty = [suffix for suffix, members in groups.items() if not members]
    if empty:
        raise ValueError(f"learning_rates names parameters the model does not train: {empty}")
    return ([{"params": rest, "lr": learning_rate}] if rest else []) + [{"params": groups[k], "lr": learning_rates[k]} for k in groups]


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    mean_loss: float
    validation_accuracy: float | None
    seconds: float
    steps: int = 0  # optimizer steps in the epoch

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")


def fine_tune_(
    model: torch.nn.Module,
    tokenizer,
    train: Sequence[Example],
    config: FineTuneConfig = FineTuneConfig(),
    validation: Sequence[Example] | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor] | None = None,
    lr_factor: Callable[[int], float] | None = None,
    learning_rates: dict[str, float] | None = None,
) -> list[EpochLog]:
    """Fine-tune ``model`` in place (hence the trailing ``_``); return one log per epoch.

    ``on_step(step, learning_rate)`` is called after every optimizer step (step counts from 1 over all
    epochs; ``learning_rate`` is the rate that step used, of the first parameter group, as the
    scheduler set it): QAT uses it to freeze observers or to record validation accuracy mid-epoch, a
    proximal penalty to scale its step. The model is put back in training mode after it. ``loss_fn(model, batch)`` replaces the
    cross-entropy (e.g. ``distillation_loss(teacher)``).

    Per step: loss = cross_entropy(model(x).logits, y); w <- AdamW(w, dL/dw, lr_t), where
    lr_t rises linearly over the warm-up steps and then falls linearly to zero, or, with
    ``lr_factor``, lr_t = learning_rate · lr_factor(t) for the step after t completed steps
    (a pruning recipe's re-warmed schedule, ``PruningSchedule.lr_factor``).

    ``learning_rates`` gives some parameters a learning rate of their own, by the last part of
    their name (e.g. ``{"scores": 1e-2}`` for movement scores, ``{"scale": 1e-3}`` for LSQ
    scales); the schedule scales every group alike. A name that matches no parameter is an error.

    ``config.length_buckets`` batches sentences of similar length (less padding);
    ``config.precision`` runs the forward pass under bf16 autocast where that pays
    (``autocast_dtype``). Both change which floating-point operations run, not the recipe.

    Taught in: chapter 4, section 4 (The training loop, and a small sweep to choose the learning rate).
    """
    device = torch.device(device) if device is not None else device_of(model)
    examples = list(train[: config.train_limit] if config.train_limit else train)
    torch.manual_seed(config.seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(parameter_groups(model, config.learning_rate, learning_rates or {}),
                                  lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(examples) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if lr_factor is None:
        scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total_steps), total_steps)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    lengths = None
    if config.length_buckets:
        lengths = token_lengths(tokenizer, examples, config.max_length)
    dtype = autocast_dtype(config.precision, device)
    logs = []
    for epoch in range(1, config.epochs + 1):
        start, losses = time.perf_counter(), []
        bar = tqdm(
            batches(tokenizer, examples, config.batch_size, config.max_length, shuffle=True, seed=config.seed + epoch,
                    bucket_lengths=lengths),
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not progress,
            leave=True,
        )
        for batch in bar:
            learning_rate = optimizer.param_groups[0]["lr"]  # this step's rate: the scheduler moves it after the step
            losses.append(_train_step(model, batch, optimizer, scheduler, loss_fn, dtype, device))
            if on_step is not None:
                on_step(len(losses) + (epoch - 1) * steps_per_epoch, learning_rate)
                model.train()
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        seconds = time.perf_counter() - start
        val_acc = accuracy(model, tokenizer, validation) if validation else None
        model.train()
        logs.append(EpochLog(epoch, sum(losses) / len(losses), val_acc, seconds, len(losses)))
        if progress:
            shown = f", validation accuracy {val_acc:.1%}" if val_acc is not None else ""
            print(f"epoch {epoch}: mean loss {logs[-1].mean_loss:.4f}{shown} ({logs[-1].seconds:.0f} s)")
    model.eval()
    return logs


# ----------------------------------------------------------------------------- pruning while training (chapter 8)
def prune_during_training_(
    model: torch.nn.Module,
    tokenizer,
    train,
    schedule: gradual.PruningSchedule,
    config,
    names: Sequence[str] | None = None,
    criterion: str = "magnitude",
    scope: str = "local",
    layer_sparsity: dict[str, float] | None = None,
    loss_fn: Callable | None = None,
    progress: bool = True,
    lr_factor: Callable[[int], float] | None = None,
    score_learning_rate: float = 1e-2,
    score_init: str = "constant",
) -> gradual.PruningLog:
    """Train ``model`` in place with ``fine_tune_`` while its masks follow ``schedule`` (``toolkit.prune.gradual``); the masks are
    made permanent at the end (``remove_masks_``), so the model comes back with plain weights and exact zeros.

    ``layer_sparsity`` gives each layer its own final sparsity (local scope only); the schedule then runs
    for each layer with its own s_f. ``config.epochs`` × the steps per epoch must equal ``schedule.steps``.
    The embeddings are frozen (``requires_grad=False``) while training: they are not pruned.
    ``lr_factor`` goes to ``fine_tune_``: ``schedule.lr_factor`` re-warms the learning rate after every cut.

    ``criterion="movement"`` learns a score per weight (``toolkit.prune.movement``: straight-through TopK,
    Adam at ``score_learning_rate``, Sanh et al.'s 1e-2) and recomputes each layer's mask from the scores
    at every step, so a removed weight can return. The scores start equal, with ties broken by |w|, so a
    cut before any training (a first cut at step 0) is a magnitude cut that the scores then revise;
    ``score_init="magnitude"`` starts them at |w| / mean |w| instead (``movement.ScoredMask``); ``"magnitude"`` keeps the largest |w| still in, and
    its masks only ever shrink.

    Taught in: chapter 8, section 2 (How long does 90% need? The recipe at three budgets).
    """
    if criterion not in gradual.CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(gradual.CRITERIA)}; got {criterion!r}")
    if scope not in gradual.SCOPES:
        raise ValueError(f"scope must be one of {', '.join(gradual.SCOPES)}; got {scope!r}")
    names = prunable_modules(model, names)
    if layer_sparsity is not None:
        if scope != "local":
            raise ValueError("layer_sparsity needs scope='local': a global threshold decides each layer's share itself")
        missing = sorted(set(names) - set(layer_sparsity))
        unknown = sorted(set(layer_sparsity) - set(names))
        if missing or unknown:
            raise ValueError(f"layer_sparsity must name exactly the pruned layers; missing {missing[:3]}, unknown {unknown[:3]}")
        for value in layer_sparsity.values():
            check_sparsity(value)
    examples = list(train[: config.train_limit] if config.train_limit else train)
    total = -(-len(examples) // config.batch_size) * config.epochs
    if total != schedule.steps:
        raise ValueError(f"the schedule has {schedule.steps} steps but the training runs {total} "
                         f"({len(examples)} examples, batch {config.batch_size}, {config.epochs} epochs)")
    if criterion == "movement" and scope != "local":
        raise ValueError("movement pruning keeps the top scores of each layer: it needs scope='local'")
    if criterion == "movement":
        scored = movement.attach_scores_(model, names, init=score_init)
        removed = {n: torch.zeros_like(model.get_submodule(n).weight, dtype=torch.bool) for n in names}  # ever out at an update
    else:
        apply_masks_(model, {n: torch.ones_like(model.get_submodule(n).weight) for n in names})
    log = gradual.PruningLog()
    frozen = [p for p in model.base_model.embeddings.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)

    def targets(step):
        if layer_sparsity is None:
            return schedule.at(step)
        return {n: schedule.at(step, layer_sparsity[n]) for n in names}

    def update(step, learning_rate=None):  # the learning rate fine_tune_ passes is not needed here
        wanted = targets(step)
        if step > 0 and wanted == targets(step - 1):
            return
        log.steps.append(step)
        if criterion == "movement":
            for n, m in movement.current_masks(scored).items():  # the mask the last steps trained with
                removed[n] |= m == 0
            movement.set_sparsity_(scored, wanted)  # the masks follow the scores at every forward pass
            kept = movement.current_masks(scored)
            for n, m in kept.items():
                removed[n] |= m == 0
            log.sparsity.append(1 - sum(float(m.sum()) for m in kept.values()) / sum(m.numel() for m in kept.values()))
        else:
            scores = {n: model.get_submodule(n).weight_orig.detach().abs() for n in names}
            log.sparsity.append(gradual.update_masks_(model, names, wanted, scores, scope))
        reached = abs(log.sparsity[-1] - schedule.final) < 1e-3 or layer_sparsity is not None and step == schedule.steps
        if progress and step > 0 and (reached or len(log.steps) % 5 == 0):  # a few lines per run, not one per update
            tqdm.write(f"step {step}: sparsity {log.sparsity[-1]:.1%}")

    rates = {"scores": score_learning_rate} if criterion == "movement" else None
    try:
        update(0)
        fine_tune_(model, tokenizer, examples, config, progress=progress, on_step=update, loss_fn=loss_fn, lr_factor=lr_factor,
                   learning_rates=rates)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        if criterion == "movement":
            log.masks = {n: m > 0 for n, m in movement.current_masks(scored).items()}  # bool: kept
            log.returned = sum(int((removed[n] & log.masks[n]).sum()) for n in names)
            movement.remove_scores_(model, names)
    if criterion == "magnitude":
        log.masks = {n: m.detach() > 0 for n, m in gradual.current_masks(model, names).items()}  # bool: kept
        remove_masks_(model)
    return log
