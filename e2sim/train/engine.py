"""Executes a lowered TrainingGraph op by op with the functional kernels: the graph that is priced
is the graph that ran. Every op's work is recorded under its graph name in an OpCounter."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import e2sim.functional as F
from e2sim.config.policy import EmpSpec, PolicySpec, PsgSpec
from e2sim.config.precision import PrecisionSpec
from e2sim.counting import OpCounter
from e2sim.graph import elementwise as ew_ops
from e2sim.graph.ir import Op, TrainingGraph
from e2sim.graph.layers import Layer
from e2sim.numerics.approximate import ApproxDatapath
from e2sim.numerics.quantize import derive_seed
from e2sim.policies.emp import EmpStats, select_channels, selection_ops
from e2sim.policies.psg import PsgStats, psg_weight_gradient
from e2sim.policies.slu import SluRuntime

BN_RUNNING_MOMENTUM = 0.1  # running = (1 - m)·running + m·batch statistic (PyTorch's default)


@dataclass
class TrainState:
    """Everything that persists between iterations: parameters, momentum buffers, BN running
    statistics, by their graph tensor names (``conv1.w``, ``conv1.w.momentum``, ``bn1.running_stats``)."""

    arrays: dict[str, np.ndarray]


def init_state(graph: TrainingGraph, seed: int, policy: PolicySpec | None = None) -> TrainState:
    """He-normal conv weights (fan-in), PyTorch-default linear layers, BN γ = 1 and β = 0, zero
    momentum; with SLU also the gates' parameters and momentum."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    if policy is not None and policy.slu is not None:
        for name, value in SluRuntime(graph, policy.slu).parameters(np.random.default_rng([seed, 1])).items():
            arrays[name] = value
            arrays[f"{name}.momentum"] = np.zeros_like(value)
    for name in sorted(graph.inputs):
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


@dataclass
class _Step:
    """The tensors of one iteration and what the ops need to run."""

    graph: TrainingGraph
    tensors: dict[str, np.ndarray]
    fmt: PrecisionSpec | None
    counter: OpCounter | None
    seed: int
    lr: float
    momentum: float
    weight_decay: float
    stash: dict[str, tuple]
    psg: PsgSpec | None = None
    psg_stats: PsgStats | None = None
    emp: EmpSpec | None = None
    emp_stats: EmpStats | None = None
    approx: ApproxDatapath | None = None  # forward conv/linear on the accelerator's approximate mode
    loss_scale: float = 1.0  # multiplies the loss gradient


def _emp_channels(s: _Step, op: Op, layer) -> np.ndarray | None:
    """The output-error channels EMP keeps for this layer in this iteration (chosen once)."""
    if s.emp is None:
        return None
    key = f"{layer.name}.emp"
    if key not in s.stash:
        w, dy = s.tensors[f"{layer.name}.w"], s.tensors[f"{layer.name}.y.grad"]
        kept = select_channels(w, dy, s.emp)
        s.stash[key] = kept
        s.emp_stats.add(layer.name, kept.size, w.shape[0])
        if s.counter is not None:
            name = f"{layer.name}.emp_select"
            s.counter.record(name, elementwise_ops=selection_ops(w.size, dy.size, w.shape[0]),
                             reads={"w": w.size, "dy": dy.size})  # fmt: skip
            s.counter.ran(name)
    return s.stash[key]


