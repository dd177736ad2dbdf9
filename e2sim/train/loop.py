"""The training loop: epochs of the lowered graph over a dataset, evaluation, checkpoints."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from e2sim.config.errors import CheckpointError, SpecError
from e2sim.config.workload import TrainingSpec, Workload
from e2sim.counting import OpCount, OpCounter
from e2sim.graph import TrainingGraph, lower
from e2sim.hw.approximate import ApproximateMode
from e2sim.numerics.approximate import ApproxDatapath, BitErrorStats
from e2sim.numerics.seeds import derive_seed
from e2sim.policies.base import Batch, Policy, activate
from e2sim.process import StopRequest
from e2sim.train.data import Dataset, augment_batch, load_dataset
from e2sim.train.engine import ENGINE, GraphExecutor, TrainState, init_state

EVAL_BATCH = 500
CHECKPOINT_VERSION = 2


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    lr: float  # learning rate of the epoch's last iteration
    train_loss: float  # mean over the epoch's iterations
    train_accuracy: float  # on the training batches as they were trained
    test_accuracy: float
    iterations: int  # executed (not dropped) iterations
    seconds: float
    approximate_test_accuracy: float | None = None  # evaluated on the accelerator's approximate mode


@dataclass(frozen=True)
class Interruption:
    """Where a run stopped when a signal asked it to: in ``epoch`` (1-based) after ``iteration``
    of its iterations; the epochs before it are complete (and checkpointed)."""

    signal: str
    epoch: int
    iteration: int


@dataclass(frozen=True)
class TrainResult:
    workload: str
    graph: TrainingGraph
    epochs: tuple[EpochStats, ...]
    iterations: int
    counts: OpCounter  # everything executed, summed over all iterations, by graph op
    state: TrainState
    policy_stats: dict  # per policy key, what its stats() gave; and "approximate_mode"
    policies: tuple[Policy, ...] = ()  # the active policies, as they ended the run
    interrupted: Interruption | None = None  # a partial run: ``iterations`` and ``counts`` include its last epoch's

    @property
    def final_test_accuracy(self) -> float | None:
        return self.epochs[-1].test_accuracy if self.epochs else None


def learning_rate(training: TrainingSpec, iteration: int, iterations_per_epoch: int, iterations: int) -> float:
    """The lr of a (0-based) iteration of a run of ``iterations``: constant, cosine to zero over the
    run, or step decay at epoch milestones."""
    if training.schedule == "cosine":
        total = max(iterations, 1)
        return 0.5 * training.lr * (1 + math.cos(math.pi * iteration / total))
    if training.schedule == "step":
        epoch = iteration // max(iterations_per_epoch, 1)
        return training.lr * training.lr_gamma ** sum(epoch >= m for m in training.lr_milestones_epochs)
    return training.lr


def fingerprint(workload: Workload, approximate: ApproximateMode | None = None) -> str:
    """A digest of everything that changes training: the workload (not its name or description),
    and ``approximate``, the approximate mode a policy trains on."""
    text = repr((workload.dataset, workload.model, workload.training, workload.precision, workload.policy,
                 approximate))  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Progress:
    def __init__(self, enabled: bool, epochs: int, per_epoch: int):
        self.enabled, self.epochs, self.per_epoch, self.open = enabled, epochs, per_epoch, False

    def close(self) -> None:
        if self.enabled and self.open:  # an epoch's line left unfinished (a stopped run)
            sys.stderr.write("\n")

    def update(self, epoch: int, done: int, loss: float) -> None:
        self.open = True
        if self.enabled:
            filled = int(30 * done / max(self.per_epoch, 1))
            sys.stderr.write(f"\repoch {epoch}/{self.epochs} [{'=' * filled}{' ' * (30 - filled)}] "
                             f"{done}/{self.per_epoch} loss {loss:.4f}")  # fmt: skip
            sys.stderr.flush()

    def end_epoch(self, stats: EpochStats) -> None:
        self.open = False
        if self.enabled:
            sys.stderr.write(f"\repoch {stats.epoch}/{self.epochs}: loss {stats.train_loss:.4f}, "
                             f"train {stats.train_accuracy:.2%}, test {stats.test_accuracy:.2%} ({stats.seconds:.1f} s)"
                             + " " * 10 + "\n")  # fmt: skip


def evaluate(executor: GraphExecutor, state: TrainState, dataset: Dataset, approximate: bool = False,
             seed: int = 0) -> float:  # fmt: skip
    """Top-1 accuracy on the test split (inference mode), on the approximate mode if asked (each
    batch with its own bit errors, drawn from ``seed``)."""
    test = dataset.test
    correct = 0
    for start in range(0, len(test.labels), EVAL_BATCH):
        logits = executor.predict(state, test.images[start : start + EVAL_BATCH], approximate=approximate,
                                  seed=derive_seed(seed, start) if approximate else 0)  # fmt: skip
        correct += int(np.sum(np.argmax(logits, axis=1) == test.labels[start : start + EVAL_BATCH]))
    return correct / max(len(test.labels), 1)


def train(
    workload: Workload,
    epochs: int | None = None,
    data_dir: str | Path | None = None,
    progress: bool | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    dataset: Dataset | None = None,
    stop_after: int | None = None,
    approximate: ApproximateMode | None = None,
    graph: TrainingGraph | None = None,
    policies: tuple[Policy, ...] | None = None,
    stop: StopRequest | None = None,
) -> TrainResult:
    """Train ``workload`` by executing its lowered graph; deterministic given ``training.seed``.

    ``epochs`` overrides the workload's; the active policies may stretch the run (a fractional last
    epoch included), and the lr schedule spans its iterations. ``stop_after`` ends the run after
    that epoch (a later ``resume`` finishes it exactly as an uninterrupted run). ``checkpoint`` is
    a file written after every epoch (never over a file that is not a checkpoint of this run);
    ``resume`` continues from it. Training uses full batches only (the last partial batch of an
    epoch is dropped), so every iteration is the lowered graph exactly. ``approximate``: the
    accelerator's approximate mode; a policy may train on it, and every epoch is also evaluated on
    it. ``graph`` and ``policies``: the iteration as lowered with ``policies`` (both or neither;
    default: the workload's policies, lowered here). ``stop``: when it turns true (a signal), the
    run ends at the next iteration boundary: the result is partial (``interrupted``), and the
    checkpoint holds the last complete epoch, so a resumed run redoes the interrupted epoch and
    ends as an uninterrupted one.
    """
    if (graph is None) != (policies is None):
        raise ValueError("give both the lowered graph and the policies it was lowered with, or neither")
    if policies is None:
        policies = activate(workload)
        graph = lower(workload, extensions=[p.extend for p in policies])
    training = workload.training
    dataset = dataset or load_dataset(workload.dataset, data_dir)
    batch = graph.batch_size
    per_epoch = len(dataset.train.labels) // batch
    if per_epoch == 0:
        images = len(dataset.train.labels)
        raise SpecError.single(workload.source, "training.batch_size",
                               f"{batch} is more than the {images} images of the training split: not one full batch")
    stretch = math.prod(p.stretch() for p in policies)
    total = max(1, round(per_epoch * (training.epochs if epochs is None else epochs) * stretch))
    epochs = -(-total // per_epoch)
    last_epoch = epochs if stop_after is None else min(stop_after, epochs)
    datapath = ApproxDatapath(approximate) if approximate is not None else None
    on_mode = any(p.trains_on_approximate_mode for p in policies)
    for policy in policies:
        policy.bind(graph, ENGINE)
    executor = GraphExecutor(graph, workload.precision, training.momentum, training.weight_decay, policies, datapath)
    state, history, counts, first_epoch = init_state(graph, training.seed, policies), [], OpCounter(), 1
    if workload.model.onnx_weights is not None:
        load_onnx_weights(state, graph, workload)
    mode = approximate if on_mode else None
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if resume and checkpoint.exists():
            state, history, counts = load_checkpoint(checkpoint, workload, graph, total, policies, mode, datapath)
            first_epoch = len(history) + 1
        elif checkpoint.exists():
            raise CheckpointError(f"{checkpoint}: exists; resume from it, or choose another checkpoint path")
    bar = _Progress(sys.stderr.isatty() if progress is None else progress, epochs, per_epoch)
    interrupted, partial = None, 0
    for epoch in range(first_epoch, last_epoch + 1):
        start, losses, correct = time.perf_counter(), [], 0
        order = np.random.default_rng([training.seed, epoch]).permutation(len(dataset.train.labels))
        augment_rng = np.random.default_rng([training.seed, epoch, 1])
        executed = seen = 0
        for i in range(min(per_epoch, total - (epoch - 1) * per_epoch)):
            if stop:  # asked to stop: end at this iteration boundary
                interrupted, partial = Interruption(stop.signal, epoch, i), executed
                break
            index = order[i * batch : (i + 1) * batch]
            images = dataset.train.images[index]
            if dataset.augment:
                images = augment_batch(images, augment_rng)
            iteration = (epoch - 1) * per_epoch + i
            lr = learning_rate(training, iteration, per_epoch, total)
            seed = derive_seed(training.seed, iteration)
            labels, scale, dropped = dataset.train.labels[index], 1.0, False
            for policy in policies:  # a policy drops the iteration, or picks the instances it trains on
                choice = policy.choose(Batch(iteration, images, labels, seed), counts)
                if choice.drop:
                    if choice.optimizer_step:
                        executor.optimizer_step(state, lr, seed, counts)
                    dropped = True
                    break
                if choice.instances is not None:
                    images, labels = images[choice.instances], labels[choice.instances]
                    scale *= choice.loss_scale
            if dropped or len(labels) == 0:
                bar.update(epoch, i + 1, losses[-1] if losses else math.nan)
                continue
            executed += 1
            seen += len(labels)
            loss, hits = executor.step(state, images, labels, lr, seed, counts, loss_scale=scale)
            for policy in policies:
                policy.after_step(images, executor.last_losses, seed, counts)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"{workload.name}: the loss diverged to {loss} in epoch {epoch}, iteration {i}"
                )
            losses.append(loss)
            correct += hits
            bar.update(epoch, i + 1, loss)
        if interrupted is not None:
            break
        for policy in policies:
            policy.end_epoch()
        mean_loss = float(np.mean(losses)) if losses else math.nan
        accuracy = correct / max(seen, 1)
        on_approximate = evaluate(executor, state, dataset, approximate=True) if datapath is not None else None
        stats = EpochStats(epoch, lr, mean_loss, accuracy, evaluate(executor, state, dataset), executed,
                           time.perf_counter() - start, on_approximate)  # fmt: skip
        history.append(stats)
        bar.end_epoch(stats)
        if checkpoint is not None:
            save_checkpoint(checkpoint, workload, total, state, history, counts, policies, mode, datapath)
    stats = {p.key: found for p in policies if (found := p.stats()) is not None}
    if datapath is not None:
        stats["approximate_mode"] = {"multiplier": approximate.multiplier.label, "supply_voltage_v":
                                     approximate.supply_voltage_v, "bit_error_rate": approximate.bit_error_rate,
                                     **datapath.stats.as_dict()}  # fmt: skip
    bar.close()
    return TrainResult(workload.name, graph, tuple(history), sum(h.iterations for h in history) + partial, counts,
                       state, stats, tuple(policies), interrupted)  # fmt: skip


def load_onnx_weights(state: TrainState, graph: TrainingGraph, workload: Workload) -> None:
    """Replace the initial parameters and BN running statistics by the ONNX model's initializers
    (``model: {onnx: PATH, weights: onnx}``); a file changed since the workload was read, or an
    initializer of the wrong shape, is a SpecError naming it."""
    from e2sim.config.onnx_model import read_onnx_parameters

    path = Path(workload.model.onnx_weights)
    where = "model.weights"
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != workload.model.onnx_weights_sha256:
        raise SpecError.single(workload.source, where, f"{path} changed since the workload was read")
    trainable = [(layer.name, layer.kind) for layer in graph.model.layers if layer.trainable]
    arrays = read_onnx_parameters(path, workload.source, workload.dataset.info.input_shape, trainable)
    for name, value in arrays.items():
        if name not in state.arrays or state.arrays[name].shape != value.shape:
            want = state.arrays[name].shape if name in state.arrays else "no such tensor"
            raise SpecError.single(workload.source, where, f"initializer for {name} has shape {value.shape}, "
                                   f"the model needs {want}")  # fmt: skip
        state.arrays[name] = value


def save_checkpoint(
    path: Path, workload: Workload, iterations: int, state: TrainState, history: list, counts: OpCounter,
    policies: tuple[Policy, ...], approximate: ApproximateMode | None = None, datapath: ApproxDatapath | None = None,
) -> None:  # fmt: skip
    """The full training state after an epoch, written atomically (a temporary file, then a rename):
    each policy's arrays under ``<key>:<name>`` and its state under ``policy_state.<key>``."""
    saved = {p.key: p.save() for p in policies}
    meta = {
        "version": CHECKPOINT_VERSION,
        "workload": workload.name,
        "fingerprint": fingerprint(workload, approximate),
        "iterations": iterations,
        "history": [asdict(h) for h in history],
        "counts": {name: c.as_dict() for name, c in counts.ops.items()},
        "skipped": counts.skipped,
        "policy_state": {key: state for key, (_, state) in saved.items()},
        "approximate_mode": asdict(datapath.stats) if datapath is not None else None,
    }
    arrays = {f"{key}:{name}": a for key, (found, _) in saved.items() for name, a in found.items()}
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "wb") as f:
        np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **state.arrays, **arrays)
    os.replace(temporary, path)


