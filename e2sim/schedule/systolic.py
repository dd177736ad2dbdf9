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
from dataclasses import dataclass
from functools import lru_cache


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
