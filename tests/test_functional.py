"""The functional API: fp32 results against twins, gradients against float64 finite differences,
integer arithmetic against exact integer references, rounding and saturation, counting."""

import numpy as np
import pytest
import twins

import e2sim.functional as F
from e2sim import SpecError, functional_gemm
from e2sim.config.formats import parse_format
from e2sim.numerics.quantize import exact_integer_matmul, quantize

rng = np.random.default_rng(1)
CONV_CASES = [(1, 0, 3), (2, 1, 3), (2, 2, 5), (1, 1, 1), (3, 0, 2)]  # stride, padding, kernel


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.fixture(params=["direct forward", "pixel-major", "pixel-major, error columns",
                        "pixel-major, error columns by sample", "channel-major"])  # fmt: skip
def layout(request, monkeypatch):
    """Dense convs build their columns pixel-major from a few input channels, channel-major below;
    pixel-major backward GEMMs larger than SMALL_GEMM_MACS read the errors as channel-major columns
    (a copy per piece, or a view of a piece of one sample); stride-1 forward passes from fewer than
    DIRECT_FORWARD_CHANNELS channels run directly ("direct forward" only, the others build columns):
    each test that takes this runs every way."""
    if request.param != "direct forward":
        monkeypatch.setattr(functional_gemm, "DIRECT_FORWARD_CHANNELS", 0)
    least = 1 if request.param.startswith(("pixel-major", "direct")) else 10**9
    for direction in ("forward", "backward"):
        monkeypatch.setitem(F.PIXEL_MAJOR_CHANNELS, direction, least)
    if "error columns" in request.param:
        monkeypatch.setattr(functional_gemm, "SMALL_GEMM_MACS", 0)
    if "by sample" in request.param:
        monkeypatch.setattr(functional_gemm, "PIECE_BYTES", 1)
    return request.param


def rel_error(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-300)


def numeric_grad(f, x, eps=1e-6):
    """Central differences of scalar f at float64 x."""
    x = x.astype(np.float64).copy()
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


@pytest.mark.parametrize(("stride", "padding", "kernel"), CONV_CASES)
def test_conv2d_matches_twin_and_finite_differences(stride, padding, kernel, layout):
    x, w, b = rand(2, 3, 7, 6), rand(4, 3, kernel, kernel), rand(4)
    y = F.conv2d(x, w, b, stride, padding)
    np.testing.assert_allclose(
        y, twins.conv2d(x.astype(np.float64), w, b, stride, padding, padding), rtol=1e-4, atol=1e-5
    )
    probe = rng.standard_normal(y.shape)
    dx = F.conv2d_grad_input(probe.astype(np.float32), w, x.shape, stride, padding)
    dw, db = F.conv2d_grad_weight(x, probe.astype(np.float32), w.shape, stride, padding, bias=True)
    fx = numeric_grad(lambda v: np.sum(twins.conv2d(v, w.astype(np.float64), b, stride, padding, padding) * probe), x)
    fw = numeric_grad(lambda v: np.sum(twins.conv2d(x.astype(np.float64), v, b, stride, padding, padding) * probe), w)
    assert rel_error(dx, fx) <= 1e-4 and rel_error(dw, fw) <= 1e-4
    np.testing.assert_allclose(db, probe.sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)  # float32 sums near 0
    # and the backward ops equal their twins
    np.testing.assert_allclose(
        dx, twins.conv2d_grad_input(probe, w, x.shape, stride, padding, padding), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        dw, twins.conv2d_grad_weight(x, probe, w.shape, stride, padding, padding), rtol=1e-4, atol=1e-5
    )


