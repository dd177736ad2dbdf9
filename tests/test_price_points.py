"""The vectorised estimate path (``energy.many.account_points``): one nominal iteration priced on
many accelerators as arrays over points equals ``account`` on each, on every shipped accelerator
(systolic, row stationary, one global buffer, with and without DMA overlap), with fusion on and
off and under each mapper objective; points it does not cover are left to ``account``."""

from __future__ import annotations

import pytest
from conftest import ROOT

import e2sim
from e2sim.config.loading import read_hardware_spec
from e2sim.config.yaml_text import read_yaml_file
from e2sim.studies.single import prepare, price, price_points

HARDWARE = ("systolic-16x16", "systolic-32x32", "eyeriss", "zedboard", "zc706", "zcu102", "vc707-zhang2015",
            "axtrain-65nm")  # fmt: skip


@pytest.mark.parametrize("workload", ["resnet20-cifar10", "mobilenet-cifar10", "lenet5-mnist"])
@pytest.mark.parametrize("pricing", [(True, "energy"), (False, "energy"), (True, "latency"), (True, "edp")])
def test_pricing_many_points_together_equals_pricing_each(workload, pricing):
    prepared = prepare(workload, 8)
    accelerators = [read_hardware_spec(name) for name in HARDWARE]
    totals = price_points(prepared.workload, prepared.graph, accelerators, pricing)
    for hw, found in zip(accelerators, totals, strict=True):
        scalar = price(prepared.workload, prepared.graph, hw, None, False, False, pricing, None)
        assert found is not None, hw.name
        expected = {"energy_j": scalar.energy_j, "cycles": scalar.cycles, "time_s": scalar.time_s,
                    "dram_bytes": sum(r.cost.dram_bytes for r in scalar.rows),
                    "macs": sum(sum(r.macs.values()) for r in scalar.rows)}  # fmt: skip
        for name, value in expected.items():
            assert getattr(found, name) == pytest.approx(value, rel=1e-12, abs=0), (hw.name, name)


def test_points_the_path_does_not_cover_are_left_to_account():
    """Stated densities (zeros priced per tensor) and buffers no tile fits: None, and ``price``
    prices or reports them."""
    prepared = prepare("lenet5-mnist", 8)
    document = read_yaml_file(ROOT / "hw_specs" / "systolic-16x16.yaml")
    sparse = e2sim.load_hw({**document, "sparsity": {"zero_gating": True, "densities": {"activations": 0.5}}})
    sizes = {"ifmap": 1, "filter": 0.5, "ofmap": 0.125}  # a backward-data op needs 150 bytes of ofmap
    tiny = e2sim.load_hw({**document, "buffers": {name: {**b, "size_kb": sizes[name]}
                                                  for name, b in document["buffers"].items()}})  # fmt: skip
    plain = read_hardware_spec("systolic-16x16")
    totals = price_points(prepared.workload, prepared.graph, [sparse, plain, tiny], (True, "energy"))
    assert totals[0] is None and totals[2] is None and totals[1] is not None
    with_zeros = price(prepared.workload, prepared.graph, sparse, None, False, False, (True, "energy"), None)
    assert with_zeros.energy_j != pytest.approx(totals[1].energy_j, rel=1e-6)
    with pytest.raises(e2sim.SpecError, match="fits"):
        price(prepared.workload, prepared.graph, tiny, None, False, False, (True, "energy"), None)
