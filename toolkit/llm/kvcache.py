"""A quantized KV cache in the manner of KIVI (Liu et al., 2024).

While generating, a decoder keeps every past token's keys and values: per layer
2 x heads_kv x tokens x head_dim numbers, which for a long prompt outgrows the weights. KIVI's
observation: keys have a few channels with large values for every token (quantize them *per
channel*, over a group of tokens), values do not (quantize them *per token*):

    keys   (tokens, head_dim):  one (scale, minimum) per channel, over each group of ``group`` tokens
    values (tokens, head_dim):  one (scale, minimum) per token, over its head_dim numbers
    codes: bits-bit, asymmetric with a float minimum (fp16 scale and minimum)

The newest tokens, fewer than ``group``, stay in float (the "residual"); every time ``group`` of
them have gathered they are quantized as one group and appended to the stored codes. Attention
reads the dequantized history plus the residual.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

from toolkit.llm.groups import check_bits
from toolkit.quant.packing import pack, packed_bytes, unpack
from toolkit.runtime import check_int


def quantize_axis(x: torch.Tensor, bits: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8, scale fp16, minimum fp16) of ``x`` with one (scale, minimum) per slice *across* ``dim``
    (the statistics are taken along ``dim``): w = q s + m."""
    lo, hi = x.amin(dim, keepdim=True), x.amax(dim, keepdim=True)
    scale = ((hi - lo) / (2**bits - 1)).half()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    minimum = lo.half()
    codes = torch.round((x - minimum.to(x.dtype)) / scale.to(x.dtype)).clamp_(0, 2**bits - 1).to(torch.uint8)
    return codes, scale, minimum


class _Stored:
    """One quantized chunk of keys or values: packed codes, fp16 scale and minimum."""

    def __init__(self, x: torch.Tensor, bits: int, dim: int):
        codes, self.scale, self.minimum = quantize_axis(x, bits, dim)
        self.shape, self.bits = codes.shape, bits
        self.packed = pack(codes.reshape(-1).to(torch.int16), bits, 0)

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        codes = unpack(self.packed, self.bits, 0, int(torch.Size(self.shape).numel())).reshape(self.shape)
        return codes.to(dtype) * self.scale.to(dtype) + self.minimum.to(dtype)

    def nbytes(self) -> int:
        return packed_bytes(int(torch.Size(self.shape).numel()), self.bits) + 2 * (self.scale.numel() + self.minimum.numel())


class KiviLayer(DynamicLayer):
    """One layer's cache: quantized chunks of ``group`` tokens (keys per channel, values per token) and a
    float residual of the newest tokens. ``self.keys``/``self.values`` hold only the residual, so the length
    seen so far is counted separately (as transformers' own quantized layers do)."""

    def __init__(self, bits: int = 4, group: int = 32):
        super().__init__()
        self.bits, self.group = check_bits(bits), check_int("group", group)
        self.cumulative_length = 0  # tokens seen: stored chunks + residual
        self.chunks: list[tuple[_Stored, _Stored]] = []
        self._history: tuple[torch.Tensor, torch.Tensor] | None = None  # dequantized chunks, rebuilt when one is added

    def get_seq_length(self) -> int:
        return self.cumulative_length

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        # key_states, value_states: (batch, heads_kv, new_tokens, head_dim)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.cumulative_length += key_states.shape[-2]
        self.keys = torch.cat([self.keys, key_states], dim=-2) if self.keys.numel() else key_states
        self.values = torch.cat([self.values, value_states], dim=-2) if self.values.numel() else value_states
        history = self._dequantized()
        keys = torch.cat([history[0], self.keys], dim=-2) if history else self.keys
        values = torch.cat([history[1], self.values], dim=-2) if history else self.values
        full = self.keys.shape[-2] // self.group * self.group
        if full:  # whole groups leave the residual for the stored codes (after this step's attention)
            for start in range(0, full, self.group):
                k, v = self.keys[..., start:start + self.group, :], self.values[..., start:start + self.group, :]
                self.chunks.append((_Stored(k, self.bits, dim=-2), _Stored(v, self.bits, dim=-1)))
            self.keys, self.values = self.keys[..., full:, :], self.values[..., full:, :]
            self._history = None
        return keys, values

    def _dequantized(self):
        if not self.chunks:
            return None
        if self._history is None:
            self._history = (torch.cat([k.dequantize(self.dtype) for k, _ in self.chunks], dim=-2),
                             torch.cat([v.dequantize(self.dtype) for _, v in self.chunks], dim=-2))
        return self._history

    def stored_bytes(self) -> int:
        """Bytes of the cache as stored: packed codes with their scales and minima, plus the float residual."""
        residual = (self.keys.numel() + self.values.numel()) * self.keys.element_size() if self.is_initialized else 0
        return sum(k.nbytes() + v.nbytes() for k, v in self.chunks) + residual

    def reset(self) -> None:
        super().reset()
        self.cumulative_length, self.chunks, self._history = 0, [], None


def kivi_cache(model: torch.nn.Module, bits: int = 4, group: int = 32) -> Cache:
    """A cache for ``model`` with one ``KiviLayer`` per decoder layer; pass it as ``past_key_values``.

    Taught in: chapter 10, section 6 (A quantized KV cache).
    """
    return Cache(layers=[KiviLayer(bits, group) for _ in range(model.config.num_hidden_layers)])


def cache_bytes(cache: Cache) -> int:
    """Bytes a cache holds: a KIVI cache's stored bytes, or a float cache's keys and values."""
    total = 0
    for layer in cache.layers:
        if isinstance(layer, KiviLayer):
            total += layer.stored_bytes()
        elif getattr(layer, "keys", None) is not None:
            total += (layer.keys.numel() + layer.values.numel()) * layer.keys.element_size()
    return total


def score_with_cache(model: torch.nn.Module, ids: torch.Tensor, make_cache, chunk: int = 64) -> tuple[float, int]:
    """Perplexity of ``ids`` (1, T) read ``chunk`` tokens at a time, each chunk attending to the earlier tokens
    *through the cache* (so a quantized cache's error shows), and the cache's bytes at the end.

    Taught in: chapter 10, section 6 (A quantized KV cache).
    """
    import math

    check_int("chunk", chunk)
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] < 2:
        raise ValueError(f"ids must be one sequence of shape (1, T) with T >= 2; got {tuple(ids.shape)}")
    cache = make_cache()
    nll, scored = 0.0, 0
    with torch.inference_mode():
        for start in range(0, ids.shape[1], chunk):
            piece = ids[:, start:start + chunk + 1]  # this chunk and the next token, to score the chunk's last prediction
            out = model(piece[:, :chunk], past_key_values=cache, use_cache=True)
            log_probs = torch.log_softmax(out.logits.float(), -1)  # (1, c, V)
            targets = piece[:, 1:]
            nll -= float(log_probs[:, : targets.shape[1]].gather(-1, targets[..., None]).sum())
            scored += targets.shape[1]
    return math.exp(nll / scored), cache_bytes(cache)
