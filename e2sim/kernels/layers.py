"""Element-wise and reduction kernels of the non-GEMM layers (float32, NCHW)."""

import math

import numpy as np
from numba import njit


@njit(cache=True)
def batchnorm_train(x, gamma, beta, eps):
    """Batch statistics over (N, H, W) per channel. Returns y, mean, inv_std (biased variance)."""
    y = np.empty_like(x)
    mean = np.empty(x.shape[1], np.float32)
    inv_std = np.empty(x.shape[1], np.float32)
    batchnorm_train_part(x, gamma, beta, eps, y, mean, inv_std, 0, x.shape[1])
    return y, mean, inv_std


@njit(cache=True, nogil=True)
def batchnorm_train_part(x, gamma, beta, eps, y, mean, inv_std, first_channel, end_channel):
    """Channels ``first_channel`` to ``end_channel`` (exclusive) of :func:`batchnorm_train`, into
    ``y``, ``mean`` and ``inv_std`` (each channel on its own: the split changes no value)."""
    n_, hw = x.shape[0], x.shape[2]
    count = n_ * hw
    width = end_channel - first_channel
    mu, squares = np.empty(width), np.empty(width)
    _channel_sums(x, first_channel, end_channel, mu, False, mu)
    for b in range(width):
        mu[b] = mu[b] / count
    _channel_sums(x, first_channel, end_channel, mu, True, squares)
    for c in range(first_channel, end_channel):
        m = mu[c - first_channel]
        istd = 1.0 / math.sqrt(squares[c - first_channel] / count + eps)
        mean[c] = m
        inv_std[c] = istd
        a = gamma[c] * istd
        b = beta[c] - a * m
        for n in range(n_):
            for i in range(hw):
                y[n, c, i] = a * x[n, c, i] + b


@njit(cache=True, nogil=True)
def _channel_sums(x, first_channel, end_channel, center, squared, out):
    """Per channel of x (N, C, HW), float64, over (n, i) in order: Σ x, or with ``squared``
    Σ (x − center)² (``center``: one value per channel, used only when ``squared`` and read
    before ``out`` is written, so it may be ``out``). Four channels run side by side: four
    independent chains of additions, each in its channel's own order (the same sums as one channel
    at a time, without waiting on one chain)."""
    n_, hw = x.shape[0], x.shape[2]
    c = first_channel
    while c < end_channel:
        k = c - first_channel
        if c + 4 <= end_channel:
            m0, m1, m2, m3 = center[k], center[k + 1], center[k + 2], center[k + 3]
            t0 = t1 = t2 = t3 = 0.0
            for n in range(n_):
                r0, r1, r2, r3 = x[n, c], x[n, c + 1], x[n, c + 2], x[n, c + 3]
                if squared:
                    for i in range(hw):
                        d0, d1, d2, d3 = r0[i] - m0, r1[i] - m1, r2[i] - m2, r3[i] - m3
                        t0 += d0 * d0
                        t1 += d1 * d1
                        t2 += d2 * d2
                        t3 += d3 * d3
                else:
                    for i in range(hw):
                        t0 += r0[i]
                        t1 += r1[i]
                        t2 += r2[i]
                        t3 += r3[i]
            out[k], out[k + 1], out[k + 2], out[k + 3] = t0, t1, t2, t3
            c += 4
            continue
        m, total = center[k], 0.0
        for n in range(n_):
            row = x[n, c]
            for i in range(hw):
                if squared:
                    d = row[i] - m
                    total += d * d
                else:
                    total += row[i]
        out[k] = total
        c += 1


@njit(cache=True)
def batchnorm_eval(x, gamma, beta, running_mean, running_var, eps):
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        a = gamma[c] / math.sqrt(running_var[c] + eps)
        b = beta[c] - a * running_mean[c]
        for n in range(x.shape[0]):
            for i in range(x.shape[2]):
                y[n, c, i] = a * x[n, c, i] + b
    return y


@njit(cache=True)
def batchnorm_backward(dy, x, gamma, mean, inv_std):
    """Returns dx, dgamma, dbeta for batch-statistics batch norm (x, dy as (N, C, HW))."""
    dx = np.empty_like(x)
    dgamma = np.empty(x.shape[1], np.float32)
    dbeta = np.empty(x.shape[1], np.float32)
    batchnorm_backward_part(dy, x, gamma, mean, inv_std, dx, dgamma, dbeta, 0, x.shape[1])
    return dx, dgamma, dbeta


@njit(cache=True, nogil=True)
def batchnorm_backward_part(dy, x, gamma, mean, inv_std, dx, dgamma, dbeta, first_channel, end_channel):
    """Channels ``first_channel`` to ``end_channel`` (exclusive) of :func:`batchnorm_backward`."""
    n_, hw = x.shape[0], x.shape[2]
    count = n_ * hw
    width = end_channel - first_channel
    sums_dy, sums_dy_xhat = np.empty(width), np.empty(width)
    _gradient_sums(dy, x, mean, inv_std, first_channel, end_channel, sums_dy, sums_dy_xhat)
    for c in range(first_channel, end_channel):
        sum_dy = sums_dy[c - first_channel]
        sum_dy_xhat = sums_dy_xhat[c - first_channel]
        dgamma[c] = sum_dy_xhat
        dbeta[c] = sum_dy
        k = gamma[c] * inv_std[c]
        mean_dy = sum_dy / count
        mean_dy_xhat = sum_dy_xhat / count
        for n in range(n_):
            for i in range(hw):
                xhat = (x[n, c, i] - mean[c]) * inv_std[c]
                dx[n, c, i] = k * (dy[n, c, i] - mean_dy - xhat * mean_dy_xhat)


