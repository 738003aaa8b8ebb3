"""What every engine shares: the classifier's interface around a compiled model, and the check that an export
computes what PyTorch computes.

Every engine model is wrapped as a ``torch.nn.Module`` (``EngineClassifier``) whose forward takes
the tokenizer's tensors and returns an object with ``.logits``, so the toolkit's accuracy, latency
and A/B functions measure it exactly as they measure PyTorch models. ``check_against`` compares
an exported model's logits with PyTorch's: an export can be silently wrong (inputs given in the
wrong order swap the mask and the token types, and accuracy falls to chance).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from toolkit.layers import eval_mode
from toolkit.runtime import quiet_loggers


INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # the positional order of BertForSequenceClassification.forward


PRECISIONS = ("f32", "bf16")  # OpenVINO's INFERENCE_PRECISION_HINT values accepted here


@contextlib.contextmanager
def quiet_tools():
    """Silence the tools' known chatter: the TorchScript tracer's deprecation notices; its TracerWarnings on
    shape-dependent Python conditions in transformers' masking and attention code (for an encoder given its
    attention mask they always take the same branch, and the tests check the exported graphs at other batch
    and sequence sizes); the exporter's note on advanced indexing (the indices here are never negative);
    ONNX Runtime's advice logged on the root logger; NNCF's progress bars (drawn by rich on its global console,
    which is pointed at a discarded buffer meanwhile)."""
    import io

    import rich
    from rich.console import Console

    console, rich._console = rich._console, Console(file=io.StringIO(), force_jupyter=False)  # not a widget in Jupyter
    with warnings.catch_warnings(), quiet_loggers(("", "nncf")):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*TorchScript-based ONNX export.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")  # the TorchScript exporter's own
        try:
            yield
        finally:
            rich._console = console


@dataclass
class Logits:
    logits: torch.Tensor


class EngineClassifier(torch.nn.Module):
    """A compiled engine model behind the ``model(**batch).logits`` interface of a PyTorch classifier.

    Taught in: chapter 9, section 1 (The anchors: what the one-line tools give).
    """

    device = torch.device("cpu")  # where its inputs go (layers.device_of reads it: an engine has no parameters)

    def __init__(self, run: Callable[[dict], object], name: str, files: Sequence[Path]):
        super().__init__()
        self._run, self.name, self.files = run, name, [Path(f) for f in files]

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None) -> Logits:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return Logits(torch.as_tensor(self._run({k: v.cpu().numpy() for k, v in feeds.items()})))

    @property
    def bytes_on_disk(self) -> int:
        """Bytes of the files the engine loads (an .onnx file; an OpenVINO .xml with its .bin)."""
        return sum(f.stat().st_size for f in self.files)


# ----------------------------------------------------------------------------- checks
def check_against(engine: EngineClassifier, model: torch.nn.Module, batch: dict, atol: float = 1e-3) -> float:
    """Largest absolute difference between the engine's and PyTorch's logits on ``batch``.

    Raises ``AssertionError`` above ``atol``: an export that disagrees with its source must not
    be measured as if it were the same model. Quantized engines need a larger ``atol``.

    Taught in: chapter 9, section 1 (The anchors: what the one-line tools give).
    """
    inputs = {k: v for k, v in batch.items() if k in INPUT_NAMES}
    with eval_mode(model), torch.inference_mode():  # no dropout; the model's mode is restored after
        difference = float((engine(**inputs).logits.float() - model(**inputs).logits.float()).abs().max())
    if difference > atol:
        raise AssertionError(f"{engine.name}: logits differ from PyTorch's by up to {difference:.3g} (> atol {atol:g})")
    return difference
