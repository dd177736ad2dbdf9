"""Lowering one training iteration: invariants, phases, and the mirror of backward and forward."""

import dataclasses

import pytest
from conftest import WORKLOADS

import e2sim
from e2sim.graph import GraphError, check_graph, verify
from e2sim.graph.elementwise import sgd_step
from e2sim.graph.ir import build_dag


@pytest.fixture(scope="module")
def graphs():
    return {(p.stem, b): e2sim.lower(p, batch_size=b) for p in WORKLOADS for b in (1, 128)}


@pytest.mark.parametrize("batch", [1, 128])
@pytest.mark.parametrize("path", WORKLOADS, ids=lambda p: p.stem)
def test_invariants_hold_for_every_shipped_workload(graphs, path, batch):
    graph = graphs[(path.stem, batch)]
    assert check_graph(graph) == []
    assert graph.batch_size == batch


@pytest.mark.parametrize("path", WORKLOADS, ids=lambda p: p.stem)
def test_backward_macs_are_twice_forward_except_the_first_layer(graphs, path):
    graph = graphs[(path.stem, 128)]
    first = graph.model.layers[0].name
    for layer in graph.model.layers:
        ops = {op.phase: op for op in graph.ops if op.layer == layer.name and op.kind in ("conv", "gemm")}
        if not ops:
            continue
        if layer.name == first:
            assert "bwd_data" not in ops
            assert ops["bwd_weight"].macs == ops["fwd"].macs
        else:
            assert ops["bwd_data"].macs + ops["bwd_weight"].macs == 2 * ops["fwd"].macs
    first_macs = next(op.macs for op in graph.ops if op.layer == first and op.phase == "fwd")
    assert graph.macs("bwd_data") + graph.macs("bwd_weight") == 2 * graph.macs("fwd") - first_macs


@pytest.mark.parametrize("path", WORKLOADS, ids=lambda p: p.stem)
def test_macs_scale_with_the_batch(graphs, path):
    one, many = graphs[(path.stem, 1)], graphs[(path.stem, 128)]
    for phase in ("fwd", "bwd_data", "bwd_weight"):
        assert many.macs(phase) == 128 * one.macs(phase)
    assert many.macs("update") == one.macs("update") == 0


def test_every_layer_gets_its_phases(graphs):
    graph = graphs[("resnet20-cifar10", 1)]
    phases = {}
    for op in graph.ops:
        phases.setdefault(op.layer, set()).add(op.phase)
    for layer in graph.model.layers:
        expected = {"fwd"}
        if layer.name != "conv1":
            expected.add("bwd_data")
        if layer.trainable:
            expected |= {"bwd_weight", "update"}
        assert phases[layer.name] == expected, layer.name
    assert {layer.kind for layer in graph.model.layers} == {
        "conv", "batchnorm", "relu", "add", "zero_pad_shortcut", "global_avgpool", "linear", "loss",
    }  # fmt: skip


def test_execution_order_is_fwd_then_reverse_bwd_then_update(graphs):
    graph = graphs[("lenet5-mnist", 1)]
    phases = [op.phase for op in graph.ops]
    first_bwd = phases.index("bwd_data")
    first_update = phases.index("update")
    assert set(phases[:first_bwd]) == {"fwd"} and set(phases[first_update:]) == {"update"}
    backward_layers = [op.layer for op in graph.ops[first_bwd:first_update]]
    assert backward_layers[0] == "loss" and backward_layers[-1] == "conv1"