@njit(cache=True, nogil=True)
def _gradient_sums(dy, x, mean, inv_std, first_channel, end_channel, sums_dy, sums_dy_xhat):
    """Per channel, float64 over (n, i) in order: Σ dy and Σ dy·(x − mean)·inv_std (the product in
    float32), four channels side by side as in :func:`_channel_sums`."""
    n_, hw = x.shape[0], x.shape[2]
    c = first_channel
    while c < end_channel:
        k = c - first_channel
        if c + 4 <= end_channel:
            m0, m1, m2, m3 = mean[c], mean[c + 1], mean[c + 2], mean[c + 3]
            s0, s1, s2, s3 = inv_std[c], inv_std[c + 1], inv_std[c + 2], inv_std[c + 3]
            a0 = a1 = a2 = a3 = 0.0
            b0 = b1 = b2 = b3 = 0.0
            for n in range(n_):
                e0, e1, e2, e3 = dy[n, c], dy[n, c + 1], dy[n, c + 2], dy[n, c + 3]
                r0, r1, r2, r3 = x[n, c], x[n, c + 1], x[n, c + 2], x[n, c + 3]
                for i in range(hw):
                    a0 += e0[i]
                    a1 += e1[i]
                    a2 += e2[i]
                    a3 += e3[i]
                    b0 += e0[i] * (r0[i] - m0) * s0
                    b1 += e1[i] * (r1[i] - m1) * s1
                    b2 += e2[i] * (r2[i] - m2) * s2
                    b3 += e3[i] * (r3[i] - m3) * s3
            sums_dy[k], sums_dy[k + 1], sums_dy[k + 2], sums_dy[k + 3] = a0, a1, a2, a3
            sums_dy_xhat[k], sums_dy_xhat[k + 1], sums_dy_xhat[k + 2], sums_dy_xhat[k + 3] = b0, b1, b2, b3
            c += 4
            continue
        m, s = mean[c], inv_std[c]
        total_dy = total_dy_xhat = 0.0
        for n in range(n_):
            errors, row = dy[n, c], x[n, c]
            for i in range(hw):
                total_dy += errors[i]
                total_dy_xhat += errors[i] * (row[i] - m) * s
        sums_dy[k], sums_dy_xhat[k] = total_dy, total_dy_xhat
        c += 1


# The element loops below run over slices indexed from 0, which LLVM turns into vector selects
# (indexing the whole arrays from ``start`` kept a branch per element: 17× slower on random signs).


@njit(cache=True, nogil=True)
def relu_part(x, y, start, end):
    """Elements ``start`` to ``end`` of flat ``y`` = max(flat ``x``, 0)."""
    source, target = x[start:end], y[start:end]
    for i in range(end - start):
        target[i] = source[i] if source[i] > 0 else 0


@njit(cache=True, nogil=True)
def relu_backward_part(dy, y, dx, start, end):
    """Elements ``start`` to ``end`` of flat ``dx`` = ``dy`` where ``y`` > 0, else 0."""
    errors, outputs, target = dy[start:end], y[start:end], dx[start:end]
    for i in range(end - start):
        target[i] = errors[i] if outputs[i] > 0 else 0


@njit(cache=True)
def maxpool(x, r, s, stride, pad_h, pad_w, p, q):
    """Returns y and the argmax within each window (r_index * S + s_index); padding never wins."""
    n_, c_ = x.shape[0], x.shape[1]
    y = np.empty((n_, c_, p, q), x.dtype)
    arg = np.empty((n_, c_, p, q), np.int32)
    maxpool_part(x, r, s, stride, pad_h, pad_w, y, arg, 0, n_ * c_)
    return y, arg


@njit(cache=True, nogil=True)
def maxpool_part(x, r, s, stride, pad_h, pad_w, y, arg, first, end):
    """Maps ``first`` to ``end`` (exclusive, as n·C + c) of :func:`maxpool` into ``y`` and ``arg``."""
    if r == 2 and s == 2 and stride == 2 and pad_h == 0 and pad_w == 0:
        maxpool_2x2_part(x, y, arg, first, end)
        return
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    p, q = y.shape[2], y.shape[3]
    for nc in range(first, end):
        n, c = nc // c_, nc % c_
        for pp in range(p):
            for qq in range(q):
                best = -np.inf
                best_k = 0
                for i in range(r):
                    h = pp * stride - pad_h + i
                    if h < 0 or h >= h_:
                        continue
                    for j in range(s):
                        w = qq * stride - pad_w + j
                        if 0 <= w < w_ and x[n, c, h, w] > best:
                            best = x[n, c, h, w]
                            best_k = i * s + j
                y[n, c, pp, qq] = best
                arg[n, c, pp, qq] = best_k


