"""The instruct model as a zero-shot sentiment classifier: the task metric that ties chapter 10 to chapters 1-9.

Each review goes into one user turn of the chat template, with the question; the model's first answer
token decides. Only two tokens matter, so the score is the log-odds between them:

    score(x) = log p("Positive" | prompt(x)) - log p("Negative" | prompt(x))     (the first answer token)
    label(x) = 1 if score(x) > threshold else 0

A small model leans to one answer, so the threshold is chosen on the validation split (the one that
maximizes accuracy there) and the test split is scored once with it. Nothing is trained.
"""

from __future__ import annotations

import copy

import torch

from toolkit.layers import eval_mode
from toolkit.runtime import check_int

PROMPT = "Is the sentiment of this review positive or negative? Answer with one word.\n\nReview: {text}"
ANSWERS = ("Negative", "Positive")  # label 0, label 1 (toolkit.data's labels)


def answer_ids(tokenizer) -> tuple[int, int]:
    """The token ids of the two answers' first tokens (each answer is one token in SmolLM2's vocabulary)."""
    ids = [tokenizer(answer, add_special_tokens=False).input_ids for answer in ANSWERS]
    if any(len(i) == 0 for i in ids) or ids[0][0] == ids[1][0]:
        raise ValueError(f"the answers {ANSWERS} must start with different tokens in this tokenizer; got {ids}")
    return ids[0][0], ids[1][0]


def prompts(tokenizer, texts: list[str]) -> list[str]:
    """Each text as one user turn of the chat template, ready for the assistant's answer."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": PROMPT.format(text=t)}], tokenize=False,
                                          add_generation_prompt=True) for t in texts]


def _shared_prefix(sequences: list[list[int]]) -> int:
    """How many leading tokens every sequence shares."""
    n = min(len(s) for s in sequences)
    for i in range(n):
        if any(s[i] != sequences[0][i] for s in sequences):
            return i
    return n


def scores(model: torch.nn.Module, tokenizer, texts: list[str], batch_size: int = 16) -> torch.Tensor:
    """score(x) for every text: (n,) float32.

    Every prompt starts with the same tokens (the template's system turn and the question), so those are run once
    and their keys and values reused for every batch (at least one token of each prompt is its own); the prompts are
    batched in order of length, the rest of each is padded on the right, and the answer is read at its last real token.

    Taught in: chapter 10, section 9 (The task: zero-shot sentiment on the workbook's test sentences).
    """
    check_int("batch_size", batch_size)
    if not texts:
        raise ValueError("texts is empty: there is nothing to classify")
    negative, positive = answer_ids(tokenizer)
    ids = [tokenizer(chat, add_special_tokens=False).input_ids for chat in prompts(tokenizer, list(texts))]
    shared = min(_shared_prefix(ids), min(len(i) for i in ids) - 1)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    base, head = model.base_model, model.get_output_embeddings()
    out = torch.empty(len(ids))
    with eval_mode(model), torch.inference_mode():
        prefix = base(torch.tensor([ids[0][:shared]]), use_cache=True).past_key_values  # keys and values of the shared tokens
        order = sorted(range(len(ids)), key=lambda n: len(ids[n]))  # similar lengths share a batch: little padding
        for start in range(0, len(ids), batch_size):
            batch = order[start:start + batch_size]
            rests = [ids[n][shared:] for n in batch]
            lengths = torch.tensor([len(r) for r in rests])
            longest = int(lengths.max())
            rest_ids = torch.tensor([r + [pad] * (longest - len(r)) for r in rests])  # (b, longest), right-padded
            mask = torch.cat([torch.ones(len(rests), shared, dtype=torch.long),
                              (torch.arange(longest)[None, :] < lengths[:, None]).long()], dim=1)  # (b, shared + longest)
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(len(rests))
            hidden = base(input_ids=rest_ids, attention_mask=mask, past_key_values=cache, use_cache=True).last_hidden_state
            last = hidden[torch.arange(len(rests)), lengths - 1]  # (b, H): the position that predicts the answer
            log_probs = torch.log_softmax(head(last).float(), -1)  # (b, V)
            out[batch] = log_probs[:, positive] - log_probs[:, negative]
    return out


def best_threshold(scores_: torch.Tensor, labels: torch.Tensor) -> float:
    """The threshold that maximizes accuracy of (scores_ > threshold) against ``labels`` (0/1): the midpoint
    between two neighbouring sorted scores (or below them all), the smallest such on ties.

    Taught in: chapter 10, section 9 (The task: zero-shot sentiment on the workbook's test sentences).
    """
    if scores_.shape != labels.shape or scores_.dim() != 1 or scores_.numel() == 0:
        raise ValueError(f"scores_ and labels must be non-empty vectors of one length; got {tuple(scores_.shape)} and {tuple(labels.shape)}")
    values = scores_.sort().values
    candidates = torch.cat([values[:1] - 1, (values[1:] + values[:-1]) / 2])
    accuracy = torch.stack([((scores_ > c).long() == labels).float().mean() for c in candidates])
    return float(candidates[int(accuracy.argmax())])


def predict(scores_: torch.Tensor, threshold: float) -> torch.Tensor:
    """label(x) = 1 if score(x) > threshold else 0: (n,) int64.

    Taught in: chapter 10, section 9 (The task: zero-shot sentiment on the workbook's test sentences).
    """
    return (scores_ > threshold).long()
