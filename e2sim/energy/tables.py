"""Energy per action, from a technology table file with a source for every entry, plus overrides.

Derived rules (documented in the tables): an a×b-bit integer multiply costs
``int_mult_8b_pj · (a·b/64)^(exponent/2)``; an integer add ``int_add_32b_pj · bits/32``; float
multiplies interpolate between fp16 and fp32 in significand width and float adds in total width
(log-log); register-file accesses are linear in width; an SRAM access of w bits to a buffer of
S KB costs ``sram_access_64b_8kb_pj · (w/64) · (S/8)^sram_size_exponent``.

Approximate multipliers (an accelerator's approximate mode): truncation of t bits is an
(a−t)×(b−t) array by the width rule; DRUM-k a k×k array plus ``drum_steering_ratio`` of the
exact multiply; Mitchell ``mitchell_mult_ratio`` of the exact multiply; a table multiplier its
spec's ``energy_ratio``. On-chip dynamic energy at supply V scales by (V / ``nominal_supply_v``)².
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from e2sim.config.frozen import FrozenDict
from e2sim.hw.approximate import MultiplierSpec
from e2sim.hw.energy_entries import ENERGY_ENTRIES


@dataclass(frozen=True)
class EnergyTable:
    name: str
    description: str
    entries: Mapping[str, float]
    sources: Mapping[str, str]
    overridden: frozenset[str]

    def __getitem__(self, key: str) -> float:
        return self.entries[key]

    def mult_pj(self, a_bits: int, b_bits: int, floating: bool) -> float:
        if floating:
            # significand widths (hidden bit included) of fp16 and fp32: 11 and 24
            sig = math.sqrt(_significand(a_bits) * _significand(b_bits))
            slope = math.log(self["fp32_mult_pj"] / self["fp16_mult_pj"]) / math.log(24 / 11)
            return self["fp16_mult_pj"] * (sig / 11) ** slope
        return self["int_mult_8b_pj"] * (a_bits * b_bits / 64) ** (self["int_mult_width_exponent"] / 2)

    def approx_mult_pj(self, a_bits: int, b_bits: int, multiplier: MultiplierSpec) -> float:
        """One integer multiply of a×b bits on an approximate multiplier."""
        exact = self.mult_pj(a_bits, b_bits, False)
        if multiplier.kind == "truncation":
            t = multiplier.dropped_bits
            return self.mult_pj(max(a_bits - t, 1), max(b_bits - t, 1), False)
        if multiplier.kind == "drum":
            k = multiplier.kept_bits
            return self.mult_pj(min(k, a_bits), min(k, b_bits), False) + self["drum_steering_ratio"] * exact
        if multiplier.kind == "mitchell":
            return self["mitchell_mult_ratio"] * exact
        if multiplier.kind == "table":
            return multiplier.energy_ratio * exact
        return exact

    def voltage_factor(self, supply_v: float) -> float:
        """Dynamic on-chip energy at ``supply_v`` relative to the table's nominal voltage (C·V²)."""
        return (supply_v / self["nominal_supply_v"]) ** 2

    def add_pj(self, bits: int, floating: bool) -> float:
        if floating:
            slope = math.log(self["fp32_add_pj"] / self["fp16_add_pj"]) / math.log(2)
            return self["fp16_add_pj"] * (bits / 16) ** slope
        return self["int_add_32b_pj"] * bits / 32

    def mac_pj(self, a_bits: int, b_bits: int, accumulator_bits: int, floating: bool) -> float:
        return self.mult_pj(a_bits, b_bits, floating) + self.add_pj(accumulator_bits, floating)

    def rf_pj(self, bits: float) -> float:
        return self["rf_access_16b_pj"] * bits / 16

    def sram_pj(self, size_kb: float, word_bits: int) -> float:
        """One access of one ``word_bits`` word to a buffer of ``size_kb``."""
        return self["sram_access_64b_8kb_pj"] * (word_bits / 64) * (size_kb / 8) ** self["sram_size_exponent"]

    def dram_pj_per_bit(self, dram_type: str) -> float:
        return self[f"dram_{dram_type}_pj_per_bit"]

    def provenance(self) -> dict:
        """Which table priced a run, and every entry with its value and source."""
        return {
            "table": self.name,
            "description": self.description,
            "entries": {
                key: {"value": self.entries[key], "source": "hardware spec override" if key in self.overridden
                      else self.sources[key]}
                for key in ENERGY_ENTRIES
            },
        }  # fmt: skip


def _significand(bits: int) -> int:
    """Significand width (with the hidden bit) of the usual float format of ``bits`` total bits."""
    return {8: 4, 16: 11, 32: 24, 64: 53}.get(bits, max(2, bits * 3 // 4))


@cache
def _read_table(technology: str) -> tuple[str, str, dict, dict]:
    text = (resources.files("e2sim") / "energy" / "tables" / f"{technology}.yaml").read_text()
    raw = yaml.safe_load(text)
    entries = {k: float(v["value"]) for k, v in raw["entries"].items()}
    sources = {k: str(v["source"]) for k, v in raw["entries"].items()}
    if set(entries) != set(ENERGY_ENTRIES):
        raise RuntimeError(f"energy table {technology} must define exactly {ENERGY_ENTRIES}")
    return raw["name"], raw["description"], entries, sources


def load_table(technology: str, overrides: Mapping[str, float] | None = None) -> EnergyTable:
    """The table of a technology (45nm, 65nm, fpga) with a spec's overrides applied."""
    name, description, entries, sources = _read_table(technology)
    overrides = dict(overrides or {})
    merged = {**entries, **overrides}
    return EnergyTable(name, description, FrozenDict(merged), FrozenDict(sources), frozenset(overrides))
