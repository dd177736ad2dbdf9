"""Lowering: a workload's model at a batch size -> the ops and tensors of one training iteration.

Execution order: forward ops in layer order; backward ops in reverse layer order (a layer's
gradient sum first, then its ``bwd_data``, then its ``bwd_weight``); ``update`` ops in layer order.
A tensor read by more than one layer on the backward path gets one partial gradient per consumer
(``T.grad@consumer``) and a ``grad_sum`` op (phase ``bwd_data``) that adds them into ``T.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from e2sim.config.frozen import FrozenDict
from e2sim.config.workload import Workload
from e2sim.graph import elementwise as ew_ops
from e2sim.graph.invariants import GraphError, verify
from e2sim.graph.ir import ConvShape, GemmShape, GraphExtension, Op, Tensor, TrainingGraph, build_dag
from e2sim.graph.layers import INPUT, Layer
from e2sim.graph.models import Model, build_model

# Tensor role -> precision field that gives its number format (label and index widths are derived).
ROLE_FORMATS = FrozenDict(
    {
        "input": "activations",
        "activation": "activations",
        "weight": "weights",
        "bias": "accumulator",
        "stats": "accumulator",
        "loss": "accumulator",
        "error": "errors",
        "weight_grad": "gradients",
        "momentum": "gradients",
    }
)


Extension = Callable[[TrainingGraph], GraphExtension | None]


def lower(workload: Workload, batch_size: int | None = None, check: bool = True,
          extensions: Sequence[Extension] = (), model: Model | None = None) -> TrainingGraph:  # fmt: skip
    """Lower one training iteration of ``workload`` at ``batch_size`` (default: the workload's),
    with the ops each of ``extensions`` (a policy's hook) adds; ``model``: already built."""
    batch = workload.training.batch_size if batch_size is None else batch_size
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise ValueError(f"batch size must be a positive integer, got {batch!r}")
    return lower_model(workload, build_model(workload) if model is None else model, batch, check, extensions)


def lower_model(workload: Workload, model: Model, batch: int, check: bool = True,
                extensions: Sequence[Extension] = ()) -> TrainingGraph:  # fmt: skip
    """Lower ``model`` with the workload's precision and optimizer (e.g. a policy's own network);
    each extension sees the model's graph and adds its ops; the whole is verified once."""
    graph = _Lowering(workload, model, batch).run()
    added = [e for e in (extend(graph) for extend in extensions) if e is not None]
    if added:
        graph = extend_graph(graph, added)
    if check:
        verify(graph)
    return graph


def extend_graph(graph: TrainingGraph, extensions: Sequence[GraphExtension]) -> TrainingGraph:
    """``graph`` with the extensions' ops: every ``before`` in extension order ahead of the model's
    ops, every ``after`` behind them."""
    tensors, inputs = dict(graph.tensors), set(graph.inputs)
    contributed, optional = dict(graph.contributed), set(graph.optional)
    for e in extensions:
        for name, t in e.tensors.items():
            if name in tensors and tensors[name].shape != t.shape:
                raise GraphError(f"{graph.workload}: policy {e.source} adds tensor {name} of shape {t.shape}, "
                                 f"the graph has it as {tensors[name].shape}")  # fmt: skip
            tensors.setdefault(name, t)
        inputs |= e.state
        contributed.update({op.name: e.source for op in e.before + e.after})
        optional |= e.optional
    ops = (*(op for e in extensions for op in e.before), *graph.ops, *(op for e in extensions for op in e.after))
    frozen = FrozenDict(tensors)
    return TrainingGraph(graph.workload, graph.batch_size, graph.model, ops, frozen, build_dag(ops, frozen),
                         frozenset(inputs), FrozenDict(contributed), frozenset(optional))  # fmt: skip


class _Lowering:
    def __init__(self, workload: Workload, model: Model, batch: int):
        self.workload = workload
        self.model = model
        self.n = batch
        self.tensors: dict[str, Tensor] = {}
        self.inputs: list[str] = []
        self.fwd: list[Op] = []
        self.bwd: dict[str, list[Op]] = {layer.name: [] for layer in model.layers}
        self.update: list[Op] = []
        precision = workload.precision
        self.bits = {role: getattr(precision, field).bits for role, field in ROLE_FORMATS.items()}
        self.bits["label"] = max(1, math.ceil(math.log2(model.num_classes)))
        self.momentum = workload.training.momentum > 0
        # Flatten is a view: map every layer name to the layer whose output tensor it stands for.
        self.source = {INPUT: INPUT}
        for layer in model.layers:
            self.source[layer.name] = self.source[layer.inputs[0]] if layer.kind == "flatten" else layer.name
        self.needs_grad = {INPUT: False}
        self.grad_consumers: dict[str, list[str]] = {}
        for layer in model.layers:
            srcs = [self.source[i] for i in layer.inputs]
            self.needs_grad[layer.name] = layer.trainable or any(self.needs_grad[s] for s in srcs)
            if layer.kind != "flatten":
                for s in srcs:
                    if self.needs_grad[s]:
                        self.grad_consumers.setdefault(s, []).append(layer.name)

    # -- tensors -----------------------------------------------------------------------------------
    def tensor(self, name: str, layer: str, role: str, shape: tuple[int, ...], bits: int | None = None,
               alias_of: str | None = None) -> str:  # fmt: skip
        self.tensors[name] = Tensor(name, layer, role, shape, self.bits[role] if bits is None else bits, alias_of)
        return name

    def out(self, source: str) -> str:
        """Name of the output tensor of the layer ``source`` (already resolved through flatten)."""
        return "input.x" if source == INPUT else f"{source}.y"

    def x(self, layer: Layer, i: int = 0) -> str:
        return self.out(self.source[layer.inputs[i]])

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.tensors[tensor].shape

    def grad_target(self, layer: Layer, i: int) -> str | None:
        """The gradient tensor ``layer``'s bwd_data writes for input ``i`` (None: input needs none)."""
        src = self.source[layer.inputs[i]]
        if not self.needs_grad[src]:
            return None
        primal = self.out(src)
        single = len(self.grad_consumers[src]) == 1
        return f"{primal}.grad" if single else f"{primal}.grad@{layer.name}"

    def error(self, name: str, layer: str, primal: str, alias_of: str | None = None) -> str:
        return self.tensor(name, layer, "error", self.shape(primal), alias_of=alias_of)

    def op(self, layer: Layer, phase: str, kind: str, reads, writes, macs=0, ew=0, elements=0,
           conv=None, gemm=None) -> None:  # fmt: skip
        name = f"{layer.name}.{phase}"
        op = Op(name, layer.name, layer.kind, phase, kind, tuple(reads), tuple(writes), macs, ew, elements, conv, gemm)
        if phase == "fwd":
            self.fwd.append(op)
        elif phase == "update":
            self.update.append(op)
        else:
            self.bwd[layer.name].append(op)

    def params(self, layer: Layer) -> dict[str, str]:
        names = {}
        for short, shape in layer.params():
            role = "bias" if short == "b" else "weight"  # BN's gamma and beta are weights
            names[short] = self.tensor(f"{layer.name}.{short}", layer.name, role, shape)
            self.inputs.append(names[short])
        return names

    def update_op(self, layer: Layer, params: dict[str, str]) -> None:
        reads, writes = [], []
        for p in params.values():
            role = self.tensors[p].role
            grad = f"{p}.grad"
            reads += [p, grad]
            writes.append(self.tensor(f"{p}.next", layer.name, role, self.shape(p)))
            if self.momentum:
                v = self.tensor(f"{p}.momentum", layer.name, "momentum", self.shape(p))
                self.inputs.append(v)
                reads.append(v)
                writes.append(self.tensor(f"{v}.next", layer.name, "momentum", self.shape(p)))
        count = sum(self.tensors[p].numel for p in params.values())
        training = self.workload.training
        ops = ew_ops.sgd_step(count, training.momentum, training.weight_decay)
        self.op(layer, "update", "vector", reads, writes, ew=ops, elements=count)

    # -- the iteration -----------------------------------------------------------------------------
    def run(self) -> TrainingGraph:
        self.inputs.append(self.tensor("input.x", INPUT, "input", (self.n, *self.model.input_shape)))
        self.inputs.append(self.tensor("input.labels", INPUT, "label", (self.n,)))
        for layer in self.model.layers:
            if layer.kind != "flatten":
                _LOWER[layer.kind](self, layer)
        self.add_grad_sums()
        backward = [op for layer in reversed(self.model.layers) for op in self.bwd[layer.name]]
        ops = tuple(self.fwd + backward + self.update)
        tensors = FrozenDict(self.resolve_aliases())
        return TrainingGraph(
            self.workload.name, self.n, self.model, ops, tensors, build_dag(ops, tensors), frozenset(self.inputs)
        )

    def resolve_aliases(self) -> dict[str, Tensor]:
        """Point every alias at the tensor that owns the storage (aliases of aliases collapse)."""
        tensors = dict(self.tensors)
        for name, t in tensors.items():
            root = t.alias_of
            while root is not None and self.tensors[root].alias_of is not None:
                root = self.tensors[root].alias_of
            if root != t.alias_of:
                tensors[name] = replace(t, alias_of=root)
        return tensors

    def add_grad_sums(self) -> None:
        for src, consumers in self.grad_consumers.items():
            if len(consumers) < 2:
                continue
            primal = self.out(src)
            layer = self.model.layer(src)
            parts = [f"{primal}.grad@{c}" for c in consumers]
            total = self.error(f"{primal}.grad", src, primal)
            size = self.tensors[primal].numel
            op = Op(f"{src}.grad_sum", src, layer.kind, "bwd_data", "vector", tuple(parts), (total,), 0,
                    (len(parts) - 1) * size, size)  # fmt: skip
            self.bwd[src].insert(0, op)


def _lower_conv(g: _Lowering, layer) -> None:
    x, n = g.x(layer), g.n
    c, h, w = layer.in_shapes[0]
    k, p, q = layer.out_shape
    r, s = layer.kernel
    groups = layer.groups
    geometry = ConvShape(n, k, c, h, w, p, q, r, s, layer.stride, *layer.padding, groups, layer.dilation)
    macs = geometry.macs
    kg, cg = k // groups, c // groups  # each group's GEMMs
    params = g.params(layer)
    y = g.tensor(f"{layer.name}.y", layer.name, "activation", (n, k, p, q))
    bias_ops = n * k * p * q if layer.bias else 0
    g.op(layer, "fwd", "conv", [x, *params.values()], [y], macs, bias_ops, n * k * p * q, geometry,
         GemmShape(n * p * q, kg, cg * r * s, groups))  # fmt: skip
    dy = f"{y}.grad"
    if dx := g.grad_target(layer, 0):
        g.error(dx, layer.name, x)
        g.op(layer, "bwd_data", "conv", [dy, params["w"]], [dx], macs, 0, n * c * h * w, geometry,
             GemmShape(n * p * q, cg * r * s, kg, groups))  # fmt: skip
    grads = [g.tensor(f"{t}.grad", layer.name, "weight_grad", g.shape(t)) for t in params.values()]
    g.op(layer, "bwd_weight", "conv", [x, dy], grads, macs, bias_ops, k * cg * r * s, geometry,
         GemmShape(kg, cg * r * s, n * p * q, groups))  # fmt: skip
    g.update_op(layer, params)


def _lower_linear(g: _Lowering, layer) -> None:
    x, n = g.x(layer), g.n
    f_in, f_out = layer.in_features, layer.out_features
    macs = n * f_in * f_out
    params = g.params(layer)
    y = g.tensor(f"{layer.name}.y", layer.name, "activation", (n, f_out))
    bias_ops = n * f_out if layer.bias else 0
    g.op(layer, "fwd", "gemm", [x, *params.values()], [y], macs, bias_ops, n * f_out, gemm=GemmShape(n, f_out, f_in))
    dy = f"{y}.grad"
    if dx := g.grad_target(layer, 0):
        g.error(dx, layer.name, x)
        g.op(layer, "bwd_data", "gemm", [dy, params["w"]], [dx], macs, 0, n * f_in, gemm=GemmShape(n, f_in, f_out))
    grads = [g.tensor(f"{t}.grad", layer.name, "weight_grad", g.shape(t)) for t in params.values()]
    g.op(layer, "bwd_weight", "gemm", [x, dy], grads, macs, bias_ops, f_out * f_in, gemm=GemmShape(f_out, f_in, n))
    g.update_op(layer, params)


def _lower_batchnorm(g: _Lowering, layer) -> None:
    x = g.x(layer)
    size, channels = g.tensors[x].numel, layer.channels
    params = g.params(layer)
    stats = [g.tensor(f"{layer.name}.{s}", layer.name, "stats", (channels,)) for s in ("mean", "inv_std")]
    running = g.tensor(f"{layer.name}.running_stats", layer.name, "stats", (2, channels))
    g.inputs.append(running)
    running_next = g.tensor(f"{running}.next", layer.name, "stats", (2, channels))
    y = g.tensor(f"{layer.name}.y", layer.name, "activation", g.shape(x))
    ew = ew_ops.batchnorm_forward(size, channels)
    g.op(layer, "fwd", "vector", [x, *params.values(), running], [y, *stats, running_next], ew=ew, elements=size)
    dy = f"{y}.grad"
    if dx := g.grad_target(layer, 0):
        g.error(dx, layer.name, x)
        g.op(layer, "bwd_data", "vector", [dy, x, params["gamma"], *stats], [dx],
             ew=ew_ops.batchnorm_backward_data(size), elements=size)  # fmt: skip
    grads = [g.tensor(f"{t}.grad", layer.name, "weight_grad", (channels,)) for t in params.values()]
    g.op(
        layer, "bwd_weight", "vector", [x, dy, *stats], grads, ew=ew_ops.batchnorm_backward_weight(size), elements=size
    )
    g.update_op(layer, params)


def _lower_relu(g: _Lowering, layer) -> None:
    x = g.x(layer)
    size = g.tensors[x].numel
    y = g.tensor(f"{layer.name}.y", layer.name, "activation", g.shape(x))
    g.op(layer, "fwd", "vector", [x], [y], ew=size, elements=size)
    if dx := g.grad_target(layer, 0):
        g.error(dx, layer.name, x)
        g.op(layer, "bwd_data", "vector", [f"{y}.grad", y], [dx], ew=size, elements=size)


def _lower_pool(g: _Lowering, layer) -> None:
    """Max/avg pooling over R×S windows, and global average pooling (one window per channel)."""
    x, n = g.x(layer), g.n
    if layer.kind == "global_avgpool":
        window = layer.in_shapes[0][1] * layer.in_shapes[0][2]
    else:
        window = layer.kernel[0] * layer.kernel[1]
    y = g.tensor(f"{layer.name}.y", layer.name, "activation", (n, *layer.out_shape))
    out = g.tensors[y].numel
    dx = g.grad_target(layer, 0)
    reads_back = [f"{y}.grad"]
    writes = [y]
    if layer.kind == "maxpool":
        if dx:  # the argmax is saved only for a backward pass that reads it
            index_bits = max(1, math.ceil(math.log2(window)))
            writes.append(g.tensor(f"{layer.name}.argmax", layer.name, "index", g.shape(y), bits=index_bits))
            reads_back.append(writes[-1])
        fwd_ops, bwd_ops = ew_ops.maxpool_forward(out, window), ew_ops.maxpool_backward(out)
    else:
        fwd_ops = bwd_ops = ew_ops.avgpool(out, window)
    g.op(layer, "fwd", "vector", [x], writes, ew=fwd_ops, elements=out)
    if dx:
        g.error(dx, layer.name, x)
        g.op(layer, "bwd_data", "vector", reads_back, [dx], ew=bwd_ops, elements=g.tensors[x].numel)


def _lower_dropout(g: _Lowering, layer) -> None:
    """Inverted dropout: the forward op draws a keep mask (one bit per element, saved for the
    backward op) and scales the kept elements; the backward op masks and scales the error."""
    x = g.x(layer)
    size = g.tensors[x].numel
    y = g.tensor(f"{layer.name}.y", layer.name, "activation", g.shape(x))
    dx = g.grad_target(layer, 0)
    writes = [y]
    if dx:
        writes.append(g.tensor(f"{layer.name}.mask", layer.name, "index", g.shape(x), bits=1))
    g.op(layer, "fwd", "vector", [x], writes, ew=ew_ops.dropout_forward(size), elements=size)
    if dx:
        g.error(dx, layer.name, x)
        g.op(layer, "bwd_data", "vector", [f"{y}.grad", writes[1]], [dx], ew=ew_ops.dropout_backward(size),
             elements=size)  # fmt: skip


def _lower_add(g: _Lowering, layer) -> None:
    a, b = g.x(layer, 0), g.x(layer, 1)
    size = g.tensors[a].numel
    y = g.tensor(f"{layer.name}.y", layer.name, "activation", g.shape(a))
    g.op(layer, "fwd", "vector", [a, b], [y], ew=size, elements=size)
    dy = f"{y}.grad"
    targets = [(t, g.grad_target(layer, i)) for i, t in enumerate((a, b))]
    grads = [g.error(dx, layer.name, primal, alias_of=dy) for primal, dx in targets if dx]
    if grads:  # the gradient passes through unchanged to both inputs: no arithmetic, no copy
        g.op(layer, "bwd_data", "move", [dy], grads, elements=size)


def _lower_zero_pad_shortcut(g: _Lowering, layer) -> None:
    x, n = g.x(layer), g.n
    y = g.tensor(f"{layer.name}.y", layer.name, "activation", (n, *layer.out_shape))
    g.op(layer, "fwd", "move", [x], [y], elements=g.tensors[y].numel)
    if dx := g.grad_target(layer, 0):
        g.error(dx, layer.name, x)
        g.op(layer, "bwd_data", "move", [f"{y}.grad"], [dx], elements=g.tensors[x].numel)


def _lower_loss(g: _Lowering, layer) -> None:
    logits, n = g.x(layer), g.n
    size = g.tensors[logits].numel
    loss = g.tensor(f"{layer.name}.y", layer.name, "loss", ())
    probs = g.tensor(f"{layer.name}.probs", layer.name, "activation", g.shape(logits))
    ew = ew_ops.softmax_cross_entropy_forward(size, n)
    g.op(layer, "fwd", "vector", [logits, "input.labels"], [loss, probs], ew=ew, elements=size)
    if dx := g.grad_target(layer, 0):
        g.error(dx, layer.name, logits)
        g.op(layer, "bwd_data", "vector", [probs, "input.labels"], [dx], ew=ew_ops.softmax_cross_entropy_backward(size),
             elements=size)  # fmt: skip


_LOWER = {
    "conv": _lower_conv,
    "linear": _lower_linear,
    "batchnorm": _lower_batchnorm,
    "relu": _lower_relu,
    "maxpool": _lower_pool,
    "avgpool": _lower_pool,
    "global_avgpool": _lower_pool,
    "add": _lower_add,
    "dropout": _lower_dropout,
    "zero_pad_shortcut": _lower_zero_pad_shortcut,
    "loss": _lower_loss,
}
