"""The report of ``e2sim run``: accuracy and energy of a training run under a policy, as JSON,
CSV tables and PNG plots. The JSON holds no host timings, so the same seed gives the same bytes."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2sim import __version__
from e2sim.config.errors import SpecError
from e2sim.config.policy import PolicySpec
from e2sim.config.workload import Workload, resolved_dict
from e2sim.hw.accelerator import Accelerator
from e2sim.report.estimate import Estimate

if TYPE_CHECKING:  # the training stack loads only for a run
    from e2sim.train.loop import TrainResult

CHECKPOINT = "checkpoint.npz"  # an unfinished run's state (after its last complete epoch), for --resume
OUTPUT_FILES = (
    CHECKPOINT,
    "run.json",
    "epochs.csv",
    "phases.csv",
    "layers.csv",
    "ops.csv",
    "sparsity.csv",
    "tensors.csv",
    "accuracy.png",
    "energy.png",
    "energy_vs_accuracy.png",
)


@dataclass(frozen=True)
class RunResult:
    """One ``e2sim run``: the workload as trained (its policy included), the hardware, the training
    (accuracy, counts, policy statistics), the graph that ran priced on the hardware, and with an
    approximate mode one inference batch priced exact and approximate. ``baseline``: the baseline
    run's report when it was compared."""

    workload: Workload
    hardware: Accelerator
    training: TrainResult
    priced: Estimate
    inference: tuple[Estimate, Estimate] | None = None
    baseline: Mapping[str, Any] | None = None

    @property
    def partial(self) -> bool:
        """The training was stopped before its end (a signal); see ``TrainResult.interrupted``."""
        return self.training.interrupted is not None

    def to_dict(self) -> dict[str, Any]:
        """The run report (JSON-able; no host timings, so the same seed gives the same bytes)."""
        report = run_report(self.training, self.priced, self.workload.policy, self.workload.training.seed,
                            self.inference)  # fmt: skip
        report["e2sim_version"] = __version__
        report["workload_spec"] = resolved_dict(self.workload)
        report["hardware_spec"] = resolved_dict(self.hardware)
        if self.baseline is not None:
            report["comparison"] = compare(report, self.baseline)
            kept = ("accuracy", "epochs", "energy", "hardware_time", "macs")
            report["baseline"] = {k: self.baseline[k] for k in kept}
        return report


def policy_dict(policy: PolicySpec) -> dict[str, Any]:
    return {"name": policy.name, **{key: vars(spec) for key, spec in policy.specs}}


def run_report(result: TrainResult, estimate: Estimate, policy: PolicySpec, seed: int,
               inference: tuple[Estimate, Estimate] | None = None) -> dict[str, Any]:  # fmt: skip
    """``inference``: one forward batch priced on the exact datapath and on the approximate mode
    (hardware with an approximate mode); the report then gains ``approximate_mode``."""
    priced = estimate.to_dict()
    skipped = result.counts.skipped_macs()
    accuracies = [e.test_accuracy for e in result.epochs]
    report = {
        "workload": result.workload,
        "hardware": priced["hardware"],
        "policy": policy_dict(policy),
        "seed": seed,
        "batch_size": result.graph.batch_size,
        "accuracy": {"final": accuracies[-1] if accuracies else None, "best": max(accuracies, default=None),
                     "per_epoch": accuracies},
        "epochs": [
            {
                "epoch": e.epoch,
                "lr": e.lr,
                "train_loss": None if math.isnan(e.train_loss) else e.train_loss,
                "train_accuracy": e.train_accuracy,
                "test_accuracy": e.test_accuracy,
                "iterations": e.iterations,
                "approximate_test_accuracy": e.approximate_test_accuracy,
            }
            for e in result.epochs
        ],
        "iterations": result.iterations,
        "energy": {
            "total_j": priced["totals"]["energy_j"],
            **({"uncertainty": priced["uncertainty"]} if "uncertainty" in priced else {}),
            "breakdown_j": priced["energy_breakdown_j"],
            "phases": priced["phases"],
            "layers": priced["layers"],
        },
        "hardware_time": {k: priced["totals"][k] for k in ("cycles", "time_s", "compute_cycles", "stall_cycles")},
        "macs": {
            "counted": priced["totals"]["macs"],
            "skipped": skipped,
            "nominal_per_iteration": result.graph.macs(),
        },
        "policy_stats": result.policy_stats,
        "sparsity": _sparsity_rows(priced),
        "ops": priced["ops"],
        "tensors": priced["tensors"],
        "energy_table": priced["energy_table"],
    }
    if inference is not None and result.epochs:
        report["approximate_mode"] = _approximate_section(result, inference)
    if result.interrupted is not None:
        stop = result.interrupted
        report["partial"] = {"signal": stop.signal, "epoch": stop.epoch, "iteration": stop.iteration,
                             "completed_epochs": len(result.epochs)}  # fmt: skip
    return report


