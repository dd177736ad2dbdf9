"""RENA against random search on the embedded MNIST sample, with a training-energy budget per
iteration on the ZedBoard (searches/rena-mnist.yaml): the same number of evaluated (new) children
per search — 20 steps of 6 — three seeds each. Prints, per sampler, the best proxy accuracy among
the children within the budget (mean and spread over the seeds), the fraction of proposals within
it, and the time.

    python benchmarks/rena_search.py [--seeds 3] [--steps 20] [--children 6] [--workers 2] [--parents N]

``--parents`` overrides the spec's ``parents`` (children drawn from the best N networks so far) for
both samplers.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import e2sim
from e2sim.config.search import read_search_spec
from e2sim.studies.rena.search import satisfies

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--children", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--parents", type=int, default=None)
    args = parser.parse_args()
    base = read_search_spec(ROOT / "searches" / "rena-mnist.yaml")
    if args.parents is not None:
        base = dataclasses.replace(base, parents=args.parents)
    print(f"{base.name}: budget {dict(base.constraints)}, {args.steps} steps x {args.children} children, "
          f"{base.edits_per_child} edits each, {base.proxy_epochs} proxy epochs, "
          f"children of the best {base.parents} network(s), {args.workers} workers")  # fmt: skip
    found = {}
    with tempfile.TemporaryDirectory() as folder:
        for sampler in ("rena", "random"):
            bests, within, trained, seconds = [], [], [], []
            for seed in range(args.seeds):
                spec = dataclasses.replace(base, name=f"{base.name}-{sampler}-{seed}", sampler=sampler, seed_value=seed,
                                           steps=args.steps, children_per_step=args.children)  # fmt: skip
                start = time.perf_counter()
                result = e2sim.search(spec, Path(folder) / "store.sqlite", args.workers)
                seconds.append(time.perf_counter() - start)
                done = [c for c in result.children if c["status"] == "done"]
                ok = [c for c in done if satisfies(c["metrics"], spec.constraints)]
                bests.append(max((c["metrics"]["accuracy"] for c in ok), default=0.0))
                within.append(sum(h["within_constraints"] for h in result.history) / len(result.history))
                trained.append(len(result.children))
                print(f"  {sampler:<6} seed {seed}: best within budget {bests[-1]:.1%}, "
                      f"{within[-1]:.0%} of proposals within it, {trained[-1]} distinct children trained, "
                      f"{seconds[-1]:.0f} s")  # fmt: skip
            found[sampler] = bests
            spread = statistics.stdev(bests) if len(bests) > 1 else 0.0
            print(f"{sampler:<6}: best proxy accuracy within the budget {statistics.mean(bests):.1%} ± {spread:.1%} "
                  f"(mean ± sd over {args.seeds} seeds); {statistics.mean(within):.0%} of proposals within the budget; "
                  f"{sum(seconds):.0f} s")  # fmt: skip
    gap = statistics.mean(found["rena"]) - statistics.mean(found["random"])
    print(f"RENA - random: {gap:+.1%} of proxy accuracy")


if __name__ == "__main__":
    main()
