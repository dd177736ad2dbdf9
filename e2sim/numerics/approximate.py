"""GEMMs on an accelerator's approximate mode: operands read with bit errors from near-threshold
buffers, products from the approximate multiplier, sums exact (int64)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from e2sim.hw.approximate import ApproximateMode, MultiplierSpec
from e2sim.kernels import approx as approx_kernels
from e2sim.numerics.quantize import Quantized, exact_integer_matmul

KIND_CODES = {"exact": approx_kernels.EXACT, "truncation": approx_kernels.TRUNCATION,
              "drum": approx_kernels.DRUM, "mitchell": approx_kernels.MITCHELL, "table": -1}  # fmt: skip
LUT_MAX_BITS = 8  # products by table look-up for operands up to 8 bits (a 257 x 257 table)


def table_shortfall(multiplier: MultiplierSpec, bits: int) -> str | None:
    """Why ``multiplier``'s product table cannot serve ``bits``-wide operands (None if it can,
    or if the multiplier is not a table)."""
    table = multiplier.table
    magnitudes = (1 << (bits - 1)) + 1
    if table is None or (bits <= LUT_MAX_BITS and table.shape[0] >= magnitudes):
        return None
    return (f"{multiplier.table_file} has {table.shape[0]} rows; {bits}-bit operands need {magnitudes} "
            f"(magnitudes 0..{magnitudes - 1}), and tables cover at most {LUT_MAX_BITS}-bit operands")  # fmt: skip


@dataclass
class BitErrorStats:
    """Bits read from near-threshold buffers by approximate-mode ops, and how many read flipped."""

    bits_read: int = 0
    bits_flipped: int = 0

    @property
    def observed_rate(self) -> float:
        return self.bits_flipped / self.bits_read if self.bits_read else 0.0

    def as_dict(self) -> dict:
        return {"bits_read": self.bits_read, "bits_flipped": self.bits_flipped, "observed_rate": self.observed_rate}


def flip_bits(values: np.ndarray, bits: int, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Each bit of the ``bits``-wide two's-complement words ``values`` (integer-valued floats)
    flips independently with probability ``rate``: a binomial number of flips at distinct,
    uniformly drawn bit positions. Returns (values after the flips, float32; number of flips)."""
    total = values.size * bits
    flips = int(rng.binomial(total, rate)) if rate > 0 and total else 0
    if flips == 0:
        return values, 0
    positions = rng.choice(total, flips, replace=False)
    words = values.reshape(-1).astype(np.int64) & ((1 << bits) - 1)
    np.bitwise_xor.at(words, positions // bits, np.left_shift(1, positions % bits))
    words = np.where(words >= 1 << (bits - 1), words - (1 << bits), words)
    return words.astype(np.float32).reshape(values.shape), flips


@dataclass
class ApproxDatapath:
    """What forward conv/linear ops compute with in the approximate mode; keeps bit-error counts."""

    mode: ApproximateMode
    stats: BitErrorStats = field(default_factory=BitErrorStats)
    _tables: dict = field(default_factory=dict, repr=False)

    def read_operand(self, q: Quantized, role: str, rng: np.random.Generator) -> np.ndarray:
        """The integer values of ``q`` (``weights`` or ``activations``) as read from a buffer at the
        mode's supply voltage (with bit errors if the mode puts that role in near-threshold buffers)."""
        if not q.is_integer:
            raise ValueError("the approximate mode computes on integer (intN) operands only")
        if role not in self.mode.bit_errors_on:
            return q.values
        values, flips = flip_bits(q.values, q.bits, self.mode.bit_error_rate, rng)
        self.stats.bits_read += q.values.size * q.bits
        self.stats.bits_flipped += flips
        return values

    def matmul(self, a: np.ndarray, b: np.ndarray, a_bits: int, b_bits: int) -> np.ndarray:
        """Σ_k approx(a[i,k]·b[k,j]) for integer-valued float32 matrices of those widths."""
        multiplier = self.mode.multiplier
        kind = KIND_CODES[multiplier.kind]
        bound_a, bound_b = float(1 << (a_bits - 1)), float(1 << (b_bits - 1))
        if multiplier.kind == "exact":
            return exact_integer_matmul(a, b, bound_a, bound_b)
        if multiplier.kind in ("truncation", "drum"):
            param = multiplier.dropped_bits or multiplier.kept_bits
            a = approx_kernels.transform_operands(np.ascontiguousarray(a), kind, param)
            b = approx_kernels.transform_operands(np.ascontiguousarray(b), kind, param)
            return exact_integer_matmul(a, b, bound_a, bound_b)
        bits = max(a_bits, b_bits)
        if bits > LUT_MAX_BITS:
            if multiplier.kind == "mitchell":
                return approx_kernels.mitchell_matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))
            raise ValueError(f"a product table covers operands up to {LUT_MAX_BITS} bits, not {bits}")
        return approx_kernels.lut_matmul(np.ascontiguousarray(a), np.ascontiguousarray(b), self.table(bits))

    def table(self, bits: int) -> np.ndarray:
        """The signed product table for ``bits``-wide operands (magnitudes up to 2^(bits-1))."""
        if bits not in self._tables:
            multiplier = self.mode.multiplier
            magnitudes = (1 << (bits - 1)) + 1
            shortfall = table_shortfall(multiplier, bits)
            if shortfall is not None:
                raise ValueError(shortfall)
            given = multiplier.table if multiplier.table is not None else np.zeros((1, 1), np.int64)
            self._tables[bits] = approx_kernels.signed_product_table(
                magnitudes, KIND_CODES[multiplier.kind], 0, np.ascontiguousarray(given, np.int64)
            )
        return self._tables[bits]
