"""Interactive explorers. Each one is a plain class whose ``update`` a test can call;
``widget()`` wraps it in ipywidgets controls for JupyterLab.

``QuantizationExplorer``: pick a tensor (a weight matrix or recorded activations), a bit
width, symmetric or asymmetric, a granularity and a range observer. It shows the histogram
of the values with the quantization grid and the clipping range, the histogram of the
errors, and MSE / max error / SQNR / true packed bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from toolkit import quant
from toolkit.quant import QuantSpec
from toolkit.quant.storage import stored_bytes

GRANULARITY_LABELS = {"per tensor": "tensor", "per channel": "channel", "per group of 32": "group"}


@dataclass
class ExplorerView:
    """What the explorer shows for one choice of settings."""

    spec: QuantSpec
    observer: str
    lo: float  # clipping range of the first tensor/channel/group
    hi: float
    scale: float  # of the first tensor/channel/group
    zero_point: float
    mse: float
    max_error: float
    sqnr_db: float
    bytes_fp32: int
    bytes_packed: int
    note: str
    seconds: float

    def summary(self) -> str:
        return (
            f"{self.spec.describe()}, observer {self.observer}: SQNR {self.sqnr_db:.1f} dB, MSE {self.mse:.3g}, "
            f"max error {self.max_error:.3g}; {self.bytes_packed:,} bytes packed vs {self.bytes_fp32:,} fp32 "
            f"({self.bytes_fp32 / self.bytes_packed:.1f}x smaller){self.note}"
        )


class QuantizationExplorer:
    """Quantize one of ``tensors`` ({label: 2-D tensor}) with chosen settings and show the result.

    Weights are (out_features, in_features): channels are rows (axis 0), groups run along a
    row. Activations are (tokens, features): channels are features (axis -1).

    Taught in: chapter 2, section 7 (Explore).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], channel_axis: dict[str, int] | None = None, max_points: int = 200_000):
        if not tensors:
            raise ValueError("tensors is empty: give the explorer at least one {label: tensor}")
        for label, tensor in tensors.items():
            if tensor.dim() != 2:
                raise ValueError(f"tensor {label!r} must be 2-D (rows, columns); got shape {tuple(tensor.shape)}")
        self.tensors = {k: v.detach().float() for k, v in tensors.items()}
        self.channel_axis = channel_axis or {}
        self.max_points = max_points
        self.figure = None

    def compute(self, label: str, bits: int = 8, symmetric: bool = True, granularity: str = "tensor", observer: str = "minmax") -> tuple[ExplorerView, torch.Tensor, torch.Tensor]:
        """Quantize and measure; returns (view, x, x_hat)."""
        start = time.perf_counter()
        if label not in self.tensors:
            raise ValueError(f"label {label!r} is not one of {', '.join(self.tensors)}")
        x = self.tensors[label]
        axis = self.channel_axis.get(label, 0)
        spec = QuantSpec(
            bits=bits,
            symmetric=symmetric or bits == 1,
            granularity=granularity,
            axis=axis,
            group_size=32 if granularity == "group" else None,
        )
        note = ""
        if observer == "histogram" and granularity != "tensor":
            reason = "the histogram observer runs per tensor here (per channel it takes seconds)"
        elif bits == 1:
            reason = "binary scales are mean |x|"
        elif granularity == "group":
            reason = "groups use min-max"
        else:
            reason = ""
        if reason or observer == "minmax":
            if observer != "minmax":
                note = f" (observer {observer} not used: {reason})"
                observer = "minmax"
            q = quant.quantize(x, spec)
        else:
            obs = quant.make_observer(observer, spec, **({"grid": 40} if observer == "mse" else {}))
            obs.observe(x)
            scale, zero_point = obs.qparams()
            q = quant.quantize(x, spec, scale, zero_point)
        x_hat = quant.dequantize(q)
        first_scale = float(q.scale.reshape(-1)[0])
        first_zero = float(q.zero_point.reshape(-1)[0])
        lo, hi = (spec.qmin - first_zero) * first_scale, (spec.qmax - first_zero) * first_scale
        view = ExplorerView(
            spec=spec,
            observer=observer,
            lo=lo,
            hi=hi,
            scale=first_scale,
            zero_point=first_zero,
            mse=quant.mse(x, x_hat),
            max_error=quant.max_error(x, x_hat),
            sqnr_db=quant.sqnr_db(x, x_hat),
            bytes_fp32=x.numel() * 4,
            bytes_packed=sum(stored_bytes(x, spec).values()),
            note=note,
            seconds=0.0,
        )
        view.seconds = time.perf_counter() - start
        return view, x, x_hat

    def draw(self, view: ExplorerView, x: torch.Tensor, x_hat: torch.Tensor):
        """Histogram of values with the grid of the first row's scale, and histogram of errors."""
        import matplotlib.pyplot as plt

        if self.figure is None:
            self.figure, _ = plt.subplots(1, 2, figsize=(10, 3.4))
        ax_values, ax_error = self.figure.axes
        ax_values.clear()
        ax_error.clear()
        flat, err = x.reshape(-1), (x - x_hat).reshape(-1)
        if flat.numel() > self.max_points:  # a fixed subsample keeps drawing fast
            pick = torch.linspace(0, flat.numel() - 1, self.max_points).long()
            flat, err = flat[pick], err[pick]
        ax_values.hist(flat.numpy(), bins=120, color="tab:blue", alpha=0.8)
        levels = torch.tensor([-1.0, 1.0]) if view.spec.binary else torch.arange(view.spec.qmin, view.spec.qmax + 1).float()
        grid = (levels - view.zero_point) * view.scale  # every value the first row can take
        if len(grid) <= 64:
            for g in grid.tolist():
                ax_values.axvline(g, color="tab:orange", lw=0.6, alpha=0.7)
        for edge in (view.lo, view.hi):
            ax_values.axvline(edge, color="tab:red", lw=1.5, ls="--")
        unit = {"tensor": "", "channel": " of channel 0", "group": " of group 0"}[view.spec.granularity]
        ax_values.set_title(f"values and grid{unit} ({view.spec.levels} levels; red: clipping range)", fontsize=9)
        ax_values.set_yscale("log")
        ax_error.hist(err.numpy(), bins=120, color="tab:purple", alpha=0.8)
        ax_error.set_title(f"error x - x_hat (SQNR {view.sqnr_db:.1f} dB)", fontsize=9)
        ax_error.set_yscale("log")
        self.figure.tight_layout()
        return self.figure

    def update(self, label: str, bits: int = 8, symmetric: bool = True, granularity: str = "tensor", observer: str = "minmax") -> ExplorerView:
        """Compute and draw; what a widget callback runs. ``view.seconds`` covers both."""
        start = time.perf_counter()
        view, x, x_hat = self.compute(label, bits, symmetric, granularity, observer)
        self.draw(view, x, x_hat)
        view.seconds = time.perf_counter() - start
        return view

    def widget(self):
        """The ipywidgets explorer: controls on top, figure and metrics below."""
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        controls = {
            "label": w.Dropdown(options=list(self.tensors), description="tensor"),
            "bits": w.IntSlider(value=4, min=1, max=8, description="bits"),
            "symmetric": w.ToggleButtons(options=[("symmetric", True), ("asymmetric", False)], value=True),
            "granularity": w.Dropdown(options=list(GRANULARITY_LABELS.items()), value="tensor", description="granularity"),
            "observer": w.Dropdown(options=list(quant.OBSERVERS), value="minmax", description="observer"),
        }
        metrics = w.HTML()
        out = w.Output()

        def refresh(_=None):
            view = self.update(**{k: c.value for k, c in controls.items()})
            metrics.value = f"<code>{view.summary()}</code><br><small>updated in {view.seconds * 1000:.0f} ms</small>"
            out.clear_output(wait=True)
            with out:
                display(self.figure)

        for control in controls.values():
            control.observe(refresh, names="value")
        refresh()
        plt.close(self.figure)  # shown through the Output widget only
        box = w.VBox([w.HBox([controls["label"], controls["bits"]]), w.HBox([controls["granularity"], controls["observer"]]), controls["symmetric"], metrics, out])
        box.controls, box.metrics = controls, metrics  # for tests and curious readers
        return box


