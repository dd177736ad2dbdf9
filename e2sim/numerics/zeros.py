"""The sparsity a GEMM sees, counted as the kernels run: zeros per operand, run-length pairs of
feature maps, and the MACs in which both operands are non-zero (from per-dimension non-zero counts:
exact, at a fraction of the GEMM's cost)."""

import numpy as np

from e2sim.kernels.sparsity import zero_runs_part
from e2sim.process import PARALLEL_ELEMENTS, in_parallel, kernel_threads, split

RLE_MAX_RUN = 31  # run-length pairs are counted for 5-bit zero runs (Eyeriss's RLC, JSSC 2017)


def operand_zeros(**operands: np.ndarray) -> tuple[dict[str, int], dict[str, int]]:
    """Zero values of each operand as the op reads them, and for feature maps (``x``, ``dy``) the
    run-length pairs that would store them."""
    found, pairs = {}, {}
    for name, values in operands.items():
        flat = np.ascontiguousarray(values).reshape(-1)
        if name in ("x", "dy"):
            found[name], pairs[name] = zero_runs_split(flat, RLE_MAX_RUN)
        else:
            found[name] = int(flat.size - np.count_nonzero(flat))
    return found, pairs


def zero_runs_split(flat: np.ndarray, max_run: int, parts: int | None = None) -> tuple[int, int]:
    """``kernels.sparsity.zero_runs`` of ``flat``, in ``parts`` pieces (default: one per kernel
    thread for a large array) counted at once and joined exactly: a zero run that crosses pieces is
    coded as the one run it is."""
    count = (kernel_threads() if flat.size >= PARALLEL_ELEMENTS else 1) if parts is None else parts
    pieces = in_parallel([lambda lo=lo, hi=hi: zero_runs_part(flat, max_run, lo, hi)
                          for lo, hi in split(flat.size, count, 1)])  # fmt: skip
    zeros = pairs = run = 0
    for piece_zeros, lead, inside, trail in pieces:
        zeros += piece_zeros
        run += lead
        if inside:  # a non-zero ends the run so far: its full pairs, the rest rides with that value
            pairs += run // (max_run + 1) + inside
            run = trail
    return int(zeros), int(pairs + run // (max_run + 1) + (run % (max_run + 1) > 0))


def tap_nonzeros(x: np.ndarray, r: int, s: int, stride: int, ph: int, pw: int, p: int, q: int, dil: int) -> np.ndarray:
    """Non-zero entries of each row (c, r, s) of ``im2col(x)`` (padding taps are zeros), as int64
    (C·R·S,): Σ over samples of x's non-zero mask, then Σ of its windows, without the columns."""
    per_channel = _padded(_nonzero_sum(x, 0), ph, pw)  # (C, H + 2·ph, W + 2·pw)
    counts = np.empty((x.shape[1], r, s), np.int64)
    for i, j in np.ndindex(r, s):
        counts[:, i, j] = _window(per_channel, i * dil, j * dil, stride, p, q).sum(axis=(1, 2))
    return counts.reshape(-1)


def pixel_nonzeros(x: np.ndarray, r: int, s: int, stride: int, ph: int, pw: int, p: int, q: int, dil: int,
                   groups: int) -> np.ndarray:  # fmt: skip
    """Non-zero entries of each column (n, p, q) of each group's rows of ``im2col(x)``, as int64
    (G, N·P·Q): Σ over a group's channels of x's non-zero mask, then Σ of its windows."""
    n, c, h, w = x.shape
    per_pixel = _padded(_nonzero_sum(x.reshape(n, groups, c // groups, h, w), 2), ph, pw)  # (N, G, H', W')
    counts = np.zeros((n, groups, p, q), np.int64)
    for i, j in np.ndindex(r, s):
        counts += _window(per_pixel, i * dil, j * dil, stride, p, q)
    return counts.transpose(1, 0, 2, 3).reshape(groups, -1)


def _nonzero_sum(x: np.ndarray, axis: int) -> np.ndarray:
    return np.not_equal(x, 0).sum(axis=axis, dtype=np.int64)


def _padded(counts: np.ndarray, ph: int, pw: int) -> np.ndarray:
    return np.pad(counts, [(0, 0)] * (counts.ndim - 2) + [(ph, ph), (pw, pw)])


def _window(counts: np.ndarray, top: int, left: int, stride: int, p: int, q: int) -> np.ndarray:
    """The entries a tap at offset (top, left) of the padded input reads for every output (p, q)."""
    return counts[..., top : top + (p - 1) * stride + 1 : stride, left : left + (q - 1) * stride + 1 : stride]


def nonzero_pairs(a: np.ndarray, b: np.ndarray) -> int:
    """Σ a·b of two non-zero counts (int64): MACs in which both operands are non-zero."""
    return int(np.dot(a.astype(np.int64), b.astype(np.int64)))
