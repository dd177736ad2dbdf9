"""Quantize float32 arrays to a :class:`NumberFormat` (integer grid with a scale, or a narrow float).

Integer formats (``intN``) use a dynamic, range-based scale: ``scale = range / (2**(N-1) - 1)``
with ``range = max|x|`` over a group (symmetric grid, no zero point). Groups:
``tensor`` (one scale), ``channel`` / ``sample`` (one per index of ``axis``), ``batch_mean``
(Banner et al. 2018: the mean over samples of each sample's max|x|, one scale; values beyond it
saturate). Static ``qM.N`` formats use ``scale = 2**-N``. Float formats round each value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from e2sim.config.formats import NumberFormat
from e2sim.kernels.quantize import (
    NEAREST,
    STOCHASTIC,
    TRUNCATE,
    magnitude_bits_part,
    quantize_to_grid,
    quantize_to_grid_part,
    round_to_float_format,
)
from e2sim.process import PARALLEL_ELEMENTS, in_parallel, kernel_threads, split

ROUNDING_MODES = {"nearest": NEAREST, "stochastic": STOCHASTIC, "truncate": TRUNCATE}
GRANULARITIES = ("tensor", "channel", "sample", "batch_mean")


@dataclass(frozen=True)
class Quantized:
    """``values`` (float32) are integer grid values when ``scale`` is set, real numbers otherwise;
    ``scale`` broadcasts against ``values``. ``saturated`` counts elements clipped to the range."""

    values: np.ndarray
    scale: np.ndarray | None
    saturated: int
    bits: int
    grid_bound: float = 0.0  # integer formats: the largest magnitude the grid allows

    @property
    def is_integer(self) -> bool:
        return self.scale is not None

    def dequantize(self) -> np.ndarray:
        return self.values if self.scale is None else (self.values * self.scale).astype(np.float32)

    def bound(self) -> float:
        """A bound on |values|: the grid's range for integer formats, the actual maximum otherwise."""
        if self.is_integer:
            return self.grid_bound
        return float(np.max(np.abs(self.values))) if self.values.size else 0.0


def float_format_limits(fmt: NumberFormat) -> tuple[int, float]:
    """(smallest normal exponent, largest finite value) of a float format.

    IEEE-like formats reserve the top exponent for inf/NaN; fp8_e4m3 follows the OCP "E4M3FN"
    convention (no infinities, only mantissa all-ones at the top exponent is NaN: max 448).
    """
    bias = 2 ** (fmt.exponent_bits - 1) - 1
    if fmt.name == "fp8_e4m3":
        return 1 - bias, 448.0
    top = 2**fmt.exponent_bits - 2 - bias
    return 1 - bias, (2.0 - 2.0**-fmt.mantissa_bits) * 2.0**top


