"""Row stationary (Eyeriss: Chen et al., ISCA 2016; JSSC 2017), mapped as the papers map it.

A PE runs a 1-D primitive: one filter row of S' taps slid along one input row, producing one
output row of Q' partial sums; it keeps ``p`` filters × ``q`` channels of filter-row taps in its
filter scratchpad (p·q·S' words), a sliding window of q·S' inputs in its ifmap scratchpad and p
partial sums in its psum scratchpad. A *PE set* is R' filter rows × e output rows: filter rows run
along the PE columns' height and partial sums flow up the R' PEs of a column to be summed (PE-to-PE).
Sets are *strip-mined* when the output has more rows than the array has columns (e ≤ cols), *folded*
when R' is taller than the array (R' > rows: the parts accumulate through the global buffer), and
a row longer than the ifmap scratchpad holds is split into segments the same way. Sets are
*replicated* over the array: r sets work on different channels (their sums are added PE to PE) and
t on different filters, r·t ≤ sets that fit. A *processing pass* computes n images × p·t filters ×
q·r channels × e output rows; its partial sums stay in the global buffer between passes (a buffer
tile of the mapper holds them), filters are loaded into the scratchpads before the pass through the
filter network, inputs and partial sums stream through theirs during it, all at the widths of the
spec's ``pe_array.noc``. Global-buffer values are multicast: an input row to the PEs on its
diagonal (and the t filter sets), a filter row to the e PEs of its row.

The backward ops run as convolutions of their own: backward-data as the transposed convolution
(stride 1 over the error with zeros between its rows and columns; reads of those zeros never
happen, their MAC slots cost cycles), backward-weight as the correlation of the inputs with the
error (the error rows are the filter rows, the weight gradient's R×S the output, the batch the
channels). This model is analytic, not cycle-accurate; ``tests/data`` compares it with AccelForge
and ZigZag on Eyeriss-like architectures.
"""

from __future__ import annotations

import itertools

import numpy as np

from e2sim.schedule.mapper import (
    ArraySide,
    Mapping,
    MappingError,
    Tiles,
    legal_tiles,
    make_tiles,
    search,
    tile_options,
)
from e2sim.schedule.nest import LoopNest
from e2sim.schedule.target import Target


def _geometry(nest: LoopNest, t: Tiles) -> dict[str, np.ndarray | float]:
    """The convolution each buffer tile runs on the array, in row-stationary terms: images N',
    filters K', channels C', output rows P' and columns Q', filter rows R' and taps S', stride and
    dilation, and the fraction of the input rows/columns that are real (not inserted zeros)."""
    n, k, c, p = (t.size[d] for d in ("n", "k", "c", "p"))
    if nest.role == "fwd":
        return {"N": n, "K": k, "C": c, "P": p, "Q": float(nest.q), "R": float(nest.r), "S": float(nest.s),
                "stride": nest.stride, "dilation": 1, "density": 1.0}  # fmt: skip
    if nest.role == "bwd_data":  # dx = the error, zero-dilated by the stride, against the flipped filters
        rows = np.minimum(p * nest.stride, nest.h)
        return {"N": n, "K": c, "C": k, "P": rows, "Q": float(nest.w), "R": float(nest.r), "S": float(nest.s),
                "stride": 1, "dilation": 1, "density": 1.0 / nest.stride**2}  # fmt: skip
    # bwd_weight: dw[k, c, r, s] = Σ_n,p,q x[n, c, p·σ + r, q·σ + s] dy[n, k, p, q]
    return {"N": c, "K": k, "C": n, "P": float(nest.r), "Q": float(nest.s), "R": p, "S": float(nest.q),
            "stride": 1, "dilation": nest.stride, "density": 1.0}  # fmt: skip


