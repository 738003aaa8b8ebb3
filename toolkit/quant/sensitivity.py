"""Which layers can bear fewer bits: a second-order sensitivity estimate and an exact bit allocation under a byte budget.

**Sensitivity, predicted (HAWQ-v2 style).** Quantizing a weight w to w + Δ changes the loss by

    ΔL ≈ gᵀΔ + ½ ΔᵀHΔ

At a trained minimum g ≈ 0, and with Δ roughly uncorrelated between weights the second term is
about ½ · (Tr(H) / n) · ||Δ||². The Hessian trace comes without ever forming H (n² numbers) from
Hutchinson's estimator with Rademacher probes v (entries ±1, E[vvᵀ] = I):

    Tr(H) = E_v[vᵀ H v],   H v = ∇_w (∇_w L · v)      (a Hessian-vector product: two backward passes)

**Mixed precision under a budget.** Each layer i picks one option j (a bit width) with a cost b_ij
(bytes) and an estimated damage e_ij; choose one option per layer to minimise Σ e_ij subject to
Σ b_ij ≤ B. This multiple-choice knapsack is solved exactly by dynamic programming over the budget
in units of ``granularity`` bytes:

    D_i(c) = min_j [ D_{i-1}(c - b_ij) + e_ij ],   D_0(c) = 0 for c ≥ 0

**Sensitivity, measured.** ``layer_sensitivity`` quantizes one layer at a time and records the
accuracy drop and the KL divergence of the logits against the float model, and ``block_sqnr_db``
follows the error of a quantized model through the blocks (hidden states against the float model's).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from toolkit.data import Example, batches
from toolkit.layers import eval_mode, predict
from toolkit.quant.affine import fake_quantize
from toolkit.quant.spec import QuantSpec
from toolkit.runtime import check_int


def hutchinson_trace(loss_fn: Callable[[], torch.Tensor], parameters: Sequence[torch.Tensor], probes: int = 8,
                     seed: int = 0) -> list[float]:
    """Estimate Tr(H_ii) of ``loss_fn()`` for each tensor i in ``parameters`` (the diagonal block of that tensor).

    One probe draws a Rademacher vector v_i per tensor and multiplies the *full* Hessian by the concatenated
    vector (one ``autograd.grad`` over all tensors): (H v)_i = Σ_j H_ij v_j, so v_iᵀ(H v)_i = v_iᵀH_ii v_i + Σ_(j≠i)
    v_iᵀH_ij v_j. The cross terms average to zero (independent probes), so each estimate stays unbiased, but they
    add variance: part of why a few traces come out negative with few probes. ``loss_fn`` recomputes the loss (a scalar) from the current parameters; every probe draws a fresh
    Rademacher vector per tensor and costs one forward and two backward passes. Returns one estimate
    per tensor, the mean of ``probes`` samples of vᵀHv (attention runs on PyTorch's plain "math" kernel, which
    can be differentiated twice).

    Taught in: chapter 5, section 2 (Sensitivity, predicted: curvature times error).
    """
    check_int("probes", probes)
    parameters = list(parameters)
    if not parameters or not all(p.requires_grad for p in parameters):
        raise ValueError("parameters must be a non-empty list of tensors with requires_grad=True")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    generator = torch.Generator().manual_seed(seed)
    totals = [0.0] * len(parameters)
    for _ in range(probes):
        with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no second derivative
            loss = loss_fn()
        grads = torch.autograd.grad(loss, parameters, create_graph=True)
        vs = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.dtype).to(p.device) for p in parameters]
        hvs = torch.autograd.grad(grads, parameters, grad_outputs=vs)  # (H v)_i = Σ_j H_ij v_j: the full Hessian
        for i, (v, hv) in enumerate(zip(vs, hvs)):
            totals[i] += float((v * hv).sum())
    return [t / probes for t in totals]


def allocate_bits(costs: Sequence[Sequence[int]], damages: Sequence[Sequence[float]], budget: int,
                  granularity: int = 1) -> list[int]:
    """Choose one option per layer (an index into its ``costs``/``damages`` rows) minimising the summed damage with
    the summed cost (bytes) at most ``budget``; exact dynamic programming. Costs are rounded *up* to multiples of
    ``granularity`` bytes, so a returned choice never exceeds the budget. Raises ``ValueError`` if no choice fits.

    Taught in: chapter 5, section 5 (Mixed precision under a byte budget).
    """
    if len(costs) != len(damages) or any(len(c) != len(d) or not c for c, d in zip(costs, damages)):
        raise ValueError("costs and damages must have one non-empty row per layer, of equal lengths")
    check_int("budget", budget, minimum=0, detail=' number of bytes')
    check_int("granularity", granularity, detail=' number of bytes')
    units = budget // granularity
    inf = float("inf")
    best = [0.0] * (units + 1)  # D_0(c)
    choices: list[list[int]] = []
    for layer_costs, layer_damages in zip(costs, damages):
        steps = [-(-int(c) // granularity) for c in layer_costs]  # ceil: never under-count bytes
        row, pick = [inf] * (units + 1), [-1] * (units + 1)
        for c in range(units + 1):
            for j, (step, damage) in enumerate(zip(steps, layer_damages)):
                if step <= c and best[c - step] + damage < row[c]:
                    row[c], pick[c] = best[c - step] + damage, j
        best = row
        choices.append(pick)
    if best[units] == inf:
        smallest = sum(min(c) for c in costs)
        raise ValueError(f"budget {budget} bytes is below the smallest possible total ({smallest} bytes)")
    chosen, c = [], units  # walk back through the tables
    for layer_costs, pick in zip(reversed(costs), reversed(choices)):
        j = pick[c]
        chosen.append(j)
        c -= -(-int(layer_costs[j]) // granularity)
    return chosen[::-1]


# ----------------------------------------------------------------------------- sensitivity, measured
@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    spec: str            # QuantSpec.describe() of the weight quantization
    accuracy: float      # of the model with only this layer quantized, on the examples given
    accuracy_drop: float  # fp32 accuracy minus that (points as a fraction: 0.01 is one point)
    kl: float            # mean KL(p_fp32 ‖ p_quantized) of the softmaxed logits, in nats


def layer_sensitivity(model: torch.nn.Module, tokenizer, examples: Sequence[Example], layers: Sequence[str],
                      specs: Sequence[QuantSpec], batch_size: int = 64) -> list[LayerSensitivity]:
    """Quantize one layer's weight at a time (fake quantization: codes rounded, then read back as float), keep every
    other layer in float, and measure accuracy and the KL divergence of the logits against the float model.

    ``layers`` are module names of ``torch.nn.Linear`` or ``torch.nn.Embedding`` modules. ``model`` is not changed:
    the scan works on a private copy and puts each weight back after measuring it.

    Taught in: chapter 5, section 1 (Sensitivity, measured: one layer at a time).
    """
    work = copy.deepcopy(model).eval()
    modules = dict(work.named_modules())
    unknown = [name for name in layers if not isinstance(modules.get(name), (torch.nn.Linear, torch.nn.Embedding))]
    if unknown:
        raise ValueError(f"layers must name Linear or Embedding modules; not found or of another type: {unknown[:5]}")
    if not specs:
        raise ValueError("specs must hold at least one QuantSpec")
    labels = torch.tensor([e.label for e in examples])
    reference = predict(work, tokenizer, examples, batch_size).log_softmax(-1)  # (n, labels)
    base_accuracy = float((reference.argmax(-1) == labels).float().mean())
    results = []
    for name in layers:
        weight = modules[name].weight
        original = weight.detach().clone()
        for spec in specs:
            with torch.no_grad():
                weight.copy_(fake_quantize(original, spec))
            logp = predict(work, tokenizer, examples, batch_size).log_softmax(-1)
            accuracy = float((logp.argmax(-1) == labels).float().mean())
            kl = max(0.0, float((reference.exp() * (reference - logp)).sum(-1).mean()))  # >= 0; rounding can dip below
            results.append(LayerSensitivity(name, spec.describe(), accuracy, base_accuracy - accuracy, kl))
        with torch.no_grad():
            weight.copy_(original)
    return results


# ----------------------------------------------------------------------------- sensitivity, predicted per layer
def predicted_damage(trace: float, weight: torch.Tensor, spec: QuantSpec) -> float:
    """HAWQ-v2's second-order estimate of what quantizing ``weight`` at ``spec`` costs:

        Ω = ½ · (Tr(H) / n) · ||Q(W) - W||²

    (the mean curvature per weight times the squared quantization error, n = weight.numel()).

    Taught in: chapter 5, section 2 (Sensitivity, predicted: curvature times error).
    """
    w = weight.detach().float()
    return 0.5 * trace / w.numel() * float((fake_quantize(w, spec) - w).pow(2).sum())


LAYER_TYPES = {  # suffix of a BERT module name -> the role of that layer
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention output",
    "intermediate.dense": "FFN in",
    "output.dense": "FFN out",
    "embeddings.word_embeddings": "word embeddings",
}


def layer_type(name: str) -> str:
    """The role of a BERT layer from its module name, e.g. "bert.encoder.layer.3.intermediate.dense" -> "FFN in".

    Taught in: chapter 5, section 1 (Sensitivity, measured: one layer at a time).
    """
    for suffix, kind in LAYER_TYPES.items():  # "attention.output.dense" is tried before "output.dense"
        if name.endswith(suffix):
            return kind
    raise ValueError(f"{name!r} is not a BERT layer this table knows; accepted suffixes: {', '.join(LAYER_TYPES)}")


def layer_depth(name: str) -> int | None:
    """The block index in a BERT module name ("...layer.3..." -> 3); None outside the blocks (embeddings).

    Taught in: chapter 5, section 1 (Sensitivity, measured: one layer at a time).
    """
    parts = name.split(".")
    for before, part in zip(parts, parts[1:]):
        if before == "layer" and part.isdigit():
            return int(part)
    return None


# ----------------------------------------------------------------------------- error propagation
def block_sqnr_db(reference: torch.nn.Module, model: torch.nn.Module, tokenizer, examples: Sequence[Example],
                  batch_size: int = 64) -> list[float]:
    """SQNR in dB of ``model``'s hidden states against ``reference``'s, after the embeddings and after every block:

        SQNR_k = 10 log10( Σ h_k² / Σ (ĥ_k - h_k)² )     over every real (non-padding) token

    Returns one value per hidden state (embeddings output first). Both models must share a tokenizer and shape.

    Taught in: chapter 5, section 3 (How error travels through the blocks (optional)).
    """
    if len(examples) == 0:
        raise ValueError("examples is empty: comparing hidden states needs at least one sentence")
    signal: list[float] = []
    noise: list[float] = []
    with eval_mode(reference, model), torch.inference_mode():  # the models' train/eval modes are theirs: put back after
        for batch in batches(tokenizer, examples, batch_size=batch_size):
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            keep = inputs["attention_mask"].bool()  # (batch, seq)
            h_ref = reference(**inputs, output_hidden_states=True).hidden_states  # (blocks + 1) x (batch, seq, d)
            h_hat = model(**inputs, output_hidden_states=True).hidden_states
            if not signal:
                signal, noise = [0.0] * len(h_ref), [0.0] * len(h_ref)
            for k, (a, b) in enumerate(zip(h_ref, h_hat)):
                a, b = a[keep].float(), b[keep].float()  # (tokens, d)
                signal[k] += float(a.pow(2).sum())
                noise[k] += float((b - a).pow(2).sum())
    return [10 * math.log10(s / n) if n > 0 else float("inf") for s, n in zip(signal, noise)]
