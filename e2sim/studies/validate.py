"""Predicted against measured: every measured value of a measurement file, predicted by pricing
its workload on its device at its operating point, with the relative error; mean absolute
percentage errors per source and overall; a log-log plot with the y = x line and ±20% bands.

A prediction keeps what produced it (:class:`Observation`: the action counts in the measured
scope, the time, the operations and DRAM bytes), so calibration can re-price it at other
energy-table values without mapping again."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2sim.config.errors import SpecError
from e2sim.config.loading import embedded_dir, read_hardware_spec, resolve_spec, topology_path
from e2sim.config.measurement import ENERGY_QUANTITIES, Measured, Measurement, read_measurement
from e2sim.energy.actions import PJ, Action, Arithmetic
from e2sim.energy.parameters import prices_at
from e2sim.hw import Accelerator
from e2sim.report.estimate import Estimate
from e2sim.studies.single import prepare, price, price_topology

PRICING = (True, "energy")  # fusion and residency on, mappings that minimise energy (as `e2sim estimate`)


def load_measurement(spec: str | Path) -> Measurement:
    """A measurement file by path, or the name of one shipped with e2sim."""
    path = resolve_spec(spec, "measurement")
    embedded = path.parent == embedded_dir("measurement") and not Path(spec).exists()
    return read_measurement(path, f"measurements/{path.name} (embedded)" if embedded else str(spec))


@dataclass(frozen=True)
class Observation:
    """One measured value and what predicts it. ``counts``: the actions whose energy the
    measurement includes (DRAM only when it was measured); ``seconds``, ``operations`` (2 × MACs)
    and ``dram_bytes`` of the measured scope (the workload, or one layer); ``images``: per batch."""

    measurement: Measurement
    measured: Measured
    hw: Accelerator
    arithmetic: Arithmetic
    counts: Mapping[Action, float]
    prices: Mapping[Action, float]
    seconds: float
    operations: float
    dram_bytes: float
    images: int

    @property
    def energy_dependent(self) -> bool:
        return self.measured.quantity in ENERGY_QUANTITIES

    def predict(self, prices: Mapping[Action, float] | None = None) -> float:
        """The quantity in its unit, with ``prices`` (default: those it was priced with)."""
        prices = self.prices if prices is None else prices
        joules = sum(n * prices[a] for a, n in self.counts.items()) * PJ
        per = self.images if self.measured.per == "image" else 1
        q = self.measured.quantity
        if q == "power_mw":
            return joules / self.seconds * 1e3
        if q == "energy_mj":
            return joules / per * 1e3
        if q == "latency_ms":
            return self.seconds / per * 1e3
        if q == "dram_mb":
            return self.dram_bytes / per / 1e6
        if q == "throughput_gops":
            return self.operations / self.seconds / 1e9
        return self.operations / joules / 1e9  # efficiency_gops_per_w

    def predict_at(self, names: Sequence[str], values: Sequence[float]) -> float:
        """The quantity with ``values`` for the price parameters ``names`` (same action counts)."""
        return self.predict(prices_at(self.hw, self.arithmetic, self.counts, names, values))


def device_of(m: Measurement, hw: Accelerator | None = None) -> Accelerator:
    """The measured device at the measurement's operating point (``hw`` instead of its own spec)."""
    if hw is None:
        try:
            hw = read_hardware_spec(m.device)
        except SpecError as exc:
            raise SpecError.single(m.path, "device.hw", f"{m.device!r} does not load: {exc.problems[0]}") from None
    changes = {k: v for k, v in (("clock_mhz", m.clock_mhz), ("supply_voltage_v", m.supply_voltage_v)) if v is not None}
    return dataclasses.replace(hw, **changes) if changes else hw


def predict_measurement(m: Measurement, hw: Accelerator | None = None) -> tuple[Estimate, list[Observation]]:
    """Price ``m``'s workload on its device (or ``hw``) and pair each measured value with its prediction."""
    device = device_of(m, hw)
    try:
        if m.layers is not None:
            estimate = price_topology(m.layers, device, m.batch, m.operand_bits, m.accumulator_bits, PRICING, None,
                                      m.name)  # fmt: skip
        elif m.topology:
            path = topology_path(m.workload)
            if path is None or not path.exists():
                raise SpecError.single(m.path, "workload.topology", f"no topology {m.workload!r} (a .csv path from "
                                       "this file, or a shipped name such as alexnet-conv)")  # fmt: skip
            estimate = price_topology(path, device, m.batch, m.operand_bits, m.accumulator_bits, PRICING, None)
        else:
            prepared = prepare(resolve_spec(m.workload, "workload"), m.batch)
            estimate = price(prepared.workload, prepared.graph, device, None, m.phase == "inference", False, PRICING,
                             None)  # fmt: skip
    except SpecError as exc:
        if exc.problems[0].source == m.path:
            raise
        raise SpecError.single(m.path, "workload", f"{m.workload!r} does not price: {exc.problems[0]}") from None
    layers = {r.op.layer for r in estimate.rows}
    observations = []
    for value in m.values:
        if value.layer is not None and value.layer not in layers:
            raise SpecError.single(m.path, f"layers.{value.layer}", f"no layer of that name in {m.workload} "
                                   f"(layers: {', '.join(sorted(layers))})")  # fmt: skip
        rows = [r for r in estimate.rows if value.layer is None or r.op.layer == value.layer]
        counts: dict[Action, float] = {}
        for r in rows:
            for action, n in r.actions.items():
                if m.includes_dram_energy or action.component != "dram":
                    counts[action] = counts.get(action, 0.0) + n
        seconds = sum(r.cycles for r in rows) / (device.clock_mhz * 1e6)
        operations = 2 * sum(sum(r.macs.values()) for r in rows)
        dram = sum(r.cost.dram_bytes * r.data_scale for r in rows)
        observations.append(Observation(m, value, device, estimate.arithmetic, counts, estimate.prices, seconds,
                                        operations, dram, m.batch))  # fmt: skip
    return estimate, observations


