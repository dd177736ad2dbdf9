"""How fast is the accelerator model? Two measurements in one run:

1. Per-layer time of e2sim against SCALE-Sim v3 on the same layers and arrays (ResNet-20's convs
   and their backward GEMMs, ws/os/is). SCALE-Sim runs in its own virtualenv: pass its Python
   with --scalesim-python (see tests/scalesim_oracle.py); the cycle counts are compared too.
   Goal: e2sim >= 1000x faster at the same cycle counts.
2. Time to price one ResNet-110 training iteration at batch 128: every PE-array op mapped (the
   mapping search), fusion and residency planned across the iteration, all 1,275 ops priced.
   Goals: <= 1 s with empty caches (cold), <= 50 ms after warm-up; lowering timed separately.
   Timed as ``timeit`` times: the garbage collector collects before each run and pauses during it;
   the median with the collector running is printed too (its pauses add tens of ms at random).

    python benchmarks/schedule_speed.py [--scalesim-python PATH] [--repeat N]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import e2sim
from e2sim.energy.account import account
from e2sim.energy.tables import load_table
from e2sim.schedule.ops import MAPPINGS, _planned
from e2sim.schedule.systolic import systolic_cost
from e2sim.studies.single import arithmetic_of

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [(34, 34, 3, 3, 16, 16, 1), (33, 33, 3, 3, 16, 32, 2), (18, 18, 3, 3, 32, 32, 1), (10, 10, 3, 3, 64, 64, 1)]
HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,"
CFG = """[general]
run_name = speed
[architecture_presets]
ArrayHeight : 16
ArrayWidth : 16
IfmapSramSzkB : 256
FilterSramSzkB : 256
OfmapSramSzkB : 256
Dataflow : {df}
"""


def clear_caches() -> None:
    systolic_cost.cache_clear()
    MAPPINGS.clear()
    _planned.cache_clear()


def e2sim_per_layer(folder: Path, df: str, repeat: int) -> tuple[float, list[float]]:
    topo = folder / "topo.csv"
    rows = "".join(f"l{i}, {', '.join(map(str, layer))},\n" for i, layer in enumerate(LAYERS))
    topo.write_text(f"{HEADER}\n{rows}")
    cfg = folder / f"{df}.cfg"
    cfg.write_text(CFG.format(df=df))
    times = []
    for _ in range(repeat):
        clear_caches()
        start = time.perf_counter()
        report = e2sim.estimate(topo, cfg)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / len(LAYERS), [row.cost.compute_cycles for row in report.rows]


def scalesim_per_layer(python: str, df: str) -> tuple[float, list[float]]:
    script = (
        f"import json, sys, time; sys.path.insert(0, {str(ROOT / 'tests')!r}); from scalesim_oracle import run; "
        f"start = time.perf_counter(); r = run(16, 16, {df!r}, {LAYERS!r}); "
        "print(json.dumps([time.perf_counter() - start, [int(row[2]) for row in r['COMPUTE_REPORT'][1:]]]))"
    )
    seconds, cycles = json.loads(subprocess.run([python, "-c", script], capture_output=True, text=True,
                                                check=True).stdout)  # fmt: skip
    return seconds / len(LAYERS), cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scalesim-python", help="a Python with scalesim installed")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    print("1. per layer (4 ResNet-20 convs on a 16x16 array)")
    with tempfile.TemporaryDirectory() as d:
        for df in ("ws", "os", "is"):
            ours, our_cycles = e2sim_per_layer(Path(d), df, args.repeat)
            if args.scalesim_python:
                theirs, their_cycles = scalesim_per_layer(args.scalesim_python, df)
                same = all(abs(a - b) <= 0.01 * b for a, b in zip(our_cycles, their_cycles, strict=True))
                print(f"   {df}: e2sim {ours * 1e6:8.1f} µs/layer, SCALE-Sim {theirs * 1e3:8.1f} ms/layer, "
                      f"{theirs / ours:9.0f}x faster, cycles {'equal' if same else 'DIFFER'}")  # fmt: skip
            else:
                print(f"   {df}: e2sim {ours * 1e6:8.1f} µs/layer (pass --scalesim-python to compare)")

    print("2. one ResNet-110 training iteration at batch 128")
    workload = e2sim.load_workload("resnet110-cifar10")
    for hw_name in ("systolic-32x32", "eyeriss", "zcu102"):
        hw = e2sim.load_hw(hw_name)
        table = load_table(hw.technology, hw.energy_overrides)
        graph = e2sim.lower(workload, 128)
        arithmetic = arithmetic_of(workload)
        inputs = graph.inputs
        account(graph.ops, graph.tensors, hw, table, arithmetic, inputs=inputs)  # warm-up (numba, numpy)
        pricing, cold, collected = [], [], []
        for _ in range(args.repeat):
            gc.collect()
            gc.disable()
            start = time.perf_counter()
            account(graph.ops, graph.tensors, hw, table, arithmetic, inputs=inputs)
            pricing.append(time.perf_counter() - start)
            gc.enable()
            start = time.perf_counter()
            account(graph.ops, graph.tensors, hw, table, arithmetic, inputs=inputs)
            collected.append(time.perf_counter() - start)
        for _ in range(3):
            clear_caches()
            gc.collect()
            start = time.perf_counter()
            account(graph.ops, graph.tensors, hw, table, arithmetic, inputs=inputs)
            cold.append(time.perf_counter() - start)
        mapped = len({row.cost.nest for row in account(graph.ops, graph.tensors, hw, table, arithmetic,
                                                       inputs=inputs).rows if row.cost.nest is not None})
        start = time.perf_counter()
        e2sim.estimate(workload, hw, batch_size=128)
        whole = time.perf_counter() - start
        warm = statistics.median(pricing) * 1e3
        cold_ms = statistics.median(cold) * 1e3
        print(f"   {hw_name:<15} {mapped} distinct loop nests mapped; priced in {warm:6.1f} ms warm (goal <= 50 ms; "
              f"{statistics.median(collected) * 1e3:.1f} ms with the collector running), "
              f"{cold_ms:6.1f} ms cold (goal <= 1000 ms); "
              f"estimate() with lowering {whole * 1e3:6.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
