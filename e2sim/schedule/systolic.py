"""Systolic arrays with SCALE-Sim v3 semantics (weight, output or input stationary).

A PE-array op is the GEMM ``out[M×N] = A[M×K]·B[K×N]``; in SCALE-Sim's terms A is the ifmap
operand matrix (M output pixels × K window elements), B the filter matrix and out the ofmap. Each
dataflow maps two of (M, K, N) onto the array's rows and columns and streams the third (T):

| dataflow | rows (Sr) | cols (Sc) | streamed T | cycles per fold |
|---|---|---|---|---|
| ws | K | N | M | 2·rows + cols + T − 2 |
| os | M | N | K | rows + cols + T − 2 |
| is | K | M | N | 2·rows + cols + T − 2 |

Compute cycles = folds × cycles per fold − 1 (folds = ⌈Sr/rows⌉·⌈Sc/cols⌉), fill and drain included,
exactly as SCALE-Sim v3 reports "Total Cycles" (checked against it in the tests). SRAM accesses
per operand are SCALE-Sim's counts too, including its output-stationary accounting of rows + cols
extra ofmap writes per fold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from e2sim.lazy import LazyModule
from e2sim.schedule.mapper import (
    IRRELEVANT,
    ORDERS,
    ArraySide,
    Columns,
    Mapping,
    MappingError,
    Tiles,
    legal_tiles,
    make_tiles,
    no_fit,
    product_tiles,
    search,
    tile_options,
)
from e2sim.schedule.nest import LoopNest
from e2sim.schedule.target import Target

KERNELS = LazyModule("e2sim.kernels.mapping")


@dataclass(frozen=True)
class ArrayCost:
    """Cycles and SRAM accesses (elements) of one GEMM on the array."""

    compute_cycles: int
    row_folds: int
    col_folds: int
    ifmap_reads: int
    filter_reads: int
    ofmap_writes: int

    @property
    def folds(self) -> int:
        return self.row_folds * self.col_folds


@lru_cache(maxsize=65536)
def systolic_cost(dataflow: str, rows: int, cols: int, m: int, n: int, k: int) -> ArrayCost:
    if dataflow == "ws":
        sr, sc, t, fill = k, n, m, 2 * rows + cols
    elif dataflow == "os":
        sr, sc, t, fill = m, n, k, rows + cols
    elif dataflow == "is":
        sr, sc, t, fill = k, m, n, 2 * rows + cols
    else:
        raise ValueError(f"not a systolic dataflow: {dataflow}")
    row_folds, col_folds = math.ceil(sr / rows), math.ceil(sc / cols)
    cycles = row_folds * col_folds * (fill + t - 2) - 1
    if dataflow == "ws":
        ifmap, filters, ofmap = col_folds * m * k, k * n, row_folds * m * n
    elif dataflow == "os":
        ifmap, filters = col_folds * m * k, row_folds * k * n
        ofmap = m * n + row_folds * col_folds * (rows + cols)  # SCALE-Sim's accounting
    else:
        ifmap, filters, ofmap = k * m, col_folds * k * n, row_folds * m * n
    return ArrayCost(cycles, row_folds, col_folds, ifmap, filters, ofmap)


# -- buffer tiles of a loop nest on a systolic array --------------------------------------------------

# The nest dimensions each GEMM dimension is made of (r·s multiplies the one holding c), per role.
GEMM_DIMS = {
    "fwd": (("n", "p", "q"), ("k",), ("c",)),
    "bwd_data": (("n", "p", "q"), ("c",), ("k",)),
    "bwd_weight": (("k",), ("c",), ("n", "p", "q")),
}


def _gemm_dim(t: Tiles, dims: tuple[str, ...], factor: int, divisor: int) -> np.ndarray:
    """Σ over the tiles of one GEMM dimension of ⌈tile extent / divisor⌉, exactly: every tiled
    dimension has (count − 1) tiles of its tile size and one of its last size."""
    count, size, last = (np.stack([part[d] for d in dims]) for part in (t.count, t.size, t.last))
    return KERNELS.fold_sums(count, size, last, factor, divisor)


def streamed_kind(role: str, dataflow: str) -> str:
    """The operand kind the dimension a systolic array streams is irrelevant to: chunks of that
    dimension are the innermost DRAM loops, so that operand stays put (ws: the weights of a forward
    op, os: its outputs, is: its inputs)."""
    axis = {"ws": 0, "os": 2, "is": 1}[dataflow]
    dims = set(GEMM_DIMS[role][axis])
    return next(kind for kind, irrelevant in IRRELEVANT.items() if dims & set(irrelevant))


def systolic_tiles(nest: LoopNest, t: Tiles, dataflow: str, rows: int, cols: int) -> ArraySide:
    """SCALE-Sim's cycles and buffer reads with buffer tiles: the array walks its folds over the
    tiles of the two dimensions it holds (summed exactly over the tiles: whole tiles, or tiles in
    multiples of the array's sides, give SCALE-Sim's counts on the whole GEMM) and streams the
    third through every fold, in chunks that change nothing on the array. Partial sums: written
    per reduction fold, read back on chip before every write but the first of each output."""
    dims = GEMM_DIMS[nest.role]
    rs = nest.r * nest.s
    m, n, k = (np.prod([nest.size(d) for d in group]) * (rs if "c" in group else 1) for group in dims)

    def folds(axis: int, divisor: int) -> np.ndarray:
        return _gemm_dim(t, dims[axis], rs if "c" in dims[axis] else 1, divisor)

    if dataflow == "ws":  # rows: K, cols: N, streamed: M
        row_folds, col_folds = folds(2, rows), folds(1, cols)
        cycles = row_folds * col_folds * (2 * rows + cols - 2 + m)
        reads_a, reads_b, psum = col_folds * m * k, np.full_like(row_folds, k * n), row_folds * m * n
        used = np.minimum(rows, k) * np.minimum(cols, n)
    elif dataflow == "os":  # rows: M, cols: N, streamed: K (outputs stay in the PEs)
        row_folds, col_folds = folds(0, rows), folds(1, cols)
        cycles = row_folds * col_folds * (rows + cols - 2 + k)
        reads_a, reads_b = col_folds * m * k, row_folds * k * n
        psum = m * n + row_folds * col_folds * (rows + cols)  # SCALE-Sim's accounting
        used = np.minimum(rows, m) * np.minimum(cols, n)
    else:  # is: rows: K, cols: M, streamed: N
        row_folds, col_folds = folds(2, rows), folds(0, cols)
        cycles = row_folds * col_folds * (2 * rows + cols - 2 + n)
        reads_a, reads_b, psum = np.full_like(row_folds, k * m), col_folds * k * n, row_folds * m * n
        used = np.minimum(rows, k) * np.minimum(cols, m)
    psum_reads = np.zeros_like(psum) if dataflow == "os" else np.maximum(psum - m * n, 0.0)
    rf = np.full(t.n_candidates, float(nest.macs * (nest.a_bits + nest.b_bits + nest.acc_bits)))
    zeros = np.zeros(t.n_candidates)
    axes = {"ws": (("rows", 2), ("cols", 1)), "os": (("rows", 0), ("cols", 1)), "is": (("rows", 2), ("cols", 0))}

    def spatial(i: int) -> tuple:
        sides = {"rows": rows, "cols": cols}
        return tuple((axis, "·".join(d + ("·r·s" if d == "c" and rs > 1 else "") for d in dims[g]),
                      int(min(sides[axis], [m, n, k][g]))) for axis, g in axes[dataflow])  # fmt: skip

    return ArraySide(cycles - 1, reads_a, reads_b, psum, psum_reads, rf, zeros, zeros, used, spatial)


def whole_folds(nest: LoopNest, options: dict[str, list[int]], dataflow: str, rows: int, cols: int) -> Tiles:
    """The candidate tiles (of ``make_tiles(nest, options)``, in its order) whose tiles of the two
    dimensions the array holds add no folds to SCALE-Sim's walk of the whole GEMM (whole
    dimensions, or tiles of whole folds). Each held GEMM dimension is checked on the grid of the
    nest dimensions it is made of alone."""
    held = {"ws": ((2, rows), (1, cols)), "os": ((0, rows), (1, cols)), "is": ((2, rows), (0, cols))}[dataflow]
    parts = []
    for axis, side in held:
        dims = GEMM_DIMS[nest.role][axis]
        factor = nest.r * nest.s if "c" in dims else 1
        whole = np.prod([nest.size(d) for d in dims]) * factor
        kept = _gemm_dim(make_tiles(nest, options, dims), dims, factor, side) == -(-whole // side)
        parts.append((dims, np.indices([len(options[d]) for d in dims]).reshape(len(dims), -1)[:, kept]))
    return product_tiles(nest, options, parts)


def map_systolic(nest: LoopNest, targets: Sequence[Target]) -> list[Mapping | MappingError]:
    """The best buffer tiling of ``nest`` on each of ``targets``, systolic arrays (ws, os or is) of
    one structure (see ``mapper.structure``): the candidate tiles and what the array does with them
    are worked out once, and every target's buffers, bandwidths and energies price them at once.
    A target searches the tiles of whole folds when any of them fits it, else every tile."""
    first = targets[0]
    rows, cols = first.rows, first.cols
    options = {d: tile_options(nest.size(d), (rows, cols)) for d in ("n", "k", "c", "p")}
    options["q"] = sorted({nest.q, -(-nest.q // 2), -(-nest.q // 4), 1})
    inner = streamed_kind(nest.role, first.dataflow)
    orders = tuple(order for order in ORDERS if order[0] == inner)
    found: list[Mapping | MappingError | None] = [None] * len(targets)
    remaining = list(range(len(targets)))
    stages = (lambda: whole_folds(nest, options, first.dataflow, rows, cols), lambda: make_tiles(nest, options))
    for candidates in stages:
        columns = Columns([targets[j] for j in remaining])
        t, footprint, fitting = legal_tiles(nest, columns, candidates())
        fits = fitting.any(axis=(0, 2))
        if fits.any():
            served = [j for j, ok in zip(remaining, fits, strict=True) if ok]
            if len(served) < len(remaining):
                columns = Columns([targets[j] for j in served])
            array = systolic_tiles(nest, t, first.dataflow, rows, cols)
            for j, m in zip(served, search(nest, columns, t, footprint, array, fitting[:, fits], orders), strict=True):
                found[j] = m
        remaining = [j for j, ok in zip(remaining, fits, strict=True) if not ok]
        if not remaining:
            break
    error = None
    for j, m in enumerate(found):
        if m is None:
            error = error or no_fit(nest, make_tiles(nest, options))
            found[j] = error
    return found
