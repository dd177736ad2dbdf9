"""Rounding to integer grids and to narrow floating formats, with saturation counts.

Rounding modes: 0 nearest (ties to even), 1 stochastic, 2 truncate (toward zero). Stochastic
rounding draws u ~ U[0, 1) from a counter-based generator: element i of a call with ``seed`` uses
``uniform01(seed, i)``, so results depend only on (seed, i) and never on threads or call order.
"""

import math

import numpy as np
from numba import njit

NEAREST, STOCHASTIC, TRUNCATE = 0, 1, 2

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_M53 = 1.0 / 9007199254740992.0


@njit(cache=True, inline="always")
def uniform01(seed, i):
    """SplitMix64 of (seed, i) -> a float64 in [0, 1) with 53 random bits."""
    z = np.uint64(seed) + (np.uint64(i) + np.uint64(1)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * _TWO_POW_M53


@njit(cache=True, inline="always")
def _round(v, mode, seed, i):
    if mode == NEAREST:
        return np.rint(v)
    if mode == STOCHASTIC:
        return math.floor(v + uniform01(seed, i))
    return math.trunc(v)


@njit(cache=True)
def quantize_to_grid(x, inv_scale, inner, qmin, qmax, mode, seed):
    """Integer grid values round(x * inv_scale[g]) clipped to [qmin, qmax], as float32.

    ``x`` is flat; element i belongs to scale group ``(i // inner) % inv_scale.size`` (a tensor
    axis with ``inner`` elements after it). Returns (values, number of clipped elements).
    """
    out = np.empty(x.size, np.float32)
    saturated = quantize_to_grid_part(x, inv_scale, inner, qmin, qmax, mode, seed, out, 0, x.size)
    return out, saturated


@njit(cache=True, nogil=True)
def quantize_to_grid_part(x, inv_scale, inner, qmin, qmax, mode, seed, out, start, end):
    """Elements ``start`` to ``end`` (exclusive) of :func:`quantize_to_grid` into ``out``; returns
    how many of them were clipped. Element i draws ``uniform01(seed, i)`` whatever the range, so
    any split gives the same values."""
    groups = inv_scale.size
    saturated = 0
    i = start
    while i < end:
        factor = inv_scale[(i // inner) % groups]
        stop = min(end, (i // inner + 1) * inner)  # the end of this run of one scale group
        # a loop over slices indexed from 0 without branches on the values: vector selects (the
        # mode is the same for every element, so the compiler takes its test out of the loop)
        source, target = x[i:stop], out[i:stop]
        for j in range(stop - i):
            r = _round(np.float64(source[j]) * factor, mode, seed, i + j)
            saturated += (r > qmax) + (r < qmin)
            target[j] = qmax if r > qmax else (qmin if r < qmin else r)  # NaN stays NaN
        i = stop
    return saturated


@njit(cache=True, nogil=True)
def magnitude_bits_part(bits, out, start, end):
    """Rows ``start`` to ``end`` of ``bits`` (rows, n), float32 values viewed as uint32: ``out[row]``
    = the largest of a row's values with the sign bit cleared. Clearing the sign orders float32
    magnitudes as unsigned integers, so this is the bit pattern of max |x| (a NaN pattern if the row
    holds a NaN, +0 for zeros), in one pass that vectorises: integer maxima need no NaN handling."""
    for row in range(start, end):
        values = bits[row]
        top = np.uint32(0)
        for i in range(values.size):
            m = values[i] & np.uint32(0x7FFFFFFF)
            top = m if m > top else top
        out[row] = top


@njit(cache=True)
def round_to_float_format(x, mantissa_bits, min_exponent, max_value, mode, seed):
    """Round to a float format with ``mantissa_bits`` stored bits, smallest normal exponent
    ``min_exponent`` (subnormals below it) and largest finite ``max_value``; larger magnitudes
    (and infinities) saturate to ``max_value`` and are counted. Returns (values, saturated)."""
    out = np.empty(x.size, np.float32)
    saturated = 0
    for i in range(x.size):
        v = np.float64(x[i])
        if v == 0.0 or v != v:
            out[i] = v
            continue
        a = abs(v)
        if a > max_value:
            out[i] = math.copysign(max_value, v)
            saturated += 1
            continue
        _, e = math.frexp(a)  # a = m * 2**e with m in [0.5, 1): leading bit 2**(e - 1)
        ulp = math.ldexp(1.0, max(e - 1, min_exponent) - mantissa_bits)
        y = _round(a / ulp, mode, seed, i) * ulp
        if y > max_value:
            y = max_value
            saturated += 1
        out[i] = math.copysign(y, v)
    return out, saturated
