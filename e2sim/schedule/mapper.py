"""The mapper: choose how a PE-array op's loop nest is tiled between DRAM and the on-chip buffers.

A mapping has three levels. The **array** unrolls the dimensions its dataflow fixes (see
``systolic.py`` and ``rowstationary.py``); the **buffer** holds one tile of each operand
(``tile``: a size per dimension, R and S whole); **DRAM** runs the loops over tiles in an order.
Every dimension is irrelevant to exactly one operand (k to x; n, p, q to w; c, r, s to y), so the
DRAM loops fall into three groups and only the order of the groups changes the traffic: the
operand whose irrelevant loops are innermost stays in the buffer (moves through DRAM once); the
next is re-fetched once per iteration of its irrelevant loops, and so on. Interleaving groups
never moves fewer bytes, so the search covers every tile size in a candidate set × the six group
orders. An output re-visited by a reduction loop outside its tile writes its partial sums to
DRAM and reads them back (at the accumulator width); the search avoids that whenever an order
that keeps them on chip costs less.

Legal mappings fit each tile in its buffer (twice when DMA overlaps compute: double buffering);
among them the best by the target's objective (energy, latency or energy-delay product) wins;
ties go to the smaller footprint. Results are cached by (nest, target).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from e2sim.schedule.nest import LoopNest
from e2sim.schedule.target import Target

TILED = ("n", "k", "c", "p", "q")  # r and s stay whole in a tile (the array holds whole filter rows)
# the DRAM loops that re-fetch an operand of each kind (the dimensions it is not indexed by)
IRRELEVANT = {"x": ("k",), "w": ("n", "p", "q"), "y": ("c",)}
ORDERS = tuple(itertools.permutations(("x", "w", "y")))  # innermost group first: the stationary operand's


@dataclass(frozen=True)
class Mapping:
    """A chosen mapping and the accesses it implies. Per-stream tuples are (A, B, output);
    buffer accesses are bits, DRAM traffic bytes."""

    dataflow: str
    spatial: tuple[tuple[str, str, int], ...]  # (array axis, dimensions unrolled on it, extent used)
    tile: tuple[int, ...]  # buffer tile, n k c p q r s
    dram_loops: tuple[tuple[str, int], ...]  # DRAM-level loops over tiles, outermost first
    stationary: str  # the operand that stays in the buffer across the innermost DRAM loops
    refetch: tuple[float, float, float]  # times A, B and the output cross the DRAM interface
    tiles: int
    compute_cycles: float
    utilisation: float
    dram_read_bytes: tuple[float, float, float]  # A, B, partial sums read back
    dram_write_bytes: float  # outputs and spilled partial sums
    buffer_reads: tuple[float, float, float]
    buffer_writes: tuple[float, float, float]
    footprint_bytes: tuple[float, float, float]
    rf_bits: float
    noc_bits: float
    hop_bits: float
    detail: tuple[tuple[str, float], ...] = ()  # dataflow-specific choices (row stationary parameters)

    def as_dict(self, kinds: tuple[str, str, str]) -> dict:
        names = ("A", "B", "out")
        return {
            "dataflow": self.dataflow,
            "spatial": [{"axis": a, "dims": d, "extent": e} for a, d, e in self.spatial],
            "buffer_tile": dict(zip(("n", "k", "c", "p", "q", "r", "s"), self.tile, strict=True)),
            "dram_loops": [{"dim": d, "count": c} for d, c in self.dram_loops],
            "stationary": self.stationary,
            "operands": dict(zip(names, kinds, strict=True)),
            "refetch": dict(zip(names, self.refetch, strict=True)),
            "tiles": self.tiles,
            "utilisation": self.utilisation,
            "dram_read_bytes": dict(zip(("A", "B", "psum"), self.dram_read_bytes, strict=True)),
            "dram_write_bytes": self.dram_write_bytes,
            "buffer_read_bits": dict(zip(names, self.buffer_reads, strict=True)),
            "buffer_write_bits": dict(zip(names, self.buffer_writes, strict=True)),
            "footprint_bytes": dict(zip(names, self.footprint_bytes, strict=True)),
            "rf_bits": self.rf_bits, "noc_bits": self.noc_bits, "pe_hop_bits": self.hop_bits,
            **({"detail": dict(self.detail)} if self.detail else {}),
        }  # fmt: skip


@dataclass
class Tiles:
    """Candidate buffer tiles: per tiled dimension the tile size, the number of tiles and the size
    of the last (possibly smaller) tile, as arrays over candidates."""

    size: dict[str, np.ndarray]
    count: dict[str, np.ndarray]
    last: dict[str, np.ndarray]

    @property
    def n_candidates(self) -> int:
        return len(self.size["n"])

    def select(self, mask: np.ndarray) -> Tiles:
        index = np.flatnonzero(mask)  # once, not once per array
        return Tiles(*({d: a[index] for d, a in part.items()} for part in (self.size, self.count, self.last)))

    def tiles(self) -> np.ndarray:
        return np.prod([self.count[d] for d in TILED], axis=0)


def tile_options(size: int, aligns: tuple[int, ...] = (), divisions=(2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 64, 128)):
    """Tile sizes worth trying for a dimension of ``size``: the whole, ⌈size / L⌉ for a spread of
    tile counts L, 1, and powers-of-two multiples of the array's sides."""
    options = {size, 1}
    options.update(-(-size // d) for d in divisions if d < size)
    for a in aligns:
        v = a
        while v < size:
            options.add(v)
            v *= 2
    return sorted(options)


def make_tiles(nest: LoopNest, options: dict[str, list[int]], dims: tuple[str, ...] = TILED) -> Tiles:
    """Every combination of the ``options`` of ``dims`` (the first dimension slowest)."""
    grids = np.meshgrid(*(np.asarray(options[d], dtype=np.float64) for d in dims), indexing="ij")
    return _tiles_of(nest, {d: g.reshape(-1) for d, g in zip(dims, grids, strict=True)})


def _tiles_of(nest: LoopNest, size: dict[str, np.ndarray]) -> Tiles:
    count = {d: np.ceil(nest.size(d) / a) for d, a in size.items()}
    last = {d: nest.size(d) - (count[d] - 1) * a for d, a in size.items()}
    return Tiles(size, count, last)


def product_tiles(nest: LoopNest, options: dict[str, list[int]],
                  parts: list[tuple[tuple[str, ...], np.ndarray]]) -> Tiles:  # fmt: skip
    """The candidates of :func:`make_tiles` (in its order) that combine, for each group of
    dimensions in ``parts`` (``(dims, option indices: len(dims) × kept combinations)``), one
    kept combination; dimensions in no group take every option."""
    lengths = [len(options[d]) for d in TILED]
    strides = dict(zip(TILED, np.cumprod([1, *lengths[:0:-1]])[::-1].tolist(), strict=True))  # n slowest
    grouped = {d for dims, _ in parts for d in dims}
    parts = parts + [((d,), np.arange(len(options[d]))[None, :]) for d in TILED if d not in grouped]
    flat = np.zeros(1, dtype=np.int64)  # each combination's index in make_tiles' order
    for dims, kept in parts:
        offsets = sum(kept[j].astype(np.int64) * strides[d] for j, d in enumerate(dims))
        flat = np.add.outer(flat, offsets).reshape(-1)
    chosen = np.zeros(int(np.prod(lengths)), dtype=bool)
    chosen[flat] = True
    index = np.unravel_index(np.flatnonzero(chosen), lengths)  # make_tiles' order
    return _tiles_of(nest, {d: np.asarray(options[d], dtype=np.float64)[i] for d, i in zip(TILED, index, strict=True)})


def window_extent(tile: np.ndarray, stride: int, taps: int, limit: int) -> np.ndarray:
    """Input rows (or columns) a tile of ``tile`` outputs covers with ``taps``-wide windows."""
    return np.minimum(limit, (tile - 1) * stride + taps)


def _halo(nest: LoopNest) -> tuple[int, int]:
    """Extra rows and columns of dy a tile of dx needs in a backward-data op (gather form: the
    transposed convolution reads ⌈(R' − σ)/σ⌉ rows of dy beyond its own on each tile boundary, R' the
    dilated kernel's span)."""
    return (max(0, -(-(nest.r_span - nest.stride) // nest.stride)),
            max(0, -(-(nest.s_span - nest.stride) // nest.stride)))  # fmt: skip


def operand_footprints(nest: LoopNest, t: Tiles) -> dict[str, np.ndarray]:
    """Elements of one buffer tile of each operand kind."""
    rows = window_extent(t.size["p"], nest.stride, nest.r_span, nest.h_pad)
    cols = window_extent(t.size["q"], nest.stride, nest.s_span, nest.w_pad)
    extra_rows, extra_cols = _halo(nest) if nest.role == "bwd_data" else (0, 0)
    return {
        "x": t.size["n"] * t.size["c"] * rows * cols,
        "w": t.size["k"] * t.size["c"] * nest.r * nest.s,
        "y": t.size["n"] * t.size["k"] * np.minimum(t.size["p"] + extra_rows, nest.p)
        * np.minimum(t.size["q"] + extra_cols, nest.q),
    }


def operand_traffic(nest: LoopNest, t: Tiles, sliding: bool = False) -> dict[str, np.ndarray]:
    """Elements moved when every tile of each operand kind is fetched once, without padding: an x
    read through windows with its halos; in a backward-data op (gather form) the dx tiles
    partition dx and the dy tiles carry the halos. ``sliding``: consecutive tiles along p keep the
    rows they share in the buffer, so no halo is fetched twice."""
    ones = np.ones(t.n_candidates)
    if nest.role == "bwd_data":
        extra_rows, extra_cols = (0, 0) if sliding else _halo(nest)
        rows = np.minimum(nest.p + (t.count["p"] - 1) * extra_rows, t.count["p"] * nest.p)
        cols = np.minimum(nest.q + (t.count["q"] - 1) * _halo(nest)[1], t.count["q"] * nest.q)
        return {"x": ones * nest.elements("x"), "w": ones * nest.elements("w"), "y": nest.n * nest.k * rows * cols}

    def covered(dim: str, stride: int, taps: int, limit: int, real: int) -> np.ndarray:
        full = window_extent(t.size[dim], stride, taps, limit)
        last = window_extent(t.last[dim], stride, taps, limit)
        return ((t.count[dim] - 1) * full + last) * min(real, limit) / limit

    rows = ones * min(nest.h, nest.h_pad) if sliding else covered("p", nest.stride, nest.r_span, nest.h_pad, nest.h)
    cols = covered("q", nest.stride, nest.s_span, nest.w_pad, nest.w)
    return {"x": nest.n * nest.c * rows * cols, "w": ones * nest.elements("w"), "y": ones * nest.elements("y")}


def _group_loops(t: Tiles) -> dict[str, np.ndarray]:
    """Per operand kind, the product of the DRAM loops over the dimensions it is not indexed by."""
    return {kind: np.prod([t.count[d] for d in dims], axis=0) for kind, dims in IRRELEVANT.items()}


def _slides(nest: LoopNest, t: Tiles, loops: dict[str, np.ndarray], order: tuple[str, str, str]) -> np.ndarray:
    """Whether consecutive tiles of the windowed input move along p only: q is whole and the first
    group of DRAM loops (innermost first) that changes that input is the one holding p."""
    halo_kind = "y" if nest.role == "bwd_data" else "x"
    slides = np.zeros(t.n_candidates, dtype=bool)
    decided = np.zeros(t.n_candidates, dtype=bool)
    for kind in order:
        if kind == halo_kind:
            continue
        here = ~decided & (loops[kind] > 1)
        slides |= here & (kind == "w")
        decided |= here
    return slides & (t.count["q"] == 1)


@dataclass
class ArraySide:
    """What the array does with candidate buffer tiles (arrays over candidates): cycles, buffer
    reads of A and B and partial-sum writes and reads (elements), and local traffic (bits)."""

    compute_cycles: np.ndarray
    reads_a: np.ndarray
    reads_b: np.ndarray
    psum_writes: np.ndarray
    psum_reads: np.ndarray
    rf_bits: np.ndarray
    noc_bits: np.ndarray
    hop_bits: np.ndarray
    active_pes: np.ndarray
    spatial: Callable[[int], tuple]  # candidate index -> the spatial description
    detail: Callable[[int], tuple] = lambda i: ()


def _order_multipliers(loops: dict[str, np.ndarray], order: tuple[str, str, str]) -> dict[str, np.ndarray]:
    """Times each kind crosses DRAM for a group order (innermost group first)."""
    inner, middle, outer = order
    ones = np.ones_like(loops[inner])
    return {
        inner: ones,
        middle: np.where(loops[inner] > 1, loops[middle], 1.0),
        outer: np.where(loops[inner] * loops[middle] > 1, loops[outer], 1.0),
    }


def timeline(compute, dram_in, dram_out, tiles, target: Target | Columns):
    """Cycles of an op whose tiles load, compute and store (overlapped when double-buffered); for
    arrays over targets and candidates or for one op's floats."""
    bw = target.dram_bytes_per_cycle
    if not target.double_buffered:
        return compute + (dram_in + dram_out) / bw
    load, store, c = dram_in / bw / tiles, dram_out / bw / tiles, compute / tiles
    if isinstance(c, np.ndarray):
        many = load + np.maximum(c, load) + (tiles - 2) * np.maximum(c, load + store) + np.maximum(c, store) + store
        return np.where(tiles > 1, many, load + c + store)
    if tiles <= 1:
        return load + c + store
    return load + max(c, load) + (tiles - 2) * max(c, load + store) + max(c, store) + store


class Columns:
    """Targets of one structure (dataflow, array, buffers, streams, double buffering, objective) as
    columns: every number an array of shape (targets, 1), so the search prices each candidate tile
    on every target at once. One target is the scalar case."""

    def __init__(self, targets: Sequence[Target]):
        first = targets[0]
        if any(structure(t) != structure(first) for t in targets):
            raise ValueError("targets priced together must share their structure")
        self.count = len(targets)
        self.dataflow, self.rows, self.cols = first.dataflow, first.rows, first.cols
        self.streams, self.double_buffered, self.objective = first.streams, first.double_buffered, first.objective
        for name in ("dram_bytes_per_cycle", "dram_pj_per_bit", "rf_pj_per_bit", "noc_pj_per_bit", "hop_pj_per_bit",
                     "cycle_pj"):  # fmt: skip
            setattr(self, name, _column(getattr(t, name) for t in targets))
        self._buffers = {b.name: SimpleNamespace(**{f: _column(getattr(t.buffer(b.name), f) for t in targets)
                                                    for f in ("size_bytes", "bytes_per_cycle", "pj_per_bit")})
                         for b in first.buffers}  # fmt: skip

    def buffer(self, name: str) -> SimpleNamespace:
        return self._buffers[name]


def _column(values: Iterable[float]) -> np.ndarray:
    return np.array(list(values), dtype=np.float64).reshape(-1, 1)


def structure(target: Target) -> tuple:
    """What targets searched together must share: everything but sizes, bandwidths and energies."""
    return (target.dataflow, target.rows, target.cols, tuple(b.name for b in target.buffers), target.streams,
            target.double_buffered, target.objective, target.spad_bits, target.noc_bits_per_cycle)  # fmt: skip


def legal_tiles(nest: LoopNest, targets: Columns, t: Tiles) -> tuple[Tiles, np.ndarray, np.ndarray]:
    """The candidates whose A, B and output tiles fit their buffers for at least one DRAM loop
    order on at least one target, one copy of each tile in bytes (3 × candidates), and whether
    they fit each target with each operand stationary (see :func:`_fits`; 3 × targets ×
    candidates)."""
    kinds = nest.kinds
    foot = operand_footprints(nest, t)
    single = np.stack([foot[kinds[0]] * nest.a_bits, foot[kinds[1]] * nest.b_bits, foot[kinds[2]] * nest.acc_bits]) / 8
    fitting = np.stack([_fits(targets, single, stationary) for stationary in range(3)])
    union = fitting.any(axis=(0, 1))
    return t.select(union), single[:, union], fitting[:, :, union]


def no_fit(nest: LoopNest, t: Tiles) -> MappingError:
    kinds = nest.kinds
    foot = operand_footprints(nest, t)
    single = (foot[kinds[0]] * nest.a_bits + foot[kinds[1]] * nest.b_bits + foot[kinds[2]] * nest.acc_bits) / 8
    return MappingError(f"no tile of this {nest.role} op fits the buffers (the smallest needs "
                        f"{single.min():.0f} bytes)")  # fmt: skip


def _copies(target: Target | Columns, stationary: int) -> np.ndarray:
    """Copies of each stream's tile in the buffers: two for the tiles that change on the innermost
    DRAM loops when DMA overlaps compute (one computes while the next loads), one for the
    stationary tile (it changes on outer loops only; its reloads wait)."""
    copies = np.full((3, 1), 2.0 if target.double_buffered else 1.0)
    copies[stationary] = 1.0
    return copies


def _fits(targets: Columns, single: np.ndarray, stationary: int) -> np.ndarray:
    """Targets × candidates: whether the tiles fit every buffer with ``stationary``'s copies."""
    footprint = single * _copies(targets, stationary)
    ok = np.ones((targets.count, single.shape[1]), dtype=bool)
    for name in set(targets.streams):
        ok &= sum(footprint[i] for i, s in enumerate(targets.streams) if s == name) <= targets.buffer(name).size_bytes
    return ok


def search(nest: LoopNest, targets: Columns, t: Tiles, single: np.ndarray, array: ArraySide, fitting: np.ndarray,
           orders: tuple[tuple[str, str, str], ...] = ORDERS) -> list[Mapping | None]:  # fmt: skip
    """For each target, the best (tile, order) among candidates ``t`` and ``orders`` whose tiles fit
    it with the order's stationary operand (``fitting``: 3 × targets × candidates, from
    :func:`legal_tiles`), by the objective (None: nothing fits); ``array`` describes what the array
    does with each candidate, ``single`` is one copy of each tile in bytes. Ties within 1e-9 go to
    the smaller footprint, then to the earlier candidate and order."""
    kinds = nest.kinds
    bits = (nest.a_bits, nest.b_bits)
    traffic = {False: operand_traffic(nest, t)}  # sliding tiles' traffic: worked out when an order slides
    unique_out = nest.elements(kinds[2])
    compute = array.compute_cycles
    tiles = t.tiles()
    loops = _group_loops(t)
    buf = [targets.buffer(s) for s in targets.streams]
    psum_bits = (array.psum_writes + array.psum_reads) * nest.acc_bits
    on_chip = (array.reads_a * (bits[0] * buf[0].pj_per_bit) + array.reads_b * (bits[1] * buf[1].pj_per_bit)
               + psum_bits * buf[2].pj_per_bit + array.rf_bits * targets.rf_pj_per_bit
               + array.noc_bits * targets.noc_pj_per_bit + array.hop_bits * targets.hop_pj_per_bit)  # fmt: skip
    datapath = {}
    for i, moved in enumerate((array.reads_a * bits[0], array.reads_b * bits[1], psum_bits)):
        datapath[targets.streams[i]] = datapath.get(targets.streams[i], 0.0) + moved / (8 * buf[i].bytes_per_cycle)
    best_low, best_foot = np.full(targets.count, np.inf), np.full(targets.count, np.inf)
    best_order, best_i = np.full(targets.count, -1), np.zeros(targets.count, dtype=np.int64)
    kept = []
    by_stationary = {}  # footprints depend on the stationary operand alone (orders share it)
    for order in orders:
        stationary = kinds.index(order[0])
        if stationary not in by_stationary:
            footprint = single * _copies(targets, stationary)
            by_stationary[stationary] = (footprint, footprint[0] + footprint[1] + footprint[2])
        footprint, total_foot = by_stationary[stationary]
        mult = _order_multipliers(loops, order)
        slides = _slides(nest, t, loops, order)
        sliding = bool(slides.any())
        if sliding and True not in traffic:
            traffic[True] = operand_traffic(nest, t, sliding=True)
        moved = {k: (np.where(slides, traffic[True][k], traffic[False][k]) if sliding else traffic[False][k]) * mult[k]
                 for k in kinds}  # fmt: skip
        kept.append((order, mult, moved, footprint))
        reads = [moved[kinds[i]] * bits[i] for i in range(2)]  # bits
        psum_moves = np.maximum(moved[kinds[2]] - unique_out, 0.0) * nest.acc_bits
        writes = unique_out * nest.out_bits + psum_moves
        fills = (reads[0], reads[1], psum_moves + writes)
        exposed = fills[stationary] / 8 if targets.double_buffered else 0.0  # the stationary tile's loads wait
        dram_in, dram_out = (reads[0] + reads[1] + psum_moves) / 8, writes / 8
        if stationary == 2:
            cycles = timeline(compute, dram_in, dram_out - exposed, tiles, targets)
        else:
            cycles = timeline(compute, dram_in - exposed, dram_out, tiles, targets)
        cycles = cycles + exposed / targets.dram_bytes_per_cycle
        sram = dict(datapath)
        for i, moved_bits in enumerate(fills):
            sram[targets.streams[i]] = sram[targets.streams[i]] + moved_bits / (8 * buf[i].bytes_per_cycle)
        for busy in sram.values():
            cycles = np.maximum(cycles, busy)
        energy = (on_chip + (dram_in + dram_out) * (8 * targets.dram_pj_per_bit) + cycles * targets.cycle_pj
                  + sum(fills[i] * buf[i].pj_per_bit for i in range(3)))  # fmt: skip
        score = {"energy": energy, "latency": cycles, "edp": energy * cycles}[targets.objective]
        score = np.where(fitting[stationary], score, np.inf)
        low = score.min(axis=1)
        near = score <= (low * (1 + 1e-9))[:, None]
        i = np.argmin(np.where(near, total_foot, np.inf), axis=1)
        foot = total_foot[i]
        better = np.isfinite(low) & ((low < best_low) | ((low == best_low) & (foot < best_foot)))
        best_low, best_foot = np.where(better, low, best_low), np.where(better, foot, best_foot)
        best_order, best_i = np.where(better, len(kept) - 1, best_order), np.where(better, i, best_i)
    return [None if o < 0 else _mapping(nest, targets, t, array, *kept[o], int(i), compute)
            for o, i in zip(best_order, best_i, strict=True)]  # fmt: skip


def _mapping(nest, target, t, array, order, mult, moved, footprint, i, compute) -> Mapping:
    kinds = nest.kinds
    bits = (nest.a_bits, nest.b_bits)
    unique_out = nest.elements(kinds[2])
    refetch = tuple(float(mult[k][i]) for k in kinds)
    reads = [float(moved[kinds[j]][i] * bits[j]) for j in range(2)]
    psum_moves = max(float(moved[kinds[2]][i]) - unique_out, 0.0) * nest.acc_bits
    writes = unique_out * nest.out_bits + psum_moves
    loops = []
    for kind in reversed(order):  # outermost group first
        loops += [(d, int(t.count[d][i])) for d in IRRELEVANT[kind] if t.count[d][i] > 1]
    tile = (*(int(t.size[d][i]) for d in TILED), nest.r, nest.s)
    pes = target.rows * target.cols
    return Mapping(
        dataflow=target.dataflow, spatial=array.spatial(i), tile=tile, dram_loops=tuple(loops),
        stationary=order[0], refetch=refetch, tiles=int(t.tiles()[i]), compute_cycles=float(compute[i]),
        utilisation=nest.macs / max(pes * float(compute[i]), 1.0),
        dram_read_bytes=(reads[0] / 8, reads[1] / 8, psum_moves / 8), dram_write_bytes=writes / 8,
        buffer_reads=(float(array.reads_a[i]) * bits[0], float(array.reads_b[i]) * bits[1],
                      float(array.psum_reads[i]) * nest.acc_bits + writes),
        buffer_writes=(reads[0], reads[1], float(array.psum_writes[i]) * nest.acc_bits + psum_moves),
        footprint_bytes=tuple(float(f) for f in footprint[:, i]), rf_bits=float(array.rf_bits[i]),
        noc_bits=float(array.noc_bits[i]), hop_bits=float(array.hop_bits[i]), detail=array.detail(i),
    )  # fmt: skip


class MappingError(ValueError):
    """No legal mapping exists (the buffers cannot hold even the smallest tiles)."""
