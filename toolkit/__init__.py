"""toolkit: the code behind the compression workbook's chapters.

One module, one idea. The library, bottom layer first (each imports only the ones above it in this list):

- ``runtime``     seeds, device, folders, quiet logs, argument checks (``setup()`` starts every chapter)
- ``artifacts``   every file written: atomic writes, one manifest layout, one self-describing tensor file
- ``data``        the vendored sentiment sentences: checksums, stratified splits, batches
- ``layers``      model plumbing: linear-like layers, swapping a child, eval mode, device, hooks, the BERT layout
- ``quant``       quantization specs, quantize/dequantize, error metrics, bit packing, PTQ, QAT, files
- ``prune``       importance scores, masks, structured surgery, sparse storage and kernels
- ``activations`` record what modules output on real sentences (padding removed)
- ``measure``     parameters, bytes on disk, latency and A/B timing, accuracy, intervals and McNemar
- ``train``       the fine-tuning loop, distillation, pruning while training
- ``models``      MiniLM from its package, the cached fine-tuned sentiment classifier
- ``augment``     more training sentences from the training split (distillation data)
- ``engines``     ONNX Runtime, OpenVINO and NNCF behind the classifier's interface
- ``pipeline``    chapter 9's cached prune-then-distil stage
- ``standalone``  the deployed folder's own predict.py: openvino, tokenizers and numpy only, no workbook
- ``deploy``      a compressed classifier as a folder that runs elsewhere, and its command line
- ``llm``         chapter 10: a small LLM from its GGUF file; RTN, GPTQ and AWQ weights, int4 kernels,
                  a quantized KV cache, one-shot sparsity (builds on the bottom layer, ``quant`` and ``prune``)

And ``workbook``, the workbook's own machinery (not needed to compress a model): result records and the
report, checked claims, exercises and quizzes, widgets, the runner, the HTML export, JupyterLab, the index
of where each function is taught, the prose audit and chapter 7's small image task.
"""

import importlib

# The package's map: ``toolkit.<name>`` imports that module on first use (PEP 562), so ``import toolkit``
# changes nothing (no logging levels, no environment variables) and loads nothing heavy; ``toolkit.setup()``
# quiets the libraries when a chapter starts, and ``python -m toolkit.deploy`` loads only what it runs.
SUBMODULES = ("activations", "artifacts", "augment", "data", "deploy", "engines", "layers", "llm", "measure", "models", "pipeline",
              "prune", "quant", "runtime", "standalone", "train", "workbook")
_SHORTCUTS = {"setup": "runtime", "device": "runtime", "smoke_mode": "runtime"}

__all__ = sorted(SUBMODULES + tuple(_SHORTCUTS))
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f"toolkit.{name}")
    if name in _SHORTCUTS:
        return getattr(importlib.import_module(f"toolkit.{_SHORTCUTS[name]}"), name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