def test_linear_matches_finite_differences():
    x, w, b = rand(5, 7), rand(3, 7), rand(3)
    y = F.linear(x, w, b)
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T + b, rtol=1e-5, atol=1e-6)
    probe = rng.standard_normal(y.shape)
    dx = F.linear_grad_input(probe.astype(np.float32), w)
    dw, db = F.linear_grad_weight(x, probe.astype(np.float32), bias=True)
    fx = numeric_grad(lambda v: np.sum((v @ w.T.astype(np.float64) + b) * probe), x)
    fw = numeric_grad(lambda v: np.sum((x.astype(np.float64) @ v.T + b) * probe), w)
    assert rel_error(dx, fx) <= 1e-4 and rel_error(dw, fw) <= 1e-4
    np.testing.assert_allclose(db, probe.sum(axis=0), rtol=1e-5)


@pytest.mark.parametrize("shape", [(4, 3, 3, 2), (6, 5)])
def test_batchnorm_matches_finite_differences(shape):
    x, gamma, beta = rand(*shape), rand(shape[1]), rand(shape[1])
    y, mean, inv_std = F.batchnorm(x, gamma, beta)
    probe = rng.standard_normal(shape)
    dx, dgamma, dbeta = F.batchnorm_backward(probe.astype(np.float32), x, gamma, mean, inv_std)

    def loss(xv=x, gv=gamma, bv=beta):
        return np.sum(twins.batchnorm(np.asarray(xv, np.float64), np.asarray(gv, np.float64), bv, 1e-5)[0] * probe)

    assert rel_error(dx, numeric_grad(lambda v: loss(xv=v), x)) <= 1e-4
    assert rel_error(dgamma, numeric_grad(lambda v: loss(gv=v), gamma)) <= 1e-4
    assert rel_error(dbeta, numeric_grad(lambda v: loss(bv=v), beta)) <= 1e-4


def test_pooling_matches_finite_differences():
    x = rand(2, 3, 6, 7)
    y, arg = F.max_pool2d(x, 3, stride=2, padding=1)
    probe = rng.standard_normal(y.shape)
    dx = F.max_pool2d_backward(probe.astype(np.float32), arg, x.shape, 3, stride=2, padding=1)
    fx = numeric_grad(lambda v: np.sum(twins.maxpool(v, 3, 3, 2, 1, 1)[0] * probe), x)
    assert rel_error(dx, fx) <= 1e-4
    ya = F.avg_pool2d(x, 2, stride=2, padding=1)
    probe = rng.standard_normal(ya.shape)
    dxa = F.avg_pool2d_backward(probe.astype(np.float32), x.shape, 2, stride=2, padding=1)
    assert rel_error(dxa, numeric_grad(lambda v: np.sum(twins.avgpool(v, 2, 2, 2, 1, 1) * probe), x)) <= 1e-4
    yg = F.global_avg_pool(x)
    np.testing.assert_allclose(yg, x.mean(axis=(2, 3)), rtol=1e-5)
    probe = rng.standard_normal(yg.shape)
    dxg = F.global_avg_pool_backward(probe.astype(np.float32), x.shape)
    assert rel_error(dxg, numeric_grad(lambda v: np.sum(v.mean(axis=(2, 3)) * probe), x)) <= 1e-4


def test_softmax_cross_entropy_matches_finite_differences():
    logits, labels = rand(6, 5), rng.integers(0, 5, 6)
    loss, dlogits = F.softmax_cross_entropy(logits, labels)
    assert np.isclose(loss, twins.softmax_cross_entropy(logits.astype(np.float64), labels)[0], rtol=1e-6)
    fd = numeric_grad(lambda v: twins.softmax_cross_entropy(v, labels)[0], logits)
    assert rel_error(dlogits, fd) <= 1e-4


INT8 = dict(weights="int8", activations="int8", errors="int8", gradients="int16", accumulator="int32")


def integer_valued(*shape, top=127):
    """Integers in [-top, top] with |max| exactly ``top``, so a per-tensor scale is exactly 1."""
    a = rng.integers(-top, top + 1, shape).astype(np.float32)
    a.flat[0] = top
    return a


