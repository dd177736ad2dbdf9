"""im2col / col2im for convolutions as GEMMs (NCHW input), channel-major and pixel-major columns.

The column matrix has one row per (c, r, s) and one column per (n, p, q):
``cols[(c*R + r)*S + s, (n*P + p)*Q + q] = x[n, c, p*stride - pad_h + r*dil, q*stride - pad_w + s*dil]``
(zero where that falls in the padding; ``dil`` is the dilation, 1 for a dense kernel).
Forward: ``W(K, CRS) @ cols``; backward-data: ``col2im``
of ``W.T @ dY(K, NPQ)``; backward-weight: ``dY(K, NPQ) @ cols.T``.

The ``*_part`` kernels fill a range of rows (im2col) or of channels (col2im) and release the GIL,
so that threads can fill disjoint parts of one result at once; each element is written by one
part, so the result does not depend on how it is split.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def im2col(x, r, s, stride, pad_h, pad_w, p, q, dil, cols):
    """Fill ``cols`` (C·R·S, N·P·Q) from x (N, C, H, W), zeros included (``cols`` may be reused)."""
    return im2col_part(x, r, s, stride, pad_h, pad_w, p, q, dil, cols, 0, cols.shape[0])


@njit(cache=True, nogil=True)
def im2col_part(x, r, s, stride, pad_h, pad_w, p, q, dil, cols, first_row, end_row):
    """Rows ``first_row`` to ``end_row`` (exclusive) of :func:`im2col`. The channels those rows read
    are first copied into a zero-padded buffer, so that every output row is one loop without
    bounds tests (a third of the time of zero-filling the padding's columns run by run)."""
    n_, c_, h_, w_ = x.shape
    if end_row <= first_row:
        return cols
    c0, c1 = first_row // (r * s), (end_row - 1) // (r * s) + 1
    padded = np.zeros((n_, c1 - c0, h_ + 2 * pad_h, w_ + 2 * pad_w), x.dtype)
    for n in range(n_):
        for c in range(c0, c1):
            for h in range(h_):
                for w in range(w_):
                    padded[n, c - c0, h + pad_h, w + pad_w] = x[n, c, h, w]
    for row in range(first_row, end_row):
        c, ij = row // (r * s), row % (r * s)
        i, j = (ij // s) * dil, (ij % s) * dil  # the tap's offset in padded rows and columns
        for n in range(n_):
            for pp in range(p):
                into = cols[row, (n * p + pp) * q : (n * p + pp + 1) * q]
                line = padded[n, c - c0, pp * stride + i]
                if stride == 1:
                    values = line[j : j + q]
                    for qq in range(q):
                        into[qq] = values[qq]
                else:
                    for qq in range(q):
                        into[qq] = line[qq * stride + j]
    return cols


@njit(cache=True)
def col2im(cols, n_, c_, h_, w_, r, s, stride, pad_h, pad_w, p, q, dil):
    """The adjoint of im2col: overlapping window entries are summed into x (N, C, H, W)."""
    x = np.zeros((n_, c_, h_, w_), cols.dtype)
    return col2im_part(cols, x, r, s, stride, pad_h, pad_w, p, q, dil, 0, c_)


@njit(cache=True, nogil=True)
def col2im_part(cols, x, r, s, stride, pad_h, pad_w, p, q, dil, first_channel, end_channel):
    """Channels ``first_channel`` to ``end_channel`` (exclusive) of :func:`col2im` into ``x`` (zeros)."""
    n_, c_, h_, w_ = x.shape
    for cn in range(first_channel * n_, end_channel * n_):
        c, n = cn // n_, cn % n_
        for i in range(r):
            for j in range(s):
                row = (c * r + i) * s + j
                for pp in range(p):
                    h = pp * stride - pad_h + i * dil
                    if h < 0 or h >= h_:
                        continue
                    base = (n * p + pp) * q
                    for qq in range(q):
                        w = qq * stride - pad_w + j * dil
                        if 0 <= w < w_:
                            x[n, c, h, w] += cols[row, base + qq]
    return x


# -- pixel-major columns: one row per output pixel (n, p, q), one column per tap and channel (r, s, c) ----------
# ``rows[(n*P + p)*Q + q, (r*S + s)*C + c] = x[n, c, p*stride - pad_h + r*dil, q*stride - pad_w + s*dil]``.
# Forward: ``rows @ W(R·S·C, K)``; backward-data: ``add_rows`` of ``dY(NPQ, K) @ W(K, R·S·C)``;
# backward-weight: ``dY(NPQ, K).T @ rows``. Each sample goes through an (H, W, C) copy, so that every
# tap copies C contiguous values.


# Below this many channels one tap's C values are too few for the compiled copy loop's vector body
# (measured: ResNet-20's 16-channel stage and LeNet-5's 6-channel conv run 1.2–2.6× faster a window row at
# a time; from 32 channels the per-tap copy is as fast or faster), so a dense kernel with fewer channels
# moves a window row (S taps, S·C contiguous values of a zero-padded (H, W, C) sample) at a time.
WINDOW_ROW_CHANNELS = 32


# The copy below moves 8 × 8 blocks (8 positions of a row × 8 channels) at a time: each block's
# loads and stores stay in a few cache lines, which element by element over a whole channel they did not
# (measured on one sample of ResNet-20's stages, (C, H, W) = (16, 32, 32), (32, 16, 16), (64, 8, 8):
# 13.1 -> 6.4, 6.2 -> 2.5, 3.1 -> 1.3 µs into (H, W, C); 12.9 -> 7.6, 6.5 -> 2.4, 3.4 -> 1.2 µs back).
BLOCK = 8


@njit(cache=True, nogil=True)
def _copy_sample(x, n, sample, pad_h, pad_w, into_sample):
    """Between sample ``n`` of x (N, C, H, W) and the inside of ``sample`` (H + 2·pad_h, W + 2·pad_w,
    C): into ``sample`` when ``into_sample``, else back into x (the padding is neither read nor written)."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    whole = c_ // BLOCK * BLOCK  # channels in whole blocks
    for h in range(h_):
        row = sample[h + pad_h, pad_w:]
        for w0 in range(0, w_ - BLOCK + 1, BLOCK):
            for c0 in range(0, whole, BLOCK):
                if into_sample:
                    for i in range(BLOCK):
                        into = row[w0 + i]
                        for j in range(BLOCK):
                            into[c0 + j] = x[n, c0 + j, h, w0 + i]
                else:
                    for j in range(BLOCK):
                        into = x[n, c0 + j, h]
                        for i in range(BLOCK):
                            into[w0 + i] = row[w0 + i, c0 + j]
        last = w_ // BLOCK * BLOCK  # columns in whole blocks
        for c in range(c_):
            for w in range(last if c < whole else 0, w_):  # what no whole block covers
                if into_sample:
                    row[w, c] = x[n, c, h, w]
                else:
                    x[n, c, h, w] = row[w, c]


@njit(cache=True, nogil=True)
def _to_sample(x, n, sample, pad_h, pad_w):
    """Sample ``n`` of x (N, C, H, W) into ``sample`` (H + 2·pad_h, W + 2·pad_w, C), inside its padding."""
    _copy_sample(x, n, sample, pad_h, pad_w, True)


@njit(cache=True, nogil=True)
def _from_sample(sample, x, n, pad_h, pad_w):
    """The inverse of :func:`_to_sample`: ``sample``'s inside (without its padding) into sample ``n`` of x."""
    _copy_sample(x, n, sample, pad_h, pad_w, False)


@njit(cache=True, nogil=True)
def _pixel_rows_by_window_rows(x, r, s, stride, pad_h, pad_w, p, q, rows, first, end):
    """:func:`pixel_rows_part` of a dense kernel (dilation 1), a window row at a time."""
    n_, c_, h_, w_ = x.shape
    wp = w_ + 2 * pad_w
    sample = np.zeros((h_ + 2 * pad_h, wp, c_), x.dtype)  # the padding stays zero
    flat, out = sample.reshape(sample.size), rows.reshape(rows.size)
    run = s * c_
    for n in range(first, end):
        _to_sample(x, n, sample, pad_h, pad_w)
        for pp in range(p):
            for qq in range(q):
                dst = (((n - first) * p + pp) * q + qq) * rows.shape[1]
                for i in range(r):
                    src = ((pp * stride + i) * wp + qq * stride) * c_
                    into, values = out[dst + i * run : dst + (i + 1) * run], flat[src : src + run]
                    for t in range(run):
                        into[t] = values[t]
    return rows


@njit(cache=True, nogil=True)
def _add_pixel_rows_by_window_rows(rows, x, r, s, stride, pad_h, pad_w, p, q, first, end):
    """:func:`add_pixel_rows_part` of a dense kernel (dilation 1), a window row at a time; each
    element's sum in the same order (rows, then taps)."""
    n_, c_, h_, w_ = x.shape
    wp = w_ + 2 * pad_w
    sample = np.empty((h_ + 2 * pad_h, wp, c_), x.dtype)
    flat, values = sample.reshape(sample.size), rows.reshape(rows.size)
    run = s * c_
    for n in range(first, end):
        flat[:] = 0.0  # what lands in the padding is dropped
        for pp in range(p):
            for qq in range(q):
                src = (((n - first) * p + pp) * q + qq) * rows.shape[1]
                for i in range(r):
                    dst = ((pp * stride + i) * wp + qq * stride) * c_
                    into, added = flat[dst : dst + run], values[src + i * run : src + (i + 1) * run]
                    for t in range(run):
                        into[t] += added[t]
        _from_sample(sample, x, n, pad_h, pad_w)
    return x


@njit(cache=True, nogil=True)
def pixel_rows_part(x, r, s, stride, pad_h, pad_w, p, q, dil, rows, first, end):
    """Fill ``rows`` ((end − first)·P·Q, R·S·C) from samples ``first`` to ``end`` of x (N, C, H, W)."""
    n_, c_, h_, w_ = x.shape
    if dil == 1 and c_ < WINDOW_ROW_CHANNELS:
        return _pixel_rows_by_window_rows(x, r, s, stride, pad_h, pad_w, p, q, rows, first, end)
    sample = np.empty((h_, w_, c_), x.dtype)
    for n in range(first, end):
        _to_sample(x, n, sample, 0, 0)
        for pp in range(p):
            for qq in range(q):
                row = ((n - first) * p + pp) * q + qq
                for i in range(r):
                    h = pp * stride - pad_h + i * dil
                    for j in range(s):
                        col = (i * s + j) * c_
                        w = qq * stride - pad_w + j * dil
                        if h < 0 or h >= h_ or w < 0 or w >= w_:
                            for c in range(c_):
                                rows[row, col + c] = 0.0
                        else:
                            for c in range(c_):
                                rows[row, col + c] = sample[h, w, c]
    return rows


@njit(cache=True, nogil=True)
def add_pixel_rows_part(rows, x, r, s, stride, pad_h, pad_w, p, q, dil, first, end):
    """The adjoint of :func:`pixel_rows_part`: samples ``first`` to ``end`` of x (N, C, H, W) get the
    sum of their window entries in ``rows`` (in row order), overwriting what x held."""
    n_, c_, h_, w_ = x.shape
    if dil == 1 and c_ < WINDOW_ROW_CHANNELS:
        return _add_pixel_rows_by_window_rows(rows, x, r, s, stride, pad_h, pad_w, p, q, first, end)
    sample = np.empty((h_, w_, c_), x.dtype)
    for n in range(first, end):
        sample[:] = 0.0
        for pp in range(p):
            for qq in range(q):
                row = ((n - first) * p + pp) * q + qq
                for i in range(r):
                    h = pp * stride - pad_h + i * dil
                    if h < 0 or h >= h_:
                        continue
                    for j in range(s):
                        w = qq * stride - pad_w + j * dil
                        if 0 <= w < w_:
                            col = (i * s + j) * c_
                            for c in range(c_):
                                sample[h, w, c] += rows[row, col + c]
        _from_sample(sample, x, n, 0, 0)
    return x


# -- convolutions computed directly: depthwise ones (one filter per channel: a GEMM per channel has
# an inner dimension of R·S (9) and spends its time on the columns), the weight gradient of
# convs with one input channel (a first layer: its GEMM is (K, R·S) by (R·S, N·P·Q), which a BLAS runs
# at a fraction of its speed), and the forward pass of dense stride-1 convs with a few input
# channels (a first layer again: its columns are short rows, R·S·C of 25 or 27 values, which cost as
# much to build as the GEMM takes). Each map is copied into a zero-padded plane; at stride 1 every tap
# is then one long loop over the flat plane (outputs computed on the padded width, the extra columns
# dropped), which vectorises; other strides go row by row. The depthwise forward pass and input
# gradient sum in float64, each output's taps in (r, s) order (a padding tap adds a zero). The
# weight gradient at stride 1 sums float32 products in float32 lanes over ``span`` samples, then
# adds the lanes in float64 (exact for integer operands when ``span`` products stay below 2**24);
# at other strides, and for integer products too wide for float32, it sums in float64.


@njit(cache=True, nogil=True)
def _into_flat(source, flat, wp, top, left):
    """Copy the map ``source`` (H, W) into ``flat`` (rows of ``wp``) from row ``top``, column ``left``."""
    for h in range(source.shape[0]):
        start = (h + top) * wp + left
        target, row = flat[start : start + source.shape[1]], source[h]
        for k in range(source.shape[1]):
            target[k] = row[k]


@njit(cache=True, nogil=True)
def _from_flat(flat, target, wp, top, left):
    """Copy into the map ``target`` (H, W) what ``flat`` (rows of ``wp``) holds from row ``top``,
    column ``left`` (the adjoint of :func:`_into_flat`)."""
    for h in range(target.shape[0]):
        start = (h + top) * wp + left
        row, source = target[h], flat[start : start + target.shape[1]]
        for k in range(target.shape[1]):
            row[k] = source[k]


@njit(cache=True, nogil=True)
def depthwise_part(x, w, stride, pad_h, pad_w, dil, y, first, end):
    """Maps ``first`` to ``end`` (as n·C + c) of y (N, C, P, Q), float64:
    y[n,c,p,q] = Σ over taps (i, j) of w[c,i,j]·x[n, c, p·stride − pad_h + i·dil, q·stride − pad_w + j·dil]
    (zero in the padding); w is (C, R, S)."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    r, s = w.shape[1], w.shape[2]
    p, q = y.shape[2], y.shape[3]
    wp = w_ + 2 * pad_w
    plane = np.zeros((h_ + 2 * pad_h + 1) * wp)
    wide = np.empty(p * wp)
    for nc in range(first, end):
        n, c = nc // c_, nc % c_
        _into_flat(x[n, c], plane, wp, pad_h, pad_w)
        if stride == 1:
            wide[:] = 0.0
            for i in range(r):
                for j in range(s):
                    tap = np.float64(w[c, i, j])
                    source = plane[i * dil * wp + j * dil : i * dil * wp + j * dil + p * wp]
                    for k in range(p * wp):
                        wide[k] += tap * source[k]
            _from_flat(wide, y[n, c], wp, 0, 0)
            continue
        for pp in range(p):
            target = y[n, c, pp]
            target[:] = 0.0
            for i in range(r):
                for j in range(s):
                    tap = np.float64(w[c, i, j])
                    start = (pp * stride + i * dil) * wp + j * dil
                    source = plane[start : start + (q - 1) * stride + 1 : stride]
                    for qq in range(q):
                        target[qq] += tap * source[qq]
    return y


@njit(cache=True, nogil=True)
def depthwise_input_part(dy, w, stride, pad_h, pad_w, dil, dx, first, end):
    """Maps ``first`` to ``end`` (as n·C + c) of dx (N, C, H, W), float64: the adjoint of
    :func:`depthwise_part`, each output's error times each tap added where the tap reads (taps in
    (r, s) order for every input element)."""
    c_, h_, w_ = dx.shape[1], dx.shape[2], dx.shape[3]
    r, s = w.shape[1], w.shape[2]
    p, q = dy.shape[2], dy.shape[3]
    wp = w_ + 2 * pad_w
    plane = np.empty((h_ + 2 * pad_h + 1) * wp)
    wide = np.zeros(p * wp)  # the errors on the padded width (zeros in the extra columns)
    for nc in range(first, end):
        n, c = nc // c_, nc % c_
        plane[:] = 0.0
        if stride == 1:
            _into_flat(dy[n, c], wide, wp, 0, 0)
            for i in range(r):
                for j in range(s):
                    tap = np.float64(w[c, i, j])
                    target = plane[i * dil * wp + j * dil : i * dil * wp + j * dil + p * wp]
                    for k in range(p * wp):
                        target[k] += tap * wide[k]
        else:
            for i in range(r):
                for pp in range(p):
                    source = dy[n, c, pp]
                    for j in range(s):
                        tap = np.float64(w[c, i, j])
                        start = (pp * stride + i * dil) * wp + j * dil
                        target = plane[start : start + (q - 1) * stride + 1 : stride]
                        for qq in range(q):
                            target[qq] += tap * source[qq]
        _from_flat(plane, dx[n, c], wp, pad_h, pad_w)
    return dx


@njit(cache=True, nogil=True, fastmath={"contract"})
def direct_forward_part(x, w, pad_h, pad_w, y, first, end):
    """Maps ``first`` to ``end`` (as n·K + k) of y (N, K, P, Q), float32, of a dense conv at stride 1
    and dilation 1: y[n,k,p,q] = Σ over taps (i, j, c), in that order (the pixel rows' column order),
    of w[k,c,i,j]·x[n, c, p − pad_h + i, q − pad_w + j] (zero in the padding), each product added by a
    fused multiply-add into a float32 sum: the sums of a BLAS GEMM over those rows that runs its inner
    dimension in one chain (OpenBLAS's on LeNet-5's and ResNet-20's first convs), exact for integer
    operands while every sum stays below 2**24."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    k_, r, s = w.shape[0], w.shape[2], w.shape[3]
    p = y.shape[2]
    wp = w_ + 2 * pad_w
    planes = np.zeros((c_, (h_ + 2 * pad_h + 1) * wp), np.float32)  # one sample's maps, zero-padded
    wide = np.empty(p * wp, np.float32)  # one output map on the padded width
    held = -1  # the sample whose maps ``planes`` holds
    for nk in range(first, end):
        n, k = nk // k_, nk % k_
        if n != held:
            for c in range(c_):
                _into_flat(x[n, c], planes[c], wp, pad_h, pad_w)
            held = n
        wide[:] = 0.0
        for i in range(r):
            for j in range(s):
                for c in range(c_):
                    tap = w[k, c, i, j]
                    source = planes[c, i * wp + j : i * wp + j + p * wp]
                    for m in range(p * wp):
                        wide[m] = tap * source[m] + wide[m]
        _from_flat(wide, y[n, k], wp, 0, 0)
    return y


L1_SUMS = 4096  # float32 sums of one weight-gradient block: 16 KB of a core's 32 KB L1 data cache


@njit(cache=True, nogil=True)
def direct_weight_part(x, dy, stride, pad_h, pad_w, dil, span, dw, first, end):
    """Filters ``first`` to ``end`` of dw (K, C/G, R, S), float64: dw[k,c,i,j] = Σ over n, p, q of
    dy[n,k,p,q]·x[n, g·C/G + c, p·stride − pad_h + i·dil, q·stride − pad_w + j·dil], g = k // (K/G).
    At stride 1 each (channel, tap)'s products are summed over ``span`` samples at a time in float32
    lanes, one per position of the padded output grid, the lanes added into float64 sums (samples in
    order), then each tap's sums in order; the grid goes in blocks whose lanes of every tap stay in
    L1. Other strides, and ``span`` 0 (integer products too wide for float32):
    :func:`_float64_weight_part`."""
    h_, w_ = x.shape[2], x.shape[3]
    k_, cg, r, s = dw.shape[0], dw.shape[1], dw.shape[2], dw.shape[3]
    kg = k_ // (x.shape[1] // cg)
    n_, p = dy.shape[0], dy.shape[2]
    wp = w_ + 2 * pad_w
    size = (h_ + 2 * pad_h + 1) * wp
    grid = p * wp
    if stride != 1 or span < 1:
        return _float64_weight_part(x, dy, stride, pad_h, pad_w, dil, dw, first, end)
    taps = cg * r * s
    planes = np.zeros((n_, cg, size), np.float32)  # every sample's maps of the filter's group, zero-padded
    errors = np.zeros((n_, grid), np.float32)  # the filter's errors on the padded width (zeros in the extra columns)
    rows = np.empty((taps, grid))
    block = max(16, L1_SUMS // taps // 16 * 16)  # grid positions whose sums of every tap stay in L1
    lanes = np.empty((taps, block), np.float32)
    held = -1  # the group whose maps ``planes`` holds
    for k in range(first, end):
        base = (k // kg) * cg
        if base != held:
            for n in range(n_):
                for c in range(cg):
                    _into_flat(x[n, base + c], planes[n, c], wp, pad_h, pad_w)
            held = base
        for n in range(n_):
            _into_flat(dy[n, k], errors[n], wp, 0, 0)
        rows[:, :] = 0.0
        for lo in range(0, grid, block):
            hi = min(lo + block, grid)
            for first_sample in range(0, n_, span):
                lanes[:, :] = 0.0
                for n in range(first_sample, min(first_sample + span, n_)):
                    error = errors[n, lo:hi]
                    for c in range(cg):
                        for i in range(r):
                            for j in range(s):
                                offset = i * dil * wp + j * dil
                                source, lane = planes[n, c, offset + lo : offset + hi], lanes[(c * r + i) * s + j]
                                for m in range(hi - lo):
                                    lane[m] += error[m] * source[m]
                for t in range(taps):
                    row, lane = rows[t, lo:hi], lanes[t]
                    for m in range(hi - lo):
                        row[m] += lane[m]
        for t in range(taps):
            total = 0.0
            for m in range(grid):
                total += rows[t, m]
            dw[k, t // (r * s), (t // s) % r, t % s] = total
    return dw


@njit(cache=True, nogil=True)
def _float64_weight_part(x, dy, stride, pad_h, pad_w, dil, dw, first, end):
    """:func:`direct_weight_part` in float64: float64 products summed into a vector of the padded
    output grid per (channel, tap), samples in order, row by row; then each vector in order."""
    h_, w_ = x.shape[2], x.shape[3]
    k_, cg, r, s = dw.shape[0], dw.shape[1], dw.shape[2], dw.shape[3]
    kg = k_ // (x.shape[1] // cg)
    n_, p, q = dy.shape[0], dy.shape[2], dy.shape[3]
    wp = w_ + 2 * pad_w
    plane = np.zeros((h_ + 2 * pad_h + 1) * wp)
    sums = np.empty((cg * r * s, p * wp))
    for k in range(first, end):
        base = (k // kg) * cg
        sums[:, :] = 0.0
        for n in range(n_):
            for c in range(cg):
                _into_flat(x[n, base + c], plane, wp, pad_h, pad_w)
                for i in range(r):
                    for j in range(s):
                        row = sums[(c * r + i) * s + j]
                        for pp in range(p):
                            start = (pp * stride + i * dil) * wp + j * dil
                            source, errors = plane[start : start + (q - 1) * stride + 1 : stride], dy[n, k, pp]
                            partial = row[pp * wp : pp * wp + q]
                            for qq in range(q):
                                partial[qq] += np.float64(errors[qq]) * source[qq]
        for t in range(cg * r * s):
            total = 0.0
            for m in range(p * wp):
                total += sums[t, m]
            dw[k, t // (r * s), (t // s) % r, t % s] = total
    return dw
