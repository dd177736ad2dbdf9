"""The greedy placement of tensors in on-chip buffers across an iteration (see
e2sim.schedule.residency): candidates in order; a candidate is held when, at every op of its
interval, the free bytes plus what that op gives back (its tile of the tensor) cover its size."""

import numpy as np
from numba import njit


@njit(cache=True)
def hold_greedily(free, start, end, size, offsets, where, amount):
    """``free`` (bytes per op) is reduced in place by every held candidate. Candidate c spans ops
    start[c]..end[c]; its give-backs are where/amount[offsets[c]:offsets[c + 1]] (op indices).
    Returns (held, tightest op, room there) per candidate."""
    n = start.size
    held = np.zeros(n, np.bool_)
    tightest = np.empty(n, np.int64)
    room = np.empty(n)
    back = np.zeros(free.size)
    for c in range(n):
        for t in range(offsets[c], offsets[c + 1]):
            back[where[t]] = max(back[where[t]], amount[t])
        best, best_room = start[c], np.inf
        for i in range(start[c], end[c] + 1):
            r = free[i] + back[i]
            if r < best_room:
                best, best_room = i, r
        tightest[c], room[c] = best, best_room
        if best_room >= size[c]:
            held[c] = True
            for i in range(start[c], end[c] + 1):
                free[i] -= size[c] - back[i]
        for t in range(offsets[c], offsets[c + 1]):
            back[where[t]] = 0.0
    return held, tightest, room
