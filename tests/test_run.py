"""`e2sim run`: training and pricing together, SMD, reports, determinism."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import e2sim
from e2sim.cli.main import main
from e2sim.config.policy import PolicySpec, preset
from e2sim.policies.smd import LOAD_OP, SmdSpec, drops
from e2sim.report.run import CHECKPOINT, OUTPUT_FILES, write_outputs
from e2sim.train.loop import train


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E2SIM_CACHE_DIR", str(tmp_path / "cache"))


def lenet(batch=64, policy=None):
    base = e2sim.load_workload("lenet5-mnist")
    training = dataclasses.replace(base.training, batch_size=batch)
    return dataclasses.replace(base, training=training, policy=policy or preset("baseline"))


@pytest.mark.parametrize("p", [0.5, 0.3, 0.8])
def test_smd_drop_rate_matches_p(p):
    spec = SmdSpec(drop_probability=p)
    rate = np.mean([drops(spec, 123, i) for i in range(20_000)])
    assert abs(rate - p) < 0.012
    assert [drops(spec, 123, i) for i in range(50)] == [drops(spec, 123, i) for i in range(50)]
    assert [drops(spec, 123, i) for i in range(50)] != [drops(spec, 124, i) for i in range(50)]


@pytest.mark.parametrize("on_skip", ["step", "freeze"])
def test_smd_skips_exactly_the_dropped_iterations(on_skip):
    smd = PolicySpec.of("smd", smd=SmdSpec(0.5, 1.0, on_skip))
    w = lenet(batch=128, policy=smd)
    result = train(w, epochs=1, progress=False)
    graph = result.graph
    stats = result.policy_stats["smd"]
    per_epoch = 4000 // 128
    assert stats["iterations"] == per_epoch and stats["dropped_iterations"] + result.iterations == per_epoch
    dropped = stats["dropped_iterations"]
    assert 0 < dropped < per_epoch
    counts = result.counts
    assert counts.total_macs() == result.iterations * graph.macs()  # only executed iterations multiply
    assert counts.ops[LOAD_OP].calls == dropped  # every dropped batch is still loaded
    assert counts.ops[LOAD_OP].skipped_macs == dropped * graph.macs()
    update_ops = [op for op in graph.ops if op.phase == "update"]
    for op in update_ops:
        runs = per_epoch if on_skip == "step" else result.iterations
        assert counts.ops[op.name].elementwise_ops == runs * op.elementwise_ops, op.name
    priced = e2sim.estimate(w, "zedboard", counts=counts).to_dict()
    load = next(o for o in priced["ops"] if o["name"] == LOAD_OP)
    assert load["executions"] == dropped and load["dram_reads_bytes"]["ifmap"] > 0 and load["macs"] == 0


def test_run_report_and_determinism():
    a = e2sim.run(lenet(batch=128), "systolic-16x16", "smd", epochs=1, progress=False).to_dict()
    b = e2sim.run(lenet(batch=128), "systolic-16x16", "smd", epochs=1, progress=False).to_dict()
    assert json.dumps(a) == json.dumps(b)  # same seed, byte-identical report
    assert set(a) >= {"accuracy", "epochs", "energy", "hardware_time", "macs", "policy_stats", "ops", "policy"}
    assert a["policy"]["name"] == "smd" and a["policy"]["smd"]["drop_probability"] == 0.5
    assert a["macs"]["skipped"] > 0 and a["macs"]["counted"] > 0
    assert a["energy"]["total_j"] == pytest.approx(sum(a["energy"]["breakdown_j"].values()))
    # 1 epoch of 31 iterations stretched by 4/3: 41 iterations, the second epoch a fractional one of 10
    assert a["policy_stats"]["smd"]["iterations"] == 41 and len(a["epochs"]) == 2
    assert a["iterations"] + a["policy_stats"]["smd"]["dropped_iterations"] == 41


def test_smd_stretch_runs_a_fractional_last_epoch():
    result = train(lenet(batch=128, policy=PolicySpec.of("smd", smd=SmdSpec(0.2, 1.5))), epochs=1, progress=False)
    stats = result.policy_stats["smd"]
    assert stats["iterations"] == round(31 * 1.5) == 46  # 46 = 31 + 15: half an epoch more
    assert [e.epoch for e in result.epochs] == [1, 2]
    assert sum(e.iterations for e in result.epochs) + stats["dropped_iterations"] == 46
    assert result.epochs[1].iterations <= 15 < result.epochs[0].iterations
    lrs = [e.lr for e in result.epochs]
    assert lrs[-1] == pytest.approx(0.5 * 0.05 * (1 + np.cos(np.pi * 45 / 46)))  # cosine over all 46 iterations


def test_run_compares_with_a_cached_baseline(tmp_path, monkeypatch):
    first = e2sim.run(lenet(batch=128), "zedboard", "smd", epochs=1, progress=False, compare_baseline=True).to_dict()
    cached = list((tmp_path / "cache" / "trainings").glob("*.pkl"))
    assert len(cached) == 1
    c = first["comparison"]
    assert c["baseline_energy_j"] == pytest.approx(first["baseline"]["energy"]["total_j"])
    assert c["energy_saving"] == pytest.approx(1 - first["energy"]["total_j"] / c["baseline_energy_j"])
    assert 0.1 < c["energy_saving"] < 0.6
    trainings = []
    real = e2sim.train.loop.train
    monkeypatch.setattr(e2sim.train.loop, "train", lambda *a, **k: trainings.append(a[0].policy.name) or real(*a, **k))
    again = e2sim.run(lenet(batch=128), "zedboard", "smd", epochs=1, progress=False, compare_baseline=True).to_dict()
    assert again["comparison"] == c and len(list((tmp_path / "cache" / "trainings").glob("*.pkl"))) == 1
    # the baseline's training is keyed by what training depends on, not by the accelerator
    other = e2sim.run(lenet(batch=128), "systolic-16x16", "smd", epochs=1, progress=False, compare_baseline=True)
    assert trainings == ["smd", "smd"] and len(list((tmp_path / "cache" / "trainings").glob("*.pkl"))) == 1
    assert other.to_dict()["baseline"]["accuracy"] == first["baseline"]["accuracy"]
    assert other.to_dict()["comparison"]["baseline_energy_j"] != c["baseline_energy_j"]


def test_cli_run(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--epochs",
            "1",
            "--policy",
            "smd",
            "--hw",
            "systolic-16x16",
            "--out",
            str(out),
            "--json",
            "--no-progress",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["policy"]["name"] == "smd"
    assert sorted(p.name for p in out.iterdir()) == sorted(n for n in OUTPUT_FILES if n != CHECKPOINT)
    assert json.loads((out / "run.json").read_text()) == report
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert report["e2sim_version"] == e2sim.__version__ and report["workload_spec"]["precision"]["weights"] == "int8"
    assert report["hardware_spec"]["pe_array"]["rows"] == 16 and report["workload_spec"]["policy"]["name"] == "smd"
    for table in out.glob("*.csv"):  # every CSV says what produced it
        first = table.read_text().splitlines()[0]
        assert first.startswith(f"# e2sim {e2sim.__version__} | workload lenet5-mnist") and "policy smd" in first
    earlier = (out / "run.json").read_text()

    assert main(["run", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2  # never over an earlier run
    assert "holds an earlier run (run.json)" in capsys.readouterr().err and (out / "run.json").read_text() == earlier
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["run", "--epochs", "1", "--out", str(foreign), "--no-progress"]) == 2
    assert "holds files e2sim did not write (notes.txt)" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"
    assert main(["run", "--policy", "nonsense", "--no-progress"]) == 2
    assert "not a policy preset" in capsys.readouterr().err
    assert main(["run", "--policy", "slu", "--no-progress"]) == 2
    assert "policy.slu: selective layer update gates residual blocks" in capsys.readouterr().err


def test_policy_files(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("smd: {drop_probability: 0.25, optimizer_on_skip: freeze}\npsg:\n")
    spec = e2sim.api.load_policy(path)
    assert spec.name == "smd+psg" and spec.get("smd").drop_probability == 0.25 and spec.get("psg").predictor_bits == 4
    path.write_text("smd: {drop_probability: 2}\n")
    with pytest.raises(e2sim.SpecError, match=r"policy\.smd\.drop_probability: must be a number in \[0, 1\)"):
        e2sim.api.load_policy(path)
    path.write_text("eif: {target_ratio: 0.1, loss_normalization: mean}\n")
    with pytest.raises(e2sim.SpecError) as error:
        e2sim.api.load_policy(path)
    assert [(p.path, p.message) for p in error.value.problems] == [
        ("policy.eif.loss_normalization", "must be one of batch, trained, got 'mean'"),
        ("policy.eif.explore_fraction", "must be below target_ratio (the exploration floor alone would exceed R_set)"),
    ]
    path.write_text("axtrain: {sensitivity_radius: 0.5}\nslu:\n")
    with pytest.raises(e2sim.SpecError) as error:
        e2sim.api.load_policy(path)
    (problem,) = error.value.problems
    assert (problem.source, problem.path) == (str(path), "policy.axtrain.sensitivity_radius")
    assert "does not compose with slu" in problem.message


def test_policy_stats_print_compactly():
    from e2sim.report.run import _stat_text

    assert _stat_text({"per_layer": {"conv1": 0.123456}, "per_epoch": [0.5, 0.25], "n": 3}) == (
        "{per_layer {conv1 0.1235}, per_epoch [0.5 0.25], n 3}"
    )


def test_compare_and_plots_of_recorded_runs(tmp_path, capsys):
    goldens = Path(__file__).parent / "data" / "policy_goldens"
    png = tmp_path / "compare.png"
    assert main(["compare", str(goldens / "baseline.json"), str(goldens / "smd.json"), str(goldens / "axtrain.json"),
                 "--out", str(png)]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("baseline (golden-resnet8 on zedboard") and "+0.0%" in lines[1]
    assert lines[2].startswith("smd (") and png.read_bytes()[:4] == b"\x89PNG"
    assert main(["compare", str(goldens / "baseline.json"), "--out", str(png)]) == 2  # never over a file
    (tmp_path / "bad.json").write_text('{"workload": "x"}')
    assert main(["compare", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: policy: missing: not an e2sim run report" in capsys.readouterr().err
    smd, baseline = (json.loads((goldens / f"{n}.json").read_text()) for n in ("smd", "baseline"))
    write_outputs(tmp_path / "out", smd, baseline)  # baseline in every plot
    axtrain = json.loads((goldens / "axtrain.json").read_text())
    write_outputs(tmp_path / "ax", axtrain, None)  # with the approximate-mode accuracy curve
    for folder in ("out", "ax"):
        for name in ("accuracy.png", "energy.png", "energy_vs_accuracy.png"):
            assert (tmp_path / folder / name).stat().st_size > 5_000
