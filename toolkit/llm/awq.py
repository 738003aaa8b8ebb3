"""AWQ (Lin et al., 2023): activation-aware weight quantization.

A few input channels carry much larger activations than the rest; the weights that multiply them
matter most. Scaling such a weight column up before rounding shrinks its *relative* rounding error,
and dividing the input by the same factor keeps the product unchanged:

    y = W x = (W diag(s)) (diag(s)^-1 x)         (exact in float, for any s > 0)
    quantized:   Q(W diag(s)) (diag(s)^-1 x)

The division is folded into the operation before the layer (an RMSNorm's weight, or the rows of
``up_proj`` before ``down_proj``), so it costs nothing at run time. The scales are searched per group
of layers that share an input, on calibration text:

    s = mean_tokens|x| ** a,  normalised by sqrt(max(s) * min(s)),   a in {0, 1/n, ..., (n-1)/n}
    a* = argmin_a  || f(x) - f_Q,s(x) ||^2                 (f: the layers' outputs, or the MLP's)

Then each layer's weight range is clipped: per group, the range [min, max] shrunk by r in
{1, 1 - 1/n, ..., 1/2}, choosing the r that minimises the group's partial output error on a sample
of tokens. Both searches never see the evaluation text.
"""

from __future__ import annotations

import torch

from toolkit.llm.groups import check_bits, fake_quantize_groups, group_width
from toolkit.runtime import check_int


def activation_scale(x: torch.Tensor) -> torch.Tensor:
    """mean over tokens of |x| per input channel: (K,) from (tokens, K).
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be non-empty (tokens, features) activations; got shape {tuple(x.shape)}")
    return x.abs().float().mean(0)


def candidate_scales(x_scale: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = x_scale ** alpha, normalised so that sqrt(max(s) * min(s)) = 1: (K,)."""
    s = x_scale.pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def scale_layers_(previous: torch.nn.Module, layers: list[torch.nn.Linear], scales: torch.Tensor) -> None:
    """Fold s into the layers: each weight's columns times s, the previous operation's output divided by s
    (an RMSNorm's weight, or a linear layer's rows). The float function is unchanged."""
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(scales.to(layer.weight.dtype)[None, :])
        if isinstance(previous, torch.nn.Linear):
            previous.weight.div_(scales.to(previous.weight.dtype)[:, None])
            if previous.bias is not None:
                previous.bias.div_(scales.to(previous.bias.dtype))
        else:
            previous.weight.div_(scales.to(previous.weight.dtype))


def search_scale(x: torch.Tensor, layers: list[torch.nn.Linear], output, bits: int, group_size: int | None,
                 grid: int = 20) -> tuple[torch.Tensor, float, dict[float, float]]:
    """(best scales (K,), best alpha, loss for every alpha) for layers sharing the input ``x`` (tokens, K).

    ``output(x)`` computes what is compared (the layers' outputs or a larger module's) with the layers'
    current weights; the weights are restored after the search."""
    check_bits(bits)
    check_int("grid", grid)
    x_scale = activation_scale(x)
    originals = [layer.weight.detach().clone() for layer in layers]
    with torch.no_grad():
        reference = output(x)
        losses = {}
        best = (float("inf"), None, None)
        for step in range(grid):
            alpha = step / grid
            s = candidate_scales(x_scale, alpha)
            for layer, w in zip(layers, originals):
                layer.weight.copy_(fake_quantize_groups(w * s[None, :], bits, group_size) / s[None, :])
            losses[alpha] = float((output(x) - reference).float().pow(2).mean())
            if losses[alpha] < best[0]:
                best = (losses[alpha], s, alpha)
        for layer, w in zip(layers, originals):
            layer.weight.copy_(w)
    return best[1], best[2], losses


