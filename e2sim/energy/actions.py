"""Action counts and their prices: the contract between pricing and the energy table.

Pricing an op yields how many times each hardware action happened (:class:`Action`: MACs by
operand widths and format, register-file, buffer, network and DRAM bits, vector ops, PE-array
clock cycles, cycles of static power); energy is the dot product of those counts with the price
of each action (pJ) that :class:`Prices` derives from the energy table and the hardware spec.
Calibration fits table entries on fixed counts, and error bars propagate through the same dot
product.

On-chip actions are priced at the spec's supply voltage, or at the approximate mode's for actions
of ops that run on it (``approximate``); DRAM and static power are not scaled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from e2sim.energy.tables import EnergyTable
from e2sim.hw.accelerator import Accelerator
from e2sim.hw.approximate import ApproximateMode

PJ = 1e-12
COMPONENTS = ("mac", "rf", "noc", "sram", "dram", "vector", "clock", "static")


class Action(NamedTuple):
    """One kind of hardware action (a named tuple: it keys every op's counts, and hashes fast).
    ``component``: where its energy is reported (mac, rf, noc,
    sram, dram, vector, clock, static); ``what``: the action (``mac``, ``gated-mult``, ``bit``,
    ``hop-bit``, ``op``, ``pe-cycle``, ``cycle``); ``detail``: operand widths and format of a MAC
    (``8x8 int``) or the buffer of an SRAM bit; ``approximate``: on the approximate mode."""

    component: str
    what: str
    detail: str = ""
    approximate: bool = False

    def __str__(self) -> str:
        what = "" if self.what == self.component else self.what
        text = " ".join(p for p in (self.component, what, self.detail) if p)
        return text + (" (approximate mode)" if self.approximate else "")


@dataclass(frozen=True)
class Arithmetic:
    """Number formats that price the arithmetic: accumulator width, and which phases multiply in
    floating point (a phase is float when either of its GEMM operands has a float format)."""

    accumulator_bits: int
    float_phases: frozenset[str]
    approximate: ApproximateMode | None = None
    approximate_ops: frozenset[str] = frozenset()  # ops that run on the approximate mode


def supply_factor(hw: Accelerator, table: EnergyTable, voltage: float | None = None) -> float:
    """On-chip dynamic energy at ``voltage`` (default: the spec's supply) relative to the table's."""
    volts = voltage if voltage is not None else hw.supply_voltage_v
    return table.voltage_factor(volts) if volts is not None else 1.0


@dataclass(frozen=True)
class Prices:
    """Energy per action (pJ) of one accelerator with one energy table; looked up once per action."""

    hw: Accelerator
    table: EnergyTable
    arithmetic: Arithmetic
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, hw: Accelerator, table: EnergyTable, arithmetic: Arithmetic) -> Prices:
        return cls(hw, table, arithmetic)

    def pj(self, action: Action) -> float:
        """pJ of one ``action``."""
        found = self._cache.get(action)
        if found is None:
            found = self._cache[action] = self._price(action)
        return found

    def _price(self, a: Action) -> float:
        hw, table = self.hw, self.table
        mode = self.arithmetic.approximate if a.approximate else None
        volts = mode.supply_voltage_v if mode is not None else None
        dynamic = supply_factor(hw, table, volts)
        if a.component == "mac":
            key, fmt = a.detail.split()
            whole, multiply = self._mac(key, fmt == "fp", mode)
            return dynamic * (whole if a.what == "mac" else multiply)
        if a.component == "rf":
            return dynamic * table.rf_pj(1)
        if a.component == "sram":
            b = hw.buffers[a.detail]
            return dynamic * table.sram_pj(b.size_kb, b.word_bits) / b.word_bits
        if a.component == "noc":
            return dynamic * table["noc_16b_pj" if a.what == "bit" else "pe_hop_16b_pj"] / 16
        if a.component == "dram":
            return table.dram_pj_per_bit(hw.dram.type)
        if a.component == "vector":
            v = hw.vector
            return dynamic * (table.add_pj(v.bits, v.float) + table.mult_pj(v.bits, v.bits, v.float) / 2)
        if a.component == "clock":
            return dynamic * table["clock_pj_per_pe_cycle"]
        if a.component == "static":
            return hw.static_power_mw * 1e-3 / (hw.clock_mhz * 1e6) / PJ
        raise KeyError(f"no price for action {a}")

    def _mac(self, key: str, floating: bool, mode: ApproximateMode | None) -> tuple[float, float]:
        """(pJ of one MAC of operand widths ``key`` ("8x8") with its passes, of its multiplies alone)."""
        (a_width, a_passes), (b_width, b_passes) = (self.hw.pe_array.executed_width(int(b)) for b in key.split("x"))
        table, acc = self.table, self.arithmetic.accumulator_bits
        if mode is None:
            multiply, add = table.mult_pj(a_width, b_width, floating), table.add_pj(acc, floating)
        else:
            multiply, add = table.approx_mult_pj(a_width, b_width, mode.multiplier), table.add_pj(acc, False)
        passes = a_passes * b_passes
        return (multiply + add) * passes, multiply * passes


def energy_of(actions: Mapping[Action, float], prices: Prices) -> dict[str, float]:
    """Joules per component: each action's count × its price."""
    energy = dict.fromkeys(COMPONENTS, 0.0)
    known = prices._cache
    for action, count in actions.items():
        pj = known.get(action)
        energy[action[0]] += count * (prices.pj(action) if pj is None else pj) * PJ
    return energy


def add_actions(total: dict[Action, float], actions: Mapping[Action, float]) -> dict[Action, float]:
    for action, count in actions.items():
        total[action] = total.get(action, 0.0) + count
    return total