def test_conv_ops_carry_loop_bounds_and_gemm_views(graphs):
    graph = graphs[("resnet20-cifar10", 128)]
    ops = {op.name: op for op in graph.ops}
    fwd, bwd_data, bwd_weight = (ops[f"layer2.0.conv1.{p}"] for p in ("fwd", "bwd_data", "bwd_weight"))
    g = fwd.conv
    assert (g.n, g.k, g.c, g.h, g.w, g.p, g.q, g.r, g.s, g.stride, g.pad_h) == (128, 32, 16, 32, 32, 16, 16, 3, 3, 2, 1)
    assert (fwd.gemm.m, fwd.gemm.n, fwd.gemm.k) == (128 * 16 * 16, 32, 16 * 9)
    assert (bwd_data.gemm.m, bwd_data.gemm.n, bwd_data.gemm.k) == (128 * 16 * 16, 16 * 9, 32)
    assert (bwd_weight.gemm.m, bwd_weight.gemm.n, bwd_weight.gemm.k) == (32, 16 * 9, 128 * 16 * 16)
    assert bwd_weight.reads == ("layer1.2.relu2.y", "layer2.0.conv1.y.grad")  # saved input activation
    assert bwd_data.reads == ("layer2.0.conv1.y.grad", "layer2.0.conv1.w")


def test_saved_activations_are_edges_to_backward_ops(graphs):
    graph = graphs[("lenet5-mnist", 128)]
    consumers = {graph.dag.nodes[n]["type"] for n in graph.dag.successors("relu1.y")}
    assert consumers == {"op"}
    assert set(graph.dag.successors("relu1.y")) == {"pool1.fwd", "relu1.bwd_data"}
    assert set(graph.dag.successors("pool1.y")) == {"conv2.fwd", "conv2.bwd_weight"}
    assert set(graph.dag.successors("pool1.argmax")) == {"pool1.bwd_data"}
    assert graph.tensors["pool1.argmax"].bits == 2


def test_forks_sum_their_gradients(graphs):
    graph = e2sim.lower("resnet20-cifar10", 8)
    ops = {op.name: op for op in graph.ops}
    total = ops["layer1.0.relu2.grad_sum"]
    assert set(total.reads) == {"layer1.0.relu2.y.grad@layer1.1.conv1", "layer1.0.relu2.y.grad@layer1.1.add"}
    assert total.writes == ("layer1.0.relu2.y.grad",) and total.phase == "bwd_data"
    assert total.elementwise_ops == 8 * 16 * 32 * 32
    passed = graph.tensors["layer1.0.relu2.y.grad@layer1.1.add"]
    assert passed.alias_of == "layer1.1.add.y.grad" and ops["layer1.1.add.bwd_data"].kind == "move"
    assert graph.bytes_written(ops["layer1.1.add.bwd_data"]) == 0


def test_tensor_bits_follow_the_precision_block(graphs):
    graph = graphs[("lenet5-mnist", 1)]
    bits = {t.role: t.bits for t in graph.tensors.values()}
    assert bits["weight"] == 8 and bits["activation"] == 8 and bits["error"] == 8
    assert bits["weight_grad"] == 16 and bits["momentum"] == 16 and bits["bias"] == 32 and bits["label"] == 4
    fp32 = graphs[("vgg-cifar10", 1)]
    assert {t.bits for t in fp32.tensors.values() if t.role in ("weight", "activation", "error")} == {32}


def test_update_counts_follow_the_optimizer():
    workload = e2sim.load_workload("lenet5-mnist")
    params = 61_706
    graph = e2sim.lower(workload, 1)
    assert sum(op.elementwise_ops for op in graph.ops if op.phase == "update") == 6 * params
    plain = dataclasses.replace(workload.training, momentum=0.0, weight_decay=0.0)
    assert sgd_step(10, plain.momentum, plain.weight_decay) == 20
    graph = e2sim.lower(dataclasses.replace(workload, training=plain), 1)
    assert sum(op.elementwise_ops for op in graph.ops if op.phase == "update") == 2 * params
    assert not any(t.role == "momentum" for t in graph.tensors.values())


def test_flatten_is_a_view(graphs):
    graph = graphs[("lenet5-mnist", 1)]
    assert not any(op.layer == "flatten" for op in graph.ops)
    fc1 = next(op for op in graph.ops if op.name == "fc1.fwd")
    assert fc1.reads[0] == "pool2.y" and graph.tensors["pool2.y"].shape == (1, 16, 5, 5)


def test_batch_size_defaults_to_the_workload_and_must_be_positive():
    assert e2sim.lower("lenet5-mnist").batch_size == 64
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch size must be a positive integer"):
            e2sim.lower("lenet5-mnist", bad)


