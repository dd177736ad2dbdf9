"""What a sweep found: the Pareto front as text, the points as CSV and Parquet, and plots (every
pair of objectives with the front highlighted; each objective against each axis)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

OUTPUT_FILES = ("points.csv", "points.parquet", "front.csv", "front.png", "sensitivity.png")


def format_sweep(result: Any) -> str:
    """Counts per status, then the front: its axis values and objectives, best first."""
    spec = result.spec
    counts: dict[str, int] = {}
    for p in result.points:
        counts[p["status"]] = counts.get(p["status"], 0) + 1
    lines = [f"sweep {spec.name} ({spec.kind} points): " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
             + f" ({result.ran} new); store {result.store}"]  # fmt: skip
    front = [p for p in result.points if p["key"] in set(result.front)]
    front.sort(key=lambda p: p["metrics"][spec.objectives[0]])
    if not front:
        return "\n".join([*lines, "no point finished: no front"])
    lines.append(f"Pareto front over {', '.join(spec.objectives)} ({len(front)} points):")
    for p in front:
        axes = ", ".join(f"{k}={_text(v)}" for k, v in p["params"].items())
        goals = ", ".join(f"{o} {_text(p['metrics'][o])}" for o in spec.objectives)
        lines.append(f"  {goals}  <-  {axes}")
    failed = [p for p in result.points if p["status"] == "failed"][:3]
    for p in failed:
        lines.append(f"failed: {p['params']}: {p['error']}")
    return "\n".join(lines)


def _text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def prepare_sweep_dir(out: Path) -> None:
    """Create ``out``, or reuse it when everything in it was written by an earlier sweep."""
    if out.exists():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_FILES)
        if not out.is_dir() or foreign:
            raise FileExistsError(f"{out}: holds files e2sim did not write ({', '.join(foreign[:3])}); choose a new "
                                  "or empty directory")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)


def write_sweep_outputs(out: Path, result: Any) -> list[Path]:
    prepare_sweep_dir(out)
    written = [result.write_csv(out / "points.csv")]
    with contextlib.suppress(RuntimeError):  # pyarrow is an extra
        written.append(result.write_parquet(out / "points.parquet"))
    front = type(result)(result.spec, result.store, tuple(p for p in result.points if p["key"] in set(result.front)),
                         result.front)  # fmt: skip
    written.append(front.write_csv(out / "front.csv"))
    written += _plot(out, result)
    return written


def _plot(out: Path, result: Any) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = result.spec
    done = [p for p in result.points if p["status"] == "done"]
    on_front = set(result.front)
    objectives = list(spec.objectives)
    pairs = [(a, b) for i, a in enumerate(objectives) for b in objectives[i + 1 :]] or [(objectives[0], objectives[0])]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs, strict=True):
        rest = [p for p in done if p["key"] not in on_front]
        best = sorted((p for p in done if p["key"] in on_front), key=lambda p: p["metrics"][x])
        ax.scatter([p["metrics"][x] for p in rest], [p["metrics"][y] for p in rest], s=14, color="tab:gray",
                   alpha=0.6, label="points")  # fmt: skip
        style = "o-" if len(objectives) == 2 else "o"  # a front over more objectives is no line in a projection
        ax.plot([p["metrics"][x] for p in best], [p["metrics"][y] for p in best], style, color="tab:red",
                label="Pareto front")  # fmt: skip
        ax.ticklabel_format(style="sci", scilimits=(-3, 4))
        ax.set(xlabel=x, ylabel=y, title=f"{spec.name}: {len(done)} points")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "front.png", dpi=120)
    plt.close(fig)
    paths = [out / "front.png"]
    if spec.axes:
        fig, grid = plt.subplots(len(objectives), len(spec.axes), figsize=(3.2 * len(spec.axes), 2.8 * len(objectives)),
                                 squeeze=False)  # fmt: skip
        for row, objective in enumerate(objectives):
            for col, axis in enumerate(spec.axes):
                ax = grid[row][col]
                levels = sorted({str(p["params"][axis.path]) for p in done}, key=_order)
                position = {level: i for i, level in enumerate(levels)}
                ax.scatter([position[str(p["params"][axis.path])] for p in done],
                           [p["metrics"][objective] for p in done], s=10, alpha=0.6)  # fmt: skip
                ax.set_xticks(range(len(levels)), levels, rotation=45, fontsize=7)
                ax.set(xlabel=axis.path if row == len(objectives) - 1 else "", ylabel=objective if col == 0 else "")
        fig.suptitle(f"{spec.name}: each objective against each axis")
        fig.tight_layout()
        fig.savefig(out / "sensitivity.png", dpi=110)
        plt.close(fig)
        paths.append(out / "sensitivity.png")
    return paths


def _order(level: str) -> tuple:
    try:
        return (0, float(level), level)
    except ValueError:
        return (1, 0.0, level)
