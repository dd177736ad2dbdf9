"""AxTrain: the approximate operating mode (multipliers, bit errors, pricing), passive and active
training, and the presets of issue 6."""

import dataclasses
import json

import numpy as np
import pytest

import e2sim
import e2sim.functional as F
from e2sim.cli.main import main
from e2sim.config.errors import SpecError
from e2sim.config.policy import PolicySpec, preset
from e2sim.config.workload import with_policy
from e2sim.energy.tables import load_table
from e2sim.hw.approximate import ApproximateMode, MultiplierSpec, interpolate_rate
from e2sim.kernels import approx
from e2sim.numerics.approximate import ApproxDatapath, flip_bits
from e2sim.numerics.quantize import quantize
from e2sim.policies.axtrain import AxTrainSpec, measure_sensitivity
from e2sim.train.data import load_dataset
from e2sim.train.engine import GraphExecutor
from e2sim.train.loop import train
from tests.test_approx import twin

INT8 = F.precision(weights="int8", activations="int8", errors="int8", gradients="int16", accumulator="int32")
HW = e2sim.load_hw("axtrain-65nm")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E2SIM_CACHE_DIR", str(tmp_path / "cache"))


def mode(multiplier: MultiplierSpec, rate: float = 0.0, on=("weights",)) -> ApproximateMode:
    return ApproximateMode(multiplier, 0.6, ((0.6, rate),), on)


# -- bit errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bits", "rate"), [(8, 1e-3), (8, 2e-2), (4, 5e-3), (16, 1e-4)])
def test_observed_bit_error_rate_matches_the_configured_rate(bits, rate):
    rng = np.random.default_rng(1)
    top = 2 ** (bits - 1)
    values = rng.integers(-top + 1, top, 400_000).astype(np.float32)
    out, flips = flip_bits(values, bits, rate, rng)
    mask = (1 << bits) - 1
    changed = (values.astype(np.int64) & mask) ^ (out.astype(np.int64) & mask)
    per_position = np.array([np.count_nonzero(changed >> b & 1) for b in range(bits)])
    assert per_position.sum() == flips  # every counted flip is a flipped bit, and nothing else changed
    total = values.size * bits
    sigma = np.sqrt(total * rate * (1 - rate))
    assert abs(flips - total * rate) < 4 * sigma  # binomial(total, rate)
    expected = values.size * rate  # per bit position
    assert np.all(np.abs(per_position - expected) < 5 * np.sqrt(expected) + 1)  # uniform over positions
    assert out.min() >= -top and out.max() <= top - 1  # still N-bit two's complement words


def test_no_flips_at_rate_zero_and_reproducible_per_seed():
    values = np.arange(-100, 100, dtype=np.float32)
    assert flip_bits(values, 8, 0.0, np.random.default_rng(0)) == (values, 0)
    a = flip_bits(values, 8, 0.05, np.random.default_rng(7))[0]
    b = flip_bits(values, 8, 0.05, np.random.default_rng(7))[0]
    assert np.array_equal(a, b) and not np.array_equal(a, values)


def test_bit_error_rate_interpolates_log_linearly_between_voltages():
    points = ((0.5, 1e-2), (0.6, 1e-3), (0.9, 0.0))
    assert interpolate_rate(points, 0.55) == pytest.approx(np.sqrt(1e-5))
    assert interpolate_rate(points, 0.75) == pytest.approx(5e-4)  # linear next to a zero rate
    assert interpolate_rate(points, 0.4) == 1e-2 and interpolate_rate(points, 1.0) == 0.0
    assert HW.approximate.bit_error_rate == pytest.approx(1e-3)


def test_the_datapath_counts_what_it_read_and_flipped():
    datapath = ApproxDatapath(mode(MultiplierSpec("exact"), 0.01, on=("weights",)))
    rng = np.random.default_rng(0)
    w = quantize(rng.standard_normal((64, 500)).astype(np.float32), INT8.weights, "nearest")
    x = quantize(rng.standard_normal((64, 500)).astype(np.float32), INT8.activations, "nearest")
    assert np.array_equal(datapath.read_operand(x, "activations", rng), x.values)  # activations are not affected
    datapath.read_operand(w, "weights", rng)
    assert datapath.stats.bits_read == w.values.size * 8
    assert abs(datapath.stats.observed_rate - 0.01) < 0.002


