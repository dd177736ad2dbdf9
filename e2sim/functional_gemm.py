"""The GEMMs behind the functional convolutions and linear layers: operands quantized per role,
exact integer sums, pieces of the batch built in cache and spread over the kernel threads, and
the accumulator's saturation or rounding. Private to :mod:`e2sim.functional`."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from e2sim.config.precision import PrecisionSpec
from e2sim.functional_layers import _pair, _stride, _window
from e2sim.kernels import conv as conv_kernels
from e2sim.numerics.quantize import FLOAT32_EXACT, Quantized, exact_integer_matmul, quantize, saturate_accumulator
from e2sim.numerics.seeds import derive_seed
from e2sim.process import in_parallel, in_parts, kernel_threads, split


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


def _workspace(shape: tuple[int, ...], dtype=np.float32, role: str = "columns") -> np.ndarray:
    """A scratch array reused across calls of this thread (large fresh arrays cost page faults).
    Only for intermediates that never leave the call that asked for them; ``role`` tells apart
    two that one call uses at once."""
    cache = _LOCAL.__dict__.setdefault("arrays", {})
    key = (tuple(shape), np.dtype(dtype).str, role)
    array = cache.pop(key, None)
    if array is None:
        array = np.empty(shape, dtype)
        while len(cache) >= _WORKSPACE_ARRAYS:
            cache.pop(next(iter(cache)))
    cache[key] = array  # most recently used last
    return array


PARALLEL_MACS = 1 << 22  # GEMMs from this size split their output columns over the kernel threads


# A dense conv from this many input channels builds pixel-major columns (README, training speed: its
# GEMMs run faster on OpenBLAS); fewer channels copy too little per tap (measured on LeNet-5, ResNet-20).
PIXEL_MAJOR_CHANNELS = {"forward": 2, "backward": 6}
PIECE_BYTES = 1 << 21  # a conv builds its columns (or their gradient) this many bytes at a time, in cache


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


FLOAT64_EXACT = 2.0**53  # every integer of magnitude up to this is exact in float64
# dense convs with fewer input channels than this get their weight gradient directly (measured on
# LeNet-5's first conv, 1 channel: 1.45 -> 0.86 ms on 2 threads; ResNet-20's, 3 channels, ran slower so)
DIRECT_WEIGHT_CHANNELS = 2
LANE_SAMPLES = 16  # float operands: samples summed in float32 before float64 (direct weight gradient)


def _depthwise(groups: int, c: int, k: int, integer: bool, bound: float) -> bool:
    """Whether a conv's forward pass or input gradient runs as a depthwise one, directly
    (``kernels.conv.depthwise_part``, ``depthwise_input_part``): one filter per channel, and float64
    sums that stay exact for integer operands (``bound`` bounds |sum|)."""
    return groups == c == k and (not integer or bound < FLOAT64_EXACT)


# dense stride-1 convs with fewer input channels than this run their forward pass directly (one thread,
# batch 128 or 64: ResNet-20's first conv, 3 channels, 5.1 -> 4.0 ms; LeNet-5's, 1 channel, 0.76 -> 0.50 ms;
# LeNet-5's second, 6 channels, ran 0.74 -> 1.52 ms so)
DIRECT_FORWARD_CHANNELS = 4


def _direct_forward(groups: int, c: int, stride: int, dilation: int, integer: bool, bound: float) -> bool:
    """Whether a conv's forward pass runs directly (``kernels.conv.direct_forward_part``): dense, at
    stride 1 and dilation 1, with fewer than ``DIRECT_FORWARD_CHANNELS`` input channels, its float32
    sums exact for integer operands (``bound`` bounds |sum|)."""
    return (groups == 1 and stride == 1 and dilation == 1 and c < DIRECT_FORWARD_CHANNELS
            and (not integer or bound < FLOAT32_EXACT))  # fmt: skip


def _direct_weight(groups: int, c: int, k: int, integer: bool, bound: float) -> bool:
    """Whether a conv's weight gradient runs directly (``kernels.conv.direct_weight_part``): a
    depthwise conv or a dense one with fewer than ``DIRECT_WEIGHT_CHANNELS`` input channels, where
    for integer operands every sum stays exact in float64 (``bound`` bounds |sum|)."""
    return (groups == c == k or (groups == 1 and c < DIRECT_WEIGHT_CHANNELS)) and (not integer or bound < FLOAT64_EXACT)


def _lane_samples(integer: bool, bounds: tuple[float, float], n: int) -> int:
    """Samples that ``direct_weight_part`` sums in one float32 lane: ``LANE_SAMPLES`` for floats; for
    integers as many as stay exact (at most the batch), 0 (float64 sums) where one product is too wide."""
    if not integer:
        return LANE_SAMPLES
    return min(n, int(FLOAT32_EXACT // (bounds[0] * bounds[1])))


def _scaled_in_pieces(integer: bool, fmt: PrecisionSpec | None, bound: float, wide: bool) -> bool:
    """Whether exact integer sums can take their scales piece by piece as they are made instead of
    in :func:`_finish`: float32 sums that cannot reach the accumulator's range (nothing to
    saturate), so each value is the same float32 product either way."""
    if not integer or wide or fmt is None:
        return False
    accumulator = fmt.accumulator
    return not accumulator.is_integer or bound < 2.0 ** (accumulator.bits - 1)


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
    sample, else a copy of the piece alone (in this thread's workspace, in cache), never of the whole batch."""
    m, k = hi - lo, dy.shape[1]
    if m == 1:
        return dy[lo].reshape(k, -1)
    columns = _workspace((k, m * dy.shape[2] * dy.shape[3]), dy.dtype, role="errors")
    columns.reshape(k, m, -1)[...] = dy[lo:hi].reshape(m, k, -1).transpose(1, 0, 2)
    return columns


# OpenBLAS's SkylakeX build runs GEMMs of up to 100**3 multiply-adds on small-matrix kernels picked by
# the operands' layouts (sgemm_small_kernel_permit), which sum in other orders; above that every layout
# goes through the same packed GEMM (measured: the same bits on 1,224 random shapes above, 96 of 276 below differ)
SMALL_GEMM_MACS = 100**3


def _pixel_errors(dy: np.ndarray, lo: int, hi: int, other: int) -> np.ndarray:
    """Samples ``lo`` to ``hi`` of dy (N, K, P, Q) as pixel-major rows ((hi − lo)·P·Q, K) for a
    GEMM with ``other`` columns on their other side: a transposed view of channel-major columns
    (contiguous runs of P·Q values: no transpose copy) where the GEMM is larger than
    ``SMALL_GEMM_MACS``, else a pixel-major copy in this thread's workspace (small GEMMs sum as before)."""
    m, k = hi - lo, dy.shape[1]
    pixels = m * dy.shape[2] * dy.shape[3]
    if pixels * k * other > SMALL_GEMM_MACS:
        return _error_columns(dy, lo, hi).T
    rows = _workspace((pixels, k), role="errors")
    rows.reshape(m, -1, k)[...] = dy[lo:hi].reshape(m, k, -1).transpose(0, 2, 1)
    return rows


def _wide(integer: bool, bounds: tuple[float, float], terms: int) -> bool:
    """Whether an exact integer GEMM of ``terms``-long sums returns float64 (see exact_integer_matmul)."""
    return integer and bounds[0] * bounds[1] * terms >= FLOAT32_EXACT


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
