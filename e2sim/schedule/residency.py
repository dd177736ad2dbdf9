"""Fusion and residency across one training iteration: which tensors never reach DRAM.

Ops run one after another in the graph's order; each op's plan (``ops.plan_op``) says how it would
move its tensors on its own (every tensor read from and written to DRAM). This pass then decides
for the iteration as a whole, in three steps:

1. **Statistics in the producer's epilogue.** Training batch norm needs the batch statistics of
   its input before it can normalise, so on its own it reads that input twice. When the input is
   produced by the op just before it, the statistics are gathered as that op writes its output
   and batch norm reads the input once (the normalising pass still must wait for the whole batch:
   the input is stored, on chip or in DRAM).
2. **Streaming.** A tensor with one consumer that runs right after its producer and reads it once
   never materialises: the consumer takes it from the producer's output path (a conv's epilogue
   applies the ReLU that follows it; a vector op feeds the next). Batch-norm inputs never stream.
3. **Residency.** Every other tensor produced in the iteration, and every iteration input read by
   more than one op, may stay in the on-chip buffers from its producer (or first reader) to its
   last reader if it fits next to every op's working set in between (the tiles the op's mapping
   uses; an op that reads the resident tensor uses it in place and frees its tile for it). Tensors
   are placed greedily by DRAM energy saved per byte and per op held. With per-operand buffers
   the three SRAMs form one pool and a resident tensor that changes buffer is copied on chip (its
   buffer fill and drain stay, its DRAM bytes go).

Iteration inputs (data, parameters, optimizer state) come from DRAM at their first use and
iteration outputs (updated parameters and state) go back to DRAM: the state lives in DRAM between
iterations. ``fusion=False`` keeps the layer-by-layer model: every tensor to DRAM and back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from e2sim.graph.ir import Op, Tensor
from e2sim.lazy import LazyModule
from e2sim.schedule.ops import OpPlan, TensorMove, _times_read
from e2sim.schedule.target import Target

KERNELS = LazyModule("e2sim.kernels.residency")  # numba loads when an iteration is first planned


@dataclass(frozen=True)
class Placement:
    """Where a tensor lived during the iteration and why; its producer and readers by op index
    into ``op_names`` (names are looked up when asked for)."""

    tensor: str
    bytes: int
    placement: str  # dram | on_chip | streamed
    reason: str
    producer_index: int | None
    reads: tuple[tuple[int, int], ...]  # (op index, move index) of every read
    op_names: Sequence[str] = dataclasses.field(repr=False, compare=False)

    @property
    def producer(self) -> str | None:
        return self.op_names[self.producer_index] if self.producer_index is not None else None

    @property
    def consumers(self) -> tuple[str, ...]:
        """The ops that read it, in order, each once."""
        return tuple(dict.fromkeys(self.op_names[i] for i, _ in self.reads))


@dataclass
class _Life:
    root: str
    producer: int | None = None
    uses: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (op index, move index) of reads
    write: tuple[int, int] | None = None


def plan_iteration(
    ops: Sequence[Op], tensors: Mapping[str, Tensor], plans: Sequence[OpPlan], inputs: frozenset[str],
    target: Target, fusion: bool = True,
) -> tuple[list[tuple[TensorMove, ...]], dict[str, Placement]]:  # fmt: skip
    """The moves of every op after fusion and residency, and each tensor's placement."""
    moves = [list(p.moves) for p in plans]
    lives = lives_of(tensors, plans)

    def root(name: str) -> str:
        return tensors[name].alias_of or name

    placements: dict[str, Placement] = {}
    names = [op.name for op in ops]

    def place(life: _Life, where: str, reason: str) -> None:
        placements[life.root] = Placement(life.root, tensors[life.root].bytes, where, reason, life.producer,
                                          tuple(life.uses), names)  # fmt: skip

    def clear(i: int, j: int, fill: bool = True, use: bool = False) -> None:
        m = moves[i][j]
        moves[i][j] = _settled(m, 0.0, 0.0 if fill else m.fill_bits, 0.0 if use else m.use_bits, m.times)

    if fusion:
        for i, op in enumerate(ops):  # 1. batch-norm statistics in the producer's epilogue
            if _times_read(op) == 2 and i > 0 and lives[root(op.reads[0])].producer == i - 1:
                m = moves[i][0]
                moves[i][0] = _settled(m, m.dram_bytes / 2, m.fill_bits / 2, m.use_bits / 2, 1.0)
    for life in lives.values():
        is_input = life.root in inputs or life.producer is None
        if life.producer is not None and not life.uses:
            place(life, "dram", "iteration state, written back for the next iteration" if life.root.endswith(".next")
                  else "not read again in the iteration: written to DRAM")  # fmt: skip
        elif not fusion:
            place(life, "dram", "layer by layer (fusion and residency off)")
        elif not is_input and _streams(life, ops, moves):
            (i, j), (c, k) = life.write, life.uses[0]
            producer_on_array = plans[i].mapping is not None
            clear(i, j, fill=not producer_on_array, use=not producer_on_array and plans[c].mapping is None)
            clear(c, k, use=plans[c].mapping is None)
            place(life, "streamed", f"fused: {names[c]} takes it from {names[i]}'s output as it is produced")
    if fusion:
        _resident(tensors, plans, moves, lives, inputs, target, placements, place, names)
    for life in lives.values():
        if life.root not in placements:
            place(life, "dram", "iteration input, read from DRAM by its only reader" if life.producer is None
                  else "produced and read by one op each")  # fmt: skip
    return [tuple(m) for m in moves], placements


