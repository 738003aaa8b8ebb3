"""Range observers: watch calibration batches, then choose the range [lo, hi] to quantize.

Weights are known in advance; activations are not, so their range is estimated from a few
calibration batches. Each observer accumulates statistics batch by batch (``observe``) and
then returns a range (``range``) and the scale/zero-point for it (``qparams``). Ranges are
per tensor, or per channel along ``spec.axis`` (for activations of shape (batch, seq, hidden)
use ``axis=-1``).

- ``MinMaxObserver``: the extreme values seen. Never clips; one outlier stretches the grid.
- ``MovingAverageMinMaxObserver``: lo <- lo + c * (batch_lo - lo); smooths batch-to-batch jitter.
- ``PercentileObserver``: the p-th and (100-p)-th percentiles (mean over batches); clips the tails.
- ``MSEObserver``: the clipping range alpha * [lo, hi] that minimises the quantization MSE
  on the values seen, alpha searched on a grid.
- ``HistogramObserver``: the threshold that minimises KL(P || Q) between the histogram of
  |x| and its quantized version (the entropy calibration of TensorRT).

MSE and histogram observers keep a bounded random sample of the values (``max_samples``).
"""

from __future__ import annotations

import math

import torch

from toolkit.quant.affine import as_rows, check_tensor, fake_quantize, qparams_from_range
from toolkit.quant.spec import QuantSpec


class Observer:
    """Base class: accumulate per-row statistics over calibration batches."""

    def __init__(self, spec: QuantSpec):
        if spec.granularity not in ("tensor", "channel"):
            raise ValueError(f"observers support granularity 'tensor' or 'channel'; got {spec.granularity!r} (groups are for weights, which need no observer)")
        if spec.binary:
            raise ValueError("binary (bits=1) scales come from mean(|x|), not from an observed range")
        self.spec = spec
        self.batches = 0
        self._param_shape: tuple[int, ...] | None = None

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x)
        rows, _, shape = as_rows(x.detach().float(), self.spec)  # (n_rows, row_len)
        if self._param_shape is not None and shape != self._param_shape:
            raise ValueError(f"observed tensors must keep the same channels: got {shape}, earlier {self._param_shape}")
        self._param_shape = shape
        return rows

    def observe(self, x: torch.Tensor) -> None:
        self._update(self._rows(x))
        self.batches += 1

    def _update(self, rows: torch.Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi), each of the parameter shape: () per tensor, (C,) per channel."""
        if self.batches == 0:
            raise RuntimeError(f"{type(self).__name__} has observed nothing: call observe() on calibration batches first")
        lo, hi = self._range()
        return lo.reshape(self._param_shape), hi.reshape(self._param_shape)

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero-point for the observed range (see ``qparams_from_range``)."""
        lo, hi = self.range()
        return qparams_from_range(lo, hi, self.spec)


class MinMaxObserver(Observer):
    def __init__(self, spec: QuantSpec):
        super().__init__(spec)
        self.lo = self.hi = None

    def _update(self, rows):
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)  # (n_rows,)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def _range(self):
        return self.lo, self.hi


class MovingAverageMinMaxObserver(Observer):
    def __init__(self, spec: QuantSpec, averaging_constant: float = 0.01):
        super().__init__(spec)
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant must be in (0, 1]; got {averaging_constant!r}")
        self.c = averaging_constant
        self.lo = self.hi = None

    def _update(self, rows):
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo = self.lo + self.c * (lo - self.lo)
            self.hi = self.hi + self.c * (hi - self.hi)

    def _range(self):
        return self.lo, self.hi


class PercentileObserver(Observer):
    def __init__(self, spec: QuantSpec, percentile: float = 99.99):
        super().__init__(spec)
        if not 50 < percentile <= 100:
            raise ValueError(f"percentile must be in (50, 100]; got {percentile!r}")
        self.percentile = percentile
        self.lo_sum = self.hi_sum = 0.0

    def _update(self, rows):
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
        if rows.shape[1] > 2**24:  # torch.quantile's input limit: subsample
            rows = rows[:, torch.randperm(rows.shape[1])[: 2**24]]
        lo, hi = torch.quantile(rows, q, dim=1)  # each (n_rows,)
        self.lo_sum = self.lo_sum + lo
        self.hi_sum = self.hi_sum + hi

    def _range(self):
        return self.lo_sum / self.batches, self.hi_sum / self.batches


