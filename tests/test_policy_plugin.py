"""A policy written in this file alone — random channel dropping in the weight gradient — runs,
is priced and reported through `e2sim.run` with no change to e2sim; and the checks that keep
counted work and the priced graph together."""

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

import e2sim
import e2sim.functional as F
from e2sim.cli.main import main
from e2sim.config.policy import PolicySpec, preset, preset_names
from e2sim.config.reader import fraction_positive
from e2sim.config.workload import with_policy
from e2sim.energy.account import CountError
from e2sim.graph.ir import GraphExtension, Op
from e2sim.policies import Policy, register, unregister


@dataclass(frozen=True)
class ChannelDropSpec:
    keep_fraction: float = 0.5


class RandomChannelDrop(Policy):
    """Each conv's weight gradient is computed for a random ``keep_fraction`` of its output
    channels per iteration (the others get none); drawing the channels is an op of its own."""

    key = "channel_drop"

    def __init__(self, spec, workload):
        super().__init__(spec, workload)
        self.kept = self.total = 0

    @classmethod
    def read_spec(cls, s):
        spec = ChannelDropSpec(s.read("keep_fraction", fraction_positive, default=0.5))
        s.finish(" for channel_drop")
        return spec

    def extend(self, graph):
        draws = []
        for op in graph.ops:
            if op.layer_kind == "conv" and op.phase == "bwd_weight":
                k = graph.tensors[op.writes[0]].shape[0]
                draws.append(Op(f"{op.layer}.channel_draw", op.layer, "conv", "bwd_weight", "vector", (op.reads[1],),
                                (), 0, k, k))  # fmt: skip
        return GraphExtension(self.key, after=tuple(draws))

    def kernel(self, op, layer, inner):
        if op.layer_kind != "conv" or op.phase != "bwd_weight":
            return inner

        def dropped(s, op, layer, seed):
            dy_name = op.reads[1]
            dy = s.tensors[dy_name]
            k = dy.shape[1]
            kept = np.sort(np.random.default_rng(seed).permutation(k)[: max(1, round(k * self.spec.keep_fraction))])
            self.kept, self.total = self.kept + kept.size, self.total + k
            if s.counter is not None:
                s.counter.record(f"{op.layer}.channel_draw", elementwise_ops=k)
                s.counter.ran(f"{op.layer}.channel_draw")

            def compute(kept_dy, kept_shape):
                s.tensors[dy_name] = kept_dy
                inner(s, op, layer, seed)
                s.tensors[dy_name] = dy
                return tuple(s.tensors[n] for n in op.writes) if layer.bias else s.tensors[op.writes[0]]

            shape = s.graph.tensors[op.writes[0]].shape
            out = F.pruned_weight_gradient(compute, dy, shape, kept, layer.bias, s.counter, op.name)
            for name, value in zip(op.writes, out if layer.bias else (out,), strict=True):
                s.tensors[name] = value

        return dropped

    def stats(self):
        return {"kept_channel_fraction": self.kept / self.total}


class Misnamed(Policy):
    """Adds an op and counts its work under another name."""

    key = "misnamed"

    @classmethod
    def read_spec(cls, s):
        s.finish()
        return ChannelDropSpec()

    def extend(self, graph):
        return GraphExtension(self.key, before=(Op("misnamed.a", "misnamed", "misnamed", "fwd", "vector",
                                                   ("input.x",), (), 0, 1, 1),))  # fmt: skip

    def choose(self, batch, counter):
        counter.record("misnamed.b", elementwise_ops=1)
        counter.ran("misnamed.b")
        return super().choose(batch, counter)


class Silent(Misnamed):
    """Adds an op that never runs."""

    key = "silent"

    def choose(self, batch, counter):
        return Policy.choose(self, batch, counter)


@pytest.fixture(scope="module", autouse=True)
def plugins():
    for plugin in (RandomChannelDrop, Misnamed, Silent):
        register(plugin)
    yield
    for plugin in (RandomChannelDrop, Misnamed, Silent):
        unregister(plugin.key)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E2SIM_CACHE_DIR", str(tmp_path / "cache"))


def lenet(batch=128):
    base = e2sim.load_workload("lenet5-mnist")
    return dataclasses.replace(base, training=dataclasses.replace(base.training, batch_size=batch))


