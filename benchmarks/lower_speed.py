"""How fast is lowering? Times `e2sim.lower` on every shipped workload at batch 128.

Goal (foundation issue): lowering ResNet-110 at batch 128 takes well under a second. Each figure is
the median of several runs after one warm-up; the ratio column compares it with the 1 s budget and
with LeNet-5 measured in the same run (these machines are noisy, so read ratios, not seconds).

    python benchmarks/lower_speed.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import e2sim
from e2sim.graph import build_model, verify
from e2sim.graph.lowering import lower as lower_unchecked

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 1.0


def median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()

    workloads = {p.stem: e2sim.load_workload(p) for p in sorted((ROOT / "workloads").glob("*.yaml"))}
    reference = median_seconds(lambda: e2sim.lower(workloads["lenet5-mnist"], args.batch), args.repeat)
    print(
        f"lowering at batch {args.batch}, median of {args.repeat} runs (reference: LeNet-5, {reference * 1e3:.1f} ms)"
    )
    print(f"{'workload':<22}{'ops':>6}{'tensors':>9}{'build ms':>10}{'lower ms':>10}{'verify ms':>10}"
          f"{'total ms':>10}{'x LeNet-5':>11}{'of 1 s':>8}")  # fmt: skip
    for name, workload in workloads.items():
        graph = e2sim.lower(workload, args.batch)
        build = median_seconds(lambda w=workload: build_model(w), args.repeat)
        unchecked = median_seconds(lambda w=workload: lower_unchecked(w, args.batch, check=False), args.repeat)
        checking = median_seconds(lambda g=graph: verify(g), args.repeat)
        total = median_seconds(lambda w=workload: e2sim.lower(w, args.batch), args.repeat)
        print(f"{name:<22}{len(graph.ops):>6}{len(graph.tensors):>9}{build * 1e3:>10.1f}"
              f"{(unchecked - build) * 1e3:>10.1f}{checking * 1e3:>10.1f}{total * 1e3:>10.1f}"
              f"{total / reference:>11.1f}{total / BUDGET_S:>8.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
