"""Embedding compression: vocabulary trimming (toolkit.prune.vocab) and product quantization (toolkit.quant.codebook)."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from toolkit import models
from toolkit.prune import vocab
from toolkit.data import Example
from toolkit.quant import codebook


@pytest.fixture(scope="module")
def tokenizer():
    return models.tokenizer()


@pytest.fixture(scope="module")
def small(tokenizer):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(config).eval()


TRAIN = [Example("great phone, works well", 1, "test"), Example("the battery is awful", 0, "test")]


def logits(model, tokenizer, texts):
    with torch.inference_mode():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def test_trimmed_vocabulary_round_trips_seen_sentences_and_reads_the_rest_as_unk(small, tokenizer):
    vocabulary = vocab.task_vocabulary(tokenizer, TRAIN)
    trimmed = vocab.trim_vocabulary(small, vocabulary)
    table = trimmed.base_model.embeddings.word_embeddings
    assert table.weight.shape == (len(vocabulary.kept_ids), 32) and table.num_embeddings == len(tokenizer)
    assert set(tokenizer.all_special_ids) <= set(vocabulary.kept_ids.tolist())
    seen = ["great phone", "the battery works well"]  # every token occurs in TRAIN
    torch.testing.assert_close(logits(trimmed, tokenizer, seen), logits(small, tokenizer, seen))
    unseen = "great camera"  # "camera" never occurs in TRAIN: it must read exactly as [UNK]
    ids = tokenizer([unseen], return_tensors="pt")["input_ids"]
    as_unk = torch.where(torch.isin(ids, vocabulary.kept_ids), ids, torch.tensor(tokenizer.unk_token_id))
    assert not torch.equal(ids, as_unk)
    with torch.inference_mode():
        torch.testing.assert_close(trimmed(input_ids=ids).logits, small(input_ids=as_unk).logits)
    rate = vocab.unknown_rate(tokenizer, [Example(unseen, 1, "test"), Example("great phone", 1, "test")], vocabulary)
    assert rate["tokens"] == pytest.approx(1 / 8) and rate["sentences"] == 0.5  # [CLS] great camera [SEP] + [CLS] great phone [SEP]: 8 tokens
    assert isinstance(small.base_model.embeddings.word_embeddings, torch.nn.Embedding), "the original is not changed"


def test_vocabulary_bad_input(small, tokenizer):
    with pytest.raises(ValueError, match="at least one sentence"):
        vocab.task_vocabulary(tokenizer, [])
    trimmed = vocab.trim_vocabulary(small, vocab.task_vocabulary(tokenizer, TRAIN))
    with pytest.raises(ValueError, match="already trimmed"):
        vocab.trim_vocabulary(trimmed, vocab.task_vocabulary(tokenizer, TRAIN))


def test_product_quantization_is_exact_when_every_row_can_be_a_centre():
    torch.manual_seed(0)
    table = torch.randn(256, 32)  # 256 rows: every row's pieces become codebook entries
    codes, books = codebook.product_quantize(table, subvector=4, iterations=3)
    assert codes.dtype == torch.uint8 and codes.shape == (256, 8) and books.shape == (8, 256, 4)
    torch.testing.assert_close(codebook.decode(codes, books), table)


def test_more_kmeans_iterations_do_not_increase_the_error():
    torch.manual_seed(0)
    table = torch.randn(2000, 16)
    errors = [float((codebook.decode(*codebook.product_quantize(table, 4, iterations=n, sample_rows=None)) - table).norm())
              for n in (1, 4, 12)]
    assert errors[0] >= errors[1] >= errors[2] and errors[2] < 0.95 * errors[0]


def test_product_quantization_error_falls_with_shorter_subvectors():
    torch.manual_seed(0)
    table = torch.randn(1024, 32)
    errors = []
    for subvector in (8, 4, 2):
        codes, books = codebook.product_quantize(table, subvector=subvector, iterations=8)
        errors.append(float((codebook.decode(codes, books) - table).norm() / table.norm()))
    assert errors[0] > errors[1] > errors[2]


def test_quantized_embedding_module_matches_its_decoded_table(small):
    quantized = codebook.quantize_word_embeddings(small, subvector=4, iterations=4)
    table = quantized.base_model.embeddings.word_embeddings
    assert isinstance(table, codebook.ProductQuantizedEmbedding)
    assert table.stored_bytes() == table.num_embeddings * 8 + 8 * 256 * 4 * 2  # 32 / 4 one-byte codes per row + fp16 codebooks
    ids = torch.tensor([[101, 2307, 3042, 102]])
    torch.testing.assert_close(table(ids), table.weight[ids])
    original = small.base_model.embeddings.word_embeddings.weight
    assert float((table.weight - original.detach()).norm() / original.detach().norm()) < 0.7
    assert isinstance(small.base_model.embeddings.word_embeddings, torch.nn.Embedding), "the original is not changed"


def test_product_quantization_bad_input():
    with pytest.raises(ValueError, match=r"subvector must divide the row length 32; accepted: \[1, 2, 4, 8, 16, 32\]; got 5"):
        codebook.product_quantize(torch.randn(300, 32), subvector=5)
    with pytest.raises(ValueError, match="at least 256 rows"):
        codebook.product_quantize(torch.randn(100, 32), subvector=4)
    with pytest.raises(ValueError, match="iterations must be a positive integer"):
        codebook.product_quantize(torch.randn(300, 32), subvector=4, iterations=0)
    with pytest.raises(ValueError, match="sample_rows must be None or an integer of at least 256"):
        codebook.product_quantize(torch.randn(300, 32), subvector=4, sample_rows=10)


def test_retokenized_trimming_spells_unseen_words_with_kept_pieces(small, tokenizer):
    plain = vocab.task_vocabulary(tokenizer, TRAIN)
    strong = vocab.task_vocabulary(tokenizer, TRAIN, keep_characters=True)
    assert set(plain.kept_ids.tolist()) < set(strong.kept_ids.tolist())
    assert set(vocab.character_ids(tokenizer)) <= set(strong.kept_ids.tolist())
    new_tokenizer = vocab.trimmed_tokenizer(tokenizer, strong)
    trimmed = vocab.trim_vocabulary(small, strong, retokenize=True)
    assert len(new_tokenizer) == len(strong.kept_ids) == trimmed.base_model.embeddings.word_embeddings.num_embeddings
    # a sentence of kept tokens: the new ids are the kept positions of the old ones, and the logits are the same
    seen = ["great phone", "the battery works well"]
    old_ids = tokenizer(seen, padding=True, return_tensors="pt")["input_ids"]
    new_ids = new_tokenizer(seen, padding=True, return_tensors="pt")["input_ids"]
    assert torch.equal(new_ids, strong.lookup()[old_ids])
    torch.testing.assert_close(logits(trimmed, new_tokenizer, seen), logits(small, tokenizer, seen))
    # an unseen word: the original ids read it as [UNK]; the new tokenizer spells it with kept pieces
    spelled = new_tokenizer(["great camera"])["input_ids"][0]
    assert new_tokenizer.unk_token_id not in spelled and len(spelled) > 4
    assert new_tokenizer.convert_ids_to_tokens(spelled)[:2] == ["[CLS]", "great"]
    assert isinstance(small.base_model.embeddings.word_embeddings, torch.nn.Embedding), "the original is not changed"


def test_frequency_trimming_keeps_tokens_seen_often_enough(tokenizer):
    examples = TRAIN + [Example("great great phone", 1, "test")]
    counts = vocab.token_counts(tokenizer, examples)
    great = tokenizer.convert_tokens_to_ids("great")
    assert counts[great] == 3 and counts[tokenizer.cls_token_id] == 3 and int(counts.sum()) == sum(
        len(ids) for ids in tokenizer([e.text for e in examples])["input_ids"])
    twice = vocab.task_vocabulary(tokenizer, examples, min_count=2)
    kept = set(twice.kept_ids.tolist())
    assert great in kept and tokenizer.convert_tokens_to_ids("phone") in kept
    assert tokenizer.convert_tokens_to_ids("battery") not in kept  # seen once
    assert set(tokenizer.all_special_ids) <= kept
    with pytest.raises(ValueError, match="min_count must be a positive integer"):
        vocab.task_vocabulary(tokenizer, examples, min_count=0)


def test_weighted_kmeans_gives_heavy_rows_smaller_errors():
    torch.manual_seed(0)
    table = torch.randn(2000, 16)
    weights = torch.ones(2000)
    weights[:100] = 200.0  # a few rows that are read very often
    def error(codes, books):
        return ((codebook.decode(codes, books) - table) ** 2).sum(1)  # (rows,)
    plain = error(*codebook.product_quantize(table, subvector=8, sample_rows=1024))
    weighted = error(*codebook.product_quantize(table, subvector=8, sample_rows=1024, row_weights=weights))
    assert weighted[:100].mean() < 0.7 * plain[:100].mean()  # the heavy rows are encoded better ...
    assert (weights * weighted).sum() < (weights * plain).sum()  # ... and the weighted objective falls
    with pytest.raises(ValueError, match="row_weights must be"):
        codebook.product_quantize(table, subvector=8, row_weights=-weights)
    with pytest.raises(ValueError, match="row_weights needs sample_rows"):
        codebook.product_quantize(table, subvector=8, sample_rows=None, row_weights=weights)
