"""One nominal iteration priced on many accelerators at once: the totals a sweep stores (energy,
cycles, DRAM bytes, MACs) for every design point, from arrays over points.

The PE-array ops are mapped on every accelerator together, then the points of one buffer layout
(and vector width) are planned together: an op off the PE array
has one plan for all of them, a PE-array op one plan whose numbers are arrays over the points
(``schedule.ops.array_plan`` on its mappings' numbers, the arithmetic of ``plan_op``); then
:func:`e2sim.schedule.many.plan_points` settles the iteration's moves and each op's cost, and the
action counts meet each point's prices as arrays. Points this path does not cover are left to
``account`` (None in the result): stated densities (zeros priced per tensor) and mappings that do
not fit (``account`` reports them). Results equal ``account``'s to rounding (the tests compare
≥ 200 points at 1e-9 and every shipped accelerator at 1e-12)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from e2sim.energy.account import DRAM_BIT, FIXED, STATIC_CYCLE, _named, target_of
from e2sim.energy.actions import PJ, Arithmetic, Prices
from e2sim.energy.tables import load_table
from e2sim.graph.ir import Op, Tensor
from e2sim.hw.accelerator import Accelerator
from e2sim.schedule.many import layout, plan_points
from e2sim.schedule.mapper import Mapping as NestMapping
from e2sim.schedule.mapper import MappingError
from e2sim.schedule.nest import LoopNest
from e2sim.schedule.ops import OpPlan, array_nests, array_plan, map_nest, map_nests, on_array, plan_op
from e2sim.schedule.target import Target


@dataclass(frozen=True)
class Totals:
    """One iteration on one accelerator: joules, cycles, seconds, DRAM bytes and MACs."""

    energy_j: float
    cycles: float
    time_s: float
    dram_bytes: float
    macs: float


def covered(hw: Accelerator) -> bool:
    """Whether :func:`account_points` prices ``hw`` (else ``account`` does, one point at a time)."""
    return not hw.sparsity.densities


def account_points(ops: Sequence[Op], tensors: Mapping[str, Tensor], accelerators: Sequence[Accelerator],
                   arithmetic: Arithmetic, inputs: frozenset[str], fusion: bool = True,
                   objective: str = "energy") -> list[Totals | None]:  # fmt: skip
    """The totals of one nominal iteration of ``ops`` on each of ``accelerators`` (None where this
    path does not price a point, see the module's docstring). The PE-array ops are first mapped on
    all of them together (``schedule.ops.map_nests``: arrays over design points where the dataflow
    allows), the points this path leaves to ``account`` included, which then find their mappings
    cached."""
    found: list[Totals | None] = [None] * len(accelerators)
    placed = [i for i, op in enumerate(ops) if on_array(op)]
    nests = dict(zip(placed, array_nests(ops, tensors, arithmetic.accumulator_bits), strict=True))
    distinct = list(dict.fromkeys(nests.values()))
    targets = [target_of(hw, load_table(hw.technology, hw.energy_overrides), objective) for hw in accelerators]
    map_nests(distinct, targets)
    groups: dict[tuple, list[tuple[int, Accelerator, Target, dict]]] = {}
    for index, (hw, target) in enumerate(zip(accelerators, targets, strict=True)):
        if not covered(hw):
            continue
        try:
            mapped = {nest: map_nest(nest, target) for nest in distinct}
        except MappingError:
            continue
        groups.setdefault((layout([target]), hw.vector.lanes), []).append((index, hw, target, mapped))
    work = _Work.of(ops, [nests.get(i) for i in range(len(ops))], arithmetic)
    for members in groups.values():
        columns = {nest: _mapped_columns(nest, members) for nest in distinct}
        plans = [_plan(op, tensors, nests.get(i), members, columns) for i, op in enumerate(ops)]
        costs = plan_points(ops, tensors, plans, [m[2] for m in members], inputs, fusion)
        for column, (index, hw, _, _) in enumerate(members):
            found[index] = _totals(work, costs, column, hw, arithmetic)
    return found


def _mapped_columns(nest: LoopNest, members) -> tuple[np.ndarray, SimpleNamespace]:
    """The MAC passes and the mapping's numbers of ``nest`` on every member point, as arrays over them."""
    passes = np.array([hw.pe_array.mac_passes(nest.a_bits, nest.b_bits) for _, hw, _, _ in members], dtype=np.float64)
    return passes, _columns([mapped[nest] for *_, mapped in members])


def _plan(op: Op, tensors: Mapping[str, Tensor], nest: LoopNest | None, members, columns) -> OpPlan:
    """The plan of ``op`` on every member point (same vector lanes): off the array the same plan
    for all; on it, its nest's ``columns`` (passes and mapping numbers as arrays over the points)."""
    _, hw, target, _ = members[0]
    if nest is None:
        return plan_op(op, tensors, hw, target, 0)
    return array_plan(op, tensors, nest, *columns[nest])


def _columns(mappings: Sequence[NestMapping]) -> SimpleNamespace:
    """The numbers of ``mappings`` (one per point) as arrays over the points, under their own names."""
    columns = {name: np.array([getattr(m, name) for m in mappings], dtype=np.float64)
               for name in ("dram_write_bytes", "compute_cycles", "tiles", "rf_bits", "noc_bits", "hop_bits")}
    for name in ("dram_read_bytes", "footprint_bytes", "buffer_reads", "buffer_writes", "refetch"):
        columns[name] = tuple(np.array([getattr(m, name)[k] for m in mappings], dtype=np.float64) for k in range(3))
    return SimpleNamespace(**columns)


@dataclass(frozen=True)
class _Work:
    """Per op: MACs, element-wise ops, and the MAC action of each PE-array op (None elsewhere)."""

    macs: np.ndarray
    elementwise: np.ndarray
    mac_actions: tuple

    @classmethod
    def of(cls, ops: Sequence[Op], nests: Sequence[LoopNest | None], arithmetic: Arithmetic) -> _Work:
        actions = []
        for op, nest in zip(ops, nests, strict=True):
            fmt = "fp" if op.phase in arithmetic.float_phases else "int"
            actions.append(None if nest is None else _named("mac", "mac", f"{nest.a_bits}x{nest.b_bits} {fmt}", False))
        macs = np.array([op.macs if a is not None else 0.0 for op, a in zip(ops, actions, strict=True)], dtype=float)
        return cls(macs, np.array([op.elementwise_ops for op in ops], dtype=float), tuple(actions))


def _totals(work: _Work, costs, column: int, hw: Accelerator, arithmetic: Arithmetic) -> Totals:
    """``op_actions`` and ``energy_of`` of one nominal iteration on one point, summed over ops."""
    prices = Prices.of(hw, load_table(hw.technology, hw.energy_overrides), arithmetic)
    rf_bit, noc_bit, hop_bit, vector_op, pe_cycle = FIXED[False]
    cycles = costs.compute_cycles[:, column] + costs.stall_cycles[:, column]
    dram = costs.dram_bytes[:, column]
    mac_pj = np.array([0.0 if a is None else prices.pj(a) for a in work.mac_actions])
    pj = (work.macs * mac_pj + costs.rf_bits[:, column] * prices.pj(rf_bit)
          + costs.noc_bits[:, column] * prices.pj(noc_bit) + costs.hop_bits[:, column] * prices.pj(hop_bit)
          + dram * 8 * prices.pj(DRAM_BIT) + work.elementwise * prices.pj(vector_op)
          + cycles * hw.pe_array.pes * prices.pj(pe_cycle) + cycles * prices.pj(STATIC_CYCLE))  # fmt: skip
    for name, bits in costs.buffer_bits.items():
        pj = pj + bits[:, column] * prices.pj(_named("sram", "bit", name, False))
    total_cycles = float(cycles.sum())
    return Totals(float((pj * PJ).sum()), total_cycles, total_cycles / (hw.clock_mhz * 1e6), float(dram.sum()),
                  float(work.macs.sum()))  # fmt: skip
