"""Quantization, one idea per module.

- ``spec``     QuantSpec: bits, signed/symmetric, granularity, rounding, range
- ``affine``   quantize / dequantize / fake_quantize with scale and zero-point
- ``error``    MSE, max error, SQNR in dB
- ``packing``  b-bit codes packed into bytes, so file sizes are true sizes
- ``storage``  packed codes + scales as stored bytes; packed model files
- ``observers`` calibration: min-max, moving average, percentile, MSE, histogram (KL)
- ``modules``  QuantLinear / QuantEmbedding: layers that hold packed codes
- ``ptq``      quantize_weights: a copy of a model with its layers swapped
- ``fileformat`` save_quantized / load_quantized: one safetensors file, checked on load
- ``integer``  what an int8 engine computes: the integer product, the zero-point correction, requantization
- ``qat``      straight-through fake quantization, LSQ, QATLinear, prepare_qat / convert
- ``sensitivity`` where error comes from: one-layer scans, Hessian traces, error through the blocks
- ``mixed``    one spec per layer: bytes per option, the knapsack under a budget, quantize_mixed
- ``smooth``   SmoothQuant: activation outliers moved into the weights
- ``codebook`` product quantization (k-means codebooks) for embedding tables

The stored codes run on real int8 kernels through ``toolkit.engines.pytorch``.
"""

from toolkit.quant.affine import QTensor, dequantize, fake_quantize, qparams_from_range, quantize
from toolkit.quant.error import max_error, mse, sqnr_db
from toolkit.quant.observers import OBSERVERS, make_observer
from toolkit.quant.packing import pack, packed_bytes, unpack
from toolkit.quant.spec import QuantSpec
from toolkit.quant import codebook, error, fileformat, integer, mixed, modules, observers, packing, ptq, qat, sensitivity, smooth, spec, storage  # noqa: E402,F401
from toolkit.quant.fileformat import load_quantized, save_quantized  # noqa: E402
from toolkit.quant.ptq import quantize_weights  # noqa: E402

__all__ = [
    "OBSERVERS", "QTensor", "QuantSpec", "make_observer", "dequantize", "fake_quantize", "max_error", "mse", "pack", "packed_bytes",
    "load_quantized", "qparams_from_range", "quantize", "quantize_weights", "save_quantized", "sqnr_db", "unpack",
]
