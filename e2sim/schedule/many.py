"""The iteration plan and op costs of many design points at once, as arrays over points.

Every design point of one workload plans the same ops with the same moves (which tensor each op
moves, on which stream, read or written); only the numbers differ (the mappings, the buffers,
DRAM). :func:`plan_points` lays them out as arrays of moves × points and ops × points and runs the
steps of ``residency.plan_iteration`` (batch-norm statistics, streaming, residency) and
``ops.finish_op`` (DMA timeline, buffer bandwidth) on whole arrays; only the greedy residency
choice runs per point (its order depends on each point's prices). The numbers equal the scalar
steps' (same operations in the same order per element: adding a zero where the scalar step skips).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from e2sim.graph.ir import Op, Tensor
from e2sim.lazy import LazyModule
from e2sim.schedule.mapper import timeline
from e2sim.schedule.ops import STREAMS, OpPlan, _times_read
from e2sim.schedule.residency import lives_of, may_stream, span_of
from e2sim.schedule.target import Target

KERNELS = LazyModule("e2sim.kernels.residency")


@dataclass(frozen=True)
class Costs:
    """Per op × point: compute and stall cycles, DRAM bytes, bits moved per buffer (fills, drains
    and the datapath's accesses) and the PE array's local bits."""

    compute_cycles: np.ndarray
    stall_cycles: np.ndarray
    dram_bytes: np.ndarray
    buffer_bits: Mapping[str, np.ndarray]
    rf_bits: np.ndarray
    noc_bits: np.ndarray
    hop_bits: np.ndarray


def layout(targets: Sequence[Target]) -> tuple:
    """What points planned together must share: their buffers' names, which buffer each stream
    uses, and whether DMA overlaps compute."""
    first = targets[0]
    return tuple(b.name for b in first.buffers), first.streams, first.double_buffered


def _column(value, count: int) -> np.ndarray:
    """A plan's number (the same on every point) or array over points, as an array over points."""
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (count,))


class _Moves:
    """The moves of every op as arrays of moves × points (a last row of zeros pads op tables)."""

    FIELDS = ("dram_bytes", "fill_bits", "use_bits", "times", "tile_bytes")

    def __init__(self, plans: Sequence[OpPlan], count: int):
        counts = [len(p.moves) for p in plans]
        self.base = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        for name in self.FIELDS:
            rows = [_column(getattr(m, name), count) for plan in plans for m in plan.moves]
            setattr(self, name, np.vstack([*rows, np.zeros(count)]))
        widest = max(counts, default=0)
        pad = int(self.base[-1])  # the zero row
        self.table = np.full((len(plans), widest), pad, dtype=np.int64)  # ops × k: flat index of each op's k-th move
        self.stream = np.zeros((len(plans), widest), dtype=np.int64)
        self.write = np.zeros((len(plans), widest), dtype=bool)
        for i, plan in enumerate(plans):
            for k, m in enumerate(plan.moves):
                self.table[i, k] = self.base[i] + k
                self.stream[i, k] = STREAMS.index(m.stream)
                self.write[i, k] = m.write

    def at(self, i: int, j: int) -> int:
        return int(self.base[i]) + j

    def clear(self, index: int, where: np.ndarray, fill: bool, use: bool) -> None:
        """``residency``'s clear on the points ``where`` is true: no DRAM bytes, and no fill or use bits when asked."""
        self.dram_bytes[index] = np.where(where, 0.0, self.dram_bytes[index])
        if fill:
            self.fill_bits[index] = np.where(where, 0.0, self.fill_bits[index])
        if use:
            self.use_bits[index] = np.where(where, 0.0, self.use_bits[index])


def _per_op(plans: Sequence[OpPlan], get, count: int) -> np.ndarray:
    return np.vstack([_column(get(plan), count) for plan in plans])


