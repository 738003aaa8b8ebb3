"""Chapter 10's model-level pieces on a tiny random llama (fast) and the packaged GGUF file's header."""

import copy
import json
import unittest.mock

import pytest
import torch
from transformers import DynamicCache

from toolkit import artifacts
from toolkit.artifacts import FormatError
from toolkit.llm import blocks, decode, evaluate, gguf, gptq, groups, kernels, kvcache, sparse, text


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- the GGUF file
def test_the_packaged_gguf_holds_q4_1_blocks_that_decode_by_hand():
    path = gguf.model_file()
    types = gguf.tensor_types(path)
    kinds = {kind for kind, _, _ in types.values()}
    assert {"Q4_1", "F32"} <= kinds
    kind, shape, nbytes = types["blk.0.ffn_down.weight"]
    assert kind == "Q4_1" and shape == (1536, 576) and nbytes == 576 * 1536 // 32 * 20
    codes, d, m = gguf.q4_1_blocks(path, "blk.0.ffn_down.weight")
    assert codes.shape == (576, 1536) and d.shape == (576, 48) and int(codes.max()) <= 15
    import gguf as library
    import numpy as np

    tensor = next(t for t in gguf.reader(path).tensors if t.name == "blk.0.ffn_down.weight")
    expected = library.quants.dequantize(tensor.data, tensor.tensor_type).reshape(576, 1536)
    mine = codes.astype(np.float32) * np.repeat(d.astype(np.float32), 32, 1) + np.repeat(m.astype(np.float32), 32, 1)
    assert np.allclose(mine, expected, atol=1e-6)


def test_a_file_that_is_not_gguf_or_is_cut_short_is_a_clear_error(tmp_path):
    other = tmp_path / "model.gguf"
    other.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(FormatError, match="not a GGUF file"):
        gguf.tensor_types(other)
    cut = tmp_path / "cut.gguf"
    with open(gguf.model_file(), "rb") as handle:
        cut.write_bytes(handle.read(4096))
    with pytest.raises(FormatError, match="damaged or truncated"):
        gguf.tensor_types(cut)
    with pytest.raises(FormatError, match="not a GGUF file"):
        gguf.load_model(other)


# ----------------------------------------------------------------------------- text
def test_the_three_parts_of_the_text_never_share_a_paragraph():
    parts = {name: text.part_of(name) for name in text.topics()}
    assert set(parts.values()) == set(text.PARTS)
    bodies = {part: text.text(part) for part in text.PARTS}
    for i, first in enumerate(text.PARTS):
        for second in text.PARTS[i + 1:]:
            earlier = set(text.paragraphs(bodies[first]))
            assert not [p for p in text.paragraphs(bodies[second]) if p in earlier], (first, second)
            assert not [p for p in text.paragraphs(bodies[second]) if len(p) > 80 and p in bodies[first]], (first, second)
    assert len(bodies["evaluation"]) > 80_000 and len(bodies["validation"]) > 30_000 and len(bodies["calibration"]) > 150_000
    with pytest.raises(ValueError, match="part must be one of"):
        text.text("test")


def test_segments_refuse_empty_text_and_too_little_text():
    class Tok:
        def __call__(self, s, return_tensors, add_special_tokens):
            return type("E", (), {"input_ids": torch.arange(len(s.split()))[None]})()

    assert text.segments(Tok(), "a b c d e f", 3, 2).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="text must be non-empty"):
        text.segments(Tok(), "  ", 3, 1)
    with pytest.raises(ValueError, match="count: 3 segments"):
        text.segments(Tok(), "a b c", 2, 3)


# ----------------------------------------------------------------------------- evaluation
def test_perplexity_and_kl_of_a_model_against_itself(tiny, tokens):
    reference = evaluate.reference_log_probs(tiny, tokens[:1])
    same = evaluate.score(tiny, tokens, reference)
    assert same.kl == pytest.approx(0, abs=1e-6) and same.tokens == 4 * 31
    assert 1 < same.perplexity < 1000
    noisy = copy.deepcopy(tiny)
    with torch.no_grad():
        noisy.lm_head.weight.add_(torch.randn_like(noisy.lm_head.weight))
    assert evaluate.score(noisy, tokens, reference).kl > 0.01
    assert evaluate.gap_closed(12, 20, 10) == pytest.approx(0.8)


