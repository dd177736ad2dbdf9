"""Sweep speed, as ratios measured in one run (this machine's noise cancels out):

- ResNet-20 estimate points per minute: a scalar loop of ``e2sim.estimate`` over distinct
  hardware points (the reference), the sweep in this process, and the sweep on 2 Dask workers;
- run points per minute (LeNet-5 trained for a few iterations, each point its own training run)
  on a Dask LocalCluster of 1 and of 2 workers.

Clusters are started and their workers' kernels compiled before the timing (a one-off cost of a
few seconds per worker process, which a long sweep amortises).

Goals: the sweep ≥ 10× the scalar loop for estimate points; 2 Dask workers ≥ 1.8× one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import e2sim
from e2sim.config.sweep import read_sweep_spec
from e2sim.studies.execute import start_local_cluster
from e2sim.studies.points import grid_values, resolve

ESTIMATE = """
name: speed-estimate
workload: resnet20-cifar10
hardware: systolic-16x16
axes:
  hw.pe_array.rows: [8, 12, 16, 24, 32]
  hw.pe_array.cols: [8, 12, 16, 24]
  hw.pe_array.dataflow: [ws, os]
  hw.buffers.ifmap.size_kb: [32, 128]
"""

RUN = """
name: speed-run
kind: run
workload: {name: tiny, dataset: {name: mnist5k}, model: {arch: lenet5},
           training: {batch_size: 250, epochs: 1, lr: 0.05, momentum: 0.9}}
hardware: zedboard
axes: {training.seed: [1, 2, 3, 4, 5, 6, 7, 8]}
objectives: [energy_j, accuracy]
"""


WARM = """
name: warm
kind: run
workload: {name: tiny, dataset: {name: mnist5k}, model: {arch: lenet5},
           training: {batch_size: 1000, epochs: 1, lr: 0.05}}
hardware: zedboard
axes: {training.seed: [1, 2]}
"""


def per_minute(count: int, seconds: float) -> float:
    return 60.0 * count / seconds


def timed_sweep(spec, db: Path, **where) -> float:
    start = time.perf_counter()
    result = e2sim.sweep(spec, db=db, progress=False, **where)
    return per_minute(len(result.points), time.perf_counter() - start)


def main() -> None:
    from distributed import Client

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=40, help="estimate points for the scalar loop")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="e2sim-sweep-speed-"))
    for name, text in (("estimate", ESTIMATE), ("run", RUN), ("warm", WARM)):
        (folder / f"{name}.yaml").write_text(text)
    spec, run, warm = (read_sweep_spec(folder / f"{name}.yaml") for name in ("estimate", "run", "warm"))
    points = [resolve(spec, i, v) for i, v in enumerate(grid_values(spec)[: args.points])]
    e2sim.estimate(points[0].workload, points[0].hardware)  # compile and warm up outside the timing
    start = time.perf_counter()
    for p in points:
        e2sim.estimate(p.workload, p.hardware)
    scalar = per_minute(len(points), time.perf_counter() - start)
    rates = {"sweep, this process": timed_sweep(spec, folder / "estimate-0.sqlite")}
    dask = {}
    for workers in (2, 1):  # clusters started (and their kernels compiled) before the timing
        with start_local_cluster(workers) as cluster, Client(cluster):
            e2sim.sweep(warm, db=folder / f"warm-{workers}.sqlite", scheduler=cluster.scheduler_address,
                        progress=False)  # fmt: skip
            if workers == 2:
                rates["sweep, 2 Dask workers"] = timed_sweep(spec, folder / "estimate-2.sqlite",
                                                             scheduler=cluster.scheduler_address)  # fmt: skip
            dask[workers] = timed_sweep(run, folder / f"run-{workers}.sqlite", scheduler=cluster.scheduler_address)
    print(f"ResNet-20 estimate points, distinct hardware ({len(points)} for the loop, {spec.grid_size()} per sweep):")
    print(f"  scalar loop of e2sim.estimate  {scalar:8.1f} points/min  1.00x")
    for label, rate in rates.items():
        print(f"  {label:<30} {rate:8.1f} points/min  {rate / scalar:.2f}x   (goal 10x: "
              f"{'met' if rate / scalar >= 10 else 'MISSED'})")  # fmt: skip
    ratio = dask[2] / dask[1]
    print(f"run points ({run.grid_size()} training runs of LeNet-5, 16 iterations each), started Dask LocalCluster:")
    print(f"  1 worker   {dask[1]:8.1f} points/min")
    print(f"  2 workers  {dask[2]:8.1f} points/min  {ratio:.2f}x   (goal 1.8x: {'met' if ratio >= 1.8 else 'MISSED'})")


if __name__ == "__main__":
    main()
