"""The functional kernel API on float32 numpy arrays (NCHW).

``fmt=None`` computes in fp32. With a precision (``e2sim.functional.precision(...)`` or a workload's
``precision``), the operands of every GEMM are quantized to their role's format — activations and
weights forward, errors and weights for the input gradient, activations and errors for the weight
gradient — integer products are summed exactly and saturated to the accumulator width, and
weight gradients are rounded to the ``gradients`` format. Results come back dequantized (float32).
Element-wise layers (batch norm, ReLU, pooling, loss) compute in fp32.

A per-sample or per-channel scale along a dimension the GEMM sums over cannot be factored out of
the sum; such an operand gets one scale per tensor in that op (e.g. activations in the weight
gradient). Pass ``counter`` (an :class:`OpCounter`) and ``op`` to record what ran; ``seed`` drives
stochastic rounding and never changes results in ``nearest`` or ``truncate`` mode.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from e2sim.config.precision import PrecisionSpec, read_precision
from e2sim.config.reader import ProblemLog, Section
from e2sim.counting import OpCounter
from e2sim.graph import elementwise as ew_ops
from e2sim.kernels import conv as conv_kernels
from e2sim.kernels import layers as layer_kernels
from e2sim.numerics.quantize import (
    Quantized,
    derive_seed,
    exact_integer_matmul,
    quantize,
    saturate_accumulator,
)
from e2sim.numerics.zeros import nonzero_pairs as _pairs
from e2sim.numerics.zeros import operand_zeros as _zeros

__all__ = [
    "OpCounter", "add", "avg_pool2d", "avg_pool2d_backward", "batchnorm", "batchnorm_backward",
    "batchnorm_eval", "conv2d", "conv2d_grad_input", "conv2d_grad_weight", "global_avg_pool",
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


# -- argument checks ---------------------------------------------------------------------------------


def _array(name: str, a: Any, ndim: int | tuple[int, ...]) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{name} must be a float32 numpy array, got {got}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _pair(name: str, value: Any, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) and v >= minimum for v in pair):
        raise ValueError(f"{name} must be an integer >= {minimum} or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _stride(value: Any) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"stride must be a positive integer, got {value!r}")
    return int(value)


def _window(size: int, kernel: int, stride: int, pad: int) -> int:
    out = (size + 2 * pad - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"window {kernel} does not fit an input of {size} with padding {pad}")
    return out


def _shape(name: str, a: np.ndarray, expected: tuple[int, ...]) -> None:
    if a.shape != tuple(expected):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(expected)}")


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


def _matmul(a, b, integer: bool, bounds: tuple[float, float], out=None) -> np.ndarray:
    """a @ b; exact for integer operands (see exact_integer_matmul)."""
    if integer:
        return exact_integer_matmul(a, b, *bounds, out=out)
    return np.matmul(a, b, out=out)


def _finish(acc, integer: bool, fmt: PrecisionSpec | None, scale: Any, seed: int, bound: float = np.inf):
    """Saturate exact sums to the accumulator and apply the scales, or round a float accumulation.
    ``bound`` bounds |acc| from the operands (no saturation scan below the accumulator's range)."""
    if fmt is None:
        return acc.astype(np.float32, copy=False), 0
    if integer:
        acc, saturated = saturate_accumulator(acc, fmt.accumulator, bound)
        return (acc * scale).astype(np.float32), saturated
    rounded = quantize(acc.astype(np.float32), fmt.accumulator, fmt.rounding, seed=derive_seed(seed, 99))
    return rounded.values, rounded.saturated


def _per_column(sample_scale: np.ndarray, pixels: int) -> np.ndarray:
    """A per-sample scale spread over the (n, p, q) columns of a conv GEMM (or kept scalar)."""
    flat = sample_scale.reshape(-1)
    return np.repeat(flat, pixels)[None, :] if flat.size > 1 else flat.reshape(())


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


def conv2d(x, w, b=None, stride=1, padding=0, fmt=None, *, approx=None, counter=None, op="conv2d",
           seed=0) -> np.ndarray:  # fmt: skip
    """y[n,k,p,q] = Σ_c,r,s x[n,c,p·stride−ph+r, q·stride−pw+s]·w[k,c,r,s] (+ b[k]).
    ``approx`` (an ApproxDatapath): compute on an accelerator's approximate mode (intN only)."""
    x, w = _array("x", x, 4), _array("w", w, 4)
    n, c, h, width = x.shape
    k, r, s = w.shape[0], w.shape[2], w.shape[3]
    _shape("w", w, (k, c, r, s))
    stride, (ph, pw) = _stride(stride), _pair("padding", padding, 0)
    p, q = _window(h, r, stride, ph), _window(width, s, stride, pw)
    xq, wq = _operands(fmt, seed, (x, "activations", 0), (w, "weights", 0))
    integer = _integer(xq, wq)
    x_values, w_values = (
        _read(approx, seed, xq, wq) if approx is not None else (_values(xq, integer), _values(wq, integer))
    )
    cols = conv_kernels.im2col(x_values, r, s, stride, ph, pw, p, q, _workspace((c * r * s, n * p * q)))
    macs = n * k * c * p * q * r * s
    sparsity = None
    if counter is not None:  # MACs whose window tap or weight is zero (padding included)
        nonzero = _pairs(np.count_nonzero(w_values.reshape(k, -1), axis=0), np.count_nonzero(cols, axis=1))
        sparsity = (_zeros(x=x_values, w=w_values), macs - nonzero)
    bounds = (wq.bound(), xq.bound())
    if approx is None:
        acc = _matmul(w_values.reshape(k, -1), cols, integer, bounds)
    else:
        acc, bounds = approx.matmul(w_values.reshape(k, -1), cols, wq.bits, xq.bits), (np.inf, np.inf)
    scale = (wq.scale.reshape(-1, 1) * _per_column(xq.scale, p * q)) if integer else 1
    y, saturated = _finish(acc, integer, fmt, scale, seed, c * r * s * bounds[0] * bounds[1])
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


def conv2d_grad_input(dy, w, input_shape, stride=1, padding=0, fmt=None, *, channels=None, counter=None,
                      op="conv2d_grad_input", seed=0) -> np.ndarray:  # fmt: skip
    """dx = transposed convolution of dy with w (the input gradient of :func:`conv2d`).
    ``channels``: compute with these output-error channels only (the others are pruned: their
    work is neither done nor counted, except as skipped MACs)."""
    dy, w = _array("dy", dy, 4), _array("w", w, 4)
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
    _shape("w", w, (k, c, r, s))
    stride, (ph, pw) = _stride(stride), _pair("padding", padding, 0)
    p, q = _window(h, r, stride, ph), _window(width, s, stride, pw)
    _shape("dy", dy, (n, k, p, q))
    dyq, wq = _operands(fmt, seed, (dy, "errors", 0), (w, "weights", 1))
    integer = _integer(dyq, wq)
    dy_mat = _values(dyq, integer).transpose(1, 0, 2, 3).reshape(k, -1)
    w_values = _values(wq, integer)
    sparsity = None
    if counter is not None:
        nonzero = _pairs(np.count_nonzero(dy_mat, axis=1), np.count_nonzero(w_values.reshape(k, -1), axis=1))
        sparsity = (_zeros(dy=_values(dyq, integer), w=w_values), n * k * c * p * q * r * s - nonzero)
    bounds = (wq.bound(), dyq.bound())
    dcols = _matmul(_values(wq, integer).reshape(k, -1).T, dy_mat, integer, bounds, _workspace((c * r * s, n * p * q)))
    acc = conv_kernels.col2im(np.ascontiguousarray(dcols), n, c, h, width, r, s, stride, ph, pw, p, q)
    scale = (wq.scale.reshape(1, -1, 1, 1) * dyq.scale.reshape(-1, 1, 1, 1)) if integer else 1
    overlap = -(-r // stride) * -(-s // stride)  # window positions that land on one input element
    dx, saturated = _finish(acc, integer, fmt, scale, seed, k * overlap * bounds[0] * bounds[1])
    saturations = {"dy": dyq.saturated, "w": wq.saturated, "accumulator": saturated}
    _record(counter, op, dyq, wq, n * k * c * p * q * r * s, {"dy": dy.size, "w": w.size}, {"dx": dx.size},
            saturations, sparsity=sparsity)  # fmt: skip
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


def conv2d_grad_weight(x, dy, weight_shape, stride=1, padding=0, fmt=None, *, bias=False, channels=None,
                       counter=None, op="conv2d_grad_weight", seed=0):  # fmt: skip
    """dw[k,c,r,s] = Σ_n,p,q dy[n,k,p,q]·x[n,c,p·stride−ph+r, q·stride−pw+s]; with ``bias=True``
    returns (dw, db) where db[k] = Σ_n,p,q dy[n,k,p,q]. ``channels``: only these output channels
    get a gradient (pruned ones are zero, their work skipped)."""
    x, dy = _array("x", x, 4), _array("dy", dy, 4)
    if channels is not None:
        return pruned_weight_gradient(
            lambda kept_dy, kept_shape: conv2d_grad_weight(x, kept_dy, kept_shape, stride, padding, fmt, bias=bias,
                                                           counter=counter, op=op, seed=seed),
            dy, weight_shape, channels, bias, counter, op,
        )  # fmt: skip
    k, c, r, s = (int(d) for d in weight_shape)
    n, h, width = x.shape[0], x.shape[2], x.shape[3]
    _shape("x", x, (n, c, h, width))
    stride, (ph, pw) = _stride(stride), _pair("padding", padding, 0)
    p, q = _window(h, r, stride, ph), _window(width, s, stride, pw)
    _shape("dy", dy, (n, k, p, q))
    xq, dyq = _operands(fmt, seed, (x, "activations", None), (dy, "errors", None))
    integer = _integer(xq, dyq)
    x_values = _values(xq, integer)
    cols = conv_kernels.im2col(x_values, r, s, stride, ph, pw, p, q, _workspace((c * r * s, n * p * q)))
    dy_mat = _values(dyq, integer).transpose(1, 0, 2, 3).reshape(k, -1)
    sparsity = None
    if counter is not None:
        nonzero = _pairs(np.count_nonzero(dy_mat, axis=0), np.count_nonzero(cols, axis=0))
        sparsity = (_zeros(x=x_values, dy=_values(dyq, integer)), n * k * c * p * q * r * s - nonzero)
    bounds = (dyq.bound(), xq.bound())
    acc = _matmul(dy_mat, cols.T, integer, bounds)
    scale = (dyq.scale.reshape(()) * xq.scale.reshape(())) if integer else 1
    dw, saturated = _finish(acc, integer, fmt, scale, seed, n * p * q * bounds[0] * bounds[1])
    dw, grad_saturated = _round_gradient(dw.reshape(k, c, r, s), fmt, seed)
    saturations = {"x": xq.saturated, "dy": dyq.saturated, "accumulator": saturated, "gradient": grad_saturated}
    writes = {"dw": dw.size}
    if bias:
        db, bias_saturated = _round_gradient(dyq.dequantize().sum(axis=(0, 2, 3), dtype=np.float32), fmt, seed + 1)
        saturations["bias_gradient"] = bias_saturated
        writes["db"] = k
    _record(counter, op, xq, dyq, n * k * c * p * q * r * s, {"x": x.size, "dy": dy.size}, writes, saturations,
            dy.size if bias else 0, sparsity)  # fmt: skip
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
    bounds = (xq.bound(), wq.bound())
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
    bounds = (dyq.bound(), wq.bound())
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
    bounds = (dyq.bound(), xq.bound())
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


# -- element-wise layers (fp32) ------------------------------------------------------------------------


def _channels_view(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) or (N, F) as (N, C, H·W) without copying."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def _count(counter, op, elementwise, reads, writes) -> None:
    if counter is not None:
        counter.record(op, elementwise_ops=elementwise, reads=reads, writes=writes)


def batchnorm(x, gamma, beta, eps=1e-5, *, counter=None, op="batchnorm"):
    """Training-mode batch norm over (N, H, W) per channel. Returns (y, mean, inv_std)."""
    x = _array("x", x, (2, 4))
    gamma, beta = _array("gamma", gamma, 1), _array("beta", beta, 1)
    _shape("gamma", gamma, (x.shape[1],))
    _shape("beta", beta, (x.shape[1],))
    y, mean, inv_std = layer_kernels.batchnorm_train(_channels_view(x), gamma, beta, float(eps))
    c = x.shape[1]
    _count(counter, op, ew_ops.batchnorm_forward(x.size, c), {"x": x.size, "gamma": c, "beta": c},
           {"y": x.size, "mean": c, "inv_std": c})  # fmt: skip
    return y.reshape(x.shape), mean, inv_std


def batchnorm_eval(x, gamma, beta, running_mean, running_var, eps=1e-5) -> np.ndarray:
    """Inference-mode batch norm with running statistics."""
    x = _array("x", x, (2, 4))
    names = ("gamma", "beta", "running_mean", "running_var")
    arrays = [_array(name, a, 1) for name, a in zip(names, (gamma, beta, running_mean, running_var), strict=True)]
    for name, a in zip(names, arrays, strict=True):
        _shape(name, a, (x.shape[1],))
    return layer_kernels.batchnorm_eval(_channels_view(x), *arrays, float(eps)).reshape(x.shape)


def batchnorm_backward(dy, x, gamma, mean, inv_std, *, counter=None, op="batchnorm_backward", weight_op=None):
    """Returns (dx, dgamma, dbeta) of training-mode batch norm; the input-gradient work is recorded
    under ``op``, the parameter-gradient work under ``weight_op`` (default ``op + ".weight"``)."""
    x = _array("x", x, (2, 4))
    dy = _array("dy", dy, x.ndim)
    _shape("dy", dy, x.shape)
    arrays = [_array(name, a, 1) for name, a in (("gamma", gamma), ("mean", mean), ("inv_std", inv_std))]
    dx, dgamma, dbeta = layer_kernels.batchnorm_backward(_channels_view(dy), _channels_view(x), *arrays)
    if counter is not None:
        c = x.shape[1]
        counter.record(
            op,
            elementwise_ops=ew_ops.batchnorm_backward_data(x.size),
            reads={"dy": x.size, "x": x.size, "gamma": c, "mean": c, "inv_std": c},
            writes={"dx": x.size},
        )
        counter.record(
            weight_op or op + ".weight",
            elementwise_ops=ew_ops.batchnorm_backward_weight(x.size),
            reads={"dy": x.size, "x": x.size, "mean": c, "inv_std": c},
            writes={"dgamma": c, "dbeta": c},
        )
    return dx.reshape(x.shape), dgamma, dbeta


def relu(x, *, counter=None, op="relu") -> np.ndarray:
    x = _array("x", x, (2, 3, 4))
    _count(counter, op, x.size, {"x": x.size}, {"y": x.size})
    return layer_kernels.relu(x)


def relu_backward(dy, y, *, counter=None, op="relu_backward") -> np.ndarray:
    y = _array("y", y, (2, 3, 4))
    dy = _array("dy", dy, y.ndim)
    _shape("dy", dy, y.shape)
    _count(counter, op, y.size, {"dy": y.size, "y": y.size}, {"dx": y.size})
    return layer_kernels.relu_backward(dy, y)


def _pool_geometry(x_shape, kernel, stride, padding):
    r, s = _pair("kernel", kernel, 1)
    stride = r if stride is None else _stride(stride)
    ph, pw = _pair("padding", padding, 0)
    if 2 * ph > r or 2 * pw > s:
        raise ValueError(f"padding {padding!r} must be at most half the window {kernel!r}")
    return r, s, stride, ph, pw, _window(x_shape[2], r, stride, ph), _window(x_shape[3], s, stride, pw)


def max_pool2d(x, kernel, stride=None, padding=0, *, counter=None, op="max_pool2d"):
    """Returns (y, argmax); argmax holds r·S + s of each window's maximum (stride defaults to kernel)."""
    x = _array("x", x, 4)
    r, s, stride, ph, pw, p, q = _pool_geometry(x.shape, kernel, stride, padding)
    y, arg = layer_kernels.maxpool(x, r, s, stride, ph, pw, p, q)
    _count(counter, op, ew_ops.maxpool_forward(y.size, r * s), {"x": x.size}, {"y": y.size, "argmax": y.size})
    return y, arg


def max_pool2d_backward(dy, argmax, input_shape, kernel, stride=None, padding=0, *, counter=None,
                        op="max_pool2d_backward") -> np.ndarray:  # fmt: skip
    dy = _array("dy", dy, 4)
    r, s, stride, ph, pw, p, q = _pool_geometry(input_shape, kernel, stride, padding)
    _shape("dy", dy, (input_shape[0], input_shape[1], p, q))
    _shape("argmax", argmax, dy.shape)
    if argmax.size and (argmax.min() < 0 or argmax.max() >= r * s):
        raise ValueError(f"argmax values must lie in [0, {r * s})")
    _count(
        counter,
        op,
        ew_ops.maxpool_backward(dy.size),
        {"dy": dy.size, "argmax": dy.size},
        {"dx": int(np.prod(input_shape))},
    )
    return layer_kernels.maxpool_backward(dy, argmax, int(input_shape[2]), int(input_shape[3]), s, stride, ph, pw)


def avg_pool2d(x, kernel, stride=None, padding=0, *, counter=None, op="avg_pool2d") -> np.ndarray:
    """Window means; padded positions count as zeros (the divisor is always the window size)."""
    x = _array("x", x, 4)
    r, s, stride, ph, pw, p, q = _pool_geometry(x.shape, kernel, stride, padding)
    y = layer_kernels.avgpool(x, r, s, stride, ph, pw, p, q)
    _count(counter, op, ew_ops.avgpool(y.size, r * s), {"x": x.size}, {"y": y.size})
    return y


def avg_pool2d_backward(dy, input_shape, kernel, stride=None, padding=0, *, counter=None,
                        op="avg_pool2d_backward") -> np.ndarray:  # fmt: skip
    dy = _array("dy", dy, 4)
    r, s, stride, ph, pw, p, q = _pool_geometry(input_shape, kernel, stride, padding)
    _shape("dy", dy, (input_shape[0], input_shape[1], p, q))
    _count(counter, op, ew_ops.avgpool(dy.size, r * s), {"dy": dy.size}, {"dx": int(np.prod(input_shape))})
    return layer_kernels.avgpool_backward(dy, int(input_shape[2]), int(input_shape[3]), r, s, stride, ph, pw)


def global_avg_pool(x, *, counter=None, op="global_avg_pool") -> np.ndarray:
    """(N, C, H, W) -> (N, C) channel means."""
    x = _array("x", x, 4)
    n, c, h, w = x.shape
    y = layer_kernels.avgpool(x, h, w, 1, 0, 0, 1, 1).reshape(n, c)
    _count(counter, op, ew_ops.avgpool(n * c, h * w), {"x": x.size}, {"y": y.size})
    return y


def global_avg_pool_backward(dy, input_shape, *, counter=None, op="global_avg_pool_backward") -> np.ndarray:
    dy = _array("dy", dy, 2)
    n, c, h, w = (int(d) for d in input_shape)
    _shape("dy", dy, (n, c))
    _count(counter, op, ew_ops.avgpool(n * c, h * w), {"dy": dy.size}, {"dx": n * c * h * w})
    return layer_kernels.avgpool_backward(dy.reshape(n, c, 1, 1), h, w, h, w, 1, 0, 0)


def add(a, b, *, counter=None, op="add") -> np.ndarray:
    a = _array("a", a, (2, 4))
    b = _array("b", b, a.ndim)
    _shape("b", b, a.shape)
    _count(counter, op, a.size, {"a": a.size, "b": a.size}, {"y": a.size})
    return a + b


def softmax_cross_entropy(logits, labels, *, sample_weights=None, counter=None, op="softmax_cross_entropy",
                          backward_op=None, probabilities=False):  # fmt: skip
    """Mean cross-entropy of integer ``labels`` (weighted by ``sample_weights`` if given: Σ w·CE / Σ w);
    returns (loss, dlogits) (+ probabilities if asked). The forward work is recorded under ``op``,
    the gradient under ``backward_op`` (``op + ".backward"``)."""
    logits = _array("logits", logits, 2)
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {logits.shape[0]} integers, got {labels.dtype} of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]})")
    if sample_weights is None:
        weights = np.ones(logits.shape[0])
    else:
        weights = np.asarray(sample_weights, np.float64)
        if weights.shape != (logits.shape[0],) or (weights < 0).any() or (logits.shape[0] and weights.sum() <= 0):
            raise ValueError(f"sample_weights must be {logits.shape[0]} non-negative numbers, not all zero")
    loss, probs, dlogits = layer_kernels.softmax_cross_entropy(logits, labels.astype(np.int64), weights)
    if counter is not None:
        n = logits.shape[0]
        counter.record(
            op,
            elementwise_ops=ew_ops.softmax_cross_entropy_forward(logits.size, n),
            reads={"logits": logits.size, "labels": n},
            writes={"loss": 1, "probs": logits.size},
        )
        counter.record(
            backward_op or op + ".backward",
            elementwise_ops=ew_ops.softmax_cross_entropy_backward(logits.size),
            reads={"probs": logits.size, "labels": n},
            writes={"dlogits": logits.size},
        )
    return (float(loss), dlogits, probs) if probabilities else (float(loss), dlogits)


def _in_place(name: str, a: Any, shape: tuple[int, ...] | None) -> None:
    if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous):
        raise TypeError(f"{name} must be a C-contiguous float32 array (it is updated in place)")
    if shape is not None:
        _shape(name, a, shape)


def sgd_update(w, grad, velocity, lr, momentum=0.0, weight_decay=0.0, *, counter=None, op="sgd_update") -> None:
    """In place: d = g + weight_decay·w; v = momentum·v + d; w -= lr·v (PyTorch's SGD)."""
    _in_place("w", w, None)
    grad = _array("grad", grad, w.ndim)
    _shape("grad", grad, w.shape)
    if momentum > 0:
        _in_place("velocity", velocity, w.shape)
    else:
        velocity = np.empty(0, np.float32)
    layer_kernels.sgd_update(w, grad, velocity, float(lr), float(momentum), float(weight_decay))
    _count(counter, op, ew_ops.sgd_step(w.size, momentum, weight_decay), {"w": w.size, "grad": w.size}, {"w": w.size})
