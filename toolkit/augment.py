"""More text for the teacher to label: TinyBERT-style word replacement from the training split's own words.

A teacher's real advantage over the labels is that it can label *any* sentence (Jiao et al. 2020,
TinyBERT §3.2; Prune-OFA and TernaryBERT distil on the same augmented sets). Here each augmented
sentence is a training sentence in which every word is, with probability ``probability``, replaced
by one of its ``neighbours`` nearest words. TinyBERT takes the neighbours from BERT's masked-language
head and GloVe; this module takes them from the model's own input embeddings (a word's vector is the
mean of its word pieces' rows, compared by cosine similarity), which needs nothing beyond the model.

Only the sentences passed in are read: the vocabulary and every replacement come from them, so
augmenting the training split never brings validation or test text into training. An augmented
sentence keeps its original's label and source, but the label may no longer be right (replacing
"great" by "poor" flips it): train on augmented text with the teacher's soft labels only
(``distillation_loss(..., ce_weight=0)``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import Sequence

import torch

from toolkit.data import Example
from toolkit.runtime import check_int

WORD = re.compile(r"\b[a-z]{2,}(?:'[a-z]+)?\b")  # a lower-case word of 2+ letters, "don't" included; "4s", numbers, punctuation stay


@dataclass(frozen=True)
class WordNeighbours:
    """For each word of a vocabulary, its nearest other words (most similar first)."""

    vocabulary: tuple[str, ...]
    nearest: dict[str, tuple[str, ...]]

    @classmethod
    def from_examples(cls, examples: Sequence[Example], tokenizer, embedding: torch.Tensor, neighbours: int = 15,
                      min_count: int = 1) -> "WordNeighbours":
        """The words of ``examples`` (seen at least ``min_count`` times) and, for each, its ``neighbours`` nearest
        words among them by cosine similarity of mean word-piece embeddings; ``embedding`` is (vocab_size, d).

        Taught in: chapter 5, section 6 (Quantization-aware training at 2 bits, judged fairly).
        """
        check_int("neighbours", neighbours)
        check_int("min_count", min_count)
        counts: dict[str, int] = {}
        for example in examples:
            for word in WORD.findall(example.text.lower()):
                counts[word] = counts.get(word, 0) + 1
        vocabulary = tuple(sorted(w for w, c in counts.items() if c >= min_count))
        if len(vocabulary) < 2:
            raise ValueError(f"examples must hold at least two different words; got {len(vocabulary)}")
        pieces = tokenizer(list(vocabulary), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            vectors = torch.stack([embedding[ids].float().mean(dim=0) for ids in pieces])  # (words, d)
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
            k = min(neighbours, len(vocabulary) - 1)
            nearest = {}
            for start in range(0, len(vocabulary), 1024):  # (1024, words) similarities at a time
                similarity = vectors[start : start + 1024] @ vectors.T
                rows = torch.arange(similarity.shape[0])
                similarity[rows, rows + start] = -2.0  # a word is not its own neighbour
                top = similarity.topk(k, dim=-1).indices.tolist()
                for i, row in enumerate(top):
                    nearest[vocabulary[start + i]] = tuple(vocabulary[j] for j in row)
        return cls(vocabulary, nearest)


def augment(examples: Sequence[Example], neighbours: WordNeighbours, factor: int, probability: float = 0.4,
            seed: int = 0) -> list[Example]:
    """Up to ``factor`` new sentences per example: each word replaced, with ``probability``, by one of its neighbours.

    Deterministic for a seed. Only new sentences are returned (an unchanged or repeated one is drawn
    again, up to a few tries), so ``examples + augment(...)`` is the training set with its augmented text.

    Taught in: chapter 5, section 6 (Quantization-aware training at 2 bits, judged fairly).
    """
    check_int("factor", factor, detail=' (new sentences per example)')
    if not 0 < probability <= 1:
        raise ValueError(f"probability must be in (0, 1] (the chance that a word is replaced); got {probability!r}")
    rng = random.Random(seed)
    seen = {example.text.lower() for example in examples}
    out: list[Example] = []
    for example in examples:
        text = example.text.lower()
        for _ in range(factor):
            for _try in range(5):
                new = WORD.sub(lambda m: _replace(m.group(0), neighbours, probability, rng), text)
                if new not in seen:
                    break
            if new not in seen:
                seen.add(new)
                out.append(replace(example, text=new))
    return out


def _replace(word: str, neighbours: WordNeighbours, probability: float, rng: random.Random) -> str:
    candidates = neighbours.nearest.get(word)
    if not candidates or rng.random() >= probability:
        return word
    return rng.choice(candidates)
