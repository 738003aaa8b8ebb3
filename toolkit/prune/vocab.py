"""Vocabulary trimming: keep only the embedding rows of the tokens a task actually uses.

MiniLM's word-embedding table has one row of 384 numbers for each of its 30,522 WordPiece tokens:
11.7 M parameters, more than its six encoder layers together. A sentiment classifier for English
product reviews meets a few thousand of those tokens. Trimming keeps the rows of the tokens seen
in the training split (plus the special tokens) and sends every other token to ``[UNK]``:

    kept = sorted({ids of the training sentences} ∪ {special ids})      # (V',) original ids
    lookup[v] = position of v in kept, or position of [UNK] if v ∉ kept  # (V,) old id -> new id
    E'[i] = E[kept[i]]                                                   # (V', d) the new table
    embed(ids) = E'[lookup[ids]]                                         # == E[ids] for kept ids

The tokenizer is not changed: it still produces the original ids, and the lookup (a 4-byte integer
per original token, 122 kB for MiniLM) lives inside the model, so every engine that runs the model
runs the remapping too. A sentence whose tokens were all seen gives exactly the original logits;
a token never seen in training reads as ``[UNK]``. How often that happens on new text is the price,
and ``unknown_rate`` measures it.

Two stronger forms (``task_vocabulary(..., keep_characters=True)`` with ``retokenize``):

* keep every single-character piece (``a``, ``##a``, ...: about 2,000 rows) besides the task's
  tokens, and give the model a **tokenizer of its own** whose WordPiece vocabulary is the kept
  tokens (``trimmed_tokenizer``). A word whose token was dropped is then spelled with the longest
  kept pieces, down to single characters, instead of becoming ``[UNK]``: nothing is lost outright,
  but the model reads pieces it rarely saw for that word;
* keep only the tokens seen at least ``min_count`` times (frequency-based trimming), trading rows
  for spelled-out words.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from toolkit.data import Example
from toolkit.runtime import check_int


class TrimmedEmbedding(torch.nn.Module):
    """``E'[lookup[ids]]``: an embedding over a subset of the vocabulary, indexed by the original ids."""

    def __init__(self, weight: torch.Tensor, lookup: torch.Tensor):
        super().__init__()
        if weight.dim() != 2 or lookup.dim() != 1:
            raise ValueError(f"weight must be (kept, dim) and lookup (vocabulary,); got {tuple(weight.shape)} and {tuple(lookup.shape)}")
        if int(lookup.min()) < 0 or int(lookup.max()) >= weight.shape[0]:
            raise ValueError("lookup must map every original id to a row of weight")
        self.weight = torch.nn.Parameter(weight.detach().clone())  # (V', d)
        self.register_buffer("lookup", lookup.to(torch.int32).clone())  # (V,) old id -> row of weight

    @property
    def num_embeddings(self) -> int:
        """Size of the vocabulary the tokenizer produces (the original one)."""
        return int(self.lookup.numel())

    @property
    def embedding_dim(self) -> int:
        return int(self.weight.shape[1])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # (batch, seq) -> (batch, seq, d)
        return F.embedding(self.lookup[input_ids].long(), self.weight)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]} of {self.num_embeddings} tokens kept, dim {self.embedding_dim}"


@dataclass(frozen=True)
class Vocabulary:
    kept_ids: torch.Tensor  # (V',) original ids, sorted
    unk_id: int             # the original id of [UNK]
    size: int               # V, the original vocabulary size

    def lookup(self) -> torch.Tensor:
        """(V,) new row of every original id; ids not kept map to the row of [UNK]."""
        table = torch.full((self.size,), -1, dtype=torch.int64)
        table[self.kept_ids] = torch.arange(len(self.kept_ids))
        return torch.where(table < 0, table[self.unk_id], table)


def token_counts(tokenizer, examples: Sequence[Example], max_length: int = 64) -> torch.Tensor:
    """(V,) how often each token id occurs in ``examples`` (truncated as the classifier truncates).

    Taught in: chapter 9, section 3 (Stage two: the embedding table).
    """
    if not examples:
        raise ValueError("examples must hold at least one sentence to count tokens in")
    counts = torch.zeros(len(tokenizer), dtype=torch.int64)
    for row in tokenizer([e.text for e in examples], truncation=True, max_length=max_length)["input_ids"]:
        counts += torch.bincount(torch.tensor(row), minlength=len(tokenizer))
    return counts


def character_ids(tokenizer) -> list[int]:
    """Ids of every single-character WordPiece token: ``x`` (starts a word) and ``##x`` (continues one)."""
    return sorted(i for t, i in tokenizer.get_vocab().items() if len(t) == 1 or (t.startswith("##") and len(t) == 3))