@pytest.mark.parametrize(("stride", "padding", "kernel"), CONV_CASES)
def test_integer_conv_equals_an_exact_integer_reference(stride, padding, kernel, layout):
    fmt = F.precision(**INT8)
    x, w = integer_valued(2, 3, 7, 6), integer_valued(4, 3, kernel, kernel)
    xi, wi = x.astype(np.int64), w.astype(np.int64)
    y = F.conv2d(x, w, stride=stride, padding=padding, fmt=fmt)
    np.testing.assert_array_equal(y, twins.conv2d(xi, wi, None, stride, padding, padding))
    dy = integer_valued(*y.shape)
    dx = F.conv2d_grad_input(dy, w, x.shape, stride, padding, fmt=fmt)
    np.testing.assert_array_equal(
        dx, twins.conv2d_grad_input(dy.astype(np.int64), wi, x.shape, stride, padding, padding)
    )
    wide = F.precision(**{**INT8, "gradients": "int16"})
    acc = twins.conv2d_grad_weight(xi, dy.astype(np.int64), w.shape, stride, padding, padding)
    dw = F.conv2d_grad_weight(x, dy, w.shape, stride, padding, fmt=wide)
    # the weight gradient is then rounded to int16 with a per-tensor scale
    expected = quantize(acc.astype(np.float32), parse_format("int16")).dequantize()
    np.testing.assert_array_equal(dw, expected)


def test_integer_linear_equals_an_exact_integer_reference():
    fmt = F.precision(**INT8)
    x, w = integer_valued(5, 40), integer_valued(3, 40)
    np.testing.assert_array_equal(F.linear(x, w, fmt=fmt), x.astype(np.int64) @ w.astype(np.int64).T)
    dy = integer_valued(5, 3)
    np.testing.assert_array_equal(F.linear_grad_input(dy, w, fmt=fmt), dy.astype(np.int64) @ w.astype(np.int64))


def test_accumulator_overflow_saturates_and_is_counted():
    fmt = F.precision(**{**INT8, "accumulator": "int16"})
    x, w = integer_valued(2, 8, 5, 5), integer_valued(4, 8, 3, 3)
    x[:], w[:] = 127, 127  # every sum is 72 * 127 * 127, far above int16
    counter = F.OpCounter()
    y = F.conv2d(x, w, fmt=fmt, counter=counter, op="c")
    assert np.all(y == 32767)
    assert counter.ops["c"].saturated["accumulator"] == y.size


def test_exact_integer_matmul_is_exact_on_wide_reductions():
    a = rng.integers(-32767, 32768, (3, 5000)).astype(np.float32)
    b = rng.integers(-127, 128, (5000, 4)).astype(np.float32)
    got = exact_integer_matmul(a, b, 32767, 127)
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b.astype(np.int64))
    small = exact_integer_matmul(a[:, :4], b[:4], 32767, 127)  # 4 * 32767 * 127 < 2**24: one float32 GEMM
    assert small.dtype == np.float32
    np.testing.assert_array_equal(small, a[:, :4].astype(np.int64) @ b[:4].astype(np.int64))
    a8 = rng.integers(-127, 128, (3, 200_000)).astype(np.float32)
    b8 = rng.integers(-127, 128, (200_000, 2)).astype(np.float32)
    np.testing.assert_array_equal(exact_integer_matmul(a8, b8, 127, 127), a8.astype(np.int64) @ b8.astype(np.int64))


def test_stochastic_rounding_is_unbiased_and_reproducible():
    fmt = parse_format("int4")
    x = np.full(200_000, 0.3, np.float32)
    x[0] = 7.0  # scale = 1: the grid is the integers, 0.3 rounds to 0 or 1
    a = quantize(x, fmt, "stochastic", seed=5)
    b = quantize(x, fmt, "stochastic", seed=5)
    c = quantize(x, fmt, "stochastic", seed=6)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    assert abs(a.values[1:].mean() - 0.3) < 0.005
    nearest = quantize(x, fmt, "nearest")
    assert nearest.values[1:].mean() == 0.0  # biased: every 0.3 rounds down


