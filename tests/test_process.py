"""Signals and threads: Ctrl-C (SIGINT) or SIGTERM stops a run at an iteration boundary with a
partial report, exit 130 and one line; --resume ends byte-identical to an uninterrupted run; the
thread count changes no result."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import e2sim
from e2sim.cli.main import main
from e2sim.process import StopRequest, default_threads, stop_on_signals, thread_budget

RUN = [sys.executable, "-m", "e2sim", "run", "--epochs", "3", "--no-progress", "--out"]


def run_cli(out, *extra, **kwargs):
    return subprocess.run([*RUN, str(out), *extra], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """An uninterrupted run's report, and how long the run took (start-up included)."""
    out = tmp_path_factory.mktemp("whole")
    start = time.perf_counter()
    done = run_cli(out)
    assert done.returncode == 0, done.stderr
    assert not (out / "checkpoint.npz").exists()  # a finished run leaves nothing to resume
    return (out / "run.json").read_bytes(), time.perf_counter() - start


def test_a_signal_at_a_random_moment_stops_cleanly_and_resume_ends_identical(tmp_path, whole):
    report, seconds = whole
    rng = np.random.default_rng(int(time.time()))
    stopped = 0
    for attempt, sig in enumerate((signal.SIGINT, signal.SIGINT, signal.SIGTERM)):
        out = tmp_path / f"run{attempt}"
        process = subprocess.Popen([*RUN, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if attempt < 2:  # anywhere in the second half of a run's time (start-up and pricing included)
            time.sleep(rng.uniform(0.5, 0.95) * seconds)
        else:  # surely in training, however this run's speed differs from the timed one's: within
            # the second epoch, once the first epoch's checkpoint is written
            while not (out / "checkpoint.npz").exists() and process.poll() is None:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.2) * seconds)
        process.send_signal(sig)
        _, err = process.communicate(timeout=300)
        assert "Traceback" not in err and "Error" not in err, err
        if process.returncode == 0:  # it had finished already
            assert (out / "run.json").read_bytes() == report
            continue
        if err == "e2sim: interrupted\n":  # still starting up (a loaded machine): nothing to keep
            assert process.returncode == 130 and not (out / "checkpoint.npz").exists()
            continue
        stopped += 1
        assert process.returncode == 130, err
        assert len(err.strip().splitlines()) == 1 and f"stopped by {sig.name}" in err
        partial = json.loads((out / "run.json").read_text())
        assert partial["partial"]["signal"] == sig.name
        assert len(partial["epochs"]) == partial["partial"]["completed_epochs"] < 3
        again = run_cli(out)  # without --resume: refused, the checkpoint is kept
        assert again.returncode == 2 and "--resume" in again.stderr
        resumed = run_cli(out, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert (out / "run.json").read_bytes() == report
        assert not (out / "checkpoint.npz").exists()
    assert stopped >= 1


def test_resume_needs_a_checkpoint(tmp_path, capsys):
    assert main(["run", "--epochs", "1", "--out", str(tmp_path / "new"), "--resume"]) == 2
    assert "nothing to continue" in capsys.readouterr().err
    assert main(["run", "--epochs", "1", "--resume"]) == 2
    assert "--out DIR" in capsys.readouterr().err


def test_a_stop_request_ends_the_run_at_an_iteration_boundary(tmp_path):
    class After(StopRequest):  # asks to stop once a few iterations ran
        def __init__(self, calls):
            super().__init__()
            self.calls = calls

        def __bool__(self):
            self.calls -= 1
            if self.calls < 0:
                self.ask("SIGINT")
            return super().__bool__()

    result = e2sim.run(epochs=2, progress=False, stop=After(70), checkpoint=tmp_path / "c.npz")
    report = result.to_dict()
    assert result.partial and report["partial"] == {"signal": "SIGINT", "epoch": 2, "iteration": 8,
                                                    "completed_epochs": 1}  # fmt: skip
    assert report["iterations"] == 62 + 8  # the energy covers everything that ran
    none = e2sim.run(epochs=1, progress=False, stop=After(0)).to_dict()
    assert none["accuracy"]["final"] is None and none["iterations"] == 0 and none["partial"]["epoch"] == 1


def test_signals_set_the_request_and_handlers_come_back():
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals() as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop and stop.signal == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before


def test_the_thread_count_changes_no_result(tmp_path):
    """1 and 2 threads of the kernels (the approximate datapath's run in parallel) and the BLAS
    limit: the same report, byte for byte."""
    reports = []
    for threads in (1, 2):
        result = e2sim.run("lenet5-mnist", "axtrain-65nm", "axtrain-passive", epochs=1, progress=False,
                           threads=threads)  # fmt: skip
        reports.append(json.dumps(result.to_dict(), sort_keys=True))
    assert reports[0] == reports[1]


def test_the_thread_budget_limits_blas_and_restores_numba(monkeypatch):
    import numba
    from threadpoolctl import threadpool_info

    before = numba.get_num_threads()
    with thread_budget(1) as used:
        assert used == 1 and numba.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    assert numba.get_num_threads() == before
    monkeypatch.setenv("E2SIM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("E2SIM_THREADS", "many")
    with pytest.raises(RuntimeError, match="E2SIM_THREADS='many'"):
        default_threads()


def test_a_bad_thread_setting_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("E2SIM_THREADS", "0")
    assert main(["run", "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "E2SIM_THREADS='0'" in err
    monkeypatch.delenv("E2SIM_THREADS")
    with pytest.raises(SystemExit):
        main(["run", "--threads", "0"])


@pytest.mark.parametrize("fmt", ["fp32", "int8"])
@pytest.mark.parametrize(("name", "batch"), [("resnet20-cifar10", 32), ("mobilenet-cifar10", 16)])
def test_a_step_is_the_same_on_one_and_two_kernel_threads(fmt, name, batch):
    """Convolutions split their batch into pieces, depthwise ones their maps and channels, the
    element-wise kernels their elements over the kernel threads: the updated parameters are the
    same bytes either way (ResNet-20: dense convs; MobileNet: depthwise and pointwise ones)."""
    from e2sim.functional import precision
    from e2sim.train.engine import GraphExecutor, init_state

    int8 = precision(weights="int8", activations="int8", errors="int8", gradients="int16", accumulator="int32",
                     rounding="stochastic")  # fmt: skip
    workload = e2sim.load_workload(name)
    graph = e2sim.lower(workload, batch_size=batch)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, *graph.model.input_shape)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    states = []
    for threads in (1, 2):
        state = init_state(graph, 0)
        with thread_budget(threads):
            GraphExecutor(graph, int8 if fmt == "int8" else None, 0.9, 5e-4).step(state, images, labels, 0.1, 7, None)
        states.append(state.arrays)
    assert all(states[0][name].tobytes() == states[1][name].tobytes() for name in states[0])


def test_a_signal_after_the_command_finished_cannot_kill_it():
    """The interpreter's shutdown restores fatal default handlers; once the work is done the
    command line ignores SIGINT and SIGTERM, so a late Ctrl-C cannot turn a finished run into -2."""
    script = ("import os, signal, sys; sys.argv = ['e2sim', 'lower', 'lenet5-mnist']; from e2sim.cli import entry; "
              "code = entry(); os.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGTERM); "
              "sys.exit(code)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


HEAP_PROBE = """
import resource, sys
import numpy as np
from e2sim.process import keep_heap
kept = keep_heap()
def churn():
    for _ in range(40):  # 8 MB arrays made and freed, as a training step's temporaries are
        a = np.ones(2 << 20, np.float32)
        b = a * 2
        del a, b
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def heap_probe(**env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "E2SIM_KEEP_HEAP"}
    done = subprocess.run([sys.executable, "-c", HEAP_PROBE], capture_output=True, text=True, env={**clean, **env})
    assert done.returncode == 0, done.stderr
    kept, faults = done.stdout.split()
    return kept == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the heap setting is glibc's (Linux)")
def test_the_kept_heap_spares_the_page_faults_of_freed_arrays():
    """Kept, 80 freed 8 MB arrays come back from the heap (a few faults); left to glibc's defaults
    most are handed back to the OS and fault their 2,048 pages in again. E2SIM_KEEP_HEAP=0 and
    the user's own MALLOC_ settings leave the allocator alone."""
    kept, faults = heap_probe()
    assert kept and faults < 2_000
    for env in ({"E2SIM_KEEP_HEAP": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}):
        kept, faults = heap_probe(**env)
        assert not kept and faults > 10 * 2048


def test_a_bad_heap_setting_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("E2SIM_KEEP_HEAP", "yes")
    assert main(["estimate", "lenet5-mnist", "--hw", "zedboard"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "E2SIM_KEEP_HEAP='yes'" in err


def test_the_collector_pauses_for_pricing_and_comes_back(monkeypatch):
    """Lowering and pricing run with Python's cyclic collector off; it is on again after, also
    after an error inside, and a pause inside a pause leaves it off until the outer one ends."""
    import gc

    from e2sim.process import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError), gc_paused():
        1 / 0  # noqa: B018
    assert gc.isenabled()
    seen = []
    import e2sim.studies.single as single

    real = single.account_ops

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(single, "account_ops", spy)
    e2sim.estimate("lenet5-mnist", "zedboard")
    assert seen == [False] and gc.isenabled()


def test_parallel_calls_return_in_order_nest_and_raise():
    """The calling thread and the pool's helpers share the calls: results in order with more calls
    than threads, calls that themselves split over the threads finish (no thread waits for a helper
    that never starts), and a call's error is raised in the caller."""
    import threading

    from e2sim.process import in_parallel

    def pair(i: int, j: int) -> tuple:
        time.sleep(0.002)  # lets the GIL go, as a kernel does: the other thread takes calls meanwhile
        return i, j, threading.get_ident()

    def nested(i: int) -> list:
        return in_parallel([lambda j=j: pair(i, j) for j in range(5)])

    outcome: dict = {}

    def work() -> None:
        with thread_budget(2):
            outcome["flat"] = in_parallel([lambda i=i: i * i for i in range(37)])
            outcome["nested"] = in_parallel([lambda i=i: nested(i) for i in range(9)])
            try:
                in_parallel([lambda: 1, lambda: 1 // 0, lambda: 3])
            except ZeroDivisionError:
                outcome["raised"] = True

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "nested parallel calls did not finish"
    assert outcome["flat"] == [i * i for i in range(37)]
    assert [[(i, j) for i, j, _ in row] for row in outcome["nested"]] == [[(i, j) for j in range(5)] for i in range(9)]
    assert len({ident for row in outcome["nested"] for _, _, ident in row}) >= 2  # the helpers took some
    assert outcome["raised"]
