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

from e2sim.config.errors import SpecError
from e2sim.config.workload import TrainingSpec, Workload
from e2sim.counting import OpCount, OpCounter
from e2sim.graph import TrainingGraph, lower
from e2sim.hw.approximate import ApproximateMode
from e2sim.numerics.approximate import ApproxDatapath, BitErrorStats
from e2sim.numerics.quantize import derive_seed
from e2sim.policies.eif import CHECKPOINT_PREFIX as EIF_CHECKPOINT_PREFIX
from e2sim.policies.eif import EIF_SKIPPED, EifRuntime
from e2sim.policies.emp import EmpStats
from e2sim.policies.psg import PsgStats
from e2sim.policies.slu import SluStats
from e2sim.policies.smd import LOAD_OP, SmdStats, drops, stretched_epochs
from e2sim.train.data import Dataset, augment_batch, load_dataset
from e2sim.train.engine import GraphExecutor, TrainState, init_state

EVAL_BATCH = 500
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used (missing, corrupt, or from another workload); names the path."""


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
class TrainResult:
    workload: str
    graph: TrainingGraph
    epochs: tuple[EpochStats, ...]
    iterations: int
    counts: OpCounter  # everything executed, summed over all iterations, by graph op
    state: TrainState
    policy_stats: dict  # per technique, e.g. {"smd": {"drop_rate": 0.5, ...}}

    @property
    def final_test_accuracy(self) -> float:
        return self.epochs[-1].test_accuracy


def learning_rate(training: TrainingSpec, iteration: int, iterations_per_epoch: int, epochs: int) -> float:
    """The lr of a (0-based) iteration: constant, cosine to zero over the run, or step decay at epoch milestones."""
    if training.schedule == "cosine":
        total = max(iterations_per_epoch * epochs, 1)
        return 0.5 * training.lr * (1 + math.cos(math.pi * iteration / total))
    if training.schedule == "step":
        epoch = iteration // max(iterations_per_epoch, 1)
        return training.lr * training.lr_gamma ** sum(epoch >= m for m in training.lr_milestones_epochs)
    return training.lr


def fingerprint(workload: Workload, approximate: ApproximateMode | None = None) -> str:
    """A digest of everything that changes training: the workload (not its name or description),
    and the approximate mode when the policy trains on it."""
    passive = workload.policy.axtrain is not None and workload.policy.axtrain.passive
    text = repr((workload.dataset, workload.model, workload.training, workload.precision, workload.policy,
                 approximate if passive else None))  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Progress:
    def __init__(self, enabled: bool, epochs: int, per_epoch: int):
        self.enabled, self.epochs, self.per_epoch = enabled, epochs, per_epoch

    def update(self, epoch: int, done: int, loss: float) -> None:
        if self.enabled:
            filled = int(30 * done / max(self.per_epoch, 1))
            sys.stderr.write(f"\repoch {epoch}/{self.epochs} [{'=' * filled}{' ' * (30 - filled)}] "
                             f"{done}/{self.per_epoch} loss {loss:.4f}")  # fmt: skip
            sys.stderr.flush()

    def end_epoch(self, stats: EpochStats) -> None:
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
) -> TrainResult:
    """Train ``workload`` by executing its lowered graph; deterministic given ``training.seed``.

    ``epochs`` overrides the workload's (it sets the length of the lr schedule); ``stop_after``
    ends the run after that epoch (a later ``resume`` finishes it exactly as an uninterrupted run).
    ``checkpoint`` is a file written after every epoch (never over a file that is not a checkpoint
    of this run); ``resume`` continues from it. Training uses full batches only (the last partial
    batch of an epoch is dropped), so every iteration is the lowered graph exactly.
    ``approximate``: the accelerator's approximate mode; AxTrain's passive method trains on it,
    and every epoch is also evaluated on it.
    """
    training = workload.training
    smd = workload.policy.smd
    epochs = stretched_epochs(training.epochs if epochs is None else epochs, smd)
    last_epoch = epochs if stop_after is None else min(stop_after, epochs)
    smd_stats = SmdStats()
    eif = EifRuntime(workload, workload.policy.eif) if workload.policy.eif is not None else None
    dataset = dataset or load_dataset(workload.dataset, data_dir)
    graph = lower(workload)
    batch = graph.batch_size
    per_epoch = len(dataset.train.labels) // batch
    if per_epoch == 0:
        images = len(dataset.train.labels)
        raise SpecError.single(workload.source, "training.batch_size",
                               f"{batch} is more than the {images} images of the training split: not one full batch")
    datapath = ApproxDatapath(approximate) if approximate is not None else None
    executor = GraphExecutor(graph, workload.precision, training.momentum, training.weight_decay, workload.policy,
                             datapath)  # fmt: skip
    state, history, counts, first_epoch = init_state(graph, training.seed, workload.policy), [], OpCounter(), 1
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if resume and checkpoint.exists():
            state, history, counts, saved_stats, extra = load_checkpoint(checkpoint, workload, graph, epochs,
                                                                         approximate, eif)  # fmt: skip
            smd_stats = SmdStats(**saved_stats.get("smd", {}))
            if executor.slu is not None:
                executor.slu.stats = SluStats(**saved_stats.get("slu", {}))
            if executor.psg is not None:
                executor.psg_stats = PsgStats(**saved_stats.get("psg", {}))
            if executor.emp is not None:
                executor.emp_stats = EmpStats(**saved_stats.get("emp", {}))
            if datapath is not None:
                datapath.stats = BitErrorStats(**saved_stats.get("approximate_mode", {}))
            if eif is not None:
                eif.restore(extra, saved_stats["eif"])
            first_epoch = len(history) + 1
        elif checkpoint.exists():
            raise CheckpointError(f"{checkpoint}: exists; resume from it, or choose another checkpoint path")
    bar = _Progress(sys.stderr.isatty() if progress is None else progress, epochs, per_epoch)
    for epoch in range(first_epoch, last_epoch + 1):
        start, losses, correct = time.perf_counter(), [], 0
        order = np.random.default_rng([training.seed, epoch]).permutation(len(dataset.train.labels))
        augment_rng = np.random.default_rng([training.seed, epoch, 1])
        executed = seen = 0
        for i in range(per_epoch):
            index = order[i * batch : (i + 1) * batch]
            images = dataset.train.images[index]
            if dataset.augment:
                images = augment_batch(images, augment_rng)
            iteration = (epoch - 1) * per_epoch + i
            lr = learning_rate(training, iteration, per_epoch, epochs)
            seed = derive_seed(training.seed, iteration)
            if smd is not None:
                smd_stats.iterations += 1
                if drops(smd, training.seed, iteration):
                    smd_stats.dropped += 1
                    counts.record(LOAD_OP, reads={"x": images.size, "labels": len(index)}, skipped_macs=graph.macs())
                    counts.ran(LOAD_OP)
                    if smd.optimizer_on_skip == "step":
                        executor.optimizer_step(state, lr, seed, counts)
                    bar.update(epoch, i + 1, losses[-1] if losses else math.nan)
                    continue
            labels = dataset.train.labels[index]
            if eif is not None:  # the filter picks the instances the main network trains on
                chosen = eif.select(images, counts)
                counts.record(EIF_SKIPPED, skipped_macs=graph.macs() * (len(index) - len(chosen)) / len(index))
                if len(chosen) == 0:
                    continue
                images, labels = images[chosen], labels[chosen]
            executed += 1
            seen += len(labels)
            scale = eif.loss_scale(len(labels), len(index)) if eif is not None else 1.0
            loss, hits = executor.step(state, images, labels, lr, seed, counts, loss_scale=scale)
            if eif is not None:
                eif.learn(images, executor.last_losses, seed, counts)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"{workload.name}: the loss diverged to {loss} in epoch {epoch}, iteration {i}"
                )
            losses.append(loss)
            correct += hits
            bar.update(epoch, i + 1, loss)
        if eif is not None:
            eif.stats.end_epoch()
        mean_loss = float(np.mean(losses)) if losses else math.nan
        accuracy = correct / max(seen, 1)
        on_approximate = evaluate(executor, state, dataset, approximate=True) if datapath is not None else None
        stats = EpochStats(epoch, lr, mean_loss, accuracy, evaluate(executor, state, dataset), executed,
                           time.perf_counter() - start, on_approximate)  # fmt: skip
        history.append(stats)
        bar.end_epoch(stats)
        if checkpoint is not None:
            policy_state = {"smd": asdict(smd_stats), "psg": asdict(executor.psg_stats),
                            "emp": asdict(executor.emp_stats)}  # fmt: skip
            if executor.slu is not None:
                policy_state["slu"] = asdict(executor.slu.stats)
            if datapath is not None:
                policy_state["approximate_mode"] = asdict(datapath.stats)
            extra = {}
            if eif is not None:
                extra, policy_state["eif"] = eif.checkpoint()
            save_checkpoint(checkpoint, workload, epochs, state, history, counts, policy_state, approximate, extra)
    stats = {"smd": smd_stats.as_dict()} if smd is not None else {}
    if executor.slu is not None:
        stats["slu"] = executor.slu.stats.as_dict()
    if workload.policy.psg is not None:
        stats["psg"] = executor.psg_stats.as_dict()
    if executor.emp is not None:
        stats["emp"] = executor.emp_stats.as_dict()
    if eif is not None:
        stats["eif"] = eif.stats.as_dict()
    if datapath is not None:
        stats["approximate_mode"] = {"multiplier": approximate.multiplier.label, "supply_voltage_v":
                                     approximate.supply_voltage_v, "bit_error_rate": approximate.bit_error_rate,
                                     **datapath.stats.as_dict()}  # fmt: skip
    return TrainResult(workload.name, graph, tuple(history), sum(h.iterations for h in history), counts, state, stats)


def save_checkpoint(
    path: Path, workload: Workload, epochs: int, state: TrainState, history: list, counts: OpCounter, stats: dict,
    approximate: ApproximateMode | None = None, extra_arrays: dict | None = None,
) -> None:  # fmt: skip
    """The full training state after an epoch, written atomically (a temporary file, then a rename).
    ``extra_arrays``: a policy's own arrays (the EIF filter's), under names the graph does not use."""
    meta = {
        "version": CHECKPOINT_VERSION,
        "workload": workload.name,
        "fingerprint": fingerprint(workload, approximate),
        "epochs": epochs,
        "history": [asdict(h) for h in history],
        "counts": {name: c.as_dict() for name, c in counts.ops.items()},
        "policy_state": stats,
    }
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "wb") as f:
        np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **state.arrays, **(extra_arrays or {}))
    os.replace(temporary, path)


def load_checkpoint(path: Path, workload: Workload, graph: TrainingGraph, epochs: int,
                    approximate: ApproximateMode | None = None, eif: EifRuntime | None = None):  # fmt: skip
    """(state, history, counts, policy state, the EIF filter's arrays) of a checkpoint of this run."""
    try:
        with np.load(path) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            arrays = {name: data[name] for name in data.files if name != "__meta__"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not an e2sim checkpoint ({exc})") from None
    if meta.get("version") != CHECKPOINT_VERSION or meta.get("fingerprint") != fingerprint(workload, approximate):
        raise CheckpointError(f"{path}: was written for another workload or e2sim version than {workload.name}")
    if meta.get("epochs") != epochs:
        raise CheckpointError(f"{path}: belongs to a run of {meta.get('epochs')} epochs, not {epochs} (lr schedule)")
    expected = init_state(graph, 0, workload.policy).arrays
    extra = {name: a for name, a in arrays.items() if name.startswith(EIF_CHECKPOINT_PREFIX)}
    arrays = {name: a for name, a in arrays.items() if name not in extra}
    expected_extra = eif.checkpoint()[0] if eif is not None else {}
    if any(set(a) != set(e) or any(a[k].shape != v.shape for k, v in e.items())
           for a, e in ((arrays, expected), (extra, expected_extra))):  # fmt: skip
        raise CheckpointError(f"{path}: its tensors do not match the graph of {workload.name}")
    counts = OpCounter()
    for name, c in meta["counts"].items():
        counts.ops[name] = OpCount(**c)
    history = [EpochStats(**h) for h in meta["history"]]
    return TrainState(arrays), history, counts, meta.get("policy_state", {}), extra
