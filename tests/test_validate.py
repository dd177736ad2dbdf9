"""Validation against measurements and calibration: synthetic recovery and coverage, the shipped
measurements, bad measurement files, deterministic JSON and error bars on calibrated specs."""

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy import stats

import e2sim
from e2sim.config.errors import SpecError
from e2sim.config.loading import embedded_dir
from e2sim.studies.calibrate import fit_parameters, parameter_of
from e2sim.studies.validate import load_measurement, predict_measurement

TRUTH = {"dram_ddr3_pj_per_bit": 40.0, "static_power_mw": 260.0}  # the spec says 70 pJ/bit and 150 mW
CASES = [  # (name, workload block, phase, batch): inference of AlexNet's convs and LeNet-5/ResNet-20 training
    ("alexnet-b1", {"topology": "alexnet-conv", "operand_bits": 8}, "inference", 1),
    ("alexnet-b4", {"topology": "alexnet-conv", "operand_bits": 8}, "inference", 4),
    ("lenet-b16", {"name": "lenet5-mnist"}, "training", 16),
    ("lenet-b64", {"name": "lenet5-mnist"}, "training", 64),
    ("lenet-b256", {"name": "lenet5-mnist"}, "training", 256),
    ("resnet20-b8", {"name": "resnet20-cifar10"}, "training", 8),
]


def measurement_doc(name, workload, phase, batch, power_mw=1.0, energy_mj=1.0):
    return {"name": name, "citation": "synthetic: e2sim itself at known parameter values, with noise",
            "device": {"hw": "zedboard"}, "workload": workload, "phase": phase, "batch": batch,
            "includes_dram_energy": True,
            "measured": {"power_mw": {"value": power_mw, "source": "synthetic"},
                         "energy_mj": {"value": energy_mj, "per": "image", "source": "synthetic"}}}  # fmt: skip


def truth_hw():
    hw = e2sim.load_hw("zedboard")
    return dataclasses.replace(hw, static_power_mw=TRUTH["static_power_mw"],
                               energy_overrides={"dram_ddr3_pj_per_bit": TRUTH["dram_ddr3_pj_per_bit"]})  # fmt: skip


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Measurement files of CASES whose values e2sim predicts on the true spec, times log-normal noise (2%)."""
    folder = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(11)
    paths = []
    for name, workload, phase, batch in CASES:
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(measurement_doc(name, workload, phase, batch)))
        _, (power, energy) = predict_measurement(load_measurement(path), truth_hw())
        noise = [float(v) for v in np.exp(rng.normal(0.0, 0.02, 2))]
        path.write_text(yaml.safe_dump(measurement_doc(name, workload, phase, batch, power.predict() * noise[0],
                                                       energy.predict() * noise[1])))  # fmt: skip
        paths.append(str(path))
    return paths


def test_calibrate_recovers_the_true_values_within_their_standard_errors(synthetic, tmp_path):
    out = tmp_path / "zedboard-calibrated.yaml"
    result = e2sim.calibrate(synthetic, "zedboard", ["dram_ddr3_pj_per_bit", "static_power_mw"], out=out)
    fit = result.fit
    assert fit.success and fit.observations == 12
    for name, value, error in zip(fit.names, fit.values, fit.standard_errors, strict=True):
        assert 0 < error < 0.25 * TRUTH[name], (name, value, error)
        assert abs(value - TRUTH[name]) <= 3 * error, (name, value, error, TRUTH[name])
    report = result.to_dict()
    assert report["mape_percent"]["fitted"] < report["mape_percent"]["uncalibrated"]
    assert len(result.loo.rows) == 12 and not result.loo.skipped  # every measurement predicted by the others
    assert report["mape_percent"]["leave_one_out"] < 15
    # the written spec: fitted values as its own, error bars on its estimates, never overwritten
    calibrated = e2sim.load_hw(out)
    assert calibrated.static_power_mw == pytest.approx(fit.values[1])
    assert calibrated.energy_overrides["dram_ddr3_pj_per_bit"] == pytest.approx(fit.values[0])
    assert {r.measurement for r in result.after} == {c[0] for c in CASES}
    estimate = e2sim.estimate("lenet5-mnist", out)
    sigma = estimate.energy_sigma_j
    assert 0 < sigma < 0.2 * estimate.energy_j
    assert estimate.to_dict()["uncertainty"]["energy_j_sigma"] == sigma
    with pytest.raises(SpecError, match="never overwrites"):
        e2sim.calibrate(synthetic, "zedboard", ["static_power_mw"], out=out)


def test_linear_error_bars_match_sampling_the_fit(synthetic, tmp_path):
    """The propagated σ of an estimate equals the spread of energies re-priced at parameter values
    drawn from the fit's covariance (the energy is linear in these two parameters)."""
    out = tmp_path / "calibrated.yaml"
    e2sim.calibrate(synthetic, "zedboard", ["dram_ddr3_pj_per_bit", "static_power_mw"], out=out)
    hw = e2sim.load_hw(out)
    estimate = e2sim.estimate("resnet20-cifar10", hw, batch_size=16)
    fit = hw.calibration
    from e2sim.energy.parameters import prices_at

    draws = np.random.default_rng(3).multivariate_normal(fit.values, fit.covariance(), size=2000)
    counts = estimate.actions()
    energies = [sum(n * p for n, p in zip(counts.values(), prices_at(hw, estimate.arithmetic, counts, fit.parameters,
                                                                      d).values(), strict=True)) * 1e-12
                for d in draws]  # fmt: skip
    assert np.std(energies) == pytest.approx(estimate.energy_sigma_j, rel=0.06)


