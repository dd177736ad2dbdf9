"""Fittable price parameters (energy-table entries and ``static_power_mw``): reading and setting
them on a hardware spec, the prices of actions at given values, and the error bars that a
calibrated spec's fit puts on an energy (linear propagation through the action counts)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

from e2sim.config.frozen import FrozenDict
from e2sim.energy.actions import PJ, Action, Arithmetic, Prices
from e2sim.energy.tables import load_table
from e2sim.hw.accelerator import Accelerator
from e2sim.hw.energy_entries import ENERGY_ENTRIES

STATIC_POWER = "static_power_mw"
PARAMETERS = (*ENERGY_ENTRIES, STATIC_POWER)


def parameter_value(hw: Accelerator, name: str) -> float:
    """The value ``hw`` prices with: its static power, its override or its table's entry."""
    if name == STATIC_POWER:
        return hw.static_power_mw
    return load_table(hw.technology, hw.energy_overrides)[name]


def with_parameters(hw: Accelerator, names: Sequence[str], values: Sequence[float]) -> Accelerator:
    """``hw`` pricing with ``values`` for ``names`` (table entries become overrides)."""
    overrides = dict(hw.energy_overrides or {})
    static = hw.static_power_mw
    for name, value in zip(names, values, strict=True):
        if name == STATIC_POWER:
            static = float(value)
        else:
            overrides[name] = float(value)
    return dataclasses.replace(hw, static_power_mw=static, energy_overrides=FrozenDict(overrides))


def prices_at(hw: Accelerator, arithmetic: Arithmetic, actions: Iterable[Action], names: Sequence[str],
              values: Sequence[float]) -> dict[Action, float]:  # fmt: skip
    """pJ of each of ``actions`` on ``hw`` with ``values`` for the parameters ``names``."""
    priced = with_parameters(hw, names, values)
    prices = Prices.of(priced, load_table(priced.technology, priced.energy_overrides), arithmetic)
    return {a: prices.pj(a) for a in actions}


def price_gradients(hw: Accelerator, arithmetic: Arithmetic, actions: Sequence[Action], names: Sequence[str],
                    values: Sequence[float]) -> dict[Action, tuple[float, ...]]:  # fmt: skip
    """∂pJ/∂parameter of each action at ``values`` (central differences; forward at a zero value)."""
    columns = []
    for k, value in enumerate(values):
        step = 1e-6 * max(abs(value), 1e-6)
        low = value - step if value - step > 0 else value
        up, down = list(values), list(values)
        up[k], down[k] = value + step, low
        above = prices_at(hw, arithmetic, actions, names, up)
        below = prices_at(hw, arithmetic, actions, names, down)
        columns.append({a: (above[a] - below[a]) / (value + step - low) for a in actions})
    return {a: tuple(c[a] for c in columns) for a in actions}


def energy_sigma_j(counts: Mapping[Action, float], gradients: Mapping[Action, tuple[float, ...]],
                   covariance: Sequence[Sequence[float]]) -> float:  # fmt: skip
    """1σ of Σ count × price(θ) (J) for θ with ``covariance``, linearised at the fitted values."""
    n = len(covariance)
    g = [0.0] * n
    for action, count in counts.items():
        for k, d in enumerate(gradients.get(action, (0.0,) * n)):
            g[k] += count * d * PJ
    variance = sum(g[i] * covariance[i][j] * g[j] for i in range(n) for j in range(n))
    return math.sqrt(max(variance, 0.0))
