"""Bit packing: store b-bit codes in b bits, so that bytes on disk are the true bytes.

An int8 tensor holding 4-bit codes still spends 8 bits per value. Packing shifts the codes
into shared bytes: two 4-bit codes per byte, four 2-bit codes, eight 1-bit codes. Codes are
first made non-negative (u = q - qmin), then value i of a byte occupies bits
[i * b, (i + 1) * b):

    byte = u[0] | u[1] << b | u[2] << 2b | ...        (b = 1, 2, 4 or 8)

Other widths (3, 5, 6, 7 bits) are written as a continuous bit stream, least significant
bit first, so n codes always take ceil(n * b / 8) bytes.
"""

from __future__ import annotations

import math

import torch


def packed_bytes(numel: int, bits: int) -> int:
    """Bytes that ``numel`` codes of ``bits`` bits occupy once packed: ceil(numel * bits / 8)."""
    return math.ceil(numel * bits / 8)


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 1 to 8; got {bits!r}")


def pack(codes: torch.Tensor, bits: int, qmin: int) -> torch.Tensor:
    """Pack integer codes in [qmin, qmin + 2**bits - 1] into a flat uint8 tensor.

    For binary codes (-1/+1) pass ``bits=1, qmin=-1``: -1 is stored as 0, +1 as 1.

    Taught in: chapter 2, section 4 (Bit levels: 8, 4, 2 and 1).
    """
    _check_bits(bits)
    flat = codes.reshape(-1).to(torch.int32)
    unsigned = (flat + 1) // 2 if (bits == 1 and qmin == -1) else flat - qmin  # (n,) in [0, 2**bits)
    if unsigned.numel() and (unsigned.min() < 0 or unsigned.max() >= 2**bits):
        raise ValueError(f"codes must lie in [{qmin}, {qmin + 2 ** bits - 1}] to be packed in {bits} bits")
    unsigned = unsigned.to(torch.uint8)
    if 8 % bits == 0:
        per_byte = 8 // bits
        pad = (-unsigned.numel()) % per_byte
        lanes = torch.nn.functional.pad(unsigned, (0, pad)).reshape(-1, per_byte)  # (n_bytes, per_byte)
        shifts = torch.arange(per_byte, dtype=torch.uint8) * bits
        return (lanes << shifts).sum(dim=1, dtype=torch.int32).to(torch.uint8)
    planes = (unsigned.unsqueeze(1) >> torch.arange(bits, dtype=torch.uint8)) & 1  # (n, bits), LSB first
    stream = planes.reshape(-1)
    stream = torch.nn.functional.pad(stream, (0, (-stream.numel()) % 8)).reshape(-1, 8)  # (n_bytes, 8)
    return (stream << torch.arange(8, dtype=torch.uint8)).sum(dim=1, dtype=torch.int32).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, qmin: int, numel: int) -> torch.Tensor:
    """Inverse of ``pack``: the first ``numel`` codes, as int16, flat.

    Taught in: chapter 2, section 4 (Bit levels: 8, 4, 2 and 1).
    """
    _check_bits(bits)
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be a uint8 tensor; got {packed.dtype}")
    if packed.numel() < packed_bytes(numel, bits):
        raise ValueError(f"packed holds {packed.numel()} bytes but {numel} codes of {bits} bits need {packed_bytes(numel, bits)}")
    if 8 % bits == 0:
        shifts = torch.arange(8 // bits, dtype=torch.uint8) * bits
        unsigned = ((packed.unsqueeze(1) >> shifts) & (2**bits - 1)).reshape(-1)[:numel]
    else:
        stream = ((packed.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(-1)
        planes = stream[: numel * bits].reshape(numel, bits).to(torch.int16)
        unsigned = (planes << torch.arange(bits, dtype=torch.int16)).sum(dim=1)
    unsigned = unsigned.to(torch.int16)
    return unsigned * 2 - 1 if (bits == 1 and qmin == -1) else unsigned + qmin
