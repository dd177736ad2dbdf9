"""Zero statistics of a tensor as the accelerator would store it: how many values are zero, and how
many (zero-run, value) pairs a run-length code needs (zero runs of up to ``max_run`` per pair; a
longer run spends a pair (max_run, 0) on every max_run + 1 zeros; zeros at the end are coded the
same way, a last pair carrying a zero value)."""

from numba import njit


@njit(cache=True)
def zero_runs(values, max_run):
    """(zeros, run-length pairs) of a 1-D ``values``. Written without branches on the values (a
    feature map's zeros are unpredictable: a branch per value would mispredict about half the time)."""
    zeros = 0
    pairs = 0
    run = 0
    for i in range(values.size):
        zero = values[i] == 0
        run = (run + 1) * zero
        full = run == max_run + 1  # a full run is coded as (max_run, 0)
        pairs += (not zero) + full
        run *= not full
        zeros += zero
    return zeros, pairs + (run > 0)


@njit(cache=True, nogil=True)
def zero_runs_part(values, max_run, first, end):
    """``values[first:end]`` as a piece of a longer sequence, for :func:`zero_runs` split over threads:
    (zeros, zeros before its first non-zero, pairs from its first to its last non-zero, zeros after
    its last non-zero). The pairs inside start from a non-zero, so they do not depend on what came
    before; the leading and trailing zeros join the runs of the neighbouring pieces."""
    zeros = 0
    for i in range(first, end):
        zeros += values[i] == 0
    lead = 0
    while first + lead < end and values[first + lead] == 0:
        lead += 1
    if first + lead == end:
        return zeros, lead, 0, 0
    trail = 0
    while values[end - 1 - trail] == 0:
        trail += 1
    pairs = 0
    run = 0
    for i in range(first + lead, end - trail):
        zero = values[i] == 0
        run = (run + 1) * zero
        full = run == max_run + 1
        pairs += (not zero) + full
        run *= not full
    return zeros, lead, pairs, trail
