"""Every numba kernel against its plain-numpy twin (tests/twins.py)."""

import itertools

import numpy as np
import pytest
import twins
from hypothesis import given
from hypothesis import strategies as st

from e2sim.functional_gemm import _lane_samples
from e2sim.kernels import conv, layers, mapping, quantize

rng = np.random.default_rng(0)


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_quantize_to_grid_matches_twin(mode):
    x = rand(3, 7) * 5
    inv_scale = np.array([3.0, 0.5, 10.0])
    got = quantize.quantize_to_grid(x.ravel(), inv_scale, 7, -20.0, 19.0, mode, 12345)
    want = twins.quantize_to_grid(x.ravel(), inv_scale, 7, -20.0, 19.0, mode, 12345)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1] > 0


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_quantize_to_grid_in_parts_equals_the_whole(mode):
    """Ranges cut anywhere (inside a scale group too) give the same values and clip counts."""
    x = rand(5, 11).ravel() * 5
    inv_scale = np.array([3.0, 0.5, 10.0, 1.0, 7.0])
    whole, clipped = quantize.quantize_to_grid(x, inv_scale, 11, -20.0, 19.0, mode, 99)
    out = np.full(x.size, np.nan, np.float32)
    edges = [0, 3, 11, 12, 30, 54, 55]
    counts = [quantize.quantize_to_grid_part(x, inv_scale, 11, -20.0, 19.0, mode, 99, out, lo, hi)
              for lo, hi in itertools.pairwise(edges)]  # fmt: skip
    np.testing.assert_array_equal(out, whole)
    assert sum(counts) == clipped > 0


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize(("mantissa", "min_exp", "max_value"), [(3, -6, 448.0), (2, -14, 57344.0), (10, -14, 65504.0)])
def test_round_to_float_format_matches_twin(mode, mantissa, min_exp, max_value):
    x = np.concatenate([rand(200) * 10.0 ** rng.integers(-9, 6, 200), [0.0, 2.0**-9, 1e6, -1e6, 1.0, 0.75]])
    x = x.astype(np.float32)
    got = quantize.round_to_float_format(x, mantissa, min_exp, max_value, mode, 7)
    want = twins.round_to_float_format(x, mantissa, min_exp, max_value, mode, 7)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1] >= 2


@given(st.integers(1, 9), st.integers(1, 70), st.integers(0, 2**32 - 1))
def test_magnitude_bits_match_twin(rows, n, seed):
    """Any mix of signs, zeros of both signs, subnormals, infinities and NaNs: the largest magnitude
    per row, the bit pattern of |x| (a NaN as any NaN)."""
    local = np.random.default_rng(seed)
    pool = np.array([0.0, -0.0, 1e-45, -1e-40, np.inf, -np.inf, np.nan, 3.5, -7.25], np.float32)
    x = (local.standard_normal((rows, n)) * 10.0 ** local.integers(-40, 38, (rows, n))).astype(np.float32)
    picks = local.random((rows, n)) < local.random()
    x[picks] = local.choice(pool, int(picks.sum()))
    out = np.zeros(rows, np.uint32)
    quantize.magnitude_bits_part(x.view(np.uint32), out, 0, rows)
    want = twins.magnitude_bits(x)
    got = out.view(np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(want.view(np.float32)))
    numbers = ~np.isnan(got)
    np.testing.assert_array_equal(out[numbers], want[numbers])


def test_uniform01_matches_twin():
    got = [quantize.uniform01(np.uint64(99), np.uint64(i)) for i in range(50)]
    assert got == [twins.uniform01(99, i) for i in range(50)]


