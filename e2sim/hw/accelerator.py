"""The accelerator a training iteration is priced on (frozen; built from a validated hardware spec)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from e2sim.hw.approximate import ApproximateMode

DATAFLOWS = ("ws", "os", "is", "rs")  # weight/output/input stationary (SCALE-Sim), row stationary (Eyeriss)
TECHNOLOGIES = ("45nm", "65nm", "fpga")
DRAM_TYPES = ("lpddr", "lpddr4", "ddr3", "ddr4", "gddr5", "hbm2")
OPERAND_BUFFERS = ("ifmap", "filter", "ofmap")
COMPRESSION_FORMATS = ("none", "bitmask", "rle")  # of feature maps in DRAM (see schedule/compression.py)


@dataclass(frozen=True)
class PEArray:
    """rows x cols processing elements; ``rf_bytes`` of register file per PE; MAC operand widths (bits).
    A row-stationary array also has per-PE scratchpads and the widths of the networks that fill
    them from the global buffer."""

    rows: int
    cols: int
    dataflow: str
    rf_bytes: int
    mac_bits: tuple[int, ...]
    scratchpad_bytes: tuple[int, int, int] = (0, 0, 0)  # filter, ifmap, psum scratchpads of a PE (rs)
    noc_bits_per_cycle: tuple[int, int, int] = (64, 64, 64)  # ifmap, filter, psum networks (rs)

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    def executed_width(self, bits: int) -> tuple[int, int]:
        """(width of the MAC unit an operand of ``bits`` runs on, passes it needs): the narrowest
        supported width that holds it, or the widest one in ⌈bits / widest⌉ passes."""
        for width in self.mac_bits:
            if bits <= width:
                return width, 1
        widest = self.mac_bits[-1]
        return widest, -(-bits // widest)

    def mac_passes(self, a_bits: int, b_bits: int) -> int:
        """Array passes of one a×b-bit MAC (operands wider than the widest unit are split)."""
        return self.executed_width(a_bits)[1] * self.executed_width(b_bits)[1]


@dataclass(frozen=True)
class Buffer:
    """An on-chip SRAM: capacity, banks, word width and bandwidth (bytes per clock cycle)."""

    size_kb: float
    banks: int
    word_bits: int
    bandwidth_bytes_per_cycle: float

    @property
    def size_bytes(self) -> int:
        return int(self.size_kb * 1024)


@dataclass(frozen=True)
class Dram:
    """Off-chip memory; bandwidth in GB/s (10^9 bytes per second). ``overlaps_compute``: DMA runs
    while the array computes (tiles are double-buffered); otherwise loads and stores wait."""

    type: str
    bandwidth_gb_per_s: float
    overlaps_compute: bool = True


@dataclass(frozen=True)
class VectorUnit:
    """The datapath of element-wise work (batch norm, ReLU, pooling, loss, SGD): ``lanes`` ops per
    cycle at ``bits`` wide, integer or floating point (``float``)."""

    lanes: int
    bits: int
    float: bool


@dataclass(frozen=True)
class Sparsity:
    """What the datapath does with zeros. ``zero_gating``: a MAC with a zero operand spends no
    multiply and no operand register/scratchpad read; ``skip_zero_cycles``: nor a cycle (an
    idealised sparse datapath; otherwise cycles are unchanged); ``compression``: feature maps
    (activations and errors) in DRAM as ``none``, ``bitmask`` or ``rle``; ``densities``: the
    non-zero fraction of activations, errors and weights to assume where no training run measured
    them."""

    zero_gating: bool = False
    skip_zero_cycles: bool = False
    compression: str = "none"
    densities: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Calibration:
    """Energy-table entries and spec parameters fitted to measurements (``e2sim calibrate``): their
    values, standard errors and correlations, from which estimates propagate error bars."""

    parameters: tuple[str, ...]  # energy-table entry names, or ``static_power_mw``
    values: tuple[float, ...]
    standard_errors: tuple[float, ...]
    correlation: tuple[tuple[float, ...], ...]
    measurements: tuple[str, ...] = ()  # the measurements fitted
    method: str = ""

    def covariance(self) -> list[list[float]]:
        s, r = self.standard_errors, self.correlation
        return [[s[i] * s[j] * r[i][j] for j in range(len(s))] for i in range(len(s))]


@dataclass(frozen=True)
class Accelerator:
    """A parameterized training accelerator.

    ``buffers`` holds either one ``global`` buffer or the per-operand ``ifmap``, ``filter`` and
    ``ofmap`` SRAMs. ``source`` is the spec file it was read from.
    """

    name: str
    description: str
    source: str
    technology: str
    clock_mhz: float
    pe_array: PEArray
    buffers: Mapping[str, Buffer]
    dram: Dram
    vector: VectorUnit
    static_power_mw: float  # leakage and clock tree of the whole accelerator, drawn while it runs
    energy_overrides: Mapping[str, float]  # energy-table entries replaced by the spec
    approximate: ApproximateMode | None = None  # the approximate operating mode, if it has one
    supply_voltage_v: float | None = None  # operating voltage (None: the energy table's nominal)
    assumptions: tuple[tuple[str, str], ...] = ()  # (key, value and why) for values the source did not state
    sparsity: Sparsity = Sparsity()
    calibration: Calibration | None = None  # fitted parameters with their uncertainty

    @property
    def has_global_buffer(self) -> bool:
        return "global" in self.buffers

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram.bandwidth_gb_per_s * 1e9 / (self.clock_mhz * 1e6)
