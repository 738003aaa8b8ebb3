"""The workbook's data: 3,000 labelled review sentences, split, tokenised and batched.

The sentences come from the UCI "Sentiment Labelled Sentences" set (CC BY 4.0, see
``toolkit/datasets/sentiment-labelled-sentences/README.md`` for the attribution), vendored
unchanged inside the package so that nothing is downloaded. Every load checks the files'
SHA-256 against the published checksums: a changed file is an error, never a silent
shift in every accuracy of the workbook.

Splits are stratified by (source, label), so each of train / validation / test holds the
same share of Amazon, IMDb and Yelp sentences and of positive and negative labels, and they
depend only on the seed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from toolkit.artifacts import sha256_file
from toolkit.runtime import check_int

DATA_DIR = Path(__file__).resolve().parent / "datasets" / "sentiment-labelled-sentences"

# Published checksums (the data set's README); a mismatch means the files were changed.
CHECKSUMS = {
    "amazon_cells_labelled.txt": "47003fc0a0d4840b00e96e715b6189bad09e7443a3da41c4cbe12ffc79f86ae3",
    "imdb_labelled.txt": "c662b9360c1652babb990d164835af12aa105db7991f1fdb19038115f0e93de8",
    "yelp_labelled.txt": "b565b1eeb864d76842588c3a256731b08bcdd9faf6de507bfe211a96f8b81912",
}
LABELS = ("negative", "positive")  # label 0, label 1


class DataIntegrityError(RuntimeError):
    """A vendored data file is missing or does not match its published checksum."""


@dataclass(frozen=True)
class Example:
    """One labelled sentence. ``label`` is 0 (negative) or 1 (positive)."""

    text: str
    label: int
    source: str  # "amazon", "imdb" or "yelp"


@dataclass(frozen=True)
class Splits:
    """Disjoint, stratified train / validation / test lists of examples."""

    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def verify_files(data_dir: Path = DATA_DIR) -> dict[str, str]:
    """Check every data file against ``CHECKSUMS``; return {file name: sha256}."""
    data_dir = Path(data_dir)
    found = {}
    for name, expected in CHECKSUMS.items():
        path = data_dir / name
        if not path.is_file():
            raise DataIntegrityError(
                f"data file {path} is missing; the workbook needs {', '.join(CHECKSUMS)} in "
                f"{data_dir} (reinstall the package to restore them)"
            )
        actual = sha256_file(path)
        if actual != expected:
            raise DataIntegrityError(
                f"data file {path} has sha256 {actual}, expected {expected}: the vendored "
                "data was changed; restore it (git checkout or reinstall) so that results stay "
                "comparable"
            )
        found[name] = actual
    return found


def load_examples(data_dir: Path = DATA_DIR) -> list[Example]:
    """All 3,000 sentences, after verifying checksums. Lines are ``sentence<TAB>label``."""
    verify_files(data_dir)
    examples = []
    for name in sorted(CHECKSUMS):
        source = name.split("_")[0]
        for number, line in enumerate((Path(data_dir) / name).read_text("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            text, _, label = line.rpartition("\t")
            if label.strip() not in ("0", "1"):
                raise DataIntegrityError(f"{name}:{number}: label {label!r} is not 0 or 1")
            examples.append(Example(text=text.strip(), label=int(label), source=source))
    return examples


def normalise(text: str) -> str:
    """The form under which two sentences count as the same (case and spacing ignored)."""
    return " ".join(text.lower().split())


def make_splits(
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
    data_dir: Path = DATA_DIR,
) -> Splits:
    """Stratified train / validation / test splits that depend only on ``seed``.

    Each (source, label) stratum of 500 sentences is shuffled with its own seeded RNG and
    cut at the same fractions, so the default gives 2,100 / 450 / 450 sentences. Repeated
    sentences are kept together in one split, so no test sentence was seen in training.

    Taught in: chapter 1, section 1 (Two goals: smaller and faster).
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"fractions must be three positive numbers summing to 1 (train, validation, test); "
            f"got {fractions}"
        )
    # A few sentences occur twice ("Works great!.", once even in two sources): all copies go
    # to the same split, or the test set would hold sentences the model was trained on. A
    # group of copies belongs to the stratum of its first copy.
    groups: dict[str, list[Example]] = defaultdict(list)
    for example in load_examples(data_dir):
        groups[normalise(example.text)].append(example)
    strata: dict[tuple[str, int], dict[str, list[Example]]] = defaultdict(dict)
    for text, group in groups.items():
        strata[(group[0].source, group[0].label)][text] = group
    train, validation, test = [], [], []
    for key in sorted(strata):
        members = sum(strata[key].values(), [])
        order = sorted(strata[key])
        random.Random(f"{seed}-{key[0]}-{key[1]}").shuffle(order)
        n_train = round(fractions[0] * len(members))
        n_validation = round(fractions[1] * len(members))
        part_train, part_validation, part_test = [], [], []
        for text in order:  # fill train, then validation, with whole groups; the rest is test
            group = strata[key][text]
            if len(part_train) + len(group) <= n_train:
                part_train += group
            elif len(part_validation) + len(group) <= n_validation:
                part_validation += group
            else:
                part_test += group
        train += part_train
        validation += part_validation
        test += part_test
    for part in (train, validation, test):  # interleave strata so batches are mixed
        random.Random(seed).shuffle(part)
    return Splits(train=train, validation=validation, test=test)