@pytest.mark.parametrize(
    ("stride", "ph", "pw", "r", "s", "dil"),
    [(1, 0, 0, 3, 3, 1), (2, 1, 1, 3, 3, 1), (2, 2, 0, 5, 3, 1), (3, 0, 1, 1, 2, 1), (1, 2, 2, 3, 3, 2),
     (2, 1, 3, 2, 3, 3)],
)  # fmt: skip
def test_im2col_and_col2im_match_twins(stride, ph, pw, r, s, dil):
    x = rand(2, 3, 9, 8)
    p, q = twins.out_size(9, ph, r, stride, dil), twins.out_size(8, pw, s, stride, dil)
    cols = conv.im2col(x, r, s, stride, ph, pw, p, q, dil, np.full((3 * r * s, 2 * p * q), np.nan, np.float32))
    np.testing.assert_array_equal(cols, twins.im2col(x, r, s, stride, ph, pw, p, q, dil))
    for first, end in ((0, 0), (r * s - 1, 2 * r * s + 1), (r * s, 3 * r * s)):  # rows of some channels only
        part = np.full_like(cols, np.nan)
        conv.im2col_part(x, r, s, stride, ph, pw, p, q, dil, part, first, end)
        np.testing.assert_array_equal(part[first:end], cols[first:end])
        assert np.isnan(part[:first]).all() and np.isnan(part[end:]).all()
    c = rand(*cols.shape)
    back = conv.col2im(c, 2, 3, 9, 8, r, s, stride, ph, pw, p, q, dil)
    np.testing.assert_allclose(back, twins.col2im(c, x.shape, r, s, stride, ph, pw, p, q, dil), rtol=1e-5, atol=1e-5)
    # and col2im is the adjoint of im2col: <im2col(x), c> == <x, col2im(c)>
    assert np.isclose(np.vdot(cols.astype(np.float64), c), np.vdot(x.astype(np.float64), back), rtol=1e-5)


@pytest.mark.parametrize(
    ("stride", "ph", "pw", "r", "s", "dil"),
    [(1, 0, 0, 3, 3, 1), (2, 1, 1, 3, 3, 1), (2, 2, 0, 5, 3, 1), (3, 0, 1, 1, 2, 1), (1, 2, 2, 3, 3, 2),
     (2, 1, 3, 2, 3, 3), (1, 1, 1, 3, 3, 1)],
)  # fmt: skip
@pytest.mark.parametrize("channels", [4, conv.WINDOW_ROW_CHANNELS])  # a window row at a time, a tap at a time
def test_pixel_rows_match_twins(stride, ph, pw, r, s, dil, channels):
    x = rand(3, channels, 9, 8)
    p, q = twins.out_size(9, ph, r, stride, dil), twins.out_size(8, pw, s, stride, dil)
    rows = np.full((2 * p * q, r * s * channels), np.nan, np.float32)
    conv.pixel_rows_part(x, r, s, stride, ph, pw, p, q, dil, rows, 1, 3)  # samples 1 and 2
    np.testing.assert_array_equal(rows, twins.pixel_rows(x[1:], r, s, stride, ph, pw, p, q, dil))
    c = rand(*rows.shape)
    back = np.full(x.shape, np.nan, np.float32)
    conv.add_pixel_rows_part(c, back, r, s, stride, ph, pw, p, q, dil, 1, 3)
    assert np.isnan(back[0]).all()  # samples outside the range are not touched
    expected = twins.add_pixel_rows(c, (2, channels, 9, 8), r, s, stride, ph, pw, p, q, dil)
    np.testing.assert_allclose(back[1:], expected, rtol=1e-5, atol=1e-5)
    # each element sums its window entries in row order (both ways of copying alike)
    ordered = np.zeros((2, 9 + 2 * ph + r * dil, 8 + 2 * pw + s * dil, channels), np.float32)
    for row, (n, pp, qq) in enumerate(np.ndindex(2, p, q)):
        for i, j in np.ndindex(r, s):
            ordered[n, pp * stride + i * dil, qq * stride + j * dil] += c[row, (i * s + j) * channels:][:channels]
    np.testing.assert_array_equal(back[1:], ordered[:, ph : ph + 9, pw : pw + 8].transpose(0, 3, 1, 2))


@pytest.mark.parametrize(("channels", "h", "w", "ph", "pw"),
                         [(16, 32, 32, 1, 1), (13, 11, 9, 2, 0), (9, 5, 17, 0, 3), (3, 7, 8, 1, 1), (1, 3, 2, 0, 0),
                          (8, 1, 8, 0, 0)])  # fmt: skip
