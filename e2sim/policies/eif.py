"""Early instance filtering (Wu, Wang, Shi, Hu 2020, arXiv 2007.03213).

A small filter network (``build_filter_model``: slim LeNet for MNIST-sized inputs, ResNet-8
otherwise) runs on every incoming instance and predicts whether the main network would find it
hard. Only instances predicted "high loss", plus rejected ones whose prediction entropy is at least
``entropy_threshold`` (uncertainty sampling, so the filter keeps learning), go through the main
network's forward and backward. Their main-network losses label them for the filter (high when
loss >= T), which trains on them with a weighted cross-entropy (1/R_set for high, 1/(1 − R_set) for
low). T adapts so that the ratio of trained instances (predicted high or uncertainty-sampled) over
the last ``window`` batches tracks R_set: a filter that rejects too much lowers T, more instances
are labelled high, and it learns to pass more (negative feedback). The filter's
own forward (on every instance) and training are counted under its ``eif_*`` ops and priced.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from e2sim.config.frozen import FrozenDict
from e2sim.config.reader import (
    Section,
    at_least_one,
    at_most,
    fraction_below_one,
    fraction_below_one_positive,
    fraction_positive,
    non_negative_number,
    one_of,
    positive_int,
    positive_number,
)
from e2sim.config.workload import Workload
from e2sim.counting import OpCounter
from e2sim.graph.ir import GraphExtension, TrainingGraph
from e2sim.graph.layers import INPUT, BatchNorm, Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool, ReLU, Shape
from e2sim.graph.lowering import lower_model
from e2sim.graph.models import Model, ModelBuilder, conv3x3
from e2sim.policies.base import Batch, Choice, Engine, Policy

FILTER_SEED_SALT = 0xE1


@dataclass(frozen=True)
class EifSpec:
    """Early instance filtering (Wu et al. 2020): a small filter network predicts which instances
    the main network would find hard (loss >= T); only those (and uncertain ones, entropy >=
    ``entropy_threshold`` nats) train the main network. T starts at ``initial_threshold`` and is
    multiplied by ``threshold_up`` when the trained ratio of the last ``window`` batches is at
    least ``target_ratio`` (R_set), else by ``threshold_down``. Uncertainty sampling also always
    runs the ``explore_fraction`` most uncertain rejected instances of a batch, so that a filter
    that has become confident everywhere still gets labels. The filter trains by SGD at its own
    constant ``filter_lr`` and ``filter_momentum`` (the paper's LeNet recipe) and the main network's
    weight decay. ``loss_normalization``: ``batch`` divides the main network's summed loss over the
    trained instances by the full batch size (filtered instances count as zero-loss members, so the
    gradient estimates the full batch's); ``trained`` takes the mean over the trained instances
    (a smaller batch of hard instances: larger steps). The paper leaves α1, α2, n, the entropy
    threshold and these two open; the defaults, and the exploration floor, are e2sim's."""

    target_ratio: float = 0.3
    threshold_up: float = 1.05
    threshold_down: float = 0.95
    window: int = 10
    entropy_threshold: float = 0.65
    initial_threshold: float = 1.0
    explore_fraction: float = 0.1  # at least this share of each batch: the most uncertain rejected instances
    filter_lr: float = 0.01
    filter_momentum: float = 0.5
    loss_normalization: str = "batch"  # batch | trained


def build_filter_model(input_shape: Shape, source: str = "policy.eif") -> Model:
    """The early instance filter (Wu et al. 2020), a two-class network named ``eif_*``: for
    MNIST-sized inputs a slim LeNet (unpadded 3×3 convs with 6 and 16 channels, 2×2 max pools:
    141 k MACs per 28×28 image, a third of LeNet-5), otherwise a ResNet-8."""
    b = ModelBuilder(input_shape, source)
    if input_shape[1] <= 28:
        x = b.append(Conv2d, "eif_conv1", (INPUT,), source, out_channels=6, kernel=(3, 3), stride=1, padding=(0, 0),
                     bias=True)  # fmt: skip
        x = b.append(ReLU, "eif_relu1", (x,), source)
        x = b.append(MaxPool, "eif_pool1", (x,), source, kernel=(2, 2), stride=2, padding=(0, 0))
        x = b.append(Conv2d, "eif_conv2", (x,), source, out_channels=16, kernel=(3, 3), stride=1, padding=(0, 0),
                     bias=True)  # fmt: skip
        x = b.append(ReLU, "eif_relu2", (x,), source)
        x = b.append(MaxPool, "eif_pool2", (x,), source, kernel=(2, 2), stride=2, padding=(0, 0))
        x = b.append(Flatten, "eif_flatten", (x,), source)
        x = b.append(Linear, "eif_fc", (x,), source, out_features=2, bias=True)
        return b.finish(x, "EIF slim LeNet", 2, source, loss="eif_loss")
    x = b.append(Conv2d, "eif_conv1", (INPUT,), source, **conv3x3(16, 1))
    x = b.append(BatchNorm, "eif_bn1", (x,), source, eps=1e-5)
    x = b.append(ReLU, "eif_relu1", (x,), source)
    for stage in range(3):
        x = b.basic_block(x, f"eif_layer{stage + 1}", 16 << stage, 2 if stage else 1, "zero_pad", source)
    x = b.append(GlobalAvgPool, "eif_pool", (x,), source)
    x = b.append(Linear, "eif_fc", (x,), source, out_features=2, bias=True)
    return b.finish(x, "EIF ResNet-8", 2, source, loss="eif_loss")


def filter_graph(workload: Workload, batch: int, momentum: float | None = None) -> TrainingGraph:
    """The filter network's training iteration at ``batch`` (the main network's batch), with SGD
    at ``momentum`` (the filter's own; default the workload's)."""
    if momentum is not None:
        workload = replace(workload, training=replace(workload.training, momentum=momentum))
    return lower_model(workload, build_filter_model(workload.dataset.info.input_shape), batch)


@dataclass
class EifStats:
    seen: int = 0
    trained: int = 0
    uncertain: int = 0
    predicted_high: int = 0
    loss_threshold: float = float("nan")  # T after the latest batch
    epoch_seen: list = field(default_factory=list)  # instances seen and trained by the end of each epoch
    epoch_trained: list = field(default_factory=list)

    def end_epoch(self) -> None:
        self.epoch_seen.append(self.seen)
        self.epoch_trained.append(self.trained)

    def as_dict(self) -> dict:
        starts_seen, starts_trained = [0, *self.epoch_seen[:-1]], [0, *self.epoch_trained[:-1]]
        return {
            "trained_instance_ratio": self.trained / self.seen if self.seen else float("nan"),
            "predicted_high_ratio": self.predicted_high / self.seen if self.seen else float("nan"),
            "uncertainty_sampled": self.uncertain,
            "final_loss_threshold": self.loss_threshold,
            "trained_instance_ratio_per_epoch": [
                (trained - t0) / (seen - s0) if seen > s0 else float("nan")
                for s0, t0, seen, trained in zip(
                    starts_seen, starts_trained, self.epoch_seen, self.epoch_trained, strict=True
                )
            ],
        }


class EifRuntime:
    """The filter network, its training, and the adaptive threshold of one run."""

    def __init__(self, workload: Workload, spec: EifSpec, graph: TrainingGraph, engine: Engine):
        self.spec = spec
        self.graph = graph
        training = workload.training
        self.executor = engine.executor(graph, workload.precision, spec.filter_momentum, training.weight_decay)
        self.state = engine.init_state(graph, training.seed ^ FILTER_SEED_SALT)
        self.threshold = spec.initial_threshold
        self.recent: deque[float] = deque(maxlen=spec.window)
        self.stats = EifStats()

    def checkpoint(self) -> tuple[dict[str, np.ndarray], dict]:
        """The filter's weights and the controller's state, for a checkpoint."""
        return dict(self.state.arrays), {"threshold": self.threshold, "recent": list(self.recent),
                                         "stats": asdict(self.stats)}  # fmt: skip

    def restore(self, arrays: dict[str, np.ndarray], saved: dict) -> None:
        """Continue from ``checkpoint()``'s output (arrays already validated against the filter graph)."""
        for name in self.state.arrays:
            self.state.arrays[name] = arrays[name]
        self.threshold = saved["threshold"]
        self.recent.extend(saved["recent"])
        self.stats = EifStats(**saved["stats"])

    def select(self, images: np.ndarray, counter: OpCounter | None) -> np.ndarray:
        """Indices of the instances the main network trains on."""
        logits = self.executor.predict(self.state, images, counter).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        entropy = -(probs * np.log(np.maximum(probs, 1e-12))).sum(axis=1)
        high = probs[:, 1] >= 0.5
        uncertain = ~high & (entropy >= self.spec.entropy_threshold)
        floor = int(np.ceil(self.spec.explore_fraction * len(images)))
        rejected = np.flatnonzero(~high)
        uncertain[rejected[np.argsort(-entropy[rejected], kind="stable")[:floor]]] = True
        self.stats.seen += len(images)
        self.stats.trained += int(high.sum() + uncertain.sum())
        self.stats.uncertain += int(uncertain.sum())
        self.stats.predicted_high += int(high.sum())
        trained = high | uncertain
        self.recent.append(float(trained.mean()))
        self._adapt()
        return np.flatnonzero(trained)

    def loss_scale(self, trained: int, batch: int) -> float:
        """What the main network's mean loss over ``trained`` instances is multiplied by."""
        return trained / batch if self.spec.loss_normalization == "batch" else 1.0

    def _adapt(self) -> None:
        """T up when the recent trained ratio is at or above R_set (fewer highs), else down."""
        ratio = float(np.mean(self.recent))
        self.threshold *= self.spec.threshold_up if ratio >= self.spec.target_ratio else self.spec.threshold_down
        self.stats.loss_threshold = self.threshold

    def learn(self, images: np.ndarray, main_losses: np.ndarray, seed: int, counter: OpCounter | None):
        """Train the filter on the instances the main network saw, labelled by their loss."""
        high = (main_losses >= self.threshold).astype(np.int64)
        r = self.spec.target_ratio
        weights = np.where(high == 1, 1 / r, 1 / (1 - r)) if r < 1 else np.ones(len(high))
        self.executor.step(self.state, images, high, self.spec.filter_lr, seed ^ FILTER_SEED_SALT, counter,
                           sample_weights=weights)  # fmt: skip


class Eif(Policy):
    """The filter network runs first on every batch (its ops are lowered before the model's) and
    picks the instances the main network trains on; it learns from their losses."""

    key = "eif"
    Spec = EifSpec
    checks = FrozenDict({
        "target_ratio": fraction_positive, "threshold_up": at_most(at_least_one, 100),
        "threshold_down": fraction_below_one_positive, "window": at_most(positive_int, 1_000_000),
        "entropy_threshold": at_most(non_negative_number, 100), "initial_threshold": at_most(positive_number, 1e6),
        "explore_fraction": fraction_below_one, "filter_lr": at_most(positive_number, 1000),
        "filter_momentum": fraction_below_one, "loss_normalization": one_of("batch", "trained"),
    })  # fmt: skip

    def __init__(self, spec: EifSpec, workload: Workload):
        super().__init__(spec, workload)
        self.filters: dict[int, TrainingGraph] = {}
        self.runtime: EifRuntime | None = None
        self.macs = 0

    @classmethod
    def read_spec(cls, s: Section) -> EifSpec:
        spec = super().read_spec(s)
        if spec.explore_fraction is not None and spec.target_ratio is not None and \
                spec.explore_fraction >= spec.target_ratio:  # fmt: skip
            s.log.add(s.key_path("explore_fraction"),
                      "must be below target_ratio (the exploration floor alone would exceed R_set)")  # fmt: skip
        return spec

    def filter_graph(self, batch: int) -> TrainingGraph:
        if batch not in self.filters:
            self.filters[batch] = filter_graph(self.workload, batch, self.spec.filter_momentum)
        return self.filters[batch]

    def extend(self, graph: TrainingGraph) -> GraphExtension:
        """The filter's whole training iteration, at the main network's batch, ahead of the model's ops."""
        filtering = self.filter_graph(graph.batch_size)
        return GraphExtension(self.key, before=filtering.ops, tensors=filtering.tensors, state=filtering.inputs)

    def bind(self, graph: TrainingGraph, engine: Engine) -> None:
        self.macs = graph.macs()
        self.runtime = EifRuntime(self.workload, self.spec, self.filter_graph(graph.batch_size), engine)

    def choose(self, batch: Batch, counter: OpCounter | None) -> Choice:
        chosen = self.runtime.select(batch.images, counter)
        if counter is not None:
            counter.skip(self.key, self.macs * (len(batch.labels) - len(chosen)) / len(batch.labels))
        return Choice(instances=chosen, loss_scale=self.runtime.loss_scale(len(chosen), len(batch.labels)))

    def after_step(self, images: np.ndarray, losses: np.ndarray, seed: int, counter: OpCounter | None) -> None:
        self.runtime.learn(images, losses, seed, counter)

    def end_epoch(self) -> None:
        self.runtime.stats.end_epoch()

    def stats(self) -> dict:
        return self.runtime.stats.as_dict()

    def save(self) -> tuple[dict, dict]:
        return self.runtime.checkpoint()

    def restore(self, arrays: dict, saved: dict) -> None:
        self.runtime.restore(arrays, saved)