def plan_points(ops: Sequence[Op], tensors: Mapping[str, Tensor], plans: Sequence[OpPlan],
                targets: Sequence[Target], inputs: frozenset[str], fusion: bool) -> Costs:  # fmt: skip
    """``plans``: the plan of each of ``ops`` on every one of ``targets`` (``ops.plan_op``, or
    ``ops.array_plan`` with its numbers as arrays over the targets; a number the same on every
    target may stay a float); the targets share their :func:`layout`. The costs
    :func:`ops.finish_op` gives each op after ``residency.plan_iteration``, for every target."""
    if len({layout([t]) for t in targets}) != 1:
        raise ValueError("points planned together must share their buffers, streams and double buffering")
    count = len(targets)
    moves = _Moves(plans, count)
    lives = lives_of(tensors, plans)
    if fusion:
        for i, op in enumerate(ops):  # 1. batch-norm statistics in the producer's epilogue
            if _times_read(op) == 2 and i > 0 and lives[tensors[op.reads[0]].alias_of or op.reads[0]].producer == i - 1:
                k = moves.at(i, 0)
                for name in ("dram_bytes", "fill_bits", "use_bits"):
                    getattr(moves, name)[k] = getattr(moves, name)[k] / 2
                moves.times[k] = 1.0
        streamed = {}  # 2. streaming: where each tensor that may stream does
        for life in lives.values():
            is_input = life.root in inputs or life.producer is None
            if life.uses and not is_input and may_stream(life, ops):
                (i, j), (c, k) = life.write, life.uses[0]
                where = moves.times[moves.at(c, k)] == 1
                on_array = plans[i].nest is not None
                moves.clear(moves.at(i, j), where, fill=not on_array, use=not on_array and plans[c].nest is None)
                moves.clear(moves.at(c, k), where, fill=True, use=plans[c].nest is None)
                streamed[life.root] = where
        _resident(tensors, plans, moves, lives, inputs, targets, streamed)
    return _finish(plans, moves, targets)


def _resident(tensors, plans, moves: _Moves, lives, inputs, targets: Sequence[Target], streamed) -> None:
    """3. Residency: ``residency._resident``'s candidates and prices on arrays, its greedy choice per point."""
    count = len(targets)
    spans = [(life, span) for life in lives.values() if (span := span_of(life, inputs, tensors)) is not None]
    if not spans:
        return
    shared = len(targets[0].buffers) == 1
    dram_pj = 8 * np.array([t.dram_pj_per_bit for t in targets])
    fill_pj = [np.array([t.buffer(t.streams[k]).pj_per_bit for t in targets]) for k in range(3)]
    pj = np.zeros((len(spans), count))
    saved = np.zeros((len(spans), count), dtype=bool)
    for c, (life, span) in enumerate(spans):
        for i, j in span.touched:
            index = moves.at(i, j)
            d = moves.dram_bytes[index]
            price = d * dram_pj
            if shared:
                price = price + moves.fill_bits[index] * fill_pj[STREAMS.index(plans[i].moves[j].stream)]
            pj[c] = pj[c] + np.where(d > 0, price, 0.0)
            saved[c] |= d > 0
        if life.root in streamed:
            saved[c] &= ~streamed[life.root]
    start = np.array([s.start for _, s in spans], dtype=np.int64)
    end = np.array([s.end for _, s in spans], dtype=np.int64)
    size = np.array([s.size for _, s in spans], dtype=np.float64)
    key = pj / np.maximum(size * (end - start + 1), 1.0)[:, None]
    back, back_offsets = _flat([[moves.at(i, j) for i, j in s.gives_back] for _, s in spans])
    back_ops = np.array([i for _, s in spans for i, _ in s.gives_back], dtype=np.int64)
    touched, touched_offsets = _flat([[moves.at(i, j) for i, j in s.touched] for _, s in spans])
    pool = [sum(b.size_bytes for b in t.buffers) for t in targets]
    footprint = _per_op(plans, lambda plan: plan.footprint_bytes, count)
    for p in range(count):
        candidates = np.flatnonzero(saved[:, p])
        order = candidates[np.argsort(-key[candidates, p], kind="stable")]
        picked, offsets = _gather(back_offsets, order)
        amount = np.minimum(np.repeat(size[order], np.diff(offsets)), moves.tile_bytes[back[picked], p])
        free = pool[p] - footprint[:, p]
        held = KERNELS.hold_greedily(free, start[order], end[order], size[order], offsets, back_ops[picked], amount)[0]
        picked, _ = _gather(touched_offsets, order[held])
        settle = touched[picked]
        settle = settle[moves.dram_bytes[settle, p] > 0]
        moves.dram_bytes[settle, p] = 0.0
        if shared:
            moves.fill_bits[settle, p] = 0.0


