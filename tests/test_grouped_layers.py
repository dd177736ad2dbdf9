"""Grouped, depthwise and dilated convolutions and dropout as layers: workload keys and their
errors, lowering, pricing (a grouped op costs its groups one after the other), training under
the policies, and dropout's seeded masks."""

import numpy as np
import pytest

import e2sim
import e2sim.functional as F
from e2sim import SpecError
from e2sim.energy.account import target_of
from e2sim.energy.tables import load_table
from e2sim.graph import lower
from e2sim.graph.ir import ConvShape, GemmShape, Op, Tensor
from e2sim.schedule.nest import nest_of
from e2sim.schedule.ops import plan_op


def workload(layers, shape=(3, 16, 16), batch=4, policy="baseline", precision=None):
    data = {"name": "synthetic", "input_shape": list(shape), "num_classes": 10, "train_samples": batch,
            "test_samples": batch}
    doc = {"name": "grouped", "dataset": data, "model": {"layers": layers},
           "training": {"batch_size": batch, "epochs": 1, "lr": 0.01}, "policy": policy}
    if precision:
        doc["precision"] = precision
    return doc


SEPARABLE = [
    {"type": "conv", "out_channels": 8, "kernel": 3, "padding": 1, "bias": False},
    {"type": "batchnorm"}, {"type": "relu"},
    {"type": "conv", "out_channels": 8, "kernel": 3, "padding": 1, "groups": 8, "bias": False},  # depthwise
    {"type": "batchnorm"}, {"type": "relu"},
    {"type": "conv", "out_channels": 16, "kernel": 1},  # pointwise
    {"type": "relu"},
    {"type": "conv", "out_channels": 16, "kernel": 3, "padding": 2, "dilation": 2, "groups": 4, "stride": 2},
    {"type": "relu"},
    {"type": "global_avgpool"}, {"type": "dropout", "drop_probability": 0.25}, {"type": "linear", "out_features": 10},
]  # fmt: skip


def test_layer_keys_lower_with_their_macs_and_parameters():
    graph = e2sim.lower(workload(SEPARABLE), batch_size=1)
    convs = [op for op in graph.model_ops if op.kind == "conv" and op.phase == "fwd"]
    # stem 8·3·16²·9, depthwise 8·16²·9, pointwise 16·8·16², dilated grouped 16·4·8²·9 (output 8×8)
    assert [op.macs for op in convs] == [8 * 3 * 256 * 9, 8 * 256 * 9, 16 * 8 * 256, 16 * 4 * 64 * 9]
    assert convs[3].conv.dilation == 2 and convs[3].conv.groups == 4 and convs[3].conv.p == 8
    assert graph.tensors["conv2.w"].shape == (8, 1, 3, 3) and graph.tensors["conv4.w"].shape == (16, 4, 3, 3)
    for op in graph.model_ops:
        if op.kind == "conv":
            assert op.gemm.macs == op.macs and op.gemm.groups == op.conv.groups
    dropout = [op for op in graph.model_ops if op.layer_kind == "dropout"]
    assert [op.phase for op in dropout] == ["fwd", "bwd_data"]
    assert graph.tensors["dropout1.mask"].bits == 1


@pytest.mark.parametrize(("layer", "message"), [
    ({"type": "conv", "out_channels": 8, "kernel": 3, "groups": 2}, "groups 2 must divide the input channels (3)"),
    ({"type": "conv", "out_channels": 9, "kernel": 3, "groups": 0}, "groups: must be a positive integer"),
    ({"type": "conv", "out_channels": 9, "kernel": 3, "dilation": 9},
     "kernel 3×3 dilated by 9 spans 19 is larger than the padded input"),
    ({"type": "dropout", "drop_probability": 1.0}, "drop_probability: must be a number in [0, 1)"),
    ({"type": "dropout"}, "drop_probability"),
])  # fmt: skip
def test_bad_grouped_dilated_and_dropout_layers_are_one_line(layer, message):
    doc = workload([layer, {"type": "flatten"}, {"type": "linear", "out_features": 10}])
    with pytest.raises(SpecError) as caught:
        e2sim.lower(doc)
    assert len(caught.value.problems) == 1 and message in str(caught.value), str(caught.value)
    assert "model.layers[0]" in str(caught.value)


