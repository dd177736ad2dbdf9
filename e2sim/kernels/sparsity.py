"""Zero statistics of a tensor as the accelerator would store it: how many values are zero, and how
many (zero-run, value) pairs a run-length code needs (zero runs of up to ``max_run`` per pair; a
longer run spends a pair (max_run, 0) on every max_run + 1 zeros; zeros at the end are coded the
same way, a last pair carrying a zero value)."""

import numpy as np
from numba import njit


@njit(cache=True)
def zero_runs(values, max_run):
    """(zeros, run-length pairs) of a 1-D ``values``. Written without branches on the values (a
    feature map's zeros are unpredictable: a branch per value would mispredict about half the time)."""
    zeros = 0
    pairs = 0
    run = 0
    for i in range(values.size):
        zero = values[i] == 0
        run = (run + 1) * zero
        full = run == max_run + 1  # a full run is coded as (max_run, 0)
        pairs += (not zero) + full
        run *= not full
        zeros += zero
    return zeros, pairs + (run > 0)


@njit(cache=True, nogil=True)
def map_zeros_part(x, groups, max_run, over_samples, over_channels, first, end):
    """Samples ``first`` to ``end`` (exclusive) of a feature map x (N, C, H·W), in one pass: adds
    x != 0 into ``over_samples`` (C, H·W) and, when it has rows, into ``over_channels`` (N, G, H·W:
    summed over each of ``groups`` groups of channels); returns the run-length statistics of these
    samples in flat order, as a piece of the whole: (zeros, zeros before its first non-zero, pairs
    from its first to its last non-zero, zeros after its last non-zero). The pairs inside start
    from a non-zero, so they do not depend on what came before; the leading and trailing zeros
    join the runs of the neighbouring pieces (``numerics.zeros.joined_runs``).

    ``max_run + 1`` must be a power of two. A zero run spends a pair on every ``max_run + 1``
    zeros: the zero at distance k from the last non-zero (or from the piece's start) completes one
    when k is a multiple of ``max_run + 1``, so the only chain from value to value is the index of
    the last non-zero (a conditional move), with no branch on the values."""
    c_, hw = x.shape[1], x.shape[2]
    per_group = c_ // groups
    by_channels = over_channels.shape[0] > 0
    span = max_run + 1
    mask = span - 1
    nonzeros = 0
    fulls = 0  # pairs spent on full zero runs
    last = -1  # flat index of the last non-zero so far (-1: none)
    first_nonzero = -1
    offset = 0
    for n in range(first, end):
        for c in range(c_):
            row = x[n, c]
            counts = over_samples[c]
            for i in range(hw):
                nonzero = row[i] != 0
                counts[i] += nonzero
                nonzeros += nonzero
                last = offset + i if nonzero else last
                fulls += (not nonzero) & (((offset + i - last) & mask) == 0)
            if by_channels:
                summed = over_channels[n, c // per_group]
                for i in range(hw):
                    summed[i] += row[i] != 0
            if first_nonzero < 0 and last >= 0:  # this row holds the first non-zero
                for i in range(hw):
                    if row[i] != 0:
                        first_nonzero = offset + i
                        break
            offset += hw
    zeros = offset - nonzeros
    if last < 0:
        return zeros, offset, 0, 0
    trail = offset - 1 - last
    return zeros, first_nonzero, nonzeros + fulls - first_nonzero // span - trail // span, trail


@njit(cache=True, nogil=True)
def window_products_part(errors, inputs, r, s, stride, pad_h, pad_w, dil, first, end):
    """Σ over samples ``first`` to ``end``, groups g and outputs (p, q) of errors[n, g, p, q] ×
    Σ over the window's taps (r, s) inside the input of inputs[n, g, p·stride − pad_h + r·dil,
    q·stride − pad_w + s·dil] (int64): with per-group non-zero counts of a conv's errors (N, G, P,
    Q) and inputs (N, G, H, W), the weight gradient's MACs whose two operands are non-zero."""
    groups, p_, q_ = errors.shape[1], errors.shape[2], errors.shape[3]
    h_, w_ = inputs.shape[2], inputs.shape[3]
    total = 0
    for n in range(first, end):
        for g in range(groups):
            for p in range(p_):
                for i in range(r):
                    h = p * stride - pad_h + i * dil
                    if h < 0 or h >= h_:
                        continue
                    for q in range(q_):
                        e = np.int64(errors[n, g, p, q])
                        for j in range(s):
                            w = q * stride - pad_w + j * dil
                            if 0 <= w < w_:
                                total += e * inputs[n, g, h, w]
    return total
