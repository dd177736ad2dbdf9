"""The approximate operating mode of an accelerator (AxTrain's inference hardware): an approximate
multiplier in the PE array, a lowered supply voltage, and the bit-error rate of on-chip memories
at that voltage. Forward conv/linear ops that run in this mode compute with the multiplier on
operands read (with bit errors) from near-threshold buffers, and are priced with the approximate
multiply energy and V²-scaled on-chip dynamic energy."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

MULTIPLIERS = ("exact", "truncation", "drum", "mitchell", "table")
STORED_OPERANDS = ("weights", "activations")


@dataclass(frozen=True)
class MultiplierSpec:
    """``kind``: exact, truncation (drops ``dropped_bits`` low bits of each operand), drum (keeps
    ``kept_bits`` from each operand's leading one), mitchell (logarithmic), or table: the products
    of every operand-magnitude pair, read from ``table_file`` (CSV, row a, column b, |a|·|b| ≈
    table[a][b]) whose energy per multiply relative to the exact multiplier is ``energy_ratio``."""

    kind: str
    dropped_bits: int = 0
    kept_bits: int = 0
    table_file: str | None = None
    table_sha256: str | None = None
    energy_ratio: float | None = None  # table multipliers: energy / exact multiply of the same widths
    table: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        detail = {"truncation": f"-{self.dropped_bits}", "drum": f"-{self.kept_bits}"}.get(self.kind, "")
        return f"{self.kind}{detail}" + (f" ({self.table_file})" if self.table_file else "")


@dataclass(frozen=True)
class ApproximateMode:
    """``bit_error_rates``: (supply voltage V, probability that one stored bit reads flipped) points,
    interpolated log-linearly in the rate (linearly next to a zero rate). ``bit_errors_on``: the
    operands kept in the near-threshold buffers (weights by default, as in Stutz et al., MLSys
    2021; activations too if asked)."""

    multiplier: MultiplierSpec
    supply_voltage_v: float
    bit_error_rates: tuple[tuple[float, float], ...]
    bit_errors_on: tuple[str, ...] = ("weights",)

    @property
    def bit_error_rate(self) -> float:
        return interpolate_rate(self.bit_error_rates, self.supply_voltage_v)


def interpolate_rate(points: tuple[tuple[float, float], ...], voltage: float) -> float:
    """The bit-error rate at ``voltage`` from (voltage, rate) points sorted by voltage (clamped
    to the end points outside them)."""
    if not points:
        return 0.0
    if voltage <= points[0][0]:
        return points[0][1]
    for (v0, r0), (v1, r1) in itertools.pairwise(points):
        if voltage <= v1:
            t = (voltage - v0) / (v1 - v0)
            if r0 > 0 and r1 > 0:
                return math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0)))
            return r0 + t * (r1 - r0)
    return points[-1][1]
