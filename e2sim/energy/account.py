"""Energy accounting: op costs × energy per action -> joules per op, component, layer and phase.

Components: ``mac`` (PE-array multiply-accumulates), ``rf`` (PE register files / scratchpads),
``sram`` (on-chip buffers), ``dram`` (off-chip traffic), ``vector`` (element-wise ops; each is
priced as an add plus half a multiply at the vector unit's width, as a mix of adds, multiplies
and compares), ``static`` (static power × time).

Ops named in ``Arithmetic.approximate_ops`` run on the accelerator's approximate mode: their
multiplies cost the approximate multiplier's energy, and their on-chip dynamic energy (mac, rf,
sram, vector) scales with (V / V_nominal)²; DRAM and static energy are unchanged (the spec's
``clock_mhz`` and ``static_power_mw`` are taken as they are at that voltage).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from e2sim.counting import OpCounter
from e2sim.energy.tables import EnergyTable
from e2sim.graph.ir import Op, Tensor
from e2sim.hw.accelerator import Accelerator
from e2sim.hw.approximate import ApproximateMode
from e2sim.schedule.ops import STREAMS, OpCost, pe_operands, schedule_op

COMPONENTS = ("mac", "rf", "sram", "dram", "vector", "static")
PJ = 1e-12


@dataclass(frozen=True)
class Arithmetic:
    """Number formats that price the arithmetic: accumulator width, and which phases multiply in
    floating point (a phase is float when either of its GEMM operands has a float format)."""

    accumulator_bits: int
    float_phases: frozenset[str]
    approximate: ApproximateMode | None = None
    approximate_ops: frozenset[str] = frozenset()  # ops that run on the approximate mode


@dataclass(frozen=True)
class OpReport:
    op: Op
    runs: float  # times the op ran (1 for one nominal iteration)
    compute_scale: float  # executed work / one nominal execution (runs × executed fraction)
    data_scale: float  # runs × executed fraction, capped at 1 per run (extra work moves no extra data)
    macs: Mapping[str, float]  # executed MACs by operand widths
    cost: OpCost  # one nominal execution
    energy: Mapping[str, float]  # joules per component, all executions

    @property
    def compute_cycles(self) -> float:
        return self.cost.compute_cycles * self.compute_scale

    @property
    def stall_cycles(self) -> float:
        return self.cost.stall_cycles * self.data_scale

    @property
    def cycles(self) -> float:
        return self.compute_cycles + self.stall_cycles

    @property
    def energy_j(self) -> float:
        return sum(self.energy.values())


def _scales(op: Op, counter: OpCounter | None) -> tuple[float, float, float, dict[str, float] | None]:
    """(runs, compute scale, data scale, counted MACs by width) of ``op`` in ``counter``.

    The executed fraction of a run is its counted work (MACs, else element-wise ops) over the
    nominal work: below 1 when a policy skipped part of it (samples, channels), above 1 when it
    added work (a PSG predictor). Data movement follows the fraction only downwards."""
    if counter is None:
        return 1.0, 1.0, 1.0, None
    count = counter.ops.get(op.name)
    if count is None:
        return 0.0, 0.0, 0.0, {}
    runs = float(count.runs or count.calls)
    if not runs:
        return 0.0, 0.0, 0.0, {}
    if op.macs:
        fraction, macs = count.total_macs / (runs * op.macs), dict(count.macs)
    elif op.elementwise_ops:
        fraction, macs = count.elementwise_ops / (runs * op.elementwise_ops), None
    else:
        fraction, macs = 1.0, None
    return runs, runs * fraction, runs * min(fraction, 1.0), macs


def op_energy(op: Op, cost: OpCost, macs: Mapping[str, float], compute: float, data: float,
              hw: Accelerator, table: EnergyTable, arithmetic: Arithmetic) -> dict[str, float]:  # fmt: skip
    """Joules per component of ``compute``/``data`` nominal executions of ``op`` (see OpReport)."""
    floating = op.phase in arithmetic.float_phases
    mode = arithmetic.approximate if op.name in arithmetic.approximate_ops else None
    mac = 0.0
    for key, n in macs.items():  # each MAC runs on the unit its operands fit, in as many passes as needed
        (a_width, a_passes), (b_width, b_passes) = (hw.pe_array.executed_width(int(b)) for b in key.split("x"))
        if mode is None:
            per_mac = table.mac_pj(a_width, b_width, arithmetic.accumulator_bits, floating)
        else:
            per_mac = table.approx_mult_pj(a_width, b_width, mode.multiplier) + table.add_pj(
                arithmetic.accumulator_bits, False
            )
        mac += n * a_passes * b_passes * per_mac
    sram = 0.0
    for name, bits in cost.sram_bits.items():
        buffer = hw.buffers[name]
        sram += bits / buffer.word_bits * table.sram_pj(buffer.size_kb, buffer.word_bits)
    dram_bytes = sum(cost.dram_reads.values()) + sum(cost.dram_writes.values())
    v = hw.vector
    vector_pj = table.add_pj(v.bits, v.float) + table.mult_pj(v.bits, v.bits, v.float) / 2
    seconds = (cost.compute_cycles * compute + cost.stall_cycles * data) / (hw.clock_mhz * 1e6)
    dynamic = table.voltage_factor(mode.supply_voltage_v) if mode is not None else 1.0
    return {
        "mac": mac * dynamic * PJ,
        "rf": table.rf_pj(cost.rf_bits) * compute * dynamic * PJ,
        "sram": sram * data * dynamic * PJ,
        "dram": dram_bytes * 8 * table.dram_pj_per_bit(hw.dram.type) * data * PJ,
        "vector": op.elementwise_ops * vector_pj * compute * dynamic * PJ,
        "static": hw.static_power_mw * 1e-3 * seconds,
    }


def account(
    ops: Sequence[Op], tensors: Mapping[str, Tensor], hw: Accelerator, table: EnergyTable, arithmetic: Arithmetic,
    counter: OpCounter | None = None,
) -> list[OpReport]:  # fmt: skip
    """Schedule and price every op; with ``counter`` (what a training run executed) each op is
    priced as many times as it ran, with its counted MACs (skipped work is not priced)."""
    reports = []
    for op in ops:
        runs, compute, data, counted = _scales(op, counter)
        cost = schedule_op(op, tensors, hw, arithmetic.accumulator_bits)
        if counted is None:
            if op.macs:
                o = pe_operands(op, tensors)
                counted = {f"{o.a.bits}x{o.b.bits}": op.macs * compute}
            else:
                counted = {}
        energy = op_energy(op, cost, counted, compute, data, hw, table, arithmetic)
        reports.append(OpReport(op, runs, compute, data, counted, cost, energy))
    return reports


def operand_tensors(op: Op, tensors: Mapping[str, Tensor]) -> dict[str, str]:
    """Which tensor each stream carries (ifmap, filter, ofmap) for PE-array ops."""
    if op.kind not in ("conv", "gemm"):
        return {}
    o = pe_operands(op, tensors)
    return dict(zip(STREAMS, (o.a.name, o.b.name, o.out.name), strict=True))
