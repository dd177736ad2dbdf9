"""The estimate report: totals, energy by component, phase and layer, and one row per op."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e2sim.energy.account import COMPONENTS, OpReport, operand_tensors
from e2sim.energy.tables import EnergyTable
from e2sim.graph.ir import PHASES, Tensor
from e2sim.hw.accelerator import Accelerator


@dataclass(frozen=True)
class Estimate:
    workload: str
    hardware: Accelerator
    batch_size: int
    forward_only: bool
    rows: tuple[OpReport, ...]
    tensors: dict[str, Tensor]
    table: EnergyTable
    counted: bool  # priced from a training run's counts (else one nominal iteration)

    @property
    def energy_j(self) -> float:
        return sum(r.energy_j for r in self.rows)

    @property
    def cycles(self) -> float:
        return sum(r.cycles for r in self.rows)

    @property
    def time_s(self) -> float:
        return self.cycles / (self.hardware.clock_mhz * 1e6)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with stable keys."""
        breakdown = dict.fromkeys(COMPONENTS, 0.0)
        phases = {p: {"energy_j": 0.0, "cycles": 0.0, "macs": 0.0} for p in PHASES}
        layers: dict[str, dict] = {}
        ops = []
        for r in self.rows:
            for component, joules in r.energy.items():
                breakdown[component] += joules
            macs = sum(r.macs.values())
            phase = phases[r.op.phase]
            phase["energy_j"] += r.energy_j
            phase["cycles"] += r.cycles
            phase["macs"] += macs
            layer = layers.setdefault(r.op.layer, {"layer": r.op.layer, "kind": r.op.layer_kind, "energy_j": 0.0,
                                                   "cycles": 0.0, "macs": 0.0})  # fmt: skip
            layer["energy_j"] += r.energy_j
            layer["cycles"] += r.cycles
            layer["macs"] += macs
            ops.append(
                {
                    "name": r.op.name, "layer": r.op.layer, "layer_kind": r.op.layer_kind, "phase": r.op.phase,
                    "kind": r.op.kind, "macs": macs, "macs_by_bits": dict(r.macs), "executions": r.runs,
                    "compute_cycles": r.compute_cycles, "stall_cycles": r.stall_cycles, "cycles": r.cycles,
                    "energy_j": r.energy_j, "energy_breakdown_j": dict(r.energy),
                    "operands": operand_tensors(r.op, self.tensors),
                    "sram_reads": {k: v * r.data_scale for k, v in r.cost.sram_reads.items()},
                    "sram_writes": {k: v * r.data_scale for k, v in r.cost.sram_writes.items()},
                    "dram_reads_bytes": {k: v * r.data_scale for k, v in r.cost.dram_reads.items()},
                    "dram_writes_bytes": {k: v * r.data_scale for k, v in r.cost.dram_writes.items()},
                }
            )  # fmt: skip
        hw = self.hardware
        return {
            "workload": self.workload,
            "hardware": {"name": hw.name, "source": hw.source, "technology": hw.technology, "clock_mhz": hw.clock_mhz,
                         "pe_array": f"{hw.pe_array.rows}x{hw.pe_array.cols} {hw.pe_array.dataflow}"},
            "batch_size": self.batch_size,
            "forward_only": self.forward_only,
            "counted": self.counted,
            "totals": {
                "energy_j": self.energy_j, "cycles": self.cycles, "time_s": self.time_s,
                "macs": sum(p["macs"] for p in phases.values()),
                "compute_cycles": sum(r.compute_cycles for r in self.rows),
                "stall_cycles": sum(r.stall_cycles for r in self.rows),
            },
            "energy_breakdown_j": breakdown,
            "phases": phases,
            "layers": list(layers.values()),
            "ops": ops,
            "energy_table": self.table.provenance(),
        }  # fmt: skip


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p")):
        if abs(value) >= factor or factor == 1e-12:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value} {unit}"


def _row(cells: list, widths: list[int]) -> str:
    first, rest = str(cells[0]).ljust(widths[0]), [str(v).rjust(w) for v, w in zip(cells[1:], widths[1:], strict=True)]
    return "  ".join([first, *rest])


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    top = _row(header, widths)
    return [top, "-" * len(top), *(_row(r, widths) for r in rows)]


def format_estimate(report: dict[str, Any]) -> str:
    t = report["totals"]
    hw = report["hardware"]
    what = "the counted training run" if report["counted"] else (
        "one forward pass" if report["forward_only"] else "one training iteration")  # fmt: skip
    head = [
        f"{report['workload']} on {hw['name']} ({hw['pe_array']}, {hw['clock_mhz']:g} MHz, {hw['technology']}): "
        f"{what} at batch {report['batch_size']}",
        f"energy {_si(t['energy_j'], 'J')}, time {_si(t['time_s'], 's')} ({t['cycles']:,.0f} cycles, "
        f"{t['stall_cycles'] / max(t['cycles'], 1):.1%} stalled), {t['macs']:,.0f} MACs",
        "energy by component: " + ", ".join(f"{k} {_si(v, 'J')}" for k, v in report["energy_breakdown_j"].items()),
    ]
    phases = _table(["phase", "energy", "cycles", "MACs"],
                    [[p, _si(v["energy_j"], "J"), f"{v['cycles']:,.0f}", f"{v['macs']:,.0f}"]
                     for p, v in report["phases"].items()])  # fmt: skip
    layers = _table(["layer", "kind", "energy", "cycles", "MACs"],
                    [[r["layer"], r["kind"], _si(r["energy_j"], "J"), f"{r['cycles']:,.0f}", f"{r['macs']:,.0f}"]
                     for r in report["layers"]])  # fmt: skip
    source = f"energy table: {report['energy_table']['table']} ({report['energy_table']['description']})"
    return "\n".join([*head, "", *phases, "", *layers, "", source])