@njit(cache=True, nogil=True)
def maxpool_2x2_part(x, y, arg, first, end):
    """:func:`maxpool_part` of 2×2 windows at stride 2 without padding (LeNet's, VGG's): a loop of
    fixed length that compiles to selects. The general loop branches on every comparison, which
    the values make unpredictable: 20× slower on LeNet-5's first pool. The same values."""
    c_ = x.shape[1]
    p, q = y.shape[2], y.shape[3]
    for nc in range(first, end):
        n, c = nc // c_, nc % c_
        for pp in range(p):
            for qq in range(q):
                best = -np.inf
                best_k = 0
                for k in range(4):
                    v = x[n, c, 2 * pp + k // 2, 2 * qq + k % 2]
                    if v > best:
                        best = v
                        best_k = k
                y[n, c, pp, qq] = best
                arg[n, c, pp, qq] = best_k


@njit(cache=True)
def maxpool_backward(dy, arg, h_, w_, s, stride, pad_h, pad_w):
    n_, c_ = dy.shape[0], dy.shape[1]
    dx = np.zeros((n_, c_, h_, w_), dy.dtype)
    maxpool_backward_part(dy, arg, s, stride, pad_h, pad_w, dx, 0, n_ * c_)
    return dx


@njit(cache=True, nogil=True)
def maxpool_backward_part(dy, arg, s, stride, pad_h, pad_w, dx, first, end):
    """Maps ``first`` to ``end`` (exclusive, as n·C + c) of :func:`maxpool_backward` into ``dx`` (zeros)."""
    c_, p, q = dy.shape[1], dy.shape[2], dy.shape[3]
    for nc in range(first, end):
        n, c = nc // c_, nc % c_
        for pp in range(p):
            for qq in range(q):
                k = arg[n, c, pp, qq]
                dx[n, c, pp * stride - pad_h + k // s, qq * stride - pad_w + k % s] += dy[n, c, pp, qq]


@njit(cache=True)
def avgpool(x, r, s, stride, pad_h, pad_w, p, q):
    """Average over R×S windows; padded positions count as zeros (divisor always R·S)."""
    n_, c_, h_, w_ = x.shape
    y = np.zeros((n_, c_, p, q), x.dtype)
    scale = 1.0 / (r * s)
    for nc in range(n_ * c_):
        n, c = nc // c_, nc % c_
        for pp in range(p):
            for qq in range(q):
                total = 0.0
                for i in range(r):
                    h = pp * stride - pad_h + i
                    if 0 <= h < h_:
                        for j in range(s):
                            w = qq * stride - pad_w + j
                            if 0 <= w < w_:
                                total += x[n, c, h, w]
                y[n, c, pp, qq] = total * scale
    return y


@njit(cache=True)
def avgpool_backward(dy, h_, w_, r, s, stride, pad_h, pad_w):
    n_, c_, p, q = dy.shape
    dx = np.zeros((n_, c_, h_, w_), dy.dtype)
    scale = 1.0 / (r * s)
    for nc in range(n_ * c_):
        n, c = nc // c_, nc % c_
        for pp in range(p):
            for qq in range(q):
                g = dy[n, c, pp, qq] * scale
                for i in range(r):
                    h = pp * stride - pad_h + i
                    if 0 <= h < h_:
                        for j in range(s):
                            w = qq * stride - pad_w + j
                            if 0 <= w < w_:
                                dx[n, c, h, w] += g
    return dx


@njit(cache=True)
def softmax_cross_entropy(logits, labels, weights):
    """Weighted mean cross-entropy Σ w_n·CE_n / Σ w_n (weights all 1: the batch mean);
    returns (loss, probabilities, dlogits)."""
    n_, k_ = logits.shape
    probs = np.empty_like(logits)
    dlogits = np.empty_like(logits)
    loss = 0.0
    total_weight = 0.0
    for n in range(n_):
        total_weight += weights[n]
    for n in range(n_):
        top = logits[n, 0]
        for k in range(1, k_):
            top = max(top, logits[n, k])
        total = 0.0
        for k in range(k_):
            e = math.exp(logits[n, k] - top)
            probs[n, k] = e
            total += e
        share = weights[n] / total_weight
        for k in range(k_):
            probs[n, k] /= total
            dlogits[n, k] = probs[n, k] * share
        dlogits[n, labels[n]] -= share
        loss -= share * (logits[n, labels[n]] - top - math.log(total))
    return loss, probs, dlogits


@njit(cache=True)
def sgd_update(w, grad, velocity, lr, momentum, weight_decay):
    """In place: d = g + wd·w; v = μ·v + d; w -= lr·v (PyTorch SGD, no dampening, no Nesterov)."""
    for i in range(w.size):
        d = grad.flat[i] + weight_decay * w.flat[i]
        if momentum > 0.0:
            v = momentum * velocity.flat[i] + d
            velocity.flat[i] = v
            d = v
        w.flat[i] -= lr * d