def test_reported_uncertainty_covers_the_truth_at_the_stated_rate(synthetic):
    """Over 300 noise draws, the 95% interval (value ± t·σ, t for the fit's degrees of freedom)
    holds the true value in 90–99% of the fits, for each parameter."""
    hw = e2sim.load_hw("zedboard")
    observations = [o for p in synthetic for o in predict_measurement(load_measurement(p), hw)[1]]
    parameters = [parameter_of(hw, name) for name in TRUTH]
    names, truth = list(TRUTH), list(TRUTH.values())
    exact = [o.predict_at(names, truth) for o in observations]
    rng = np.random.default_rng(5)
    t = stats.t.ppf(0.975, len(observations) - len(parameters))
    covered, draws = np.zeros(len(names)), 300
    for _ in range(draws):
        noise = np.exp(rng.normal(0.0, 0.08, len(exact)))
        noisy = [dataclasses.replace(o, measured=dataclasses.replace(o.measured, value=float(v * n)))
                 for o, v, n in zip(observations, exact, noise, strict=True)]  # fmt: skip
        fit = fit_parameters(noisy, parameters)
        covered += [abs(v - x) <= t * e for v, x, e in zip(fit.values, truth, fit.standard_errors, strict=True)]
    rates = covered / draws
    print(f"coverage of the 95% intervals over {draws} draws: {dict(zip(names, rates, strict=True))}")
    assert all(0.90 <= r <= 0.99 for r in rates), rates


