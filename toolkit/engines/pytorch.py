"""PyTorch's own int8 kernels: run the toolkit's stored int8 codes on real integer kernels.

The packed file (``toolkit.quant.fileformat``) is the one source of truth for a quantized model. These
adapters turn its layers into modules of a runtime that has fast int8 kernels on a CPU:

- ``"torch-dynamic"``: ``torch.ao.nn.quantized.dynamic.Linear`` (FBGEMM/oneDNN). Weights are
  int8 (per tensor or per channel, exactly our codes); each call quantizes the activations
  on the fly (per tensor, from their current min/max), multiplies in int8 and rescales.
  ``torch.ao.quantization`` is deprecated in torch 2.13 but still the fastest eager path here.
- ``"torchao-int8"``: torchao's ``Int8DynamicActivationInt8WeightConfig`` (the maintained
  path). Eager it dequantizes; under ``torch.compile`` it runs fused int8 kernels.

A spec a backend cannot run is refused with the spec and the backend named.
"""

from __future__ import annotations

import warnings

import torch

from toolkit.layers import swap_modules
from toolkit.quant.modules import QuantEmbedding, QuantLinear
from toolkit.quant.spec import QuantSpec

BACKENDS = ("torch-dynamic", "torchao-int8")

# What torch 2.13 says whenever torch.ao's int8 modules are built; the workbook uses them knowingly.
TORCH_AO_DEPRECATIONS = (
    r".*torch\.ao\.quantization.*deprecated.*",
    r".*quantized tensor creation functions.*deprecated.*",
)


def check_backend(spec: QuantSpec, backend: str) -> None:
    """Raise if ``backend`` has no kernel for weights quantized with ``spec``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not known; accepted: {', '.join(BACKENDS)}")
    runnable = (
        spec.bits == 8 and spec.signed and spec.symmetric and not spec.is_float
        and (spec.granularity == "tensor" or (spec.granularity == "channel" and spec.axis in (0, -2)))
    )
    if not runnable:
        raise ValueError(
            f"backend {backend!r} runs int8 symmetric weights per tensor or per output channel; "
            f"it cannot run {spec.describe()} (use the toolkit's QuantLinear, which dequantizes, for that spec)"
        )


def dequantize_model(model: torch.nn.Module) -> torch.nn.Module:
    """A float copy: every QuantLinear/QuantEmbedding becomes nn.Linear/nn.Embedding with x_hat weights."""

    def build(name, module):
        if isinstance(module, QuantLinear):
            linear = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            linear.weight.data = module.weight_q.dequantized()
            if module.bias is not None:
                linear.bias.data = module.bias.detach().float().clone()
            return linear
        if isinstance(module, QuantEmbedding):
            embedding = torch.nn.Embedding(module.num_embeddings, module.embedding_dim, padding_idx=module.padding_idx)
            embedding.weight.data = module.weight_q.dequantized()
            return embedding
        return None

    result, _ = swap_modules(model, build)
    return result.eval()


def _torch_quantized_weight(module: QuantLinear) -> torch.Tensor:
    codes = module.weight_q.codes_unpacked().to(torch.int8)  # (out, in) int8
    spec = module.spec
    if spec.granularity == "tensor":
        return torch._make_per_tensor_quantized_tensor(codes, float(module.weight_q.scale), 0)
    zero_points = torch.zeros(module.out_features, dtype=torch.int64)
    return torch._make_per_channel_quantized_tensor(codes, module.weight_q.scale.double(), zero_points, 0)


def to_torch_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    """A copy in which every int8 QuantLinear runs on torch's dynamic int8 kernel, with the same codes.

    Taught in: chapter 3, section 3 (Dynamic int8: weights ahead of time, activations on the fly).
    """
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    def build(name, module):
        if not isinstance(module, QuantLinear):
            return None
        check_backend(module.spec, "torch-dynamic")
        with warnings.catch_warnings():  # torch 2.13 deprecates torch.ao's quantized tensors: known, and said in Chapter 3
            for message in TORCH_AO_DEPRECATIONS:
                warnings.filterwarnings("ignore", message=message)
            fast = DynamicLinear(module.in_features, module.out_features, bias_=module.bias is not None, dtype=torch.qint8)
            fast.set_weight_bias(_torch_quantized_weight(module), None if module.bias is None else module.bias.detach().float())
        return fast

    result, swapped = swap_modules(model, build)
    if swapped == 0:
        raise ValueError("the model has no QuantLinear layers to run on 'torch-dynamic'; quantize it first")
    return result.eval()


def to_torchao_int8(model: torch.nn.Module, compile: bool = False) -> torch.nn.Module:
    """A copy whose int8 QuantLinear layers run through torchao's int8 dynamic-activation config.

    torchao quantizes from float weights, so the layers are first dequantized (x_hat); with
    int8 codes on a symmetric grid, torchao finds the same grid again up to rounding of the scale.

    Taught in: chapter 3, section 3 (Dynamic int8: weights ahead of time, activations on the fly).
    """
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    names = []
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            check_backend(module.spec, "torchao-int8")
            names.append(name)
    if not names:
        raise ValueError("the model has no QuantLinear layers to run on 'torchao-int8'; quantize it first")
    result = dequantize_model(model)
    chosen = set(names)
    quantize_(result, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda module, fqn: fqn in chosen)
    if not compile:
        return result
    compiled = torch.compile(result, dynamic=True)
    # Compile now, with one known notice silenced: torch's AOT cache says torchao's Int8Tensor "does not
    # implement _stable_hash_for_caching" (it only means no on-disk cache entry). The calls look like a
    # tokenizer's output (three inputs, ordinary tensors), so later calls reuse these graphs: one for
    # batch 1 (dynamic shapes still specialise a size of 1) and one for every other shape.
    for batch_size in (1, 2):
        ids = torch.ones(batch_size, 8, dtype=torch.long)
        inputs = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids)}
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.filterwarnings("ignore", message=".*_stable_hash_for_caching.*")
            compiled(**inputs)
    return compiled
