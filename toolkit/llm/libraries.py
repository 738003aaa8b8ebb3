"""The same jobs done by maintained libraries: HQQ's calibration-free grids and torchao's int8 weight-only config.

HQQ (Badri and Shaji, 2023, "Half-Quadratic Quantization of Large Machine Learning Models") keeps
round-to-nearest's format (per group of ``group_size`` weights: codes, a scale s and a float zero z) and
moves each group's zero to minimise a robust norm of the *weight* error, with no calibration text:

    W_hat = s * (Q - z),   Q = clamp(round(W / s + z), 0, 2**bits - 1)
    z* = argmin_z || W - W_hat(z) ||_p^p,   p = 0.7      (solved by half-quadratic splitting)

GPTQ and AWQ minimise the error of the layer's *output* on calibration activations instead; HQQ
sees only the weights. torchao's ``Int8WeightOnlyConfig`` stores int8 codes with one scale per output
channel, as ``kernels.Int8Linear`` does, through a tensor subclass instead of a module.
"""

from __future__ import annotations

import copy

import torch

from toolkit.llm.groups import grouped, block_linear_names, group_width

HQQ_BITS = (2, 3, 4, 8)  # the widths hqq's Quantizer packs (it also has 1)


def hqq_fake_quantize(weight: torch.Tensor, bits: int, group_size: int | None = 128) -> torch.Tensor:
    """HQQ's dequantized weight, (N, K) -> (N, K), in the weight's dtype: hqq's ``Quantizer.quantize``
    (optimize=True) on groups of ``group_size`` consecutive weights of a row (None: the whole row), with
    its scale and zero rounded to fp16 as they are stored.

    hqq groups the flattened matrix; when ``group_size`` does not divide K (128 into 576) a group would
    straddle two rows, so each row is padded first as ``groups`` pads it (a copy of its last group's first
    value), which keeps the groups the same as round-to-nearest's, GPTQ's and AWQ's.

    Taught in: chapter 10, section 5 (AWQ from scratch).
    """
    from hqq.core.quantize import Quantizer  # imported where used: it adds about 1.5 s to importing the toolkit

    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in HQQ_BITS:
        raise ValueError(f"bits must be one of {HQQ_BITS} for HQQ; got {bits!r}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D (out_features, in_features) matrix; got shape {tuple(weight.shape)}")
    n, k = weight.shape
    g = group_width(k, group_size)
    padded = grouped(weight.detach().float(), g).reshape(n, -1)       # (N, groups * g)
    codes, meta = Quantizer.quantize(padded, nbits=bits, channel_wise=True, group_size=g, optimize=True, axis=1,
                                     bitpack=False, compute_dtype=torch.float32, device="cpu")
    meta["scale"], meta["zero"] = meta["scale"].half().float(), meta["zero"].half().float()
    return Quantizer.dequantize(codes, meta).reshape(n, -1)[:, :k].to(weight.dtype)


def hqq_model(model: torch.nn.Module, bits: int, group_size: int | None = 128) -> torch.nn.Module:
    """A copy of ``model`` whose block linear layers hold HQQ's dequantized weights (fake quantization, to
    measure perplexity beside round-to-nearest, GPTQ and AWQ). ``model`` is unchanged.

    Taught in: chapter 10, section 5 (AWQ from scratch).
    """
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for name in block_linear_names(quantized):
            layer = quantized.get_submodule(name)
            layer.weight.copy_(hqq_fake_quantize(layer.weight, bits, group_size))
    return quantized


def torchao_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with every block linear layer quantized by torchao's ``Int8WeightOnlyConfig``
    (int8 codes, one scale per output channel), and the output projection too (untied from the embedding, as
    ``decode.with_kernels`` unties it), so that it reads the same bytes per token as ``with_kernels(model, "int8")``.
    ``model`` is unchanged.

    Taught in: chapter 10, section 2 (Why decoding is different).
    """
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantized = copy.deepcopy(model)
    names = set(block_linear_names(quantized))
    head = quantized.get_output_embeddings()
    quantize_(quantized, Int8WeightOnlyConfig(), filter_fn=lambda module, fqn: fqn in names or module is head)
    return quantized