def test_float_formats_round_like_hardware():
    x = (rng.standard_normal(10_000) * 10.0 ** rng.integers(-8, 5, 10_000)).astype(np.float32)
    x = x[np.abs(x) < 65504]
    fp16 = quantize(x, parse_format("fp16"))
    np.testing.assert_array_equal(fp16.values, x.astype(np.float16).astype(np.float32))
    bf16 = quantize(x, parse_format("bf16")).values
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16  # round to nearest even on 16 bits
    np.testing.assert_array_equal(bf16, rounded.astype(np.uint32).view(np.float32))
    tiny = [2.0**-9, 2.0**-10, 3 * 2.0**-10]  # the smallest subnormal, half of it (ties to even: 0), 1.5×
    e4m3 = quantize(np.array([500.0, 448.0, -1000.0, *tiny], np.float32), parse_format("fp8_e4m3"))
    np.testing.assert_array_equal(e4m3.values, [448.0, 448.0, -448.0, 2.0**-9, 0.0, 2.0**-8])
    assert e4m3.saturated == 2
    subnormals = [m * 2.0**-9 for m in range(1, 8)]
    normals = [(1 + m / 8) * 2.0**e for e in range(-6, 9) for m in range(8) if (e, m) != (8, 7)]  # S.1111.111 is NaN
    codes = np.array(subnormals + normals, np.float32)
    assert len(codes) == 126 and codes.max() == 448
    np.testing.assert_array_equal(quantize(codes, parse_format("fp8_e4m3")).values, codes)
    between = (codes[:-1] + codes[1:]) / 2 + np.diff(codes) / 8  # just above each midpoint: rounds up
    np.testing.assert_array_equal(quantize(between, parse_format("fp8_e4m3")).values, codes[1:])


def test_static_q_format_saturates_and_counts():
    q = quantize(np.array([0.5, -1.0, 1.5, -2.0, 0.3], np.float32), parse_format("q1.7"))
    np.testing.assert_array_equal(q.dequantize(), [0.5, -1.0, 127 / 128, -1.0, 38 / 128])
    assert q.saturated == 2


def test_scale_granularities():
    w = rand(4, 3, 3, 3)
    w[2] *= 100
    per_tensor = quantize(w, parse_format("int8"))
    per_channel = quantize(w, parse_format("int8"), granularity="channel", axis=0)
    assert per_channel.scale.shape == (4, 1, 1, 1) and per_tensor.scale.shape == (1, 1, 1, 1)
    # the large channel sets the tensor's scale (the same error there either way); the others gain
    others = np.arange(4) != 2
    error = {name: np.abs(q.dequantize() - w)[others].max() for name, q in (("tensor", per_tensor),
                                                                             ("channel", per_channel))}  # fmt: skip
    assert error["channel"] < error["tensor"] / 10
    x = np.abs(rand(8, 10)) + 0.1
    x[0] *= 50  # an outlier sample: Banner's mean of per-sample ranges clips it
    mean_range = quantize(x, parse_format("int8"), granularity="batch_mean")
    assert mean_range.saturated > 0 and mean_range.scale.size == 1


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("granularity", ["tensor", "sample", "channel", "batch_mean"])
@pytest.mark.parametrize("shape", [(64, 16, 17, 17), (12, 4, 3, 3)])  # 295,936 values (split over the
def test_scales_are_those_of_max_and_min(threads, granularity, shape):  # threads, odd rows), and 432
    """The one-pass magnitudes (on the kernel threads from 2**18 values) give the scales and values
    of max(max x, −min x); a NaN anywhere gives scale 1 either way."""
    from e2sim.numerics import quantize as Q
    from e2sim.process import thread_budget

    x = rand(*shape) * 3
    x[5] = 0.0
    x[7, 3] = -0.0
    x[9, 0, 0, 0] = -1e4
    axis = 1 if granularity == "channel" else 0
    with thread_budget(threads):
        for values in (x, np.where(np.arange(x.size).reshape(x.shape) == 12345 % x.size, np.nan, x).astype(np.float32)):
            got = quantize(values, parse_format("int8"), "stochastic", granularity, axis, seed=3)
            others = None if granularity in ("tensor", "batch_mean") else tuple(i for i in range(4) if i != axis)
            if granularity == "batch_mean":
                rows = values.reshape(shape[0], -1)
                ranges = np.maximum(rows.max(1), -rows.min(1)).mean()
            else:
                ranges = np.maximum(values.max(axis=others), -values.min(axis=others))
            want = np.where(np.asarray(ranges, np.float64) > 0, np.asarray(ranges, np.float64) / 127, 1.0)
            np.testing.assert_array_equal(got.scale.reshape(-1), np.asarray(want, np.float32).reshape(-1))
            scale, _, _ = Q._dynamic_scale(values, 127, granularity, axis)
            np.testing.assert_array_equal(scale.reshape(-1), np.asarray(want, np.float64).reshape(-1))


