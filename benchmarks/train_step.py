"""Training-step time of e2sim (fp32 and int8) against PyTorch CPU fp32, measured in one run.

"int8 counted" is the int8 step as ``e2sim run`` takes it: counting the work and the zeros each
GEMM sees (what the accelerator model prices); the other e2sim columns count nothing.

The PyTorch model is built from the same layer IR that e2sim lowers, so both train the identical
network (SGD with momentum, training-mode batch norm). PyTorch is optional: install it with
``pip install torch==2.13.0`` (the CPU build); without it the script prints e2sim alone.

    python benchmarks/train_step.py [--repeat N] [--seconds S] [--rounds R] [--quick] [--mobilenet] [--profile]

``--mobilenet`` adds the shipped MobileNet for CIFAR (depthwise-separable blocks: grouped convs).

Each model is timed in ``--rounds`` rounds (default 5). In a round every e2sim column is timed
and, right after each, PyTorch in its own process (started, its model built and one step taken,
before the first round; kept alive, idle while e2sim runs); each ratio printed is the median over
the rounds of an e2sim timing over the PyTorch timing that followed it, and the rounds' timings and
ratios follow the table. This machine's speed drifts over seconds to minutes (the same e2sim step
took 356-587 ms within one minute, its CPU time moving with it): a ratio of two timings taken far
apart moves with the drift.

PyTorch is timed twice: in a process of its own, as a PyTorch user runs it (the reference of the
ratios), and in this process after e2sim, where e2sim's heap setting (``e2sim.process.keep_heap``:
freed memory stays on the heap) applies to it too ("torch, same heap").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import subprocess
import sys
import time

import numpy as np

import e2sim
from e2sim.counting import OpCounter
from e2sim.functional import precision
from e2sim.process import thread_budget
from e2sim.train.engine import GraphExecutor, init_state

CASES = [("lenet5-mnist", 64), ("resnet20-cifar10", 128)]
MOBILENET = ("mobilenet-cifar10", 128)
INT8 = dict(weights="int8", activations="int8", errors="int8", gradients="int16", accumulator="int32",
            rounding="stochastic")  # fmt: skip


def median_time(step, repeat: int, seconds: float = 0.0) -> float:
    """The median of at least ``repeat`` timed steps, and of as many more as fill ``seconds`` (a
    median of a few short steps moves with whatever else the machine runs)."""
    step()  # warm-up (compiles numba kernels, allocates)
    times = []
    while len(times) < repeat or sum(times) < seconds:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def e2sim_step(workload, batch: int, fmt, counted: bool = False):
    w = dataclasses.replace(workload, training=dataclasses.replace(workload.training, batch_size=batch))
    graph = e2sim.lower(w)
    executor = GraphExecutor(graph, fmt, 0.9, 5e-4)
    state = init_state(graph, 0)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, *graph.model.input_shape)).astype(np.float32)
    labels = rng.integers(0, graph.model.num_classes, batch)
    seeds, counts = iter(range(10**9)), OpCounter() if counted else None
    step = lambda: executor.step(state, images, labels, 0.01, next(seeds), counts)  # noqa: E731
    step.executor = executor
    return step, graph


def torch_step(graph, batch: int, threads: int):
    import torch
    from torch import nn

    torch.set_num_threads(threads)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = graph.model.layers
            self.mods = nn.ModuleDict()
            for layer in self.layers:
                key = layer.name.replace(".", "_")
                if layer.kind == "conv":
                    self.mods[key] = nn.Conv2d(layer.in_shapes[0][0], layer.out_channels, layer.kernel, layer.stride,
                                               layer.padding, dilation=layer.dilation, groups=layer.groups,
                                               bias=layer.bias)  # fmt: skip
                elif layer.kind == "linear":
                    self.mods[key] = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
                elif layer.kind == "batchnorm":
                    self.mods[key] = (
                        nn.BatchNorm2d(layer.channels)
                        if len(layer.in_shapes[0]) == 3
                        else nn.BatchNorm1d(layer.channels)
                    )

        def forward(self, x):
            out = {"input": x}
            for layer in self.layers[:-1]:
                a = out[layer.inputs[0]]
                key = layer.name.replace(".", "_")
                if layer.kind in ("conv", "linear", "batchnorm"):
                    y = self.mods[key](a.flatten(1) if layer.kind == "linear" else a)
                elif layer.kind == "relu":
                    y = torch.relu(a)
                elif layer.kind == "maxpool":
                    y = nn.functional.max_pool2d(a, layer.kernel, layer.stride, layer.padding)
                elif layer.kind == "avgpool":
                    y = nn.functional.avg_pool2d(a, layer.kernel, layer.stride, layer.padding)
                elif layer.kind == "global_avgpool":
                    y = a.mean(dim=(2, 3))
                elif layer.kind == "flatten":
                    y = a.flatten(1)
                elif layer.kind == "dropout":
                    y = nn.functional.dropout(a, layer.drop_probability, training=True)
                elif layer.kind == "add":
                    y = a + out[layer.inputs[1]]
                elif layer.kind == "zero_pad_shortcut":
                    sub = a[:, :, :: layer.stride, :: layer.stride]
                    y = nn.functional.pad(sub, (0, 0, 0, 0, 0, layer.out_channels - sub.shape[1]))
                out[layer.name] = y
            return out[self.layers[-1].inputs[0]]

    torch.manual_seed(0)
    net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(batch, *graph.model.input_shape)
    labels = torch.randint(0, graph.model.num_classes, (batch,))

    def step():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()

    return step, torch.get_num_threads()


class TorchProcess:
    """PyTorch's step in a process of its own (its own defaults, no e2sim setting applied), kept
    alive between requests so that its timings can alternate with e2sim's: :meth:`median` times one
    block of steps there (after an untimed one) while this process waits."""

    def __init__(self, name: str, batch: int, threads: int) -> None:
        command = [sys.executable, __file__, "--torch-server", name, str(batch), "--threads", str(threads)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._answer()  # "ready": importing PyTorch and building its model took a core from e2sim's first timings

    def _answer(self) -> str:
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the PyTorch process ended (exit code {self.process.wait()})")
        return answer

    def median(self, repeat: int, seconds: float) -> float:
        """The median step time (s) of at least ``repeat`` steps and as many as fill ``seconds``."""
        self.process.stdin.write(f"{repeat} {seconds}\n")
        self.process.stdin.flush()
        return float(self._answer())

    def __enter__(self) -> TorchProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.process.stdin.close()
        self.process.wait()


def serve_torch(graph, batch: int, threads: int) -> None:
    """The other end of :class:`TorchProcess`: "ready" once the model is built and has taken a step,
    then one median per request line ("repeat seconds")."""
    step, _ = torch_step(graph, batch, threads)
    step()
    print("ready", flush=True)
    for line in sys.stdin:
        repeat, seconds = line.split()
        print(median_time(step, int(repeat), float(seconds)), flush=True)


def measure_round(steps: dict, alone: TorchProcess | None, args) -> dict[str, tuple[float, float | None]]:
    """One round of a model: per e2sim step, its median time (s) and then PyTorch's (None without
    it), timed right after it in PyTorch's own process, so that each pair sees the same machine."""
    times = {}
    for label, step in steps.items():
        with thread_budget(args.threads):  # e2sim's own setting: kernels on the threads, BLAS on one
            mine = median_time(step, args.repeat, args.seconds)
        times[label] = (mine, alone.median(args.repeat, args.seconds) if alone is not None else None)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed steps of each kind at least (default 5)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="and as many more as fill this many seconds (default 2; LeNet-5's steps are short)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of every column per model; ratios: medians of the rounds' (default 5)")
    parser.add_argument("--quick", action="store_true", help="LeNet-5 only")
    parser.add_argument("--mobilenet", action="store_true", help="also the shipped MobileNet for CIFAR")
    parser.add_argument("--threads", type=int, default=2, help="threads of each side (default 2)")
    parser.add_argument("--profile", action="store_true", help="also print ms per step by layer kind and phase")
    parser.add_argument("--torch-server", nargs=2, metavar=("WORKLOAD", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--torch-profile", nargs=2, metavar=("WORKLOAD", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.torch_server or args.torch_profile:  # the process of TorchProcess or torch_profile()
        name, batch = args.torch_server or args.torch_profile
        workload = e2sim.load_workload(name)
        training = dataclasses.replace(workload.training, batch_size=int(batch))
        graph = e2sim.lower(dataclasses.replace(workload, training=training))
        if args.torch_profile:
            print_torch_profile(graph, int(batch), args.threads, args.repeat)
        else:
            serve_torch(graph, int(batch), args.threads)
        return
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
        print("PyTorch is not installed (pip install torch==2.13.0): timing e2sim alone")
    print(f"{'model':<18}{'batch':>6}{'e2sim fp32 ms':>15}{'e2sim int8 ms':>15}{'int8 counted':>14}"
          f"{'torch fp32 ms':>15}{'fp32 / torch':>14}{'int8 / torch':>14}{'counted / torch':>17}"
          f"{'torch, same heap':>18}{'fp32 / it':>11}{'int8 / it':>11}")  # fmt: skip
    cases = CASES[:1] if args.quick else CASES + ([MOBILENET] if args.mobilenet else [])
    spreads = []
    for name, batch in cases:
        workload = e2sim.load_workload(name)
        steps = {}
        for label, fmt, counted in (("fp32", None, False), ("int8", precision(**INT8), False),
                                    ("counted", precision(**INT8), True)):  # fmt: skip
            steps[label], graph = e2sim_step(workload, batch, fmt, counted)
        with thread_budget(args.threads):
            for step in steps.values():
                step()  # the kernels loaded and the heap grown before any timing
        with TorchProcess(name, batch, args.threads) if have_torch else contextlib.nullcontext() as alone:
            rounds = [measure_round(steps, alone, args) for _ in range(args.rounds)]
        mid = {label: statistics.median(r[label][0] for r in rounds) for label in steps}
        mine = f"{name:<18}{batch:>6}{mid['fp32'] * 1e3:>15.1f}{mid['int8'] * 1e3:>15.1f}{mid['counted'] * 1e3:>14.1f}"
        if not have_torch:
            print(f"{mine}{'-':>15}{'-':>14}{'-':>14}{'-':>17}")
            continue
        reference = statistics.median(r[label][1] for r in rounds for label in steps)
        ratios = {label: [r[label][0] / r[label][1] for r in rounds] for label in steps}
        step, threads = torch_step(graph, batch, args.threads)  # after every e2sim step of the case
        same = median_time(step, args.repeat, args.seconds)
        print(f"{mine}{reference * 1e3:>15.1f}" + "".join(f"{statistics.median(ratios[label]):>{width}.2f}"
              for label, width in (("fp32", 14), ("int8", 14), ("counted", 17)))
              + f"{same * 1e3:>18.1f}{mid['fp32'] / same:>11.2f}{mid['int8'] / same:>11.2f}")  # fmt: skip
        spreads += [f"{name} round {i + 1}: " + ", ".join(f"{label} {a * 1e3:.1f} / {b * 1e3:.1f}"
                                                          for label, (a, b) in r.items())
                    + " ms; " + " / ".join(f"{ratios[label][i]:.2f}" for label in steps)
                    for i, r in enumerate(rounds)]  # fmt: skip
    if have_torch:
        print(f"(PyTorch with {threads} threads, 'torch' in a process of its own: the median of its timings; each "
              f"ratio the median over {args.rounds} rounds of an e2sim timing / the PyTorch timing right after it; "
              "goals: fp32 / torch <= 1.5, int8 / torch <= 2)")  # fmt: skip
        print("round by round (e2sim / PyTorch ms; fp32, int8, counted / torch):")
        for line in spreads:
            print(f"  {line}")
    if args.profile:
        for name, batch in cases:
            print(f"profile of {name}, batch {batch}: ms per step by layer kind and phase (bwd: data and weight)")
            columns = ("e2sim fp32", "e2sim int8") + (("torch fp32",) if have_torch else ())
            print(f"  {'kind':<20}{'phase':<8}" + "".join(f"{column:>12}" for column in columns))
            profile(e2sim.load_workload(name), batch, args, have_torch)


def profile(workload, batch: int, args, have_torch: bool) -> None:
    """ms per step spent in each (layer kind, phase) of the graph, fp32 and int8, with the threads;
    backward-data and backward-weight together as "bwd" (PyTorch computes both in one call), and
    PyTorch's fp32 step, profiled in a process of its own, beside them."""
    found = {}
    for label, fmt in (("fp32", None), ("int8", precision(**INT8))):
        step, _ = e2sim_step(workload, batch, fmt)
        with thread_budget(args.threads):
            step()
            step.executor.timings = {}
            for _ in range(args.repeat):
                step()
        found[label] = {}
        for (kind, phase), seconds in step.executor.timings.items():
            key = ("update", "update") if phase == "update" else (kind, "bwd" if phase.startswith("bwd") else phase)
            found[label][key] = found[label].get(key, 0.0) + 1e3 * seconds / args.repeat
    if have_torch:
        found["torch"] = torch_profile(workload.name, batch, args)
    keys = sorted(set().union(*found.values()), key=lambda k: -found["fp32"].get(k, 0.0))
    for kind, phase in keys:
        print(f"  {kind:<20}{phase:<8}" + "".join(f"{found[label].get((kind, phase), 0.0):>12.1f}" for label in found))
    print(f"  {'total':<28}" + "".join(f"{sum(found[label].values()):>12.1f}" for label in found))


# PyTorch's top-level calls of a training step (the forward's aten ops, the autograd nodes of the
# backward, the optimizer) by the layer kind of e2sim's graph they stand for
TORCH_KINDS = {
    "aten::add_": "other",  # batch norm's count of batches, outside any layer's call
    "conv2d": "conv", "Convolution": "conv", "batch_norm": "batchnorm", "NativeBatchNorm": "batchnorm",
    "relu": "relu", "Relu": "relu", "linear": "linear", "Addmm": "linear", "TBackward": "linear",
    "MmBackward": "linear", "max_pool2d": "maxpool", "MaxPool2D": "maxpool", "avg_pool2d": "avgpool",
    "AvgPool2D": "avgpool", "aten::mean": "global_avgpool", "MeanBackward": "global_avgpool",
    "aten::add": "add", "AddBackward": "add", "aten::pad": "zero_pad_shortcut", "aten::slice": "zero_pad_shortcut",
    "ConstantPadNd": "zero_pad_shortcut", "SliceBackward": "zero_pad_shortcut", "dropout": "dropout",
    "Dropout": "dropout", "cross_entropy": "loss", "LogSoftmax": "loss", "NllLoss": "loss",
    "ones_like": "loss", "AccumulateGrad": "update", "Optimizer": "update",
}  # fmt: skip


def torch_profile(name: str, batch: int, args) -> dict:
    """PyTorch's fp32 step in a fresh process under torch.profiler: ms per step by (kind, phase)."""
    command = [sys.executable, __file__, "--torch-profile", name, str(batch), "--threads", str(args.threads),
               "--repeat", str(args.repeat)]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return {(kind, phase): float(ms) for kind, phase, ms in (line.split() for line in out.splitlines() if line)}


def print_torch_profile(graph, batch: int, threads: int, repeat: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profiler

    step, _ = torch_step(graph, batch, threads)
    step()
    with torch_profiler(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeat):
            step()
    found = {}
    for event in prof.events():
        if event.cpu_parent is not None:
            continue  # a top-level call's time includes its children's
        phase = "bwd" if event.name.startswith("autograd::") else "fwd"
        kind = next((k for pattern, k in TORCH_KINDS.items() if pattern in event.name), "other")
        phase = "update" if kind == "update" else phase
        found[(kind, phase)] = found.get((kind, phase), 0.0) + event.cpu_time_total / 1e3 / repeat
    for (kind, phase), ms in found.items():
        print(kind, phase, ms)


if __name__ == "__main__":
    main()
