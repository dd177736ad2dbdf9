"""E2-Train's three techniques on mnist5k: accuracy, training energy and saving against the
baseline, on the ZedBoard (E2-Train's board) and a 45 nm ASIC (systolic-32x32, 4/8/16-bit MACs).

LeNet-5 (no residual blocks: SLU does not apply) and ResNet-14 (8/16/32 channels), int8
training, every policy at its defaults (SMD p = 0.5 with a 4/3 stretch; SLU target 0.5; PSG
τ = 5e-5). Target, in the spirit of the paper: all three together save >= 80% of training energy
at <= 2 points accuracy loss.

    python benchmarks/reproduce_e2train.py [--epochs N] [--lenet-only]
"""

from __future__ import annotations

import argparse
import time

import e2sim
from e2sim.api import load_policy
from e2sim.config.policy import PolicySpec
from e2sim.report.run import run_report
from e2sim.train.loop import train

HARDWARE = ("zedboard", "systolic-32x32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lenet-only", action="store_true")
    args = parser.parse_args()
    cases = [("lenet5-mnist", ("baseline", "smd", "psg", "smd+psg"))]
    if not args.lenet_only:
        cases.append(("resnet14-mnist", ("baseline", "smd", "slu", "psg", "e2train")))
    print(f"{'workload':<16}{'policy':<10}{'accuracy':>9}" + "".join(f"{hw + ' J':>18}{'saving':>8}" for hw in HARDWARE)
          + f"{'host s':>8}")  # fmt: skip
    for name, policies in cases:
        workload = e2sim.load_workload(name)
        baseline = {}
        for policy_name in policies:
            policy = load_policy(policy_name) if policy_name != "smd+psg" else PolicySpec.of(
                "smd+psg", smd=load_policy("smd").get("smd"), psg=load_policy("psg").get("psg"))  # fmt: skip
            spec = e2sim.config.workload.Workload(**{**workload.__dict__, "policy": policy})
            start = time.perf_counter()
            result = train(spec, epochs=args.epochs, progress=False)
            row = f"{name:<16}{policy_name:<10}{result.final_test_accuracy:>8.2%} "
            for hw in HARDWARE:
                report = run_report(result, e2sim.estimate(spec, hw, counts=result.counts), policy, 0)
                energy = report["energy"]["total_j"]
                baseline.setdefault(hw, (energy, result.final_test_accuracy))
                saving = 1 - energy / baseline[hw][0]
                row += f"{energy:>18.4g}{saving:>8.1%}"
            print(row + f"{time.perf_counter() - start:>8.0f}", flush=True)
        print()


if __name__ == "__main__":
    main()
