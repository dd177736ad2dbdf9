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
    # a point is the scalar estimate of its specs (priced as arrays over points: equal to rounding)
    point = next(p for p in first.points if p["params"] == {"hw.pe_array.rows": 8, "hw.pe_array.cols": 32,
                                                            "hw.pe_array.dataflow": "os"})  # fmt: skip
    hw = e2sim.load_hw({**e2sim.config.yaml_text.read_yaml_file(ROOT / "hw_specs" / "systolic-16x16.yaml"),
                        "pe_array": {"rows": 8, "cols": 32, "dataflow": "os", "rf_bytes": 64, "mac_bits": [8, 16]}})
    assert point["metrics"]["energy_j"] == pytest.approx(e2sim.estimate("lenet5-mnist", hw).energy_j, rel=1e-12)
    assert e2sim.api.sweep_status(spec) == {"done": 10, "failed": 0, "infeasible": 2, "pruned": 0,
                                                 "planned": 12, "remaining": 0}


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


def test_each_local_cluster_gets_its_own_thread_budget_and_leaves_this_process_alone(monkeypatch):
    """Dask lets this process's environment override what its workers are given, and writes their
    variables into this process when they start: a cluster started earlier (or a setting of this
    process) must not decide a later cluster's threads, nor a cluster this process's."""
    from distributed import Client

    from e2sim.studies.execute import THREAD_VARIABLES, start_local_cluster, thread_budget

    for name in THREAD_VARIABLES:
        monkeypatch.setenv(name, "7")
    for workers in (2, 1):
        with start_local_cluster(workers) as cluster, Client(cluster) as client:
            seen = {name: set(client.run(os.getenv, name).values()) for name in THREAD_VARIABLES}
        assert seen == {name: {thread_budget(workers)[name]} for name in THREAD_VARIABLES}
        assert all(os.environ[name] == "7" for name in THREAD_VARIABLES)


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
    assert "done 0, failed 0, infeasible 0, pruned 0, planned 12, remaining 12" in capsys.readouterr().out
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


AGREEMENT = """
name: agree
workload: resnet20-cifar10
hardware: systolic-16x16
batch: 8
sampler: {random: {points: 210, seed: 7}}
axes:
  hw.pe_array.rows: [4, 8, 12, 16, 32]
  hw.pe_array.cols: [4, 8, 16, 24]
  hw.pe_array.dataflow: [ws, os, is]
  hw.buffers.ifmap.size_kb: {log_range: [1, 256]}
  hw.buffers.filter.size_kb: {log_range: [1, 256]}
  hw.buffers.ofmap.size_kb: [4, 16, 64, 256]
  hw.dram.type: [lpddr4, ddr4, hbm2, ddr3]
  hw.dram.overlaps_compute: [true, false]
"""


def test_the_vectorised_estimate_path_agrees_with_scalar_estimate(tmp_path):
    """≥ 200 random ResNet-20 points over array shape, dataflow, buffer sizes and DRAM: the sweep
    (mappings searched for many design points at once) and ``e2sim.estimate`` one point at a time,
    each with empty mapping caches, give the same numbers (relative difference ≤ 1e-9) and the
    same failures."""
    from e2sim.schedule.ops import MAPPINGS, _planned
    from e2sim.studies.points import random_values, resolve

    spec = read_sweep_spec(write_sweep(tmp_path, AGREEMENT))
    points = {p.key: p for p in (resolve(spec, i, v) for i, v in enumerate(random_values(spec))) if p.error is None}
    MAPPINGS.clear(), _planned.cache_clear()
    result = e2sim.sweep(spec, db=tmp_path / "agree.sqlite", progress=False)
    swept = {p["key"]: p for p in result.points}
    assert len(swept) >= 200 and set(points) <= set(swept)
    MAPPINGS.clear(), _planned.cache_clear()
    compared = failed = 0
    for key, point in points.items():
        try:
            scalar = e2sim.estimate(point.workload, point.hardware, batch_size=8)
        except e2sim.SpecError as exc:
            assert swept[key]["status"] == "failed" and swept[key]["error"] == "; ".join(map(str, exc.problems))
            failed += 1
            continue
        metrics = swept[key]["metrics"]
        assert swept[key]["status"] == "done", swept[key]["error"]
        for name, value in (("energy_j", scalar.energy_j), ("time_s", scalar.time_s), ("cycles", scalar.cycles),
                            ("dram_bytes", sum(r.cost.dram_bytes * r.data_scale for r in scalar.rows))):
            assert metrics[name] == pytest.approx(value, rel=1e-9, abs=0), (key, name)
        compared += 1
    assert compared >= 200 and failed >= 1, (compared, failed)


HALVING = """
name: halving
kind: run
workload: {name: tiny, dataset: {name: mnist5k}, model: {arch: lenet5},
           training: {batch_size: 500, epochs: 1, lr: 0.05, momentum: 0.9}}
hardware: systolic-16x16
epochs: 3
axes:
  training.lr: [0.002, 0.01, 0.05, 0.2]
  hw.pe_array.dataflow: [ws, os]
objectives: [energy_j, accuracy]
%s
"""