def test_sample_copies_in_blocks_match_transposes(channels, h, w, ph, pw):
    """The (C, H, W) <-> (H, W, C) copies behind the pixel rows, in whole 8 × 8 blocks and the rest."""
    x = rand(3, channels, h, w)
    sample = np.full((h + 2 * ph, w + 2 * pw, channels), np.nan, np.float32)
    conv._to_sample(x, 1, sample, ph, pw)
    np.testing.assert_array_equal(sample[ph : ph + h, pw : pw + w], x[1].transpose(1, 2, 0))
    inside = np.zeros(sample.shape, bool)
    inside[ph : ph + h, pw : pw + w] = True
    assert np.isnan(sample[~inside]).all()  # the padding is not written
    back = np.full(x.shape, np.nan, np.float32)
    conv._from_sample(sample, back, 2, ph, pw)
    np.testing.assert_array_equal(back[2], x[1])
    assert np.isnan(back[:2]).all()  # other samples are not touched


@pytest.mark.parametrize(
    ("stride", "ph", "pw", "r", "s", "dil"),
    [(1, 1, 1, 3, 3, 1), (2, 1, 1, 3, 3, 1), (2, 0, 2, 3, 5, 1), (1, 2, 2, 3, 3, 2), (3, 1, 0, 2, 3, 1)],
)  # fmt: skip
def test_depthwise_kernels_match_twins(stride, ph, pw, r, s, dil):
    x, w = rand(3, 4, 9, 8), rand(4, 1, r, s)
    p, q = twins.out_size(9, ph, r, stride, dil), twins.out_size(8, pw, s, stride, dil)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y = conv.depthwise_part(x, w.reshape(4, r, s), stride, ph, pw, dil, np.full((3, 4, p, q), np.nan), 0, 12)
    np.testing.assert_allclose(y, twins.conv2d(x64, w64, None, stride, ph, pw, dil, 4), rtol=1e-12, atol=1e-12)
    dy = rand(3, 4, p, q)
    dx = np.full((3, 4, 9, 8), np.nan)
    conv.depthwise_input_part(dy, w.reshape(4, r, s), stride, ph, pw, dil, dx, 4, 12)  # maps 4 to 11 only
    assert np.isnan(dx[0]).all()
    np.testing.assert_allclose(dx[1:], twins.conv2d_grad_input(dy.astype(np.float64), w64, x.shape, stride, ph, pw,
                                                               dil, 4)[1:], rtol=1e-12, atol=1e-12)  # fmt: skip


@pytest.mark.parametrize(("channels", "filters", "ph", "pw", "r", "s"),
                         [(1, 6, 2, 2, 5, 5), (3, 16, 1, 1, 3, 3), (2, 5, 0, 1, 3, 2), (3, 1, 2, 0, 1, 3)])  # fmt: skip