@dataclass(frozen=True)
class Row:
    """One measured value against its prediction."""

    measurement: str
    citation: str
    device: str
    quantity: str
    layer: str | None
    per: str
    measured: float
    predicted: float
    source: str
    conversion: str

    @property
    def error(self) -> float:
        """Relative error of the prediction: predicted / measured − 1."""
        return self.predicted / self.measured - 1

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "relative_error": self.error}


def row_of(o: Observation, predicted: float | None = None) -> Row:
    m, v = o.measurement, o.measured
    return Row(m.name, m.citation, o.hw.name, v.quantity, v.layer, v.per, v.value,
               o.predict() if predicted is None else predicted, v.source, v.conversion)  # fmt: skip


def mape(rows: Sequence[Row]) -> float | None:
    """Mean absolute percentage error (%), or None without rows."""
    return 100 * sum(abs(r.error) for r in rows) / len(rows) if rows else None


def by_citation(rows: Sequence[Row]) -> dict[str, float | None]:
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.citation, []).append(r)
    return {c: mape(g) for c, g in sorted(groups.items())}


def features_of(hw: Accelerator) -> dict[str, Any]:
    """Which parts of the model priced this device."""
    return {
        "source": hw.source, "technology": hw.technology, "clock_mhz": hw.clock_mhz,
        "supply_voltage_v": hw.supply_voltage_v, "pe_array": f"{hw.pe_array.rows}x{hw.pe_array.cols}",
        "dataflow": hw.pe_array.dataflow, "buffers": sorted(hw.buffers), "dram": hw.dram.type,
        "dma_overlaps_compute": hw.dram.overlaps_compute, "zero_gating": hw.sparsity.zero_gating,
        "compression": hw.sparsity.compression, "fusion_and_residency": PRICING[0],
        "energy_overrides": sorted(hw.energy_overrides or {}), "calibrated": hw.calibration is not None,
        "assumptions": [k for k, _ in hw.assumptions],
    }  # fmt: skip


@dataclass(frozen=True)
class Validation:
    rows: tuple[Row, ...]
    devices: Mapping[str, dict[str, Any]]
    measurements: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "measurements": list(self.measurements),
            "rows": [r.to_dict() for r in self.rows],
            "mape_percent": {"overall": mape(self.rows), "by_source": by_citation(self.rows)},
            "devices": dict(sorted(self.devices.items())),
        }

    def plot(self, path: Path) -> None:
        plot_rows(self.rows, path, "e2sim: predicted against measured")


def validate_measurements(measurements: Sequence[Measurement], hw: Accelerator | None = None) -> Validation:
    """Predicted against measured for every value of ``measurements`` (on ``hw`` when given)."""
    rows, devices = [], {}
    for m in measurements:
        estimate, observations = predict_measurement(m, hw)
        devices[estimate.hardware.name] = features_of(estimate.hardware)
        rows += [row_of(o) for o in observations]
    return Validation(tuple(rows), devices, tuple(m.name for m in measurements))


def plot_rows(rows: Sequence[Row], path: Path, title: str) -> None:
    """Log-log predicted against measured, one panel per quantity, with y = x and ±20% bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quantities = sorted({r.quantity for r in rows})
    fig, axes = plt.subplots(1, len(quantities), figsize=(4.2 * len(quantities), 4.2), squeeze=False)
    sources = sorted({r.citation for r in rows})
    markers = "osD^v<>PX*"
    for ax, quantity in zip(axes[0], quantities, strict=True):
        chosen = [r for r in rows if r.quantity == quantity]
        values = [v for r in chosen for v in (r.measured, r.predicted)]
        low, high = min(values) / 2, max(values) * 2
        line = [low, high]
        ax.plot(line, line, color="black", lw=1, label="y = x")
        ax.fill_between(line, [v * 0.8 for v in line], [v * 1.2 for v in line], color="grey", alpha=0.2,
                        label="±20%")  # fmt: skip
        for i, source in enumerate(sources):
            mine = [r for r in chosen if r.citation == source]
            if mine:
                ax.scatter([r.measured for r in mine], [r.predicted for r in mine], marker=markers[i % len(markers)],
                           label=source[:40])  # fmt: skip
        ax.set(xscale="log", yscale="log", xlim=line, ylim=line, xlabel=f"measured {quantity}",
               ylabel=f"predicted {quantity}", title=quantity)  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
