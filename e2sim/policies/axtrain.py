"""AxTrain (He et al., ISLPED 2018): training for an accelerator's approximate mode.

The passive method runs the training forward pass on the mode (the executor's approximate
datapath); the active method replaces each step's gradients by those at sharpness-moved weights
(one more forward and backward pass, counted and priced). ``measure_sensitivity`` is the
yardstick: how sensitive a trained network's loss is to relative perturbations of its multiplier
operands (the weights), measured by sampling, independently of the active method's formula.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from e2sim.config.errors import SpecError
from e2sim.config.frozen import FrozenDict
from e2sim.config.reader import Section, at_most, boolean, non_negative_number
from e2sim.hw.accelerator import Accelerator
from e2sim.lazy import LazyModule
from e2sim.policies.base import Executor, Policy, Step

F = LazyModule("e2sim.functional")  # the kernels load when a policy first runs one

ACTIVE_RADIUS = 0.5  # the presets' ρ (ASAM's default radius for relative perturbations)


@dataclass(frozen=True)
class AxTrainSpec:
    """AxTrain (He et al., ISLPED 2018): training for an accelerator's approximate mode (the
    hardware spec's ``approximate`` block). ``passive``: the training forward pass runs on that
    mode (its multiplier, and bit errors on the operands it reads); the backward pass treats the
    approximate forward as exact (straight-through). ``sensitivity_radius`` ρ > 0 turns on the
    active method: each step takes the gradient at the weights moved by ε = ρ·w²⊙g / ‖w⊙g‖₂
    (conv/linear weights), which descends L(w) + ρ·‖w⊙g‖₂ to first order — a penalty on the
    sensitivity of the loss to relative weight (and so product) perturbations: ‖w⊙g‖₂ is the
    largest first-order loss change over relative perturbations of norm 1 (Kwon et al., ASAM,
    ICML 2021). It costs one more forward and backward pass per step, counted and priced."""

    passive: bool = True
    sensitivity_radius: float = 0.0


class AxTrain(Policy):
    key = "axtrain"
    Spec = AxTrainSpec
    checks = FrozenDict({"passive": boolean, "sensitivity_radius": at_most(non_negative_number, 100)})

    def __init__(self, spec: AxTrainSpec, workload):
        super().__init__(spec, workload)
        self.trains_on_approximate_mode = spec.passive

    @classmethod
    def read_spec(cls, s: Section) -> AxTrainSpec:
        spec = super().read_spec(s)
        if spec.passive is False and spec.sensitivity_radius == 0:
            s.log.add(s.path, "turn on passive training, the active method (sensitivity_radius > 0), or both")
        return spec

    def check_hardware(self, hw: Accelerator | None) -> None:
        if not self.spec.passive:
            return
        if hw is None:
            raise SpecError.single(self.workload.source, "policy.axtrain.passive", "trains on an accelerator's "
                                   "approximate mode: pass the hardware spec that has it (hw=...)")  # fmt: skip
        if hw.approximate is None:
            wanted = f"policy {self.workload.policy.name} trains on the accelerator's approximate mode"
            raise SpecError.single(hw.source, "approximate", f"{wanted}, and this spec has no approximate block")

    def refine_gradients(self, step: Step, rerun: Callable[[dict[str, np.ndarray]], None]) -> None:
        """The active method: every gradient becomes the gradient at the conv/linear weights moved by
        ε = ρ·w²⊙g / ‖w⊙g‖₂ (see AxTrainSpec)."""
        radius = self.spec.sensitivity_radius
        if radius <= 0:
            return
        t = step.tensors
        layers = step.graph.model.layers
        weights = [f"{layer.name}.w" for layer in layers if layer.kind in ("conv", "linear")]
        norm = np.sqrt(sum(float(np.sum((t[w].astype(np.float64) * t[f"{w}.grad"]) ** 2)) for w in weights))
        if norm == 0 or not np.isfinite(norm):
            return
        moved = dict(t)
        for w in weights:
            moved[w] = (t[w] + radius * t[w] * t[w] * t[f"{w}.grad"] / norm).astype(np.float32)
        rerun(moved)
        for layer in layers:
            for short, _ in layer.params():
                t[f"{layer.name}.{short}.grad"] = moved[f"{layer.name}.{short}.grad"]


@dataclass(frozen=True)
class Sensitivity:
    """Mean |L(w ⊙ (1 + σ·ε)) − L(w)| over ``draws`` samples ε ~ N(0, 1) per conv/linear weight
    (``mean_loss_change``), and the mean top-1 accuracy drop under the same perturbations."""

    sigma: float
    draws: int
    loss: float
    mean_loss_change: float
    mean_accuracy_drop: float


def measure_sensitivity(executor: Executor, state, images: np.ndarray, labels: np.ndarray,
                        sigma: float = 0.1, draws: int = 8, seed: int = 0) -> Sensitivity:  # fmt: skip
    """Evaluate the loss and accuracy of ``state`` (a training state: its ``arrays``) on (images,
    labels) in inference mode (the workload's formats, exact datapath), then under ``draws``
    relative weight perturbations."""
    layers = [layer.name for layer in executor.graph.model.layers if layer.kind in ("conv", "linear")]

    def loss_and_accuracy(arrays: dict) -> tuple[float, float]:
        logits = executor.predict(dataclasses.replace(state, arrays=arrays), images)
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