class _SamplingObserver(Observer):
    """Keeps min/max and up to ``max_samples`` random values per row."""

    def __init__(self, spec: QuantSpec, max_samples: int = 2**16, seed: int = 0):
        super().__init__(spec)
        self.max_samples = max_samples
        self.generator = torch.Generator().manual_seed(seed)
        self.sample = None
        self.lo = self.hi = None

    def _update(self, rows):
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        sample = rows if self.sample is None else torch.cat([self.sample, rows], dim=1)
        if sample.shape[1] > self.max_samples:
            keep = torch.randperm(sample.shape[1], generator=self.generator)[: self.max_samples]
            sample = sample[:, keep]
        self.sample = sample


class MSEObserver(_SamplingObserver):
    def __init__(self, spec: QuantSpec, grid: int = 80, max_samples: int = 2**16, seed: int = 0):
        super().__init__(spec, max_samples, seed)
        self.alphas = torch.linspace(1.0 / grid, 1.0, grid)

    def _range(self):
        best_err = torch.full_like(self.lo, math.inf)
        best_lo, best_hi = self.lo.clone(), self.hi.clone()
        row_spec = self.spec.with_(granularity="channel", axis=0)  # one (s, z) per row of the sample
        for alpha in self.alphas:
            lo, hi = self.lo * alpha, self.hi * alpha
            scale, zero_point = qparams_from_range(lo, hi, self.spec)
            x_hat = fake_quantize(self.sample, row_spec, scale, zero_point)
            err = ((x_hat - self.sample) ** 2).mean(dim=1)  # (n_rows,)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, lo, best_lo)
            best_hi = torch.where(better, hi, best_hi)
        return best_lo, best_hi


class HistogramObserver(_SamplingObserver):
    """Entropy calibration: minimise KL(P || Q) over thresholds of the |x| histogram."""

    def __init__(self, spec: QuantSpec, bins: int = 2048, max_samples: int = 2**18, seed: int = 0):
        super().__init__(spec, max_samples, seed)
        self.bins = bins

    def _threshold(self, values: torch.Tensor) -> float:
        levels = (self.spec.levels // 2) if self.spec.symmetric else self.spec.levels
        amax = float(values.abs().max())
        if amax == 0:
            return 0.0
        hist = torch.histc(values.abs().double(), bins=self.bins, min=0, max=amax)  # (bins,)
        edges = amax / self.bins
        best, best_kl = self.bins, math.inf
        for i in range(max(levels, 1), self.bins + 1, max(1, self.bins // 256)):
            p = hist[:i].clone()
            p[-1] += hist[i:].sum()  # clipped values land in the last kept bin
            # Q: the first i bins merged into `levels` buckets, spread back over the non-empty bins
            kept = hist[:i]
            bucket = torch.arange(i) * levels // i  # (i,) which bucket each bin falls in
            sums = torch.zeros(levels, dtype=kept.dtype).index_add_(0, bucket, kept)
            counts = torch.zeros(levels, dtype=kept.dtype).index_add_(0, bucket, (kept > 0).to(kept.dtype))
            q = torch.where(kept > 0, sums[bucket] / counts[bucket].clamp(min=1), torch.zeros_like(kept))
            p, q = p / p.sum(), q / q.sum().clamp(min=1e-12)
            mask = p > 0
            kl = float((p[mask] * torch.log(p[mask] / q[mask].clamp(min=1e-12))).sum())
            if kl < best_kl:
                best, best_kl = i, kl
        return best * edges

    def _range(self):
        thresholds = torch.tensor([self._threshold(row) for row in self.sample])
        return torch.maximum(self.lo, -thresholds), torch.minimum(self.hi, thresholds)


OBSERVERS = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
    "histogram": HistogramObserver,
}


def make_observer(name: str, spec: QuantSpec, **options) -> Observer:
    """An observer by name: one of ``OBSERVERS``.

    Taught in: chapter 2, section 5 (Outliers, and choosing the range: calibration observers).
    """
    if name not in OBSERVERS:
        raise ValueError(f"observer {name!r} is not known; accepted: {', '.join(OBSERVERS)}")
    return OBSERVERS[name](spec, **options)
