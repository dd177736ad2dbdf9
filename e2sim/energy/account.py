"""Energy accounting: op costs × energy per action -> joules per op, component, layer and phase.

Components: ``mac`` (PE-array multiply-accumulates), ``rf`` (PE register files / scratchpads),
``noc`` (row stationary: values delivered over the array's networks and partial sums passed
between PEs), ``sram`` (on-chip buffers: the datapath's accesses, fills from DRAM and drains to
it), ``dram`` (off-chip traffic), ``vector`` (element-wise ops; each is priced as an add plus half
a multiply at the vector unit's width, as a mix of adds, multiplies and compares), ``clock`` (the
clock tree and control of every PE, every cycle) and ``static`` (static power × time).
Pricing counts actions per op (:mod:`e2sim.energy.actions`); joules are counts × prices.

On-chip dynamic energy (mac, rf, noc, sram, vector, clock) scales with (V / V_nominal)² at the
spec's ``supply_voltage_v``. Ops named in ``Arithmetic.approximate_ops`` run on the accelerator's
approximate mode: their multiplies cost the approximate multiplier's energy and their on-chip
dynamic energy scales to the mode's voltage; DRAM and static energy are unchanged (the spec's
``clock_mhz`` and ``static_power_mw`` are taken as they are at that voltage).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from e2sim.counting import OpCounter
from e2sim.energy.actions import Action, Arithmetic, Prices, energy_of, supply_factor
from e2sim.energy.parameters import price_gradients
from e2sim.energy.sparsity import TensorSparsity, storage_ratio, tensor_sparsity, zero_operand_macs
from e2sim.energy.tables import EnergyTable
from e2sim.graph.ir import Op, Tensor, TrainingGraph
from e2sim.hw.accelerator import Accelerator
from e2sim.schedule.ops import STREAMS, OpCost, finish_op, plan_op
from e2sim.schedule.residency import Placement, plan_iteration
from e2sim.schedule.target import BufferLevel, Target


@dataclass(frozen=True)
class OpReport:
    op: Op
    runs: float  # times the op ran (1 for one nominal iteration)
    compute_scale: float  # executed work / one nominal execution (runs × executed fraction)
    data_scale: float  # runs × executed fraction, capped at 1 per run (extra work moves no extra data)
    macs: Mapping[str, float]  # executed MACs by operand widths
    cost: OpCost  # one nominal execution
    energy: Mapping[str, float]  # joules per component, all executions
    zero_macs: float = 0.0  # executed MACs with a zero operand (counted, or from stated densities)
    zero_fractions: Mapping[str, float] = field(default_factory=dict)  # measured per operand
    actions: Mapping[Action, float] = field(default_factory=dict)  # action counts, all executions (energy's basis)

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


class CountError(RuntimeError):
    """Counted work and the priced graph disagree: a counted op the graph does not have, or an op
    that should have run and has no count (a kernel recording under the wrong name)."""


def check_counts(graph: TrainingGraph, counter: OpCounter, expect_all: bool) -> None:
    """Every counted op is an op of ``graph``; with ``expect_all`` (a run that executed
    iterations) every op but the optional ones was counted."""
    names = {op.name for op in graph.ops}
    unknown = [name for name in counter.ops if name not in names]
    if unknown:
        more = " and more" if len(unknown) > 5 else ""
        raise CountError(f"{graph.workload}: work was counted under {', '.join(unknown[:5])}{more}, which the "
                         "priced graph does not have")  # fmt: skip
    if expect_all:
        missing = [op.name for op in graph.ops if op.name not in graph.optional and op.name not in counter.ops]
        if missing:
            more = " and more" if len(missing) > 5 else ""
            raise CountError(f"{graph.workload}: ops {', '.join(missing[:5])}{more} of the priced graph never ran "
                             "(no count)")  # fmt: skip


def _scales(op: Op, counter: OpCounter | None) -> tuple[float, float, float, dict[str, float] | None]:
    """(runs, compute scale, data scale, counted MACs by width) of ``op`` in ``counter``.

    The executed fraction of a run is its counted work (MACs, else element-wise ops) over the
    nominal work: below 1 when a policy skipped part of it (samples, channels), above 1 when it
    added work (a predictor of the gradient). Data movement follows the fraction only downwards."""
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


def _fixed(approximate: bool) -> tuple[Action, ...]:
    return (Action("rf", "bit", "", approximate), Action("noc", "bit", "", approximate),
            Action("noc", "hop-bit", "", approximate), Action("vector", "op", "", approximate),
            Action("clock", "pe-cycle", "", approximate))  # fmt: skip


FIXED = {False: _fixed(False), True: _fixed(True)}
DRAM_BIT, STATIC_CYCLE = Action("dram", "bit"), Action("static", "cycle")
_NAMED: dict[tuple, Action] = {}  # MAC and SRAM actions, made once


def _named(component: str, what: str, detail: str, approximate: bool) -> Action:
    key = (component, what, detail, approximate)
    found = _NAMED.get(key)
    if found is None:
        found = _NAMED[key] = Action(component, what, detail, approximate)
    return found


def op_actions(op: Op, cost: OpCost, macs: Mapping[str, float], compute: float, data: float, prices: Prices,
               zero_macs: float = 0.0) -> dict[Action, float]:  # fmt: skip
    """What ``compute``/``data`` nominal executions of ``op`` did (see OpReport), as action counts:
    each MAC runs on the unit its operands fit, in as many passes as its price includes. With zero
    gating, the ``zero_macs`` spend no multiply (counted as negative ``gated-mult`` actions) and no
    operand register read."""
    hw, arithmetic = prices.hw, prices.arithmetic
    fmt = "fp" if op.phase in arithmetic.float_phases else "int"
    approx = op.name in arithmetic.approximate_ops and arithmetic.approximate is not None
    rf_bit, noc_bit, hop_bit, vector_op, pe_cycle = FIXED[approx]
    actions: dict[Action, float] = {}
    for key, n in macs.items():
        actions[_named("mac", "mac", key + " " + fmt, approx)] = n
    rf = cost.rf_bits * compute
    if hw.sparsity.zero_gating and zero_macs and macs:
        key = max(macs, key=macs.get)  # the op's main operand widths
        actions[Action("mac", "gated-mult", f"{key} {fmt}", approx)] = -zero_macs
        rf -= zero_macs * sum(int(b) for b in key.split("x"))
    actions[rf_bit] = rf
    actions[noc_bit] = cost.noc_bits * data
    actions[hop_bit] = cost.hop_bits * data
    for name, bits in cost.sram_bits.items():
        actions[_named("sram", "bit", name, approx)] = bits * data
    actions[DRAM_BIT] = cost.dram_bytes * 8 * data
    actions[vector_op] = op.elementwise_ops * compute
    cycles = cost.compute_cycles * compute + cost.stall_cycles * data
    actions[pe_cycle] = cycles * hw.pe_array.pes
    actions[STATIC_CYCLE] = cycles
    return {a: n for a, n in actions.items() if n}


def target_of(hw: Accelerator, table: EnergyTable, objective: str = "energy") -> Target:
    """The mapper's view of ``hw`` priced with ``table`` at the spec's supply voltage."""
    v = supply_factor(hw, table)
    buffers = tuple(
        BufferLevel(name, b.size_bytes, b.word_bits, b.bandwidth_bytes_per_cycle,
                    v * table.sram_pj(b.size_kb, b.word_bits) / b.word_bits)
        for name, b in hw.buffers.items()
    )  # fmt: skip
    pe = hw.pe_array
    return Target(
        dataflow=pe.dataflow, rows=pe.rows, cols=pe.cols, buffers=buffers,
        streams=("global",) * 3 if hw.has_global_buffer else STREAMS,
        double_buffered=hw.dram.overlaps_compute, dram_bytes_per_cycle=hw.dram_bytes_per_cycle,
        dram_pj_per_bit=table.dram_pj_per_bit(hw.dram.type), rf_pj_per_bit=v * table.rf_pj(1),
        noc_pj_per_bit=v * table["noc_16b_pj"] / 16, hop_pj_per_bit=v * table["pe_hop_16b_pj"] / 16,
        cycle_pj=v * table["clock_pj_per_pe_cycle"] * pe.pes + hw.static_power_mw * 1e-3 / (hw.clock_mhz * 1e6) * 1e12,
        spad_bits=tuple(8 * b for b in pe.scratchpad_bytes), noc_bits_per_cycle=pe.noc_bits_per_cycle,
        objective=objective,
    )  # fmt: skip


@dataclass(frozen=True)
class Pricing:
    """Every op priced, and where each tensor lived."""

    rows: tuple[OpReport, ...]
    placements: Mapping[str, Placement]
    fusion: bool
    objective: str
    sparsity: Mapping[str, TensorSparsity] = field(default_factory=dict)
    storage: Mapping[str, float] = field(default_factory=dict)  # stored / raw DRAM bytes of compressed tensors
    prices: Mapping[Action, float] = field(default_factory=dict)  # pJ of each action counted
    gradients: Mapping[Action, tuple[float, ...]] = field(default_factory=dict)  # ∂pJ/∂ fitted parameter (calibrated)


def account(
    ops: Sequence[Op], tensors: Mapping[str, Tensor], hw: Accelerator, table: EnergyTable, arithmetic: Arithmetic,
    counter: OpCounter | None = None, inputs: frozenset[str] = frozenset(), fusion: bool = True,
    objective: str = "energy", densities: Mapping[str, float] | None = None,
) -> Pricing:  # fmt: skip
    """Map, schedule and price every op of one iteration. ``inputs``: the tensors that exist before
    the iteration (from DRAM); ``fusion``: plan fusion and residency across the iteration (else
    layer by layer). With ``counter`` (what a training run executed) each op is priced as many
    times as it ran, with its counted MACs (skipped work is not priced) and the zeros it saw;
    ``densities`` (activations, errors, weights) state sparsity where nothing was measured (over
    the hardware spec's)."""
    target = target_of(hw, table, objective)
    prices = Prices.of(hw, table, arithmetic)
    found = tensor_sparsity(ops, tensors, counter, {**dict(hw.sparsity.densities), **(densities or {})})
    plans = [plan_op(op, tensors, hw, target, arithmetic.accumulator_bits) for op in ops]
    moves, placements = plan_iteration(ops, tensors, plans, inputs, target, fusion)
    fmt = hw.sparsity.compression
    storage = {name: storage_ratio(t, fmt, found.get(name)) for name, t in tensors.items() if name in found}
    storage = {name: r for name, r in storage.items() if r != 1.0}
    reports = []
    for op, plan, settled in zip(ops, plans, moves, strict=True):
        runs, compute, data, counted = _scales(op, counter)
        if storage:  # compressed feature maps move fewer DRAM bytes
            settled = tuple(dataclasses.replace(m, dram_bytes=m.dram_bytes * storage.get(
                tensors[m.tensor].alias_of or m.tensor, 1.0)) for m in settled)  # fmt: skip
        if counted is None:
            counted = {f"{plan.nest.a_bits}x{plan.nest.b_bits}": op.macs * compute} if plan.nest is not None else {}
        zeros = zero_operand_macs(op, sum(counted.values()), counter, found)
        if hw.sparsity.skip_zero_cycles and zeros:
            plan = dataclasses.replace(plan, compute_cycles=plan.compute_cycles * (1 - zeros / sum(counted.values())))
        cost = finish_op(plan, settled, hw, target)
        actions = op_actions(op, cost, counted, compute, data, prices, zeros)
        energy = energy_of(actions, prices)
        count = counter.ops.get(op.name) if counter is not None else None
        fractions = count.zero_fractions() if count is not None else {}
        reports.append(OpReport(op, runs, compute, data, counted, cost, energy, zeros, fractions, actions))
    used = sorted({a for r in reports for a in r.actions})
    fit = hw.calibration
    gradients = price_gradients(hw, arithmetic, used, fit.parameters, fit.values) if fit is not None else {}
    return Pricing(tuple(reports), placements, fusion, objective, found, storage, {a: prices.pj(a) for a in used},
                   gradients)  # fmt: skip


def operand_tensors(op: Op, cost: OpCost) -> dict[str, str]:
    """Which tensor each stream carries (ifmap, filter, ofmap) for PE-array ops."""
    if cost.mapping is None:
        return {}
    return {m.stream: m.tensor for m in cost.moves[:3]}
