"""Row-stationary (Eyeriss, Chen et al. ISCA 2016): a first-order analytic model.

A convolution is split into 1-D primitives (one filter row against one input row). A logical PE
set is R filter rows × E output rows; sets that fit vertically work on other filters. Each PE keeps
filter rows, an input row and partial sums in its scratchpads, split in Eyeriss's proportions
(filter 448 B, input 24 B, partial sums 48 B of 520 B): an input row is reused by every filter that
fits in the filter scratchpad, and partial sums accumulate over every channel that fits in the input
scratchpad before they go back to the global buffer. GEMMs (linear layers, weight gradients) run as
independent dot products (M output rows over the columns, one filter row per PE). This model is
not validated against a cycle-accurate simulator; use it for relative comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

FILTER_SHARE, INPUT_SHARE, PSUM_SHARE = 448 / 520, 24 / 520, 48 / 520


@dataclass(frozen=True)
class RowStationaryCost:
    compute_cycles: int
    active_pes: int
    input_reads: int  # global-buffer reads of input elements
    filter_reads: int
    psum_writes: int  # partial sums written to the global buffer (final outputs included)
    psum_reads: int  # partial sums read back to accumulate over channel groups


@lru_cache(maxsize=65536)
def row_stationary_cost(
    rows: int, cols: int, rf_bytes: int, n: int, k: int, c: int, h: int, w: int, p: int, q: int, r: int, s: int,
    weight_bits: int, input_bits: int, psum_bits: int,
) -> RowStationaryCost:  # fmt: skip
    """Cost of an N×C×H×W by K×C×R×S convolution with P×Q outputs (stride folded into P, Q)."""
    macs = n * k * c * p * q * r * s
    height = min(r, rows)
    width = min(p, cols)
    stacked = max(1, rows // height)  # sets for other filters, side by side vertically
    active = height * width * stacked
    cycles = math.ceil(macs / active) + rows + cols
    filter_words = max(1, int(rf_bytes * FILTER_SHARE * 8) // weight_bits)
    input_words = max(1, int(rf_bytes * INPUT_SHARE * 8) // input_bits)
    filters_per_pe = max(1, min(k, filter_words // max(s, 1)))
    channels_per_pe = max(1, min(c, input_words // max(s, 1)))
    input_reads = n * c * h * w * math.ceil(k / (filters_per_pe * stacked))
    filter_reads = k * c * r * s * n * math.ceil(p / width)
    outputs = n * k * p * q
    groups = math.ceil(c / channels_per_pe)
    return RowStationaryCost(cycles, active, input_reads, filter_reads, outputs * groups, outputs * (groups - 1))