def _options(limit: int) -> list[int]:
    return sorted({1, 2, max(1, limit // 2), max(1, limit)})


def row_stationary_tiles(nest: LoopNest, t: Tiles, target: Target) -> ArraySide:
    """The best processing-pass parameters for every buffer tile (by on-chip energy and cycles),
    and what they cost on the array."""
    g = _geometry(nest, t)
    # the streamed input and the filter rows: the error is the filter in a weight gradient
    in_bits, f_bits = (nest.b_bits, nest.a_bits) if nest.role == "bwd_weight" else (nest.a_bits, nest.b_bits)
    acc = nest.acc_bits
    filter_words, ifmap_words, psum_words = (bits // w for bits, w in zip(target.spad_bits, (f_bits, in_bits, acc),
                                                                             strict=True))  # fmt: skip
    rows, cols = target.rows, target.cols
    N, K, C, P, Q, R, S = (np.asarray(g[d], dtype=np.float64).reshape(-1, 1) * np.ones((t.n_candidates, 1))
                           for d in ("N", "K", "C", "P", "Q", "R", "S"))  # fmt: skip
    stride, dilation = g["stride"], g["dilation"]
    fold_r = np.ceil(R / rows)
    r_h = np.ceil(R / fold_r)  # a filter taller than the array is folded into balanced parts
    combos = list(itertools.product((1, 2), _options(ifmap_words), (1, 2, 4, 8, 16, 1024)))
    e_div, q_pe, r_sets = (np.array(v, dtype=np.float64).reshape(1, -1) for v in zip(*combos, strict=True))
    e = np.maximum(1.0, np.floor(np.minimum(P, cols) / e_div))
    sets = np.floor(rows / r_h) * np.floor(cols / e)
    q_pe = np.minimum(q_pe, C)
    s_seg = np.minimum(S, np.floor(ifmap_words / q_pe))  # a row longer than the ifmap scratchpad is split
    r_sets = np.minimum(np.minimum(r_sets, sets), np.ceil(C / q_pe))
    t_sets = np.minimum(np.floor(sets / r_sets), K)
    p_pe = np.minimum(np.minimum(psum_words, np.floor(filter_words / np.maximum(q_pe * s_seg, 1))),
                      np.ceil(K / np.maximum(t_sets, 1)))  # fmt: skip
    ok = (s_seg >= 1) & (p_pe >= 1) & (t_sets >= 1)
    p_pe, s_seg, t_sets = np.maximum(p_pe, 1), np.maximum(s_seg, 1), np.maximum(t_sets, 1)
    fold_s = np.ceil(S / s_seg)
    passes = np.ceil(K / (p_pe * t_sets)) * np.ceil(C / (q_pe * r_sets)) * np.ceil(P / e) * fold_r * fold_s
    in_rows = (e - 1) * stride + (r_h - 1) * dilation + 1
    in_cols = (Q - 1) * stride + (s_seg - 1) * dilation + 1
    if nest.role == "bwd_data":
        real = g["density"]  # the zeros between the error's rows and columns are never read
    else:
        real = min(nest.h, nest.h_pad) / nest.h_pad * min(nest.w, nest.w_pad) / nest.w_pad  # padding is not stored
    ifmap_reads = passes * N * q_pe * r_sets * in_rows * in_cols * real
    filter_reads = passes * p_pe * t_sets * q_pe * r_sets * r_h * s_seg
    psum_writes = passes * N * p_pe * t_sets * e * Q
    psum_reads = np.maximum(psum_writes - N * K * P * Q, 0.0)
    fill = np.ceil(filter_reads / passes * f_bits / target.noc_bits_per_cycle[1])
    stream = np.maximum(ifmap_reads / passes * in_bits / target.noc_bits_per_cycle[0],
                        (psum_writes + psum_reads) / passes * acc / target.noc_bits_per_cycle[2])  # fmt: skip
    cycles = passes * (fill + np.maximum(N * p_pe * q_pe * s_seg * Q, stream))
    delivered = ifmap_reads * np.minimum(r_h, e) * t_sets * in_bits + filter_reads * e * f_bits  # into scratchpads
    noc = delivered + (psum_writes + psum_reads) * acc
    hops = psum_writes * (r_h - 1 + r_sets - 1) * acc
    gb = target.buffer(target.streams[0]).pj_per_bit
    energy = ((ifmap_reads * in_bits + filter_reads * f_bits + (psum_writes + psum_reads) * acc) * gb
              + noc * target.noc_pj_per_bit + (hops + delivered) * target.hop_pj_per_bit + cycles * target.cycle_pj)
    energy = np.where(ok, energy, np.inf)
    if not np.isfinite(energy).any():
        raise MappingError(f"the PE scratchpads cannot hold one filter row of this {nest.role} op")
    best = np.argmin(energy, axis=1)

    def pick(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(np.broadcast_to(a, energy.shape), best[:, None], axis=1)[:, 0]

    chosen = {name: pick(a) for name, a in (("e", e), ("p", p_pe), ("q", q_pe), ("r", r_sets), ("t", t_sets),
                                             ("set_rows", r_h), ("taps", s_seg), ("passes", passes),
                                             ("folds", fold_r * fold_s))}  # fmt: skip
    tiles = t.tiles()
    total = {name: pick(a) * tiles for name, a in (("cycles", cycles), ("ifmap", ifmap_reads), ("filter", filter_reads),
                                                   ("psum_w", psum_writes), ("psum_r", psum_reads), ("noc", noc),
                                                   ("hops", hops), ("delivered", delivered))}  # fmt: skip
    rf = nest.macs * (in_bits + f_bits + 2 * acc) + total["delivered"]  # scratchpad reads per MAC, and fills

    def spatial(i: int) -> tuple:
        c = {k: int(v[i]) for k, v in chosen.items()}
        return (("rows", f"filter rows, {c['r']} channel × {c['t']} filter sets", c["set_rows"]),
                ("cols", "output rows", c["e"]))  # fmt: skip

    def detail(i: int) -> tuple:
        return tuple((name, float(v[i])) for name, v in chosen.items())

    reads = (total["filter"], total["ifmap"]) if nest.role == "bwd_weight" else (total["ifmap"], total["filter"])
    return ArraySide(total["cycles"], reads[0], reads[1], total["psum_w"], total["psum_r"], rf, total["noc"],
                     total["hops"], pick(r_h * e * r_sets * t_sets), spatial, detail)  # fmt: skip


def map_row_stationary(nest: LoopNest, target: Target) -> Mapping:
    """The best buffer tiling and processing passes of ``nest`` on a row-stationary array."""
    options = {d: tile_options(nest.size(d), ()) for d in ("n", "k", "c", "p")}
    options["q"] = [nest.q]  # a PE computes whole output rows
    t, footprint = legal_tiles(nest, target, make_tiles(nest, options))
    return search(nest, target, t, footprint, row_stationary_tiles(nest, t, target))