def test_successive_halving_trains_the_best_to_the_end_and_stops_the_rest(tmp_path, monkeypatch):
    """4 trainings × 2 accelerators, rungs of 1, 2 and 3 epochs with factor 2: every training runs
    epoch 1, the best 2 epoch 2, the best one epoch 3 (7 epochs instead of 12); the survivor's
    points equal a sweep without halving, bit for bit; the others are pruned with what they reached."""
    import e2sim.train.loop as loop

    trained = []
    epoch_of = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: trained.append(1) or epoch_of(*a, **k))
    halved = e2sim.sweep(write_sweep(tmp_path, HALVING % "halving: {min_epochs: 1, factor: 2}", "h.yaml"),
                         progress=False)  # fmt: skip
    assert len(trained) == 7  # one test evaluation per epoch trained
    assert not (tmp_path / "h.sqlite.checkpoints").exists()
    by_status = {}
    for p in halved.points:
        by_status.setdefault(p["status"], []).append(p)
    assert sorted(by_status) == ["done", "pruned"] and len(by_status["done"]) == 2
    assert sorted(p["metrics"]["epochs"] for p in by_status["pruned"]) == [1, 1, 1, 1, 2, 2]
    with sqlite3.connect(tmp_path / "h.sqlite") as c:
        rungs = {(e, t): a for t, e, a in c.execute("SELECT training, epochs, accuracy FROM rungs")}
    first = sorted((a for (e, _), a in rungs.items() if e == 1), reverse=True)
    second = [a for (e, _), a in rungs.items() if e == 2]
    assert len(first) == 4 and len(second) == 2
    assert max(p["metrics"]["accuracy"] for p in by_status["pruned"] if p["metrics"]["epochs"] == 1) <= first[1]
    plain = e2sim.sweep(write_sweep(tmp_path, HALVING % "", "p.yaml"), progress=False)
    expected = {p["key"]: p["metrics"] for p in plain.points}
    for p in by_status["done"]:
        assert p["metrics"] == expected[p["key"]]
    assert max(m["accuracy"] for m in expected.values()) >= by_status["done"][0]["metrics"]["accuracy"]


@pytest.mark.parametrize("block, path, message", [
    ("halving: {min_epochs: 3}", "halving.min_epochs", "less than the sweep's epochs"),
    ("halving: {factor: 1}", "halving.factor", "at least 2"),
    ("halving: {min_epochs: 1, extra: 2}", "halving.extra", "unknown"),
])  # fmt: skip
def test_bad_halving_blocks_name_the_key(tmp_path, capsys, block, path, message):
    spec = write_sweep(tmp_path, HALVING % block)
    assert main(["sweep", str(spec), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"s.yaml: {path}: " in err and message in err and "Traceback" not in err


def test_halving_needs_run_points_and_an_epoch_budget(tmp_path):
    with pytest.raises(e2sim.SpecError, match="halving: successive halving needs run points"):
        read_sweep_spec(write_sweep(tmp_path, SMALL + "halving: {min_epochs: 1}\n"))
    with pytest.raises(e2sim.SpecError, match="halving: needs the sweep's epochs"):
        read_sweep_spec(write_sweep(tmp_path, (HALVING % "halving: {min_epochs: 1}").replace("epochs: 3\n", "")))


def test_a_halving_sweep_killed_at_random_moments_ends_as_an_uninterrupted_one(tmp_path):
    """SIGKILL at random moments of a halving sweep (mid-rung, between rungs, mid-checkpoint):
    started again each time, it ends with the same stored points and rung accuracies."""
    spec = write_sweep(tmp_path, HALVING % "halving: {min_epochs: 1, factor: 2}")
    command = [sys.executable, "-m", "e2sim", "sweep", str(spec), "--no-progress", "--db"]
    start = time.perf_counter()
    subprocess.run([*command, str(tmp_path / "whole.sqlite")], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    rng = np.random.default_rng(int(time.time()))
    db = tmp_path / "killed.sqlite"
    for _ in range(3):
        process = subprocess.Popen([*command, str(db)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.0) * seconds)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    subprocess.run([*command, str(db)], check=True, capture_output=True)

    def rungs(path):
        with sqlite3.connect(path) as c:
            return sorted(c.execute("SELECT training, epochs, accuracy, error FROM rungs"))

    assert stored(db) == stored(tmp_path / "whole.sqlite") and len(stored(db)) == 8
    assert rungs(db) == rungs(tmp_path / "whole.sqlite")


def test_points_resolved_from_shared_base_documents_equal_points_resolved_alone(tmp_path):
    """A sweep reads each base workload and hardware once and copies them per point; the points
    (keys, specs, errors) are those resolved one by one, and no point's axis value leaks into
    another's documents."""
    from e2sim.studies.points import grid_values, resolve

    text = SMALL.replace("  hw.pe_array.dataflow: [ws, os]", "  hw.pe_array.dataflow: [ws, os]\n"
                         "  workload: [lenet5-mnist, resnet20-cifar10]\n  training.batch_size: [8, 16]")  # fmt: skip
    spec = read_sweep_spec(write_sweep(tmp_path, text))
    values = grid_values(spec)
    alone = [resolve(spec, i, v) for i, v in enumerate(values)]
    bases = {}
    shared = [resolve(spec, i, v, bases) for i, v in enumerate(values)]
    assert len(bases) == 2 and len(values) == 48
    assert [(p.key, p.workload, p.hardware, p.error) for p in shared] == \
        [(p.key, p.workload, p.hardware, p.error) for p in alone]  # fmt: skip
    assert [p.workload.training.batch_size for p in shared] == [v["training.batch_size"] for v in values]
    assert [p.hardware.pe_array.cols for p in shared] == [v["hw.pe_array.cols"] for v in values]
    assert len({p.key for p in shared}) == 48
