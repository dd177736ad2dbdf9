"""The loop nest of a PE-array op: the seven convolution dimensions and the role of each operand.

Every PE-array op of a training iteration runs over the *forward* nest of its layer,

    for n < N, k < K, c < C, p < P, q < Q, r < R, s < S:  one MAC on x[n, c, p·σ+r, q·σ+s], w[k, c, r, s], y[n, k, p, q]

with σ the stride (a dilated kernel reads x[n, c, p·σ + r·d, q·σ + s·d]); the phase decides which of
the three tensors is the output:

| role | reads (A, B) | writes | reduced over |
|---|---|---|---|
| fwd | x, w | y | c, r, s |
| bwd_data | dy (y-shaped), w | dx (x-shaped) | k (and overlapping windows) |
| bwd_weight | dy (y-shaped), x | dw (w-shaped) | n, p, q |

so all three have the forward MAC count. A linear layer is the nest with P = Q = R = S = 1
(N = batch, K = outputs, C = inputs). ``A`` and ``B`` are the GEMM operands of SCALE-Sim's view
(``op.gemm``), so A streams through the ifmap buffer and B through the filter buffer.

x-shaped operands are read through windows: a tile of ``p`` output rows and ``r`` filter rows
covers ``(p − 1)·σ + (r − 1)·d + 1`` input rows (padding included; padding is never fetched).

A grouped convolution runs as ``groups`` independent nests, one after the other: the nest here is
one group's (K/groups filters over C/groups channels), and pricing multiplies what one group costs
by the number of groups (see ``schedule.ops``). Depthwise layers (one channel per group) therefore
use one column (or row) of a systolic array: that is what such an array does with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from e2sim.graph.ir import Op, Tensor

DIMS = ("n", "k", "c", "p", "q", "r", "s")
# Operand kinds and the dimensions each is indexed by (x through the windows p+r, q+s).
RELEVANT = {"x": frozenset("ncpqrs"), "w": frozenset("kcrs"), "y": frozenset("nkpq")}
# role -> (A kind, B kind, output kind)
ROLES = {"fwd": ("x", "w", "y"), "bwd_data": ("y", "w", "x"), "bwd_weight": ("y", "x", "w")}


@dataclass(frozen=True)
class LoopNest:
    """One PE-array op as a loop nest. ``h``/``w`` are the real (unpadded) input height and width,
    ``h_pad``/``w_pad`` the extent the windows cover; bits are the stored widths of A, B and the
    output, ``acc_bits`` the partial-sum width."""

    role: str
    n: int
    k: int
    c: int
    p: int
    q: int
    r: int
    s: int
    stride: int
    h: int
    w: int
    h_pad: int
    w_pad: int
    a_bits: int
    b_bits: int
    out_bits: int
    acc_bits: int
    dilation: int = 1

    @property
    def r_span(self) -> int:
        """Input rows one window covers (the kernel's rows, dilated)."""
        return (self.r - 1) * self.dilation + 1

    @property
    def s_span(self) -> int:
        return (self.s - 1) * self.dilation + 1

    @property
    def macs(self) -> int:
        return self.n * self.k * self.c * self.p * self.q * self.r * self.s

    @property
    def kinds(self) -> tuple[str, str, str]:
        return ROLES[self.role]

    def size(self, dim: str) -> int:
        return getattr(self, dim)

    def elements(self, kind: str) -> int:
        """Elements of a whole operand of ``kind`` as stored (x without padding)."""
        if kind == "x":
            return self.n * self.c * self.h * self.w
        if kind == "w":
            return self.k * self.c * self.r * self.s
        return self.n * self.k * self.p * self.q

    def gemm(self) -> tuple[int, int, int]:
        """(M, N, K) of the equivalent GEMM, as the lowering's ``op.gemm``."""
        return gemm_of(self.role, self.n, self.k, self.c, self.p * self.q, self.r * self.s)


def gemm_of(role: str, n, k, c, pq, rs):
    """(M, N, K) of the GEMM a tile of the nest is, for arrays or scalars alike."""
    if role == "fwd":
        return n * pq, k, c * rs
    if role == "bwd_data":
        return n * pq, c * rs, k
    return k, c * rs, n * pq


def nest_of(op: Op, tensors: Mapping[str, Tensor], accumulator_bits: int) -> LoopNest:
    """The loop nest of one group of a PE-array op (conv or gemm) with its operands' stored widths."""
    first, second = (tensors[name] for name in op.reads[:2])
    if op.phase == "bwd_weight":
        first, second = second, first  # A = the output error, B = the input activations
    out = tensors[op.writes[0]]
    role = op.phase if op.phase in ROLES else "fwd"
    bits = (first.bits, second.bits, out.bits, accumulator_bits)
    g = op.conv
    if g is not None:
        span_h, span_w = g.spans
        return LoopNest(role, g.n, g.k // g.groups, g.c // g.groups, g.p, g.q, g.r, g.s, g.stride, g.h, g.w,
                        (g.p - 1) * g.stride + span_h, (g.q - 1) * g.stride + span_w, *bits,
                        dilation=g.dilation)  # fmt: skip
    m, n_cols, k_red = op.gemm.m, op.gemm.n, op.gemm.k
    if role == "fwd":
        batch, outs, ins = m, n_cols, k_red
    elif role == "bwd_data":
        batch, ins, outs = m, n_cols, k_red
    else:
        outs, ins, batch = m, n_cols, k_red
    return LoopNest(role, batch, outs, ins, 1, 1, 1, 1, 1, 1, 1, 1, 1, *bits)