# -- approximate GEMMs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "param"), [(approx.MITCHELL, 0), (approx.DRUM, 3), (approx.TRUNCATION, 2)])
def test_signed_product_table_holds_every_product(kind, param):
    table = approx.signed_product_table(129, kind, param, np.zeros((1, 1), np.int64))
    rng = np.random.default_rng(3)
    for a, b in rng.integers(-128, 129, (2000, 2)):
        assert table[a + 128, b + 128] == twin(int(a), int(b), kind, param)


def test_lut_matmul_equals_its_numpy_twin():
    rng = np.random.default_rng(4)
    table = approx.signed_product_table(129, approx.MITCHELL, 0, np.zeros((1, 1), np.int64))
    a = rng.integers(-128, 128, (7, 300)).astype(np.float32)
    b = rng.integers(-128, 128, (300, 45)).astype(np.float32)
    ai, bi = a.astype(np.int64) + 128, b.astype(np.int64) + 128
    twin_sum = table[ai[:, :, None], bi[None, :, :]].astype(np.int64).sum(axis=1)  # numpy twin
    assert np.array_equal(approx.lut_matmul(a, b, table), twin_sum)
    assert np.array_equal(approx.lut_matmul(a, b, table), approx.mitchell_matmul(a, b))


def conv_twin(x, w, kind, param, stride=1, pad=1):
    """Per-product reference of an approximate int8 conv: quantize like conv2d, multiply with the
    plain-Python multiplier definitions, scale back."""
    xq = quantize(x, INT8.activations, "nearest")
    wq = quantize(w, INT8.weights, "nearest")
    xi = np.pad(xq.values.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    wi = wq.values.astype(np.int64)
    n, c, h, width = xi.shape
    k, _, r, s = wi.shape
    p, q = (h - r) // stride + 1, (width - s) // stride + 1
    y = np.zeros((n, k, p, q), np.float64)
    for i in range(n):
        for o in range(k):
            for u in range(p):
                for v in range(q):
                    patch = xi[i, :, u * stride : u * stride + r, v * stride : v * stride + s]
                    y[i, o, u, v] = sum(
                        twin(int(a), int(b), kind, param) for a, b in zip(patch.flat, wi[o].flat, strict=True)
                    )
    return (y * (float(xq.scale.reshape(-1)[0]) * float(wq.scale.reshape(-1)[0]))).astype(np.float32)


MULTIPLIER_CASES = [
    (MultiplierSpec("drum", kept_bits=3), approx.DRUM, 3),
    (MultiplierSpec("mitchell"), approx.MITCHELL, 0),
    (MultiplierSpec("truncation", dropped_bits=2), approx.TRUNCATION, 2),
]


@pytest.mark.parametrize(("spec", "kind", "param"), MULTIPLIER_CASES)
def test_conv_on_the_approximate_mode_equals_the_per_product_reference(spec, kind, param):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    datapath = ApproxDatapath(mode(spec))
    y = F.conv2d(x, w, None, 1, 1, INT8, approx=datapath)
    assert np.allclose(y, conv_twin(x, w, kind, param), rtol=1e-6, atol=1e-6)
    assert not np.allclose(y, F.conv2d(x, w, None, 1, 1, INT8), rtol=1e-3)  # the approximation is real


def test_an_exact_error_free_mode_changes_nothing():
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((3, 40)).astype(np.float32), rng.standard_normal((5, 40)).astype(np.float32)
    datapath = ApproxDatapath(mode(MultiplierSpec("exact")))
    assert np.array_equal(F.linear(x, w, None, INT8, approx=datapath), F.linear(x, w, None, INT8))
    with pytest.raises(ValueError, match="intN"):
        F.linear(x, w, None, None, approx=datapath)


def write_table(path, products):
    path.write_text("# approximate |a|*|b|\n" + "\n".join(",".join(str(int(v)) for v in row) for row in products))


def approximate_hw(tmp_path, multiplier: dict, **extra) -> dict:
    doc = {"name": "t", "technology": "45nm", "clock_mhz": 200, "static_power_mw": 10,
           "pe_array": {"rows": 8, "cols": 8, "dataflow": "ws"},
           "buffers": {n: {"size_kb": 32} for n in ("ifmap", "filter", "ofmap")},
           "dram": {"type": "lpddr4", "bandwidth_gb_per_s": 12.8},
           "approximate": {"multiplier": multiplier, "supply_voltage_v": 0.7, **extra}}  # fmt: skip
    path = tmp_path / "hw.yaml"
    path.write_text(json.dumps(doc))
    return path


def test_a_table_multiplier_runs_the_products_it_lists(tmp_path):
    products = np.add.outer(np.arange(129), np.zeros(129, np.int64)) * np.arange(129)  # exact products
    products[3, 5] = products[5, 3] = 99  # one characterised error
    write_table(tmp_path / "mul.csv", products)
    hw = e2sim.load_hw(approximate_hw(tmp_path, {"kind": "table", "table_file": "mul.csv", "energy_ratio": 0.5}))
    datapath = ApproxDatapath(hw.approximate)
    a = np.array([[3.0, -5.0, 2.0]], np.float32)
    b = np.array([[5.0], [3.0], [7.0]], np.float32)
    assert datapath.matmul(a, b, 8, 8)[0, 0] == 99 - 99 + 14
    table = load_table("45nm")
    assert table.approx_mult_pj(8, 8, hw.approximate.multiplier) == pytest.approx(0.5 * table.mult_pj(8, 8, False))


@pytest.mark.parametrize(("multiplier", "extra", "key"), [
    ({"kind": "drum"}, {}, "approximate.multiplier.kept_bits"),
    ({"kind": "drumm"}, {}, "approximate.multiplier.kind"),
    ({"kind": "table", "table_file": "missing.csv", "energy_ratio": 0.5}, {}, "approximate.multiplier.table_file"),
    ({"kind": "table", "table_file": "bad.csv", "energy_ratio": 0.5}, {}, "approximate.multiplier.table_file"),
    ({"kind": "table", "table_file": "bad.csv"}, {}, "approximate.multiplier.energy_ratio"),
    ({"kind": "mitchell"}, {"bit_error_rates": [[0.7, 0.9]]}, "approximate.bit_error_rates[0][1]"),
    ({"kind": "mitchell"}, {"bit_error_rates": [[0.7]]}, "approximate.bit_error_rates[0]"),
    ({"kind": "mitchell"}, {"bit_error_rates": [[0.7, 0.1], [0.7, 0.2]]}, "approximate.bit_error_rates"),
    ({"kind": "mitchell"}, {"bit_errors_on": ["biases"]}, "approximate.bit_errors_on[0]"),
])  # fmt: skip
def test_bad_approximate_blocks_name_the_file_and_key(tmp_path, multiplier, extra, key):
    (tmp_path / "bad.csv").write_text("1,2,3\n4,5\n")
    path = approximate_hw(tmp_path, multiplier, **extra)
    with pytest.raises(SpecError) as info:
        e2sim.load_hw(path)
    assert any(str(p).startswith(f"{path}: {key}:") for p in info.value.problems), info.value.problems


def test_runs_on_the_approximate_mode_need_integer_operands_and_the_mode(tmp_path):
    fp32 = dataclasses.replace(e2sim.load_workload("lenet5-mnist"), precision=F.precision())
    with pytest.raises(SpecError, match=r"approximate: the approximate mode multiplies intN operands"):
        e2sim.run(fp32, HW, epochs=1)
    passive = with_policy(e2sim.load_workload("lenet5-mnist"), preset("axtrain-passive"))
    with pytest.raises(SpecError, match=r"systolic-16x16.yaml \(embedded\): approximate: policy axtrain-passive"):
        e2sim.run(passive, "systolic-16x16", epochs=1)
    with pytest.raises(SpecError, match=r"policy\.axtrain\.passive"):
        e2sim.train_workload(passive, epochs=1)


# -- pricing --------------------------------------------------------------------------------------------


def test_the_approximate_mode_prices_cheaper_multiplies_and_scaled_dynamic_energy():
    w = e2sim.load_workload("lenet5-mnist")
    exact, approximate = (e2sim.estimate(w, HW, forward_only=True, approximate=a).to_dict() for a in (False, True))
    table = load_table("65nm")
    v2 = (0.6 / 1.1) ** 2
    multiply = table.approx_mult_pj(8, 8, HW.approximate.multiplier)
    assert multiply == pytest.approx(table.mult_pj(3, 3, False) + 0.21 * table.mult_pj(8, 8, False))
    mac_ratio = v2 * (multiply + table.add_pj(32, False)) / table.mac_pj(8, 8, 32, False)
    for e, a in zip(exact["ops"], approximate["ops"], strict=True):
        ee, ae = e["energy_breakdown_j"], a["energy_breakdown_j"]
        if e["layer_kind"] in ("conv", "linear"):
            assert ae["mac"] == pytest.approx(ee["mac"] * mac_ratio)
            assert ae["sram"] == pytest.approx(ee["sram"] * v2) and ae["rf"] == pytest.approx(ee["rf"] * v2)
        else:
            assert ae == ee
        assert ae["dram"] == ee["dram"] and ae["static"] == ee["static"]
    with pytest.raises(SpecError, match="no approximate mode"):
        e2sim.estimate(w, "systolic-16x16", approximate=True)


# -- training -------------------------------------------------------------------------------------------


def lenet(policy: PolicySpec):
    w = e2sim.load_workload("lenet5-mnist")
    return with_policy(dataclasses.replace(w, training=dataclasses.replace(w.training, batch_size=128)), policy)


def test_passive_training_runs_the_forward_pass_on_the_mode_and_is_priced_there():
    strong = dataclasses.replace(HW, approximate=dataclasses.replace(HW.approximate, supply_voltage_v=0.5))
    result = e2sim.train_workload(lenet(preset("axtrain-passive")), epochs=1, progress=False, hw=strong)
    stats = result.policy_stats["approximate_mode"]
    assert stats["bit_error_rate"] == pytest.approx(1e-2)
    assert stats["bits_read"] > 0 and abs(stats["observed_rate"] - 1e-2) < 1e-3
    weights_per_pass = sum(int(np.prod(result.graph.tensors[f"{n}.w"].shape)) for n in ("conv1", "conv2", "fc1",
                                                                                         "fc2", "fc3"))  # fmt: skip
    test_batches = -(-1000 // 500)
    assert stats["bits_read"] == 8 * weights_per_pass * (result.iterations + test_batches)
    assert result.epochs[-1].approximate_test_accuracy is not None
    assert result.counts.total_macs() == result.iterations * result.graph.macs()
    priced = e2sim.estimate(lenet(preset("axtrain-passive")), strong, counts=result.counts, approximate=True)
    exact = e2sim.estimate(lenet(preset("axtrain-passive")), strong, counts=result.counts)
    fwd = [sum(r.energy["mac"] for r in e.rows if r.op.phase == "fwd") for e in (priced, exact)]
    bwd = [sum(r.energy["mac"] for r in e.rows if r.op.phase != "fwd") for e in (priced, exact)]
    assert fwd[0] < 0.5 * fwd[1] and bwd[0] == bwd[1]


def test_active_training_runs_a_second_pass_and_lowers_measured_sensitivity():
    active = lenet(PolicySpec.of("a", axtrain=AxTrainSpec(passive=False, sensitivity_radius=0.5)))
    normal = lenet(preset("baseline"))
    runs = {name: train(w, epochs=3, progress=False) for name, w in (("normal", normal), ("active", active))}
    graph = runs["normal"].graph
    fwd = next(op for op in graph.ops if op.phase == "fwd" and op.layer_kind == "conv")
    update = next(op for op in graph.ops if op.phase == "update")
    iterations = runs["active"].iterations
    assert runs["active"].counts.ops[fwd.name].runs == 2 * iterations  # the sharpness pass is counted
    assert runs["active"].counts.ops[update.name].runs == iterations
    test = load_dataset(normal.dataset, None).test
    sensitivity = {}
    for name, result in runs.items():
        executor = GraphExecutor(graph, normal.precision, 0.0, 0.0)
        sensitivity[name] = measure_sensitivity(executor, result.state, test.images, test.labels, sigma=0.2)
    assert sensitivity["active"].mean_loss_change < 0.9 * sensitivity["normal"].mean_loss_change, sensitivity
    assert runs["active"].final_test_accuracy > 0.9


def test_active_does_not_compose_with_slu():
    w = e2sim.load_workload("resnet14-mnist")
    policy = PolicySpec.of("x", slu=preset("slu").get("slu"), axtrain=AxTrainSpec(False, 0.5))
    with pytest.raises(SpecError, match=r"policy\.axtrain\.sensitivity_radius"):
        e2sim.run(with_policy(w, policy), "zedboard", epochs=1)


# -- presets and the command line ----------------------------------------------------------------------


def test_presets_and_yaml_blocks(tmp_path):
    assert preset("axtrain").get("axtrain") == AxTrainSpec(True, 0.5)
    assert preset("axtrain-active").get("axtrain") == AxTrainSpec(False, 0.5)
    assert preset("axtrain-passive").get("axtrain") == AxTrainSpec(True, 0.0)
    fp32 = dataclasses.replace(e2sim.load_workload("lenet5-mnist"), precision=F.precision())
    q8 = with_policy(fp32, preset("eif+emp+q8"))
    assert q8.precision.weights.name == "int8" and q8.precision.gradients.name == "int16"
    assert q8.policy.get("eif") is not None and q8.policy.get("emp") is not None
    path = tmp_path / "p.yaml"
    path.write_text("smd: {drop_probability: 0.3}\naxtrain: {sensitivity_radius: 0.2}\n")
    policy = e2sim.api.load_policy(str(path))
    assert policy.name == "smd+axtrain" and policy.get("axtrain") == AxTrainSpec(True, 0.2)
    assert policy.get("smd") is not None
    path.write_text("axtrain: {passive: false}\n")
    with pytest.raises(SpecError, match=r"policy\.axtrain: turn on passive training"):
        e2sim.api.load_policy(str(path))
    workload = tmp_path / "w.yaml"
    workload.write_text("name: w\ndataset: {name: mnist5k}\nmodel: {arch: lenet5}\npolicy: eif+emp+q8\n"
                        "training: {batch_size: 64, epochs: 1, lr: 0.01}\n")  # fmt: skip
    assert e2sim.load_workload(str(workload)).precision.activations.name == "int8"


def test_cli_run_reports_the_approximate_mode(capsys):
    code = main(["run", "--hw", "axtrain-65nm", "--policy", "axtrain-passive", "--epochs", "1", "--json",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    section = report["approximate_mode"]
    assert section["multiplier"] == "drum-3" and section["supply_voltage_v"] == 0.6
    assert 0 < section["inference_energy_per_image_j"]["approximate"] < section["inference_energy_per_image_j"]["exact"]
    assert 0.5 < section["accuracy"]["final"] <= 1
    assert report["epochs"][0]["approximate_test_accuracy"] == section["accuracy"]["final"]


def test_cli_estimate_on_the_approximate_mode(capsys):
    assert main(["estimate", "lenet5-mnist", "--hw", "axtrain-65nm", "--forward-only", "--json"]) == 0
    exact = json.loads(capsys.readouterr().out)["totals"]["energy_j"]
    assert main(["estimate", "lenet5-mnist", "--hw", "axtrain-65nm", "--forward-only", "--approximate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["energy_j"] < exact
    assert main(["estimate", "lenet5-mnist", "--hw", "zedboard", "--approximate"]) == 2
    assert "zedboard.yaml (embedded): approximate: no approximate mode" in capsys.readouterr().err
