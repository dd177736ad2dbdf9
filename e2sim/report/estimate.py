"""The estimate report: totals, energy by component, phase and layer, and one row per op."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from e2sim.energy.account import OpReport, operand_tensors
from e2sim.energy.actions import COMPONENTS, Action, Arithmetic
from e2sim.energy.parameters import energy_sigma_j
from e2sim.energy.sparsity import TensorSparsity
from e2sim.energy.tables import EnergyTable
from e2sim.graph.ir import PHASES, Tensor
from e2sim.hw.accelerator import Accelerator
from e2sim.schedule.residency import Placement


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
    placements: Mapping[str, Placement] = field(default_factory=dict)
    fusion: bool = True
    objective: str = "energy"
    sparsity: Mapping[str, TensorSparsity] = field(default_factory=dict)
    storage: Mapping[str, float] = field(default_factory=dict)
    approximate: Mapping[str, Any] | None = None  # the approximate mode that priced some ops, and which
    prices: Mapping[Action, float] = field(default_factory=dict)  # pJ of each counted action
    gradients: Mapping[Action, tuple[float, ...]] = field(default_factory=dict)  # ∂pJ/∂ fitted parameter
    arithmetic: Arithmetic | None = None  # the number formats that priced the MACs

    @property
    def energy_sigma_j(self) -> float | None:
        """1σ of the energy from a calibrated spec's fit (linear propagation through the action
        counts; the mapping is held); None on an uncalibrated spec."""
        fit = self.hardware.calibration
        if fit is None:
            return None
        return energy_sigma_j(self.actions(), self.gradients, fit.covariance())

    def uncertainty(self) -> dict[str, Any] | None:
        """The error bars' provenance for reports, or None on an uncalibrated spec."""
        fit = self.hardware.calibration
        if fit is None:
            return None
        return {"energy_j_sigma": self.energy_sigma_j, "time_s_sigma": 0.0,
                "method": "linear propagation of the fit's covariance through the action counts (mapping held); "
                          "no fitted parameter changes time",
                "parameters": [{"name": n, "value": v, "standard_error": e}
                               for n, v, e in zip(fit.parameters, fit.values, fit.standard_errors, strict=True)],
                "measurements": list(fit.measurements)}  # fmt: skip

    @property
    def energy_j(self) -> float:
        return sum(r.energy_j for r in self.rows)

    @property
    def cycles(self) -> float:
        return sum(r.cycles for r in self.rows)

    @property
    def time_s(self) -> float:
        return self.cycles / (self.hardware.clock_mhz * 1e6)

    def actions(self) -> dict[Action, float]:
        """Count of every action over all ops (energy = Σ count × ``prices``)."""
        total: dict[Action, float] = {}
        for r in self.rows:
            for action, count in r.actions.items():
                total[action] = total.get(action, 0.0) + count
        return dict(sorted(total.items()))

    def action_rows(self) -> list[dict[str, Any]]:
        """One JSON row per action: its count, price and energy."""
        return [{"action": str(a), "component": a.component, "count": n, "pj_each": self.prices[a],
                 "energy_j": n * self.prices[a] * 1e-12} for a, n in self.actions().items()]  # fmt: skip

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
                    "operands": operand_tensors(r.op, r.cost),
                    "sram_reads": {k: v * r.data_scale for k, v in r.cost.sram_reads.items()},
                    "sram_writes": {k: v * r.data_scale for k, v in r.cost.sram_writes.items()},
                    "buffer_bits": {k: v * r.data_scale for k, v in r.cost.sram_bits.items()},
                    "dram_reads_bytes": {k: v * r.data_scale for k, v in r.cost.dram_reads.items()},
                    "dram_writes_bytes": {k: v * r.data_scale for k, v in r.cost.dram_writes.items()},
                    "dram_bytes": r.cost.dram_bytes * r.data_scale,
                    "zero_macs": r.zero_macs, "zero_fractions": dict(r.zero_fractions),
                    **({"mapping": r.cost.mapping.as_dict(r.cost.nest.kinds)} if r.cost.mapping else {}),
                }
            )  # fmt: skip
        hw = self.hardware
        return {
            "workload": self.workload,
            "hardware": {"name": hw.name, "source": hw.source, "technology": hw.technology, "clock_mhz": hw.clock_mhz,
                         "pe_array": f"{hw.pe_array.rows}x{hw.pe_array.cols} {hw.pe_array.dataflow}",
                         "supply_voltage_v": hw.supply_voltage_v or self.table["nominal_supply_v"],
                         "dma_overlaps_compute": hw.dram.overlaps_compute,
                         "assumptions": [{"key": k, "value": v} for k, v in hw.assumptions],
                         "sparsity": {"zero_gating": hw.sparsity.zero_gating,
                                      "skip_zero_cycles": hw.sparsity.skip_zero_cycles,
                                      "compression": hw.sparsity.compression}},
            "batch_size": self.batch_size,
            "forward_only": self.forward_only,
            "counted": self.counted,
            "fusion": self.fusion,
            "mapping_objective": self.objective,
            "approximate_mode": dict(self.approximate) if self.approximate is not None else None,
            "totals": {
                "energy_j": self.energy_j, "cycles": self.cycles, "time_s": self.time_s,
                "macs": sum(p["macs"] for p in phases.values()),
                "compute_cycles": sum(r.compute_cycles for r in self.rows),
                "stall_cycles": sum(r.stall_cycles for r in self.rows),
                "dram_bytes": sum(o["dram_bytes"] for o in ops),
            },
            "energy_breakdown_j": breakdown,
            **({"uncertainty": u} if (u := self.uncertainty()) is not None else {}),
            "actions": self.action_rows(),
            "phases": phases,
            "layers": list(layers.values()),
            "ops": ops,
            "tensors": self.tensor_rows(),
            "energy_table": self.table.provenance(),
        }  # fmt: skip

    def tensor_rows(self) -> list[dict[str, Any]]:
        """DRAM bytes per tensor (all its producer's and readers' traffic, re-fetches included) and
        where it lived, with the reason."""
        moved: dict[str, list[float]] = {}
        for r in self.rows:
            for m in r.cost.moves:
                name = self.tensors[m.tensor].alias_of or m.tensor
                entry = moved.setdefault(name, [0.0, 0.0, 1.0])
                entry[1 if m.write else 0] += m.dram_bytes * r.data_scale
                entry[2] = max(entry[2], m.times)
        rows = []
        for name, p in self.placements.items():
            read, written, times = moved.get(name, (0.0, 0.0, 1.0))
            found = self.sparsity.get(name)
            rows.append({"tensor": name, "bytes": p.bytes, "placement": p.placement, "dram_read_bytes": read,
                         "dram_write_bytes": written, "max_refetch": times, "producer": p.producer,
                         "consumers": list(p.consumers), "reason": p.reason,
                         "density": found.density if found else None,
                         "density_measured": found.measured if found else None,
                         "stored_fraction": self.storage.get(name, 1.0)})  # fmt: skip
        return rows


