"""Plain-numpy twins of the numba kernels (float64 unless integer), written for clarity, not speed."""

import itertools
import math

import numpy as np

MASK = (1 << 64) - 1


def uniform01(seed: int, i: int) -> float:
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    z ^= z >> 31
    return (z >> 11) / 2.0**53


def round_value(v: float, mode: int, seed: int, i: int) -> float:
    if mode == 0:
        return float(np.rint(v))
    if mode == 1:
        return math.floor(v + uniform01(seed, i))
    return float(math.trunc(v))


def quantize_to_grid(x, inv_scale, inner, qmin, qmax, mode, seed):
    out, saturated = [], 0
    for i, v in enumerate(np.asarray(x, np.float64)):
        r = round_value(v * inv_scale[(i // inner) % inv_scale.size], mode, seed, i)
        if r > qmax or r < qmin:
            saturated += 1
        out.append(min(max(r, qmin), qmax))
    return np.array(out, np.float32), saturated


def round_to_float_format(x, mantissa_bits, min_exponent, max_value, mode, seed):
    out, saturated = [], 0
    for i, v in enumerate(np.asarray(x, np.float64)):
        if v == 0 or np.isnan(v):
            out.append(v)
            continue
        a = abs(v)
        if a > max_value:
            out.append(math.copysign(max_value, v))
            saturated += 1
            continue
        exponent = max(math.floor(math.log2(a)), min_exponent)
        if 2.0**exponent > a and exponent > min_exponent:  # guard log2 rounding at powers of two
            exponent -= 1
        ulp = 2.0 ** (exponent - mantissa_bits)
        y = round_value(a / ulp, mode, seed, i) * ulp
        if y > max_value:
            y, saturated = max_value, saturated + 1
        out.append(math.copysign(y, v))
    return np.array(out, np.float32), saturated


def pad(x, ph, pw):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def windows(x, r, s, stride, p, q, dil=1):
    """x[:, :, i*stride + a*dil, j*stride + b*dil] for each kernel offset (a, b): yields (a, b, slice)."""
    for a in range(r):
        for b in range(s):
            yield a, b, x[:, :, a * dil : a * dil + stride * (p - 1) + 1 : stride,
                          b * dil : b * dil + stride * (q - 1) + 1 : stride]  # fmt: skip


def out_size(size, pad_, k, stride, dil):
    return (size + 2 * pad_ - dil * (k - 1) - 1) // stride + 1


def by_group(groups, dense, split_a, split_b, join=1):
    """Run ``dense`` on each group's slices of two operands (channel axis 1 or weight axis 0)."""
    parts = [dense(a, b) for a, b in zip(split_a, split_b, strict=True)]
    return np.concatenate(parts, axis=join)


def conv2d(x, w, b, stride, ph, pw, dil=1, groups=1):
    if groups > 1:
        y = by_group(groups, lambda xg, wg: conv2d(xg, wg, None, stride, ph, pw, dil),
                     np.split(x, groups, axis=1), np.split(w, groups, axis=0))  # fmt: skip
        return y if b is None else y + b[None, :, None, None]
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    p, q = out_size(h, ph, r, stride, dil), out_size(wd, pw, s, stride, dil)
    y = np.zeros((n, k, p, q), np.result_type(x, w))
    for a, bb, win in windows(pad(x, ph, pw), r, s, stride, p, q, dil):
        y += np.einsum("ncpq,kc->nkpq", win, w[:, :, a, bb])
    return y if b is None else y + b[None, :, None, None]


def direct_forward(x, w, ph, pw):
    """The stride-1 dense conv of ``kernels.conv.direct_forward_part``: each output's taps (i, j, c) in
    that order, each product added as by a fused multiply-add (the float32 × float32 product exact in
    float64, the sum rounded to float32)."""
    k, c, r, s = w.shape
    p, q = out_size(x.shape[2], ph, r, 1, 1), out_size(x.shape[3], pw, s, 1, 1)
    y = np.zeros((x.shape[0], k, p, q), np.float32)
    padded = pad(x, ph, pw).astype(np.float64)
    for i in range(r):
        for j in range(s):
            for ch in range(c):
                tap = w[:, ch, i, j].astype(np.float64)[None, :, None, None]
                y = (y + tap * padded[:, ch : ch + 1, i : i + p, j : j + q]).astype(np.float32)
    return y


def conv2d_grad_input(dy, w, input_shape, stride, ph, pw, dil=1, groups=1):
    n, c, h, wd = input_shape
    if groups > 1:
        shape = (n, c // groups, h, wd)
        return by_group(groups, lambda dyg, wg: conv2d_grad_input(dyg, wg, shape, stride, ph, pw, dil),
                        np.split(dy, groups, axis=1), np.split(w, groups, axis=0))  # fmt: skip
    k, _, r, s = w.shape
    p, q = dy.shape[2:]
    dx = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), np.result_type(dy, w))
    for a in range(r):
        for b in range(s):
            dx[:, :, a * dil : a * dil + stride * (p - 1) + 1 : stride,
               b * dil : b * dil + stride * (q - 1) + 1 : stride] += np.einsum("nkpq,kc->ncpq", dy, w[:, :, a, b])
    return dx[:, :, ph : ph + h, pw : pw + wd]


def conv2d_grad_weight(x, dy, weight_shape, stride, ph, pw, dil=1, groups=1):
    k, c, r, s = weight_shape
    if groups > 1:
        shape = (k // groups, c, r, s)
        return by_group(groups, lambda xg, dyg: conv2d_grad_weight(xg, dyg, shape, stride, ph, pw, dil),
                        np.split(x, groups, axis=1), np.split(dy, groups, axis=1), join=0)  # fmt: skip
    p, q = dy.shape[2:]
    dw = np.zeros(weight_shape, np.result_type(x, dy))
    for a, b, win in windows(pad(x, ph, pw), r, s, stride, p, q, dil):
        dw[:, :, a, b] = np.einsum("nkpq,ncpq->kc", dy, win)
    return dw


def im2col(x, r, s, stride, ph, pw, p, q, dil=1):
    n, c = x.shape[:2]
    cols = np.zeros((c * r * s, n * p * q), x.dtype)
    xp = pad(x, ph, pw)
    for a, b, win in windows(xp, r, s, stride, p, q, dil):
        for ch in range(c):
            cols[(ch * r + a) * s + b] = win[:, ch].reshape(-1)
    return cols


def pixel_rows(x, r, s, stride, ph, pw, p, q, dil=1):
    """Pixel-major columns: im2col's (c, r, s) rows regrouped as (r, s, c) columns of one row per pixel."""
    c = x.shape[1]
    cols = im2col(x, r, s, stride, ph, pw, p, q, dil).reshape(c, r, s, -1)
    return cols.transpose(3, 1, 2, 0).reshape(-1, r * s * c)


def add_pixel_rows(rows, x_shape, r, s, stride, ph, pw, p, q, dil=1):
    c = x_shape[1]
    cols = rows.reshape(-1, r, s, c).transpose(3, 1, 2, 0).reshape(c * r * s, -1)
    return col2im(cols, x_shape, r, s, stride, ph, pw, p, q, dil)


def batchnorm(x, gamma, beta, eps):
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)
    inv_std = 1 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
    return gamma.reshape(shape) * xhat + beta.reshape(shape), mean, inv_std


def maxpool(x, r, s, stride, ph, pw):
    n, c, h, w = x.shape
    p, q = (h + 2 * ph - r) // stride + 1, (w + 2 * pw - s) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    y = np.full((n, c, p, q), -np.inf)
    arg = np.zeros((n, c, p, q), np.int64)
    for a, b, win in windows(xp, r, s, stride, p, q):
        better = win > y
        y = np.where(better, win, y)
        arg = np.where(better, a * s + b, arg)
    return y, arg


def avgpool(x, r, s, stride, ph, pw):
    n, c, h, w = x.shape
    p, q = (h + 2 * ph - r) // stride + 1, (w + 2 * pw - s) // stride + 1
    return sum(win for _, _, win in windows(pad(x, ph, pw), r, s, stride, p, q)) / (r * s)


def softmax_cross_entropy(logits, labels, weights=None):
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    probs = np.exp(log_probs)
    n = len(labels)
    share = (np.ones(n) if weights is None else np.asarray(weights, np.float64)) / (
        n if weights is None else np.sum(weights)
    )
    onehot = np.eye(logits.shape[1])[labels]
    return -(share * log_probs[np.arange(n), labels]).sum(), probs, (probs - onehot) * share[:, None]


def sgd(w, g, v, lr, momentum, weight_decay):
    d = g + weight_decay * w
    if momentum > 0:
        v = momentum * v + d
        d = v
    return w - lr * d, v


def col2im(cols, x_shape, r, s, stride, ph, pw, p, q, dil=1):
    n, c, h, w = x_shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), cols.dtype)
    for ch in range(c):
        for a in range(r):
            for b in range(s):
                block = cols[(ch * r + a) * s + b].reshape(n, p, q)
                xp[:, ch, a * dil : a * dil + stride * (p - 1) + 1 : stride,
                   b * dil : b * dil + stride * (q - 1) + 1 : stride] += block  # fmt: skip
    return xp[:, :, ph : ph + h, pw : pw + w]