def test_shipped_measurements_validate_with_deterministic_json(tmp_path):
    command = [sys.executable, "-m", "e2sim", "validate", "shipped", "--json"]
    first = subprocess.run([*command, "--out", str(tmp_path / "a")], capture_output=True, text=True, check=True)
    second = subprocess.run(command, capture_output=True, text=True, check=True)
    assert first.stdout == second.stdout
    report = json.loads(first.stdout)
    assert len({r["citation"] for r in report["rows"]}) >= 2 and len(report["rows"]) >= 7
    assert all(r["source"] for r in report["rows"])
    for r in report["rows"]:
        assert r["relative_error"] == pytest.approx(r["predicted"] / r["measured"] - 1)
    assert (tmp_path / "a" / "validation.png").stat().st_size > 10_000
    assert (tmp_path / "a" / "validation.json").read_text() == first.stdout
    again = subprocess.run([sys.executable, "-m", "e2sim", "validate", "shipped", "--out", str(tmp_path / "a")],
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 2 and "already holds" in again.stderr


def test_calibrate_json_is_byte_identical_for_the_same_inputs(synthetic):
    command = [sys.executable, "-m", "e2sim", "calibrate", *synthetic[:3], "--hw", "zedboard", "--fit",
               "static_power_mw", "--json"]  # fmt: skip
    runs = [subprocess.run(command, capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1] and json.loads(runs[0])["fit"]["parameters"][0]["name"] == "static_power_mw"


BAD = {
    "wrong unit": ({"power_w": {"value": 278, "source": "x"}},
                   "measured.power_w: unknown key; did you mean 'power_mw'?"),
    "no source": ({"power_mw": {"value": 278}}, "measured.power_mw.source: missing required key"),
    "negative": ({"power_mw": {"value": -1, "source": "x"}}, "measured.power_mw.value: must be a positive number"),
    "bad per": ({"latency_ms": {"value": 3, "per": "frame", "source": "x"}},
                "measured.latency_ms.per: must be one of batch, image"),
}  # fmt: skip


def _doc(**changes):
    doc = {"name": "bad", "citation": "test", "device": {"hw": "eyeriss"},
           "workload": {"topology": "alexnet-conv", "operand_bits": 16}, "phase": "inference", "batch": 1,
           "includes_dram_energy": False, "measured": {"power_mw": {"value": 278, "source": "abstract"}}}  # fmt: skip
    doc.update(changes)
    return doc


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_measured_value_is_one_line_naming_file_and_key(case, tmp_path):
    measured, message = BAD[case]
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(_doc(measured=measured)))
    done = subprocess.run([sys.executable, "-m", "e2sim", "validate", str(path)], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"e2sim: {path}: {message}"), lines


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"device": {"hw": "no-such-board"}}, "device.hw: 'no-such-board' does not load: "),
        ({"workload": {"topology": "no-such.csv"}}, "workload.topology: no topology"),
        ({"workload": {"name": "lenet5-mnist"}, "layers": {"conv9": {"power_mw": {"value": 1, "source": "x"}}}},
         "layers.conv9: no layer of that name in lenet5-mnist"),
        ({"phase": "training"}, "phase: a topology holds forward layers only"),
        ({"includes_dram_energy": None}, "includes_dram_energy: must be true or false"),
    ],
)  # fmt: skip
def test_a_bad_measurement_file_is_one_clean_line(changes, message, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(_doc(**changes)))
    done = subprocess.run([sys.executable, "-m", "e2sim", "validate", str(path)], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"e2sim: {path}: {message}"), lines


def test_bad_calibrate_arguments_are_one_line(synthetic):
    for fit, message in (("pj_per_banana", "not a fittable parameter"), ("static_power_mw=5:1", "bounds must"),
                         ("static_power_mw=a:b", "bounds must be LOW:HIGH")):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "e2sim", "calibrate", synthetic[0], "--hw", "zedboard", "--fit",
                               fit], capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    with pytest.raises(SpecError, match="need more than 2"):
        e2sim.calibrate(synthetic[:1], "zedboard", ["static_power_mw", "dram_ddr3_pj_per_bit"])


def test_a_calibration_block_must_match_the_values_the_spec_uses(tmp_path):
    doc = yaml.safe_load((embedded_dir("hardware") / "zedboard.yaml").read_text())
    doc["calibration"] = {"parameters": {"static_power_mw": {"value": 200.0, "standard_error": 5.0}},
                          "correlation": [[1.0]]}  # fmt: skip
    path = tmp_path / "hw.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"calibration\.parameters\.static_power_mw\.value: is 200 but the spec's "
                                       r"static_power_mw is 150"):  # fmt: skip
        e2sim.load_hw(path)
    doc["static_power_mw"] = 200.0
    doc["calibration"]["correlation"] = [[1.0, 0.5]]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"calibration\.correlation: must be a symmetric 1x1 matrix"):
        e2sim.load_hw(path)


EXTREMES = (math.inf, -math.inf, math.nan, 1e308, 2**63, -0.0, 0)


def _numbers(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, (*path, k))
    elif isinstance(node, bool):
        return
    elif isinstance(node, int | float):
        yield path


