"""Row stationary (Eyeriss: Chen et al., ISCA 2016; JSSC 2017), mapped as the papers map it.

A PE runs a 1-D primitive: one filter row of S' taps slid along one input row, producing one
output row of Q' partial sums; it keeps ``p`` filters × ``q`` channels of filter-row taps in its
filter scratchpad (p·q·S' words), a sliding window of q·S' inputs in its ifmap scratchpad and p
partial sums in its psum scratchpad. Every MAC reads a filter tap and reads and writes a partial
sum; an input value is read once for the p filters the PE applies to it back to back. A *PE set*
is R' filter rows × e output rows: filter rows run along the PE columns' height and partial sums
flow up the R' PEs of a column to be summed (PE-to-PE).
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
    Columns,
    Mapping,
    MappingError,
    Tiles,
    legal_tiles,
    make_tiles,
    no_fit,
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
                "stride": nest.stride, "dilation": nest.dilation, "density": 1.0}  # fmt: skip
    if nest.role == "bwd_data":  # dx = the error, zero-dilated by the stride, against the flipped filters
        rows = np.minimum(p * nest.stride, nest.h)
        return {"N": n, "K": c, "C": k, "P": rows, "Q": float(nest.w), "R": float(nest.r), "S": float(nest.s),
                "stride": 1, "dilation": nest.dilation, "density": 1.0 / nest.stride**2}  # fmt: skip
    # bwd_weight: dw[k, c, r, s] = Σ_n,p,q x[n, c, p·σ + r·d, q·σ + s·d] dy[n, k, p, q]
    return {"N": c, "K": k, "C": n, "P": float(nest.r), "Q": float(nest.s), "R": p, "S": float(nest.q),
            "stride": nest.dilation, "dilation": nest.stride, "density": 1.0}  # fmt: skip


def _options(limit: int) -> list[int]:
    return sorted({1, 2, max(1, limit // 2), max(1, limit)})


def row_stationary_tiles(nest: LoopNest, t: Tiles, target: Target) -> ArraySide:
    """The best processing-pass parameters for every buffer tile (by on-chip energy, cycles
    included), and what they cost on the array. Every cost of a pass is linear in the images it
    processes, so the parameters are weighed once per distinct (K', C', P', R') of the tiles."""
    g = _geometry(nest, t)
    # the streamed input and the filter rows: the error is the filter in a weight gradient
    in_bits, f_bits = (nest.b_bits, nest.a_bits) if nest.role == "bwd_weight" else (nest.a_bits, nest.b_bits)
    acc = nest.acc_bits
    filter_words, ifmap_words, psum_words = (bits // w for bits, w in zip(target.spad_bits, (f_bits, in_bits, acc),
                                                                             strict=True))  # fmt: skip
    rows, cols = target.rows, target.cols
    images = np.broadcast_to(np.asarray(g["N"], dtype=np.float64), (t.n_candidates,))
    keys = np.stack([np.broadcast_to(np.asarray(g[d], dtype=np.float64), (t.n_candidates,)) for d in "KCPR"], axis=1)
    groups, inverse = np.unique(keys, axis=0, return_inverse=True)
    K, C, P, R = (groups[:, i : i + 1] for i in range(4))
    Q, S = float(g["Q"]), float(g["S"])
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
    # per image of a pass (A) and per pass whatever the images (B)
    a_ifmap = passes * q_pe * r_sets * in_rows * in_cols * real
    b_filter = passes * p_pe * t_sets * q_pe * r_sets * r_h * s_seg
    a_psum_w = passes * p_pe * t_sets * e * Q
    a_psum_r = np.maximum(a_psum_w - K * P * Q, 0.0)
    b_cycles = passes * np.ceil(b_filter / passes * f_bits / target.noc_bits_per_cycle[1])  # filter fills
    a_cycles = passes * np.maximum(p_pe * q_pe * s_seg * Q,
                                   np.maximum(a_ifmap / passes * in_bits / target.noc_bits_per_cycle[0],
                                              (a_psum_w + a_psum_r) / passes * acc / target.noc_bits_per_cycle[2]))
    a_delivered, b_delivered = a_ifmap * np.minimum(r_h, e) * t_sets * in_bits, b_filter * e * f_bits
    a_hops = a_psum_w * (r_h - 1 + r_sets - 1) * acc
    # scratchpad reads per image: a filter tap and a partial-sum read-modify-write every MAC; an
    # input value read once for the p filters the PE runs on it back to back
    a_macs = K * C * P * Q * R * S * g["density"]
    a_spad = a_macs * (f_bits + 2 * acc + in_bits / p_pe)
    gb, noc, hop = target.buffer(target.streams[0]).pj_per_bit, target.noc_pj_per_bit, target.hop_pj_per_bit
    a_energy = ((a_ifmap * in_bits + (a_psum_w + a_psum_r) * acc) * gb + a_delivered * (noc + hop)
                + (a_psum_w + a_psum_r) * acc * noc + a_hops * hop + a_cycles * target.cycle_pj
                + a_spad * target.rf_pj_per_bit)  # fmt: skip
    b_energy = b_filter * f_bits * gb + b_delivered * (noc + hop) + b_cycles * target.cycle_pj
    a_energy, b_energy = np.where(ok, a_energy, np.inf), np.where(ok, b_energy, np.inf)
    energy = images[:, None] * a_energy[inverse] + b_energy[inverse]
    if not np.isfinite(energy).any():
        raise MappingError(f"the PE scratchpads cannot hold one filter row of this {nest.role} op")
    best = np.argmin(energy, axis=1)

    def pick(a: np.ndarray) -> np.ndarray:
        return np.broadcast_to(a, a_energy.shape)[inverse, best]

    chosen = {name: pick(a) for name, a in (("e", e), ("p", p_pe), ("q", q_pe), ("r", r_sets), ("t", t_sets),
                                             ("set_rows", r_h), ("taps", s_seg), ("passes", passes),
                                             ("folds", fold_r * fold_s))}  # fmt: skip
    tiles = t.tiles()

    def total(a: np.ndarray, b: np.ndarray | float = 0.0) -> np.ndarray:
        return (images * pick(a) + (pick(b) if isinstance(b, np.ndarray) else b)) * tiles

    ifmap, filters = total(a_ifmap), pick(b_filter) * tiles
    psum_w, psum_r = total(a_psum_w), total(a_psum_r)
    delivered = total(a_delivered, b_delivered)
    rf = nest.macs * (f_bits + 2 * acc + in_bits / pick(p_pe)) + delivered  # scratchpad accesses and fills

    def spatial(i: int) -> tuple:
        c = {k: int(v[i]) for k, v in chosen.items()}
        return (("rows", f"filter rows, {c['r']} channel × {c['t']} filter sets", c["set_rows"]),
                ("cols", "output rows", c["e"]))  # fmt: skip

    def detail(i: int) -> tuple:
        return tuple((name, float(v[i])) for name, v in chosen.items())

    reads = (filters, ifmap) if nest.role == "bwd_weight" else (ifmap, filters)
    return ArraySide(total(a_cycles, b_cycles), reads[0], reads[1], psum_w, psum_r, rf,
                     delivered + (psum_w + psum_r) * acc, total(a_hops), pick(r_h * e * r_sets * t_sets),
                     spatial, detail)  # fmt: skip


def map_row_stationary(nest: LoopNest, target: Target) -> Mapping:
    """The best buffer tiling and processing passes of ``nest`` on a row-stationary array (one
    target: the passes chosen for a tile depend on the target's energies)."""
    options = {d: tile_options(nest.size(d), ()) for d in ("n", "k", "c", "p")}
    options["q"] = [nest.q]  # a PE computes whole output rows
    columns = Columns([target])
    everything = make_tiles(nest, options)
    t, footprint, fitting = legal_tiles(nest, columns, everything)
    if not t.n_candidates:
        raise no_fit(nest, everything)
    return search(nest, columns, t, footprint, row_stationary_tiles(nest, t, target), fitting)[0]