def batchnorm_backward(dy, x, gamma, mean, inv_std):
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    count = x.size / x.shape[1]
    xhat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
    dgamma, dbeta = (dy * xhat).sum(axis=axes), dy.sum(axis=axes)
    dx = (gamma * inv_std).reshape(shape) * (dy - dbeta.reshape(shape) / count - xhat * dgamma.reshape(shape) / count)
    return dx, dgamma, dbeta


def maxpool_backward(dy, arg, x_shape, s, stride, ph, pw):
    n, c, h, w = x_shape
    dx = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for i, j, k, m in np.ndindex(dy.shape):
        a, b = divmod(int(arg[i, j, k, m]), s)
        dx[i, j, k * stride + a, m * stride + b] += dy[i, j, k, m]
    return dx[:, :, ph : ph + h, pw : pw + w]


def avgpool_backward(dy, x_shape, r, s, stride, ph, pw):
    n, c, h, w = x_shape
    p, q = dy.shape[2:]
    dx = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for a in range(r):
        for b in range(s):
            dx[:, :, a : a + stride * (p - 1) + 1 : stride, b : b + stride * (q - 1) + 1 : stride] += dy / (r * s)
    return dx[:, :, ph : ph + h, pw : pw + w]


def zero_runs(values, max_run):
    """(zeros, run-length pairs): pairs of (zero run ≤ max_run, value), a run of max_run + 1 zeros
    coded as (max_run, 0), trailing zeros ending with a zero-valued pair."""
    zeros, pairs, run = 0, 0, 0
    for v in np.asarray(values).reshape(-1).tolist():
        if v == 0:
            zeros += 1
            run += 1
            if run == max_run + 1:
                pairs, run = pairs + 1, 0
        else:
            pairs, run = pairs + 1, 0
    return zeros, pairs + (1 if run else 0)


