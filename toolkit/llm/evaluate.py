"""How far a quantized LLM is from its reference: perplexity and next-token KL divergence.

Perplexity of a text of T tokens under a model p (each segment scored from its second token):

    PPL = exp( -1/(T-1) * sum_t log p(x_t | x_<t) )

KL divergence of the next-token distribution against a reference model r, averaged over positions
(nats; 0 when the two distributions are equal):

    KL(r || p) = mean_t sum_v r(v | x_<t) * (log r(v | x_<t) - log p(v | x_<t))

Perplexity says how well each model predicts the text; KL says how much the quantized model's
*predictions* moved, which is what matters when the reference itself is the goal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from toolkit.layers import eval_mode
from toolkit.runtime import check_int


KL_POSITIONS = 64  # positions per slice of the KL sum: 64 x 49,152 words x 4 bytes = 12.6 MB per temporary


@dataclass
class TextScore:
    perplexity: float
    kl: float | None  # mean KL(reference || model) over the reference's positions, nats; None without a reference
    tokens: int  # tokens scored


def check_segments(segments: torch.Tensor) -> None:
    """A clear error unless ``segments`` is (count, length) token ids with count >= 1 and length >= 2."""
    if segments.dim() != 2 or segments.shape[1] < 2 or segments.shape[0] < 1:
        raise ValueError(f"segments must be (count, length) token ids with length >= 2; got shape {tuple(segments.shape)}")


def reference_log_probs(model: torch.nn.Module, segments: torch.Tensor) -> torch.Tensor:
    """log r(v | x_<t) of the reference for every position of ``segments`` (count, length) except the last:
    (count, length - 1, vocab) float32. Keep it small: 512 positions of a 49,152-token vocabulary are 100 MB.

    Taught in: chapter 10.
    """
    check_segments(segments)
    with eval_mode(model), torch.inference_mode():
        return torch.log_softmax(model(segments).logits[:, :-1].float(), dim=-1)


def score(model: torch.nn.Module, segments: torch.Tensor, reference: torch.Tensor | None = None,
          batch_size: int = 1) -> TextScore:
    """Perplexity of ``model`` on ``segments`` (count, length) and, if ``reference`` (from
    ``reference_log_probs`` of the first segments) is given, the mean KL against it on those segments.

    Only the segments with a reference need the full log-softmax over the vocabulary; the others are
    scored with a fused cross-entropy, which never stores (batch, length, vocab) log-probabilities. One
    segment at a time by default: the logits of 512 positions over SmolLM2's 49,152 words are 100 MB, and every
    segment in a batch adds as much again to the peak memory. The KL is summed ``KL_POSITIONS`` positions at a
    time, so its temporaries (the model's log-probabilities, the reference's probabilities) stay a few MB.

    Taught in: chapter 10.
    """
    check_segments(segments)
    check_int("batch_size", batch_size)
    nll, tokens, kl_sum, kl_positions = 0.0, 0, 0.0, 0
    with eval_mode(model), torch.inference_mode():
        for start in range(0, segments.shape[0], batch_size):
            batch = segments[start:start + batch_size]  # (b, L)
            logits = model(batch).logits[:, :-1]  # (b, L-1, V)
            targets = batch[:, 1:]
            nll += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                                           reduction="sum"))
            tokens += targets.numel()
            if reference is not None and start < reference.shape[0]:
                ref = reference[start:start + batch_size]  # (b', L-1, V)
                for p in range(0, ref.shape[1], KL_POSITIONS):  # a slice of positions at a time: small temporaries
                    mine = torch.log_softmax(logits[: ref.shape[0], p:p + KL_POSITIONS].float(), dim=-1)  # (b', <=P, V)
                    # sum r * (log r - log p), with log r given: kl_div(input=log p, target=log r, log_target=True)
                    kl_sum += float(torch.nn.functional.kl_div(mine, ref[:, p:p + KL_POSITIONS], reduction="sum", log_target=True))
                kl_positions += ref.shape[0] * ref.shape[1]
            del logits
    return TextScore(math.exp(nll / tokens), kl_sum / kl_positions if kl_positions else None, tokens)


def gap_closed(method: float, rtn: float, reference: float) -> float:
    """The fraction of round-to-nearest's perplexity gap a method closes: (rtn - method) / (rtn - reference).

    Taught in: chapter 10, section 5 (AWQ from scratch).
    """
    if rtn == reference:
        raise ValueError("rtn equals reference: there is no gap to close")
    return (rtn - method) / (rtn - reference)
