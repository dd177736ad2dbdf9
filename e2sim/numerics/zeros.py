"""The sparsity a GEMM sees, counted as the kernels run: zeros per operand, run-length pairs of
feature maps, and the MACs in which both operands are non-zero (from per-dimension non-zero counts:
exact, at a fraction of the GEMM's cost)."""

import numpy as np

from e2sim.kernels.sparsity import zero_runs

RLE_MAX_RUN = 31  # run-length pairs are counted for 5-bit zero runs (Eyeriss's RLC, JSSC 2017)


def operand_zeros(**operands: np.ndarray) -> tuple[dict[str, int], dict[str, int]]:
    """Zero values of each operand as the op reads them, and for feature maps (``x``, ``dy``) the
    run-length pairs that would store them."""
    found, pairs = {}, {}
    for name, values in operands.items():
        flat = np.ascontiguousarray(values).reshape(-1)
        if name in ("x", "dy"):
            counted = zero_runs(flat, RLE_MAX_RUN)
            found[name], pairs[name] = int(counted[0]), int(counted[1])
        else:
            found[name] = int(flat.size - np.count_nonzero(flat))
    return found, pairs


def nonzero_pairs(a: np.ndarray, b: np.ndarray) -> int:
    """Σ a·b of two non-zero counts (int64): MACs in which both operands are non-zero."""
    return int(np.dot(a.astype(np.int64), b.astype(np.int64)))