def test_kl_summed_a_slice_of_positions_at_a_time_equals_the_formula(tiny, tokens, monkeypatch):
    reference = evaluate.reference_log_probs(tiny, tokens[:2])  # (2, 31, V)
    noisy = copy.deepcopy(tiny)
    with torch.no_grad():
        noisy.lm_head.weight.add_(0.5 * torch.randn_like(noisy.lm_head.weight))
        mine = torch.log_softmax(noisy(tokens[:2]).logits[:, :-1], dim=-1)
    expected = float((reference.exp() * (reference - mine)).sum() / (2 * 31))  # mean_t sum_v r (log r - log p)
    monkeypatch.setattr(evaluate, "KL_POSITIONS", 7)  # 31 positions: slices of 7, 7, 7, 7 and 3
    assert evaluate.score(noisy, tokens, reference).kl == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- block walking, GPTQ on a model
def test_walking_blocks_without_change_reproduces_the_model(tiny, tokens):
    inputs = blocks.first_block_inputs(tiny, tokens)
    for block in blocks.decoder_layers(tiny):
        inputs = blocks.BlockInputs(blocks.run_block(block, inputs, batch_size=3), inputs.kwargs)
    with torch.inference_mode():
        expected = tiny.model(tokens).last_hidden_state
    assert torch.allclose(tiny.model.norm(inputs.hidden), expected, atol=1e-5)


def test_gptq_on_a_model_quantizes_every_block_layer_onto_its_grid(tiny, tokens):
    model = copy.deepcopy(tiny)
    done = gptq.gptq_model_(model, tokens, 4, 32)
    assert len(done) == 2 * 7
    name = "model.layers.1.mlp.down_proj"
    assert torch.equal(model.get_submodule(name).weight, done[name][0].dequantize())
    assert torch.equal(model.lm_head.weight, tiny.lm_head.weight)  # the output projection is left alone


def test_rtn_model_file_round_trip(tiny, tmp_path):
    quantized, found = groups.quantize_model_rtn(tiny, 4, 32)
    assert not torch.equal(quantized.model.layers[0].mlp.up_proj.weight, tiny.model.layers[0].mlp.up_proj.weight)
    path = tmp_path / "w4.safetensors"
    size = groups.save_weight_only(quantized, found, path)
    assert size == path.stat().st_size
    loaded = groups.load_weight_only(path)
    for name in found:
        assert torch.equal(loaded.get_submodule(name).weight, quantized.get_submodule(name).weight)
    assert torch.allclose(loaded.model.norm.weight, quantized.model.norm.weight.half().float())


def test_a_weight_only_file_that_does_not_fit_its_config_is_refused(tiny, tmp_path):
    quantized, found = groups.quantize_model_rtn(tiny, 4, 32)
    path = tmp_path / "w4.safetensors"
    groups.save_weight_only(quantized, found, path)
    metadata, tensors = artifacts.load_tensors(path, format=groups.FORMAT, versions={groups.VERSION},
                                               writer="toolkit.llm.groups.save_weight_only")
    config = json.loads(metadata["config"])
    config["intermediate_size"] *= 2  # every MLP weight of the file now has the wrong shape for the model
    with pytest.raises(FormatError, match="do not fit the config"):
        with unittest.mock.patch.object(artifacts, "load_tensors", return_value=({**metadata, "config": json.dumps(config)}, tensors)):
            groups.load_weight_only(path)


# ----------------------------------------------------------------------------- kernels and decoding
def test_int4_and_int8_kernels_match_their_dequantized_weights():
    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 64, bias=False)
    x = torch.randn(3, 128)
    q = groups.quantize_groups(linear.weight, 4, 32)
    assert torch.allclose(kernels.Int4Linear(q)(x), x @ q.dequantize().T, atol=1e-4)
    int8 = kernels.Int8Linear(linear)
    assert torch.allclose(int8(x), x @ (int8.codes.float() * int8.scale[:, None]).T, atol=1e-4)
    with pytest.raises(ValueError, match="group_size must be one of"):
        kernels.Int4Linear(groups.quantize_groups(torch.randn(4, 96), 4, 64))
    with pytest.raises(ValueError, match="dtype must be one of"):
        kernels.Int8Linear(linear, torch.float16)


