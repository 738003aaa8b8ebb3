import shutil
from collections import Counter

import pytest

from toolkit import data


def test_vendored_files_match_published_checksums():
    assert data.verify_files() == data.CHECKSUMS


def test_attribution_is_shipped_beside_the_data():
    readme = (data.DATA_DIR / "README.md").read_text()
    assert "CC BY 4.0" in readme and "Kotzias" in readme


def test_loads_3000_balanced_sentences():
    examples = data.load_examples()
    assert len(examples) == 3000
    assert Counter(e.label for e in examples) == {0: 1500, 1: 1500}
    assert Counter(e.source for e in examples) == {"amazon": 1000, "imdb": 1000, "yelp": 1000}
    assert all(e.text == e.text.strip() and e.text for e in examples)


def test_tampered_file_is_a_clear_error(tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data.DATA_DIR, copy)
    with open(copy / "imdb_labelled.txt", "a") as handle:
        handle.write("An extra sentence.\t1\n")
    with pytest.raises(data.DataIntegrityError, match="imdb_labelled.txt.*sha256"):
        data.load_examples(copy)


def test_missing_file_is_a_clear_error(tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data.DATA_DIR, copy)
    (copy / "yelp_labelled.txt").unlink()
    with pytest.raises(data.DataIntegrityError, match="yelp_labelled.txt.*missing"):
        data.verify_files(copy)


def test_splits_are_disjoint_stratified_and_deterministic(splits):
    """Disjoint by sentence, not only by line: the data repeats a few sentences."""
    assert splits.sizes() == {"train": 2100, "validation": 450, "test": 450}
    keys = [{data.normalise(e.text) for e in part} for part in (splits.train, splits.validation, splits.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert set(Counter((e.source, e.label) for e in splits.test).values()) <= {74, 75, 76}
    again = data.make_splits(seed=0)
    assert again.test == splits.test and again.train == splits.train
    assert data.make_splits(seed=1).test != splits.test


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.7, 0.2, 0.2), (1.0, 0.0, 0.0)])
def test_bad_fractions_name_the_argument(fractions):
    with pytest.raises(ValueError, match="fractions"):
        data.make_splits(fractions=fractions)


def test_calibration_subset_is_even_and_seeded(splits):
    subset = data.calibration_subset(splits.train, 60, seed=3)
    assert len(subset) == 60 and len(set(subset)) == 60
    assert set(Counter((e.source, e.label) for e in subset).values()) == {10}
    assert subset == data.calibration_subset(splits.train, 60, seed=3)
    assert set(subset) <= set(splits.train)
    with pytest.raises(ValueError, match="n must be"):
        data.calibration_subset(splits.train, 0)


def test_batches_are_padded_per_batch(tokenizer, splits):
    out = list(data.batches(tokenizer, splits.test[:10], batch_size=4))
    assert [b["input_ids"].shape[0] for b in out] == [4, 4, 2]
    for batch in out:
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        assert batch["input_ids"].shape[1] <= 64
        assert batch["labels"].dtype.is_floating_point is False
    with pytest.raises(ValueError, match="batch_size"):
        next(data.batches(tokenizer, splits.test, batch_size=0))
