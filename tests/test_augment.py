"""Augmented text for the teacher to label (toolkit.augment)."""

import pytest
import torch

from toolkit import augment, models
from toolkit.data import Example


@pytest.fixture(scope="module")
def embedding():
    return models.sentiment_classifier(smoke=True, progress=False).base_model.embeddings.word_embeddings.weight.detach()


@pytest.fixture(scope="module")
def neighbours(tokenizer, splits, embedding):
    return augment.WordNeighbours.from_examples(splits.train, tokenizer, embedding)


def test_neighbours_come_from_the_training_words_only(neighbours, splits):
    train_words = {w for e in splits.train for w in augment.WORD.findall(e.text.lower())}
    assert set(neighbours.vocabulary) == train_words
    assert all(set(near) <= train_words and word not in near for word, near in neighbours.nearest.items())
    held_out_only = {w for e in splits.validation + splits.test for w in augment.WORD.findall(e.text.lower())} - train_words
    assert held_out_only, "the held-out splits have words of their own (so the next check means something)"
    assert not held_out_only & set(neighbours.vocabulary)
    assert "terrific" in neighbours.nearest["great"][:5], "a plausible nearest word (cosine of mean word-piece embeddings)"


def test_augmented_sentences_use_training_words_never_held_out_text(neighbours, splits):
    new = augment.augment(splits.train[:200], neighbours, factor=3, seed=1)
    train_words = set(neighbours.vocabulary)
    assert 500 <= len(new) <= 600
    for example in new:
        assert set(augment.WORD.findall(example.text)) <= train_words
    held_out = {e.text.lower() for e in splits.validation + splits.test}
    assert not held_out & {e.text for e in new}
    assert len({e.text for e in new}) == len(new) and not {e.text.lower() for e in splits.train} & {e.text for e in new}


def test_augmentation_is_deterministic_for_a_seed_and_keeps_what_is_not_a_word(neighbours):
    sentence = [Example("The battery is great, but 4s phones die in 2 hours!", 1, "amazon")]
    a = augment.augment(sentence, neighbours, factor=5, seed=7)
    assert a == augment.augment(sentence, neighbours, factor=5, seed=7)
    assert a != augment.augment(sentence, neighbours, factor=5, seed=8)
    for example in a:
        assert example.label == 1 and example.source == "amazon"
        assert " 4s " in example.text and " 2 " in example.text and example.text.endswith("!") and ", " in example.text
    replaced_all = augment.augment(sentence, neighbours, factor=1, probability=1.0, seed=0)[0].text
    assert all(w not in replaced_all.split() for w in ("battery", "great,", "phones", "hours!"))


def test_augmentation_refuses_bad_input(neighbours, tokenizer, embedding):
    one = [Example("good food", 1, "yelp")]
    with pytest.raises(ValueError, match="factor must be a positive integer"):
        augment.augment(one, neighbours, factor=0)
    with pytest.raises(ValueError, match=r"probability must be in \(0, 1\]"):
        augment.augment(one, neighbours, factor=2, probability=0)
    with pytest.raises(ValueError, match="neighbours must be a positive integer"):
        augment.WordNeighbours.from_examples(one, tokenizer, embedding, neighbours=0)
    with pytest.raises(ValueError, match="at least two different words"):
        augment.WordNeighbours.from_examples([Example("ok", 1, "yelp")], tokenizer, torch.zeros(30522, 4))
