"""The sparsity a GEMM sees, counted as the kernels run: zeros per operand, run-length pairs of
feature maps, and the MACs in which both operands are non-zero (from per-dimension non-zero counts:
exact, at a fraction of the GEMM's cost)."""

from dataclasses import dataclass

import numpy as np

from e2sim.kernels.sparsity import map_zeros_part, window_products_part
from e2sim.process import in_parts

RLE_MAX_RUN = 31  # run-length pairs are counted for 5-bit zero runs (Eyeriss's RLC, JSSC 2017)
assert (RLE_MAX_RUN + 1) & RLE_MAX_RUN == 0, "map_zeros_part counts runs of a power of two"


def operand_zeros(**operands: np.ndarray) -> tuple[dict[str, int], dict[str, int]]:
    """Zero values of each operand as the op reads them, and for feature maps (``x``, ``dy``) the
    run-length pairs that would store them."""
    found, pairs = {}, {}
    for name, values in operands.items():
        if name in ("x", "dy"):
            stats = map_zeros(values.reshape(values.shape[0], -1, 1, 1))
            found[name], pairs[name] = stats.zeros, stats.pairs
        else:
            found[name] = weight_zeros(values)
    return found, pairs


def joined_runs(pieces, max_run: int) -> tuple[int, int]:
    """(zeros, run-length pairs) of a sequence from its consecutive pieces' (zeros, lead, pairs
    inside, trail)."""
    zeros = pairs = run = 0
    for piece_zeros, lead, inside, trail in pieces:
        zeros += piece_zeros
        run += lead
        if inside:  # a non-zero ends the run so far: its full pairs, the rest rides with that value
            pairs += run // (max_run + 1) + inside
            run = trail
    return int(zeros), int(pairs + run // (max_run + 1) + (run % (max_run + 1) > 0))


@dataclass(frozen=True)
class MapZeros:
    """Zero statistics of a feature map x (N, C, H, W) from one pass over it: zeros, run-length
    pairs, and its non-zero mask summed over the samples (C, H, W) and, when asked for, over each
    group's channels (N, G, H, W)."""

    zeros: int
    pairs: int
    over_samples: np.ndarray
    over_channels: np.ndarray | None


def map_zeros(x: np.ndarray, groups: int | None = None) -> MapZeros:
    """:class:`MapZeros` of ``x`` (``groups``: also the sums over each group's channels), the
    samples split over the kernel threads when it is large."""
    n, c, h, w = x.shape
    view = np.ascontiguousarray(x).reshape(n, c, h * w)
    per_group = c // groups if groups else 1  # the largest sum over a group's channels: the narrowest type
    kind = np.uint8 if per_group <= 255 else np.uint16 if per_group <= 65535 else np.int64
    over_channels = np.zeros((n, groups, h * w) if groups else (0, 1, 1), kind)

    def count(lo: int, hi: int) -> tuple[tuple, np.ndarray]:  # each part sums over its samples on its own
        over_samples = np.zeros((c, h * w), np.int64)
        return map_zeros_part(view, groups or 1, RLE_MAX_RUN, over_samples, over_channels, lo, hi), over_samples

    parts = in_parts(n, x.size, count)
    zeros, pairs = joined_runs([piece for piece, _ in parts], RLE_MAX_RUN)
    return MapZeros(zeros, pairs, sum(part for _, part in parts).reshape(c, h, w),
                    over_channels.reshape(n, groups, h, w) if groups else None)  # fmt: skip


def weight_zeros(w: np.ndarray) -> int:
    return int(w.size - np.count_nonzero(w))


def tap_nonzeros(over_samples: np.ndarray, r: int, s: int, stride: int, ph: int, pw: int, p: int, q: int,
                 dil: int) -> np.ndarray:  # fmt: skip
    """Non-zero entries of each row (c, r, s) of ``im2col(x)`` (padding taps are zeros), as int64
    (C·R·S,), from x's non-zero mask summed over the samples (``MapZeros.over_samples``): the sums
    of its windows, without the columns."""
    per_channel = _padded(over_samples, ph, pw)  # (C, H + 2·ph, W + 2·pw)
    counts = np.empty((over_samples.shape[0], r, s), np.int64)
    for i, j in np.ndindex(r, s):
        counts[:, i, j] = _window(per_channel, i * dil, j * dil, stride, p, q).sum(axis=(1, 2))
    return counts.reshape(-1)


def window_products(errors: np.ndarray, inputs: np.ndarray, r: int, s: int, stride: int, ph: int, pw: int,
                    dil: int) -> int:  # fmt: skip
    """The weight gradient's MACs whose error and input tap are both non-zero, from the errors' and
    the inputs' non-zero masks summed over each group's channels (``MapZeros.over_channels`` of dy
    (N, G, P, Q) and of x (N, G, H, W)); the samples split over the kernel threads."""
    return int(sum(in_parts(errors.shape[0], inputs.size * r * s,
                            lambda lo, hi: window_products_part(errors, inputs, r, s, stride, ph, pw, dil, lo, hi))))


def _padded(counts: np.ndarray, ph: int, pw: int) -> np.ndarray:
    return np.pad(counts, [(0, 0)] * (counts.ndim - 2) + [(ph, ph), (pw, pw)])


def _window(counts: np.ndarray, top: int, left: int, stride: int, p: int, q: int) -> np.ndarray:
    """The entries a tap at offset (top, left) of the padded input reads for every output (p, q)."""
    return counts[..., top : top + (p - 1) * stride + 1 : stride, left : left + (q - 1) * stride + 1 : stride]


def nonzero_pairs(a: np.ndarray, b: np.ndarray) -> int:
    """Σ a·b of two non-zero counts (int64): MACs in which both operands are non-zero."""
    return int(np.dot(a.astype(np.int64), b.astype(np.int64)))
