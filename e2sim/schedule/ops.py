"""Schedule the ops of a training iteration on an accelerator, one :class:`OpCost` per op.

PE-array ops (conv and GEMM, forward and backward) are priced through the GEMM each one is
equivalent to (``op.gemm``) on a systolic array, or through the conv geometry on a row-stationary
array; operands wider than the array's widest MAC unit take several passes (``mac_passes``).
Element-wise ops run on the vector unit (``lanes`` ops per cycle). Every op reads its inputs from
DRAM and writes its outputs back (layer-by-layer execution, no residency between ops); aliases
move nothing. SRAM bandwidth beyond ``bandwidth_bytes_per_cycle`` and DRAM bandwidth beyond the
compute time both show up as stall cycles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from e2sim.graph.ir import Op, Tensor
from e2sim.hw.accelerator import Accelerator
from e2sim.schedule.memory import buffer_of, gemm_dram_traffic, streaming_tiles, timeline
from e2sim.schedule.rowstationary import row_stationary_cost
from e2sim.schedule.systolic import systolic_cost

STREAMS = ("ifmap", "filter", "ofmap")


@dataclass(frozen=True)
class OpCost:
    """Cycles and accesses of one op. SRAM counts are elements per operand stream; ``sram_bits``
    are bits moved per buffer (what energy prices); DRAM counts are bytes per stream."""

    compute_cycles: float
    stall_cycles: float
    sram_reads: Mapping[str, float] = field(default_factory=dict)
    sram_writes: Mapping[str, float] = field(default_factory=dict)
    sram_bits: Mapping[str, float] = field(default_factory=dict)
    dram_reads: Mapping[str, float] = field(default_factory=dict)
    dram_writes: Mapping[str, float] = field(default_factory=dict)
    rf_bits: float = 0.0

    @property
    def cycles(self) -> float:
        return self.compute_cycles + self.stall_cycles


@dataclass(frozen=True)
class Operands:
    """The tensors a PE-array op streams as A (ifmap), B (filter) and its output (ofmap)."""

    a: Tensor
    b: Tensor
    out: Tensor


def pe_operands(op: Op, tensors: Mapping[str, Tensor]) -> Operands:
    """fwd: A = input activations, B = weights; bwd_data: A = output error, B = weights;
    bwd_weight: A = output error, B = input activations (im2col)."""
    first, second = (tensors[name] for name in op.reads[:2])
    if op.phase == "bwd_weight":
        first, second = second, first
    return Operands(first, second, tensors[op.writes[0]])


def schedule_op(op: Op, tensors: Mapping[str, Tensor], hw: Accelerator, accumulator_bits: int) -> OpCost:
    if op.kind == "load":
        return _load(op, tensors, hw)
    if op.kind in ("conv", "gemm") and op.gemm is not None:
        if hw.pe_array.dataflow == "rs":
            return _row_stationary(op, tensors, hw, accumulator_bits)
        return _systolic(op, tensors, hw, accumulator_bits)
    return _streaming(op, tensors, hw)


def _sram_stall(hw: Accelerator, stream_bytes: Mapping[str, float], compute: float) -> float:
    """Extra cycles when a buffer cannot deliver its stream's bytes within the compute time."""
    need = {}
    for stream, nbytes in stream_bytes.items():
        buffer = buffer_of(hw, stream)
        need[id(buffer)] = need.get(id(buffer), 0.0) + nbytes / buffer.bandwidth_bytes_per_cycle
    return max(0.0, max(need.values(), default=0.0) - compute)


def _finish(hw, compute, reads_elems, writes_elems, bits, traffic, tiles, rf_bits) -> OpCost:
    """Timeline and SRAM bandwidth on top of the compute cycles."""
    sram_bits = {}
    stream_bytes = {}
    for stream in STREAMS:
        moved = (reads_elems.get(stream, 0) + writes_elems.get(stream, 0)) * bits[stream]
        if moved:
            key = "global" if hw.has_global_buffer else stream
            sram_bits[key] = sram_bits.get(key, 0.0) + moved
            stream_bytes[stream] = moved / 8
    dram_in = traffic["ifmap"] + traffic["filter"] + traffic.get("ofmap_reads", 0.0)
    dram_out = traffic.get("ofmap_writes", 0.0)
    total, dma_stall = timeline(compute, dram_in, dram_out, tiles, hw.dram_bytes_per_cycle)
    stall = max(dma_stall, _sram_stall(hw, stream_bytes, compute))
    return OpCost(
        compute_cycles=float(compute),
        stall_cycles=float(stall),
        sram_reads=dict(reads_elems),
        sram_writes=dict(writes_elems),
        sram_bits=sram_bits,
        dram_reads={"ifmap": traffic["ifmap"], "filter": traffic["filter"], "ofmap": traffic.get("ofmap_reads", 0.0)},
        dram_writes={"ofmap": dram_out},
        rf_bits=rf_bits,
    )


