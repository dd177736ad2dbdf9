"""Thread settings of ``e2sim run``, alone and next to a competing CPU-bound process, in one run.

Times a 3-epoch LeNet-5 run (the README's default workload) in fresh processes with the default
thread budget and with each explicit ``--threads`` from 1 to the cores available, and the same
next to a busy-looping process. Goal: the default within 1.3× of the best setting in both cases.

    python benchmarks/threads.py [--epochs N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def timed(extra: list[str], epochs: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "e2sim", "run", "--epochs", str(epochs), "--no-progress", *extra],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def measure(epochs: int, cores: int) -> dict[str, float]:
    settings = {"default": [], **{f"--threads {n}": ["--threads", str(n)] for n in range(1, cores + 1)}}
    return {label: min(timed(extra, epochs) for _ in range(2)) for label, extra in settings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    timed([], 1)  # numba's cache warm before any timing
    results = {"alone": measure(args.epochs, cores)}
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        results["next to a CPU-bound process"] = measure(args.epochs, cores)
    finally:
        busy.kill()
    for case, times in results.items():
        best = min(times.values())
        ratio = times["default"] / best
        print(f"{case}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
              + f"; default / best {ratio:.2f} (goal <= 1.3: {'met' if ratio <= 1.3 else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
