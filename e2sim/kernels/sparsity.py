"""Zero statistics of a tensor as the accelerator would store it: how many values are zero, and how
many (zero-run, value) pairs a run-length code needs (zero runs of up to ``max_run`` per pair; a
longer run spends a pair (max_run, 0) on every max_run + 1 zeros; zeros at the end are coded the
same way, a last pair carrying a zero value)."""

from numba import njit


@njit(cache=True)
def zero_runs(values, max_run):
    """(zeros, run-length pairs) of a 1-D ``values``."""
    zeros = 0
    pairs = 0
    run = 0
    for i in range(values.size):
        if values[i] == 0:
            zeros += 1
            run += 1
            if run == max_run + 1:  # a full run is coded as (max_run, 0)
                pairs += 1
                run = 0
        else:
            pairs += 1
            run = 0
    if run > 0:
        pairs += 1
    return zeros, pairs