def _sigma(energy: dict[str, Any]) -> str:
    u = energy.get("uncertainty")
    return "" if u is None else f" ± {u['energy_j_sigma']:.2g} J (1σ from the calibration fit)"


def _sparsity_rows(priced: dict[str, Any]) -> list[dict[str, Any]]:
    """The zeros the run's GEMMs saw: per PE-array op, the zero fraction of each operand as the op
    read it (x: activations, w: weights, dy: errors) and the fraction of MACs with a zero operand."""
    return [
        {"op": o["name"], "layer": o["layer"], "phase": o["phase"], "zero_fractions": o["zero_fractions"],
         "zero_mac_fraction": o["zero_macs"] / o["macs"] if o["macs"] else 0.0}
        for o in priced["ops"] if o["zero_fractions"]
    ]  # fmt: skip


def _approximate_section(result: TrainResult, inference: tuple[Estimate, Estimate]) -> dict[str, Any]:
    """Accuracy on the approximate mode and the energy of inference with and without it."""
    exact, approximate = (e.to_dict()["totals"]["energy_j"] / e.batch_size for e in inference)
    mode = result.policy_stats["approximate_mode"]
    on_mode = [e.approximate_test_accuracy for e in result.epochs]
    return {
        **mode,
        "accuracy": {"final": on_mode[-1], "best": max(on_mode), "per_epoch": on_mode},
        "inference_energy_per_image_j": {"exact": exact, "approximate": approximate},
        "inference_energy_saving": 1 - approximate / exact,
    }


