"""Inference engines: the same classifier run by ONNX Runtime, OpenVINO or PyTorch's int8 kernels, and their tools.

PyTorch eager runs one operator at a time from Python. An inference engine takes the whole graph,
fuses operators (attention, layer norms, GELU), picks kernels for the CPU it runs on and, with
quantization, runs int8 matrix products end to end. Two engines are used here:

- **ONNX Runtime**: the model is exported with ``torch.onnx.export`` (opset 17, batch and sequence
  axes dynamic) and optionally quantized with ``onnxruntime.quantization.quantize_dynamic``
  (int8 weights per channel, activations quantized on the fly);
- **OpenVINO**: the PyTorch model is converted with ``openvino.convert_model``; NNCF then
  quantizes it statically (``nncf.quantize``: int8 weights and activations, activation ranges
  from calibration sentences) or compresses only its weights (``nncf.compress_weights``: int4 in
  groups).

A third path stays inside PyTorch: the toolkit's stored int8 codes run on PyTorch's and torchao's int8
kernels (``pytorch``).

- ``base``      ``EngineClassifier`` (an engine behind the classifier's interface) and ``check_against``
- ``onnx``      export, BERT fusion, dynamic int8 and the ONNX Runtime classifier
- ``openvino``  conversion, NNCF int8 and int4 weights, the compiled OpenVINO classifier
- ``pytorch``   the toolkit's quantized layers on torch.ao's dynamic int8 and torchao's kernels

Every public name is also reachable as ``toolkit.engines.<name>``; each module loads on first use, so
``toolkit.deploy`` can compile an OpenVINO model without importing the quantization code.
"""

import importlib

SUBMODULES = ("base", "onnx", "openvino", "pytorch")
_NAMES = {
    "base": ("INPUT_NAMES", "PRECISIONS", "Logits", "EngineClassifier", "check_against"),
    "onnx": ("export_onnx", "onnxruntime_classifier", "optimize_onnx_bert", "onnx_operator_counts", "quantize_onnx_dynamic"),
    "openvino": ("openvino_model", "nncf_int8", "nncf_int4_weights", "compile_openvino", "openvino_classifier"),
    "pytorch": ("BACKENDS", "check_backend", "dequantize_model", "to_torch_dynamic", "to_torchao_int8"),
}
_HOME = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_HOME) + list(SUBMODULES)


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f"toolkit.engines.{name}")
    if name in _HOME:
        return getattr(importlib.import_module(f"toolkit.engines.{_HOME[name]}"), name)
    raise AttributeError(f"module 'toolkit.engines' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