def _systolic(op: Op, tensors, hw: Accelerator, accumulator_bits: int) -> OpCost:
    pe = hw.pe_array
    g = op.gemm
    cost = systolic_cost(pe.dataflow, pe.rows, pe.cols, g.m, g.n, g.k)
    o = pe_operands(op, tensors)
    psum_bytes = accumulator_bits / 8
    traffic = gemm_dram_traffic(hw, pe.dataflow, cost.row_folds, cost.col_folds, g.m, g.n, g.k,
                                o.a.bytes, o.b.bytes, o.out.bytes, psum_bytes)  # fmt: skip
    # partial sums read back on chip when the reduction spans several folds (ws and is)
    reduction_folds = cost.row_folds if pe.dataflow in ("ws", "is") else 1
    compute = cost.compute_cycles * pe.mac_passes(o.a.bits, o.b.bits)
    reads = {"ifmap": cost.ifmap_reads, "filter": cost.filter_reads, "ofmap": (reduction_folds - 1) * g.m * g.n}
    writes = {"ofmap": cost.ofmap_writes}
    bits = {"ifmap": o.a.bits, "filter": o.b.bits, "ofmap": accumulator_bits}
    rf_bits = op.macs * (o.a.bits + o.b.bits + accumulator_bits)  # pipeline registers: each operand and psum once
    return _finish(hw, compute, reads, writes, bits,
                   {"ifmap": traffic.ifmap_reads, "filter": traffic.filter_reads,
                    "ofmap_reads": traffic.ofmap_reads, "ofmap_writes": traffic.ofmap_writes},
                   traffic.tiles, rf_bits)  # fmt: skip


def _row_stationary(op: Op, tensors, hw: Accelerator, accumulator_bits: int) -> OpCost:
    pe = hw.pe_array
    o = pe_operands(op, tensors)
    g = op.conv
    if op.kind == "conv" and op.phase == "fwd":
        shape = (g.n, g.k, g.c, g.h + 2 * g.pad_h, g.w + 2 * g.pad_w, g.p, g.q, g.r, g.s)
    elif op.kind == "conv" and op.phase == "bwd_data":  # transposed conv: K channels in, C out
        shape = (g.n, g.c, g.k, g.p, g.q, g.h, g.w, g.r, g.s)
    else:  # a GEMM as independent dot products: M output rows, K-long reduction, N filters
        shape = (1, op.gemm.n, op.gemm.k, op.gemm.m, 1, op.gemm.m, 1, 1, 1)
    n, k, c, h, w, p, q, r, s = shape
    cost = row_stationary_cost(pe.rows, pe.cols, pe.rf_bytes, n, k, c, h, w, p, q, r, s,
                               o.b.bits, o.a.bits, accumulator_bits)  # fmt: skip
    scale = op.macs / max(n * k * c * p * q * r * s, 1)  # a strided transposed conv skips the zeros
    compute = math.ceil(cost.compute_cycles * scale) * pe.mac_passes(o.a.bits, o.b.bits)
    reads = {"ifmap": cost.input_reads * scale, "filter": cost.filter_reads * scale, "ofmap": cost.psum_reads * scale}
    writes = {"ofmap": cost.psum_writes * scale}
    bits = {"ifmap": o.a.bits, "filter": o.b.bits, "ofmap": accumulator_bits}
    extra_passes = cost.psum_writes / max(n * k * p * q, 1)
    spill = o.out.numel * accumulator_bits / 8 * (extra_passes - 1)
    traffic = {"ifmap": o.a.bytes, "filter": o.b.bytes, "ofmap_reads": 0.0, "ofmap_writes": o.out.bytes}
    if spill > 0 and o.out.numel * accumulator_bits / 8 > buffer_of(hw, "ofmap").size_bytes / 2:
        traffic["ofmap_reads"], traffic["ofmap_writes"] = spill, o.out.bytes + spill
    tiles = streaming_tiles(hw, o.a.bytes + o.b.bytes)
    rf_bits = op.macs * (o.a.bits + o.b.bits + 2 * accumulator_bits)  # scratchpads: psum read-modify-write
    return _finish(hw, compute, reads, writes, bits, traffic, tiles, rf_bits)


def _streaming(op: Op, tensors: Mapping[str, Tensor], hw: Accelerator) -> OpCost:
    """Element-wise ops on the vector unit, and data-movement ops (no arithmetic)."""
    written = [tensors[t] for t in op.writes if tensors[t].alias_of is None]
    if not written:  # e.g. a residual add's backward: the gradient is passed on, nothing moves
        return OpCost(0.0, 0.0)
    read = [tensors[t] for t in op.reads]
    in_bytes = sum(t.bytes for t in read)
    out_bytes = sum(t.bytes for t in written)
    compute = math.ceil(op.elementwise_ops / hw.vector.lanes)
    reads = {"ifmap": sum(t.numel for t in read)}
    writes = {"ofmap": sum(t.numel for t in written)}
    read_bits = in_bytes * 8 / max(reads["ifmap"], 1)
    write_bits = out_bytes * 8 / max(writes["ofmap"], 1)
    bits = {"ifmap": read_bits, "filter": 0, "ofmap": write_bits}
    tiles = streaming_tiles(hw, in_bytes)
    traffic = {"ifmap": in_bytes, "filter": 0.0, "ofmap_reads": 0.0, "ofmap_writes": out_bytes}
    return _finish(hw, compute, reads, writes, bits, traffic, tiles, 0.0)


def _load(op: Op, tensors: Mapping[str, Tensor], hw: Accelerator) -> OpCost:
    """A batch fetched from DRAM into the ifmap buffer and not used (a dropped iteration)."""
    read = [tensors[t] for t in op.reads]
    nbytes = sum(t.bytes for t in read)
    elements = sum(t.numel for t in read)
    bits = {"ifmap": nbytes * 8 / max(elements, 1), "filter": 0, "ofmap": 0}
    traffic = {"ifmap": nbytes, "filter": 0.0}
    return _finish(hw, 0, {}, {"ifmap": elements}, bits, traffic, streaming_tiles(hw, nbytes), 0.0)