def test_with_kernels_swaps_every_block_layer_and_keeps_the_model(tiny, tokens):
    fast = decode.with_kernels(tiny, "int4", group_size=32)
    kinds = {type(m).__name__ for m in fast.modules()}
    assert "Int4Linear" in kinds and "Int8Linear" in kinds  # the head in int8
    assert isinstance(tiny.model.layers[0].mlp.up_proj, torch.nn.Linear)
    assert decode.bytes_per_token(fast) < decode.bytes_per_token(tiny) / 3
    timings = decode.compare_decoding({"fp32": tiny, "int4": fast}, tokens[:1, :8], new_tokens=3, rounds=1)
    assert timings["int4"].tokens_per_second > 0 and timings["int4"].prefill_ms > 0
    with pytest.raises(ValueError, match="new_tokens"):
        decode.compare_decoding({"fp32": tiny}, tokens[:1, :8], new_tokens=1)
    with pytest.raises(ValueError, match="one prompt"):
        decode.compare_decoding({"fp32": tiny}, tokens[:2, :8])
    with pytest.raises(ValueError, match="kind must be one of"):
        decode.with_kernels(tiny, "int3")


def test_decoding_is_timed_token_by_token(tiny, tokens):
    """Each new token is timed as it comes: the first after the prompt, then new_tokens - 1 steps, each > 0 (a
    difference of two whole-generate timings could come out negative on a busy machine; these cannot)."""
    with torch.inference_mode():
        prefill, between = decode._generate_times(tiny, tokens[:1, :8], 5)
    assert prefill > 0 and len(between) == 4 and min(between) > 0


# ----------------------------------------------------------------------------- the KV cache
def test_kivi_cache_round_trip_and_bytes(tiny):
    ids = torch.randint(0, 128, (1, 100), generator=torch.Generator().manual_seed(3))
    exact, float_bytes = kvcache.score_with_cache(tiny, ids, lambda: DynamicCache(config=tiny.config), chunk=16)
    with torch.inference_mode():
        logits = tiny(ids).logits
    whole = torch.exp(torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])).item()
    assert exact == pytest.approx(whole, rel=1e-4)  # reading through a float cache changes nothing
    eight, eight_bytes = kvcache.score_with_cache(tiny, ids, lambda: kvcache.kivi_cache(tiny, 8, 32), chunk=16)
    four, four_bytes = kvcache.score_with_cache(tiny, ids, lambda: kvcache.kivi_cache(tiny, 4, 32), chunk=16)
    assert eight == pytest.approx(exact, rel=1e-3) and four == pytest.approx(exact, rel=0.05)
    assert four_bytes < eight_bytes < float_bytes
    x = torch.randn(1, 2, 32, 16)
    codes, scale, minimum = kvcache.quantize_axis(x, 8, dim=-2)
    assert scale.shape == (1, 2, 1, 16)  # keys: one scale per channel over the tokens
    assert torch.allclose(codes.float() * scale.float() + minimum.float(), x, atol=float(scale.float().max()))
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        kvcache.KiviLayer(bits=1)


# ----------------------------------------------------------------------------- sparsity
def test_masks_2_of_4_and_per_row():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5, 0.6, 0.7, 0.8]])
    assert sparse.mask_from_scores(scores, "2:4").tolist() == [[False, True, False, True, True, True, False, False]]
    assert sparse.mask_from_scores(scores, "unstructured", 0.25).sum() == 2
    with pytest.raises(ValueError, match="pattern must be one of"):
        sparse.mask_from_scores(scores, "4:8")


def test_sparsegpt_beats_wanda_on_the_layer_objective_and_keeps_2_of_4():
    x = torch.randn(512, 32) @ torch.randn(32, 32)
    w = torch.randn(16, 32)
    h = gptq.hessian(x)
    for pattern in ("unstructured", "2:4"):
        pruned = sparse.sparsegpt_prune(w, h, pattern, 0.5)
        assert float((pruned == 0).float().mean()) == pytest.approx(0.5, abs=0.02)
        wanda = w.masked_fill(sparse.mask_from_scores(sparse.wanda_scores(w, x), pattern, 0.5), 0)
        assert gptq.layer_error(w, pruned, h) < gptq.layer_error(w, wanda, h)
    assert ((sparse.sparsegpt_prune(w, h, "2:4") != 0).reshape(16, 8, 4).sum(-1) <= 2).all()


