"""`e2sim sweep`: specs and their errors, samplers, the SQLite store (resumable after SIGKILL),
executors (in-process, local processes, Dask LocalCluster) and the Pareto front."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import e2sim
from e2sim.cli.main import main
from e2sim.config.sweep import read_sweep_spec
from e2sim.studies.sweep import pareto_front

ROOT = Path(__file__).resolve().parents[1]


def write_sweep(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


SMALL = """
name: small
kind: estimate
workload: lenet5-mnist
hardware: systolic-16x16
axes:
  hw.pe_array.rows: [8, 16]
  hw.pe_array.cols: [8, 16, 32]
  hw.pe_array.dataflow: [ws, os]
constraints: {pe_count: {max: 256}}
objectives: [energy_j, time_s]
"""


def stored(db):
    with sqlite3.connect(db) as c:
        return {k: (s, m) for k, s, m in c.execute("SELECT key, status, metrics FROM points")}


def test_a_grid_sweep_stores_every_point_once_and_a_rerun_runs_none(tmp_path):
    spec = write_sweep(tmp_path, SMALL)
    first = e2sim.sweep(spec, progress=False)
    assert first.store == tmp_path / "s.sqlite" and first.ran == 12
    statuses = [p["status"] for p in first.points]
    assert statuses.count("done") == 10 and statuses.count("infeasible") == 2  # 16×32 = 512 PEs > 256
    infeasible = next(p for p in first.points if p["status"] == "infeasible")
    assert infeasible["error"] == "pe_count 512 > max 256"
    again = e2sim.sweep(spec, progress=False)
    assert again.ran == 0 and again.points == first.points
    # a point is the scalar estimate of its specs, exactly
    point = next(p for p in first.points if p["params"] == {"hw.pe_array.rows": 8, "hw.pe_array.cols": 32,
                                                            "hw.pe_array.dataflow": "os"})  # fmt: skip
    hw = e2sim.load_hw({**e2sim.config.yaml_text.read_yaml_file(ROOT / "hw_specs" / "systolic-16x16.yaml"),
                        "pe_array": {"rows": 8, "cols": 32, "dataflow": "os", "rf_bytes": 64, "mac_bits": [8, 16]}})
    assert point["metrics"]["energy_j"] == e2sim.estimate("lenet5-mnist", hw).energy_j
    assert e2sim.api.sweep_status(spec) == {"done": 10, "failed": 0, "infeasible": 2, "planned": 12, "remaining": 0}


def test_the_front_is_the_non_dominated_points():
    points = [{"key": k, "status": "done", "metrics": {"energy_j": e, "accuracy": a}}
              for k, e, a in (("a", 1.0, 0.9), ("b", 2.0, 0.95), ("c", 2.0, 0.9), ("d", 0.5, 0.5), ("e", 1.0, 0.9))]
    assert pareto_front(points, ["energy_j", "accuracy"]) == ("a", "b", "d", "e")  # c: dominated by a; a, e tie
    rng = np.random.default_rng(0)
    values = rng.random((200, 2))
    many = [{"key": str(i), "status": "done", "metrics": {"energy_j": x, "time_s": y}}
            for i, (x, y) in enumerate(values)]
    front = {int(k) for k in pareto_front(many, ["energy_j", "time_s"])}
    for i, (x, y) in enumerate(values):  # the twin: brute force
        dominated = any(u <= x and v <= y and (u < x or v < y) for u, v in values)
        assert (i in front) == (not dominated)


@pytest.mark.parametrize(
    ("axes", "path", "message"),
    [
        ("  hw.pe_array.rowz: [8, 16]\n", "axes.hw.pe_array.rowz", "unknown key; did you mean 'rows'?"),
        ("  hw.pe_array.rows: []\n", "axes.hw.pe_array.rows", "an empty axis"),
        ("  hw.pe_array.rows: [8, 0]\n", "axes.hw.pe_array.rows", "value 0: pe_array.rows: must be"),
        ("  hw.buffers.ifmap.size_kb: {range: [64, 8], steps: 3}\n", "axes.hw.buffers.ifmap.size_kb", "low < high"),
        ("  precision.weights: [int8, int99]\n", "axes.precision.weights", "value 'int99'"),
        ("  policy.smd.drop_probability: [0.5, 1.5]\n", "axes.policy.smd.drop_probability", "value 1.5"),
        ("  workload: [lenet5-mnist, no-such-net]\n", "axes.workload", "no-such-net"),
    ],
)
def test_bad_sweep_specs_name_the_file_and_the_key(tmp_path, capsys, axes, path, message):
    spec = write_sweep(tmp_path, "workload: lenet5-mnist\nhardware: systolic-16x16\naxes:\n" + axes)
    with pytest.raises(e2sim.SpecError) as info:
        read_sweep_spec(spec)
    problem = info.value.problems[0]
    assert (problem.source, problem.path) == (str(spec), path) and message in problem.message, problem
    assert main(["sweep", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith(f"e2sim: {spec}: ") for line in err)


def test_other_bad_keys(tmp_path):
    spec = write_sweep(tmp_path, "workload: lenet5-mnist\nhardware: systolic-16x16\nkind: train\n"
                       "axes: {hw.pe_array.rows: [8]}\nconstraints: {area: {max: 3}}\nobjectives: [joules]\n"
                       "sampler: {random: {seed: 1}}\n")  # fmt: skip
    with pytest.raises(e2sim.SpecError) as info:
        read_sweep_spec(spec)
    paths = {p.path for p in info.value.problems}
    assert {"kind", "constraints.area", "objectives[0]", "sampler.random.points"} <= paths, paths


def test_an_invalid_point_is_recorded_failed_and_the_sweep_goes_on(tmp_path):
    # each value is valid alone; together a 1 KB filter buffer cannot hold a tile of a 128×128 array
    spec = write_sweep(tmp_path, "workload: lenet5-mnist\nhardware: systolic-16x16\naxes:\n"
                       "  hw.pe_array.rows: [16, 128]\n  hw.pe_array.cols: [16, 128]\n"
                       "  hw.buffers.filter.size_kb: [64, 1]\n")  # fmt: skip
    result = e2sim.sweep(spec, progress=False)
    failed = [p for p in result.points if p["status"] == "failed"]
    assert len(failed) == 3 and all("buffers.filter.size_kb: too small" in p["error"] for p in failed)
    assert sum(p["status"] == "done" for p in result.points) == 5


def test_random_sampler_is_seeded(tmp_path):
    text = SMALL.replace("  hw.pe_array.dataflow: [ws, os]\n", "  hw.buffers.ifmap.size_kb: {log_range: [16, 256]}\n")
    a = write_sweep(tmp_path, text + "sampler: {random: {points: 5, seed: 3}}\n", "a.yaml")
    b = write_sweep(tmp_path, text + "sampler: {random: {points: 5, seed: 3}}\n", "b.yaml")
    pa, pb = (e2sim.sweep(s, progress=False).points for s in (a, b))
    assert [p["params"] for p in pa] == [p["params"] for p in pb]
    assert all(16 <= p["params"]["hw.buffers.ifmap.size_kb"] <= 256 for p in pa)


def test_optuna_sampler_resumes_in_the_same_store(tmp_path):
    text = SMALL.replace("constraints: {pe_count: {max: 256}}\n", "") + "sampler: {optuna: {trials: %d, seed: 0}}\n"
    spec = write_sweep(tmp_path, text % 4)
    first = e2sim.sweep(spec, progress=False)
    assert 1 <= len(first.points) <= 4 and first.front
    spec.write_text(text % 7)
    second = e2sim.sweep(spec, progress=False)
    import optuna

    study = optuna.load_study(study_name="e2sim:small", storage=f"sqlite:///{tmp_path / 's.sqlite'}")
    assert len(study.trials) == 7 and len(second.points) >= len(first.points)


def test_run_points_share_one_training_run(tmp_path, monkeypatch):
    import e2sim.studies.single as single

    calls = []
    train = single.loop.train
    monkeypatch.setattr(single.loop, "train", lambda *a, **k: calls.append(1) or train(*a, **k))
    spec = write_sweep(tmp_path, """
kind: run
workload: {name: tiny, dataset: {name: mnist5k}, model: {arch: lenet5},
           training: {batch_size: 1000, epochs: 1, lr: 0.05, momentum: 0.9}}
hardware: systolic-16x16
policy: smd
axes: {hw.pe_array.dataflow: [ws, os, is]}
objectives: [energy_j, accuracy]
""")
    result = e2sim.sweep(spec, progress=False)
    assert len(calls) == 1 and [p["status"] for p in result.points] == ["done"] * 3
    accuracies = {p["metrics"]["accuracy"] for p in result.points}
    energies = {p["metrics"]["energy_j"] for p in result.points}
    assert len(accuracies) == 1 and len(energies) == 3


def test_local_processes_and_dask_store_what_one_process_stores(tmp_path):
    spec = write_sweep(tmp_path, SMALL)
    alone = e2sim.sweep(spec, db=tmp_path / "one.sqlite", progress=False)
    pooled = e2sim.sweep(spec, db=tmp_path / "pool.sqlite", workers=2, progress=False)
    dask = e2sim.sweep(spec, db=tmp_path / "dask.sqlite", workers=2, dask=True, progress=False)
    expected = stored(tmp_path / "one.sqlite")
    assert len(expected) == 12
    assert stored(tmp_path / "pool.sqlite") == expected == stored(tmp_path / "dask.sqlite")
    assert alone.front == pooled.front == dask.front


KILLED = """
name: killed
workload: lenet5-mnist
hardware: systolic-16x16
axes:
  hw.pe_array.rows: [4, 8, 12, 16, 24, 32]
  hw.pe_array.cols: [4, 8, 16, 32]
  hw.pe_array.dataflow: [ws, os, is]
  hw.buffers.ifmap.size_kb: [16, 64]
"""


def test_a_sweep_killed_at_random_moments_ends_with_every_point_once(tmp_path):
    spec = write_sweep(tmp_path, KILLED)
    command = [sys.executable, "-m", "e2sim", "sweep", str(spec), "--no-progress", "--db"]
    start = time.perf_counter()
    subprocess.run([*command, str(tmp_path / "whole.sqlite")], check=True, capture_output=True)
    seconds = time.perf_counter() - start  # start-up (imports, kernels) and 144 points
    whole = stored(tmp_path / "whole.sqlite")
    assert len(whole) == 144
    start = time.perf_counter()
    subprocess.run([*command, str(tmp_path / "whole.sqlite")], check=True, capture_output=True)
    startup = time.perf_counter() - start  # everything stored: start-up alone
    work = max(seconds - startup, 0.5)
    rng = np.random.default_rng(int(time.time()))
    db = tmp_path / "killed.sqlite"
    counts = [0]
    for _ in range(3):  # each kill lands at a random moment of the work that remains
        process = subprocess.Popen([*command, str(db)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(startup + rng.uniform(0.1, 0.9) * work * (1 - counts[-1] / 144))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        counts.append(len(stored(db)) if db.exists() else 0)
    counts = counts[1:]
    assert counts == sorted(counts) and counts[-1] > 0  # killed mid-sweep; nothing stored is lost
    finish = subprocess.run([*command, str(db)], check=True, capture_output=True, text=True)
    assert f"({144 - counts[-1]} new)" in finish.stdout  # the last run did only what was missing
    assert stored(db) == whole
    print("stored before each kill:", counts)


def test_cli_sweep_status_and_outputs(tmp_path, capsys):
    spec = write_sweep(tmp_path, SMALL)
    assert main(["sweep", str(spec), "--status"]) == 0
    assert "done 0, failed 0, infeasible 0, planned 12, remaining 12" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "Pareto front over energy_j, time_s" in text
    assert sorted(p.name for p in out.iterdir()) == ["front.csv", "front.png", "points.csv", "points.parquet",
                                                     "sensitivity.png"]  # fmt: skip
    import pyarrow.parquet as pq

    table = pq.read_table(out / "points.parquet").to_pylist()
    assert len(table) == 12 and sum(r["on_front"] for r in table) >= 1
    assert json.loads(json.dumps(table[0]))["status"] in ("done", "infeasible")


def test_the_shipped_example_sweep_runs(tmp_path):
    start = time.perf_counter()
    result = e2sim.sweep(ROOT / "sweeps" / "systolic-shapes.yaml", db=tmp_path / "example.sqlite", progress=False)
    assert time.perf_counter() - start < 120
    assert len(result.points) == 54 and len(result.front) >= 3
    assert {p["status"] for p in result.points} == {"done", "infeasible"}
