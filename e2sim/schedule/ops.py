"""Schedule the ops of a training iteration on an accelerator.

:func:`plan_op` says how one op moves each of its tensors: PE-array ops (conv and GEMM, every
phase) through the mapping of their loop nest (``mapper.py``), element-wise ops streaming through
the vector unit, a dropped batch's load as a DMA. :mod:`e2sim.schedule.residency` then decides,
for the iteration as a whole, which tensors never leave the chip, and :func:`finish_op` turns the
resulting moves into an :class:`OpCost` with the DMA/compute timeline and SRAM-bandwidth stalls.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from e2sim.graph.ir import Op, Tensor
from e2sim.hw.accelerator import Accelerator, PEArray
from e2sim.schedule.mapper import Mapping as NestMapping
from e2sim.schedule.mapper import MappingError, structure, timeline
from e2sim.schedule.nest import LoopNest, nest_of
from e2sim.schedule.rowstationary import map_row_stationary
from e2sim.schedule.systolic import map_systolic
from e2sim.schedule.target import Target

STREAMS = ("ifmap", "filter", "ofmap")
STAGING_BYTES = 4096  # an element-wise op streams each operand through tiles of this size (an assumption)


@dataclass(frozen=True)
class TensorMove:
    """How one op moves one tensor: DRAM bytes (re-fetches included), the buffer accesses that
    fill it from DRAM or drain it to DRAM (bits), and the accesses of the datapath that uses it
    (bits). ``times``: how often the op fetches it (1: once)."""

    tensor: str
    stream: str  # ifmap, filter, ofmap (which buffer: the global one when there is one)
    write: bool
    dram_bytes: float
    fill_bits: float
    use_bits: float
    times: float = 1.0
    tile_bytes: float = 0.0  # buffer space the op gives this tensor's tiles (freed if the tensor is resident)


@dataclass(frozen=True)
class OpPlan:
    """One op before the iteration-level plan: its compute, its tensor moves, what it needs on
    chip, and (PE-array ops) its loop nest and mapping."""

    compute_cycles: float
    moves: tuple[TensorMove, ...]
    footprint_bytes: float
    tiles: int
    psum_bytes: tuple[float, float] = (0.0, 0.0)  # partial sums spilled to DRAM and read back
    psum_bits: float = 0.0  # buffer accesses of those spills and of on-chip accumulation
    sram_reads: Mapping[str, float] = field(default_factory=dict)  # datapath reads, elements per stream
    sram_writes: Mapping[str, float] = field(default_factory=dict)
    rf_bits: float = 0.0
    noc_bits: float = 0.0
    hop_bits: float = 0.0
    nest: LoopNest | None = None
    mapping: NestMapping | None = None


@dataclass(frozen=True)
class OpCost:
    """Cycles and accesses of one op. ``sram_reads``/``sram_writes`` are the datapath's accesses
    in elements per stream (SCALE-Sim's counts on systolic arrays); ``sram_bits`` every bit
    moved per buffer (fills and drains included: what energy prices); DRAM in bytes per stream."""

    compute_cycles: float
    stall_cycles: float
    sram_reads: Mapping[str, float] = field(default_factory=dict)
    sram_writes: Mapping[str, float] = field(default_factory=dict)
    sram_bits: Mapping[str, float] = field(default_factory=dict)
    dram_reads: Mapping[str, float] = field(default_factory=dict)
    dram_writes: Mapping[str, float] = field(default_factory=dict)
    rf_bits: float = 0.0
    noc_bits: float = 0.0
    hop_bits: float = 0.0
    moves: tuple[TensorMove, ...] = ()
    mapping: NestMapping | None = None
    nest: LoopNest | None = None

    @property
    def cycles(self) -> float:
        return self.compute_cycles + self.stall_cycles

    @property
    def dram_bytes(self) -> float:
        return sum(self.dram_reads.values()) + sum(self.dram_writes.values())


class MappingCache:
    """Chosen mappings by (loop nest, target), the oldest forgotten beyond ``size``."""

    def __init__(self, size: int = 16384):
        self.size, self.hits, self._found = size, 0, {}

    def get(self, key: tuple[LoopNest, Target]) -> NestMapping | None:
        found = self._found.get(key)
        self.hits += found is not None
        return found

    def put(self, key: tuple[LoopNest, Target], mapping: NestMapping) -> None:
        if len(self._found) >= self.size:
            del self._found[next(iter(self._found))]
        self._found[key] = mapping

    def __contains__(self, key: tuple[LoopNest, Target]) -> bool:
        return key in self._found

    def clear(self) -> None:
        self.hits, self._found = 0, {}


MAPPINGS = MappingCache()
BATCH_TARGETS = 64  # targets searched together at most (arrays of targets × candidate tiles)


def map_nest(nest: LoopNest, target: Target) -> NestMapping:
    """The best mapping of ``nest`` on ``target`` (cached by both)."""
    found = MAPPINGS.get((nest, target))
    if found is None:
        if target.dataflow == "rs":
            found = map_row_stationary(nest, target)
        else:
            (found,) = map_systolic(nest, [target])
            if isinstance(found, MappingError):
                raise found
        MAPPINGS.put((nest, target), found)
    return found


def map_nests(nests: Iterable[LoopNest], targets: Iterable[Target]) -> None:
    """Map every nest on every target ahead of pricing, into the cache :func:`map_nest` reads.
    Systolic targets of one structure are searched together (arrays over targets and candidate
    tiles, the tiles and the array's work shared); row stationary chooses its processing passes
    by each target's energies, so those are mapped one by one. A nest that fits no tile of a
    target is left out (pricing that point reports it)."""
    groups: dict[tuple, list[Target]] = {}
    for target in dict.fromkeys(targets):
        groups.setdefault(structure(target), []).append(target)
    for nest in dict.fromkeys(nests):
        for members in groups.values():
            todo = [t for t in members if (nest, t) not in MAPPINGS]
            if todo and todo[0].dataflow == "rs":
                for target in todo:
                    with contextlib.suppress(MappingError):  # pricing the point reports it
                        map_nest(nest, target)
                continue
            for start in range(0, len(todo), BATCH_TARGETS):
                part = todo[start : start + BATCH_TARGETS]
                for target, found in zip(part, map_systolic(nest, part), strict=True):
                    if not isinstance(found, MappingError):
                        MAPPINGS.put((nest, target), found)


def on_array(op: Op) -> bool:
    """Whether ``op`` runs on the PE array (conv and GEMM ops, every phase)."""
    return op.kind in ("conv", "gemm") and op.gemm is not None


def array_nests(ops: Iterable[Op], tensors: Mapping[str, Tensor], accumulator_bits: int) -> list[LoopNest]:
    """The loop nests of the PE-array ops among ``ops`` (what :func:`map_nests` maps)."""
    return [nest_of(op, {name: tensors[name] for name in (*op.reads, *op.writes)}, accumulator_bits)
            for op in ops if on_array(op)]  # fmt: skip


def plan_op(op: Op, tensors: Mapping[str, Tensor], hw: Accelerator, target: Target, accumulator_bits: int) -> OpPlan:
    """How ``op`` moves its tensors on its own (cached by the op, its tensors and the hardware it uses)."""
    used = tuple(tensors[name] for name in (*op.reads, *op.writes))
    if on_array(op):
        return _planned(op, used, target, accumulator_bits, hw.pe_array, 0)
    return _planned(op, used, None, 0, None, hw.vector.lanes)


@lru_cache(maxsize=65536)
def _planned(op: Op, used: tuple[Tensor, ...], target: Target | None, accumulator_bits: int, pe: PEArray | None,
             lanes: int) -> OpPlan:  # fmt: skip
    tensors = {t.name: t for t in used}
    if op.kind == "load":
        return _load(op, tensors)
    if target is not None:
        return _pe_array(op, tensors, pe, target, accumulator_bits)
    return _streaming(op, tensors, lanes)


def _pe_array(op: Op, tensors, pe: PEArray, target: Target, accumulator_bits: int) -> OpPlan:
    """One group's nest mapped on the array (see :func:`array_plan`)."""
    nest = nest_of(op, tensors, accumulator_bits)
    return array_plan(op, tensors, nest, pe.mac_passes(nest.a_bits, nest.b_bits), map_nest(nest, target))


def array_plan(op: Op, tensors, nest: LoopNest, passes, m) -> OpPlan:
    """The plan of a PE-array op whose nest has mapping ``m`` and whose MACs take ``passes`` passes
    through the multipliers. A grouped op runs its groups one after the other, each on its own
    slices of the operands, so every count is one group's times the number of groups (the buffer
    space is one group's). ``m`` may also hold a mapping's numbers as arrays over design points
    (and ``passes`` an array): the plan's numbers are then those arrays, by the same arithmetic."""
    groups = op.gemm.groups  # independent copies of the nest (a grouped convolution)
    first, second = (tensors[name] for name in op.reads[:2])
    if op.phase == "bwd_weight":
        first, second = second, first
    out = tensors[op.writes[0]]
    a_read, b_read, psum_read = (groups * v for v in m.dram_read_bytes)
    final = groups * nest.elements(nest.kinds[2]) * nest.out_bits / 8
    psum_write = groups * m.dram_write_bytes - final
    tile = m.footprint_bytes
    reads = [groups * v for v in m.buffer_reads]
    moves = [
        TensorMove(first.name, "ifmap", False, a_read, a_read * 8, reads[0], m.refetch[0], tile[0]),
        TensorMove(second.name, "filter", False, b_read, b_read * 8, reads[1], m.refetch[1], tile[1]),
        TensorMove(out.name, "ofmap", True, final, final * 8, 0.0, 1.0, tile[2]),
    ]
    for extra in (tensors[name] for name in op.writes[1:]):  # a bias gradient, summed as the op runs
        moves.append(TensorMove(extra.name, "ofmap", True, extra.bytes, extra.bytes * 8, extra.bytes * 8))
    writes = groups * m.buffer_writes[2]
    psum_bits = reads[2] + writes - final * 8  # accumulation and spills, on chip
    bits = (nest.a_bits, nest.b_bits, nest.acc_bits)
    return OpPlan(
        compute_cycles=groups * m.compute_cycles * passes, moves=tuple(moves), footprint_bytes=sum(m.footprint_bytes),
        tiles=groups * m.tiles, psum_bytes=(psum_write, psum_read), psum_bits=psum_bits,
        sram_reads={"ifmap": reads[0] / bits[0], "filter": reads[1] / bits[1],
                    "ofmap": (reads[2] - final * 8) / bits[2]},
        sram_writes={"ofmap": (writes - psum_read * 8) / bits[2]},
        rf_bits=groups * m.rf_bits, noc_bits=groups * m.noc_bits, hop_bits=groups * m.hop_bits, nest=nest,
        mapping=m if isinstance(m, NestMapping) else None,
    )  # fmt: skip


def _times_read(op: Op) -> int:
    """Passes an element-wise op makes over its main input: training batch norm reads x once for
    the batch statistics and once to normalise (the residency plan removes the first pass when the
    statistics are gathered in the producer's epilogue)."""
    return 2 if op.layer_kind == "batchnorm" and op.phase == "fwd" and len(op.writes) > 2 else 1


def _streaming(op: Op, tensors: Mapping[str, Tensor], lanes: int) -> OpPlan:
    """Element-wise ops on the vector unit (``lanes`` ops per cycle), and data-movement ops."""
    written = [tensors[t] for t in op.writes if tensors[t].alias_of is None]
    if not written:  # e.g. a residual add's backward: the gradient is passed on, nothing moves
        return OpPlan(0.0, (), 0.0, 1)
    read = [tensors[t] for t in op.reads]
    passes = [_times_read(op) if i == 0 else 1 for i in range(len(read))]
    stage = 2 * STAGING_BYTES
    moves = [TensorMove(t.name, "ifmap", False, t.bytes * n, t.bytes * 8 * n, t.bytes * 8 * n, n, min(t.bytes, stage))
             for t, n in zip(read, passes, strict=True)]  # fmt: skip
    moves += [TensorMove(t.name, "ofmap", True, t.bytes, t.bytes * 8, t.bytes * 8, 1.0, min(t.bytes, stage))
              for t in written]  # fmt: skip
    in_bytes = sum(m.dram_bytes for m in moves if not m.write)
    staged = sum(m.tile_bytes for m in moves)
    return OpPlan(
        compute_cycles=float(math.ceil(op.elementwise_ops / lanes)), moves=tuple(moves), footprint_bytes=staged,
        tiles=max(1, math.ceil(in_bytes / STAGING_BYTES)),
        sram_reads={"ifmap": float(sum(t.numel * n for t, n in zip(read, passes, strict=True)))},
        sram_writes={"ofmap": float(sum(t.numel for t in written))},
    )  # fmt: skip


def _load(op: Op, tensors: Mapping[str, Tensor]) -> OpPlan:
    """A batch fetched from DRAM into the ifmap buffer and not used (a dropped iteration)."""
    moves = tuple(TensorMove(t, "ifmap", False, tensors[t].bytes, tensors[t].bytes * 8, 0.0) for t in op.reads)
    nbytes = sum(m.dram_bytes for m in moves)
    return OpPlan(0.0, moves, min(nbytes, 2 * STAGING_BYTES), max(1, math.ceil(nbytes / STAGING_BYTES)),
                  sram_writes={"ifmap": float(sum(tensors[t].numel for t in op.reads))})  # fmt: skip


def finish_op(plan: OpPlan, moves: tuple[TensorMove, ...], hw: Accelerator, target: Target) -> OpCost:
    """The op's cost once the iteration plan settled its moves: DRAM bytes per stream, every buffer
    access in bits, and stalls from the DMA timeline and the buffers' bandwidth."""
    dram_in = {"ifmap": 0.0, "filter": 0.0, "ofmap": plan.psum_bytes[1]}
    dram_out = plan.psum_bytes[0]
    buffer_bits: dict[str, float] = {}
    names = dict(zip(STREAMS, target.streams, strict=True))
    for move in moves:
        if move.write:
            dram_out += move.dram_bytes
        else:
            dram_in[move.stream] += move.dram_bytes
        key = names[move.stream]
        buffer_bits[key] = buffer_bits.get(key, 0.0) + move.fill_bits + move.use_bits
    if plan.psum_bits:
        buffer_bits[names["ofmap"]] = buffer_bits.get(names["ofmap"], 0.0) + plan.psum_bits
    compute = plan.compute_cycles
    total = timeline(compute, dram_in["ifmap"] + dram_in["filter"] + dram_in["ofmap"], dram_out, plan.tiles, target)
    sram = max((bits / 8 / target.buffer(name).bytes_per_cycle for name, bits in buffer_bits.items()), default=0.0)
    return OpCost(
        compute_cycles=compute, stall_cycles=max(max(total, sram) - compute, 0.0), sram_reads=plan.sram_reads,
        sram_writes=plan.sram_writes, sram_bits=buffer_bits, dram_reads=dram_in, dram_writes={"ofmap": dram_out},
        rf_bits=plan.rf_bits, noc_bits=plan.noc_bits, hop_bits=plan.hop_bits, moves=moves, mapping=plan.mapping,
        nest=plan.nest,
    )  # fmt: skip
