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

import numpy as np

from e2sim.graph.ir import Op, Tensor
from e2sim.schedule.ops import OpPlan, TensorMove, _times_read
from e2sim.schedule.target import Target


@dataclass(frozen=True)
class Placement:
    """Where a tensor lived during the iteration and why."""

    tensor: str
    bytes: int
    placement: str  # dram | on_chip | streamed
    reason: str
    producer: str | None
    consumers: tuple[str, ...]


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
    lives: dict[str, _Life] = {}

    def root(name: str) -> str:
        return tensors[name].alias_of or name

    for i, plan in enumerate(plans):
        for j, move in enumerate(plan.moves):
            name = root(move.tensor)
            life = lives.get(name)
            if life is None:
                life = lives[name] = _Life(name)
            if move.write:  # a tensor read before it is written is state: the write goes back to DRAM
                if life.producer is None and not life.uses:
                    life.producer, life.write = i, (i, j)
            elif life.producer is None or life.producer < i:
                life.uses.append((i, j))
    placements: dict[str, Placement] = {}
    names = [op.name for op in ops]

    def place(life: _Life, where: str, reason: str) -> None:
        t = tensors[life.root]
        producer = names[life.producer] if life.producer is not None else None
        placements[life.root] = Placement(life.root, t.bytes, where, reason, producer,
                                          tuple(dict.fromkeys(names[i] for i, _ in life.uses)))  # fmt: skip

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


def _settled(m: TensorMove, dram_bytes: float, fill_bits: float, use_bits: float, times: float) -> TensorMove:
    """``m`` with new traffic (built directly: this runs for thousands of moves per iteration)."""
    return TensorMove(m.tensor, m.stream, m.write, dram_bytes, fill_bits, use_bits, times, m.tile_bytes)


def _streams(life: _Life, ops: Sequence[Op], moves) -> bool:
    if life.write is None or len(life.uses) != 1:
        return False
    (i, _), (c, k) = life.write, life.uses[0]
    return c == i + 1 and moves[c][k].times == 1 and not (ops[c].layer_kind == "batchnorm" and ops[c].phase == "fwd"
                                                           and k == 0)  # fmt: skip


def _resident(tensors, plans, moves, lives, inputs, target: Target, placements, place, names) -> None:
    pool = sum(b.size_bytes for b in target.buffers)
    free = np.array([pool - p.footprint_bytes for p in plans], dtype=np.float64)
    shared = len(target.buffers) == 1
    fill_pj = {s: target.buffer(target.streams[k]).pj_per_bit for k, s in enumerate(("ifmap", "filter", "ofmap"))}
    candidates = []
    for life in lives.values():
        if life.root in placements or not life.uses:
            continue
        is_input = life.root in inputs or life.producer is None
        uses = life.uses[1:] if is_input else life.uses
        if not uses or (is_input and len({i for i, _ in life.uses}) < 2):
            continue
        saved = [(i, j) for i, j in uses if moves[i][j].dram_bytes > 0] + (
            [life.write] if life.write is not None and moves[life.write[0]][life.write[1]].dram_bytes > 0 else [])
        if not saved:
            continue
        pj = sum(moves[i][j].dram_bytes * 8 * target.dram_pj_per_bit
                 + (moves[i][j].fill_bits * fill_pj[moves[i][j].stream] if shared else 0.0)
                 for i, j in saved)  # fmt: skip
        start = life.producer if life.producer is not None else life.uses[0][0]
        end = life.uses[-1][0]
        size = float(tensors[life.root].bytes)
        candidates.append((pj / max(size * (end - start + 1), 1.0), life, start, end, size, saved))
    candidates.sort(key=lambda c: -c[0])
    peak = float(free.max())  # no op has more room than this (it only shrinks as tensors are placed)
    for _, life, start, end, size, saved in candidates:
        reclaim = max([moves[i][j].tile_bytes for i, j in life.uses] + (
            [moves[life.write[0]][life.write[1]].tile_bytes] if life.write is not None else []))  # fmt: skip
        if size - reclaim > peak:  # cannot fit anywhere: no need to look op by op
            place(life, "dram", f"needs {size / 1024:.1f} KB on chip from {names[start]} to {names[end]}; "
                  f"at most {max(peak, 0) / 1024:.1f} KB is free at any op")  # fmt: skip
            continue
        need = np.full(end - start + 1, size)
        for i, j in life.uses:  # an op reading it in place needs no tile of it
            if start <= i <= end:
                need[i - start] = max(0.0, need[i - start] - moves[i][j].tile_bytes)
        if life.write is not None:
            need[0] = max(0.0, need[0] - moves[life.write[0]][life.write[1]].tile_bytes)
        window = free[start : end + 1]
        if np.all(need <= window):
            window -= need
            peak = float(free.max())
            for i, j in saved:
                m = moves[i][j]
                moves[i][j] = _settled(m, 0.0, 0.0 if shared else m.fill_bits, m.use_bits, m.times)
            place(life, "on_chip", f"held on chip from {names[start]} to {names[end]} ({size / 1024:.1f} KB)")
        else:
            worst = int(np.argmin(window - need))
            place(life, "dram", f"needs {size / 1024:.1f} KB on chip from {names[start]} to {names[end]}; "
                  f"{max(window[worst], 0) / 1024:.1f} KB free at {names[start + worst]}")  # fmt: skip
