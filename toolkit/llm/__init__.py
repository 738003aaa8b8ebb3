"""From encoders to LLMs: a small decoder (SmolLM2-135M) quantized and pruned, one idea per module.

- ``gguf``     the packaged GGUF file: its tensor types, Q4_1 blocks decoded by hand, the model loaded
- ``text``     offline evaluation text (Python's pydoc topics), split into calibration and evaluation parts
- ``evaluate`` perplexity and the KL divergence of the next-token distribution against a reference
- ``groups``   group-wise round-to-nearest weights (codes, fp16 scales and minima) and their file
- ``kernels``  Int4Linear / Int8Linear on PyTorch's CPU weight-only kernels
- ``decode``   bytes per token, memory bandwidth, tokens per second A/B
- ``blocks``   walking the decoder block by block with calibration inputs (what GPTQ, AWQ and SparseGPT share)
- ``gptq``     GPTQ: column-by-column quantization with error compensation through the inverse Hessian
- ``awq``      AWQ: activation-aware per-channel scales and weight clipping
- ``libraries`` the same jobs by maintained libraries: HQQ's calibration-free grids, torchao's int8 weight-only config
- ``kvcache``  a KIVI-style quantized KV cache (keys per channel, values per token)
- ``sparse``   one-shot sparsity: magnitude, Wanda and SparseGPT, unstructured and 2:4
- ``w8a8``     int8 weights and activations: a decoder's massive activations, and SmoothQuant folded into the blocks
- ``zeroshot`` the instruct model as a zero-shot sentiment classifier (the task metric of chapters 1-9)
"""

from __future__ import annotations

import importlib

SUBMODULES = ("awq", "blocks", "decode", "evaluate", "gguf", "gptq", "groups", "kernels", "kvcache", "libraries", "sparse", "text", "w8a8", "zeroshot")


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f"toolkit.llm.{name}")
    raise AttributeError(f"module 'toolkit.llm' has no attribute {name!r}")


__all__ = list(SUBMODULES)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