def test_prune_model_reaches_its_sparsity_and_needs_text(tiny, tokens):
    for method in ("magnitude", "wanda", "sparsegpt"):
        model = copy.deepcopy(tiny)
        assert sparse.prune_model_(model, tokens, method, "2:4") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="segments: wanda needs calibration text"):
        sparse.prune_model_(copy.deepcopy(tiny), None, "wanda")
    with pytest.raises(ValueError, match="method must be one of"):
        sparse.prune_model_(copy.deepcopy(tiny), tokens, "random")


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparsegpt_prunes_layers_sharing_an_input_together_as_it_would_apart(tiny, tokens, pattern):
    together = copy.deepcopy(tiny)
    sparse.prune_model_(together, tokens, "sparsegpt", pattern)
    inputs = blocks.first_block_inputs(tiny, tokens)
    block = copy.deepcopy(tiny.model.layers[0])
    recorded = blocks.record_inputs(block, inputs)
    for name in ("self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj"):
        apart = sparse.sparsegpt_prune(block.get_submodule(name).weight, gptq.hessian(recorded[name]), pattern)
        assert torch.allclose(together.model.layers[0].get_submodule(name).weight, apart, atol=1e-5), name
    with pytest.raises(ValueError, match="rows must add up"):
        sparse.sparsegpt_prune(torch.randn(4, 8), torch.eye(8), rows=[3])


def test_the_evaluation_score_does_not_depend_on_the_batch_size(tiny, tokens):
    reference = evaluate.reference_log_probs(tiny, tokens[:2])
    one, four = evaluate.score(tiny, tokens, reference, batch_size=1), evaluate.score(tiny, tokens, reference, batch_size=4)
    assert one.perplexity == pytest.approx(four.perplexity, rel=1e-5) and one.kl == pytest.approx(four.kl, abs=1e-6)


def test_weight_only_file_with_a_quantized_tied_embedding_stores_it_once(tiny, tmp_path):
    quantized, found = groups.quantize_model_rtn(tiny, 4, 32)
    found["model.embed_tokens"] = groups.quantize_groups(quantized.model.embed_tokens.weight, 8, 32)
    with torch.no_grad():
        quantized.model.embed_tokens.weight.copy_(found["model.embed_tokens"].dequantize())
    path = tmp_path / "w.safetensors"
    groups.save_weight_only(quantized, found, path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        names = set(handle.keys())
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" not in names and "model.embed_tokens.codes" in names
    loaded = groups.load_weight_only(path)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(loaded.model.embed_tokens.weight, quantized.model.embed_tokens.weight)


def test_the_dequantized_model_is_cached_verified_and_rebuilt_when_damaged(tiny, tmp_path, monkeypatch, capsys):
    from transformers import AutoTokenizer

    path = gguf.model_file()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    decoded = []

    def fake_decode(path_, dtype):  # stands in for transformers' slow GGUF reader
        decoded.append(path_)
        return copy.deepcopy(tiny), tokenizer

    monkeypatch.setenv("WORKBOOK_CACHE", str(tmp_path))
    monkeypatch.setattr(gguf, "_from_gguf", fake_decode)
    first, _ = gguf.load_model()
    second, tok = gguf.load_model()
    folder, inputs = gguf.cache_folder()
    assert len(decoded) == 1 and folder.parent == tmp_path / "llm" and inputs["bytes"] == path.stat().st_size
    assert all(torch.equal(a, b) for a, b in zip(second.state_dict().values(), tiny.state_dict().values()))
    assert tok("Positive").input_ids == tokenizer("Positive").input_ids
    with open(folder / "model.safetensors", "r+b") as f:  # one flipped byte
        f.seek(-10, 2)
        byte = f.read(1)
        f.seek(-10, 2)
        f.write(bytes([byte[0] ^ 1]))
    gguf.load_model()
    assert len(decoded) == 2 and "cached model rejected" in capsys.readouterr().out
    uncached, _ = gguf.load_model(cache=False)
    assert len(decoded) == 3