def zero_operand_macs_conv(x, w, stride, pad):
    """MACs of a convolution in which the input (padding included) or the weight is zero, one by one."""
    n, c, h, width = x.shape
    k, _, r, s = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    p, q = (h + 2 * pad - r) // stride + 1, (width + 2 * pad - s) // stride + 1
    zero = 0
    for i, j, kk, cc, a, b in itertools.product(range(n), range(p), range(k), range(c), range(r), range(s)):
        for qq in range(q):
            if xp[i, cc, j * stride + a, qq * stride + b] == 0 or w[kk, cc, a, b] == 0:
                zero += 1
    return zero


def hold_greedily(free, start, end, size, offsets, where, amount):
    """Candidates in order: held when free + give-back ≥ size at every op of the interval."""
    free = np.array(free, dtype=np.float64)
    held, tightest, room = [], [], []
    for c in range(len(start)):
        back = {}
        for t in range(offsets[c], offsets[c + 1]):
            back[where[t]] = max(back.get(where[t], 0.0), amount[t])
        rooms = [(free[i] + back.get(i, 0.0), i) for i in range(start[c], end[c] + 1)]
        best, at = min(rooms, key=lambda r: (r[0], r[1]))
        tightest.append(at)
        room.append(best)
        held.append(best >= size[c])
        if held[-1]:
            for i in range(start[c], end[c] + 1):
                free[i] -= size[c] - back.get(i, 0.0)
    return np.array(held), np.array(tightest), np.array(room), free


def fold_sums(count, size, last, factor, divisor):
    """Σ over the tiles of one GEMM dimension of ⌈extent / divisor⌉ (rows: nest dimensions), as
    array expressions per combination of full and last tiles."""
    folds = np.zeros(count.shape[1])
    for choice in itertools.product((0, 1), repeat=count.shape[0]):
        number, extent = 1.0, float(factor)
        for j, is_last in enumerate(choice):
            number = number * (1.0 if is_last else count[j] - 1)
            extent = extent * (last[j] if is_last else size[j])
        folds = folds + number * np.ceil(extent / divisor)
    return folds


def magnitude_bits(x):
    """Per row of float32 x (rows, n): the bit pattern of max |x| (a NaN where the row holds one)."""
    top = np.abs(x).max(axis=1)
    return np.where(np.isnan(top), np.float32(np.nan), top).astype(np.float32).view(np.uint32)