@pytest.mark.parametrize("name", ["eyeriss-alexnet-conv", "eyeriss-vgg16-conv", "zhang2015-alexnet-vc707"])
def test_extreme_numbers_in_a_measurement_file_are_errors_at_their_key(name, tmp_path):
    doc = yaml.safe_load((embedded_dir("measurement") / f"{name}.yaml").read_text())
    paths = list(_numbers(doc))
    assert paths
    for path in paths:
        for value in EXTREMES:
            changed = json.loads(json.dumps(doc))
            node = changed
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            target = tmp_path / "m.yaml"
            target.write_text(yaml.safe_dump(changed))
            try:
                load_measurement(target)
            except SpecError as exc:
                assert ".".join(map(str, path)) in str(exc), (path, value, str(exc))
            else:
                assert math.isfinite(value) and 0 < value < 1e15, (path, value)


def test_a_layer_value_is_predicted_from_that_layer_alone(tmp_path):
    path = tmp_path / "m.yaml"
    doc = _doc(layers={"conv2": {"latency_ms": {"value": 5.0, "per": "batch", "source": "x"},
                                 "power_mw": {"value": 250.0, "source": "x"}}})  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    estimate, observations = predict_measurement(load_measurement(path), None)
    conv2 = [r for r in estimate.rows if r.op.layer == "conv2"]
    by_quantity = {(o.measured.quantity, o.measured.layer): o.predict() for o in observations}
    seconds = sum(r.cycles for r in conv2) / (200e6)
    assert by_quantity["latency_ms", "conv2"] == pytest.approx(seconds * 1e3)
    chip = sum(v for r in conv2 for k, v in r.energy.items() if k != "dram")  # includes_dram_energy: false
    assert by_quantity["power_mw", "conv2"] == pytest.approx(chip / seconds * 1e3)
    assert by_quantity["power_mw", None] != by_quantity["power_mw", "conv2"]


def test_a_run_on_a_calibrated_spec_reports_its_error_bar(synthetic, tmp_path):
    out = tmp_path / "calibrated.yaml"
    e2sim.calibrate(synthetic, "zedboard", ["static_power_mw"], out=out)
    workload = {"name": "tiny", "dataset": {"name": "mnist5k"}, "model": {"arch": "resnet", "depth": 8,
                "base_channels": 4}, "training": {"batch_size": 256, "epochs": 1, "lr": 0.05, "seed": 7}}  # fmt: skip
    report = e2sim.run(workload, out, epochs=1, progress=False).to_dict()
    u = report["energy"]["uncertainty"]
    assert 0 < u["energy_j_sigma"] < report["energy"]["total_j"] and u["parameters"][0]["name"] == "static_power_mw"
    from e2sim.report.run import format_run

    assert "± " in format_run(report)


def test_an_inline_layer_list_prices_as_the_same_topology_csv(tmp_path):
    rows = [line.split(",") for line in (embedded_dir("workload") / "alexnet-conv.csv").read_text().splitlines()[1:]]
    layers = [{"name": r[0], "ifmap": [int(r[1]), int(r[2])], "filter": [int(r[3]), int(r[4])],
               "channels": int(r[5]), "filters": int(r[6]), "stride": int(r[7])} for r in rows]  # fmt: skip
    inline, csv = tmp_path / "inline.yaml", tmp_path / "csv.yaml"
    inline.write_text(yaml.safe_dump(_doc(workload={"layers": layers, "operand_bits": 16})))
    csv.write_text(yaml.safe_dump(_doc()))
    assert [r.predicted for r in e2sim.validate([inline]).rows] == [r.predicted for r in e2sim.validate([csv]).rows]
    layers[1]["filter"] = [99, 99]
    layers[2]["name"] = layers[0]["name"]
    inline.write_text(yaml.safe_dump(_doc(workload={"layers": layers})))
    with pytest.raises(SpecError) as caught:
        load_measurement(inline)
    assert [p.path for p in caught.value.problems] == ["workload.layers[1].filter", "workload.layers[2].name"]
