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

    ``max_run + 1`` must be a power of two (x and ``over_samples`` contiguous). A zero run of L
    values between two non-zeros spends ⌊L / (max_run + 1)⌋ pairs of its own. Each sample is
    counted in blocks of ⌊(max_run + 1) / 2⌋ values without a branch on the values (so it
    vectorises); a run that holds no all-zero block is shorter than max_run + 1 and spends nothing,
    so only runs that cross from one sample to the next, and the inside of a sample that holds an
    all-zero block, are measured one by one (see :func:`_inner_fulls`)."""
    c_, hw = x.shape[1], x.shape[2]
    length = c_ * hw
    per_group = c_ // groups
    by_channels = over_channels.shape[0] > 0
    span = max_run + 1
    block = max(1, span // 2)
    blocks = -(-length // block)
    empty = np.empty(blocks, np.bool_)  # per block of the current sample: whether it is all zeros
    counts = over_samples.reshape(length)
    nonzeros = 0
    fulls = 0  # pairs spent on full zero runs between the piece's first and last non-zero
    last = -1  # flat index of the last non-zero so far (-1: none)
    first_nonzero = -1
    offset = 0
    for n in range(first, end):
        row = x[n].reshape(length)
        in_row = 0
        empty_blocks = 0
        for b in range(blocks):
            start, stop = b * block, min(b * block + block, length)
            values, sums = row[start:stop], counts[start:stop]
            in_block = 0
            for i in range(values.size):
                nonzero = values[i] != 0
                sums[i] += nonzero
                in_block += nonzero
            in_row += in_block
            empty[b] = in_block == 0
            empty_blocks += in_block == 0
        if by_channels:
            for c in range(c_):
                summed, values = over_channels[n, c // per_group], x[n, c]
                for i in range(hw):
                    summed[i] += values[i] != 0
        if in_row > 0:
            lo = 0
            while row[lo] == 0:
                lo += 1
            hi = length - 1
            while row[hi] == 0:
                hi -= 1
            if last < 0:
                first_nonzero = offset + lo
            else:  # the run from the last non-zero before this sample to its first
                fulls += (offset + lo - last - 1) // span
            if empty_blocks > 0 and hi - lo + 1 - in_row >= span:
                fulls += _inner_fulls(row, empty, block, lo, hi, span)
            last = offset + hi
            nonzeros += in_row
        offset += length
    zeros = offset - nonzeros
    if last < 0:
        return zeros, offset, 0, 0
    return zeros, first_nonzero, nonzeros + fulls, offset - 1 - last


@njit(cache=True, inline="always")
def _inner_fulls(row, empty, block, lo, hi, span):
    """Pairs spent on full zero runs between the non-zeros ``row[lo]`` and ``row[hi]``: only a run
    that holds an all-zero block (``empty``, per block of ``block`` values) can spend one; each
    such run is measured from the last non-zero before its first empty block to the first
    non-zero after its last."""
    fulls = 0
    b = lo // block + 1  # the blocks of row[lo] and row[hi] hold non-zeros
    while b < hi // block:
        if not empty[b]:
            b += 1
            continue
        end = b
        while empty[end + 1]:
            end += 1
        left = b * block - 1
        while row[left] == 0:
            left -= 1
        right = (end + 1) * block
        while row[right] == 0:
            right += 1
        fulls += (right - left - 1) // span
        b = end + 1
    return fulls


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
            for i in range(r):
                for j in range(s):
                    # outputs qq whose input column qq·stride − pad_w + j·dil lies inside the input
                    offset = j * dil - pad_w
                    q0 = min(max(0, -(offset // stride)), q_)
                    q1 = min(max(q0, (w_ - 1 - offset) // stride + 1), q_)
                    if q1 == q0:
                        continue
                    start = q0 * stride + offset
                    for p in range(p_):
                        h = p * stride - pad_h + i * dil
                        if h < 0 or h >= h_:
                            continue
                        errs = errors[n, g, p, q0:q1]
                        taps = inputs[n, g, h, start : start + (q1 - q0 - 1) * stride + 1 : stride]
                        for k in range(q1 - q0):  # integer products: any order gives the same sum
                            total += np.int64(errs[k]) * np.int64(taps[k])
    return total