def test_a_grouped_op_costs_its_groups_one_after_the_other():
    """A grouped conv is priced as its groups' nests in sequence: G times one group's cost, which is
    the cost of the dense conv one group is."""
    hw = e2sim.load_hw("systolic-32x32")
    target = target_of(hw, load_table(hw.technology))
    n, c, k, g = 2, 32, 64, 8

    def conv_op(channels, filters, groups):
        shape = ConvShape(n, filters, channels, 16, 16, 16, 16, 3, 3, 1, 1, 1, groups, 2)
        gemm = GemmShape(n * 256, filters // groups, channels // groups * 9, groups)
        tensors = {"x": Tensor("x", "l", "activation", (n, channels, 16, 16), 8),
                   "w": Tensor("w", "l", "weight", (filters, channels // groups, 3, 3), 8),
                   "y": Tensor("y", "l", "activation", (n, filters, 16, 16), 8)}  # fmt: skip
        return Op("l.fwd", "l", "conv", "fwd", "conv", ("x", "w"), ("y",), shape.macs, 0, 0, shape, gemm), tensors

    grouped, grouped_tensors = conv_op(c, k, g)
    dense, dense_tensors = conv_op(c // g, k // g, 1)
    assert nest_of(grouped, grouped_tensors, 32) == nest_of(dense, dense_tensors, 32)
    assert nest_of(grouped, grouped_tensors, 32).h_pad == 15 + 5  # (P − 1)·σ + d·(R − 1) + 1
    whole, one = plan_op(grouped, grouped_tensors, hw, target, 32), plan_op(dense, dense_tensors, hw, target, 32)
    assert whole.compute_cycles == g * one.compute_cycles and whole.tiles == g * one.tiles
    for a, b in zip(whole.moves, one.moves, strict=True):
        assert (a.dram_bytes, a.fill_bits, a.use_bits) == pytest.approx((g * b.dram_bytes, g * b.fill_bits,
                                                                         g * b.use_bits))  # fmt: skip
    assert whole.footprint_bytes == one.footprint_bytes  # one group's tiles at a time
    assert sum(m.dram_bytes for m in whole.moves[:1]) >= grouped_tensors["x"].bytes  # every input read at least once


@pytest.mark.parametrize("hardware", ["systolic-32x32", "eyeriss", "zcu102"])
def test_grouped_and_dilated_networks_price_on_every_dataflow(hardware):
    found = e2sim.estimate(workload(SEPARABLE), hardware)
    assert found.energy_j > 0 and found.time_s > 0
    dense = e2sim.estimate(workload([dict(x, groups=1) if x["type"] == "conv" else x for x in SEPARABLE]), hardware)
    macs = [sum(r.op.macs for r in e.rows) for e in (found, dense)]
    assert macs[0] < macs[1]  # grouping removes MACs ...
    pes = found.hardware.pe_array.rows * found.hardware.pe_array.cols
    use = {r.op.layer: r.op.macs / (r.cost.compute_cycles * pes) for r in found.rows
           if r.op.kind == "conv" and r.op.phase == "fwd"}  # fmt: skip
    assert use["conv2"] < use["conv1"]  # ... but a depthwise conv leaves most of the array idle


BLOCK = {"type": "residual", "body": [
    {"type": "conv", "out_channels": 8, "kernel": 3, "padding": 1, "groups": 2, "bias": False},
    {"type": "batchnorm"}, {"type": "relu"}, {"type": "conv", "out_channels": 8, "kernel": 1, "bias": False},
    {"type": "batchnorm"}]}  # fmt: skip
WITH_BLOCK = [*SEPARABLE[:6], BLOCK, {"type": "relu"}, dict(BLOCK, name="block2"), {"type": "relu"}, *SEPARABLE[6:]]


@pytest.mark.parametrize(("policy", "precision"), [
    ("e2train", None), ("eif+emp+q8", None), ("psg", None),
    ("baseline", {"weights": "int8", "activations": "int8", "errors": "int8", "gradients": "int16",
                  "accumulator": "int32", "rounding": "stochastic"}),
])  # fmt: skip
def test_grouped_networks_train_under_the_policies(policy, precision):
    doc = workload(WITH_BLOCK, policy=policy, precision=precision)
    doc["dataset"]["train_samples"] = 16
    result = e2sim.train_workload(doc, progress=False)
    assert result.iterations >= 1 and np.isfinite(result.epochs[0].train_loss)
    depthwise = result.counts.ops["conv2.bwd_data"].total_macs  # the depthwise conv runs in full
    assert depthwise > 0 and depthwise % (4 * 8 * 256 * 9) == 0
    if "emp" in policy:
        assert result.policy_stats["emp"]["unpruned_grouped_layers"] == ["block2.conv1", "conv2", "conv4",
                                                                         "residual1.conv1"]  # fmt: skip


def test_slu_needs_two_residual_blocks():
    with pytest.raises(SpecError, match="has only one \\(it gates every block but the first"):
        e2sim.lower(workload([*SEPARABLE[:6], BLOCK, *SEPARABLE[6:]], policy="slu"))


def test_dropout_draws_its_mask_from_the_seed_and_backward_uses_it():
    x = np.random.default_rng(0).standard_normal((64, 100)).astype(np.float32)
    y, mask = F.dropout(x, 0.3, seed=7)
    again, same = F.dropout(x, 0.3, seed=7)
    np.testing.assert_array_equal(y, again)
    np.testing.assert_array_equal(mask, same)
    assert abs(mask.mean() - 0.7) < 0.02
    # the numpy reference: keep where a uniform draw of the seed's generator is at least p, scale by 1/(1 − p)
    keep = np.random.default_rng(7).random(x.shape, dtype=np.float32) >= np.float32(0.3)
    np.testing.assert_array_equal(mask, keep)
    np.testing.assert_allclose(y, np.where(keep, x / 0.7, 0), rtol=1e-6)
    dy = np.ones_like(x)
    np.testing.assert_allclose(F.dropout_backward(dy, mask, 0.3), np.where(keep, 1 / 0.7, 0), rtol=1e-6)
    other, _ = F.dropout(x, 0.3, seed=8)
    assert not np.array_equal(other, y)


def test_dropout_is_the_identity_in_evaluation_and_training_is_reproducible():
    doc = workload(SEPARABLE)
    first = e2sim.train_workload(doc, progress=False)
    second = e2sim.train_workload(doc, progress=False)
    for name, value in first.state.arrays.items():
        np.testing.assert_array_equal(value, second.state.arrays[name])
    from e2sim.train.engine import GraphExecutor

    graph = lower(e2sim.load_workload(doc), batch_size=4)
    executor = GraphExecutor(graph, None, 0.0, 0.0)
    images = np.random.default_rng(3).standard_normal((4, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(executor.predict(first.state, images), executor.predict(first.state, images))


def test_the_exported_dag_says_which_ops_are_grouped_or_dilated(tmp_path):
    import networkx as nx

    from e2sim.report.lowering import export_graph

    graph = e2sim.lower(workload(SEPARABLE), batch_size=2)
    back = nx.read_graphml(export_graph(graph, tmp_path / "it.graphml"))
    assert back.nodes["conv2.fwd"]["groups"] == 8 and back.nodes["conv2.fwd"]["gemm"] == f"{2 * 256}x1x9"
    assert back.nodes["conv4.bwd_weight"]["dilation"] == 2 and back.nodes["conv1.fwd"]["groups"] == 1
    assert back.nodes["dropout1.mask"]["bits"] == 1


def test_the_shipped_mobilenet_has_the_hand_counted_macs_and_parameters():
    graph = e2sim.lower("mobilenet-cifar10", batch_size=1)
    blocks = [(32, 64, 32), (64, 128, 16), (128, 128, 16), (128, 256, 8), (256, 256, 8), (256, 512, 4),
              *[(512, 512, 4)] * 5, (512, 1024, 2), (1024, 1024, 2)]  # (C, C', output side) per block
    macs = 32 * 3 * 9 * 32 * 32 + sum(c * 9 * p * p + c * d * p * p for c, d, p in blocks) + 1024 * 10
    assert graph.macs("fwd") == macs == 46_354_432
    weights = 32 * 27 + sum(c * 9 + c * d for c, d, _ in blocks) + 1024 * 10 + 10
    batchnorm = 2 * (32 + sum(c + d for c, d, _ in blocks))
    names = {t for op in graph.model_ops for t in op.reads if graph.tensors[t].role in ("weight", "bias")}
    assert sum(graph.tensors[t].numel for t in names) == weights + batchnorm == 3_217_226
