"""Hardware specs: YAML -> checked -> :class:`e2sim.hw.Accelerator`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2sim.config.approximate import read_approximate
from e2sim.config.frozen import FrozenDict
from e2sim.config.reader import (
    Invalid,
    ProblemLog,
    Section,
    at_most,
    boolean,
    non_negative_int,
    non_negative_number,
    one_of,
    positive_int,
    positive_number,
    string,
)
from e2sim.hw.accelerator import (
    COMPRESSION_FORMATS,
    DATAFLOWS,
    DRAM_TYPES,
    OPERAND_BUFFERS,
    TECHNOLOGIES,
    Accelerator,
    Buffer,
    Calibration,
    Dram,
    PEArray,
    Sparsity,
    VectorUnit,
)
from e2sim.hw.energy_entries import ENERGY_ENTRIES

DEFAULT_MAC_BITS = (8, 16)
SCRATCHPADS = ("filter", "ifmap", "psum")
DENSITY_ROLES = ("activations", "errors", "weights")
NETWORKS = ("ifmap", "filter", "psum")


def read_hardware(data: Any, source: str, base_dir: Path | None = None) -> Accelerator:
    """Check a parsed hardware document; raise SpecError listing every problem. ``base_dir``:
    where files the spec names are looked up (default: the working directory)."""
    log = ProblemLog(source)
    top = Section.of(data, "", log)
    if top is None:
        log.raise_if_any()
    name = top.read("name", string)
    description = top.read("description", string, default="")
    technology = top.read("technology", one_of(*TECHNOLOGIES))
    clock_mhz = top.read("clock_mhz", at_most(positive_number, 100_000, " MHz"))
    pe_array = _read_pe_array(top.section("pe_array"))
    buffers = _read_buffers(top.section("buffers"))
    dram = _read_dram(top.section("dram"))
    static_power_mw = top.read("static_power_mw", at_most(non_negative_number, 1e6, " mW"))
    supply_voltage_v = top.read("supply_voltage_v", at_most(positive_number, 5, " V"), default=None)
    sparsity = _read_sparsity(top.section("sparsity", default={}))
    vector = _read_vector(top.section("vector", default={}), pe_array)
    overrides = _read_overrides(top.section("energy_overrides", default={}))
    approximate = read_approximate(top.section("approximate", default=None), base_dir or Path.cwd())
    calibration = _read_calibration(top.section("calibration", default=None))
    top.finish()
    if not log.problems:  # the tile check needs every field valid
        _check_smallest_tiles(Section(top.data["buffers"], "buffers", log), pe_array, buffers)
    if calibration is not None and not log.problems:
        _check_calibrated_values(top.section("calibration"), calibration, overrides, static_power_mw)
    log.raise_if_any()
    assumptions = ()
    if pe_array.dataflow == "rs" and not top.data["pe_array"].get("scratchpads"):
        assumptions = (("pe_array.scratchpads", f"filter/ifmap/psum {pe_array.scratchpad_bytes} bytes: rf_bytes "
                        "split in Eyeriss's proportions (448/24/48 of 520)"),)  # fmt: skip
    return Accelerator(
        name,
        description,
        source,
        technology,
        clock_mhz,
        pe_array,
        buffers,
        dram,
        vector,
        static_power_mw,
        overrides,
        approximate,
        supply_voltage_v,
        assumptions,
        sparsity,
        calibration,
    )


def _check_smallest_tiles(s: Section, pe: PEArray, buffers) -> None:
    """Each buffer must hold two of the smallest tiles the array works on (double buffering):
    a column of narrowest inputs (ifmap), one array's worth of narrowest weights (filter), a row
    of 32-bit partial sums (ofmap); a global buffer holds all three."""
    narrowest = min(pe.mac_bits) / 8
    need = {"ifmap": 2 * pe.rows * narrowest, "filter": 2 * pe.rows * pe.cols * narrowest, "ofmap": 2 * pe.cols * 4}
    if "global" in buffers:
        need = {"global": sum(need.values())}
    for name, nbytes in need.items():
        if buffers[name].size_bytes < nbytes:
            s.log.add(s.key_path(f"{name}.size_kb"), f"too small for the smallest double-buffered tile of a "
                      f"{pe.rows}x{pe.cols} array ({nbytes:g} bytes), got {buffers[name].size_kb:g} KB")  # fmt: skip


def _read_sparsity(s: Section | None) -> Sparsity:
    if s is None:
        return Sparsity()
    gating = s.read("zero_gating", boolean, default=False)
    skipping = s.read("skip_zero_cycles", boolean, default=False)
    compression = s.read("compression", one_of(*COMPRESSION_FORMATS), default="none")
    densities = s.section("densities", default={})
    stated = {}
    if densities is not None:
        stated = {role: densities.read(role, density, default=None) for role in DENSITY_ROLES}
        densities.finish()
    s.finish()
    if skipping and not gating:
        s.log.add(s.key_path("skip_zero_cycles"), "needs zero_gating: true (a skipped MAC is a gated one)")
    return Sparsity(bool(gating), bool(skipping), compression or "none",
                    tuple((k, v) for k, v in stated.items() if v is not None))  # fmt: skip


def density(value: Any) -> float:
    number = non_negative_number(value)
    if number > 1:
        raise Invalid(f"must be a fraction of non-zero values from 0 to 1, got {value!r}")
    return number


def _read_vector(s: Section | None, pe_array: PEArray | None) -> VectorUnit | None:
    """Element-wise datapath; by default as many lanes as the PE array has columns, fp32."""
    if s is None:
        return None
    default_lanes = pe_array.cols if pe_array and pe_array.cols else 1
    lanes = s.read("lanes", at_most(positive_int, 65_536), default=default_lanes)
    bits = s.read("bits", _bit_width, default=32)
    floating = s.read("float", boolean, default=True)
    s.finish()
    return VectorUnit(lanes, bits, floating)


_EXPONENT = at_most(non_negative_number, 10)
_ENERGY_PJ = at_most(positive_number, 1e9, " pJ")


CALIBRATABLE = (*ENERGY_ENTRIES, "static_power_mw")


def _read_calibration(s: Section | None) -> Calibration | None:
    """Fitted parameters with standard errors and correlations (written by ``e2sim calibrate``)."""
    if s is None:
        return None
    method = s.read("method", string, default="")
    measurements = s.read_list("measurements", string, default=())
    params = s.section("parameters")
    names, values, errors = [], [], []
    if params is not None:
        for name in list(params.data):
            entry = params.section(name)
            if entry is None:
                continue
            value = entry.read("value", at_most(non_negative_number, 1e9))
            error = entry.read("standard_error", at_most(non_negative_number, 1e9))
            entry.finish()
            names.append(name)
            values.append(value)
            errors.append(error)
        for name in names:
            if name not in CALIBRATABLE:
                params.log.add(params.key_path(name), "not a calibratable parameter (energy-table entries and "
                               "static_power_mw)")  # fmt: skip
        if not names:
            s.log.add(s.key_path("parameters"), "must name at least one fitted parameter")
    correlation = s.read_list("correlation", lambda row: tuple(_correlation_row(row)))
    s.finish()
    if correlation is not None and names and not _is_correlation(correlation, len(names)):
        s.log.add(s.key_path("correlation"), f"must be a symmetric {len(names)}x{len(names)} matrix with ones on "
                  "the diagonal and entries in [-1, 1], in the order of parameters")  # fmt: skip
        return None
    if None in values or None in errors or correlation is None or not names:
        return None
    return Calibration(tuple(names), tuple(values), tuple(errors), correlation, measurements or (), method)


def _correlation_row(row: Any) -> list[float]:
    if not isinstance(row, list) or not row:
        raise Invalid("must be a list of numbers")
    numbers = [n for n in (_finite(v) for v in row) if n is not None]
    if len(numbers) != len(row):
        raise Invalid("must be a list of numbers")
    return numbers


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1e9 < value < 1e9:
        return None
    return float(value)


def _is_correlation(matrix: tuple, n: int) -> bool:
    if len(matrix) != n or any(len(row) != n for row in matrix):
        return False
    return all(abs(matrix[i][i] - 1) < 1e-9 and all(abs(matrix[i][j] - matrix[j][i]) < 1e-9 and -1 <= matrix[i][j] <= 1
                                                    for j in range(n)) for i in range(n))  # fmt: skip


def _check_calibrated_values(s: Section, calibration: Calibration, overrides, static_power_mw: float) -> None:
    """A fitted value must be the value the spec uses (an edited override would silently void the error bars)."""
    for name, value in zip(calibration.parameters, calibration.values, strict=True):
        used = static_power_mw if name == "static_power_mw" else (overrides or {}).get(name)
        where = "static_power_mw" if name == "static_power_mw" else f"energy_overrides.{name}"
        if used is None or abs(used - value) > 1e-9 * max(abs(value), 1e-12):
            found = "absent" if used is None else f"{used:g}"
            s.log.add(f"calibration.parameters.{name}.value", f"is {value:g} but the spec's {where} is {found}: "
                      "the error bars belong to the fitted value")  # fmt: skip


def _read_overrides(s: Section | None) -> FrozenDict | None:
    if s is None:
        return None
    values = {
        key: s.read(key, _EXPONENT if key.endswith("exponent") else _ENERGY_PJ, default=None)
        for key in ENERGY_ENTRIES
    }
    s.finish(" (energy-table entries)")
    return FrozenDict({k: v for k, v in values.items() if v is not None})


def _read_pe_array(s: Section | None) -> PEArray | None:
    if s is None:
        return None
    rows = s.read("rows", at_most(positive_int, 4096))
    cols = s.read("cols", at_most(positive_int, 4096))
    dataflow = s.read("dataflow", one_of(*DATAFLOWS))
    rf_bytes = s.read("rf_bytes", at_most(non_negative_int, 1 << 20), default=0)
    mac_bits = s.read_list("mac_bits", _bit_width, default=DEFAULT_MAC_BITS, check_all=_distinct_sorted)
    pads = s.section("scratchpads", default=None)
    scratchpads = None
    if pads is not None:
        scratchpads = tuple(pads.read(f"{name}_bytes", at_most(positive_int, 1 << 20)) for name in SCRATCHPADS)
        pads.finish()
    noc = s.section("noc", default={})
    widths = None
    if noc is not None:
        width = at_most(positive_int, 65_536)
        widths = tuple(noc.read(f"{name}_bits_per_cycle", width, default=64) for name in NETWORKS)
        noc.finish()
    s.finish()
    if dataflow == "rs" and rf_bytes == 0 and scratchpads is None:
        s.log.add(s.key_path("rf_bytes"), "row-stationary (rs) needs scratchpads per PE (rf_bytes > 0 or scratchpads)")
    if scratchpads is None and rf_bytes:  # Eyeriss's split of 520 B: filter 448, ifmap 24, psum 48
        scratchpads = (rf_bytes * 448 // 520, rf_bytes * 24 // 520, rf_bytes * 48 // 520)
    if scratchpads is not None and None not in scratchpads and rf_bytes == 0:
        rf_bytes = sum(scratchpads)
    return PEArray(rows, cols, dataflow, rf_bytes, mac_bits, scratchpads or (0, 0, 0), widths or (64, 64, 64))


def _bit_width(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 32:
        raise Invalid("must be a bit width from 2 to 32")
    return value


def _distinct_sorted(values: tuple[int, ...]) -> tuple[int, ...]:
    if len(set(values)) != len(values):
        raise Invalid("must list distinct bit widths")
    return tuple(sorted(values))


def _read_buffers(s: Section | None) -> FrozenDict | None:
    if s is None:
        return None
    if s.has("global"):
        names: tuple[str, ...] = ("global",)
    else:
        names = OPERAND_BUFFERS
    buffers = {name: _read_buffer(s.section(name)) for name in names}
    s.finish(" (either global, or ifmap, filter and ofmap)")
    return FrozenDict(buffers)


def _read_buffer(s: Section | None) -> Buffer | None:
    if s is None:
        return None
    size_kb = s.read("size_kb", at_most(positive_number, 1 << 24, " KB"))
    banks = s.read("banks", at_most(positive_int, 4096), default=1)
    word_bits = s.read("word_bits", at_most(_word_bits, 65_536), default=64)
    default_bandwidth = banks * word_bits / 8 if banks and word_bits else None
    bandwidth = s.read("bandwidth_bytes_per_cycle", at_most(positive_number, 1e6), default=default_bandwidth)
    s.finish()
    if size_kb and banks and word_bits and size_kb * 1024 < banks * word_bits / 8:
        s.log.add(s.key_path("size_kb"), f"holds less than one {word_bits}-bit word per bank ({banks} banks)")
    return Buffer(size_kb, banks, word_bits, bandwidth)


def _word_bits(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 8:
        raise Invalid("must be a positive multiple of 8")
    return value


def _read_dram(s: Section | None) -> Dram | None:
    if s is None:
        return None
    dram_type = s.read("type", one_of(*DRAM_TYPES))
    bandwidth = s.read("bandwidth_gb_per_s", at_most(positive_number, 100_000, " GB/s"))
    overlaps = s.read("overlaps_compute", boolean, default=True)
    s.finish()
    return Dram(dram_type, bandwidth, overlaps)
