"""One nominal iteration priced on many accelerators at once: the totals a sweep stores (energy,
cycles, DRAM bytes, MACs) for every design point, from arrays over points.

The ops are planned per point as ``account`` plans them (``schedule.ops.plan_op``, the mappings
cached), then :func:`e2sim.schedule.many.plan_points` settles the iteration's moves and each op's
cost for all points of one buffer layout together, and the action counts meet each point's
prices as arrays. Points this path does not cover are left to ``account`` (None in the result):
stated densities (zeros priced per tensor) and mappings that do not fit (``account`` reports
them). Results equal ``account``'s to rounding (the tests compare ≥ 200 points at 1e-9)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from e2sim.energy.account import DRAM_BIT, FIXED, STATIC_CYCLE, _named, target_of
from e2sim.energy.actions import PJ, Arithmetic, Prices
from e2sim.energy.tables import load_table
from e2sim.graph.ir import Op, Tensor
from e2sim.hw.accelerator import Accelerator
from e2sim.schedule.many import layout, plan_points
from e2sim.schedule.mapper import MappingError
from e2sim.schedule.ops import on_array, plan_op


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
    path does not price a point, see the module's docstring)."""
    found: list[Totals | None] = [None] * len(accelerators)
    groups: dict[tuple, list[tuple[int, Accelerator, object, list]]] = {}
    streaming: dict[int, list] = {}  # the plans of the ops off the array, by vector lanes (all they depend on)
    array = [on_array(op) for op in ops]
    for index, hw in enumerate(accelerators):
        if not covered(hw):
            continue
        target = target_of(hw, load_table(hw.technology, hw.energy_overrides), objective)
        lanes = hw.vector.lanes
        if lanes not in streaming:
            streaming[lanes] = [None if a else plan_op(op, tensors, hw, target, 0)
                                for op, a in zip(ops, array, strict=True)]  # fmt: skip
        try:
            plans = [plan_op(op, tensors, hw, target, arithmetic.accumulator_bits) if a else plan
                     for op, a, plan in zip(ops, array, streaming[lanes], strict=True)]  # fmt: skip
        except MappingError:
            continue
        groups.setdefault(layout([target]), []).append((index, hw, target, plans))
    if not groups:
        return found
    work = _Work.of(ops, next(iter(groups.values()))[0][3], arithmetic)
    for members in groups.values():
        costs = plan_points(ops, tensors, [m[3] for m in members], [m[2] for m in members], inputs, fusion)
        for column, (index, hw, _, _) in enumerate(members):
            found[index] = _totals(work, costs, column, hw, arithmetic)
    return found


@dataclass(frozen=True)
class _Work:
    """Per op: MACs, element-wise ops, and the MAC action of each PE-array op (None elsewhere)."""

    macs: np.ndarray
    elementwise: np.ndarray
    mac_actions: tuple

    @classmethod
    def of(cls, ops: Sequence[Op], plans, arithmetic: Arithmetic) -> _Work:
        actions = []
        for op, plan in zip(ops, plans, strict=True):
            fmt = "fp" if op.phase in arithmetic.float_phases else "int"
            nest = plan.nest
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