def test_direct_forward_kernel_matches_twin(channels, filters, ph, pw, r, s):
    """Float sums as a chain of fused multiply-adds in (i, j, c) order; integer ones exact."""
    x, w = rand(3, channels, 9, 8), rand(filters, channels, r, s)
    p, q = twins.out_size(9, ph, r, 1, 1), twins.out_size(8, pw, s, 1, 1)
    y = np.full((3, filters, p, q), np.nan, np.float32)
    conv.direct_forward_part(x, w, ph, pw, y, filters, 3 * filters)  # samples 1 and 2 only
    assert np.isnan(y[0]).all()
    np.testing.assert_array_equal(y[1:], twins.direct_forward(x[1:], w, ph, pw))
    np.testing.assert_allclose(y[1:], twins.conv2d(x[1:].astype(np.float64), w.astype(np.float64), None, 1, ph, pw),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    xi = np.random.default_rng(5).integers(-127, 128, x.shape).astype(np.float32)
    wi = np.random.default_rng(6).integers(-127, 128, w.shape).astype(np.float32)
    exact = conv.direct_forward_part(xi, wi, ph, pw, np.empty((3, filters, p, q), np.float32), 0, 3 * filters)
    np.testing.assert_array_equal(exact, twins.conv2d(xi.astype(np.int64), wi.astype(np.int64), None, 1, ph, pw))


@pytest.mark.parametrize(
    ("stride", "ph", "pw", "r", "s", "dil"),
    [(1, 1, 1, 3, 3, 1), (1, 2, 2, 5, 5, 1), (2, 1, 1, 3, 3, 1), (2, 0, 2, 3, 5, 1), (1, 2, 2, 3, 3, 2),
     (3, 1, 0, 2, 3, 1)],
)  # fmt: skip
@pytest.mark.parametrize(("channels", "filters", "groups"), [(4, 4, 4), (1, 6, 1), (3, 5, 1), (4, 6, 2)])
@pytest.mark.parametrize("span", [0, 1, 2, 16])
def test_direct_weight_kernel_matches_twin(stride, ph, pw, r, s, dil, channels, filters, groups, span):
    """Depthwise, one-channel, dense and grouped weight gradients; float32 lanes over ``span`` samples
    at stride 1 (float products rounded to float32), float64 at other strides or with ``span`` 0."""
    x = rand(5, channels, 9, 8)
    dy = rand(5, filters, twins.out_size(9, ph, r, stride, dil), twins.out_size(8, pw, s, stride, dil))
    shape = (filters, channels // groups, r, s)
    dw = np.full(shape, np.nan)
    conv.direct_weight_part(x, dy, stride, ph, pw, dil, span, dw, 1, filters)  # filters 1 to the last
    assert np.isnan(dw[0]).all()  # filters outside the range are not touched
    want = twins.conv2d_grad_weight(x.astype(np.float64), dy.astype(np.float64), shape, stride, ph, pw, dil, groups)
    tolerance = 1e-4 if stride == 1 and span else 1e-10  # float32 products and lanes at stride 1 (sums of ~10²: ~1e-5)
    np.testing.assert_allclose(dw[1:], want[1:], rtol=tolerance, atol=tolerance)
    # integer operands: exact whenever ``span`` products stay below 2**24 (here 127·127·span)
    xi, dyi = np.round(x * 127).astype(np.float32), np.round(dy * 127).astype(np.float32)
    conv.direct_weight_part(xi, dyi, stride, ph, pw, dil, span, dw, 0, filters)
    exact = twins.conv2d_grad_weight(xi.astype(np.float64), dyi.astype(np.float64), shape, stride, ph, pw, dil, groups)
    np.testing.assert_array_equal(dw, exact)


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (6, 7, 1, 1)])
def test_batchnorm_kernels_match_twins(shape):
    x, gamma, beta = rand(*shape), rand(shape[1]), rand(shape[1])
    view = x.reshape(shape[0], shape[1], -1)
    y, mean, inv_std = layers.batchnorm_train(view, gamma, beta, 1e-5)
    ty, tmean, tinv = twins.batchnorm(x.astype(np.float64), gamma, beta, 1e-5)
    np.testing.assert_allclose(y.reshape(shape), ty, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean, tmean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inv_std, tinv, rtol=1e-4)
    rm, rv = rand(shape[1]), np.abs(rand(shape[1])) + 0.5
    eval_y = layers.batchnorm_eval(view, gamma, beta, rm, rv, 1e-5).reshape(shape)
    want = gamma[None, :, None, None] * (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(eval_y, want + beta[None, :, None, None], rtol=1e-4, atol=1e-5)
    dy = rand(*shape)
    dx, dgamma, dbeta = layers.batchnorm_backward(dy.reshape(view.shape), view, gamma, mean, inv_std)
    tdx, tdgamma, tdbeta = twins.batchnorm_backward(dy.astype(np.float64), x.astype(np.float64), gamma, mean, inv_std)
    np.testing.assert_allclose(dx.reshape(shape), tdx, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(dgamma, tdgamma, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dbeta, tdbeta, rtol=1e-4, atol=1e-5)


def test_batchnorm_sums_channels_side_by_side_with_the_same_bytes():
    """Four channels' sums run side by side; each is the same float64 chain as a channel alone
    (a part of one channel takes the one-channel loop), so the bytes agree."""
    x, dy = rand(5, 9, 13) * 100, rand(5, 9, 13)
    gamma, beta = rand(9), rand(9)
    together = [np.empty_like(x), np.empty(9, np.float32), np.empty(9, np.float32)]
    layers.batchnorm_train_part(x, gamma, beta, 1e-5, *together, 0, 9)
    alone = [np.empty_like(x), np.empty(9, np.float32), np.empty(9, np.float32)]
    for c in range(9):
        layers.batchnorm_train_part(x, gamma, beta, 1e-5, *alone, c, c + 1)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(together, alone, strict=True))
    mean, inv_std = together[1], together[2]
    back = [[np.empty_like(x), np.empty(9, np.float32), np.empty(9, np.float32)] for _ in range(2)]
    layers.batchnorm_backward_part(dy, x, gamma, mean, inv_std, *back[0], 0, 9)
    for c in range(9):
        layers.batchnorm_backward_part(dy, x, gamma, mean, inv_std, *back[1], c, c + 1)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(*back, strict=True))


