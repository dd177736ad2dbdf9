"""im2col / col2im for convolutions as GEMMs (NCHW).

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
    """Rows ``first_row`` to ``end_row`` (exclusive) of :func:`im2col`."""
    n_, c_, h_, w_ = x.shape
    for row in range(first_row, end_row):
        c, ij = row // (r * s), row % (r * s)
        i, j = (ij // s) * dil, (ij % s) * dil  # the tap's offset in input rows and columns
        # output columns qq whose input column qq*stride - pad_w + j lies inside the image
        q0 = min(max(0, -((j - pad_w) // stride)), q)
        q1 = min(max(q0, (w_ - 1 - j + pad_w) // stride + 1), q)
        for n in range(n_):
            for pp in range(p):
                base = (n * p + pp) * q
                h = pp * stride - pad_h + i
                if h < 0 or h >= h_:
                    cols[row, base : base + q] = 0.0
                    continue
                cols[row, base : base + q0] = 0.0
                cols[row, base + q1 : base + q] = 0.0
                start = q0 * stride - pad_w + j
                if stride == 1:
                    cols[row, base + q0 : base + q1] = x[n, c, h, start : start + q1 - q0]
                else:
                    for qq in range(q0, q1):
                        cols[row, base + qq] = x[n, c, h, qq * stride - pad_w + j]
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