def lives_of(tensors: Mapping[str, Tensor], plans: Sequence[OpPlan]) -> dict[str, _Life]:
    """Each tensor (aliases under their root) with its producer, its reads and its write, by (op
    index, move index), in the order the ops first touch them."""
    lives: dict[str, _Life] = {}
    for i, plan in enumerate(plans):
        for j, move in enumerate(plan.moves):
            name = tensors[move.tensor].alias_of or move.tensor
            life = lives.get(name)
            if life is None:
                life = lives[name] = _Life(name)
            if move.write:  # a tensor read before it is written is state: the write goes back to DRAM
                if life.producer is None and not life.uses:
                    life.producer, life.write = i, (i, j)
            elif life.producer is None or life.producer < i:
                life.uses.append((i, j))
    return lives


def _settled(m: TensorMove, dram_bytes: float, fill_bits: float, use_bits: float, times: float) -> TensorMove:
    """``m`` with new traffic (built directly: this runs for thousands of moves per iteration)."""
    return TensorMove(m.tensor, m.stream, m.write, dram_bytes, fill_bits, use_bits, times, m.tile_bytes)


def _streams(life: _Life, ops: Sequence[Op], moves) -> bool:
    if not may_stream(life, ops):
        return False
    c, k = life.uses[0]
    return moves[c][k].times == 1


def may_stream(life: _Life, ops: Sequence[Op]) -> bool:
    """Whether ``life`` streams from its producer to its reader if that reader reads it once: one
    write, one read by the next op, not a batch-norm input."""
    if life.write is None or len(life.uses) != 1:
        return False
    (i, _), (c, k) = life.write, life.uses[0]
    return c == i + 1 and not (ops[c].layer_kind == "batchnorm" and ops[c].phase == "fwd" and k == 0)


class Span(NamedTuple):  # a named tuple: made for thousands of tensors per iteration
    """What holding a tensor on chip involves: the moves it would save DRAM traffic on (``touched``,
    its reads but an input's first and its write), the ops it is held over (``start`` to ``end``),
    its size, and the moves whose op would use it in place (``gives_back``: every read and the write)."""

    touched: tuple[tuple[int, int], ...]
    start: int
    end: int
    size: float
    gives_back: tuple[tuple[int, int], ...]


def span_of(life: _Life, inputs: frozenset[str], tensors: Mapping[str, Tensor]) -> Span | None:
    """The span of ``life`` if holding it could save anything (it is read, and not only by the
    first reader of an iteration input), else None."""
    uses = life.uses
    if not uses:
        return None
    if life.producer is None or life.root in inputs:  # an input: its first read stays
        first = uses[0][0]
        uses = [(i, j) for i, j in uses if i != first]
        if not uses:
            return None
    touched = (*uses, life.write) if life.write is not None else tuple(uses)
    start = life.producer if life.producer is not None else life.uses[0][0]
    back = (*life.uses, life.write) if life.write is not None else tuple(life.uses)
    return Span(touched, start, life.uses[-1][0], float(tensors[life.root].bytes), back)


def _resident(tensors, plans, moves, lives, inputs, target: Target, placements, place, names) -> None:
    pool = sum(b.size_bytes for b in target.buffers)
    free = np.array([pool - p.footprint_bytes for p in plans], dtype=np.float64)
    shared = len(target.buffers) == 1
    fill_pj = {s: target.buffer(target.streams[k]).pj_per_bit for k, s in enumerate(("ifmap", "filter", "ofmap"))}
    dram_pj = 8 * target.dram_pj_per_bit
    candidates = []
    for life in lives.values():
        span = span_of(life, inputs, tensors) if life.root not in placements else None
        if span is None:
            continue
        saved, pj = [], 0.0
        for i, j in span.touched:
            m = moves[i][j]
            if m.dram_bytes > 0:
                saved.append((i, j))
                pj += m.dram_bytes * dram_pj + (m.fill_bits * fill_pj[m.stream] if shared else 0.0)
        if not saved:
            continue
        candidates.append((pj / max(span.size * (span.end - span.start + 1), 1.0), life, saved, span))
    candidates.sort(key=lambda c: -c[0])
    offsets, where, amount = [0], [], []
    for *_, span in candidates:
        # an op reading it (or its producer) uses it in place: it needs no tile of it there
        for i, j in span.gives_back:
            where.append(i)
            amount.append(min(span.size, moves[i][j].tile_bytes))
        offsets.append(len(where))
    spans = [c[3] for c in candidates]
    held, tightest, room = KERNELS.hold_greedily(
        free, np.array([s.start for s in spans], np.int64), np.array([s.end for s in spans], np.int64),
        np.array([s.size for s in spans], np.float64), np.array(offsets, np.int64), np.array(where, np.int64),
        np.array(amount, np.float64),
    )  # fmt: skip
    for (_, life, saved, span), keep, worst, left in zip(candidates, held, tightest, room, strict=True):
        start, end, size = span.start, span.end, span.size
        if keep:
            for i, j in saved:
                m = moves[i][j]
                moves[i][j] = _settled(m, 0.0, 0.0 if shared else m.fill_bits, m.use_bits, m.times)
            place(life, "on_chip", f"held on chip from {names[start]} to {names[end]} ({size / 1024:.1f} KB)")
        else:
            place(life, "dram", f"needs {size / 1024:.1f} KB on chip from {names[start]} to {names[end]}; "
                  f"{max(left, 0) / 1024:.1f} KB free at {names[worst]}")  # fmt: skip