def calibration_subset(examples: Sequence[Example], n: int, seed: int = 0) -> list[Example]:
    """``n`` examples drawn evenly across (source, label), for calibrating quantization ranges.

    Taught in: chapter 2.
    """
    if not isinstance(n, int) or not 1 <= n <= len(examples):
        raise ValueError(f"n must be an integer between 1 and {len(examples)}; got {n!r}")
    strata: dict[tuple[str, int], list[Example]] = defaultdict(list)
    for example in examples:
        strata[(example.source, example.label)].append(example)
    rng = random.Random(seed)
    pools = [rng.sample(members, len(members)) for _, members in sorted(strata.items())]
    chosen: list[Example] = []
    while len(chosen) < n:  # round-robin over strata keeps the mix even
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(pool.pop())
    return chosen


def encode(tokenizer, examples: Sequence[Example], max_length: int = 64) -> dict[str, torch.Tensor]:
    """Tokenise a list of examples into one padded batch (with ``labels``).

    Taught in: chapter 7, section 3 (Surgery: cutting the matrices).
    """
    batch = tokenizer(
        [example.text for example in examples],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )  # input_ids, attention_mask, token_type_ids: (batch, seq)
    batch["labels"] = torch.tensor([example.label for example in examples])  # (batch,)
    return dict(batch)


def batches(
    tokenizer,
    examples: Sequence[Example],
    batch_size: int = 32,
    max_length: int = 64,
    shuffle: bool = False,
    seed: int = 0,
    bucket_lengths: Sequence[int] | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield tokenised batches; each is padded only to its own longest sentence (dynamic padding).

    ``bucket_lengths`` (token counts, one per example) groups sentences of similar length: see
    ``length_bucketed_order``. Without it the batches follow the (shuffled) order of ``examples``.

    Taught in: chapter 4, section 4 (The training loop, and a small sweep to choose the learning rate).
    """
    check_int("batch_size", batch_size)
    if bucket_lengths is not None:
        groups = length_bucketed_order(bucket_lengths, batch_size, seed=seed if shuffle else None)
    else:
        order = list(range(len(examples)))
        if shuffle:
            random.Random(seed).shuffle(order)
        groups = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for group in groups:
        yield encode(tokenizer, [examples[i] for i in group], max_length)


def token_lengths(tokenizer, examples: Sequence[Example], max_length: int = 64) -> list[int]:
    """Tokens per example (special tokens included, truncated at ``max_length``): the key of ``length_bucketed_order``."""
    return [len(ids) for ids in tokenizer([e.text for e in examples], truncation=True, max_length=max_length)["input_ids"]]


def length_bucketed_order(lengths: Sequence[int], batch_size: int, seed: int | None = 0, pool: int = 16) -> list[list[int]]:
    """Batches of indices whose sentences have similar lengths, so that padding costs little.

    The examples are shuffled (``seed``; ``None`` keeps their order), cut into pools of ``pool``
    batches, each pool sorted by length and cut into batches, and the batches shuffled again: every
    batch is still a random draw from the data, but a batch of 8-token sentences no longer pads to
    the 60 tokens of its longest one (the "bucket iterator" of torchtext and fairseq). Every index
    appears exactly once; as without buckets, only the last batch may be smaller."""
    check_int("batch_size", batch_size)
    check_int("pool", pool, detail=' (batches sorted together)')
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    if seed is not None:
        rng.shuffle(order)
    groups: list[list[int]] = []
    for start in range(0, len(order), batch_size * pool):
        chunk = sorted(order[start : start + batch_size * pool], key=lambda i: lengths[i])
        groups += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if seed is not None:
        last = groups.pop() if len(order) % batch_size else None  # the short batch stays last, as in batches()
        rng.shuffle(groups)
        groups += [last] if last else []
    return groups