def load_checkpoint(path: Path, workload: Workload, graph: TrainingGraph, iterations: int,
                    policies: tuple[Policy, ...], approximate: ApproximateMode | None = None,
                    datapath: ApproxDatapath | None = None):  # fmt: skip
    """(state, history, counts) of a checkpoint of this run; the policies and the approximate
    datapath get their saved state back."""
    try:
        with np.load(path) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            arrays = {name: data[name] for name in data.files if name != "__meta__"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not an e2sim checkpoint ({exc})") from None
    if meta.get("version") != CHECKPOINT_VERSION or meta.get("fingerprint") != fingerprint(workload, approximate):
        raise CheckpointError(f"{path}: was written for another workload or e2sim version than {workload.name}")
    if meta.get("iterations") != iterations:
        raise CheckpointError(f"{path}: belongs to a run of {meta.get('iterations')} iterations, not {iterations} "
                              "(lr schedule)")  # fmt: skip
    expected = {"": init_state(graph, 0, policies).arrays} | {f"{p.key}:": p.save()[0] for p in policies}
    found: dict[str, dict] = {prefix: {} for prefix in expected}
    for name, a in arrays.items():
        prefix = next((p for p in expected if p and name.startswith(p)), "")
        found[prefix][name[len(prefix) :]] = a
    if any(set(found[k]) != set(e) or any(found[k][n].shape != v.shape for n, v in e.items())
           for k, e in expected.items()):  # fmt: skip
        raise CheckpointError(f"{path}: its tensors do not match the graph of {workload.name}")
    for policy in policies:
        policy.restore(found[f"{policy.key}:"], meta["policy_state"][policy.key])
    if datapath is not None and meta.get("approximate_mode") is not None:
        datapath.stats = BitErrorStats(**meta["approximate_mode"])
    counts = OpCounter(skipped=dict(meta.get("skipped", {})))
    for name, c in meta["counts"].items():
        counts.ops[name] = OpCount(**c)
    history = [EpochStats(**h) for h in meta["history"]]
    return TrainState(found[""]), history, counts
