"""Linear-like layers: transformers' Conv1D is handled or named, never skipped in silence."""

import warnings

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from toolkit import layers, models, prune, quant
from toolkit.quant import QuantSpec
from toolkit.quant.modules import QuantLinear
from toolkit.quant.qat import QATLinear, prepare_qat


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32, num_labels=2, pad_token_id=0)
    return GPT2ForSequenceClassification(config).eval()  # random weights, built offline from a config


def test_as_linear_computes_what_conv1d_computes(gpt2):
    conv = gpt2.transformer.h[0].attn.c_attn  # Conv1D, weight (in, out)
    x = torch.randn(3, 5, 64)
    assert layers.is_conv1d(conv) and torch.allclose(layers.as_linear(conv)(x), conv(x), atol=1e-5)
    with pytest.raises(TypeError, match="nn.Linear or transformers Conv1D"):
        layers.as_linear(torch.nn.Conv2d(1, 1, 1))


def test_quantize_weights_handles_conv1d(gpt2):
    ids = torch.randint(1, 100, (2, 9))
    q = quant.quantize_weights(gpt2, QuantSpec(bits=8, granularity="channel", axis=0))
    swapped = [n for n, m in q.named_modules() if isinstance(m, QuantLinear)]
    assert len(swapped) == 2 * 4 + 1, swapped  # c_attn, c_proj, c_fc, mlp.c_proj in each of 2 blocks, and the score head
    assert q.skipped_layers == {}
    assert torch.allclose(q(ids).logits, gpt2(ids).logits, atol=0.05)
    assert layers.is_conv1d(gpt2.transformer.h[0].attn.c_attn), "the model passed in is unchanged"


def test_prepare_qat_handles_conv1d(gpt2):
    qat = prepare_qat(gpt2, QuantSpec(bits=4, granularity="channel", axis=0))
    assert sum(isinstance(m, QATLinear) for m in qat.modules()) == 2 * 4 + 1 and qat.skipped_layers == {}


def test_pruning_names_conv1d_and_refuses_to_touch_nothing(gpt2):
    with pytest.warns(UserWarning, match=r"pruning left 8 weight layer\(s\) unchanged: transformer.h.0.attn.c_attn \(transformers Conv1D"):
        with pytest.raises(ValueError, match="pruning would change no layer inside the model's blocks"):
            prune.prunable_modules(gpt2)


def test_quantizing_nothing_inside_the_blocks_is_an_error():
    model = models.sentiment_classifier(smoke=True, progress=False)
    with pytest.raises(ValueError, match="quantize_weights would change no layer inside the model's blocks"):
        quant.quantize_weights(model, QuantSpec(bits=8), modules=["classifier"], skip=())
    with pytest.raises(ValueError, match="prepare_qat would change no layer inside the model's blocks"):
        prepare_qat(model, QuantSpec(bits=8), modules=["bert.pooler.dense"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MiniLM has nothing to leave alone: no warning
        assert quant.quantize_weights(model, QuantSpec(bits=8)).skipped_layers == {}


def test_swap_modules_replaces_in_a_copy_frees_each_old_module_at_once_and_skips_inside_replaced_ones():
    import weakref

    model = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), torch.nn.Linear(2, 2))
    offered, old = [], {}

    def build(name, module):
        offered.append(name)
        if name == "1":  # by now the copy's first block, replaced, must be gone: no list of modules keeps it alive
            assert old["0"]() is None
        old[name] = weakref.ref(module)
        return torch.nn.Identity() if name in ("0", "1") else None

    copied, replaced = layers.swap_modules(model, build)
    assert replaced == 2 and offered == ["0", "1"]  # "0.0" and "0.1" were inside the replaced "0"
    assert all(isinstance(copied[i], torch.nn.Identity) for i in (0, 1))
    assert isinstance(model[0], torch.nn.Sequential) and isinstance(model[1], torch.nn.Linear)  # the original unchanged


def test_copy_in_dtype_equals_deepcopy_then_to_keeps_ties_and_the_original():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    expected = __import__("copy").deepcopy(model).to(torch.bfloat16)
    copied = layers.copy_in_dtype(model, torch.bfloat16)
    got, want = copied.state_dict(), expected.state_dict()
    assert got.keys() == want.keys() and all(got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]) for k in want)
    assert copied.lm_head.weight is copied.model.embed_tokens.weight  # still tied
    assert next(model.parameters()).dtype == torch.float32 and copied.lm_head.weight.data_ptr() != model.lm_head.weight.data_ptr()
    ids = torch.randint(0, 64, (1, 6))
    with torch.inference_mode():
        assert torch.equal(copied(ids).logits, expected(ids).logits)
    with pytest.raises(ValueError, match="dtype must be a floating-point torch.dtype"):
        layers.copy_in_dtype(model, torch.int8)