def test_two_by_two_max_pool_matches_the_twin():
    """The 2×2 stride-2 path (a fixed loop, selects) as the general one: ties go to the first tap,
    a NaN never wins (a window of NaNs gives −inf at tap 0), an odd last row is dropped."""
    x = np.round(rand(3, 2, 9, 8))  # many ties
    x[0, 0, 2, 2] = x[1, 1, :2, :2] = np.nan
    y, arg = layers.maxpool(x, 2, 2, 2, 0, 0, 4, 4)
    ty, targ = twins.maxpool(np.nan_to_num(x, nan=-np.inf).astype(np.float64), 2, 2, 2, 0, 0)
    np.testing.assert_array_equal(y, ty.astype(np.float32))
    np.testing.assert_array_equal(arg, targ)
    assert y[1, 1, 0, 0] == -np.inf and arg[1, 1, 0, 0] == 0


def test_pool_kernels_match_twins():
    x = rand(2, 3, 7, 6)
    y, arg = layers.maxpool(x, 3, 2, 2, 1, 1, 4, 4)
    ty, targ = twins.maxpool(x.astype(np.float64), 3, 2, 2, 1, 1)
    np.testing.assert_array_equal(y, ty.astype(np.float32))
    np.testing.assert_array_equal(arg, targ)
    np.testing.assert_allclose(
        layers.avgpool(x, 3, 2, 2, 1, 1, 4, 4), twins.avgpool(x, 3, 2, 2, 1, 1), rtol=1e-5, atol=1e-6
    )
    dy = rand(2, 3, 4, 4)
    np.testing.assert_allclose(
        layers.maxpool_backward(dy, arg, 7, 6, 2, 2, 1, 1), twins.maxpool_backward(dy, arg, x.shape, 2, 2, 1, 1)
    )
    np.testing.assert_allclose(
        layers.avgpool_backward(dy, 7, 6, 3, 2, 2, 1, 1),
        twins.avgpool_backward(dy, x.shape, 3, 2, 2, 1, 1),
        rtol=1e-5,
        atol=1e-6,
    )


def test_relu_softmax_and_sgd_kernels_match_twins():
    x = rand(5, 4)
    y, dx = np.full(20, np.nan, np.float32), np.full(20, np.nan, np.float32)
    layers.relu_part(x.reshape(-1), y, 3, 20)  # a part: elements 3 to 19
    np.testing.assert_array_equal(y[3:], np.maximum(x, 0).reshape(-1)[3:])
    assert np.isnan(y[:3]).all()
    layers.relu_part(x.reshape(-1), y, 0, 3)
    dy = rand(5, 4)
    layers.relu_backward_part(dy.reshape(-1), y, dx, 0, 20)
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, 0).reshape(-1))
    labels = np.array([0, 3, 2, 1, 3])
    weights = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    loss, probs, dlogits = layers.softmax_cross_entropy(x, labels, weights)
    tloss, tprobs, tdlogits = twins.softmax_cross_entropy(x.astype(np.float64), labels, weights)
    assert np.isclose(loss, tloss, rtol=1e-6)
    np.testing.assert_allclose(probs, tprobs, rtol=1e-5)
    np.testing.assert_allclose(dlogits, tdlogits, rtol=1e-5, atol=1e-7)
    w, g, v = rand(10), rand(10), rand(10)
    tw, tv = twins.sgd(w.astype(np.float64), g, v, 0.1, 0.9, 1e-3)
    layers.sgd_update(w, g, v, 0.1, 0.9, 1e-3)
    np.testing.assert_allclose(w, tw, rtol=1e-6)
    np.testing.assert_allclose(v, tv, rtol=1e-6, atol=1e-7)


