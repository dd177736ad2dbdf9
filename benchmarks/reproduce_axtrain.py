"""AxTrain (He et al., ISLPED 2018) on LeNet-5 / mnist5k: accuracy of a network evaluated on an
accelerator's approximate mode when trained normally, with the passive method, the active method
and both; its measured weight sensitivity; and the energy of training and of inference.

Hardware: hw_specs/axtrain-65nm.yaml (65 nm 16×16 systolic array; approximate mode DRUM-3 at
0.6 V with weight bit errors from its bit-error curve). Accuracy on the mode is the mean over
``--eval-seeds`` draws of the bit errors; "stressed" evaluates the same networks at a lower
supply (``--stress-v``, more bit errors) that no run trained on. Sensitivity: mean |ΔL| on the
test split under relative weight noise of std σ (e2sim.policies.axtrain.measure_sensitivity).
The paper reports 25-41% lower weight sensitivity with the active method.

    python benchmarks/reproduce_axtrain.py [--epochs N] [--stress-v V]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

import e2sim
from e2sim.config.policy import preset
from e2sim.config.workload import with_policy
from e2sim.numerics.approximate import ApproxDatapath
from e2sim.policies.axtrain import measure_sensitivity
from e2sim.train.data import load_dataset
from e2sim.train.engine import GraphExecutor
from e2sim.train.loop import evaluate

RUNS = [("normal", "baseline"), ("passive", "axtrain-passive"), ("active", "axtrain-active"), ("both", "axtrain")]


def mode_accuracy(result, spec, mode, seeds: int, dataset) -> float:
    executor = GraphExecutor(result.graph, spec.precision, 0.0, 0.0, result.policies, ApproxDatapath(mode))
    return float(np.mean([evaluate(executor, result.state, dataset, approximate=True, seed=s) for s in range(seeds)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hw", default="axtrain-65nm")
    parser.add_argument("--stress-v", type=float, default=0.45)
    parser.add_argument("--sigma", type=float, default=0.2)
    parser.add_argument("--eval-seeds", type=int, default=5)
    args = parser.parse_args()
    hw = e2sim.load_hw(args.hw)
    mode = hw.approximate
    stressed = dataclasses.replace(mode, supply_voltage_v=args.stress_v)
    base = e2sim.load_workload("lenet5-mnist")
    dataset = load_dataset(base.dataset, None)
    test = dataset.test
    print(f"{hw.name}: {mode.multiplier.label}, {mode.supply_voltage_v:g} V (bit-error rate {mode.bit_error_rate:.3g} "
          f"on {'/'.join(mode.bit_errors_on)}); stressed: {stressed.supply_voltage_v:g} V "
          f"(rate {stressed.bit_error_rate:.3g})")  # fmt: skip
    header = (f"{'run':<9}{'exact':>8}{'on mode':>9}{'stressed':>10}{'|dL| sigma':>12}{'acc drop':>10}"
              f"{'train J':>10}{'host s':>8}")  # fmt: skip
    print(header)
    reference = None
    for label, policy in RUNS:
        spec = with_policy(base, preset(policy))
        start = time.perf_counter()
        result = e2sim.train_workload(spec, epochs=args.epochs, progress=False, hw=hw)
        passive = any(p.trains_on_approximate_mode for p in result.policies)
        energy = e2sim.estimate(spec, hw, counts=result.counts, approximate=passive).energy_j
        on_mode = mode_accuracy(result, spec, mode, args.eval_seeds, dataset)
        on_stressed = mode_accuracy(result, spec, stressed, args.eval_seeds, dataset)
        executor = GraphExecutor(result.graph, spec.precision, 0.0, 0.0)
        sens = measure_sensitivity(executor, result.state, test.images, test.labels, sigma=args.sigma, draws=8)
        reference = reference or sens.mean_loss_change
        print(f"{label:<9}{result.final_test_accuracy:>8.2%}{on_mode:>9.2%}{on_stressed:>10.2%}"
              f"{sens.mean_loss_change:>12.4f}{sens.mean_accuracy_drop:>10.2%}{energy:>10.4g}"
              f"{time.perf_counter() - start:>8.0f}", flush=True)  # fmt: skip
    exact, approximate = (e2sim.estimate(base, hw, forward_only=True, approximate=a) for a in (False, True))
    per_image = [e.energy_j / e.batch_size for e in (exact, approximate)]
    print(f"inference per image: {per_image[0]:.4g} J exact, {per_image[1]:.4g} J on the approximate mode "
          f"({1 - per_image[1] / per_image[0]:.1%} saved)")  # fmt: skip


if __name__ == "__main__":
    main()
