"""Search specs (``e2sim search``): RENA over networks grown from a seed workload, rewarded by
proxy-trained accuracy with penalties for violated resource constraints.

```yaml
name: rena-mnist
seed: rena-seed-mnist            # a workload whose model.layers are RENA units (name or path)
hardware: zedboard               # prices training energy and time per iteration
proxy_epochs: 1                  # each child trains this long for its accuracy
constraints:                     # each optional: max (or min for flops_per_byte)
  energy_per_iteration_j: {max: 2.0e-3}
  time_per_iteration_s: {max: 0.02}
  parameters: {max: 20000}
  flops: {max: 5.0e6}            # forward FLOPs per image
  flops_per_byte: {min: 4}       # FLOPs per byte moved between the ops of one training iteration
penalty: 1.0                     # reward = accuracy − penalty × Σ relative violations
sampler: rena                    # rena | random (uniform over valid edits: the comparison)
steps: 6                         # controller updates
children_per_step: 4
edits_per_child: 2
parents: 1                       # children come from the best-rewarded network (1) or, drawn per child,
                                 #   from the best N rewarded so far
controller: {hidden: 32, lr: 0.01, entropy: 0.05, baseline_decay: 0.9}
limits: {max_units: 10, max_channels: 128}
seed_value: 0                    # random seed of the sampler
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2sim.config.reader import (
    ProblemLog,
    Section,
    at_most,
    fraction_below_one,
    non_negative_int,
    non_negative_number,
    one_of,
    positive_int,
    positive_number,
    string,
)
from e2sim.config.yaml_text import read_yaml_file

CONSTRAINTS = {"energy_per_iteration_j": "max", "time_per_iteration_s": "max", "parameters": "max", "flops": "max",
               "flops_per_byte": "min"}  # fmt: skip
SAMPLERS = ("rena", "random")


@dataclass(frozen=True)
class SearchSpec:
    name: str
    source: str
    seed: str  # workload name or path
    hardware: str
    proxy_epochs: int
    constraints: tuple[tuple[str, float], ...]
    penalty: float
    sampler: str
    steps: int
    children_per_step: int
    edits_per_child: int
    hidden: int
    lr: float
    entropy: float
    baseline_decay: float
    max_units: int
    max_channels: int
    seed_value: int
    parents: int = 1


def read_search_spec(path: str | Path) -> SearchSpec:
    source = str(path)
    log = ProblemLog(source)
    top = Section.of(read_yaml_file(path), "", log)
    if top is None:
        log.raise_if_any()
    folder = Path(path).parent
    name = top.read("name", string)
    seed = top.read("seed", string)
    hardware = top.read("hardware", string)
    epochs = top.read("proxy_epochs", at_most(positive_int, 1000))
    constraints = []
    limits = top.section("constraints", default={})
    for key, sense in CONSTRAINTS.items():
        entry = limits.section(key, default=None)
        if entry is None:
            continue
        value = entry.read(sense, at_most(positive_number, 1e18))
        entry.finish(f" of a {sense}imum constraint")
        if value is not None:
            constraints.append((key, value))
    limits.finish(" (constraints)")
    penalty = top.read("penalty", at_most(non_negative_number, 1e6), default=1.0)
    sampler = top.read("sampler", one_of(*SAMPLERS), default="rena")
    steps = top.read("steps", at_most(positive_int, 100_000))
    children = top.read("children_per_step", at_most(positive_int, 1024))
    edits = top.read("edits_per_child", at_most(positive_int, 16), default=1)
    parents = top.read("parents", at_most(positive_int, 1024), default=1)
    c = top.section("controller", default={})
    hidden = c.read("hidden", at_most(positive_int, 1024), default=32)
    lr = c.read("lr", at_most(positive_number, 10), default=0.01)
    entropy = c.read("entropy", at_most(non_negative_number, 10), default=0.05)
    decay = c.read("baseline_decay", fraction_below_one, default=0.9)
    c.finish()
    s = top.section("limits", default={})
    max_units = s.read("max_units", at_most(positive_int, 64), default=12)
    max_channels = s.read("max_channels", at_most(positive_int, 4096), default=256)
    s.finish()
    seed_value = top.read("seed_value", at_most(non_negative_int, 2**32 - 1), default=0)
    top.finish()
    log.raise_if_any()
    return SearchSpec(name, source, _relative(seed, folder), _relative(hardware, folder), epochs, tuple(constraints),
                      penalty, sampler, steps, children, edits, hidden, lr, entropy, decay, max_units, max_channels,
                      seed_value, parents)  # fmt: skip


def _relative(spec: str, folder: Path) -> str:
    candidate = folder / spec
    return str(candidate) if Path(spec).suffix and candidate.exists() else spec


def spec_dict(spec: SearchSpec) -> dict[str, Any]:
    """The settings that decide what the search evaluates (its store key includes them)."""
    return {k: v for k, v in spec.__dict__.items() if k not in ("source",)}