def task_vocabulary(tokenizer, examples: Sequence[Example], max_length: int = 64, min_count: int = 1,
                    keep_characters: bool = False) -> Vocabulary:
    """The token ids ``examples`` produce at least ``min_count`` times (truncated as the classifier
    truncates), plus every special token, plus every single-character piece if ``keep_characters``.

    Taught in: chapter 9, section 3 (Stage two: the embedding table).
    """
    check_int("min_count", min_count, detail=' (occurrences in examples)')
    counts = token_counts(tokenizer, examples, max_length)
    ids = set(tokenizer.all_special_ids) | set(torch.nonzero(counts >= min_count).flatten().tolist())
    if keep_characters:
        ids |= set(character_ids(tokenizer))
    return Vocabulary(torch.tensor(sorted(ids)), tokenizer.unk_token_id, len(tokenizer))


def trimmed_tokenizer(tokenizer, vocabulary: Vocabulary):
    """A BERT WordPiece tokenizer over the kept tokens only, numbered 0..V'-1 in ``kept_ids`` order.

    Same normalisation as ``tokenizer`` (lower case, accents, Chinese characters); a word whose
    token was not kept is split into the longest kept pieces, and becomes ``[UNK]`` only if no
    split exists (keep single characters to rule that out). Pairs with
    ``trim_vocabulary(model, vocabulary, retokenize=True)``.

    Taught in: chapter 9, section 3 (Stage two: the embedding table).
    """
    from transformers import BertTokenizer  # the tokenizers-backed WordPiece tokenizer

    if len(tokenizer) != vocabulary.size:
        raise ValueError(f"vocabulary is for {vocabulary.size} tokens but tokenizer has {len(tokenizer)}")
    names = tokenizer.convert_ids_to_tokens(vocabulary.kept_ids.tolist())
    specials = {"unk_token": tokenizer.unk_token, "sep_token": tokenizer.sep_token, "pad_token": tokenizer.pad_token,
                "cls_token": tokenizer.cls_token, "mask_token": tokenizer.mask_token}
    missing = [t for t in specials.values() if t not in names]
    if missing:
        raise ValueError(f"vocabulary must keep the special tokens; missing {missing}")
    options = json.loads(tokenizer.backend_tokenizer.normalizer.__getstate__())  # the BertNormalizer's settings
    return BertTokenizer(vocab={name: i for i, name in enumerate(names)},
                         do_lower_case=options.get("lowercase", True),
                         tokenize_chinese_chars=options.get("handle_chinese_chars", True),
                         strip_accents=options.get("strip_accents"),
                         model_max_length=tokenizer.model_max_length, **specials)


def trim_vocabulary(model: torch.nn.Module, vocabulary: Vocabulary, retokenize: bool = False) -> torch.nn.Module:
    """A copy of a BERT-layout ``model`` whose word embeddings keep only ``vocabulary.kept_ids``.

    By default the copy reads the original tokenizer's ids (a ``TrimmedEmbedding`` with its lookup).
    ``retokenize=True`` gives it a plain ``nn.Embedding`` of the kept rows, for the ids of
    ``trimmed_tokenizer(tokenizer, vocabulary)``.

    Taught in: chapter 9, section 3 (Stage two: the embedding table).
    """
    embeddings = model.base_model.embeddings
    table = embeddings.word_embeddings
    if isinstance(table, TrimmedEmbedding):
        raise ValueError("model's vocabulary is already trimmed; trim the original model instead")
    if table.num_embeddings != vocabulary.size:
        raise ValueError(f"vocabulary is for {vocabulary.size} tokens but the model embeds {table.num_embeddings}")
    result = copy.deepcopy(model)
    rows = table.weight.detach()[vocabulary.kept_ids]  # (V', d)
    if retokenize:
        result.base_model.embeddings.word_embeddings = torch.nn.Embedding.from_pretrained(rows.clone(), freeze=False)
        result.config.vocab_size = len(vocabulary.kept_ids)
        pad = result.config.pad_token_id
        result.config.pad_token_id = None if pad is None else int(vocabulary.lookup()[pad])
    else:
        result.base_model.embeddings.word_embeddings = TrimmedEmbedding(rows, vocabulary.lookup())
    return result


def unknown_rate(tokenizer, examples: Sequence[Example], vocabulary: Vocabulary, max_length: int = 64) -> dict[str, float]:
    """Share of tokens, and of sentences with at least one token, that the trimmed model reads as [UNK]
    although the full vocabulary had a row for them.

    Taught in: chapter 9, section 3 (Stage two: the embedding table).
    """
    kept = set(vocabulary.kept_ids.tolist())
    tokens = unknown = sentences = 0
    for row in tokenizer([e.text for e in examples], truncation=True, max_length=max_length)["input_ids"]:
        missing = sum(1 for i in row if i not in kept)
        tokens, unknown, sentences = tokens + len(row), unknown + missing, sentences + (missing > 0)
    return {"tokens": unknown / max(tokens, 1), "sentences": sentences / max(len(examples), 1)}
