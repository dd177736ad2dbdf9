"""What a mapping depends on, in one hashable value: the array, the buffers, DRAM, the energy per
action and the objective. ``energy.account.target_of`` builds it once per estimate from the
accelerator and its energy table, so mappings can be cached by (loop nest, target)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

OBJECTIVES = ("energy", "latency", "edp")


@dataclass(frozen=True)
class BufferLevel:
    """An on-chip buffer: capacity, word width, bandwidth, and energy per bit accessed (pJ)."""

    name: str
    size_bytes: int
    word_bits: int
    bytes_per_cycle: float
    pj_per_bit: float


@dataclass(frozen=True)
class Target:
    """The accelerator as the mapper sees it. ``streams`` says which buffer holds the A, B and
    output tiles (ifmap, filter, ofmap, or the global buffer for all three). Energies in pJ;
    ``cycle_pj`` is the energy of one cycle whatever runs (static power and clock tree)."""

    dataflow: str
    rows: int
    cols: int
    buffers: tuple[BufferLevel, ...]
    streams: tuple[str, str, str]
    double_buffered: bool
    dram_bytes_per_cycle: float
    dram_pj_per_bit: float
    rf_pj_per_bit: float
    noc_pj_per_bit: float
    hop_pj_per_bit: float
    cycle_pj: float
    spad_bits: tuple[int, int, int]  # filter, ifmap and psum scratchpad of a PE (row stationary)
    noc_bits_per_cycle: tuple[int, int, int]  # ifmap, filter and psum networks (row stationary)
    objective: str = "energy"

    def buffer(self, name: str) -> BufferLevel:
        return self._by_name[name]

    @cached_property
    def _by_name(self) -> dict[str, BufferLevel]:
        return {b.name: b for b in self.buffers}
