"""Approximate integer multipliers (AxTrain's passive method runs training on them), bit-exact.

Signed operands are multiplied as sign × approx(|a|, |b|):
- truncation(t): drop the t least significant bits of each operand, (|a| >> t) << t;
- DRUM(k) (Hashemi et al., ICCAD 2015): keep k bits from each operand's leading one, set the lowest
  of them to 1 (unbiasing) and zero the rest; operands below 2^k stay exact;
- Mitchell (1962): log2 x ≈ k + f/2^k (k the leading one's position, f the remainder), add the
  logarithms, take the piecewise-linear antilog: 2^(ka+kb) + s if s < 2^(ka+kb), else 2·s, where
  s = fa·2^kb + fb·2^ka. All three are exact integer functions.
Truncation and DRUM approximate each operand on its own, so a GEMM of transformed operands is
exact BLAS work; Mitchell needs every product, done by ``mitchell_matmul`` or, for operands up to
8 bits, by ``lut_matmul`` on a table of every signed product (``signed_product_table``), which
also runs multipliers given as a table.
"""

import numpy as np
from numba import njit, prange

EXACT, TRUNCATION, DRUM, MITCHELL = 0, 1, 2, 3


@njit(cache=True, inline="always")
def _leading_one(x):
    """Position of the most significant set bit of x > 0."""
    k = 0
    while x >> (k + 1):
        k += 1
    return k


@njit(cache=True, inline="always")
def drum_operand(x, k):
    if x < (1 << k):
        return x
    shift = _leading_one(x) - k + 1
    return ((x >> shift) | 1) << shift


@njit(cache=True, inline="always")
def mitchell_magnitude(x, y):
    if x == 0 or y == 0:
        return 0
    kx, ky = _leading_one(x), _leading_one(y)
    s = (x - (1 << kx)) * (1 << ky) + (y - (1 << ky)) * (1 << kx)
    base = 1 << (kx + ky)
    return base + s if s < base else 2 * s


@njit(cache=True)
def approx_product(a, b, kind, param):
    """The approximate product of two signed integers (int64)."""
    negative = (a < 0) != (b < 0)
    x, y = abs(a), abs(b)
    if kind == TRUNCATION:
        p = ((x >> param) << param) * ((y >> param) << param)
    elif kind == DRUM:
        p = drum_operand(x, param) * drum_operand(y, param)
    elif kind == MITCHELL:
        p = mitchell_magnitude(x, y)
    else:
        p = x * y
    return -p if negative else p


@njit(cache=True)
def transform_operands(values, kind, param):
    """Operand-wise approximation (truncation, DRUM) of integer-valued float32 values, in place copy."""
    out = np.empty_like(values)
    for i in range(values.size):
        v = np.int64(values.flat[i])
        x = abs(v)
        if kind == TRUNCATION:
            x = (x >> param) << param
        elif kind == DRUM:
            x = drum_operand(x, param)
        out.flat[i] = -x if v < 0 else x
    return out


@njit(cache=True)
def mitchell_matmul(a, b):
    """Σ_k mitchell(a[i,k], b[k,j]) for integer-valued float32 matrices, as exact int64 sums."""
    m, kk = a.shape
    n = b.shape[1]
    ai = a.astype(np.int64)
    bt = b.T.astype(np.int64).copy()
    out = np.zeros((m, n), np.int64)
    for i in range(m):
        for j in range(n):
            total = 0
            for k in range(kk):
                total += approx_product(ai[i, k], bt[j, k], MITCHELL, 0)
            out[i, j] = total
    return out


@njit(cache=True)
def signed_product_table(magnitudes, kind, param, table):
    """T[a + m, b + m] = approximate a·b for a, b in [-m, m], m = ``magnitudes`` - 1 (int32):
    ``kind``'s product, or with ``kind`` < 0 sign·``table``[|a|, |b|] (a product table)."""
    m = magnitudes - 1
    out = np.empty((2 * m + 1, 2 * m + 1), np.int32)
    for a in range(-m, m + 1):
        for b in range(-m, m + 1):
            if kind < 0:
                p = table[abs(a), abs(b)]
                out[a + m, b + m] = -p if (a < 0) != (b < 0) else p
            else:
                out[a + m, b + m] = approx_product(a, b, kind, param)
    return out


@njit(parallel=True)
def lut_matmul(a, b, table):
    """Σ_k table[a[i,k] + m, b[k,j] + m] for integer-valued float32 matrices (m: the table's
    offset, its side = 2m + 1), as exact int64 sums; columns run in parallel."""
    m = (table.shape[0] - 1) // 2
    rows, kk = a.shape
    n = b.shape[1]
    ai = np.empty((rows, kk), np.int32)
    for i in range(rows):
        for k in range(kk):
            ai[i, k] = np.int32(a[i, k]) + m
    bt = np.empty((n, kk), np.int32)
    for j in prange(n):
        for k in range(kk):
            bt[j, k] = np.int32(b[k, j]) + m
    out = np.zeros((rows, n), np.int64)
    for j in prange(n):
        for i in range(rows):
            total = 0
            for k in range(kk):
                total += table[ai[i, k], bt[j, k]]
            out[i, j] = total
    return out
