"""The element-wise layers of the functional API (batch norm, ReLU, pooling, residual add, softmax
cross-entropy, SGD) on float32 numpy arrays, in fp32, and the argument checks every functional
kernel shares. ``e2sim.functional`` exports them all; pass ``counter`` and ``op`` to record the
work."""

from __future__ import annotations

from typing import Any

import numpy as np

from e2sim.graph import elementwise as ew_ops
from e2sim.kernels import layers as layer_kernels
from e2sim.process import in_parts

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
    view = _channels_view(x)
    y, mean, inv_std = np.empty_like(view), np.empty(x.shape[1], np.float32), np.empty(x.shape[1], np.float32)
    eps = float(eps)
    in_parts(x.shape[1], x.size,
             lambda lo, hi: layer_kernels.batchnorm_train_part(view, gamma, beta, eps, y, mean, inv_std, lo, hi))
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
    views = _channels_view(dy), _channels_view(x)
    dx, dgamma, dbeta = np.empty_like(views[1]), np.empty(x.shape[1], np.float32), np.empty(x.shape[1], np.float32)
    in_parts(x.shape[1], x.size,
             lambda lo, hi: layer_kernels.batchnorm_backward_part(*views, *arrays, dx, dgamma, dbeta, lo, hi))
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
    y, flat = np.empty_like(x), x.reshape(-1)
    in_parts(x.size, x.size, lambda lo, hi: layer_kernels.relu_part(flat, y.reshape(-1), lo, hi))
    return y


def relu_backward(dy, y, *, counter=None, op="relu_backward") -> np.ndarray:
    y = _array("y", y, (2, 3, 4))
    dy = _array("dy", dy, y.ndim)
    _shape("dy", dy, y.shape)
    _count(counter, op, y.size, {"dy": y.size, "y": y.size}, {"dx": y.size})
    dx, flat = np.empty_like(dy), (dy.reshape(-1), y.reshape(-1))
    in_parts(y.size, y.size, lambda lo, hi: layer_kernels.relu_backward_part(*flat, dx.reshape(-1), lo, hi))
    return dx


def dropout(x, drop_probability: float, seed: int, *, counter=None, op="dropout") -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout: returns (y, mask) with mask[i] = u[i] ≥ p for u uniform in [0, 1) from
    ``seed`` (numpy's PCG64) and y = x·mask / (1 − p)."""
    x = _array("x", x, (2, 3, 4))
    if not 0 <= drop_probability < 1:
        raise ValueError(f"drop_probability must be in [0, 1), got {drop_probability!r}")
    mask = np.random.default_rng(seed).random(x.shape, dtype=np.float32) >= np.float32(drop_probability)
    _count(counter, op, ew_ops.dropout_forward(x.size), {"x": x.size}, {"y": x.size, "mask": x.size})
    return np.where(mask, x * np.float32(1.0 / (1.0 - drop_probability)), np.float32(0.0)), mask


def dropout_backward(dy, mask, drop_probability: float, *, counter=None, op="dropout_backward") -> np.ndarray:
    """dx = dy·mask / (1 − p) for the mask the forward pass drew."""
    dy = _array("dy", dy, (2, 3, 4))
    _shape("mask", mask, dy.shape)
    _count(counter, op, ew_ops.dropout_backward(dy.size), {"dy": dy.size, "mask": dy.size}, {"dx": dy.size})
    return np.where(mask, dy * np.float32(1.0 / (1.0 - drop_probability)), np.float32(0.0))


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
    n, c = x.shape[:2]
    y, arg = np.empty((n, c, p, q), np.float32), np.empty((n, c, p, q), np.int32)
    in_parts(n * c, x.size, lambda lo, hi: layer_kernels.maxpool_part(x, r, s, stride, ph, pw, y, arg, lo, hi))
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
    n, c = dy.shape[:2]
    dx = np.zeros((n, c, int(input_shape[2]), int(input_shape[3])), np.float32)
    in_parts(n * c, dx.size,
             lambda lo, hi: layer_kernels.maxpool_backward_part(dy, argmax, s, stride, ph, pw, dx, lo, hi))  # fmt: skip
    return dx


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
