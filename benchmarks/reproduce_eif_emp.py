"""Early instance filtering and error-map pruning on LeNet-5 / mnist5k (Wu et al. 2020): test
accuracy, computation reduction and training-energy saving on the ZedBoard, against the baseline.

The paper's LeNet recipe (lr 0.01, momentum 0.5, batch 64), fp32 except the eif+emp+q8 preset
(int8 weights, activations and errors, int16 gradients); EIF's main-network loss is the mean over the
trained instances (``loss_normalization: trained``). Computation counts every executed MAC: the main
network's, the filter's and the selection's. Paper target for LeNet/MNIST: 78.6% computation
reduction with no accuracy loss (99.23 -> 99.47 on the full MNIST).

    python benchmarks/reproduce_eif_emp.py [--epochs N]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import e2sim
from e2sim.api import load_policy
from e2sim.config.workload import with_policy
from e2sim.functional import precision

RUNS = [("baseline", "baseline"), ("EIF", "eif"), ("EMP", "emp"), ("EIF+EMP", "eif+emp"), ("EIF+EMP+q8", "eif+emp+q8")]


def paper_normalization(policy):
    """EIF's main-network loss as the mean over the trained instances (a training loop that feeds the
    selected instances as a batch), which the paper's lr 0.01 / momentum 0.5 recipe is tuned for."""
    if policy.get("eif") is None:
        return policy
    trained = {"eif": dataclasses.replace(policy.get("eif"), loss_normalization="trained")}
    specs = tuple((key, trained.get(key, spec)) for key, spec in policy.specs)
    return dataclasses.replace(policy, specs=specs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    base = e2sim.load_workload("lenet5-mnist")
    base = dataclasses.replace(base, training=dataclasses.replace(base.training, lr=0.01, momentum=0.5,
                                                                  weight_decay=0.0, schedule="constant"),
                               precision=precision())  # fmt: skip
    header = ("run", 12), ("accuracy", 9), ("MACs", 16), ("reduction", 11), ("energy J", 10), ("saving", 8)
    print("".join(f"{name:<{width}}" if name == "run" else f"{name:>{width}}" for name, width in header)
          + f"{'trained':>9}{'host s':>8}")  # fmt: skip
    reference = None
    for label, policy in RUNS:
        spec = with_policy(base, paper_normalization(load_policy(policy)))
        start = time.perf_counter()
        result = e2sim.train_workload(spec, epochs=args.epochs, progress=False)
        energy = e2sim.estimate(spec, "zedboard", counts=result.counts).energy_j
        macs = result.counts.total_macs()
        reference = reference or (macs, energy)
        reduction, saving = 1 - macs / reference[0], 1 - energy / reference[1]
        seconds = time.perf_counter() - start
        trained = result.policy_stats.get("eif", {}).get("trained_instance_ratio", 1.0)
        print(f"{label:<12}{result.final_test_accuracy:>8.2%} {macs:>16,.0f}{reduction:>11.1%}{energy:>10.4g}"
              f"{saving:>8.1%}{trained:>9.3f}{seconds:>8.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