def search_clip(weight: torch.Tensor, x: torch.Tensor, bits: int, group_size: int | None, grid: int = 20,
                max_shrink: float = 0.5, tokens: int = 512) -> torch.Tensor:
    """The weight with each group clipped to its best shrunk range [m r, M r] (r from 1 down to 1 - max_shrink),
    chosen per output row and group to minimise the group's output error on ``tokens`` sampled tokens."""
    check_bits(bits)
    n, k = weight.shape
    g = group_width(k, group_size)
    if k % g:  # a short last group: pad weights and inputs with zeros (a zero input adds nothing to the output)
        padded = search_clip(torch.cat([weight, weight[:, -1:].expand(n, -k % g)], 1),
                             torch.cat([x, torch.zeros(x.shape[0], -k % g, dtype=x.dtype)], 1), bits, g, grid, max_shrink, tokens)
        return padded[:, :k]
    w = weight.detach().float().reshape(n, k // g, g)  # (N, G, g)
    xs = x[torch.linspace(0, x.shape[0] - 1, min(tokens, x.shape[0])).long()].float().reshape(-1, k // g, g)  # (T, G, g)
    reference = torch.einsum("tgj,ngj->ngt", xs, w)  # every group's partial output (N, G, T)
    lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    best_err = torch.full((n, k // g), float("inf"))
    best = w.clone()
    for step in range(int(max_shrink * grid)):
        r = 1 - step / grid
        clipped = w.clamp(lo * r, hi * r)
        deq = fake_quantize_groups(clipped.reshape(n, k), bits, g).reshape(n, k // g, g)
        err = (torch.einsum("tgj,ngj->ngt", xs, deq) - reference).pow(2).mean(-1)  # (N, G)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better[..., None], clipped, best)
    return best.reshape(n, k).to(weight.dtype)


def llama_groups(block: torch.nn.Module) -> list[tuple[str, list[str], str]]:
    """(previous operation, layers sharing its output, module whose output is compared) for a llama block.
    ``o_proj`` is left out when its input size differs from ``v_proj``'s output (grouped-query attention),
    as the reference implementation does."""
    groups = [("input_layernorm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ""),
              ("post_attention_layernorm", ["mlp.gate_proj", "mlp.up_proj"], "mlp"),
              ("mlp.up_proj", ["mlp.down_proj"], "")]
    v, o = block.get_submodule("self_attn.v_proj"), block.get_submodule("self_attn.o_proj")
    if v.out_features == o.in_features:
        groups.insert(1, ("self_attn.v_proj", ["self_attn.o_proj"], ""))
    return groups


def _sample(x: torch.Tensor, tokens: int) -> torch.Tensor:
    """At most ``tokens`` rows of x, evenly spaced (the searches' cost grows with the tokens they compare)."""
    return x if x.shape[0] <= tokens else x[torch.linspace(0, x.shape[0] - 1, tokens).long()]


def awq_block_(block: torch.nn.Module, inputs: dict[str, torch.Tensor], bits: int, group_size: int | None = 128,
               grid: int = 20, clip: bool = True, search_tokens: int = 1024) -> dict[str, float]:
    """Search and fold AWQ's scales into a llama block, clip its weights' ranges (not q and k, whose errors
    the attention scores amplify, as in the reference), in place; the weights stay float (quantize them
    afterwards with round-to-nearest). ``inputs`` maps each linear's name to its recorded input (tokens, K).
    The scale search (its activation statistics and the outputs it compares) uses ``search_tokens`` evenly spaced
    tokens of the recorded inputs; the clipping search samples its own 512. Returns the chosen alpha per group (named by its first layer)."""
    check_int("search_tokens", search_tokens)
    chosen, applied = {}, {}
    for previous, names, inspected in llama_groups(block):
        layers = [block.get_submodule(n) for n in names]
        x = _sample(inputs[names[0]], search_tokens)
        if inspected:
            module = block.get_submodule(inspected)
            output = module
        else:
            def output(x, layers=layers):
                return torch.cat([layer(x) for layer in layers], -1)
        s, alpha, _ = search_scale(x, layers, output, bits, group_size, grid)
        scale_layers_(block.get_submodule(previous), layers, s)
        chosen[names[0]] = alpha
        applied |= {n: s for n in names}  # these layers now see x / s
    if clip:
        for name, x in inputs.items():
            if name.endswith(("q_proj", "k_proj")):
                continue
            layer = block.get_submodule(name)
            seen = x / applied[name][None, :] if name in applied else x
            with torch.no_grad():
                layer.weight.copy_(search_clip(layer.weight, seen, bits, group_size, grid))
    return chosen


def awq_model_(model: torch.nn.Module, segments: torch.Tensor, bits: int, group_size: int | None = 128, *,
               grid: int = 20, clip: bool = True, search_tokens: int = 1024, batch_size: int = 8) -> dict[str, dict[str, float]]:
    """AWQ's scales and clipping on every decoder block, in place, block by block (each block sees the
    calibration text as the blocks before it, already scaled and quantized, pass it on), and then each
    block's linear weights rounded to nearest. Returns block index -> chosen alpha per group.

    Taught in: chapter 10, section 5 (AWQ from scratch).
    """
    from toolkit.llm.blocks import block_linears, record_inputs, walk_blocks_

    chosen = {}

    def change(index, block, inputs):
        recorded = record_inputs(block, inputs, batch_size=batch_size)
        chosen[index] = awq_block_(block, recorded, bits, group_size, grid, clip, search_tokens)
        with torch.no_grad():
            for name in block_linears(block):
                layer = block.get_submodule(name)
                layer.weight.copy_(fake_quantize_groups(layer.weight, bits, group_size))

    walk_blocks_(model, segments, change, batch_size)
    return chosen