def _break(graph, **changes):
    """A copy of ``graph`` with the op ``changes['op']`` altered (for testing verify itself)."""
    name = changes.pop("op")
    ops = tuple(dataclasses.replace(op, **changes) if op.name == name else op for op in graph.ops)
    return dataclasses.replace(graph, ops=ops)


@pytest.mark.parametrize(
    ("op", "change", "message"),
    [
        ("conv2.fwd", {"macs": 1}, "geometry gives 240000"),
        ("fc1.bwd_weight", {"writes": ("fc1.b.grad",)}, "fc1.w.grad is written 0 times"),
        ("conv2.bwd_data", {"reads": ("conv2.y.grad", "conv2.w.next")}, "reads conv2.w.next before it is written"),
        ("relu1.bwd_data", {"writes": ("relu1.y.grad",)}, "written 2 times"),
        ("fc2.fwd", {"gemm": None}, "MACs 10080 differ from its GEMM None"),
        ("pool1.fwd", {"macs": 5}, "a vector op has 5 MACs"),
    ],
)
def test_verify_catches_broken_graphs(graphs, op, change, message):
    broken = _break(graphs[("lenet5-mnist", 1)], op=op, **change)
    with pytest.raises(GraphError, match=message):
        verify(broken)


def test_verify_catches_a_missing_backward_op(graphs):
    graph = graphs[("lenet5-mnist", 1)]
    ops = tuple(op for op in graph.ops if op.name != "relu2.bwd_data")
    assert any("the DAG's nodes are not exactly" in p for p in check_graph(dataclasses.replace(graph, ops=ops)))
    broken = dataclasses.replace(graph, ops=ops, dag=build_dag(ops, graph.tensors))
    problems = check_graph(broken)
    assert any("conv2.y.grad is written 0 times" in p for p in problems)
    assert any("layer relu2: the gradient of its input conv2.y is missing" in p for p in problems)


def test_a_pool_before_any_parameter_has_no_backward():
    spec = {
        "name": "t",
        "dataset": {"name": "mnist5k"},
        "training": {"batch_size": 4, "epochs": 1, "lr": 0.1},
        "model": {
            "layers": [{"type": "maxpool", "kernel": 2}, {"type": "flatten"}, {"type": "linear", "out_features": 10}]
        },
    }
    graph = e2sim.lower(spec)
    assert [op.name for op in graph.ops if op.layer == "maxpool1"] == ["maxpool1.fwd"]
    assert "maxpool1.argmax" not in graph.tensors
    assert "fc1.bwd_data" not in {op.name for op in graph.ops}  # its input needs no gradient either


def test_lower_exports_the_dag_as_graphml_and_dot(tmp_path, capsys):
    import networkx as nx

    from e2sim.cli.main import main

    graphml, dot = tmp_path / "it.graphml", tmp_path / "it.dot"
    assert main(["lower", "lenet5-mnist", "--batch", "8", "--export", str(graphml), "--export", str(dot)]) == 0
    graph = e2sim.lower("lenet5-mnist", 8)
    nodes, edges = len(graph.ops) + len(graph.tensors), sum(len(op.reads) + len(op.writes) for op in graph.ops)
    back = nx.read_graphml(graphml)
    assert back.number_of_nodes() == nodes and back.number_of_edges() == edges
    conv = next(op for op in graph.ops if op.name == "conv1.fwd")
    assert back.nodes["conv1.fwd"]["macs"] == conv.macs and back.nodes["conv1.fwd"]["phase"] == "fwd"
    assert back.nodes["conv1.w"]["dims"] == "x".join(map(str, graph.tensors["conv1.w"].shape))
    read = nx.nx_pydot.read_dot(dot)
    assert read.number_of_nodes() == nodes and read.number_of_edges() == edges
    capsys.readouterr()
    before = dot.read_bytes()
    assert main(["lower", "lenet5-mnist", "--export", str(dot)]) == 2  # never over an existing file
    assert main(["lower", "lenet5-mnist", "--export", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "unknown graph format '.png'" in err and dot.read_bytes() == before
