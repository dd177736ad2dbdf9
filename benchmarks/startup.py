"""Start-up costs, each in a fresh process: ``import e2sim``, ``e2sim lower``, ``e2sim estimate`` and a
1-epoch ``e2sim run``, with numba's kernel cache empty (every kernel compiles) and warm.

    python benchmarks/startup.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "import e2sim": [sys.executable, "-c", "import e2sim"],
    "e2sim lower": [sys.executable, "-m", "e2sim", "lower", "resnet20-cifar10"],
    "e2sim estimate": [sys.executable, "-m", "e2sim", "estimate", "resnet20-cifar10", "--hw", "systolic-16x16"],
    "e2sim run --epochs 1": [sys.executable, "-m", "e2sim", "run", "--epochs", "1", "--no-progress"],
}


def seconds(command: list[str], cache: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "NUMBA_CACHE_DIR": cache})
    return time.perf_counter() - start


def main() -> None:
    print(f"{'command':<24}{'empty cache s':>15}{'warm cache s':>14}")
    for label, command in COMMANDS.items():
        with tempfile.TemporaryDirectory() as cache:
            cold = seconds(command, cache)
            warm = min(seconds(command, cache) for _ in range(2))
        print(f"{label:<24}{cold:>15.2f}{warm:>14.2f}")


if __name__ == "__main__":
    main()
