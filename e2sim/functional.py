"""The functional kernel API on float32 numpy arrays (NCHW).

``fmt=None`` computes in fp32. With a precision (``e2sim.functional.precision(...)`` or a workload's
``precision``), the operands of every GEMM are quantized to their role's format — activations and
weights forward, errors and weights for the input gradient, activations and errors for the weight
gradient — integer products are summed exactly and saturated to the accumulator width, and
weight gradients are rounded to the ``gradients`` format. Results come back dequantized (float32).
Element-wise layers (batch norm, ReLU, pooling, loss; in ``functional_layers.py``) compute in fp32.

A per-sample or per-channel scale along a dimension the GEMM sums over cannot be factored out of
the sum; such an operand gets one scale per tensor in that op (e.g. activations in the weight
gradient). Pass ``counter`` (an :class:`OpCounter`) and ``op`` to record what ran; ``seed`` drives
stochastic rounding and never changes results in ``nearest`` or ``truncate`` mode.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from e2sim.config.precision import PrecisionSpec, read_precision
from e2sim.config.reader import ProblemLog, Section
from e2sim.counting import OpCounter
from e2sim.functional_gemm import (
    FLOAT32_EXACT,
    PIXEL_MAJOR_CHANNELS,
    _bounds,
    _by_samples,
    _conv_geometry,
    _depthwise,
    _direct_forward,
    _direct_weight,
    _error_columns,
    _finish,
    _grouped_matmul,
    _groups,
    _im2col,
    _integer,
    _lane_samples,
    _matmul,
    _matmul_block,
    _operands,
    _pixel_errors,
    _read,
    _record,
    _round_gradient,
    _scaled_in_pieces,
    _values,
    _wide,
    _workspace,
)
from e2sim.functional_layers import (
    _array,
    _shape,
    add,
    avg_pool2d,
    avg_pool2d_backward,
    batchnorm,
    batchnorm_backward,
    batchnorm_eval,
    dropout,
    dropout_backward,
    global_avg_pool,
    global_avg_pool_backward,
    max_pool2d,
    max_pool2d_backward,
    relu,
    relu_backward,
    sgd_update,
    softmax_cross_entropy,
)
from e2sim.kernels import conv as conv_kernels
from e2sim.numerics.zeros import map_zeros, tap_nonzeros, weight_zeros, window_products
from e2sim.numerics.zeros import nonzero_pairs as _pairs
from e2sim.numerics.zeros import operand_zeros as _zeros
from e2sim.process import in_parts

__all__ = [
    "OpCounter", "add", "avg_pool2d", "avg_pool2d_backward", "batchnorm", "batchnorm_backward",
    "batchnorm_eval", "conv2d", "conv2d_grad_input", "conv2d_grad_weight", "dropout", "dropout_backward",
    "global_avg_pool",
    "global_avg_pool_backward", "linear", "linear_grad_input", "linear_grad_weight", "max_pool2d",
    "max_pool2d_backward", "precision", "relu", "relu_backward", "sgd_update", "softmax_cross_entropy",
]  # fmt: skip


def precision(**roles: Any) -> PrecisionSpec:
    """A precision from keyword arguments, checked like a workload's ``precision:`` block.

    ``precision(weights="int8", activations="int8", errors="int8", gradients="int16",
    accumulator="int32", rounding="stochastic", scale={"weights": "channel"})``
    """
    log = ProblemLog("precision()")
    spec = read_precision(Section(roles, "", log))
    log.raise_if_any()
    return spec


# -- convolution ---------------------------------------------------------------------------------------


def conv2d(x, w, b=None, stride=1, padding=0, fmt=None, *, groups=1, dilation=1, approx=None, counter=None,
           op="conv2d", seed=0) -> np.ndarray:  # fmt: skip
    """y[n,k,p,q] = Σ_c,r,s x[n, g·C/G + c, p·stride−ph+r·d, q·stride−pw+s·d]·w[k,c,r,s] (+ b[k]), with
    g = k // (K/G) the filter's group and d the dilation; w is (K, C/G, R, S) (depthwise: G = C).
    ``approx`` (an ApproxDatapath): compute on an accelerator's approximate mode (intN only)."""
    x, w = _array("x", x, 4), _array("w", w, 4)
    n, c, h, width = x.shape
    k, r, s = w.shape[0], w.shape[2], w.shape[3]
    groups = _groups(groups, c, k)
    _shape("w", w, (k, c // groups, r, s))
    stride, ph, pw, dil, p, q = _conv_geometry(h, width, r, s, stride, padding, dilation)
    xq, wq = _operands(fmt, seed, (x, "activations", 0), (w, "weights", 0))
    integer = _integer(xq, wq)
    x_values, w_values = (
        _read(approx, seed, xq, wq) if approx is not None else (_values(xq, integer), _values(wq, integer))
    )
    macs = n * k * (c // groups) * p * q * r * s
    w_blocks = w_values.reshape(groups, k // groups, -1)
    sparsity = None
    if counter is not None:  # MACs whose window tap or weight is zero (padding included)
        stats = map_zeros(x_values)
        taps = tap_nonzeros(stats.over_samples, r, s, stride, ph, pw, p, q, dil)
        nonzero = _pairs(np.count_nonzero(w_blocks, axis=1).reshape(-1), taps)
        sparsity = (({"x": stats.zeros, "w": weight_zeros(w_values)}, {"x": stats.pairs}), macs - nonzero)
    bounds = _bounds(integer, wq, xq)
    # per filter × per sample (or tensor) scales, broadcast over each sample's pixels
    scale = (wq.scale.reshape(-1, 1, 1) * xq.scale.reshape(1, -1, 1)) if integer else 1
    bound = c // groups * r * s * bounds[0] * bounds[1]
    scaled = False
    if approx is None and _depthwise(groups, c, k, integer, bound):  # float64 sums, taps in (r, s) order
        taps, direct = w_values.reshape(k, r, s), np.empty((n, k, p, q))
        in_parts(n * k, direct.size * r * s,
                 lambda lo, hi: conv_kernels.depthwise_part(x_values, taps, stride, ph, pw, dil, direct, lo, hi))
        acc = direct.transpose(1, 0, 2, 3)  # (K, N, P, Q), a view
    elif approx is None and _direct_forward(groups, c, stride, dil, integer, bound):  # float32 sums, directly
        direct = np.empty((n, k, p, q), np.float32)
        in_parts(n * k, direct.size * c * r * s,
                 lambda lo, hi: conv_kernels.direct_forward_part(x_values, w_values, ph, pw, direct, lo, hi))
        acc = direct.transpose(1, 0, 2, 3)  # (K, N, P, Q), a view
    elif approx is None and groups == 1 and c >= PIXEL_MAJOR_CHANNELS["forward"]:
        # pixel-major: rows (N·P·Q, R·S·C) @ W (R·S·C, K)
        w_rows = np.ascontiguousarray(w_values.transpose(2, 3, 1, 0)).reshape(-1, k)
        wide = _wide(integer, bounds, w_rows.shape[0])
        sums = np.empty((n, k, p * q), np.float64 if wide else np.float32)
        scaled = _scaled_in_pieces(integer, fmt, bound, wide)
        per_sample = np.broadcast_to(scale, (scale.shape[0], n, 1)).transpose(1, 0, 2) if scaled else None

        def product_rows(lo: int, hi: int) -> None:  # each piece's sums put back in (N, K, P·Q) order, in cache
            rows = _workspace(((hi - lo) * p * q, w_rows.shape[0]))
            conv_kernels.pixel_rows_part(x_values, r, s, stride, ph, pw, p, q, dil, rows, lo, hi)
            result = _matmul_block(rows, w_rows, integer, bounds, _workspace((rows.shape[0], k), role="sums"))
            piece = result.reshape(hi - lo, p * q, k).transpose(0, 2, 1)
            if scaled:
                np.multiply(piece, per_sample[lo:hi], out=sums[lo:hi])
            else:
                sums[lo:hi] = piece

        _by_samples(n, c * r * s * p * q * 4, product_rows)
        acc = sums.transpose(1, 0, 2)  # (K, N, P·Q), a view: the scales and any rounding see this order
    elif approx is None:
        def product(lo: int, hi: int) -> np.ndarray:
            cols = _workspace((c * r * s, (hi - lo) * p * q))
            conv_kernels.im2col_part(x_values[lo:hi], r, s, stride, ph, pw, p, q, dil, cols, 0, c * r * s)
            return _grouped_matmul(w_blocks, cols.reshape(groups, -1, cols.shape[1]), integer, bounds, threaded=False)

        acc = np.concatenate(_by_samples(n, c * r * s * p * q * 4, product), axis=1)
    else:
        cols = _im2col(x_values, r, s, stride, ph, pw, p, q, dil, _workspace((c * r * s, n * p * q)))
        col_blocks = cols.reshape(groups, -1, n * p * q)
        acc = np.concatenate([approx.matmul(w_blocks[g], col_blocks[g], wq.bits, xq.bits) for g in range(groups)])
        bound = np.inf
    y, saturated = (acc, 0) if scaled else _finish(acc.reshape(k, n, p * q), integer, fmt, scale, seed, bound)
    y = np.ascontiguousarray(y.reshape(k, n, p, q).transpose(1, 0, 2, 3))
    reads = {"x": x.size, "w": w.size}
    if b is not None:
        b = _array("b", b, 1)
        _shape("b", b, (k,))
        y += b[None, :, None, None]
        reads["b"] = k
    saturations = {"x": xq.saturated, "w": wq.saturated, "accumulator": saturated}
    _record(counter, op, xq, wq, macs, reads, {"y": y.size}, saturations, y.size if b is not None else 0, sparsity)
    return y


def _kept_channels(channels, count: int) -> np.ndarray:
    kept = np.asarray(channels, dtype=np.int64).reshape(-1)
    if kept.size and (kept.min() < 0 or kept.max() >= count or np.unique(kept).size != kept.size):
        raise ValueError(f"channels must be distinct output-channel indices in [0, {count})")
    return np.sort(kept)


def conv2d_grad_input(dy, w, input_shape, stride=1, padding=0, fmt=None, *, groups=1, dilation=1, channels=None,
                      counter=None, op="conv2d_grad_input", seed=0) -> np.ndarray:  # fmt: skip
    """dx = transposed convolution of dy with w (the input gradient of :func:`conv2d`).
    ``channels``: compute with these output-error channels only (the others are pruned: their
    work is neither done nor counted, except as skipped MACs; not with groups)."""
    dy, w = _array("dy", dy, 4), _array("w", w, 4)
    if channels is not None and groups != 1:
        raise ValueError("channel pruning of a grouped convolution's errors is not supported")
    if channels is not None:
        kept = _kept_channels(channels, w.shape[0])
        dx = conv2d_grad_input(np.ascontiguousarray(dy[:, kept]), np.ascontiguousarray(w[kept]), input_shape, stride,
                               padding, fmt, counter=counter, op=op, seed=seed)  # fmt: skip
        if counter is not None:
            per_channel = dy.shape[0] * dy.shape[2] * dy.shape[3] * int(np.prod(w.shape[1:]))
            counter.record(op, skipped_macs=(w.shape[0] - kept.size) * per_channel)
        return dx
    n, c, h, width = (int(d) for d in input_shape)
    k, r, s = w.shape[0], w.shape[2], w.shape[3]
    groups = _groups(groups, c, k)
    cg, kg = c // groups, k // groups
    _shape("w", w, (k, cg, r, s))
    stride, ph, pw, dil, p, q = _conv_geometry(h, width, r, s, stride, padding, dilation)
    _shape("dy", dy, (n, k, p, q))
    dyq, wq = _operands(fmt, seed, (dy, "errors", 0), (w, "weights", 1))
    integer = _integer(dyq, wq)
    dy_values = _values(dyq, integer)
    w_values = _values(wq, integer)
    macs = n * k * cg * p * q * r * s
    sparsity = None
    if counter is not None:
        stats = map_zeros(dy_values)  # each filter's errors: Σ over (n, p, q)
        nonzero = _pairs(stats.over_samples.sum(axis=(1, 2)), np.count_nonzero(w_values.reshape(k, -1), axis=1))
        sparsity = (({"dy": stats.zeros, "w": weight_zeros(w_values)}, {"dy": stats.pairs}), macs - nonzero)
    bounds = _bounds(integer, wq, dyq)
    wide = _wide(integer, bounds, kg)  # exact sums in float64 (exact_integer_matmul)
    scale, bound = _input_gradient_scale(integer, wq, dyq, groups, (r, s, stride, dil), kg, bounds)
    scaled = False
    if _depthwise(groups, c, k, integer, bound):  # float64 sums, directly
        acc, taps = np.empty((n, c, h, width)), w_values.reshape(k, r, s)
        in_parts(n * c, dy.size * r * s,
                 lambda lo, hi: conv_kernels.depthwise_input_part(dy_values, taps, stride, ph, pw, dil, acc, lo, hi))
    elif groups == 1 and c >= PIXEL_MAJOR_CHANNELS["backward"]:
        # pixel-major: dY (N·P·Q, K) @ W (K, R·S·C), then each window's rows added into dx
        acc = np.empty((n, c, h, width), np.float64 if wide else np.float32)
        w_rows = np.ascontiguousarray(w_values.transpose(0, 2, 3, 1)).reshape(k, -1)
        scaled = _scaled_in_pieces(integer, fmt, bound, wide)
        per_sample = np.broadcast_to(scale, (n, *np.shape(scale)[1:])) if scaled else None

        def add_rows(lo: int, hi: int) -> None:
            drows = _matmul_block(_pixel_errors(dy_values, lo, hi, w_rows.shape[1]), w_rows, integer, bounds,
                                  _workspace(((hi - lo) * p * q, w_rows.shape[1])))  # fmt: skip
            conv_kernels.add_pixel_rows_part(np.ascontiguousarray(drows, acc.dtype), acc, r, s, stride, ph, pw, p, q,
                                             dil, lo, hi)  # fmt: skip
            if scaled:
                acc[lo:hi] *= per_sample[lo:hi]

        _by_samples(n, c * r * s * p * q * 4, add_rows)
    else:
        acc = _grouped_input_gradient(dy_values, w_values, (n, c, h, width), groups, integer, bounds, wide,
                                      (r, s, stride, ph, pw, p, q, dil))  # fmt: skip
    dx, saturated = (acc, 0) if scaled else _finish(acc, integer, fmt, scale, seed, bound)
    saturations = {"dy": dyq.saturated, "w": wq.saturated, "accumulator": saturated}
    _record(counter, op, dyq, wq, macs, {"dy": dy.size, "w": w.size}, {"dx": dx.size}, saturations,
            sparsity=sparsity)  # fmt: skip
    return dx


def _grouped_input_gradient(dy_values, w_values, shape, groups, integer, bounds, wide, geometry) -> np.ndarray:
    """dx of a grouped conv (the sums before scaling): each group's W.T @ dY, col2im piece by piece."""
    n, c, h, width = shape
    r, s, stride, ph, pw, p, q, dil = geometry
    k = w_values.shape[0]
    kg = k // groups
    w_blocks = w_values.reshape(groups, kg, -1).transpose(0, 2, 1)
    acc = np.zeros((n, c, h, width), np.float64 if wide else np.float32)

    def add_windows(lo: int, hi: int) -> None:
        errors = _error_columns(dy_values, lo, hi).reshape(groups, kg, -1)
        dcols = _grouped_matmul(w_blocks, errors, integer, bounds, _workspace((c * r * s, (hi - lo) * p * q)),
                                threaded=False)  # fmt: skip
        conv_kernels.col2im_part(np.ascontiguousarray(dcols, acc.dtype), acc[lo:hi], r, s, stride, ph, pw, p, q, dil,
                                 0, c)  # fmt: skip

    _by_samples(n, c * r * s * p * q * 4, add_windows)
    return acc


def _input_gradient_scale(integer, wq, dyq, groups, geometry, kg, bounds) -> tuple[Any, float]:
    """The scales of dx's integer sums (per input channel × per sample, or 1) and a bound on |sum|."""
    r, s, stride, dil = geometry
    scale = 1
    if integer:  # the weights' scale per channel of a group is the same in every group
        w_scale = wq.scale.reshape(-1)
        w_scale = np.tile(w_scale, groups) if groups > 1 and w_scale.size > 1 else w_scale
        scale = w_scale.reshape(1, -1, 1, 1) * dyq.scale.reshape(-1, 1, 1, 1)
    step = stride // math.gcd(stride, dil)  # taps of one window row that can land on one input row
    overlap = -(-r // step) * -(-s // step)  # window positions that land on one input element
    return scale, kg * overlap * bounds[0] * bounds[1]


def pruned_weight_gradient(compute, dy, weight_shape, channels, bias, counter, op):
    """A conv weight gradient for the output channels ``channels`` only (error-map pruning):
    ``compute(dy[:, kept], kept_weight_shape)`` does the work; pruned channels get zero gradients
    and their MACs are recorded as skipped."""
    k = int(weight_shape[0])
    kept = _kept_channels(channels, k)
    out = compute(np.ascontiguousarray(dy[:, kept]), (kept.size, *weight_shape[1:]))
    dw = np.zeros(tuple(weight_shape), np.float32)
    dw[kept] = out[0] if bias else out
    if counter is not None:
        per_channel = int(np.prod(weight_shape[1:])) * dy.shape[0] * dy.shape[2] * dy.shape[3]
        counter.record(op, skipped_macs=(k - kept.size) * per_channel)
    if not bias:
        return dw
    db = np.zeros(k, np.float32)
    db[kept] = out[1]
    return dw, db


def conv2d_grad_weight(x, dy, weight_shape, stride=1, padding=0, fmt=None, *, groups=1, dilation=1, bias=False,
                       channels=None, counter=None, op="conv2d_grad_weight", seed=0):  # fmt: skip
    """dw[k,c,r,s] = Σ_n,p,q dy[n,k,p,q]·x[n, g·C/G + c, p·stride−ph+r·d, q·stride−pw+s·d] (groups and
    dilation as in :func:`conv2d`); with ``bias=True`` returns (dw, db) where db[k] = Σ_n,p,q dy[n,k,p,q].
    ``channels``: only these output channels get a gradient (pruned ones are zero, their work
    skipped; not with groups)."""
    x, dy = _array("x", x, 4), _array("dy", dy, 4)
    if channels is not None and groups != 1:
        raise ValueError("channel pruning of a grouped convolution's weight gradient is not supported")
    if channels is not None:
        return pruned_weight_gradient(
            lambda kept_dy, kept_shape: conv2d_grad_weight(x, kept_dy, kept_shape, stride, padding, fmt,
                                                           dilation=dilation, bias=bias, counter=counter, op=op,
                                                           seed=seed),
            dy, weight_shape, channels, bias, counter, op,
        )  # fmt: skip
    k, cg, r, s = (int(d) for d in weight_shape)
    n, c, h, width = x.shape
    groups = _groups(groups, c, k)
    _shape("x", x, (n, cg * groups, h, width))
    stride, ph, pw, dil, p, q = _conv_geometry(h, width, r, s, stride, padding, dilation)
    _shape("dy", dy, (n, k, p, q))
    xq, dyq = _operands(fmt, seed, (x, "activations", None), (dy, "errors", None))
    integer = _integer(xq, dyq)
    x_values = _values(xq, integer)
    dy_values = _values(dyq, integer)
    macs = n * k * cg * p * q * r * s
    sparsity = None
    if counter is not None:  # per group: Σ over (n, p, q) of nonzero errors × nonzero taps
        x_stats, dy_stats = map_zeros(x_values, groups), map_zeros(dy_values, groups)
        nonzero = window_products(dy_stats.over_channels, x_stats.over_channels, r, s, stride, ph, pw, dil)
        zeros, pairs = {"x": x_stats.zeros, "dy": dy_stats.zeros}, {"x": x_stats.pairs, "dy": dy_stats.pairs}
        sparsity = ((zeros, pairs), macs - nonzero)
    bounds = _bounds(integer, dyq, xq)

    direct = _direct_weight(groups, c, k, integer, n * p * q * bounds[0] * bounds[1])  # see kernels.conv
    pixel_major = not direct and groups == 1 and c >= PIXEL_MAJOR_CHANNELS["backward"]

    def partial_rows(lo: int, hi: int) -> np.ndarray:  # pixel-major: dY.T (K, m·P·Q) @ rows (m·P·Q, R·S·C)
        rows = _workspace(((hi - lo) * p * q, r * s * c))
        conv_kernels.pixel_rows_part(x_values, r, s, stride, ph, pw, p, q, dil, rows, lo, hi)
        return _matmul_block(_pixel_errors(dy_values, lo, hi, rows.shape[1]).T, rows, integer, bounds)

    def partial(lo: int, hi: int) -> np.ndarray:  # one piece of the batch, its columns built in cache
        cols = _workspace((c * r * s, (hi - lo) * p * q))
        conv_kernels.im2col_part(x_values[lo:hi], r, s, stride, ph, pw, p, q, dil, cols, 0, c * r * s)
        return _grouped_matmul(_error_columns(dy_values, lo, hi).reshape(groups, k // groups, -1),
                               cols.reshape(groups, -1, cols.shape[1]).transpose(0, 2, 1), integer, bounds,
                               threaded=False)  # fmt: skip

    if direct:
        acc = np.empty((k, cg, r, s))
        in_parts(k, dy.size * cg * r * s, lambda lo, hi: conv_kernels.direct_weight_part(
            x_values, dy_values, stride, ph, pw, dil, _lane_samples(integer, bounds, n), acc, lo, hi))  # fmt: skip
        acc = acc.reshape(k, -1)
    else:
        # the pieces add up in float64, in batch order: exact for integer operands (the same integers as
        # one GEMM), and for floats each piece's sum is rounded once more (see README, training speed)
        acc = np.zeros((k, cg * r * s), np.float64)
        for part in _by_samples(n, c * r * s * p * q * 4, partial_rows if pixel_major else partial):
            acc += part
    if pixel_major:  # (K, R, S, C) -> (K, C, R, S)
        acc = np.ascontiguousarray(acc.reshape(k, r, s, c).transpose(0, 3, 1, 2)).reshape(k, -1)
    if not integer or bounds[0] * bounds[1] * n * p * q < FLOAT32_EXACT:  # as one float32 GEMM gives it
        acc = acc.astype(np.float32)
    scale = (dyq.scale.reshape(()) * xq.scale.reshape(())) if integer else 1
    dw, saturated = _finish(acc, integer, fmt, scale, seed, n * p * q * bounds[0] * bounds[1])
    dw, grad_saturated = _round_gradient(dw.reshape(k, cg, r, s), fmt, seed)
    saturations = {"x": xq.saturated, "dy": dyq.saturated, "accumulator": saturated, "gradient": grad_saturated}
    writes = {"dw": dw.size}
    if bias:
        db, bias_saturated = _round_gradient(dyq.dequantize().sum(axis=(0, 2, 3), dtype=np.float32), fmt, seed + 1)
        saturations["bias_gradient"] = bias_saturated
        writes["db"] = k
    _record(counter, op, xq, dyq, macs, {"x": x.size, "dy": dy.size}, writes, saturations, dy.size if bias else 0,
            sparsity)  # fmt: skip
    return (dw, db) if bias else dw


# -- linear --------------------------------------------------------------------------------------------


def linear(x, w, b=None, fmt=None, *, approx=None, counter=None, op="linear", seed=0) -> np.ndarray:
    """y = x·wᵀ (+ b) for x (N, in) and w (out, in); ``approx`` as in :func:`conv2d`."""
    x, w = _array("x", x, 2), _array("w", w, 2)
    n, f_in = x.shape
    f_out = w.shape[0]
    _shape("w", w, (f_out, f_in))
    xq, wq = _operands(fmt, seed, (x, "activations", 0), (w, "weights", 0))
    integer = _integer(xq, wq)
    bounds = _bounds(integer, xq, wq)
    x_values, w_values = _read(approx, seed, xq, wq) if approx is not None else (_values(xq, integer),
                                                                                   _values(wq, integer))  # fmt: skip
    sparsity = None
    if counter is not None:
        nonzero = _pairs(np.count_nonzero(x_values, axis=0), np.count_nonzero(w_values, axis=0))
        sparsity = (_zeros(x=x_values, w=w_values), n * f_in * f_out - nonzero)
    if approx is None:
        acc = _matmul(x_values, w_values.T, integer, bounds)
    else:
        acc, bounds = approx.matmul(x_values, np.ascontiguousarray(w_values.T), xq.bits, wq.bits), (np.inf, np.inf)
    scale = (xq.scale.reshape(-1, 1) * wq.scale.reshape(1, -1)) if integer else 1
    y, saturated = _finish(acc, integer, fmt, scale, seed, f_in * bounds[0] * bounds[1])
    reads = {"x": x.size, "w": w.size}
    if b is not None:
        b = _array("b", b, 1)
        _shape("b", b, (f_out,))
        y = y + b
        reads["b"] = f_out
    saturations = {"x": xq.saturated, "w": wq.saturated, "accumulator": saturated}
    _record(counter, op, xq, wq, n * f_in * f_out, reads, {"y": y.size}, saturations, y.size if b is not None else 0,
            sparsity)  # fmt: skip
    return np.ascontiguousarray(y, dtype=np.float32)


def linear_grad_input(dy, w, fmt=None, *, counter=None, op="linear_grad_input", seed=0) -> np.ndarray:
    """dx = dy·w for dy (N, out) and w (out, in)."""
    dy, w = _array("dy", dy, 2), _array("w", w, 2)
    n, f_out = dy.shape
    f_in = w.shape[1]
    _shape("w", w, (f_out, f_in))
    dyq, wq = _operands(fmt, seed, (dy, "errors", 0), (w, "weights", 1))
    integer = _integer(dyq, wq)
    bounds = _bounds(integer, dyq, wq)
    dy_values, w_values = _values(dyq, integer), _values(wq, integer)
    sparsity = None
    if counter is not None:
        nonzero = _pairs(np.count_nonzero(dy_values, axis=0), np.count_nonzero(w_values, axis=1))
        sparsity = (_zeros(dy=dy_values, w=w_values), n * f_in * f_out - nonzero)
    acc = _matmul(dy_values, w_values, integer, bounds)
    scale = (dyq.scale.reshape(-1, 1) * wq.scale.reshape(1, -1)) if integer else 1
    dx, saturated = _finish(acc, integer, fmt, scale, seed, f_out * bounds[0] * bounds[1])
    saturations = {"dy": dyq.saturated, "w": wq.saturated, "accumulator": saturated}
    _record(counter, op, dyq, wq, n * f_in * f_out, {"dy": dy.size, "w": w.size}, {"dx": dx.size}, saturations,
            sparsity=sparsity)  # fmt: skip
    return dx


def linear_grad_weight(x, dy, fmt=None, *, bias=False, counter=None, op="linear_grad_weight", seed=0):
    """dw = dyᵀ·x for x (N, in) and dy (N, out); with ``bias=True`` returns (dw, db = Σ_n dy)."""
    x, dy = _array("x", x, 2), _array("dy", dy, 2)
    n, f_in = x.shape
    f_out = dy.shape[1]
    _shape("dy", dy, (n, f_out))
    xq, dyq = _operands(fmt, seed, (x, "activations", None), (dy, "errors", None))
    integer = _integer(xq, dyq)
    bounds = _bounds(integer, dyq, xq)
    x_values, dy_values = _values(xq, integer), _values(dyq, integer)
    sparsity = None
    if counter is not None:
        nonzero = _pairs(np.count_nonzero(x_values, axis=1), np.count_nonzero(dy_values, axis=1))
        sparsity = (_zeros(x=x_values, dy=dy_values), n * f_in * f_out - nonzero)
    acc = _matmul(dy_values.T, x_values, integer, bounds)
    scale = (dyq.scale.reshape(()) * xq.scale.reshape(())) if integer else 1
    dw, saturated = _finish(acc, integer, fmt, scale, seed, n * bounds[0] * bounds[1])
    dw, grad_saturated = _round_gradient(dw, fmt, seed)
    saturations = {"x": xq.saturated, "dy": dyq.saturated, "accumulator": saturated, "gradient": grad_saturated}
    writes = {"dw": dw.size}
    if bias:
        db, bias_saturated = _round_gradient(dyq.dequantize().sum(axis=0, dtype=np.float32), fmt, seed + 1)
        saturations["bias_gradient"] = bias_saturated
        writes["db"] = f_out
    _record(counter, op, xq, dyq, n * f_in * f_out, {"x": x.size, "dy": dy.size}, writes, saturations,
            dy.size if bias else 0, sparsity)  # fmt: skip
    return (dw, db) if bias else dw
