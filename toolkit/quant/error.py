"""How far a quantized tensor is from the original.

    MSE        = mean((x - x_hat)^2)
    max error  = max(|x - x_hat|)
    SQNR (dB)  = 10 * log10( sum(x^2) / sum((x - x_hat)^2) )

SQNR (signal-to-quantization-noise ratio) is the one to compare across tensors and bit
widths: for a uniform quantizer each extra bit halves the step and adds about 6.02 dB.
"""

from __future__ import annotations

import math

import torch


def _pair(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape; got {tuple(x.shape)} and {tuple(x_hat.shape)}")
    return x.double(), x_hat.double()


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    x, x_hat = _pair(x, x_hat)
    return float(((x - x_hat) ** 2).mean())


def max_error(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    x, x_hat = _pair(x, x_hat)
    return float((x - x_hat).abs().max())


def sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in decibels (inf when x_hat equals x).

    Taught in: chapter 2, section 2 (Symmetric or asymmetric?).
    """
    x, x_hat = _pair(x, x_hat)
    noise = float(((x - x_hat) ** 2).sum())
    signal = float((x**2).sum())
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf
