"""The command line: tables, JSON, and bad input as one line per problem with exit code 2."""

import json
import subprocess
import sys

import pytest

from e2sim.cli.main import main


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_lower_prints_phase_and_layer_tables(capsys):
    code, out, err = run_cli(capsys, "lower", "workloads/lenet5-mnist.yaml", "--batch", "1")
    assert code == 0 and err == ""
    assert "one training iteration of LeNet-5 at batch 1 (61,706 parameters)" in out
    fwd_row = next(line for line in out.splitlines() if line.startswith("fwd "))
    assert "416,520" in fwd_row.split()
    assert any(line.split()[:2] == ["conv2", "conv"] for line in out.splitlines())


def test_lower_json_has_stable_keys(capsys):
    code, out, _ = run_cli(capsys, "lower", "resnet20-cifar10", "--batch", "2", "--json")
    report = json.loads(out)
    assert code == 0
    assert list(report["macs"]) == ["fwd", "bwd_data", "bwd_weight", "update", "total"]
    assert report["macs"]["fwd"] == 2 * 40_551_040
    assert report["macs"]["total"] == sum(report["macs"][p] for p in ("fwd", "bwd_data", "bwd_weight", "update"))
    assert report["batch_size"] == 2 and report["model"] == "ResNet-20"
    op = next(o for o in report["ops"] if o["name"] == "layer3.0.conv1.bwd_weight")
    assert op["gemm"] == {"m": 64, "n": 32 * 9, "k": 2 * 8 * 8, "groups": 1}
    assert op["conv"]["stride"] == 2 and op["phase"] == "bwd_weight" and op["kind"] == "conv"
    assert sum(o["macs"] for o in report["ops"]) == report["macs"]["total"]
    assert sum(o["bytes_read"] + o["bytes_written"] for o in report["ops"]) == report["bytes"]["total"]
    layer_names = [row["layer"] for row in report["layers"]]
    assert layer_names[0] == "conv1" and layer_names[-1] == "loss"
    assert {t["role"] for t in report["tensors"]} >= {"activation", "error", "weight", "weight_grad"}


def test_bad_spec_is_one_line_per_problem_and_exit_2(capsys, write_yaml):
    path = write_yaml(
        "name: x\ndataset: {name: mnist5k}\nmodel: {arch: lenet5}\ntraining: {batch_size: 0, epochs: 1}\n"
    )
    code, out, err = run_cli(capsys, "lower", str(path))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"e2sim: {path}: training.batch_size: must be a positive integer, got 0",
        f"e2sim: {path}: training.lr: missing required key",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lower", "no/such/file.yaml"], "e2sim: no/such/file.yaml: no such file"),
        (["lower", "workloads/lenet5-mnist.yaml", "--batch", "0"], "--batch: must be a positive integer, got 0"),
        (["lower", "workloads/lenet5-mnist.yaml", "--batch", "x"], "--batch: must be a positive integer, got 'x'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["lower"], "the following arguments are required: WORKLOAD"),
    ],
)
def test_bad_command_lines_exit_2(capsys, args, message):
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    _, err = capsys.readouterr()
    assert code == 2 and message in err


def test_installed_console_script_runs_without_traceback(tmp_path):
    bad = tmp_path / "hw.yaml"
    bad.write_text("name: h\npe_array: {rows: 0}\n")
    result = subprocess.run(
        [sys.executable, "-m", "e2sim", "lower", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert all(line.startswith(f"e2sim: {bad}: ") for line in result.stderr.splitlines())
    help_text = subprocess.run(
        [sys.executable, "-m", "e2sim", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "lower" in help_text


def test_estimate_says_when_the_approximate_mode_priced_it(capsys):
    assert main(["estimate", "lenet5-mnist", "--hw", "axtrain-65nm", "--approximate", "--json"]) == 0
    mode = json.loads(capsys.readouterr().out)["approximate_mode"]
    assert mode["multiplier"] == "drum-3" and mode["ops"] == ["conv1.fwd", "conv2.fwd", "fc1.fwd", "fc2.fwd", "fc3.fwd"]
    assert main(["estimate", "lenet5-mnist", "--hw", "axtrain-65nm"]) == 0
    exact = capsys.readouterr().out
    assert main(["estimate", "lenet5-mnist", "--hw", "axtrain-65nm", "--approximate"]) == 0
    assert "priced on the approximate mode (drum-3, 0.6 V): 5 forward conv/linear ops" in capsys.readouterr().out
    assert "approximate mode" not in exact


def test_lower_and_estimate_load_only_what_they_need():
    """``e2sim lower`` loads neither numba nor the training stack; ``estimate`` loads numba for the
    residency plan but not the training engine, the sweep store, the search or scipy."""
    import subprocess
    import sys

    probe = ("import sys\nfrom e2sim.cli.main import main\nmain({args})\n"
             "print('LOADED:' + ','.join(m for m in ('numba', 'e2sim.functional', 'e2sim.train.loop', "
             "'e2sim.studies.sweep', 'e2sim.studies.rena.search', 'scipy.optimize', 'optuna') if m in sys.modules))")
    loaded = {}
    for args in (["lower", "lenet5-mnist"], ["estimate", "lenet5-mnist", "--hw", "eyeriss"]):
        out = subprocess.run([sys.executable, "-c", probe.format(args=args)], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
        line = next(line for line in out.splitlines() if line.startswith("LOADED:"))
        loaded[args[0]] = set(filter(None, line[len("LOADED:") :].split(",")))
    assert loaded["lower"] == set()
    assert loaded["estimate"] == {"numba"}
