"""A short, readable fine-tuning loop (used to build the baseline, and later to retrain).

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
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from toolkit.data import Example, batches
from toolkit.measure import accuracy


@dataclass(frozen=True)
class FineTuneConfig:
    """Hyper-parameters of a fine-tune. Part of the classifier cache's key."""

    epochs: int = 3
    learning_rate: float = 5e-5
    batch_size: int = 32
    max_length: int = 64
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    train_limit: int | None = None  # use only the first N training examples (smoke runs)

    def __post_init__(self):
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer; got {self.epochs!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive; got {self.learning_rate!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {self.batch_size!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1); got {self.warmup_fraction!r}")
        if self.train_limit is not None and (not isinstance(self.train_limit, int) or self.train_limit < 1):
            raise ValueError(f"train_limit must be None or a positive integer; got {self.train_limit!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def distillation_loss(teacher: torch.nn.Module, temperature: float = 2.0, ce_weight: float = 0.5,
                      hidden_weight: float = 0.0) -> Callable:
    """A loss for ``fine_tune_(..., loss_fn=...)`` that lets ``teacher`` guide the model (Hinton et al. 2015):

        L = T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)) + ce_weight · CE(z_s, y) + hidden_weight · MSE_h

    z_t, z_s are the teacher's and the student's logits. The temperature T > 1 softens both
    distributions, so the student also learns how the teacher ranks the wrong classes; T²
    keeps the KL term's gradients on the scale of the cross-entropy's. With ``hidden_weight``
    > 0 the student also matches the teacher's hidden state after every block (TinyBERT,
    TernaryBERT), which needs both to have the same width and depth:

        MSE_h = mean over blocks k of  Σ_real tokens ||h_s,k - h_t,k||² / (tokens · d)

    The teacher runs in eval mode without gradients and is never changed.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature!r}")
    if not ce_weight >= 0:
        raise ValueError(f"ce_weight must be zero or positive; got {ce_weight!r}")
    if not hidden_weight >= 0:
        raise ValueError(f"hidden_weight must be zero or positive; got {hidden_weight!r}")
    hidden = hidden_weight > 0

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        extra = {"output_hidden_states": True} if hidden else {}
        out = model(**batch, **extra)
        was_training = teacher.training
        teacher.eval()  # no dropout in the teacher; its mode is restored right after
        with torch.no_grad():
            target = teacher(**{k: v for k, v in batch.items() if k != "labels"}, **extra)  # logits: (batch, labels)
        teacher.train(was_training)
        kl = F.kl_div(F.log_softmax(out.logits / temperature, dim=-1), F.log_softmax(target.logits / temperature, dim=-1),
                      log_target=True, reduction="batchmean")
        loss = temperature**2 * kl + ce_weight * out.loss
        if hidden:
            loss = loss + hidden_weight * hidden_state_mse(out.hidden_states, target.hidden_states, batch["attention_mask"])
        return loss

    return loss_fn


def hidden_state_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over blocks (the embeddings' output excluded) of the squared difference per real token and feature.

    ``student`` and ``teacher`` are the ``hidden_states`` tuples of a transformers model, (blocks + 1) x (batch, seq, d);
    ``attention_mask`` is (batch, seq), 1 for real tokens."""
    if len(student) != len(teacher) or student[-1].shape != teacher[-1].shape:
        raise ValueError(f"hidden-state distillation needs a student of the teacher's depth and width; got {len(student)} "
                         f"states of {tuple(student[-1].shape)} vs {len(teacher)} of {tuple(teacher[-1].shape)}")
    mask = attention_mask.unsqueeze(-1).to(student[-1].dtype)  # (batch, seq, 1)
    per_block = [((s - t).pow(2) * mask).sum() / (mask.sum() * s.shape[-1]) for s, t in zip(student[1:], teacher[1:])]
    return torch.stack(per_block).mean()


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    mean_loss: float
    validation_accuracy: float | None
    seconds: float


def fine_tune_(
    model: torch.nn.Module,
    tokenizer,
    train: Sequence[Example],
    config: FineTuneConfig = FineTuneConfig(),
    validation: Sequence[Example] | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor] | None = None,
) -> list[EpochLog]:
    """Fine-tune ``model`` in place (hence the trailing ``_``); return one log per epoch.

    ``on_step(step)`` is called after every optimizer step (step counts from 1 over all
    epochs): QAT uses it to freeze observers or to record validation accuracy mid-epoch. The
    model is put back in training mode after it. ``loss_fn(model, batch)`` replaces the
    cross-entropy (e.g. ``distillation_loss(teacher)``).

    Per step: loss = cross_entropy(model(x).logits, y); w <- AdamW(w, dL/dw, lr_t), where
    lr_t rises linearly over the warm-up steps and then falls linearly to zero.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    examples = list(train[: config.train_limit] if config.train_limit else train)
    torch.manual_seed(config.seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(examples) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total_steps), total_steps)
    logs = []
    for epoch in range(1, config.epochs + 1):
        start, losses = time.perf_counter(), []
        bar = tqdm(
            batches(tokenizer, examples, config.batch_size, config.max_length, shuffle=True, seed=config.seed + epoch),
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not progress,
            leave=True,
        )
        for batch in bar:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss  # default: cross-entropy
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if on_step is not None:
                on_step(len(losses) + (epoch - 1) * steps_per_epoch)
                model.train()
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        val_acc = accuracy(model, tokenizer, validation) if validation else None
        model.train()
        logs.append(EpochLog(epoch, sum(losses) / len(losses), val_acc, time.perf_counter() - start))
        if progress:
            shown = f", validation accuracy {val_acc:.1%}" if val_acc is not None else ""
            print(f"epoch {epoch}: mean loss {logs[-1].mean_loss:.4f}{shown} ({logs[-1].seconds:.0f} s)")
    model.eval()
    return logs