class GraphExecutor:
    """Runs the ops of ``graph`` on a state; the batch may be smaller than the graph's (last batch)."""

    def __init__(self, graph: TrainingGraph, fmt: PrecisionSpec | None, momentum: float, weight_decay: float,
                 policy: PolicySpec | None = None, approx: ApproxDatapath | None = None):  # fmt: skip
        """``approx``: the accelerator's approximate mode; training runs its forward pass on it with
        AxTrain's passive method, and :meth:`predict` on request."""
        self.graph = graph
        self.fmt = fmt
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.psg = policy.psg if policy is not None else None
        self.psg_stats = PsgStats()
        self.emp = policy.emp if policy is not None else None
        self.emp_stats = EmpStats()
        self.slu = SluRuntime(graph, policy.slu) if policy is not None and policy.slu is not None else None
        self.approx = approx
        axtrain = policy.axtrain if policy is not None else None
        self.passive = axtrain is not None and axtrain.passive
        self.radius = axtrain.sensitivity_radius if axtrain is not None else 0.0
        if self.passive and approx is None:
            raise ValueError("AxTrain's passive method needs the accelerator's approximate mode")
        self.layers = {layer.name: layer for layer in graph.model.layers}
        loss = next(op for op in graph.ops if op.layer_kind == "loss" and op.phase == "fwd")
        self.logits, (self.loss, self.probs) = loss.reads[0], loss.writes
        self.handlers: list[tuple[Op, Layer, Callable]] = []
        for op in graph.ops:
            key = "grad_sum" if op.name.endswith(".grad_sum") else (op.layer_kind, op.phase)
            self.handlers.append((op, self.layers[op.layer], _HANDLERS[key]))

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
        approx = self.approx if self.passive else None
        step = _Step(self.graph, tensors, self.fmt, counter, seed, lr, self.momentum, self.weight_decay, {},
                     self.psg, self.psg_stats, self.emp, self.emp_stats, approx, loss_scale)  # fmt: skip
        gates = self.slu.start(tensors, counter, seed, training=True) if self.slu else None
        self._pass(step, seed, gates, updates=False)
        if self.radius > 0:
            self._sharpness_gradients(step, seed)
        self._pass(step, seed, gates, updates=True)
        if gates is not None:
            gates.finish(tensors, lr, self.momentum)
        for name in state.arrays:
            state.arrays[name] = tensors[f"{name}.next"]
        probs = tensors[self.probs]
        picked = probs[np.arange(len(labels)), labels].astype(np.float64)
        self.last_losses = -np.log(np.maximum(picked, 1e-30))
        return float(tensors[self.loss]), int(np.sum(np.argmax(probs, axis=1) == labels))

    def _pass(self, step: _Step, seed: int, gates, updates: bool) -> None:
        """The forward and backward ops (``updates=False``) or the update ops, in graph order (the
        updates write ``.next`` tensors, so running them after every backward op is equivalent)."""
        for index, (op, layer, handler) in enumerate(self.handlers):
            if (op.phase == "update") == updates:
                self._run(step, op, layer, handler, derive_seed(seed, index), gates)
                if step.counter is not None:
                    step.counter.ran(op.name)

    def _sharpness_gradients(self, step: _Step, seed: int) -> None:
        """AxTrain's active method (see AxTrainSpec): replace every gradient by the gradient at the
        conv/linear weights moved by ε = ρ·w²⊙g / ‖w⊙g‖₂ (one more forward and backward pass)."""
        t = step.tensors
        weights = [f"{layer.name}.w" for layer in self.graph.model.layers if layer.kind in ("conv", "linear")]
        norm = np.sqrt(sum(float(np.sum((t[w].astype(np.float64) * t[f"{w}.grad"]) ** 2)) for w in weights))
        if norm == 0 or not np.isfinite(norm):
            return
        moved = dict(t)
        for w in weights:
            moved[w] = (t[w] + self.radius * t[w] * t[w] * t[f"{w}.grad"] / norm).astype(np.float32)
        probe = dataclasses.replace(step, tensors=moved, stash={})
        self._pass(probe, derive_seed(seed, 77), None, updates=False)
        for op, layer, _ in self.handlers:
            if op.phase == "update":
                for short, _ in layer.params():
                    t[f"{layer.name}.{short}.grad"] = moved[f"{layer.name}.{short}.grad"]

    def optimizer_step(self, state: TrainState, lr: float, seed: int, counter: OpCounter | None) -> None:
        """The update ops alone, with zero gradients (a dropped iteration whose optimizer still steps)."""
        tensors = dict(state.arrays)
        step = _Step(self.graph, tensors, self.fmt, counter, seed, lr, self.momentum, self.weight_decay, {})
        for index, (op, layer, handler) in enumerate(self.handlers):
            if op.phase != "update":
                continue
            for short, shape in layer.params():
                tensors[f"{layer.name}.{short}.grad"] = np.zeros(shape, np.float32)
            handler(step, op, layer, derive_seed(seed, index))
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
        step = _Step(self.graph, tensors, self.fmt, counter, seed, 0.0, 0.0, 0.0, {"eval": ()}, approx=approx)
        gates = self.slu.start(tensors, None, 0, training=False) if self.slu else None
        for index, (op, layer, handler) in enumerate(self.handlers):
            if op.phase != "fwd" or layer.kind == "loss":
                continue
            self._run(step, op, layer, handler, derive_seed(seed, index), gates)
            if counter is not None:
                counter.ran(op.name)
        return tensors[self.logits]

    @staticmethod
    def _run(step: _Step, op: Op, layer: Layer, handler: Callable, seed: int, gates) -> None:
        if gates is None:
            handler(step, op, layer, seed)
        else:  # selective layer update: the op runs on the samples its block executes
            gates.run_op(op, lambda: handler(step, op, layer, seed), step.tensors)


# -- handlers: one per (layer kind, phase) ---------------------------------------------------------------