def _flat(groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The groups concatenated, and where each starts (one offset more than groups)."""
    offsets = np.concatenate([[0], np.cumsum([len(g) for g in groups])]).astype(np.int64)
    return np.array([x for g in groups for x in g], dtype=np.int64), offsets


def _gather(offsets: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices into a flat array of the groups ``order`` names, in that order, and their offsets."""
    lengths = offsets[order + 1] - offsets[order]
    new = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    picked = np.repeat(offsets[order] - new[:-1], lengths) + np.arange(new[-1], dtype=np.int64)
    return picked, new


def _finish(plans, moves: _Moves, targets: Sequence[Target]) -> Costs:
    """``ops.finish_op`` on every op and point."""
    count = len(targets)
    compute = _per_op(plans, lambda plan: plan.compute_cycles, count)
    tiles = _per_op(plans, lambda plan: plan.tiles, count)
    dram_in = [np.zeros_like(compute), np.zeros_like(compute), _per_op(plans, lambda plan: plan.psum_bytes[1], count)]
    dram_out = _per_op(plans, lambda plan: plan.psum_bytes[0], count)
    names, streams, double_buffered = layout(targets)
    bits = {name: np.zeros_like(compute) for name in names}
    in_buffer = {name: np.isin(moves.stream, [s for s in range(3) if streams[s] == name]) for name in names}
    for k in range(moves.table.shape[1]):
        index, stream, write = moves.table[:, k], moves.stream[:, k], moves.write[:, k, None]
        dram, fill, use = moves.dram_bytes[index], moves.fill_bits[index], moves.use_bits[index]
        dram_out = dram_out + np.where(write, dram, 0.0)
        for s in range(3):
            dram_in[s] = dram_in[s] + np.where(~write & (stream == s)[:, None], dram, 0.0)
        for name in names:
            here = in_buffer[name][:, k, None]
            bits[name] = bits[name] + np.where(here, fill, 0.0) + np.where(here, use, 0.0)
    ofmap = streams[2]
    bits[ofmap] = bits[ofmap] + _per_op(plans, lambda plan: plan.psum_bits, count)
    columns = SimpleNamespace(dram_bytes_per_cycle=np.array([t.dram_bytes_per_cycle for t in targets]),
                              double_buffered=double_buffered)  # fmt: skip
    reads = dram_in[0] + dram_in[1] + dram_in[2]
    total = timeline(compute, reads, dram_out, tiles, columns)
    sram = np.zeros_like(compute)
    for name in names:
        per_cycle = np.array([t.buffer(name).bytes_per_cycle for t in targets])
        sram = np.maximum(sram, bits[name] / 8 / per_cycle)
    return Costs(
        compute_cycles=compute, stall_cycles=np.maximum(np.maximum(total, sram) - compute, 0.0),
        dram_bytes=reads + dram_out, buffer_bits=bits, rf_bits=_per_op(plans, lambda plan: plan.rf_bits, count),
        noc_bits=_per_op(plans, lambda plan: plan.noc_bits, count),
        hop_bits=_per_op(plans, lambda plan: plan.hop_bits, count),
    )  # fmt: skip
