"""Executes a lowered TrainingGraph op by op with the functional kernels: the graph that is priced
is the graph that ran. Every op's work is recorded under its graph name in an OpCounter. The
active policies (``e2sim.policies.base``) wrap kernels and passes; the engine names none of them."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

import e2sim.functional as F
from e2sim.config.precision import PrecisionSpec
from e2sim.counting import OpCounter
from e2sim.graph import elementwise as ew_ops
from e2sim.graph.ir import Op, TrainingGraph
from e2sim.graph.layers import Layer
from e2sim.numerics.approximate import ApproxDatapath
from e2sim.numerics.seeds import derive_seed
from e2sim.policies.base import Engine, Kernel, PassHook, Policy, Step

BN_RUNNING_MOMENTUM = 0.1  # running = (1 - m)·running + m·batch statistic (PyTorch's default)
RERUN_SALT = 77  # seeds a policy's second forward and backward pass


@dataclass
class TrainState:
    """Everything that persists between iterations: parameters, momentum buffers, BN running
    statistics, by their graph tensor names (``conv1.w``, ``conv1.w.momentum``, ``bn1.running_stats``),
    and the trainable arrays of the policies (with their momentum)."""

    arrays: dict[str, np.ndarray]


def init_state(graph: TrainingGraph, seed: int, policies: Sequence[Policy] = ()) -> TrainState:
    """He-normal conv weights (fan-in), PyTorch-default linear layers, BN γ = 1 and β = 0, zero
    momentum; then the policies' own parameters with zero momentum."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for policy in policies:
        for name, value in policy.initial_parameters(seed).items():
            arrays[name] = value
            arrays[f"{name}.momentum"] = np.zeros_like(value)
    for name in sorted(graph.model_inputs):
        t = graph.tensors[name]
        layer = graph.model.layer(t.layer) if t.layer != "input" else None
        if t.role in ("input", "label"):
            continue
        if t.role == "momentum":
            arrays[name] = np.zeros(t.shape, np.float32)
        elif t.role == "stats":  # running mean (row 0) and variance (row 1)
            arrays[name] = np.stack([np.zeros(t.shape[1]), np.ones(t.shape[1])]).astype(np.float32)
        elif layer is not None and layer.kind == "batchnorm":
            arrays[name] = np.full(t.shape, 1.0 if name.endswith(".gamma") else 0.0, np.float32)
        elif layer is not None and layer.kind == "conv" and t.role == "weight":
            fan_in = int(np.prod(t.shape[1:]))
            arrays[name] = (rng.standard_normal(t.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        else:  # linear weights and all biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            weight = graph.tensors[f"{t.layer}.w"]
            bound = 1.0 / np.sqrt(np.prod(weight.shape[1:]))
            arrays[name] = rng.uniform(-bound, bound, t.shape).astype(np.float32)
    return TrainState(arrays)


class GraphExecutor:
    """Runs the model's ops of ``graph`` on a state (a policy's ops are run by the policy); the
    batch may be smaller than the graph's."""

    def __init__(self, graph: TrainingGraph, fmt: PrecisionSpec | None, momentum: float, weight_decay: float,
                 policies: Sequence[Policy] = (), approx: ApproxDatapath | None = None):  # fmt: skip
        """``approx``: the accelerator's approximate mode; training runs its forward pass on it when
        a policy trains on the mode, and :meth:`predict` on request."""
        self.graph = graph
        self.fmt = fmt
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.policies = tuple(policies)
        self.approx = approx
        self.on_mode = any(p.trains_on_approximate_mode for p in self.policies)
        if self.on_mode and approx is None:
            raise ValueError("a policy trains on the accelerator's approximate mode: give the executor that mode")
        self.layers = {layer.name: layer for layer in graph.model.layers}
        loss = next(op for op in graph.model_ops if op.layer_kind == "loss" and op.phase == "fwd")
        self.logits, (self.loss, self.probs) = loss.reads[0], loss.writes
        self.timings: dict[tuple[str, str], float] | None = None  # a dict: seconds per (layer kind, phase)
        self.handlers: list[tuple[Op, Layer, Kernel]] = []
        for op in graph.model_ops:
            layer = self.layers[op.layer]
            kernel = _HANDLERS["grad_sum" if op.name.endswith(".grad_sum") else (op.layer_kind, op.phase)]
            for policy in self.policies:
                kernel = policy.kernel(op, layer, kernel)
            self.handlers.append((op, layer, kernel))

    def step(
        self,
        state: TrainState,
        images,
        labels,
        lr: float,
        seed: int,
        counter: OpCounter | None,
        sample_weights=None,
        loss_scale: float = 1.0,
    ) -> tuple[float, int]:
        """One training iteration (forward, backward, update) in place on ``state``.
        Returns (loss, number of correct predictions in the batch); ``last_losses`` then holds the
        per-sample losses. ``sample_weights`` weight the loss (Σ w·CE / Σ w)."""
        tensors = dict(state.arrays)
        tensors["input.x"], tensors["input.labels"] = images, labels
        if sample_weights is not None:
            tensors["input.weights"] = sample_weights
        approx = self.approx if self.on_mode else None
        step = Step(self.graph, tensors, self.fmt, counter, seed, lr, self.momentum, self.weight_decay, {}, approx,
                    loss_scale)  # fmt: skip
        hooks = self._open(tensors, counter, seed, training=True)
        self._pass(step, seed, hooks, updates=False)
        for policy in self.policies:
            policy.refine_gradients(step, partial(self._rerun, step, seed))
        self._pass(step, seed, hooks, updates=True)
        for hook in hooks:
            hook.finish(tensors, lr, self.momentum)
        for name in state.arrays:
            state.arrays[name] = tensors[f"{name}.next"]
        probs = tensors[self.probs]
        picked = probs[np.arange(len(labels)), labels].astype(np.float64)
        self.last_losses = -np.log(np.maximum(picked, 1e-30))
        return float(tensors[self.loss]), int(np.sum(np.argmax(probs, axis=1) == labels))

    def _open(self, tensors: dict, counter: OpCounter | None, seed: int, training: bool) -> list[PassHook]:
        hooks = (policy.open_pass(tensors, counter, seed, training) for policy in self.policies)
        return [hook for hook in hooks if hook is not None]

    def _pass(self, step: Step, seed: int, hooks: list[PassHook], updates: bool) -> None:
        """The forward and backward ops (``updates=False``) or the update ops, in graph order (the
        updates write ``.next`` tensors, so running them after every backward op is equivalent)."""
        for index, (op, layer, kernel) in enumerate(self.handlers):
            if (op.phase == "update") == updates:
                if self.timings is None:
                    self._run(step, op, layer, kernel, derive_seed(seed, index), hooks)
                else:  # a profile (benchmarks/train_step.py --profile)
                    start = time.perf_counter()
                    self._run(step, op, layer, kernel, derive_seed(seed, index), hooks)
                    key = (op.layer_kind, op.phase)
                    self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - start
                if step.counter is not None:
                    step.counter.ran(op.name)

    def _rerun(self, step: Step, seed: int, tensors: dict) -> None:
        """The forward and backward ops once more on ``tensors``, with a fresh stash and no pass hooks."""
        self._pass(dataclasses.replace(step, tensors=tensors, stash={}), derive_seed(seed, RERUN_SALT), [],
                   updates=False)  # fmt: skip

    def optimizer_step(self, state: TrainState, lr: float, seed: int, counter: OpCounter | None) -> None:
        """The update ops alone, with zero gradients (a dropped iteration whose optimizer still steps)."""
        tensors = dict(state.arrays)
        step = Step(self.graph, tensors, self.fmt, counter, seed, lr, self.momentum, self.weight_decay, {})
        for index, (op, layer, kernel) in enumerate(self.handlers):
            if op.phase != "update":
                continue
            for short, shape in layer.params():
                tensors[f"{layer.name}.{short}.grad"] = np.zeros(shape, np.float32)
            kernel(step, op, layer, derive_seed(seed, index))
            if counter is not None:
                counter.ran(op.name)
        for name in state.arrays:
            state.arrays[name] = tensors.get(f"{name}.next", state.arrays[name])

    def predict(self, state: TrainState, images: np.ndarray, counter: OpCounter | None = None,
                approximate: bool = False, seed: int = 0) -> np.ndarray:  # fmt: skip
        """Logits of the forward ops in inference mode (BN with running statistics, the workload's
        formats); with ``counter`` the work is recorded (e.g. a filter network deciding). With
        ``approximate`` conv/linear run on the accelerator's approximate mode (``seed``: its bit errors)."""
        tensors = dict(state.arrays)
        tensors["input.x"] = images
        approx = self.approx if approximate else None
        if approximate and approx is None:
            raise ValueError("this executor has no approximate mode")
        step = Step(self.graph, tensors, self.fmt, counter, seed, 0.0, 0.0, 0.0, {}, approx, training=False)
        hooks = self._open(tensors, counter, seed, training=False)
        for index, (op, layer, kernel) in enumerate(self.handlers):
            if op.phase != "fwd" or layer.kind == "loss":
                continue
            self._run(step, op, layer, kernel, derive_seed(seed, index), hooks)
            if counter is not None:
                counter.ran(op.name)
        return tensors[self.logits]

    @staticmethod
    def _run(step: Step, op: Op, layer: Layer, kernel: Kernel, seed: int, hooks: list[PassHook]) -> None:
        run = partial(kernel, step, op, layer, seed)
        for hook in reversed(hooks):  # the first policy's hook is the outermost
            run = partial(hook.run_op, op, run, step.tensors)
        run()


ENGINE = Engine(GraphExecutor, init_state)


# -- handlers: one per (layer kind, phase) ---------------------------------------------------------------


def _conv_fwd(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    bias = t[op.reads[2]] if layer.bias else None
    t[op.writes[0]] = F.conv2d(t[op.reads[0]], t[op.reads[1]], bias, layer.stride, layer.padding, s.fmt,
                               groups=layer.groups, dilation=layer.dilation, approx=s.approx, counter=s.counter,
                               op=op.name, seed=seed)  # fmt: skip


def _conv_bwd_data(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    dy = t[op.reads[0]]
    shape = (dy.shape[0], *layer.in_shapes[0])
    t[op.writes[0]] = F.conv2d_grad_input(dy, t[op.reads[1]], shape, layer.stride, layer.padding, s.fmt,
                                          groups=layer.groups, dilation=layer.dilation, counter=s.counter,
                                          op=op.name, seed=seed)  # fmt: skip


def _conv_bwd_weight(s: Step, op: Op, layer, seed: int) -> None:
    """The weight gradient of the output channels ``dy`` has (all of them, unless a policy pruned some)."""
    t = s.tensors
    x, dy = t[op.reads[0]], t[op.reads[1]]
    w_shape = (dy.shape[1], *s.graph.tensors[op.writes[0]].shape[1:])
    out = F.conv2d_grad_weight(x, dy, w_shape, layer.stride, layer.padding, s.fmt, groups=layer.groups,
                               dilation=layer.dilation, bias=layer.bias, counter=s.counter, op=op.name,
                               seed=seed)  # fmt: skip
    for name, value in zip(op.writes, out if layer.bias else (out,), strict=True):
        t[name] = value


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def _linear_fwd(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    bias = t[op.reads[2]] if layer.bias else None
    t[op.writes[0]] = F.linear(_flat(t[op.reads[0]]), t[op.reads[1]], bias, s.fmt, approx=s.approx,
                               counter=s.counter, op=op.name, seed=seed)  # fmt: skip


def _linear_bwd_data(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    dx = F.linear_grad_input(t[op.reads[0]], t[op.reads[1]], s.fmt, counter=s.counter, op=op.name, seed=seed)
    t[op.writes[0]] = dx.reshape(dx.shape[0], *s.graph.tensors[op.writes[0]].shape[1:])


def _linear_bwd_weight(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    out = F.linear_grad_weight(_flat(t[op.reads[0]]), t[op.reads[1]], s.fmt, bias=layer.bias, counter=s.counter,
                               op=op.name, seed=seed)  # fmt: skip
    for name, value in zip(op.writes, out if layer.bias else (out,), strict=True):
        t[name] = value


def _update(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    for short, _ in layer.params():
        name = f"{layer.name}.{short}"
        w = t[name].copy()  # the state keeps its arrays until the iteration ends
        velocity = t[f"{name}.momentum"].copy() if s.momentum > 0 else None
        F.sgd_update(w, t[f"{name}.grad"], velocity, s.lr, s.momentum, s.weight_decay, counter=s.counter, op=op.name)
        t[f"{name}.next"] = w
        if velocity is not None:
            t[f"{name}.momentum.next"] = velocity


def _batchnorm_fwd(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    x, gamma, beta, running = (t[n] for n in op.reads)
    if not s.training:
        t[op.writes[0]] = F.batchnorm_eval(x, gamma, beta, running[0], running[1], layer.eps)
        if s.counter is not None:  # inference batch norm: a multiply and an add per element
            s.counter.record(op.name, elementwise_ops=2 * x.size, reads={"x": x.size}, writes={"y": x.size})
        return
    y, mean, inv_std = F.batchnorm(x, gamma, beta, layer.eps, counter=s.counter, op=op.name)
    count = x.size // x.shape[1]
    variance = (1.0 / inv_std.astype(np.float64) ** 2 - layer.eps) * count / max(count - 1, 1)  # unbiased
    new = running.astype(np.float64) * (1 - BN_RUNNING_MOMENTUM) + BN_RUNNING_MOMENTUM * np.stack([mean, variance])
    for name, value in zip(op.writes, (y, mean, inv_std, new.astype(np.float32)), strict=True):
        t[name] = value


def _batchnorm_bwd_data(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    dy, x, gamma, mean, inv_std = (t[n] for n in op.reads)
    weight_op = f"{layer.name}.bwd_weight"
    dx, dgamma, dbeta = F.batchnorm_backward(dy, x, gamma, mean, inv_std, counter=s.counter, op=op.name,
                                             weight_op=weight_op)  # fmt: skip
    t[op.writes[0]] = dx
    s.stash[weight_op] = (dgamma, dbeta)  # one fused kernel computes both gradients


def _batchnorm_bwd_weight(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    if op.name not in s.stash:  # no input gradient needed: compute the parameter gradients alone
        x, dy, mean, inv_std = (t[n] for n in op.reads)
        gamma = t[f"{layer.name}.gamma"]
        _, dgamma, dbeta = F.batchnorm_backward(dy, x, gamma, mean, inv_std, counter=None)
        if s.counter is not None:
            s.counter.record(op.name, elementwise_ops=ew_ops.batchnorm_backward_weight(x.size))
        s.stash[op.name] = (dgamma, dbeta)
    t[op.writes[0]], t[op.writes[1]] = s.stash.pop(op.name)


def _relu_fwd(s: Step, op: Op, layer, seed: int) -> None:
    s.tensors[op.writes[0]] = F.relu(s.tensors[op.reads[0]], counter=s.counter, op=op.name)


def _relu_bwd(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    t[op.writes[0]] = F.relu_backward(t[op.reads[0]], t[op.reads[1]], counter=s.counter, op=op.name)


def _maxpool_fwd(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    y, arg = F.max_pool2d(t[op.reads[0]], layer.kernel, layer.stride, layer.padding, counter=s.counter, op=op.name)
    t[op.writes[0]] = y
    if len(op.writes) > 1:
        t[op.writes[1]] = arg


def _maxpool_bwd(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    dy = t[op.reads[0]]
    shape = (dy.shape[0], *layer.in_shapes[0])
    t[op.writes[0]] = F.max_pool2d_backward(dy, t[op.reads[1]], shape, layer.kernel, layer.stride, layer.padding,
                                            counter=s.counter, op=op.name)  # fmt: skip


def _avgpool_fwd(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    t[op.writes[0]] = F.avg_pool2d(t[op.reads[0]], layer.kernel, layer.stride, layer.padding, counter=s.counter,
                                   op=op.name)  # fmt: skip


def _avgpool_bwd(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    dy = t[op.reads[0]]
    shape = (dy.shape[0], *layer.in_shapes[0])
    t[op.writes[0]] = F.avg_pool2d_backward(dy, shape, layer.kernel, layer.stride, layer.padding, counter=s.counter,
                                            op=op.name)  # fmt: skip


def _gap_fwd(s: Step, op: Op, layer, seed: int) -> None:
    s.tensors[op.writes[0]] = F.global_avg_pool(s.tensors[op.reads[0]], counter=s.counter, op=op.name)


def _gap_bwd(s: Step, op: Op, layer, seed: int) -> None:
    dy = s.tensors[op.reads[0]]
    shape = (dy.shape[0], *layer.in_shapes[0])
    s.tensors[op.writes[0]] = F.global_avg_pool_backward(dy, shape, counter=s.counter, op=op.name)


def _add_fwd(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    t[op.writes[0]] = F.add(t[op.reads[0]], t[op.reads[1]], counter=s.counter, op=op.name)


def _pass_gradient(s: Step, op: Op, layer, seed: int) -> None:
    """Residual add backward: both inputs receive the output gradient itself (no copy, no op)."""
    for name in op.writes:
        s.tensors[name] = s.tensors[op.reads[0]]
    if s.counter is not None:
        s.counter.record(op.name, reads={"dy": s.tensors[op.reads[0]].size})


def _dropout_fwd(s: Step, op: Op, layer, seed: int) -> None:
    """Training: keep each element with probability 1 − p (drawn from the op's seed) and scale the
    kept ones by 1/(1 − p); evaluation: the identity, no work."""
    x = s.tensors[op.reads[0]]
    if not s.training:
        s.tensors[op.writes[0]] = x
        return
    y, mask = F.dropout(x, layer.drop_probability, seed, counter=s.counter, op=op.name)
    s.tensors[op.writes[0]] = y
    if len(op.writes) > 1:
        s.tensors[op.writes[1]] = mask


def _dropout_bwd(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    t[op.writes[0]] = F.dropout_backward(t[op.reads[0]], t[op.reads[1]], layer.drop_probability, counter=s.counter,
                                         op=op.name)  # fmt: skip


def _zero_pad_fwd(s: Step, op: Op, layer, seed: int) -> None:
    x = s.tensors[op.reads[0]]
    n, c = x.shape[:2]
    sub = x[:, :, :: layer.stride, :: layer.stride]
    y = np.zeros((n, layer.out_channels, *sub.shape[2:]), np.float32)
    y[:, :c] = sub
    s.tensors[op.writes[0]] = y
    if s.counter is not None:
        s.counter.record(op.name, reads={"x": sub.size}, writes={"y": y.size})


def _zero_pad_bwd(s: Step, op: Op, layer, seed: int) -> None:
    dy = s.tensors[op.reads[0]]
    c, h, w = layer.in_shapes[0]
    dx = np.zeros((dy.shape[0], c, h, w), np.float32)
    dx[:, :, :: layer.stride, :: layer.stride] = dy[:, :c]
    s.tensors[op.writes[0]] = dx
    if s.counter is not None:
        s.counter.record(op.name, reads={"dy": dy[:, :c].size}, writes={"dx": dx.size})


def _grad_sum(s: Step, op: Op, layer, seed: int) -> None:
    parts = [s.tensors[name] for name in op.reads]
    total = parts[0] + parts[1] if len(parts) > 1 else parts[0].copy()  # one pass, not a copy and an add
    for part in parts[2:]:
        total += part
    s.tensors[op.writes[0]] = total
    if s.counter is not None:
        s.counter.record(op.name, elementwise_ops=(len(parts) - 1) * total.size,
                         reads={"parts": len(parts) * total.size}, writes={"sum": total.size})  # fmt: skip


def _loss_fwd(s: Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    loss, dlogits, probs = F.softmax_cross_entropy(
        t[op.reads[0]],
        t[op.reads[1]],
        sample_weights=t.get("input.weights"),
        counter=s.counter,
        op=op.name,
        backward_op=f"{layer.name}.bwd_data",
        probabilities=True,
    )
    t[op.writes[0]], t[op.writes[1]] = np.float32(loss), probs
    if s.loss_scale != 1.0:
        dlogits = dlogits * np.float32(s.loss_scale)
    s.stash[f"{layer.name}.bwd_data"] = (dlogits,)  # the fused kernel already computed the gradient


def _loss_bwd(s: Step, op: Op, layer, seed: int) -> None:
    (s.tensors[op.writes[0]],) = s.stash.pop(op.name)


_HANDLERS: dict = {
    ("conv", "fwd"): _conv_fwd, ("conv", "bwd_data"): _conv_bwd_data, ("conv", "bwd_weight"): _conv_bwd_weight,
    ("linear", "fwd"): _linear_fwd, ("linear", "bwd_data"): _linear_bwd_data,
    ("linear", "bwd_weight"): _linear_bwd_weight,
    ("batchnorm", "fwd"): _batchnorm_fwd, ("batchnorm", "bwd_data"): _batchnorm_bwd_data,
    ("batchnorm", "bwd_weight"): _batchnorm_bwd_weight,
    ("relu", "fwd"): _relu_fwd, ("relu", "bwd_data"): _relu_bwd,
    ("maxpool", "fwd"): _maxpool_fwd, ("maxpool", "bwd_data"): _maxpool_bwd,
    ("avgpool", "fwd"): _avgpool_fwd, ("avgpool", "bwd_data"): _avgpool_bwd,
    ("global_avgpool", "fwd"): _gap_fwd, ("global_avgpool", "bwd_data"): _gap_bwd,
    ("add", "fwd"): _add_fwd, ("add", "bwd_data"): _pass_gradient,
    ("dropout", "fwd"): _dropout_fwd, ("dropout", "bwd_data"): _dropout_bwd,
    ("zero_pad_shortcut", "fwd"): _zero_pad_fwd, ("zero_pad_shortcut", "bwd_data"): _zero_pad_bwd,
    ("loss", "fwd"): _loss_fwd, ("loss", "bwd_data"): _loss_bwd,
    "grad_sum": _grad_sum,
}  # fmt: skip
for _kind in ("conv", "linear", "batchnorm"):
    _HANDLERS[(_kind, "update")] = _update
