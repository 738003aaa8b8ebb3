"""What a quantization scheme is: a small, validated description shared by every chapter.

A ``QuantSpec`` answers five questions:

- **bits**: how many bits per integer code (1-8). 1 bit means *binary*: sign(x) times a scale.
- **signed / symmetric**: the integer range, and whether real 0 sits in the middle of it
  (symmetric, zero_point = 0 for signed codes) or anywhere (asymmetric, any zero_point).
- **granularity**: one scale for the whole tensor, one per channel along ``axis``, or one
  per group of ``group_size`` consecutive values along the last (input) dimension.
- **rounding**: to nearest (ties to even, like ``torch.round``) or stochastic.
- **restricted range**: signed codes in [-(2^(b-1) - 1), 2^(b-1) - 1] instead of
  [-2^(b-1), 2^(b-1) - 1], so that the range is symmetric ([-127, 127] for 8 bits).

For comparison, ``QuantSpec(bits=16, float_format="bfloat16")`` (or ``"float16"``) describes
a plain 16-bit float cast: no scale, no zero-point, per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from toolkit.runtime import check_int

GRANULARITIES = ("tensor", "channel", "group")
FLOAT_FORMATS = ("float16", "bfloat16")
ROUNDINGS = ("nearest", "stochastic")


@dataclass(frozen=True)
class QuantSpec:
    """Taught in: chapter 2, section 1 (From real numbers to integer codes).

    Taught in: chapter 2, section 1 (From real numbers to integer codes).
    """
    bits: int = 8
    signed: bool = True
    symmetric: bool = True
    granularity: str = "tensor"
    axis: int = 0  # the channel axis for granularity="channel"
    group_size: int | None = None  # values per group along the last dim for granularity="group"
    rounding: str = "nearest"
    restricted_range: bool = False
    float_format: str | None = None  # "float16" or "bfloat16" with bits=16: a cast, for comparison

    def __post_init__(self):
        if self.float_format is not None or self.bits == 16:
            if self.float_format not in FLOAT_FORMATS or self.bits != 16:
                raise ValueError(
                    f"16-bit float specs need bits=16 and float_format in {', '.join(FLOAT_FORMATS)}; "
                    f"got bits={self.bits!r}, float_format={self.float_format!r}"
                )
            if self.granularity != "tensor":
                raise ValueError("a 16-bit float cast has no scales: use granularity='tensor'")
            return
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be an integer from 1 to 8 (or 16 with float_format); got {self.bits!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}; got {self.granularity!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}; got {self.rounding!r}")
        if self.granularity == "group":
            check_int("group_size", self.group_size, detail=" when granularity='group'")
        elif self.group_size is not None:
            raise ValueError(f"group_size is only used with granularity='group'; got group_size={self.group_size!r} with granularity={self.granularity!r}")
        if not isinstance(self.axis, int):
            raise ValueError(f"axis must be an integer; got {self.axis!r}")
        if self.bits == 1 and not (self.signed and self.symmetric):
            raise ValueError("bits=1 means binary codes (sign times a scale): use signed=True, symmetric=True")
        if self.bits == 1 and self.restricted_range:
            raise ValueError("restricted_range does not apply to bits=1 (binary codes are -1 and +1)")

    @property
    def binary(self) -> bool:
        return self.bits == 1

    @property
    def is_float(self) -> bool:
        """A 16-bit float cast rather than integer codes."""
        return self.float_format is not None

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.float_format) if self.is_float else None

    @property
    def qmin(self) -> int:
        """Smallest integer code. Binary codes are -1 and +1 (stored as bits 0 and 1)."""
        if self.binary:
            return -1
        if not self.signed:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.restricted_range else 0)

    @property
    def qmax(self) -> int:
        """Largest integer code."""
        if self.binary:
            return 1
        return 2**self.bits - 1 if not self.signed else 2 ** (self.bits - 1) - 1

    @property
    def levels(self) -> int:
        """How many distinct values a code can take."""
        return 2 if self.binary else self.qmax - self.qmin + 1

    def with_(self, **changes) -> "QuantSpec":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def describe(self) -> str:
        if self.is_float:
            return f"{self.float_format} cast (16 bits, no scale)"
        kind = "binary" if self.binary else f"int{self.bits}" if self.signed else f"uint{self.bits}"
        where = {"tensor": "per tensor", "channel": f"per channel (axis {self.axis})", "group": f"per group of {self.group_size}"}[self.granularity]
        mode = "symmetric" if self.symmetric else "asymmetric"
        return f"{kind} [{self.qmin}, {self.qmax}] {mode} {where}, round to {self.rounding}"
