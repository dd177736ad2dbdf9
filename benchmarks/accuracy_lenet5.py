"""LeNet-5 on the embedded mnist5k: test accuracy per epoch in fp32 and in int8 (weights,
activations and errors int8, weight gradients int16, int32 accumulator, stochastic rounding).

Acceptance (engine issue): fp32 >= 97% within 10 epochs; int8 within 1 point of fp32.

    python benchmarks/accuracy_lenet5.py [--epochs N]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import e2sim
from e2sim.functional import precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    int8 = e2sim.load_workload("lenet5-mnist")
    fp32 = dataclasses.replace(int8, precision=precision())
    results = {}
    for name, workload in (("fp32", fp32), ("int8", int8)):
        start = time.perf_counter()
        results[name] = e2sim.train_workload(workload, epochs=args.epochs, progress=False)
        print(f"{name}: {time.perf_counter() - start:.1f} s")
    print(f"{'epoch':>5}  {'fp32 test':>9}  {'int8 test':>9}")
    for a, b in zip(results["fp32"].epochs, results["int8"].epochs, strict=True):
        print(f"{a.epoch:>5}  {a.test_accuracy:>9.2%}  {b.test_accuracy:>9.2%}")
    best = max(e.test_accuracy for e in results["fp32"].epochs)
    final_fp32, final_int8 = results["fp32"].final_test_accuracy, results["int8"].final_test_accuracy
    print(f"final: fp32 {final_fp32:.2%}, int8 {final_int8:.2%} ({(final_int8 - final_fp32) * 100:+.2f} points); "
          f"fp32 >= 97% {'met' if best >= 0.97 else 'MISSED'}, int8 within 1 point "
          f"{'met' if final_int8 >= final_fp32 - 0.01 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