def test_a_policy_registered_here_runs_is_priced_and_reported(tmp_path):
    path = tmp_path / "drop.yaml"
    path.write_text("channel_drop: {keep_fraction: 0.25}\n")
    result = e2sim.run(lenet(), "zedboard", str(path), epochs=1, progress=False)
    report = result.to_dict()
    assert report["policy"] == {"name": "channel_drop", "channel_drop": {"keep_fraction": 0.25}}
    iterations = report["iterations"]
    # LeNet-5's convs have 6 and 16 filters: round(1.5) = 2 and 4 kept
    assert report["policy_stats"]["channel_drop"]["kept_channel_fraction"] == pytest.approx(6 / 22)
    draws = [o for o in report["ops"] if o["name"].endswith(".channel_draw")]
    assert sorted(o["name"] for o in draws) == ["conv1.channel_draw", "conv2.channel_draw"]
    assert all(o["executions"] == iterations and o["energy_j"] > 0 for o in draws)
    graph = result.training.graph
    assert graph.contributed["conv1.channel_draw"] == "channel_drop"
    bwd = next(op for op in graph.ops if op.name == "conv2.bwd_weight")
    assert result.training.counts.ops[bwd.name].total_macs == iterations * bwd.macs * 4 // 16
    conv1 = next(op for op in graph.ops if op.name == "conv1.bwd_weight")
    assert report["macs"]["skipped"] == iterations * (bwd.macs * 12 // 16 + conv1.macs * 4 // 6)
    baseline = e2sim.run(lenet(), "zedboard", "baseline", epochs=1, progress=False).to_dict()
    weight_grads = [sum(o["energy_j"] for o in r["ops"] if o["phase"] == "bwd_weight" and o["kind"] == "conv")
                    for r in (report, baseline)]  # fmt: skip
    assert weight_grads[0] < 0.6 * weight_grads[1]


def test_a_policy_block_can_name_the_plugin_and_a_built_in(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("channel_drop: {}\nsmd: {drop_probability: 0.3}\n")
    policy = e2sim.api.load_policy(str(path))
    assert policy.techniques == ("smd", "channel_drop")  # registration order
    path.write_text("channel_drop: {keep_fraction: 2}\n")
    with pytest.raises(e2sim.SpecError, match=r"policy\.channel_drop\.keep_fraction"):
        e2sim.api.load_policy(str(path))


def test_work_counted_under_an_op_the_graph_does_not_have_is_an_error():
    w = with_policy(lenet(1000), PolicySpec.of("misnamed", misnamed=ChannelDropSpec()))
    with pytest.raises(CountError, match=r"counted under misnamed\.b, which the priced graph does not have"):
        e2sim.run(w, "zedboard", epochs=1, progress=False)


def test_an_op_that_never_ran_is_an_error():
    w = with_policy(lenet(1000), PolicySpec.of("silent", silent=ChannelDropSpec()))
    with pytest.raises(CountError, match=r"ops misnamed\.a of the priced graph never ran"):
        e2sim.run(w, "zedboard", epochs=1, progress=False)


def test_counts_renamed_after_the_run_do_not_price():
    run = e2sim.run(lenet(1000), "zedboard", "baseline", epochs=1, progress=False)
    counts = run.training.counts
    counts.ops["conv1.forward"] = counts.ops.pop("conv1.fwd")
    with pytest.raises(CountError, match=r"conv1\.forward"):
        e2sim.estimate(lenet(1000), "zedboard", counts=counts)


def test_eif_lowers_its_filter_at_the_batch_being_priced():
    w = with_policy(lenet(64), preset("eif"))
    ratios = {}
    for batch in (8, 64):
        graph = e2sim.lower(w, batch)
        filtering = sum(op.macs for op in graph.ops if graph.contributed.get(op.name) == "eif" and op.phase == "fwd")
        ratios[batch] = filtering / graph.macs("fwd")
        assert next(op for op in graph.ops if op.name == "eif_conv1.fwd").conv.n == batch
    assert ratios[8] == ratios[64] == pytest.approx(0.341, abs=1e-3)
    rows = {r.op.name: r for r in e2sim.estimate(w, "zedboard", batch_size=8).rows}
    assert rows["eif_conv1.fwd"].op.macs == 8 * 26 * 26 * 6 * 9


def test_policy_help_and_the_run_docstring_list_every_preset(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside preset names
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    shown = capsys.readouterr().out
    assert len(preset_names()) == 12
    for name in preset_names():
        assert f" {name}," in shown or f" {name})" in shown or f"({name}," in shown, name
        assert name in e2sim.run.__doc__ and name in e2sim.api.load_policy.__doc__


def test_a_run_builds_the_model_once_and_lowers_once(monkeypatch):
    w = with_policy(lenet(1000), preset("smd"))
    calls = {"build": 0, "verify": 0}
    import e2sim.graph.lowering
    import e2sim.studies.single

    build, verify = e2sim.studies.single.build_model, e2sim.graph.lowering.verify

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(e2sim.studies.single, "build_model", counted("build", build))
    monkeypatch.setattr(e2sim.graph.lowering, "verify", counted("verify", verify))
    e2sim.run(w, "zedboard", epochs=1, progress=False)
    assert calls == {"build": 1, "verify": 1}
