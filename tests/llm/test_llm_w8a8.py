"""Chapter 10's W8A8 pieces (SmoothQuant folded into a llama, int8 weights and activations, massive activations)
and the zero-shot sentiment classifier, on tiny random llamas."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from toolkit.llm import gguf, w8a8, zeroshot
from toolkit.quant.affine import fake_quantize
from toolkit.quant.spec import QuantSpec


def tiny_llama(vocab_size=128, hidden=64):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama()


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(1))


def test_int8_weights_and_tokens_match_chapter_2s_symmetric_per_channel_quantizer():
    torch.manual_seed(0)
    w, x = torch.randn(16, 32), torch.randn(8, 32) * torch.linspace(0.1, 20, 32)
    spec = QuantSpec(bits=8, granularity="channel", axis=0, restricted_range=True)  # symmetric, codes in [-127, 127]
    with torch.no_grad():
        linear = torch.nn.Linear(32, 16, bias=False)
        linear.weight.copy_(w)
        layer = w8a8.W8A8Linear(linear, "token")
    assert torch.allclose(layer.weight, fake_quantize(w, spec), atol=1e-6)
    expected = fake_quantize(x, spec) @ fake_quantize(w, spec).T  # per token = one scale per row of x
    assert torch.allclose(layer(x), expected, atol=1e-4)


def test_smoothquant_folded_into_the_blocks_keeps_the_float_model(tiny, tokens):
    absmax = w8a8.input_absmax(tiny, tokens)
    assert set(absmax) == {n for n, m in tiny.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n}
    before = {k: v.clone() for k, v in absmax.items()}
    smoothed_model = copy.deepcopy(tiny)
    smoothed = w8a8.smooth_model_(smoothed_model, absmax, alpha=0.5)
    with torch.no_grad():
        assert torch.allclose(smoothed_model(tokens).logits, tiny(tokens).logits, atol=1e-4)
    assert all(torch.equal(absmax[k], before[k]) for k in absmax), "absmax is not changed"
    again = w8a8.input_absmax(smoothed_model, tokens)  # the smoothed inputs' ranges are absmax / s, as returned
    assert all(torch.allclose(again[k], smoothed[k], rtol=1e-4, atol=1e-6) for k in again)
    q = "model.layers.0.self_attn.q_proj"
    assert again[q].max() / again[q].min() < absmax[q].max() / absmax[q].min(), "the channels' ranges are flatter"
    with pytest.raises(ValueError, match="segments must be"):
        w8a8.input_absmax(tiny, tokens[0])
    with pytest.raises(ValueError, match="absmax has no input range"):
        w8a8.smooth_model_(copy.deepcopy(tiny), {})


def test_w8a8_model_swaps_every_block_linear_and_keeps_the_model(tiny, tokens):
    before = copy.deepcopy(tiny.state_dict())
    quantized = w8a8.w8a8_model(tiny, "tensor", w8a8.input_absmax(tiny, tokens))
    assert sum(isinstance(m, w8a8.W8A8Linear) for m in quantized.modules()) == 14
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())
    with torch.no_grad():
        close = torch.nn.functional.cosine_similarity(quantized(tokens).logits.flatten(), tiny(tokens).logits.flatten(), dim=0)
    assert close > 0.99
    own = copy.deepcopy(tiny)  # the in-place form converts a copy you own into the same model, freeing its floats
    float_weights = [m.weight for n, m in own.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]
    assert w8a8.w8a8_model_(own, "tensor", w8a8.input_absmax(tiny, tokens)) is own
    assert sum(isinstance(m, w8a8.W8A8Linear) for m in own.modules()) == 14
    assert not any(any(p is w for p in own.parameters()) for w in float_weights)
    with torch.no_grad():
        assert torch.equal(own(tokens).logits, quantized(tokens).logits)
    with pytest.raises(ValueError, match="absmax must give the input range"):
        w8a8.w8a8_model(tiny, "tensor")
    with pytest.raises(ValueError, match="absmax must give the input range"):
        w8a8.w8a8_model_(copy.deepcopy(tiny), "tensor")
    with pytest.raises(ValueError, match="activations must be one of"):
        w8a8.W8A8Linear(torch.nn.Linear(4, 4), "channel")


def test_massive_activations_reports_every_block(tiny, tokens):
    rows = w8a8.massive_activations(tiny, tokens[:1])
    assert len(rows) == 2 and all(r["largest"] >= r["median"] >= 0 and 0 <= r["token"] < 32 and 0 <= r["channel"] < 64 for r in rows)
    with pytest.raises(ValueError, match="segment must be one sequence"):
        w8a8.massive_activations(tiny, tokens)


# ----------------------------------------------------------------------------- zero-shot sentiment
@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    path = gguf.model_file()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def test_zero_shot_scores_equal_each_prompt_run_whole_and_alone(tokenizer):
    model = tiny_llama(vocab_size=len(tokenizer), hidden=32)
    texts = ["Great phone.", "The food was cold and the waiter was rude, never again.", "Meh.", "I loved every minute of it!"]
    negative, positive = zeroshot.answer_ids(tokenizer)
    assert tokenizer.decode([negative]) == "Negative" and tokenizer.decode([positive]) == "Positive"
    alone = []
    with torch.no_grad():
        for chat in zeroshot.prompts(tokenizer, texts):
            log_probs = torch.log_softmax(model(tokenizer(chat, return_tensors="pt", add_special_tokens=False).input_ids).logits[0, -1], -1)
            alone.append(log_probs[positive] - log_probs[negative])
    for batch_size in (1, 3, 4):  # the shared prefix, the right padding and the batching change nothing
        assert torch.allclose(zeroshot.scores(model, tokenizer, texts, batch_size=batch_size), torch.stack(alone), atol=1e-4)
    with pytest.raises(ValueError, match="texts is empty"):
        zeroshot.scores(model, tokenizer, [])


def test_the_threshold_is_chosen_for_accuracy():
    scores = torch.tensor([-3.0, -1.0, 0.5, 1.0, 2.0, 4.0])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    threshold = zeroshot.best_threshold(scores, labels)
    assert threshold == 0.75 and torch.equal(zeroshot.predict(scores, threshold), labels)
    assert zeroshot.best_threshold(torch.tensor([1.0, 2.0]), torch.tensor([1, 1])) < 1.0  # all positive: below them all
    with pytest.raises(ValueError, match="non-empty vectors of one length"):
        zeroshot.best_threshold(scores, labels[:3])