@given(st.integers(0, 2**32 - 1))
def test_hold_greedily_matches_twin(seed):
    from e2sim.kernels.residency import hold_greedily

    rng = np.random.default_rng(seed)
    ops, n = 30, 12
    free = rng.uniform(0, 100, ops)
    start = rng.integers(0, ops, n)
    end = np.minimum(start + rng.integers(0, 10, n), ops - 1)
    size = rng.uniform(1, 60, n)
    counts = rng.integers(0, 4, n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    picks = [rng.integers(s, e + 1, k) for s, e, k in zip(start, end, counts, strict=True)]
    where = np.concatenate(picks).astype(np.int64)
    amount = rng.uniform(0, 40, offsets[-1])
    mine_free = free.copy()
    held, tightest, room = hold_greedily(mine_free, start, end, size, offsets, where, amount)
    t_held, t_tightest, t_room, t_free = twins.hold_greedily(free, start, end, size, offsets, where, amount)
    assert (held == t_held).all() and (tightest == t_tightest).all()
    assert np.allclose(room, t_room) and np.allclose(mine_free, t_free)


def test_batch_norm_in_parts_equals_the_whole():
    """Channels cut anywhere give the same bytes."""
    x, dy = rand(4, 5, 9), rand(4, 5, 9)
    gamma, beta = rand(5), rand(5)
    y, mean, inv_std = layers.batchnorm_train(x, gamma, beta, 1e-5)
    parts = [np.empty_like(y), np.empty(5, np.float32), np.empty(5, np.float32)]
    dparts = [np.empty_like(x), np.empty(5, np.float32), np.empty(5, np.float32)]
    for lo, hi in itertools.pairwise([0, 2, 3, 5]):
        layers.batchnorm_train_part(x, gamma, beta, 1e-5, *parts, lo, hi)
        layers.batchnorm_backward_part(dy, x, gamma, mean, inv_std, *dparts, lo, hi)
    for got, want in zip(parts + dparts, (y, mean, inv_std, *layers.batchnorm_backward(dy, x, gamma, mean, inv_std)),
                         strict=True):  # fmt: skip
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_fold_sums_match_twin(dims):
    """Tiles of 1-3 nest dimensions (whole, even and uneven splits), any factor and divisor."""
    sizes = rng.integers(1, 200, (dims, 300)).astype(np.float64)
    tiles = np.minimum(sizes, rng.integers(1, 64, (dims, 300))).astype(np.float64)
    count = np.ceil(sizes / tiles)
    last = sizes - (count - 1) * tiles
    for factor, divisor in ((1, 8), (9, 12), (25, 32), (1, 1)):
        got = mapping.fold_sums(count, tiles, last, factor, divisor)
        np.testing.assert_array_equal(got, twins.fold_sums(count, tiles, last, factor, divisor))


def test_direct_weight_lanes_stay_exact_for_wide_integers():
    """With products near 2**22, ``_lane_samples`` lets 4 samples share a float32 lane: exact; all 6
    in one lane round (the sums pass 2**24 and are odd). Wider products sum in float64."""
    x, dy = np.full((6, 1, 4, 4), 1999, np.float32), np.full((6, 2, 4, 4), 1999, np.float32)
    span = _lane_samples(True, (1999.0, 1999.0), 6)
    assert span == 4
    exact = twins.conv2d_grad_weight(x.astype(np.float64), dy.astype(np.float64), (2, 1, 1, 1), 1, 0, 0)
    dw = conv.direct_weight_part(x, dy, 1, 0, 0, 1, span, np.empty((2, 1, 1, 1)), 0, 2)
    np.testing.assert_array_equal(dw, exact)
    rounded = conv.direct_weight_part(x, dy, 1, 0, 0, 1, 6, np.empty((2, 1, 1, 1)), 0, 2)
    assert not np.array_equal(rounded, exact)
    # products of 2**24 or more: float64 sums (span 0), exact while they stay below 2**53
    x, dy = np.full((6, 1, 4, 4), 4097, np.float32), np.full((6, 2, 4, 4), 4097, np.float32)
    assert _lane_samples(True, (4097.0, 4097.0), 6) == 0
    dw = conv.direct_weight_part(x, dy, 1, 0, 0, 1, 0, np.empty((2, 1, 1, 1)), 0, 2)
    np.testing.assert_array_equal(dw, np.full((2, 1, 1, 1), 6 * 16 * 4097.0**2))
