"""ONNX models as e2sim layer lists (``model: {onnx: PATH}`` in a workload).

The graph is walked from its data input: Conv, BatchNormalization, Relu, MaxPool, AveragePool,
GlobalAveragePool, Flatten/Reshape (as flatten), Gemm and MatMul (+ a bias Add), Dropout become
e2sim layers (Conv with its groups and dilation); a fork whose branches meet again in an Add
becomes a ``residual`` (the longer branch its body, the other its shortcut, empty for an
identity); a trailing Softmax is dropped (the loss applies it). Anything else — an op e2sim does
not have, unequal strides or dilations, asymmetric padding, ceil-mode or dilated pooling, an
AveragePool without padding in its count, Flatten at an axis other than 1, a Reshape other than
to (batch, features) — is a one-line error naming the node, its op type and its inputs. Needs the
``onnx`` package (``pip install ".[onnx]"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2sim.config.errors import SpecError

IGNORED = ("Identity",)
INIT = "_initializers"  # a converted layer's parameters: e2sim's short name -> ONNX initializer
TRAILING = ("Softmax", "LogSoftmax")


class _Graph:
    def __init__(self, model: Any, source: str):
        from onnx import numpy_helper

        graph = model.graph
        self.source = source
        self.shapes = {i.name: tuple(i.dims) for i in graph.initializer}
        self.values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        inputs = [i for i in graph.input if i.name not in self.shapes]
        if len(inputs) != 1:
            self.fail("graph.input", f"needs one data input, found {len(inputs)}: {[i.name for i in inputs]}")
        self.input = inputs[0]

    def fail(self, where: str, message: str) -> None:
        raise SpecError.single(self.source, where, message)

    def fail_node(self, node: Any, message: str) -> None:
        self.fail(f"node {node.name or node.output[0]}", f"{node.op_type} (inputs {', '.join(node.input)}): {message}")


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def read_onnx_layers(path: Path, source: str, input_shape: tuple[int, int, int]) -> list[dict[str, Any]]:
    """The ``model.layers`` documents of the ONNX model at ``path`` for inputs of ``input_shape``
    (channels, height, width: the dataset's); ``source`` names the workload in errors."""
    layers, _ = _convert_model(path, source, input_shape)
    return [_without_initializers(layer) for layer in layers]


def read_onnx_parameters(path: Path, source: str, input_shape: tuple[int, int, int],
                         trainable: list[tuple[str, str]]) -> dict[str, Any]:  # fmt: skip
    """The ONNX model's initializers as e2sim's initial state: for the model's trainable layers
    ``trainable`` ((name, kind) in build order: conv, linear, batchnorm), arrays by graph tensor
    name (``conv1.w``, ``fc1.b``, ``bn1.gamma``, ``bn1.running_stats``); float32, linear weights
    as (out, in)."""
    import numpy as np

    layers, graph = _convert_model(path, source, input_shape)
    found = [layer for layer in _walk(layers) if INIT in layer]
    if [layer["type"] for layer in found] != [kind for _, kind in trainable]:
        graph.fail("graph", "its trainable layers do not match the model built from it")
    arrays: dict[str, Any] = {}
    for (name, kind), layer in zip(trainable, found, strict=True):
        values = {short: graph.values[init] for short, init in layer[INIT].items()}
        if kind == "batchnorm":
            arrays[f"{name}.running_stats"] = np.stack([values.pop("mean"), values.pop("var")])
        if "w.T" in values:
            values["w"] = values.pop("w.T").T
        for short, value in values.items():
            arrays[f"{name}.{short}"] = np.ascontiguousarray(value, dtype=np.float32)
    return arrays


def _walk(layers: list[dict[str, Any]]):
    """Layer documents in the order the model builder appends them (a residual's body, then its shortcut)."""
    for layer in layers:
        yield layer
        yield from _walk(layer.get("body", []))
        yield from _walk(layer.get("shortcut", []))


def _without_initializers(layer: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in layer.items() if k != INIT}
    for key in ("body", "shortcut"):
        if key in out:
            out[key] = [_without_initializers(x) for x in out[key]]
    return out


def _convert_model(path: Path, source: str, input_shape: tuple[int, int, int]) -> tuple[list[dict[str, Any]], _Graph]:
    try:
        import onnx
    except ImportError:
        raise SpecError.single(source, "model.onnx", 'needs the onnx package: pip install ".[onnx]"') from None
    where = f"{source}: model.onnx ({path})"
    if not path.exists():
        raise SpecError.single(source, "model.onnx", f"no such file: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise SpecError.single(source, "model.onnx", f"{path} cannot be read as an ONNX model "
                               f"({type(exc).__name__})") from None  # fmt: skip
    graph = _Graph(model, where)
    dims = graph.input.type.tensor_type.shape.dim
    if len(dims) != 4:
        graph.fail("graph.input", f"must be N x C x H x W, has {len(dims)} dimensions")
    for axis, (dim, wanted) in enumerate(zip(list(dims)[1:], input_shape, strict=True)):
        if dim.HasField("dim_value") and dim.dim_value != wanted:
            graph.fail("graph.input", f"dimension {axis + 1} is {dim.dim_value}, the dataset's inputs have {wanted}")
        if not dim.HasField("dim_value") and axis == 0:
            graph.fail("graph.input", "the channel dimension must be fixed")
    layers, end, join = _chain(graph, graph.input.name)
    if join is not None:
        graph.fail_node(join, "an Add whose inputs do not fork from one tensor")
    if not layers or layers[-1]["type"] != "linear":
        graph.fail("graph.output", "the model must end with its classifier (Gemm or MatMul)")
    return layers, graph


def _chain(graph: _Graph, tensor: str) -> tuple[list[dict[str, Any]], str, Any]:
    """Layers from ``tensor`` until the graph's end or a residual Add (returned as the third item)."""
    layers: list[dict[str, Any]] = []
    while True:
        consumers = graph.consumers.get(tensor, [])
        if not consumers:
            return layers, tensor, None
        if len(consumers) == 1:
            node = consumers[0]
            if _is_residual_add(graph, node):
                return layers, tensor, node
            layer, tensor = _convert(graph, node)
            if layer is not None:
                layers.append(layer)
            continue
        if len(consumers) != 2:
            graph.fail_node(consumers[0], f"its input {tensor} feeds {len(consumers)} nodes (a residual fork has 2)")
        branches = [_branch(graph, node) for node in consumers]
        (first, first_join), (second, second_join) = branches
        if first_join is None or first_join is not second_join:
            graph.fail_node(consumers[0], "a fork whose branches do not meet in one Add")
        body, shortcut = (first, second) if _size(first) >= _size(second) else (second, first)  # the longer is the body
        layers.append({"type": "residual", "body": body, **({"shortcut": shortcut} if shortcut else {})})
        tensor = first_join.output[0]


def _branch(graph: _Graph, node: Any) -> tuple[list[dict[str, Any]], Any]:
    if _is_residual_add(graph, node):
        return [], node
    layer, tensor = _convert(graph, node)
    rest, _, join = _chain(graph, tensor)
    return ([layer] if layer is not None else []) + rest, join


def _size(layers: list[dict[str, Any]]) -> int:
    return sum(1 for _ in _walk(layers))


def _is_residual_add(graph: _Graph, node: Any) -> bool:
    return node.op_type == "Add" and len(node.input) == 2 and not any(i in graph.shapes for i in node.input)


def _convert(graph: _Graph, node: Any) -> tuple[dict[str, Any] | None, str]:
    """One node as an e2sim layer (None for a node that computes nothing) and its output tensor."""
    op, attrs, out = node.op_type, _attrs(node), node.output[0]
    if op in IGNORED:
        return None, out
    if op in TRAILING:
        if graph.consumers.get(out):
            graph.fail_node(node, "a softmax inside the network is not supported (only as the last node)")
        return None, out
    if op == "Conv":
        weight = graph.shapes.get(node.input[1])
        if weight is None or len(weight) != 4:
            graph.fail_node(node, "needs a 4-D weight initializer")
        dilations = list(attrs.get("dilations", [1, 1]))
        if len(set(dilations)) != 1:
            graph.fail_node(node, f"dilations {dilations}: only equal dilations are supported")
        bias = len(node.input) > 2 and bool(node.input[2])
        return {"type": "conv", "out_channels": int(weight[0]), "kernel": [int(weight[2]), int(weight[3])],
                "stride": _stride(graph, node, attrs), "padding": _padding(graph, node, attrs), "bias": bias,
                "groups": int(attrs.get("group", 1)), "dilation": int(dilations[0]),
                INIT: {"w": node.input[1], **({"b": node.input[2]} if bias else {})}}, out  # fmt: skip
    if op == "Dropout":
        return {"type": "dropout", "drop_probability": _dropout_ratio(graph, node, attrs)}, out
    if op == "BatchNormalization":
        if len(node.input) != 5 or any(name not in graph.shapes for name in node.input[1:]):
            graph.fail_node(node, "needs scale, bias, mean and variance initializers")
        names = dict(zip(("gamma", "beta", "mean", "var"), node.input[1:], strict=True))
        return {"type": "batchnorm", "eps": float(attrs.get("epsilon", 1e-5)), INIT: names}, out
    if op == "Relu":
        return {"type": "relu"}, out
    if op in ("MaxPool", "AveragePool"):
        kernel = [int(k) for k in attrs["kernel_shape"]]
        padding = _padding(graph, node, attrs)
        if attrs.get("ceil_mode", 0):
            graph.fail_node(node, "ceil_mode=1 is not supported (e2sim's pooling windows round down)")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            graph.fail_node(node, "dilated pooling is not supported")
        if op == "AveragePool" and any(padding) and not attrs.get("count_include_pad", 0):
            graph.fail_node(node, "count_include_pad=0 with padding is not supported (e2sim divides by the whole "
                            "window)")  # fmt: skip
        return {"type": "maxpool" if op == "MaxPool" else "avgpool", "kernel": kernel,
                "stride": _stride(graph, node, attrs), "padding": padding}, out  # fmt: skip
    if op == "GlobalAveragePool":
        return {"type": "global_avgpool"}, out
    if op == "Flatten":
        if attrs.get("axis", 1) != 1:
            graph.fail_node(node, f"axis {attrs['axis']}: only Flatten(axis=1) (keep the batch) is supported")
        return {"type": "flatten"}, out
    if op == "Reshape":
        shape = graph.values.get(node.input[1]) if len(node.input) > 1 else None
        if shape is None or shape.size != 2:
            graph.fail_node(node, "only a Reshape to (batch, features) by a constant shape is supported (as flatten)")
        return {"type": "flatten"}, out
    if op == "Gemm":
        weight = graph.shapes.get(node.input[1])
        if weight is None or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            graph.fail_node(node, "only Gemm(x, W[, b]) with a weight initializer, transA 0, alpha and beta 1")
        transposed = bool(attrs.get("transB", 0))
        features = weight[0] if transposed else weight[1]
        bias = len(node.input) > 2 and bool(node.input[2])
        names = {("w" if transposed else "w.T"): node.input[1], **({"b": node.input[2]} if bias else {})}
        return {"type": "linear", "out_features": int(features), "bias": bias, INIT: names}, out
    if op == "MatMul":
        weight = graph.shapes.get(node.input[1])
        if weight is None or len(weight) != 2:
            graph.fail_node(node, "only MatMul(x, W) with a 2-D weight initializer")
        after = graph.consumers.get(out, [])
        if len(after) == 1 and after[0].op_type == "Add" and any(i in graph.shapes for i in after[0].input):
            bias = next(i for i in after[0].input if i in graph.shapes)
            return {"type": "linear", "out_features": int(weight[1]), "bias": True,
                    INIT: {"w.T": node.input[1], "b": bias}}, after[0].output[0]  # fmt: skip
        return {"type": "linear", "out_features": int(weight[1]), "bias": False, INIT: {"w.T": node.input[1]}}, out
    graph.fail_node(node, "op not supported (Conv, BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool, "
                    "Flatten, Reshape, Gemm, MatMul, Add, Dropout)")  # fmt: skip
    raise AssertionError  # unreachable: fail_node raises


def _dropout_ratio(graph: _Graph, node: Any, attrs: dict[str, Any]) -> float:
    """The drop probability: the ``ratio`` input (opset 12+, an initializer) or attribute; 0.5 if absent."""
    if len(node.input) > 1 and node.input[1]:
        value = graph.values.get(node.input[1])
        if value is None or value.size != 1:
            graph.fail_node(node, "the ratio must be a constant initializer")
        ratio = float(value.reshape(-1)[0])
    else:
        ratio = float(attrs.get("ratio", 0.5))
    if not 0 <= ratio < 1:
        graph.fail_node(node, f"ratio {ratio} must be in [0, 1)")
    return ratio


def _stride(graph: _Graph, node: Any, attrs: dict[str, Any]) -> int:
    strides = list(attrs.get("strides", [1, 1]))
    if len(set(strides)) != 1:
        graph.fail_node(node, f"strides {strides}: only equal strides are supported")
    return int(strides[0])


def _padding(graph: _Graph, node: Any, attrs: dict[str, Any]) -> list[int]:
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        graph.fail_node(node, "auto_pad is not supported (give explicit pads)")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if pads[0] != pads[2] or pads[1] != pads[3]:
        graph.fail_node(node, f"pads {pads}: only symmetric padding is supported")
    return [int(pads[0]), int(pads[1])]


DATASET_BY_INPUT = {((1, 28, 28), 10): "mnist5k", ((3, 32, 32), 10): "cifar10", ((3, 32, 32), 100): "cifar100"}


def onnx_workload(path: Path) -> dict[str, Any]:
    """A workload document for an ONNX file given on its own: the dataset chosen by the model's
    fixed input size and class count (MNIST 1×28×28/10 → the embedded mnist5k, CIFAR 3×32×32 →
    cifar10 or cifar100; any other size → synthetic data of that size), batch 64, one epoch, SGD
    at lr 0.05, fp32."""
    import onnx

    source = str(path)
    try:
        graph = onnx.load(source).graph
    except Exception as exc:
        raise SpecError.single(source, "", f"cannot be read as an ONNX model ({type(exc).__name__})") from None
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim] if len(
        inputs) == 1 else []  # fmt: skip
    if len(dims) != 4 or None in dims[1:]:
        raise SpecError.single(source, "graph.input", "needs a fixed N x C x H x W input size to pick a dataset; "
                               "give a workload with model: {onnx: ...} and its dataset instead")  # fmt: skip
    out = graph.output[0].type.tensor_type.shape.dim
    classes = out[-1].dim_value if out and out[-1].HasField("dim_value") else None
    dataset = DATASET_BY_INPUT.get((tuple(dims[1:]), classes))
    if dataset is None and not classes:
        raise SpecError.single(source, "graph.output", "needs a fixed class count to pick a dataset; give a workload "
                               "with model: {onnx: ...} and its dataset instead")  # fmt: skip
    data = {"name": dataset} if dataset else {"name": "synthetic", "input_shape": dims[1:], "num_classes": classes}
    return {"name": path.stem, "dataset": data, "model": {"onnx": str(path.resolve())},
            "training": {"batch_size": 64, "epochs": 1, "lr": 0.05}}
