"""Measurement files: what a published paper (or a lab) measured on a device, with the conditions
needed to predict it, and a source for every value.

```yaml
name: eyeriss-alexnet-conv
citation: "Chen et al., Eyeriss, IEEE JSSC 52(1), 2017"
device: {hw: eyeriss}                       # a hardware spec: embedded name or path (from this file)
workload: {topology: alexnet-conv, operand_bits: 16, accumulator_bits: 16}   # or {name: resnet20-cifar10}
phase: inference                            # inference (forward ops) or training (one iteration)
batch: 4
conditions: {clock_mhz: 200, supply_voltage_v: 1.0}   # operating point, over the spec's
includes_dram_energy: false                 # the power/energy was measured with or without DRAM
measured:
  power_mw: {value: 278, source: "abstract"}
  latency_ms: {value: 28.6, per: image, source: "abstract: 35 frames/s", conversion: "1000 / 35"}
layers:                                     # optional, per layer of the workload
  conv1: {latency_ms: {value: ..., source: "Table V"}}
```

Quantities (units in the key): ``power_mw``, ``latency_ms``, ``energy_mj`` and ``dram_mb`` (per
``batch`` — one iteration or one forward batch — or per ``image``), ``throughput_gops`` and
``efficiency_gops_per_w`` (operations = 2 × MACs, the papers' convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2sim.config.reader import (
    ProblemLog,
    Section,
    at_most,
    boolean,
    one_of,
    positive_int,
    positive_number,
    string,
)
from e2sim.config.scalesim import TopologyLayer
from e2sim.config.yaml_text import read_yaml_file

QUANTITIES = ("power_mw", "latency_ms", "energy_mj", "dram_mb", "throughput_gops", "efficiency_gops_per_w")
PER_QUANTITIES = ("latency_ms", "energy_mj", "dram_mb")  # measured per batch or per image
LOSSES = ("linear", "soft_l1", "huber", "cauchy")  # calibration losses (scipy least_squares)
ENERGY_QUANTITIES = ("power_mw", "energy_mj", "efficiency_gops_per_w")  # those the energy table moves
PHASES = ("inference", "training")


@dataclass(frozen=True)
class Measured:
    """One measured value. ``layer``: None for the whole workload; ``per``: batch or image
    (quantities in PER_QUANTITIES), else ""; ``source``: where in the paper; ``conversion``: any
    arithmetic done to reach the unit of the key."""

    quantity: str
    value: float
    layer: str | None
    per: str
    source: str
    conversion: str = ""


@dataclass(frozen=True)
class Measurement:
    name: str
    path: str  # the file, as named
    citation: str
    device: str  # hardware spec name or path (resolved from the file's folder)
    workload: str  # e2sim workload name/path, or topology name/path (the file's name for inline layers)
    topology: bool
    layers: tuple[TopologyLayer, ...] | None  # an inline layer list (forward layers, as a topology's rows)
    operand_bits: int | None
    accumulator_bits: int | None
    phase: str
    batch: int
    clock_mhz: float | None
    supply_voltage_v: float | None
    includes_dram_energy: bool
    values: tuple[Measured, ...]
    notes: str = ""


def read_measurement(path: str | Path, source: str | None = None) -> Measurement:
    """Read and check one measurement file; SpecError lists every problem with its key path
    (``source``: the file's name in messages, default its path)."""
    source = str(path) if source is None else source
    data = read_yaml_file(path)
    log = ProblemLog(source)
    top = Section.of(data, "", log)
    if top is None:
        log.raise_if_any()
    folder = Path(path).parent
    name = top.read("name", string)
    citation = top.read("citation", string)
    notes = top.read("notes", string, default="")
    device = _read_device(top.section("device"), folder)
    workload = top.section("workload")
    spec, topology, operand_bits, accumulator_bits, inline = _read_workload(workload, folder)
    phase = top.read("phase", one_of(*PHASES))
    batch = top.read("batch", at_most(positive_int, 1 << 20))
    conditions = top.section("conditions", default={})
    clock = conditions.read("clock_mhz", at_most(positive_number, 100_000, " MHz"), default=None)
    volts = conditions.read("supply_voltage_v", at_most(positive_number, 5, " V"), default=None)
    conditions.finish()
    dram = top.read("includes_dram_energy", boolean)
    values = list(_read_values(top.section("measured", default={}), None))
    layers = top.section("layers", default={})
    for layer in list(layers.data):
        values += _read_values(layers.section(layer), str(layer))
    top.finish()
    if not values and not log.problems:
        log.add("measured", "names no measured value (measured or layers)")
    if topology and phase == "training" and not log.problems:
        log.add("phase", "a topology holds forward layers only: a training measurement needs workload.name")
    log.raise_if_any()
    return Measurement(name, source, citation, device, spec or name, topology, inline, operand_bits, accumulator_bits,
                       phase, batch, clock, volts, dram, tuple(values), notes)  # fmt: skip


def _read_device(s: Section | None, folder: Path) -> str | None:
    if s is None:
        return None
    hw = s.read("hw", string)
    s.read("description", string, default="")
    s.finish()
    return None if hw is None else _relative(hw, folder)


def _read_workload(s: Section | None, folder: Path) -> tuple[Any, bool, int | None, int | None, Any]:
    if s is None:
        return None, False, None, None, None
    bits = at_most(positive_int, 64)
    if s.has("topology") or s.has("layers"):
        topology = s.read("topology", string) if s.has("topology") else None
        inline = _read_layers(s) if s.has("layers") else None
        operand_bits = s.read("operand_bits", bits, default=None)
        accumulator_bits = s.read("accumulator_bits", bits, default=None)
        s.finish(" of a topology workload")
        if s.has("topology") and s.has("layers"):
            s.log.add(s.key_path("layers"), "give topology or layers, not both")
        path = None if topology is None else _relative(topology, folder)
        return path, True, operand_bits, accumulator_bits, inline
    name = s.read("name", string)
    s.finish(" (name: an e2sim workload; or topology or layers, with operand_bits, accumulator_bits)")
    return (None if name is None else _relative(name, folder)), False, None, None, None


LAYER_SIZE = at_most(positive_int, 1 << 20)


def _read_layers(s: Section) -> tuple[TopologyLayer, ...] | None:
    """Forward layers as a SCALE-Sim topology's rows: ``{name, ifmap: [H, W] (padding included),
    filter: [R, S], channels, filters, stride}``, or ``{name, gemm: [M, N, K]}``."""
    items = s.items("layers")
    if items is None:
        return None
    layers, names = [], set()
    for path, item in items:
        layer = Section.of(item, path, s.log)
        if layer is None:
            continue
        name = layer.read("name", string)
        if layer.has("gemm"):
            gemm = layer.read_list("gemm", LAYER_SIZE, length=3)
            layer.finish(" of a GEMM layer")
            found = None if gemm is None else TopologyLayer(name, gemm=gemm)
        else:
            ifmap = layer.read_list("ifmap", LAYER_SIZE, length=2)
            kernel = layer.read_list("filter", LAYER_SIZE, length=2)
            channels = layer.read("channels", LAYER_SIZE)
            filters = layer.read("filters", LAYER_SIZE)
            stride = layer.read("stride", at_most(positive_int, 64), default=1)
            layer.finish(" of a conv layer (or name and gemm: [M, N, K])")
            parts = (ifmap, kernel, channels, filters, stride)
            found = None
            if None not in parts:
                if kernel[0] > ifmap[0] or kernel[1] > ifmap[1]:
                    s.log.add(layer.key_path("filter"), "is larger than the ifmap")
                else:
                    found = TopologyLayer(name, conv=(*ifmap, *kernel, channels, filters, stride))
        if name in names:
            s.log.add(layer.key_path("name"), f"{name!r} names two layers")
        names.add(name)
        if found is not None and name is not None:
            layers.append(found)
    return tuple(layers)


def _relative(spec: str, folder: Path) -> str:
    """A path relative to the measurement's folder when it exists there, else as written (an embedded name)."""
    candidate = folder / spec
    return str(candidate) if (Path(spec).suffix or "/" in spec) and candidate.exists() else spec


def _read_values(s: Section | None, layer: str | None) -> list[Measured]:
    if s is None:
        return []
    found = []
    for quantity in QUANTITIES:
        entry = s.section(quantity, default=None)
        if entry is None:
            continue
        value = entry.read("value", at_most(positive_number, 1e15))
        source = entry.read("source", string)
        conversion = entry.read("conversion", string, default="")
        per = entry.read("per", one_of("batch", "image"), default="batch") if quantity in PER_QUANTITIES else ""
        entry.finish(f" of a measured {quantity}")
        if value is not None and source is not None and per is not None:
            found.append(Measured(quantity, value, layer, per, source, conversion))
    s.finish(" (measured quantities, units in the key)")
    return found