def _conv_fwd(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    bias = t[op.reads[2]] if layer.bias else None
    t[op.writes[0]] = F.conv2d(t[op.reads[0]], t[op.reads[1]], bias, layer.stride, layer.padding, s.fmt,
                               approx=s.approx, counter=s.counter, op=op.name, seed=seed)  # fmt: skip


def _conv_bwd_data(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    dy = t[op.reads[0]]
    shape = (dy.shape[0], *layer.in_shapes[0])
    t[op.writes[0]] = F.conv2d_grad_input(dy, t[op.reads[1]], shape, layer.stride, layer.padding, s.fmt,
                                          channels=_emp_channels(s, op, layer), counter=s.counter, op=op.name,
                                          seed=seed)  # fmt: skip


def _conv_bwd_weight(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    w_shape = s.graph.tensors[op.writes[0]].shape
    channels = _emp_channels(s, op, layer)
    if s.psg is not None:
        out = psg_weight_gradient(t[op.reads[0]], t[op.reads[1]], w_shape, layer.stride, layer.padding, s.fmt, s.psg,
                                  s.psg_stats, layer.bias, s.counter, op.name, seed, layer.name, channels)  # fmt: skip
        for name, value in zip(op.writes, out if layer.bias else (out,), strict=True):
            t[name] = value
        return
    x, dy = t[op.reads[0]], t[op.reads[1]]
    out = F.conv2d_grad_weight(x, dy, w_shape, layer.stride, layer.padding, s.fmt, bias=layer.bias, channels=channels,
                               counter=s.counter, op=op.name, seed=seed)  # fmt: skip
    for name, value in zip(op.writes, out if layer.bias else (out,), strict=True):
        t[name] = value


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def _linear_fwd(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    bias = t[op.reads[2]] if layer.bias else None
    t[op.writes[0]] = F.linear(_flat(t[op.reads[0]]), t[op.reads[1]], bias, s.fmt, approx=s.approx,
                               counter=s.counter, op=op.name, seed=seed)  # fmt: skip


def _linear_bwd_data(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    dx = F.linear_grad_input(t[op.reads[0]], t[op.reads[1]], s.fmt, counter=s.counter, op=op.name, seed=seed)
    t[op.writes[0]] = dx.reshape(dx.shape[0], *s.graph.tensors[op.writes[0]].shape[1:])


def _linear_bwd_weight(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    out = F.linear_grad_weight(_flat(t[op.reads[0]]), t[op.reads[1]], s.fmt, bias=layer.bias, counter=s.counter,
                               op=op.name, seed=seed)  # fmt: skip
    for name, value in zip(op.writes, out if layer.bias else (out,), strict=True):
        t[name] = value


def _update(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    for short, _ in layer.params():
        name = f"{layer.name}.{short}"
        w = t[name].copy()  # the state keeps its arrays until the iteration ends
        velocity = t[f"{name}.momentum"].copy() if s.momentum > 0 else None
        F.sgd_update(w, t[f"{name}.grad"], velocity, s.lr, s.momentum, s.weight_decay, counter=s.counter, op=op.name)
        t[f"{name}.next"] = w
        if velocity is not None:
            t[f"{name}.momentum.next"] = velocity


def _batchnorm_fwd(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    x, gamma, beta, running = (t[n] for n in op.reads)
    if "eval" in s.stash:
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


def _batchnorm_bwd_data(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    dy, x, gamma, mean, inv_std = (t[n] for n in op.reads)
    weight_op = f"{layer.name}.bwd_weight"
    dx, dgamma, dbeta = F.batchnorm_backward(dy, x, gamma, mean, inv_std, counter=s.counter, op=op.name,
                                             weight_op=weight_op)  # fmt: skip
    t[op.writes[0]] = dx
    s.stash[weight_op] = (dgamma, dbeta)  # one fused kernel computes both gradients


def _batchnorm_bwd_weight(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    if op.name not in s.stash:  # no input gradient needed: compute the parameter gradients alone
        x, dy, mean, inv_std = (t[n] for n in op.reads)
        gamma = t[f"{layer.name}.gamma"]
        _, dgamma, dbeta = F.batchnorm_backward(dy, x, gamma, mean, inv_std, counter=None)
        if s.counter is not None:
            s.counter.record(op.name, elementwise_ops=ew_ops.batchnorm_backward_weight(x.size))
        s.stash[op.name] = (dgamma, dbeta)
    t[op.writes[0]], t[op.writes[1]] = s.stash.pop(op.name)


def _relu_fwd(s: _Step, op: Op, layer, seed: int) -> None:
    s.tensors[op.writes[0]] = F.relu(s.tensors[op.reads[0]], counter=s.counter, op=op.name)


def _relu_bwd(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    t[op.writes[0]] = F.relu_backward(t[op.reads[0]], t[op.reads[1]], counter=s.counter, op=op.name)


def _maxpool_fwd(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    y, arg = F.max_pool2d(t[op.reads[0]], layer.kernel, layer.stride, layer.padding, counter=s.counter, op=op.name)
    t[op.writes[0]] = y
    if len(op.writes) > 1:
        t[op.writes[1]] = arg


def _maxpool_bwd(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    dy = t[op.reads[0]]
    shape = (dy.shape[0], *layer.in_shapes[0])
    t[op.writes[0]] = F.max_pool2d_backward(dy, t[op.reads[1]], shape, layer.kernel, layer.stride, layer.padding,
                                            counter=s.counter, op=op.name)  # fmt: skip


def _avgpool_fwd(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    t[op.writes[0]] = F.avg_pool2d(t[op.reads[0]], layer.kernel, layer.stride, layer.padding, counter=s.counter,
                                   op=op.name)  # fmt: skip


def _avgpool_bwd(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    dy = t[op.reads[0]]
    shape = (dy.shape[0], *layer.in_shapes[0])
    t[op.writes[0]] = F.avg_pool2d_backward(dy, shape, layer.kernel, layer.stride, layer.padding, counter=s.counter,
                                            op=op.name)  # fmt: skip


def _gap_fwd(s: _Step, op: Op, layer, seed: int) -> None:
    s.tensors[op.writes[0]] = F.global_avg_pool(s.tensors[op.reads[0]], counter=s.counter, op=op.name)


def _gap_bwd(s: _Step, op: Op, layer, seed: int) -> None:
    dy = s.tensors[op.reads[0]]
    shape = (dy.shape[0], *layer.in_shapes[0])
    s.tensors[op.writes[0]] = F.global_avg_pool_backward(dy, shape, counter=s.counter, op=op.name)


def _add_fwd(s: _Step, op: Op, layer, seed: int) -> None:
    t = s.tensors
    t[op.writes[0]] = F.add(t[op.reads[0]], t[op.reads[1]], counter=s.counter, op=op.name)


def _pass_gradient(s: _Step, op: Op, layer, seed: int) -> None:
    """Residual add backward: both inputs receive the output gradient itself (no copy, no op)."""
    for name in op.writes:
        s.tensors[name] = s.tensors[op.reads[0]]
    if s.counter is not None:
        s.counter.record(op.name, reads={"dy": s.tensors[op.reads[0]].size})


def _zero_pad_fwd(s: _Step, op: Op, layer, seed: int) -> None:
    x = s.tensors[op.reads[0]]
    n, c = x.shape[:2]
    sub = x[:, :, :: layer.stride, :: layer.stride]
    y = np.zeros((n, layer.out_channels, *sub.shape[2:]), np.float32)
    y[:, :c] = sub
    s.tensors[op.writes[0]] = y
    if s.counter is not None:
        s.counter.record(op.name, reads={"x": sub.size}, writes={"y": y.size})


def _zero_pad_bwd(s: _Step, op: Op, layer, seed: int) -> None:
    dy = s.tensors[op.reads[0]]
    c, h, w = layer.in_shapes[0]
    dx = np.zeros((dy.shape[0], c, h, w), np.float32)
    dx[:, :, :: layer.stride, :: layer.stride] = dy[:, :c]
    s.tensors[op.writes[0]] = dx
    if s.counter is not None:
        s.counter.record(op.name, reads={"dy": dy[:, :c].size}, writes={"dx": dx.size})


def _grad_sum(s: _Step, op: Op, layer, seed: int) -> None:
    parts = [s.tensors[name] for name in op.reads]
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    s.tensors[op.writes[0]] = total
    if s.counter is not None:
        s.counter.record(op.name, elementwise_ops=(len(parts) - 1) * total.size,
                         reads={"parts": len(parts) * total.size}, writes={"sum": total.size})  # fmt: skip


def _loss_fwd(s: _Step, op: Op, layer, seed: int) -> None:
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


def _loss_bwd(s: _Step, op: Op, layer, seed: int) -> None:
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
    ("zero_pad_shortcut", "fwd"): _zero_pad_fwd, ("zero_pad_shortcut", "bwd_data"): _zero_pad_bwd,
    ("loss", "fwd"): _loss_fwd, ("loss", "bwd_data"): _loss_bwd,
    "grad_sum": _grad_sum,
}  # fmt: skip
for _kind in ("conv", "linear", "batchnorm"):
    _HANDLERS[(_kind, "update")] = _update
