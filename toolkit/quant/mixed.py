"""Mixed precision: every layer gets its own bit width, chosen to fit a byte budget.

A uniform scheme gives every layer the same bits. But layers differ in how much damage their
quantization does (chapter 5's sensitivity scan), so a better use of a byte budget B is:

    choose one spec s_i for every layer i  to minimise  Σ_i damage_i(s_i)
    subject to                                          Σ_i bytes_i(s_i) ≤ B

``bytes_i(s)`` is the true stored size of layer i's weight at spec s (packed codes plus scales,
as ``storage.stored_bytes`` counts them), and ``damage_i(s)`` an estimate of what quantizing
only layer i costs (here: the KL divergence of the logits against the float model, measured one
layer at a time). Treating damages as additive is the assumption that makes this a
multiple-choice knapsack, solved exactly by ``sensitivity.allocate_bits``.

``quantize_mixed`` then builds the model: a copy with each named layer quantized at its own
spec, which ``fileformat.save_quantized`` writes as one file (each layer records its spec).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from toolkit import layers
from toolkit.quant.affine import fake_quantize
from toolkit.quant.modules import QuantEmbedding, QuantLinear
from toolkit.layers import swap_modules
from toolkit.quant.ptq import choose_modules, quantizable
from toolkit.quant.sensitivity import LayerSensitivity, allocate_bits
from toolkit.quant.spec import QuantSpec
from toolkit.quant.storage import stored_bytes


def _check_layers(model: torch.nn.Module, names: Sequence[str]) -> dict[str, str]:
    kinds = quantizable(model)
    choose_modules(kinds, names, (), "Linear or Embedding layers")  # unknown names: an error listing accepted ones
    return kinds


def _check_specs(specs: Sequence[QuantSpec], what: str = "specs") -> None:
    if not specs:
        raise ValueError(f"{what} must hold at least one integer QuantSpec (bits 1-8); got none")
    for spec in specs:
        if not isinstance(spec, QuantSpec) or spec.is_float:
            raise ValueError(f"{what} must be integer QuantSpecs (bits 1-8); got {spec!r}")


def layer_bytes(model: torch.nn.Module, layer_names: Sequence[str], specs: Sequence[QuantSpec],
                scale_bytes: int = 4) -> list[list[int]]:
    """Stored bytes of each layer's weight at each spec: ``result[i][j]`` for layer i at ``specs[j]`` (codes + scales
    + zero-points; ``scale_bytes`` 4 for float32 scales, 2 for float16, as ``fileformat.save_quantized`` writes them).

    Taught in: chapter 5, section 5 (Mixed precision under a byte budget).
    """
    _check_layers(model, layer_names)
    _check_specs(specs)
    if scale_bytes not in (2, 4):
        raise ValueError(f"scale_bytes must be 2 (float16 scales) or 4 (float32); got {scale_bytes!r}")
    modules = dict(model.named_modules())
    return [[sum(stored_bytes(modules[name].weight, spec, scale_bytes).values()) for spec in specs] for name in layer_names]


@dataclass(frozen=True)
class Allocation:
    """One spec per layer and what it costs: the answer of ``allocate``."""

    specs: dict[str, QuantSpec]    # layer name -> its spec
    weight_bytes: int              # Σ bytes_i(s_i): the quantized weights' stored bytes
    damage: float                  # Σ damage_i(s_i), the objective the knapsack minimised
    numel: int                     # weights covered
    average_bits: float            # code bits per weight, Σ n_i b_i / Σ n_i (scales not counted)


def allocate(model: torch.nn.Module, layer_names: Sequence[str], specs: Sequence[QuantSpec],
             damages: Sequence[Sequence[float]], budget_bytes: int, granularity: int = 4096,
             scale_bytes: int = 4) -> Allocation:
    """Choose a spec from ``specs`` for every layer to minimise the summed ``damages`` (``damages[i][j]``: layer i at
    ``specs[j]``) with the layers' stored weight bytes (scales of ``scale_bytes``) at most ``budget_bytes``; exact
    knapsack in units of ``granularity`` bytes (each cost rounded up, so the result never exceeds the budget).

    Taught in: chapter 5, section 5 (Mixed precision under a byte budget).
    """
    costs = layer_bytes(model, layer_names, specs, scale_bytes)
    if len(damages) != len(layer_names) or any(len(row) != len(specs) for row in damages):
        raise ValueError(f"damages must be a {len(layer_names)} x {len(specs)} table (layers x specs); got "
                         f"{len(damages)} rows of lengths {sorted({len(r) for r in damages})}")
    try:
        chosen = allocate_bits(costs, damages, budget_bytes, granularity)
    except ValueError as error:
        smallest = sum(min(row) for row in costs)
        raise ValueError(f"budget_bytes={budget_bytes:,} cannot hold these layers: at the smallest spec each they take "
                         f"{smallest:,} bytes ({error})") from None
    modules = dict(model.named_modules())
    numel = sum(modules[n].weight.numel() for n in layer_names)
    bits = sum(modules[n].weight.numel() * specs[j].bits for n, j in zip(layer_names, chosen)) / numel
    return Allocation(
        specs={n: specs[j] for n, j in zip(layer_names, chosen)},
        weight_bytes=sum(costs[i][j] for i, j in enumerate(chosen)),
        damage=float(sum(damages[i][j] for i, j in enumerate(chosen))),
        numel=numel,
        average_bits=bits,
    )


def estimate_damages(model: torch.nn.Module, scan: Sequence[LayerSensitivity], scan_specs: Sequence[QuantSpec],
                     options: Sequence[QuantSpec]) -> tuple[list[str], list[list[float]]]:
    """The damage table for ``allocate``: (layer names, ``damages[i][j]`` for layer i at ``options[j]``).

    A scanned option keeps its measured KL. Any other option takes the KL scanned at its bit width (the
    widest scanned spec for wider options, the narrowest scanned one at or above it otherwise), from the
    scanned specs with the same granularity and group size where there are any, times the ratio of the
    weight's squared quantization errors,

        d_i(o) = KL_i(s) · ||Q_o(W_i) - W_i||² / ||Q_s(W_i) - W_i||²

    because to first order the KL grows with error power (``sensitivity.predicted_damage``).

    Taught in: chapter 5, section 5 (Mixed precision under a byte budget).
    """
    _check_specs(scan_specs, "scan_specs")
    _check_specs(options, "options")
    layer_names = list(dict.fromkeys(r.layer for r in scan))
    _check_layers(model, layer_names)
    measured = {(r.layer, r.spec): r.kl for r in scan}  # (layer, spec.describe()) -> KL
    missing = [(n, s.describe()) for n in layer_names for s in scan_specs if (n, s.describe()) not in measured]
    if missing:
        raise ValueError(f"scan has no result for {missing[:3]}: give the scan_specs the scan was run with")
    modules = dict(model.named_modules())

    def nearest_scanned(option):
        alike = [s for s in scan_specs if (s.granularity, s.group_size) == (option.granularity, option.group_size)]
        by_bits = sorted(alike or scan_specs, key=lambda s: s.bits)
        return next((s for s in by_bits if s.bits >= option.bits), by_bits[-1])

    def error_power(name, spec):
        w = modules[name].weight.detach().float()
        return float((fake_quantize(w, spec) - w).pow(2).sum())

    damages = []
    for name in layer_names:
        row = []
        for option in options:
            scanned = nearest_scanned(option)
            kl = measured[name, scanned.describe()]
            row.append(kl if option == scanned else kl * error_power(name, option) / max(error_power(name, scanned), 1e-30))
        damages.append(row)
    return layer_names, damages


def uniform(layer_names: Sequence[str], spec: QuantSpec) -> dict[str, QuantSpec]:
    """The same spec for every layer (the baseline a mixed allocation is compared with).

    Taught in: chapter 5, section 3 (How error travels through the blocks (optional)).
    """
    return {name: spec for name in layer_names}


def quantize_mixed(model: torch.nn.Module, specs: Mapping[str, QuantSpec]) -> torch.nn.Module:
    """A copy of ``model`` with each layer named in ``specs`` quantized (weights only) at its own spec; every other
    layer stays float. ``model`` is not changed.

    Taught in: chapter 5, section 3 (How error travels through the blocks (optional)).
    """
    if not specs:
        raise ValueError("specs is empty: name at least one layer and its QuantSpec")
    kinds = _check_layers(model, list(specs))
    _check_specs(list(specs.values()), "the values of specs")

    def build(name, module):
        if name not in specs:
            return None
        if kinds[name] == "linear":
            return QuantLinear.from_float(layers.as_linear(module), specs[name])
        return QuantEmbedding.from_float(module, specs[name])

    result, _ = swap_modules(model, build)
    return result.eval()
