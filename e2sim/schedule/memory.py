"""Off-chip traffic of a tiled op and the tile-level timeline in which DMA and compute overlap.

Buffers are double-buffered: half of each holds the tile in use, half the next one. With a global
buffer, each operand stream (ifmap, filter, ofmap) gets a third of it. An operand that fits its
half-buffer is fetched from DRAM once; otherwise it is fetched again for every pass of the loop
that re-walks it (see :func:`gemm_dram_traffic`). Partial sums that do not fit on chip spill to
DRAM and come back once per extra reduction fold.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2sim.hw.accelerator import Accelerator


@dataclass(frozen=True)
class Traffic:
    """DRAM bytes per operand stream and the number of tiles the op runs in."""

    ifmap_reads: float
    filter_reads: float
    ofmap_reads: float  # partial sums read back
    ofmap_writes: float
    tiles: int

    @property
    def reads(self) -> float:
        return self.ifmap_reads + self.filter_reads + self.ofmap_reads


def half_buffer_bytes(hw: Accelerator, stream: str) -> float:
    """Bytes one tile of ``stream`` (ifmap, filter, ofmap) may occupy."""
    if hw.has_global_buffer:
        return hw.buffers["global"].size_bytes / 2 / 3
    return hw.buffers[stream].size_bytes / 2


def buffer_of(hw: Accelerator, stream: str):
    return hw.buffers["global"] if hw.has_global_buffer else hw.buffers[stream]


def gemm_dram_traffic(
    hw: Accelerator, dataflow: str, row_folds: int, col_folds: int, m: int, n: int, k: int,
    a_bytes: float, b_bytes: float, out_bytes: float, psum_bytes_per_element: float,
) -> Traffic:  # fmt: skip
    """DRAM traffic of out[M×N] = A·B with A and B stored as ``a_bytes`` / ``b_bytes`` in DRAM;
    of the loop orders below, the one that moves fewer bytes is used (a small mapping search).

    ws/is keep one operand in the array and stream the other (ws: M rows of A; is: N columns of
    B) while the reduction (K) is folded. Either the whole streamed dimension goes through every
    fold (the stationary tiles load once; a slab of partial sums spills to DRAM between folds if
    it does not fit the ofmap buffer), or the streamed dimension is cut into chunks whose partial
    sums fit (no spill; the stationary operand reloads per chunk unless it fits its buffer).
    os keeps outputs in the array: a K × cols slab of B stays unless too big (then it is re-read
    per M fold); A is re-read per column fold unless it fits; outputs go out once.
    The array's cycles are SCALE-Sim's whatever the order (chunking's extra fills are neglected).
    """
    a_fits = a_bytes <= half_buffer_bytes(hw, "ifmap")
    b_fits = b_bytes <= half_buffer_bytes(hw, "filter")
    ofmap_room = half_buffer_bytes(hw, "ofmap")
    cols = hw.pe_array.cols
    psum_bytes = m * n * psum_bytes_per_element
    folds = max(1, row_folds * col_folds)
    if dataflow == "os":
        slab = k * min(cols, n) * (b_bytes / max(k * n, 1))
        b = b_bytes * (1 if b_fits or slab <= half_buffer_bytes(hw, "filter") else row_folds)
        return Traffic(a_bytes * (1 if a_fits else col_folds), b, 0.0, out_bytes, folds)
    if dataflow == "ws":  # stream A's M rows; B (weights) stationary
        streamed, streamed_bytes, stationary_bytes, stationary_fits = m, a_bytes, b_bytes, b_fits
        slab_elements = min(cols, n)
        streamed_rereads = 1 if a_fits else col_folds
    else:  # is: stream B's N columns; A (inputs) stationary
        streamed, streamed_bytes, stationary_bytes, stationary_fits = n, b_bytes, a_bytes, a_fits
        slab_elements = min(cols, m)
        streamed_rereads = 1 if b_fits else col_folds
    # order 1: the whole streamed dimension per fold; partial sums spill between reduction folds
    spill = streamed * slab_elements * psum_bytes_per_element > ofmap_room
    passes = row_folds if spill else 1
    whole = (streamed_bytes * streamed_rereads, stationary_bytes, (passes - 1) * psum_bytes,
             out_bytes + (passes - 1) * psum_bytes, folds)  # fmt: skip
    # order 2: chunks of the streamed dimension whose partial sums fit the ofmap buffer
    per_row = slab_elements * psum_bytes_per_element
    chunks = max(1, -(-streamed // max(1, int(ofmap_room // per_row)))) if per_row else 1
    chunked = (streamed_bytes * (1 if streamed_bytes / chunks <= half_buffer_bytes(hw, "ifmap") else col_folds),
               stationary_bytes * (1 if stationary_fits else chunks), 0.0, out_bytes, folds * chunks)  # fmt: skip
    best = min(whole, chunked, key=lambda t: t[0] + t[1] + t[2] + t[3])
    streamed_traffic, stationary_traffic, reads_back, writes, tiles = best
    if dataflow == "ws":
        return Traffic(streamed_traffic, stationary_traffic, reads_back, writes, tiles)
    return Traffic(stationary_traffic, streamed_traffic, reads_back, writes, tiles)


def streaming_tiles(hw: Accelerator, total_bytes: float) -> int:
    """Tiles of an op that streams ``total_bytes`` through one half-buffer."""
    return max(1, int(-(-total_bytes // max(half_buffer_bytes(hw, "ifmap"), 1))))


def timeline(compute_cycles: float, traffic_in: float, traffic_out: float, tiles: int, dram_bytes_per_cycle: float):
    """Total cycles when the DMA of the next tile overlaps the compute of the current one.

    Tile i waits for its own load; while it computes, tile i+1 loads and tile i−1's results
    store. The first load and the last store cannot overlap anything. Returns (total, stall)."""
    load = traffic_in / dram_bytes_per_cycle / tiles
    store = traffic_out / dram_bytes_per_cycle / tiles
    c = compute_cycles / tiles
    if tiles == 1:
        total = load + c + store
    else:
        total = load + max(c, load) + (tiles - 2) * max(c, load + store) + max(c, store) + store
    return total, total - compute_cycles
