"""AxTrain's yardstick: how sensitive a trained network's loss is to relative perturbations of its
multiplier operands (the weights), measured by sampling, independently of the active method's
formula. The methods themselves live in the engine (passive: the forward pass on the approximate
mode; active: the sharpness gradient, see ``AxTrainSpec``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import e2sim.functional as F
from e2sim.train.engine import GraphExecutor, TrainState


@dataclass(frozen=True)
class Sensitivity:
    """Mean |L(w ⊙ (1 + σ·ε)) − L(w)| over ``draws`` samples ε ~ N(0, 1) per conv/linear weight
    (``mean_loss_change``), and the mean top-1 accuracy drop under the same perturbations."""

    sigma: float
    draws: int
    loss: float
    mean_loss_change: float
    mean_accuracy_drop: float


def measure_sensitivity(executor: GraphExecutor, state: TrainState, images: np.ndarray, labels: np.ndarray,
                        sigma: float = 0.1, draws: int = 8, seed: int = 0) -> Sensitivity:  # fmt: skip
    """Evaluate the loss and accuracy of ``state`` on (images, labels) in inference mode (the
    workload's formats, exact datapath), then under ``draws`` relative weight perturbations."""
    layers = [layer.name for layer in executor.graph.model.layers if layer.kind in ("conv", "linear")]

    def loss_and_accuracy(arrays: dict) -> tuple[float, float]:
        logits = executor.predict(TrainState(arrays), images)
        loss, _ = F.softmax_cross_entropy(logits, labels)
        return loss, float(np.mean(np.argmax(logits, axis=1) == labels))

    base_loss, base_accuracy = loss_and_accuracy(state.arrays)
    rng = np.random.default_rng(seed)
    changes, drops = [], []
    for _ in range(draws):
        arrays = dict(state.arrays)
        for name in layers:
            w = arrays[f"{name}.w"]
            arrays[f"{name}.w"] = (w * (1 + sigma * rng.standard_normal(w.shape))).astype(np.float32)
        loss, accuracy = loss_and_accuracy(arrays)
        changes.append(abs(loss - base_loss))
        drops.append(base_accuracy - accuracy)
    return Sensitivity(sigma, draws, base_loss, float(np.mean(changes)), float(np.mean(drops)))
