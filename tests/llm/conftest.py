"""The tiny random llama chapter 10's model-level tests share (fast; the real model is tested in its own files)."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM


@pytest.fixture(scope="module")
def tiny():
    """A 2-block llama with grouped-query attention and a tied embedding, as SmolLM2 has, in eval mode."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()
