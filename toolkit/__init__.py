"""toolkit: the code behind the compression workbook's chapters.

One module, one idea:

- ``runtime``   seeds, device, folders, quiet logs (``setup()`` starts every chapter)
- ``artifacts`` every file written: atomic writes, one manifest layout, one self-describing tensor file
- ``data``      the vendored sentiment sentences: checksums, stratified splits, batches
- ``models``    MiniLM from its package, the cached fine-tuned sentiment classifier
- ``activations`` record what modules output on real sentences (padding removed)
- ``train``     a short, readable fine-tuning loop
- ``measure``   parameters, bytes on disk, latency, accuracy, the hardware line
- ``quant``     quantization specs, quantize/dequantize, error metrics, bit packing, PTQ, QAT
- ``prune``     importance scores, local/global/N:M masks, torch.nn.utils.prune, sparse storage
- ``report``    one result record per technique, the comparison table and chart
- ``claims``    a chapter's key statements, checked against its own measurements
- ``exercises`` checks with hints; an untouched stub falls back to the reference
- ``widgets``   interactive explorers (logic testable without a browser)
- ``runner``    runs every chapter with papermill and writes ``build/report.md``
- ``index``     where each function is taught: ``lessons/toolkit-index.md``, generated from the chapters
"""

from toolkit import runtime

runtime.quiet_third_party()  # before transformers is imported by the modules below
runtime.import_torchao_quietly()  # its CPU-build notices are harmless; later imports print nothing

from toolkit import activations, artifacts, claims, data, exercises, measure, models, prune, quant, report, train, widgets  # noqa: E402,F401  (the package's map)
from toolkit.runtime import device, setup, smoke_mode  # noqa: E402

__all__ = ["activations", "artifacts", "claims", "data", "device", "exercises", "measure", "models", "quant", "report", "runtime", "setup", "smoke_mode", "train", "widgets"]
__version__ = "0.1.0"