def test_quantized_training_ops_are_close_to_fp32():
    fmt = F.precision(**INT8, rounding="stochastic", scale={"weights": "channel", "activations": "sample"})
    x, w = rand(4, 8, 9, 9), rand(16, 8, 3, 3)
    assert rel_error(F.conv2d(x, w, padding=1, fmt=fmt, seed=3), F.conv2d(x, w, padding=1)) < 0.02
    dy = rand(4, 16, 9, 9)
    assert (
        rel_error(F.conv2d_grad_input(dy, w, x.shape, 1, 1, fmt=fmt), F.conv2d_grad_input(dy, w, x.shape, 1, 1)) < 0.02
    )
    assert (
        rel_error(F.conv2d_grad_weight(x, dy, w.shape, 1, 1, fmt=fmt), F.conv2d_grad_weight(x, dy, w.shape, 1, 1))
        < 0.02
    )
    half = F.precision(weights="fp16", activations="bf16", errors="fp8_e5m2", gradients="fp16")
    assert rel_error(F.conv2d(x, w, padding=1, fmt=half), F.conv2d(x, w, padding=1)) < 0.01


def test_counting_records_and_does_not_change_results():
    fmt = F.precision(**INT8)
    x, w, b = rand(2, 3, 8, 8), rand(5, 3, 3, 3), rand(5)
    counter = F.OpCounter()
    y = F.conv2d(x, w, b, padding=1, fmt=fmt, counter=counter, op="conv1.fwd")
    np.testing.assert_array_equal(y, F.conv2d(x, w, b, padding=1, fmt=fmt))
    count = counter.ops["conv1.fwd"]
    assert count.macs == {"8x8": 2 * 5 * 3 * 8 * 8 * 9}
    assert count.reads == {"x": x.size, "w": w.size, "b": 5} and count.writes == {"y": y.size}
    assert count.elementwise_ops == y.size  # the bias adds
    F.relu(y, counter=counter, op="relu1.fwd")
    assert counter.ops["relu1.fwd"].elementwise_ops == y.size
    F.conv2d(x, w, padding=1, counter=counter, op="fp32")
    assert counter.ops["fp32"].macs == {"32x32": 2 * 5 * 3 * 8 * 8 * 9}


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: F.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((2, 3, 3, 3), np.float32)), TypeError,
         "x must be a float32"),
        (lambda: F.conv2d(np.zeros((1, 3, 5, 5), np.float32), np.zeros((2, 4, 3, 3), np.float32)), ValueError,
         r"w has shape \(2, 4, 3, 3\), expected \(2, 3, 3, 3\)"),
        (lambda: F.conv2d(np.zeros((1, 3, 2, 2), np.float32), np.zeros((2, 3, 3, 3), np.float32)), ValueError,
         "window 3 does not fit"),
        (lambda: F.conv2d(np.zeros((1, 3, 5, 5), np.float32), np.zeros((2, 3, 3, 3), np.float32), stride=0),
         ValueError, "stride must be a positive integer"),
        (lambda: F.linear(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32)), ValueError, "w has shape"),
        (lambda: F.softmax_cross_entropy(np.zeros((2, 3), np.float32), np.array([0, 3])), ValueError,
         r"labels must lie"),
        (lambda: F.max_pool2d(np.zeros((1, 1, 4, 4), np.float32), 2, padding=2), ValueError, "at most half the window"),
        (lambda: F.precision(weights="int99"), SpecError, "precision\\(\\): weights: integer formats"),
    ],
)  # fmt: skip
def test_bad_arguments_are_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# groups, dilation, stride, padding, kernel, input channels, filters
GROUPED_CASES = [(3, 1, 1, 1, 3, 6, 9), (6, 1, 2, 1, 3, 6, 6), (2, 2, 1, 2, 3, 4, 4), (1, 2, 2, 2, 3, 3, 5),
                 (4, 3, 1, 3, 3, 4, 8), (2, 1, 1, 0, 1, 4, 2), (4, 2, 1, 2, 3, 4, 4)]  # fmt: skip