def compare(report: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Savings of ``report`` against ``baseline`` (a run of the same workload on the same hardware)."""
    return {
        "baseline_energy_j": baseline["energy"]["total_j"],
        "baseline_final_accuracy": baseline["accuracy"]["final"],
        "energy_saving": 1 - report["energy"]["total_j"] / baseline["energy"]["total_j"],
        "time_saving": 1 - report["hardware_time"]["time_s"] / baseline["hardware_time"]["time_s"],
        "accuracy_change_points": 100 * (report["accuracy"]["final"] - baseline["accuracy"]["final"]),
    }


def format_run(report: dict[str, Any]) -> str:
    hw, acc, energy = report["hardware"], report["accuracy"], report["energy"]
    lines = [
        f"{report['workload']} with policy {report['policy']['name']} on {hw['name']} ({hw['pe_array']}, "
        f"{hw['clock_mhz']:g} MHz): {len(report['epochs'])} epochs, {report['iterations']:,} iterations",
    ]
    if "partial" in report:
        p = report["partial"]
        lines.append(f"PARTIAL: stopped by {p['signal']} in epoch {p['epoch']} after {p['iteration']} of its "
                     f"iterations; {p['completed_epochs']} epochs complete (energy counts everything that "
                     "ran)")  # fmt: skip
    synthetic = (report.get("workload_spec") or {}).get("dataset", {}).get("name") == "synthetic"
    accuracy = (f"test accuracy {acc['final']:.2%} (best {acc['best']:.2%})" if acc["final"] is not None
                else "test accuracy: no epoch completed")  # fmt: skip
    lines += [
        accuracy + (" on synthetic data (random labels: chance)" if synthetic else ""),
        f"training energy {energy['total_j']:.4g} J{_sigma(energy)}, "
        f"simulated time {report['hardware_time']['time_s']:.4g} s, "
        f"{report['macs']['counted']:,.0f} MACs executed, {report['macs']['skipped']:,.0f} skipped",
        "energy by component: " + ", ".join(f"{k} {v:.3g} J" for k, v in energy["breakdown_j"].items()),
        "energy by phase: " + ", ".join(f"{k} {v['energy_j']:.3g} J" for k, v in energy["phases"].items()),
    ]
    if "approximate_mode" in report:
        a = report["approximate_mode"]
        lines.append(
            f"on the approximate mode ({a['multiplier']}, {a['supply_voltage_v']:g} V, bit-error rate "
            f"{a['bit_error_rate']:.3g}): test accuracy {a['accuracy']['final']:.2%}; inference "
            f"{a['inference_energy_per_image_j']['approximate']:.4g} J/image against "
            f"{a['inference_energy_per_image_j']['exact']:.4g} J exact ({a['inference_energy_saving']:.1%} saved)"
        )
    inputs = [(s["layer"], s["zero_fractions"]["x"]) for s in report["sparsity"] if s["phase"] == "fwd"
              and "x" in s["zero_fractions"]]  # fmt: skip
    if inputs:
        zero_macs = sum(s["zero_mac_fraction"] * o["macs"] for s, o in zip(report["sparsity"], (
            o for o in report["ops"] if o["zero_fractions"]), strict=True))  # fmt: skip
        lines.append("zeros in conv/linear inputs (forward): " + ", ".join(f"{layer} {z:.2f}" for layer, z in inputs)
                     + f"; MACs with a zero operand: {zero_macs / max(report['macs']['counted'], 1):.1%}")
    for technique, stats in report["policy_stats"].items():
        if technique == "approximate_mode":
            continue
        lines.append(f"{technique}: " + ", ".join(f"{k} {_stat_text(v)}" for k, v in stats.items()))
    if "comparison" in report:
        c = report["comparison"]
        lines.append(
            f"against the baseline ({c['baseline_energy_j']:.4g} J, {c['baseline_final_accuracy']:.2%}): "
            f"energy saving {c['energy_saving']:.1%}, accuracy {c['accuracy_change_points']:+.2f} points"
        )
    return "\n".join(lines)


def _stat_text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + " ".join(_stat_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {_stat_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def prepare_output_dir(out: Path) -> None:
    """Create ``out``, or reuse it when everything in it was written by an earlier run."""
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a directory")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_FILES)
        if foreign:
            raise FileExistsError(
                f"{out}: holds files e2sim did not write ({', '.join(foreign[:3])}); choose a new or empty directory"
            )
    out.mkdir(parents=True, exist_ok=True)


EPOCH_FIELDS = ("epoch", "lr", "train_loss", "train_accuracy", "test_accuracy", "iterations",
                "approximate_test_accuracy")  # fmt: skip


def provenance_line(report: dict[str, Any]) -> str:
    """The first line of every CSV of a run: what produced it (the resolved specs are in run.json)."""
    hw, approximate = report["hardware"], report.get("approximate_mode")
    mode = "none" if approximate is None else f"{approximate['multiplier']} at {approximate['supply_voltage_v']:g} V"
    table = report["energy_table"]["table"]
    return (f"# e2sim {report.get('e2sim_version', '?')} | workload {report['workload']} (resolved: run.json "
            f"workload_spec) | hardware {hw['name']} ({hw['source']}) | energy table {table} | "
            f"policy {report['policy']['name']} | approximate mode {mode}")  # fmt: skip


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: tuple[str, ...] = (), header: str = "") -> None:
    with open(path, "w", newline="") as f:
        if header:
            f.write(header + "\n")
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(fields))
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(out: Path, report: dict[str, Any], baseline: dict[str, Any] | None) -> list[Path]:
    prepare_output_dir(out)
    (out / "run.json").write_text(json.dumps(report, indent=1) + "\n")
    header = provenance_line(report)
    _write_csv(out / "epochs.csv", report["epochs"], EPOCH_FIELDS, header)
    phases = [{"phase": p, **v} for p, v in report["energy"]["phases"].items()]
    _write_csv(out / "phases.csv", phases, header=header)
    _write_csv(out / "layers.csv", report["energy"]["layers"], header=header)
    _write_csv(
        out / "ops.csv",
        [
            {
                "name": o["name"],
                "layer": o["layer"],
                "phase": o["phase"],
                "kind": o["kind"],
                "macs": o["macs"],
                "executions": o["executions"],
                "cycles": o["cycles"],
                "stall_cycles": o["stall_cycles"],
                "energy_j": o["energy_j"],
                **{f"{k}_j": v for k, v in o["energy_breakdown_j"].items()},
            }
            for o in report["ops"]
        ],
        header=header,
    )
    if report["sparsity"]:
        _write_csv(out / "sparsity.csv", [
            {"op": s["op"], "layer": s["layer"], "phase": s["phase"], "zero_mac_fraction": s["zero_mac_fraction"],
             **{f"zero_fraction_{k}": s["zero_fractions"].get(k, "") for k in ("x", "w", "dy")}}
            for s in report["sparsity"]
        ], header=header)  # fmt: skip
    _write_csv(out / "tensors.csv", [{k: v for k, v in t.items() if k != "consumers"} for t in report["tensors"]],
               header=header)  # fmt: skip
    _plot(out, report, baseline)
    return [out / name for name in OUTPUT_FILES if name != CHECKPOINT and (out / name).exists()]


COLORS = {"run": "tab:green", "baseline": "tab:gray", "approximate": "tab:purple"}


def _plot(out: Path, report: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    """accuracy.png (per epoch; the baseline and the approximate-mode accuracy when there),
    energy.png (by component and phase; the baseline's bars beside the run's) and
    energy_vs_accuracy.png, in one colour per run throughout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    label = f"{report['policy']['name']}"
    runs = [(report, label, COLORS["run"])] + ([(baseline, "baseline", COLORS["baseline"])] if baseline else [])
    fig, ax = plt.subplots(figsize=(6, 4))
    for r, name, color in runs:
        epochs = [e["epoch"] for e in r["epochs"]]
        ax.plot(epochs, [100 * a for a in r["accuracy"]["per_epoch"]], marker="o", color=color, label=name)
        approximate = [e.get("approximate_test_accuracy") for e in r["epochs"]]
        if r is report and any(a is not None for a in approximate):
            ax.plot(epochs, [100 * a if a is not None else float("nan") for a in approximate], marker="s", ls="--",
                    color=COLORS["approximate"], label=f"{name} on the approximate mode")  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{report['workload']}: accuracy per epoch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(runs)
    for k, (r, name, color) in enumerate(runs):
        components = r["energy"]["breakdown_j"]
        offset = (k - (len(runs) - 1) / 2) * width
        left.bar([i + offset for i in range(len(components))], list(components.values()), width, color=color,
                 label=name)  # fmt: skip
        phases = r["energy"]["phases"]
        right.bar([i + offset for i in range(len(phases))], [v["energy_j"] for v in phases.values()], width,
                  color=color, label=name)  # fmt: skip
    left.set_xticks(range(len(report["energy"]["breakdown_j"])), list(report["energy"]["breakdown_j"]), rotation=30)
    right.set_xticks(range(len(report["energy"]["phases"])), list(report["energy"]["phases"]))
    left.set(ylabel="energy (J)", title="energy by component")
    right.set(ylabel="energy (J)", title="energy by phase")
    if baseline:
        left.legend()
    fig.suptitle(f"{report['workload']} ({label}) on {report['hardware']['name']}")
    fig.tight_layout()
    fig.savefig(out / "energy.png", dpi=120)
    plt.close(fig)
    plot_energy_accuracy([(r, name) for r, name, _ in runs], out / "energy_vs_accuracy.png",
                         [color for _, _, color in runs])  # fmt: skip


RUN_KEYS = ("workload", "policy", "accuracy", "energy", "hardware")


def read_run_report(path: Path) -> tuple[dict[str, Any], str]:
    """A run report (``run.json``, or a directory holding one) and a label for it: policy, workload,
    hardware and the folder. A file that is not a run report is a one-line error."""
    file = path / "run.json" if path.is_dir() else path
    try:
        report = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError.single(str(file), "", f"cannot be read as a run report ({type(exc).__name__})") from None
    missing = [k for k in RUN_KEYS if not isinstance(report, dict) or k not in report]
    if missing:
        raise SpecError.single(str(file), missing[0], "missing: not an e2sim run report")
    folder = file.parent.name or "."
    label = f"{report['policy']['name']} ({report['workload']} on {report['hardware']['name']}, {folder})"
    return report, label


def plot_energy_accuracy(runs: list[tuple[dict[str, Any], str]], path: Path, colors: list[str] | None = None) -> None:
    """Final test accuracy against training energy, one labelled point per run report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (r, name) in enumerate(runs):
        if r["accuracy"]["final"] is None:
            continue
        color = colors[k] if colors else f"C{k}"
        ax.scatter(r["energy"]["total_j"], 100 * r["accuracy"]["final"], s=80, color=color, label=name)
        ax.annotate(name, (r["energy"]["total_j"], 100 * r["accuracy"]["final"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)  # fmt: skip
    ax.set(xlabel="training energy (J)", ylabel="final test accuracy (%)", title="energy vs accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
