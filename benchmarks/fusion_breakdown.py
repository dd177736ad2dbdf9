"""DRAM traffic and energy breakdown of one training iteration, layer by layer (every tensor to
DRAM and back: ``--no-fusion``) and with fusion and residency across the iteration, for LeNet-5 on
the ZedBoard and ResNet-20 on systolic-32x32 (the workloads' own batch sizes).

    python benchmarks/fusion_breakdown.py
"""

from __future__ import annotations

import e2sim
from e2sim.energy.actions import COMPONENTS

CASES = [("lenet5-mnist", "zedboard"), ("resnet20-cifar10", "systolic-32x32"), ("resnet20-cifar10", "eyeriss")]


def main() -> None:
    print("| workload | hardware | model | DRAM per iteration (MB) | energy (mJ) | "
          + " | ".join(COMPONENTS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(COMPONENTS))
    for workload, hw in CASES:
        for fusion in (False, True):
            report = e2sim.estimate(workload, hw, fusion=fusion).to_dict()
            total = report["totals"]["energy_j"]
            shares = " | ".join(f"{report['energy_breakdown_j'][c] / total:.1%}" for c in COMPONENTS)
            model = "fusion + residency" if fusion else "layer by layer"
            print(f"| {workload} | {hw} | {model} | {report['totals']['dram_bytes'] / 1e6:,.2f} | {total * 1e3:,.3f} "
                  f"| {shares} |")
            if fusion:
                placed = {}
                for t in report["tensors"]:
                    n, b = placed.get(t["placement"], (0, 0.0))
                    placed[t["placement"]] = (n + 1, b + t["bytes"])
                print("|  |  | tensors: " + ", ".join(f"{k} {n} ({b / 1e6:.2f} MB)" for k, (n, b) in placed.items())
                      + " |" * (3 + len(COMPONENTS)))


if __name__ == "__main__":
    main()
