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
import threading
from typing import Any

import numpy as np

from e2sim.config.precision import PrecisionSpec, read_precision
from e2sim.config.reader import ProblemLog, Section
from e2sim.counting import OpCounter
from e2sim.functional_layers import (
    _array,
    _pair,
    _shape,
    _stride,
    _window,
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
from e2sim.numerics.quantize import (
    FLOAT32_EXACT,
    Quantized,
    exact_integer_matmul,
    quantize,
    saturate_accumulator,
)
from e2sim.numerics.seeds import derive_seed
from e2sim.numerics.zeros import map_zeros, tap_nonzeros, weight_zeros, window_products
from e2sim.numerics.zeros import nonzero_pairs as _pairs
from e2sim.numerics.zeros import operand_zeros as _zeros
from e2sim.process import in_parallel, in_parts, kernel_threads, split

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


# -- quantized GEMMs -----------------------------------------------------------------------------------


def _operands(fmt: PrecisionSpec | None, seed: int, *specs: tuple[np.ndarray, str, int | None]):
    """Quantize each (array, role, scale axis or None if that axis is summed over) for one op."""
    if fmt is None:
        return [Quantized(a, None, 0, 32) for a, _, _ in specs]
    out = []
    for i, (a, role, axis) in enumerate(specs):
        granularity = fmt.scale(role)
        if granularity in ("channel", "sample") and axis is None:
            granularity = "tensor"
        out.append(quantize(a, getattr(fmt, role), fmt.rounding, granularity, axis or 0, derive_seed(seed, i)))
    return out


def _integer(*operands: Quantized) -> bool:
    return all(q.is_integer for q in operands)


_LOCAL = threading.local()
_WORKSPACE_ARRAYS = 4


def _workspace(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A scratch array reused across calls of this thread (large fresh arrays cost page faults).
    Only for intermediates that never leave the call that asked for them."""
    cache = _LOCAL.__dict__.setdefault("arrays", {})
    key = (tuple(shape), np.dtype(dtype).str)
    array = cache.pop(key, None)
    if array is None:
        array = np.empty(shape, dtype)
        while len(cache) >= _WORKSPACE_ARRAYS:
            cache.pop(next(iter(cache)))
    cache[key] = array  # most recently used last
    return array


PARALLEL_MACS = 1 << 22  # GEMMs from this size split their output columns over the kernel threads


PIECE_BYTES = 1 << 20  # a conv builds its columns (or their gradient) this many bytes at a time, in cache


def _by_samples(n: int, sample_bytes: int, work) -> list:
    """``work(lo, hi)`` over pieces of the batch of about ``PIECE_BYTES`` of columns each, on the
    kernel threads; the results in order. The pieces depend on the sizes only, never on the threads."""
    step = max(1, PIECE_BYTES // max(sample_bytes, 1))
    return in_parallel([lambda lo=lo: work(lo, min(lo + step, n)) for lo in range(0, n, step)])


def _matmul(a, b, integer: bool, bounds: tuple[float, float], out=None) -> np.ndarray:
    """a @ b; exact for integer operands (see exact_integer_matmul). A large one is split into
    blocks of output columns, one per kernel thread (each column summed as in one call)."""
    parts = split(b.shape[1], kernel_threads(), 256) if a.shape[0] * a.shape[1] * b.shape[1] >= PARALLEL_MACS else []
    if len(parts) <= 1:
        return _matmul_block(a, b, integer, bounds, out)
    blocks = in_parallel([lambda lo=lo, hi=hi: _matmul_block(a, b[:, lo:hi], integer, bounds, None)
                          for lo, hi in parts])  # fmt: skip
    if out is not None and out.dtype == blocks[0].dtype:
        return np.concatenate(blocks, axis=1, out=out)
    return np.concatenate(blocks, axis=1)


def _matmul_block(a, b, integer: bool, bounds: tuple[float, float], out=None) -> np.ndarray:
    if integer:
        return exact_integer_matmul(a, b, *bounds, out=out)
    return np.matmul(a, b, out=out)


def _grouped_matmul(a, b, integer: bool, bounds: tuple[float, float], out=None, threaded=True) -> np.ndarray:
    """The product of each group's blocks, a (G, m, k) @ b (G, k, n), as one (G·m, n) matrix; one
    group is :func:`_matmul` (``threaded``: split over the kernel threads; not in a piece that already
    runs on one). Integer groups whose sums stay below 2**24 run as one batched float32 GEMM
    (exact); wider ones group by group through ``exact_integer_matmul``."""
    groups, m, k = a.shape
    if groups == 1:
        return (_matmul if threaded else _matmul_block)(a[0], b[0], integer, bounds, out)
    if integer and bounds[0] * bounds[1] * k >= FLOAT32_EXACT:
        return np.concatenate([_matmul_block(a[g], b[g], integer, bounds) for g in range(groups)], axis=0)
    a, b = a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
    if k == 1:  # outer products (a depthwise conv's input gradient): numpy's batched matmul is slow here
        return np.multiply(a, b).reshape(groups * m, -1)
    return np.matmul(a, b).reshape(groups * m, -1)


def _groups(groups: Any, in_channels: int, out_channels: int) -> int:
    if not isinstance(groups, int | np.integer) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups {groups} must divide the input channels ({in_channels}) and the filters "
                         f"({out_channels})")  # fmt: skip
    return int(groups)


def _dilation(value: Any) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"dilation must be a positive integer, got {value!r}")
    return int(value)


def _conv_geometry(h: int, width: int, r: int, s: int, stride, padding, dilation):
    """(stride, pad_h, pad_w, dilation, P, Q) of a conv; a dilated kernel spans d·(R − 1) + 1 rows."""
    stride, (ph, pw), dilation = _stride(stride), _pair("padding", padding, 0), _dilation(dilation)
    p = _window(h, dilation * (r - 1) + 1, stride, ph)
    return stride, ph, pw, dilation, p, _window(width, dilation * (s - 1) + 1, stride, pw)


def _im2col(x, r, s, stride, ph, pw, p, q, dil, cols) -> np.ndarray:
    """``conv_kernels.im2col``, its rows split over the kernel threads when it is large."""
    in_parts(cols.shape[0], cols.size,
              lambda lo, hi: conv_kernels.im2col_part(x, r, s, stride, ph, pw, p, q, dil, cols, lo, hi))  # fmt: skip
    return cols


def _finish(acc, integer: bool, fmt: PrecisionSpec | None, scale: Any, seed: int, bound: float = np.inf):
    """Saturate exact sums to the accumulator and apply the scales, or round a float accumulation.
    ``bound`` bounds |acc| from the operands (no saturation scan below the accumulator's range)."""
    if fmt is None:
        return acc.astype(np.float32, copy=False), 0
    if integer:
        acc, saturated = saturate_accumulator(acc, fmt.accumulator, bound)
        return (acc * scale).astype(np.float32, copy=False), saturated
    rounded = quantize(acc.astype(np.float32), fmt.accumulator, fmt.rounding, seed=derive_seed(seed, 99))
    return rounded.values, rounded.saturated


def _error_columns(dy: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Samples ``lo`` to ``hi`` of dy (N, K, P, Q) as GEMM columns (K, (hi − lo)·P·Q): a view for one
    sample, else a copy of the piece alone (in cache), never of the whole batch."""
    piece = dy[lo:hi]
    return piece[0].reshape(dy.shape[1], -1) if hi - lo == 1 else piece.transpose(1, 0, 2, 3).reshape(dy.shape[1], -1)


def _bounds(integer: bool, a: Quantized, b: Quantized) -> tuple[float, float]:
    """Bounds on |a| and |b| for exact integer GEMMs and their saturation scan (unused otherwise,
    and not worth a pass over float operands)."""
    return (a.bound(), b.bound()) if integer else (np.inf, np.inf)


def _values(q: Quantized, integer: bool) -> np.ndarray:
    return q.values if integer else q.dequantize()


def _read(approx, seed: int, *operands: Quantized) -> list[np.ndarray]:
    """The integer (activations, weights) of a forward GEMM as an approximate mode reads them."""
    if not _integer(*operands):
        raise ValueError("the approximate mode needs intN weights and activations (set a precision)")
    rng = np.random.default_rng(derive_seed(seed, 55))
    return [approx.read_operand(q, role, rng) for q, role in zip(operands, ("activations", "weights"), strict=True)]


def _record(counter, op, a: Quantized, b: Quantized, macs, reads, writes, saturated, elementwise=0,
            sparsity=None):  # fmt: skip
    """``sparsity``: ((zeros, run-length pairs) per operand, MACs with a zero operand)."""
    if counter is not None:
        (zeros, pairs), zero_macs = sparsity if sparsity is not None else (({}, {}), 0)
        counter.record(
            op, macs={f"{a.bits}x{b.bits}": macs}, elementwise_ops=elementwise, reads=reads, writes=writes,
            saturated=saturated, zeros=zeros, rle_pairs=pairs, zero_macs=zero_macs,
        )  # fmt: skip


def _round_gradient(g: np.ndarray, fmt: PrecisionSpec | None, seed: int) -> tuple[np.ndarray, int]:
    if fmt is None:
        return g, 0
    q = quantize(g, fmt.gradients, fmt.rounding, fmt.scale("gradients"), 0, derive_seed(seed, 7))
    return q.dequantize(), q.saturated


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
    if approx is None:
        def product(lo: int, hi: int) -> np.ndarray:
            cols = _workspace((c * r * s, (hi - lo) * p * q))
            conv_kernels.im2col_part(x_values[lo:hi], r, s, stride, ph, pw, p, q, dil, cols, 0, c * r * s)
            return _grouped_matmul(w_blocks, cols.reshape(groups, -1, cols.shape[1]), integer, bounds, threaded=False)

        acc = np.concatenate(_by_samples(n, c * r * s * p * q * 4, product), axis=1)
    else:
        cols = _im2col(x_values, r, s, stride, ph, pw, p, q, dil, _workspace((c * r * s, n * p * q)))
        col_blocks = cols.reshape(groups, -1, n * p * q)
        acc = np.concatenate([approx.matmul(w_blocks[g], col_blocks[g], wq.bits, xq.bits) for g in range(groups)])
        bounds = (np.inf, np.inf)
    # per filter × per sample (or tensor) scales, broadcast over each sample's pixels
    scale = (wq.scale.reshape(-1, 1, 1) * xq.scale.reshape(1, -1, 1)) if integer else 1
    y, saturated = _finish(acc.reshape(k, n, p * q), integer, fmt, scale, seed,
                           c // groups * r * s * bounds[0] * bounds[1])  # fmt: skip
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
    w_blocks = w_values.reshape(groups, kg, -1).transpose(0, 2, 1)
    wide = integer and bounds[0] * bounds[1] * kg >= FLOAT32_EXACT  # exact sums in float64 (_grouped_matmul)
    acc = np.zeros((n, c, h, width), np.float64 if wide else np.float32)

    def add_windows(lo: int, hi: int) -> None:
        errors = _error_columns(dy_values, lo, hi).reshape(groups, kg, -1)
        dcols = _grouped_matmul(w_blocks, errors, integer, bounds, _workspace((c * r * s, (hi - lo) * p * q)),
                                threaded=False)  # fmt: skip
        conv_kernels.col2im_part(np.ascontiguousarray(dcols, acc.dtype), acc[lo:hi], r, s, stride, ph, pw, p, q, dil,
                                 0, c)  # fmt: skip

    _by_samples(n, c * r * s * p * q * 4, add_windows)
    scale = 1
    if integer:  # the weights' scale per channel of a group is the same in every group
        w_scale = wq.scale.reshape(-1)
        w_scale = np.tile(w_scale, groups) if groups > 1 and w_scale.size > 1 else w_scale
        scale = w_scale.reshape(1, -1, 1, 1) * dyq.scale.reshape(-1, 1, 1, 1)
    step = stride // math.gcd(stride, dil)  # taps of one window row that can land on one input row
    overlap = -(-r // step) * -(-s // step)  # window positions that land on one input element
    dx, saturated = _finish(acc, integer, fmt, scale, seed, kg * overlap * bounds[0] * bounds[1])
    saturations = {"dy": dyq.saturated, "w": wq.saturated, "accumulator": saturated}
    _record(counter, op, dyq, wq, macs, {"dy": dy.size, "w": w.size}, {"dx": dx.size}, saturations,
            sparsity=sparsity)  # fmt: skip
    return dx


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

    def partial(lo: int, hi: int) -> np.ndarray:  # one piece of the batch, its columns built in cache
        cols = _workspace((c * r * s, (hi - lo) * p * q))
        conv_kernels.im2col_part(x_values[lo:hi], r, s, stride, ph, pw, p, q, dil, cols, 0, c * r * s)
        return _grouped_matmul(_error_columns(dy_values, lo, hi).reshape(groups, k // groups, -1),
                               cols.reshape(groups, -1, cols.shape[1]).transpose(0, 2, 1), integer, bounds,
                               threaded=False)  # fmt: skip

    # the pieces add up in float64, in batch order: exact for integer operands (the same integers as
    # one GEMM), and for floats each piece's sum is rounded once more (see README, training speed)
    acc = np.zeros((k, cg * r * s), np.float64)
    for part in _by_samples(n, c * r * s * p * q * 4, partial):
        acc += part
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
