"""The action-count contract: pricing counts actions per op, and energy is counts × prices."""

import dataclasses
import math

import pytest

import e2sim
from e2sim.config.frozen import FrozenDict
from e2sim.energy.actions import COMPONENTS

CASES = [
    ("lenet5-mnist", "zedboard", {}),
    ("resnet20-cifar10", "eyeriss", {}),  # row stationary, zero gating, compression
    ("lenet5-mnist", "axtrain-65nm", {"approximate": True}),  # approximate-mode ops at their own voltage
    ("workloads/alexnet-conv.csv", "eyeriss", {"batch_size": 4, "operand_bits": 16, "accumulator_bits": 16}),
]


@pytest.mark.parametrize(("workload", "hw", "options"), CASES)
def test_energy_is_the_dot_product_of_action_counts_and_prices(workload, hw, options):
    estimate = e2sim.estimate(workload, hw, **options)
    for row in estimate.rows:
        assert row.actions or row.energy_j == 0, f"{row.op.name} has energy but counted no action"
        by_component = dict.fromkeys(COMPONENTS, 0.0)
        for action, count in row.actions.items():
            by_component[action.component] += count * estimate.prices[action] * 1e-12
        for component in COMPONENTS:
            assert math.isclose(by_component[component], row.energy[component], rel_tol=1e-12, abs_tol=1e-30)
    rows = estimate.to_dict()["actions"]
    assert math.isclose(sum(r["energy_j"] for r in rows), estimate.energy_j, rel_tol=1e-12)
    assert {r["component"] for r in rows} <= set(COMPONENTS)


def test_action_counts_do_not_depend_on_the_energy_table_prices():
    """Changing a DRAM and an SRAM price (the mapping search held to one candidate by a latency
    objective) changes the prices, never the counts, and energy moves by counts × Δprice."""
    hw = e2sim.load_hw("zedboard")
    base = e2sim.estimate("lenet5-mnist", hw, objective="latency")
    cheaper = {**dict(hw.energy_overrides or {}), "dram_ddr3_pj_per_bit": 35.0, "sram_access_64b_8kb_pj": 5.0}
    other = e2sim.estimate("lenet5-mnist", dataclasses.replace(hw, energy_overrides=FrozenDict(cheaper)),
                           objective="latency")  # fmt: skip
    assert base.actions() == other.actions()
    predicted = sum(n * other.prices[a] for a, n in base.actions().items()) * 1e-12
    assert math.isclose(predicted, other.energy_j, rel_tol=1e-12)
    assert other.energy_j < base.energy_j
