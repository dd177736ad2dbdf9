"""The report of ``e2sim search``: the best networks under each constraint with their metrics,
reward and constraint-satisfaction curves over the steps, a scatter of every child (accuracy
against training energy per iteration) with its front, and each best network as a workload YAML
that ``e2sim run`` trains. The JSON holds no host timings: the same search gives the same bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from e2sim.config.search import CONSTRAINTS

METRICS = ("accuracy", "parameters", "flops", "flops_per_byte", "energy_per_iteration_j", "time_per_iteration_s")
OUTPUT_FILES = ("search.json", "children.csv", "curves.png", "children.png")


def search_report(result: Any) -> dict[str, Any]:
    spec = result.spec
    children = [{"key": c["key"], "architecture": c["params"]["architecture"], "step": c["params"]["step"],
                 "status": c["status"], "error": c["error"], "network": c["params"]["network"],
                 "metrics": c["metrics"], "reward": result.reward(c)} for c in result.children]  # fmt: skip
    best = {label: (None if c is None else c["key"]) for label, c in result.best().items()}
    front = result.front()
    return {
        "search": spec.name, "sampler": spec.sampler, "seed_workload": spec.seed, "hardware": spec.hardware,
        "constraints": [{"metric": n, CONSTRAINTS[n]: v} for n, v in spec.constraints],
        "penalty": spec.penalty, "evaluated": len(children),
        "history": list(result.history), "best": best, "front": list(front), "children": children,
    }  # fmt: skip




def format_search(report: dict[str, Any]) -> str:
    by_key = {c["key"]: c for c in report["children"]}
    lines = [f"search {report['search']} ({report['sampler']}): {report['evaluated']} children evaluated over "
             f"{len(report['history'])} steps on {report['hardware']}"]  # fmt: skip
    for label, key in report["best"].items():
        if key is None:
            lines.append(f"  {label}: none")
            continue
        m = by_key[key]["metrics"]
        lines.append(f"  {label}: {by_key[key]['architecture']} accuracy {m['accuracy']:.1%}, {m['parameters']:,.0f} "
                     f"parameters, {m['flops'] / 1e6:,.2f} MFLOPs/image, {m['flops_per_byte']:.2f} FLOPs/byte, "
                     f"{m['energy_per_iteration_j'] * 1e3:.3f} mJ and {m['time_per_iteration_s'] * 1e3:.2f} ms "
                     "per training iteration")  # fmt: skip
    for h in report["history"]:
        best = "-" if h["best_reward"] is None else f"{h['best_reward']:.3f}"
        lines.append(f"  step {h['step']}: {h['new_children']} new children of {h['proposals']} proposed, mean "
                     f"reward {h['mean_reward']:.3f}, best {best}, {h['within_constraints']:.0%} within the "
                     "constraints")  # fmt: skip
    return "\n".join(lines)


def prepare_search_dir(out: Path) -> None:
    """Create ``out``, or reuse it when everything in it was written by an earlier search."""
    if out.exists():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_FILES and not p.name.startswith("best-"))
        if not out.is_dir() or foreign:
            raise FileExistsError(f"{out}: holds files e2sim did not write ({', '.join(foreign[:3])}); choose a new "
                                  "or empty directory")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)


def write_search_outputs(out: Path, result: Any, report: dict[str, Any]) -> list[Path]:
    prepare_search_dir(out)
    written = [out / "search.json", out / "children.csv"]
    written[0].write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    with open(written[1], "w", encoding="utf-8") as f:
        f.write(",".join(["architecture", "step", "status", "reward", *METRICS]) + "\n")
        for c in report["children"]:
            values = [c["metrics"].get(m, "") if c["metrics"] else "" for m in METRICS]
            reward = "" if c["reward"] is None else c["reward"]
            f.write(",".join(str(v) for v in [c["architecture"], c["step"], c["status"], reward, *values]) + "\n")
    by_key = {c["key"]: c for c in result.children}
    for label, key in report["best"].items():
        if key is None:
            continue
        path = out / f"best-{label.replace(' ', '-')}.yaml"
        path.write_text(f"# {label} of search {report['search']} (e2sim search)\n"
                        + yaml.safe_dump(result.workload(by_key[key]), sort_keys=False))  # fmt: skip
        written.append(path)
    written += _plots(out, report)
    return written


def _plots(out: Path, report: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in report["history"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [h["mean_reward"] for h in report["history"]], marker="o", label="mean reward of the step")
    ax.plot(steps, [h["best_reward"] if h["best_reward"] is not None else float("nan") for h in report["history"]],
            marker="s", label="best reward so far")  # fmt: skip
    ax.plot(steps, [h["within_constraints"] for h in report["history"]], marker="^",
            label="children within the constraints")  # fmt: skip
    ax.set(xlabel="search step", ylabel="reward / fraction", title=f"{report['search']} ({report['sampler']})")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    done = [c for c in report["children"] if c["status"] == "done"]
    front = set(report["front"])
    fig, ax = plt.subplots(figsize=(6, 4))
    def mj(chosen: list) -> list[float]:
        return [c["metrics"]["energy_per_iteration_j"] * 1e3 for c in chosen]

    def percent(chosen: list) -> list[float]:
        return [100 * c["metrics"]["accuracy"] for c in chosen]

    ax.scatter(mj(done), percent(done), s=18, color="grey", label="children")
    edge = sorted((c for c in done if c["key"] in front), key=lambda c: c["metrics"]["energy_per_iteration_j"])
    ax.plot(mj(edge), percent(edge), color="tab:red", marker="o", label="front")
    for c in report["constraints"]:
        if c["metric"] == "energy_per_iteration_j":
            ax.axvline(c["max"] * 1e3, color="black", ls="--", lw=1, label="energy budget")
    ax.set(xlabel="training energy per iteration (mJ)", ylabel="proxy accuracy (%)", title="children")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "children.png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return [out / "curves.png", out / "children.png"]
