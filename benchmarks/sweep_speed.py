"""Sweep speed, as ratios measured in one run (this machine's noise cancels out):

- ResNet-20 estimate points per minute on two grids: a scalar loop of ``e2sim.estimate`` over
  distinct hardware points of the grid (the reference), the sweep in this process, and the sweep
  on 2 Dask workers. The *shapes* grid changes the PE array (rows, columns, dataflow) on almost
  every point, so few points share their mappings' tiles; the *memories* grid keeps a few arrays
  and changes buffer sizes and DRAM, what the vectorised path maps and prices together;
- run points per minute (LeNet-5 trained for a few iterations, each point its own training run)
  on a Dask LocalCluster of 1 and of 2 workers, each with the cores shared out (1 worker: all of
  them, its kernels on as many threads; 2 workers on 2 cores: one each); and of 1 worker with the
  2-worker share (one thread), which isolates how the executor scales from how a training's
  kernels use a second core.

Mapping caches are emptied before each timing (nothing carries over from one to the next). Clusters
are started and their workers' kernels compiled before the timing (a one-off cost of a few seconds
per worker process, which a long sweep amortises).

Goals: the sweep on 2 cores (2 Dask workers) ≥ 10× the scalar loop for estimate points; 2 Dask
workers ≥ 1.8× one for run points.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import e2sim
from e2sim.config.sweep import read_sweep_spec
from e2sim.schedule.ops import MAPPINGS, _planned
from e2sim.studies.execute import start_local_cluster, thread_budget
from e2sim.studies.points import _prepared, grid_values, resolve

GRIDS = {
    "shapes": """
name: speed-shapes
workload: resnet20-cifar10
hardware: systolic-16x16
axes:
  hw.pe_array.rows: [8, 12, 16, 24, 32]
  hw.pe_array.cols: [8, 12, 16, 24]
  hw.pe_array.dataflow: [ws, os, is]
  hw.buffers.ifmap.size_kb: [32, 128]
""",
    "memories": """
name: speed-memories
workload: resnet20-cifar10
hardware: systolic-16x16
axes:
  hw.pe_array.rows: [16, 32]
  hw.pe_array.dataflow: [ws, os]
  hw.buffers.ifmap.size_kb: [16, 32, 64, 128]
  hw.buffers.filter.size_kb: [32, 128]
  hw.buffers.ofmap.size_kb: [64, 256]
  hw.dram.type: [lpddr4, ddr4]
""",
}

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


def forget() -> None:
    """Empty the mapping and planning caches and the lowered graphs of this process."""
    MAPPINGS.clear()
    _planned.cache_clear()
    _prepared.cache_clear()


def timed_sweep(spec, db: Path, **where) -> float:
    forget()
    start = time.perf_counter()
    result = e2sim.sweep(spec, db=db, progress=False, **where)
    return per_minute(len(result.points), time.perf_counter() - start)


def scalar_loop(spec, count: int) -> float:
    """``e2sim.estimate`` on ``count`` points spread over the grid."""
    values = grid_values(spec)
    step = max(1, len(values) // count)
    points = [resolve(spec, i, v) for i, v in enumerate(values[::step][:count])]
    forget()
    start = time.perf_counter()
    for p in points:
        e2sim.estimate(p.workload, p.hardware)
    return per_minute(len(points), time.perf_counter() - start)


def main() -> None:
    from distributed import Client

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=40, help="estimate points for each scalar loop")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="e2sim-sweep-speed-"))
    for name, text in (*GRIDS.items(), ("run", RUN), ("warm", WARM)):
        (folder / f"{name}.yaml").write_text(text)
    grids = {name: read_sweep_spec(folder / f"{name}.yaml") for name in GRIDS}
    run, warm = (read_sweep_spec(folder / f"{name}.yaml") for name in ("run", "warm"))
    e2sim.estimate("lenet5-mnist", "systolic-16x16")  # compile and warm up outside the timing
    rates = {name: {"scalar loop of e2sim.estimate": scalar_loop(spec, args.points),
                    "sweep, this process": timed_sweep(spec, folder / f"{name}-0.sqlite")}
             for name, spec in grids.items()}  # fmt: skip
    dask = {}
    share = thread_budget(2)["E2SIM_THREADS"]  # the kernel threads of each of 2 workers
    for workers, threads in ((2, None), (1, None), (1, int(share))):  # started (and compiled) before the timing
        label = (workers, threads)
        with start_local_cluster(workers, threads) as cluster, Client(cluster):
            e2sim.sweep(warm, db=folder / f"warm-{workers}-{threads}.sqlite", scheduler=cluster.scheduler_address,
                        progress=False)  # fmt: skip
            if workers == 2:
                for name, spec in grids.items():
                    rates[name]["sweep, 2 Dask workers"] = timed_sweep(spec, folder / f"{name}-2.sqlite",
                                                                       scheduler=cluster.scheduler_address)  # fmt: skip
            dask[label] = timed_sweep(run, folder / f"run-{workers}-{threads}.sqlite",
                                      scheduler=cluster.scheduler_address)  # fmt: skip
    for name, spec in grids.items():
        scalar = rates[name]["scalar loop of e2sim.estimate"]
        print(f"ResNet-20 estimate points, {name} grid ({args.points} for the loop, {spec.grid_size()} per sweep):")
        for label, rate in rates[name].items():
            ratio = rate / scalar
            goal = f"   (goal 10x: {'met' if ratio >= 10 else 'MISSED'})" if "2 Dask" in label else ""
            print(f"  {label:<30} {rate:8.1f} points/min  {ratio:5.2f}x{goal}")
    one, one_thread, two = dask[(1, None)], dask[(1, int(share))], dask[(2, None)]
    ratio = two / one
    print(f"run points ({run.grid_size()} training runs of LeNet-5, 16 iterations each), started Dask LocalCluster:")
    print(f"  {'1 worker, ' + thread_budget(1)['E2SIM_THREADS'] + ' kernel threads':<30} {one:8.1f} points/min")
    print(f"  {'2 workers, ' + share + ' each':<30} {two:8.1f} points/min  {ratio:.2f}x   "
          f"(goal 1.8x: {'met' if ratio >= 1.8 else 'MISSED'})")  # fmt: skip
    print(f"  {'1 worker, ' + share + ' kernel thread':<30} {one_thread:8.1f} points/min  "
          f"(2 workers: {two / one_thread:.2f}x at the same threads per worker)")  # fmt: skip


if __name__ == "__main__":
    main()
