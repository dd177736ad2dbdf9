"""Per-candidate sums of the loop-nest mapper (see e2sim.schedule.systolic), one pass over the
candidate tiles instead of an array expression per combination."""

import numpy as np
from numba import njit


@njit(cache=True)
def fold_sums(count, size, last, factor, divisor):
    """Per candidate i, Σ over the tiles of one GEMM dimension of ⌈extent / divisor⌉, the dimension
    made of the nest dimensions j (rows of ``count``, ``size`` and ``last``: tiles, tile size and
    last tile's size per candidate, float64) times ``factor``: each dimension has count − 1 tiles
    of its size and one of its last size, combined in every way (the first dimension slowest, the
    last size second), each combination's number of tiles times its ⌈extent / divisor⌉ added in
    that order."""
    dims, n = count.shape
    folds = np.zeros(n)
    for i in range(n):
        total = 0.0
        for choice in range(1 << dims):
            number, extent = 1.0, float(factor)
            for j in range(dims):
                if (choice >> (dims - 1 - j)) & 1:
                    extent = extent * last[j, i]
                else:
                    number = number * (count[j, i] - 1)
                    extent = extent * size[j, i]
            total = total + number * np.ceil(extent / divisor)
        folds[i] = total
    return folds