def quantize(
    x: np.ndarray,
    fmt: NumberFormat,
    rounding: str = "nearest",
    granularity: str = "tensor",
    axis: int = 0,
    seed: int = 0,
) -> Quantized:
    """Quantize float32 ``x``; ``axis`` is the axis of a ``channel``/``sample`` scale."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    mode = ROUNDING_MODES[rounding]
    if fmt.kind == "float":
        if fmt.bits == 32 and fmt.exponent_bits == 8:
            return Quantized(x, None, 0, 32)
        min_exponent, max_value = float_format_limits(fmt)
        values, saturated = round_to_float_format(
            x.ravel(), fmt.mantissa_bits, min_exponent, max_value, mode, np.uint64(seed)
        )
        return Quantized(values.reshape(x.shape), None, int(saturated), fmt.bits)
    if fmt.kind == "fixed":
        scale = np.full(1, 2.0**-fmt.fraction_bits)
        qmax = 2 ** (fmt.bits - 1) - 1
        qmin, shape = -qmax - 1, (1,) * x.ndim
        inner = x.size
    else:
        qmax = 2 ** (fmt.bits - 1) - 1
        qmin = -qmax
        scale, shape, inner = _dynamic_scale(x, qmax, granularity, axis)
    values, saturated = _to_grid(x.ravel(), 1.0 / scale, max(inner, 1), float(qmin), float(qmax), mode,
                                 np.uint64(seed))  # fmt: skip
    scale = scale.reshape(shape).astype(np.float32)
    return Quantized(values.reshape(x.shape), scale, int(saturated), fmt.bits, float(max(-qmin, qmax)))


def _to_grid(flat, inv_scale, inner, qmin, qmax, mode, seed) -> tuple[np.ndarray, int]:
    """``quantize_to_grid``, split into contiguous ranges over the kernel threads when large (each
    element's rounding depends only on its index, so the split changes no value)."""
    parts = split(flat.size, kernel_threads(), PARALLEL_ELEMENTS // 2) if flat.size >= PARALLEL_ELEMENTS else []
    if len(parts) <= 1:
        return quantize_to_grid(flat, inv_scale, inner, qmin, qmax, mode, seed)
    out = np.empty(flat.size, np.float32)
    counts = in_parallel([lambda lo=lo, hi=hi: quantize_to_grid_part(flat, inv_scale, inner, qmin, qmax, mode, seed,
                                                                      out, lo, hi) for lo, hi in parts])  # fmt: skip
    return out, sum(counts)


def _largest_magnitude(x: np.ndarray, axis):
    """max |x| over ``axis``, exactly (NaN propagates as through abs). Over the whole of a
    contiguous float32 ``x``, or over all but its first axis: one pass over the values' bits
    (``magnitude_bits_part``, on this thread: handing 2M values to the kernel threads costs more
    than it saves; for a few values too, where it takes a third of the time of two reductions);
    otherwise max(max x, −min x), two reductions and no |x| copy. The two can differ in a NaN's
    payload and a zero's sign, which no scale depends on (see ``_dynamic_scale``)."""
    per_first = x.ndim > 1 and axis == tuple(range(1, x.ndim))
    if not (axis is None or per_first) or x.dtype != np.float32 or not x.flags.c_contiguous:
        return np.maximum(x.max(axis=axis), -x.min(axis=axis))
    rows = x.shape[0] if per_first else 1
    out = np.empty(rows, np.uint32)
    magnitude_bits_part(x.view(np.uint32).reshape(rows, -1), out, 0, rows)
    magnitudes = out.view(np.float32)
    return magnitudes if per_first else magnitudes[0]


def _dynamic_scale(x: np.ndarray, qmax: int, granularity: str, axis: int) -> tuple[np.ndarray, tuple, int]:
    """Per-group scale (float64), its broadcast shape, and the element count after ``axis``."""
    if granularity in ("channel", "sample") and x.ndim > 0:
        others = tuple(i for i in range(x.ndim) if i != axis)
        ranges = _largest_magnitude(x, others) if x.size else np.zeros(x.shape[axis])
        shape = tuple(x.shape[axis] if i == axis else 1 for i in range(x.ndim))
        inner = int(np.prod(x.shape[axis + 1 :]))
        ranges = ranges.astype(np.float64)
        return np.where(ranges > 0, ranges / qmax, 1.0), shape, inner
    if granularity == "batch_mean" and x.ndim > 1 and x.size:
        largest = float(_largest_magnitude(x.reshape(x.shape[0], -1), (1,)).mean())
    else:
        largest = float(_largest_magnitude(x, None)) if x.size else 0.0
    # one scale: the same float64 arithmetic on a Python float (a third of the time of array operations)
    return np.array([largest / qmax if largest > 0 else 1.0]), (1,) * x.ndim, x.size


def saturate_accumulator(acc: np.ndarray, fmt: NumberFormat, bound: float) -> tuple[np.ndarray, int]:
    """Clip exact integer sums to an ``intN`` accumulator; returns (values, number clipped).
    ``bound`` is a bound on |acc| known from the operands: below the range nothing is scanned."""
    if not fmt.is_integer:
        return acc, 0
    top = 2.0 ** (fmt.bits - 1)
    if bound < top:
        return acc, 0
    clipped = int(np.count_nonzero((acc > top - 1) | (acc < -top)))
    return (np.clip(acc, -top, top - 1) if clipped else acc), clipped


FLOAT32_EXACT = 2.0**24  # every integer of magnitude up to this is exact in float32


def exact_integer_matmul(a: np.ndarray, b: np.ndarray, bound_a: float, bound_b: float, out=None) -> np.ndarray:
    """``a @ b`` for integer-valued float arrays, exactly.

    When no sum can reach 2**24 a single float32 GEMM is exact and its float32 result is returned
    (into ``out`` if given). Otherwise the reduction is cut into chunks whose partial sums stay
    exact in float32 (or float64 for wide operands) and the chunks add up in float64.
    """
    k = a.shape[1]
    per_term = bound_a * bound_b
    if per_term * k < FLOAT32_EXACT:
        return np.matmul(a.astype(np.float32, copy=False), b.astype(np.float32, copy=False), out=out)
    total = np.zeros((a.shape[0], b.shape[1]), np.float64)
    chunk = int(FLOAT32_EXACT // per_term)
    dtype = np.float32
    if chunk < min(k, 64):
        chunk, dtype = int(2**53 // per_term), np.float64
        if chunk < 1:
            raise OverflowError("integer operands too wide for an exact float64 product")
    a = a.astype(dtype, copy=False)
    b = b.astype(dtype, copy=False)
    for start in range(0, k, chunk):
        total += a[:, start : start + chunk] @ b[start : start + chunk]
    return total