def _sigma(report: dict[str, Any]) -> str:
    """`` ± σ`` of a calibrated spec's energy, or nothing."""
    u = report.get("uncertainty")
    return "" if u is None else f" ± {_si(u['energy_j_sigma'], 'J')} (1σ from the fit; time has no fitted parameter)"


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
        f"energy {_si(t['energy_j'], 'J')}{_sigma(report)}, time {_si(t['time_s'], 's')} ({t['cycles']:,.0f} cycles, "
        f"{t['stall_cycles'] / max(t['cycles'], 1):.1%} stalled), {t['macs']:,.0f} MACs, "
        f"DRAM {t['dram_bytes'] / 1e6:,.3f} MB",
        *(
            [
                f"priced on the approximate mode ({a['multiplier']}, {a['supply_voltage_v']:g} V): "
                f"{len(a['ops'])} forward conv/linear ops"
            ]
            if (a := report.get("approximate_mode"))
            else []
        ),
        "energy by component: " + ", ".join(f"{k} {_si(v, 'J')}" for k, v in report["energy_breakdown_j"].items()),
        f"mappings minimise {report['mapping_objective']}; "
        + ("fusion and residency across the iteration" if report["fusion"] else "layer by layer (no fusion)"),
    ]
    head += [f"assumed: {a['key']} = {a['value']}" for a in hw["assumptions"]]
    phases = _table(["phase", "energy", "cycles", "MACs"],
                    [[p, _si(v["energy_j"], "J"), f"{v['cycles']:,.0f}", f"{v['macs']:,.0f}"]
                     for p, v in report["phases"].items()])  # fmt: skip
    layers = _table(["layer", "kind", "energy", "cycles", "MACs"],
                    [[r["layer"], r["kind"], _si(r["energy_j"], "J"), f"{r['cycles']:,.0f}", f"{r['macs']:,.0f}"]
                     for r in report["layers"]])  # fmt: skip
    mappings = _table(
        ["op", "array", "buffer tile (n k c p q r s)", "DRAM loops", "stationary", "refetch A/B/out", "util"],
        [[o["name"], " ".join(f"{s['axis']}={s['extent']}" for s in o["mapping"]["spatial"]),
          " ".join(str(v) for v in o["mapping"]["buffer_tile"].values()),
          " ".join(f"{d['dim']}{d['count']}" for d in o["mapping"]["dram_loops"]) or "-", o["mapping"]["stationary"],
          "/".join(f"{v:g}" for v in o["mapping"]["refetch"].values()), f"{o['mapping']['utilisation']:.0%}"]
         for o in report["ops"] if "mapping" in o],
    )  # fmt: skip
    tensors = report["tensors"]
    placed = {}
    for row in tensors:
        entry = placed.setdefault(row["placement"], [0, 0.0])
        entry[0] += 1
        entry[1] += row["dram_read_bytes"] + row["dram_write_bytes"]
    summary = "tensors: " + ", ".join(f"{k} {n} ({b / 1e6:,.3f} MB of DRAM traffic)" for k, (n, b) in placed.items())
    heavy = sorted(tensors, key=lambda r: -(r["dram_read_bytes"] + r["dram_write_bytes"]))[:10]
    top = _table(["tensor", "MB to/from DRAM", "placement", "reason"],
                 [[r["tensor"], f"{(r['dram_read_bytes'] + r['dram_write_bytes']) / 1e6:,.3f}", r["placement"],
                   r["reason"] + (f"; re-fetched x{r['max_refetch']:g} by its reader's tiling"
                                  if r["max_refetch"] > 1 else "")] for r in heavy])  # fmt: skip
    source = f"energy table: {report['energy_table']['table']} ({report['energy_table']['description']})"
    return "\n".join([*head, "", *phases, "", *layers, "", *mappings, "", summary, *top, "", source])