@pytest.mark.parametrize(("groups", "dil", "stride", "padding", "kernel", "c", "k"), GROUPED_CASES)
def test_grouped_and_dilated_conv_matches_twins_and_finite_differences(groups, dil, stride, padding, kernel, c, k,
                                                                        layout):
    x, w, b = rand(2, c, 9, 8), rand(k, c // groups, kernel, kernel), rand(k)
    conv = dict(groups=groups, dilation=dil)
    y = F.conv2d(x, w, b, stride, padding, **conv)
    ref = twins.conv2d(x.astype(np.float64), w, b, stride, padding, padding, dil, groups)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    probe = rng.standard_normal(y.shape)
    dx = F.conv2d_grad_input(probe.astype(np.float32), w, x.shape, stride, padding, **conv)
    dw, db = F.conv2d_grad_weight(x, probe.astype(np.float32), w.shape, stride, padding, bias=True, **conv)
    np.testing.assert_allclose(dx, twins.conv2d_grad_input(probe, w, x.shape, stride, padding, padding, dil, groups),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(dw, twins.conv2d_grad_weight(x, probe, w.shape, stride, padding, padding, dil, groups),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(db, probe.sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)  # float32 sums near 0
    small = x[:1, :, :6, :6].astype(np.float64)  # finite differences on a smaller input
    y_small = twins.conv2d(small, w, None, stride, padding, padding, dil, groups)
    probe_small = rng.standard_normal(y_small.shape)
    fx = numeric_grad(lambda v: np.sum(twins.conv2d(v, w, None, stride, padding, padding, dil, groups) * probe_small),
                      small)  # fmt: skip
    got = F.conv2d_grad_input(probe_small.astype(np.float32), w, small.shape, stride, padding, **conv)
    assert rel_error(got, fx) <= 1e-4


@pytest.mark.parametrize(("groups", "dil", "stride", "padding", "kernel", "c", "k"), GROUPED_CASES)
def test_integer_grouped_conv_is_exact_and_counts_its_macs(groups, dil, stride, padding, kernel, c, k, layout):
    fmt = F.precision(**INT8)
    x, w = integer_valued(2, c, 9, 8), integer_valued(k, c // groups, kernel, kernel)
    x[0, 0, :3] = 0  # some zero activations for the zero-operand count
    x.flat[0] = 127
    xi, wi = x.astype(np.int64), w.astype(np.int64)
    conv = dict(groups=groups, dilation=dil)
    counter = F.OpCounter()
    y = F.conv2d(x, w, stride=stride, padding=padding, fmt=fmt, counter=counter, op="fwd", **conv)
    np.testing.assert_array_equal(y, twins.conv2d(xi, wi, None, stride, padding, padding, dil, groups))
    dy = integer_valued(*y.shape)
    dx = F.conv2d_grad_input(dy, w, x.shape, stride, padding, fmt=fmt, counter=counter, op="bwd_data", **conv)
    np.testing.assert_array_equal(dx, twins.conv2d_grad_input(dy.astype(np.int64), wi, x.shape, stride, padding,
                                                               padding, dil, groups))  # fmt: skip
    wide = F.precision(**{**INT8, "gradients": "int16"})
    acc = twins.conv2d_grad_weight(xi, dy.astype(np.int64), w.shape, stride, padding, padding, dil, groups)
    dw = F.conv2d_grad_weight(x, dy, w.shape, stride, padding, fmt=wide, counter=counter, op="bwd_weight", **conv)
    np.testing.assert_array_equal(dw, quantize(acc.astype(np.float32), parse_format("int16")).dequantize())
    p, q = y.shape[2:]
    macs = 2 * k * (c // groups) * p * q * kernel * kernel
    nz = {name: (a != 0).astype(np.int64) for name, a in (("x", xi), ("w", wi), ("dy", dy))}
    nonzero = {  # products with both operands non-zero (padding taps are zero operands)
        "fwd": twins.conv2d(nz["x"], nz["w"], None, stride, padding, padding, dil, groups).sum(),
        # the input gradient's GEMM multiplies every error of a filter with every tap of it
        "bwd_data": np.dot(nz["dy"].sum(axis=(0, 2, 3)), nz["w"].reshape(k, -1).sum(axis=1)),
        "bwd_weight": twins.conv2d_grad_weight(nz["x"], nz["dy"], w.shape, stride, padding, padding, dil,
                                               groups).sum(),
    }  # fmt: skip
    for op in ("fwd", "bwd_data", "bwd_weight"):
        count = counter.ops[op]
        assert count.total_macs == macs
        assert count.zero_macs == macs - nonzero[op], op


def test_wide_integer_grouped_gemm_is_exact_group_by_group():
    fmt = F.precision(weights="int16", activations="int16", errors="int16", gradients="int16", accumulator="int48")
    x, w = integer_valued(1, 4, 6, 6, top=32767), integer_valued(4, 2, 3, 3, top=32767)
    y = F.conv2d(x, w, padding=1, fmt=fmt, groups=2)
    want = twins.conv2d(x.astype(np.int64), w.astype(np.int64), None, 1, 1, 1, 1, 2)
    np.testing.assert_array_equal(y, want.astype(np.float32))  # exact sums, rounded once to float32
    assert np.abs(want).max() > 2**24  # so the exact per-group path was needed


def test_grouped_conv_rejects_channels_that_groups_do_not_divide():
    with pytest.raises(ValueError, match="groups 4 must divide"):
        F.conv2d(rand(1, 6, 5, 5), rand(8, 1, 3, 3), groups=4)
    with pytest.raises(ValueError, match="dilation must be a positive integer"):
        F.conv2d(rand(1, 4, 5, 5), rand(4, 4, 3, 3), dilation=0)


def test_scales_applied_piece_by_piece_give_the_same_bytes(monkeypatch, layout):
    """Integer sums that cannot saturate take their per-filter/per-channel × per-sample scales as
    each piece of the batch is made; the result equals scaling them all at the end."""
    fmt = F.precision(**INT8, rounding="stochastic", scale={"weights": "channel", "activations": "sample",
                                                            "errors": "sample"})  # fmt: skip
    x, w, dy = rand(5, 8, 9, 9), rand(16, 8, 3, 3), rand(5, 16, 9, 9)

    def outputs():
        return (F.conv2d(x, w, padding=1, fmt=fmt, seed=4), F.conv2d_grad_input(dy, w, x.shape, 1, 1, fmt=fmt, seed=4))

    pieces = outputs()
    monkeypatch.setattr(F, "_scaled_in_pieces", lambda *args: False)
    at_the_end = outputs()
    for got, expected in zip(pieces, at_the_end, strict=True):
        assert got.tobytes() == expected.tobytes()