# ----------------------------------------------------------------------------- try it yourself
@dataclass
class DemoRow:
    """One model's answer to one sentence."""

    model: str
    label: str
    probability: float  # of the label given, softmax over the logits
    milliseconds: float  # this model's call, tokenizing included


class SentenceDemo:
    """Type a sentence, see each model's label, probability and time: ``update(text)`` for tests, ``widget()`` for
    JupyterLab. ``models`` maps a name to anything with ``predict(texts)`` returning objects with ``label`` and
    ``probability`` (``toolkit.deploy.Classifier``: a loaded artifact, or a PyTorch model wrapped in one).

    Taught in: chapter 9, section 9 (Try it yourself).
    """

    def __init__(self, models: dict):
        if not models or not all(callable(getattr(m, "predict", None)) for m in models.values()):
            raise ValueError("models must map names to classifiers with a predict(texts) method; got "
                             f"{ {k: type(v).__name__ for k, v in (models or {}).items()} }")
        self.models = dict(models)

    def update(self, text: str) -> list[DemoRow]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a string; got {type(text).__name__}")
        if not text.strip():
            return []
        rows = []
        for name, model in self.models.items():
            start = time.perf_counter()
            answer = model.predict([text])[0]
            rows.append(DemoRow(name, answer.label, float(answer.probability), 1000 * (time.perf_counter() - start)))
        return rows

    @staticmethod
    def html(text: str, rows: list[DemoRow]) -> str:
        import html

        if not rows:
            return "<i>Type a sentence and press Enter.</i>"
        body = "".join(f"<tr><td>{html.escape(r.model)}</td><td><b>{html.escape(r.label)}</b></td><td>{r.probability:.1%}</td>"
                       f"<td>{r.milliseconds:.1f} ms</td></tr>" for r in rows)
        return (f"<p>“{html.escape(text)}”</p><table><tr><th>model</th><th>label</th><th>probability</th><th>time</th></tr>"
                f"{body}</table><small>one sentence per call, batch 1; times include tokenizing</small>")

    def widget(self, example: str = "The battery died after two days, but support replaced it at once."):
        """A text box (press Enter, or the button) and the answers below it."""
        import ipywidgets as w

        box = w.Text(value=example, placeholder="a review sentence", description="sentence", continuous_update=False,
                     layout=w.Layout(width="90%"))
        button = w.Button(description="Classify")
        answers = w.HTML()

        def refresh(_=None):
            answers.value = self.html(box.value, self.update(box.value))

        box.observe(refresh, names="value")
        button.on_click(refresh)
        self.update(example)  # warm-up: a model's first call pays one-off costs that are not its speed
        refresh()
        view = w.VBox([w.HBox([box, button]), answers])
        view.text, view.answers = box, answers  # for tests and curious readers
        return view
