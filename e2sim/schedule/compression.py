"""Zero compression of feature maps in DRAM: the exact formats, and their size from counted or
stated sparsity.

- ``bitmask``: one bit per value (set where it is non-zero), then the non-zero values at the
  tensor's width: ⌈n / 8⌉ + ⌈nnz · bits / 8⌉ bytes.
- ``rle``: Eyeriss's run-length code (JSSC 2017): pairs of a 5-bit zero run and a value at the
  tensor's width, packed ⌊63 / (5 + bits)⌋ to a 64-bit word (the last bit marks the end); a run
  longer than 31 spends a pair (31, 0) on every 32 zeros; ⌈pairs / per word⌉ × 8 bytes.

A tensor is stored compressed only where that is smaller than raw (one flag per tensor); the
buffers hold it decompressed, so only DRAM traffic changes. Coder and decoder energy is not priced.
"""

from __future__ import annotations

import math

import numpy as np

from e2sim.hw.accelerator import COMPRESSION_FORMATS as FORMATS
from e2sim.lazy import LazyModule

__all__ = ["FORMATS", "compressed_bytes", "expected_rle_pairs", "stored_bytes"]
KERNELS = LazyModule("e2sim.kernels.sparsity")  # numba loads when a tensor is first measured
RLE_RUN_BITS = 5
RLE_WORD_BITS = 64


def pairs_per_word(bits: int) -> int:
    return max(1, (RLE_WORD_BITS - 1) // (RLE_RUN_BITS + bits))


def stored_bytes(numel: int, bits: int, fmt: str, nonzero: float, rle_pairs: float) -> float:
    """Bytes of a tensor of ``numel`` values of ``bits`` in ``fmt`` (never more than raw)."""
    raw = math.ceil(numel * bits / 8)
    if fmt == "bitmask":
        return min(raw, math.ceil(numel / 8) + math.ceil(nonzero * bits / 8))
    if fmt == "rle":
        return min(raw, math.ceil(rle_pairs / pairs_per_word(bits)) * RLE_WORD_BITS / 8)
    return raw


def compressed_bytes(values: np.ndarray, bits: int, fmt: str) -> int:
    """The exact size of ``values`` (as stored: zeros are exact zeros) in ``fmt``."""
    flat = np.ascontiguousarray(values).reshape(-1)
    zeros, pairs = KERNELS.zero_runs(flat, 2**RLE_RUN_BITS - 1)
    return int(stored_bytes(flat.size, bits, fmt, flat.size - zeros, pairs))


def expected_rle_pairs(numel: float, density: float) -> float:
    """Run-length pairs of a tensor whose zeros fall independently with probability 1 − density:
    one per non-zero value, plus one per 32 zeros in every run before it (geometric runs)."""
    zero = 1.0 - density
    if zero >= 1.0:
        return math.ceil(numel / 2**RLE_RUN_BITS)
    long_runs = zero ** (2**RLE_RUN_BITS)
    return numel * density * (1.0 + long_runs / (1.0 - long_runs))
