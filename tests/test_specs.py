"""Workload and hardware specs: shipped ones load; bad ones give every problem with file and key."""

import pytest
import yaml
from conftest import HW_SPECS, WORKLOADS

import e2sim
from e2sim import SpecError

LENET = """
name: t
dataset: {name: mnist5k}
model: {arch: lenet5}
training: {batch_size: 64, epochs: 10, lr: 0.05}
"""
HW = """
name: h
technology: 45nm
clock_mhz: 200
pe_array: {rows: 16, cols: 16, dataflow: ws}
buffers: {global: {size_kb: 108}}
dram: {type: lpddr4, bandwidth_gb_per_s: 12.8}
static_power_mw: 10
"""


def problems(excinfo) -> list[str]:
    return [str(p) for p in excinfo.value.problems]


@pytest.mark.parametrize("path", WORKLOADS, ids=lambda p: p.stem)
def test_shipped_workloads_load(path):
    workload = e2sim.load_workload(path)
    assert workload.name == path.stem


@pytest.mark.parametrize("path", HW_SPECS, ids=lambda p: p.stem)
def test_shipped_hardware_loads(path):
    hw = e2sim.load_hw(path)
    assert hw.name == path.stem and hw.pe_array.pes > 0


def test_embedded_names_resolve():
    assert e2sim.load_workload("lenet5-mnist").model.arch == "lenet5"
    assert e2sim.load_hw("systolic-16x16").pe_array.rows == 16


def test_unknown_embedded_name_lists_what_exists():
    with pytest.raises(SpecError) as exc:
        e2sim.load_workload("lenet6-mnist")
    assert "lenet5-mnist" in str(exc.value) and str(exc.value).startswith("lenet6-mnist: ")


def test_defaults_are_applied(write_yaml):
    w = e2sim.load_workload(write_yaml(LENET))
    assert (w.training.momentum, w.training.weight_decay, w.training.schedule, w.training.seed) == (0, 0, "constant", 0)
    assert w.precision.weights.name == "fp32" and w.precision.rounding == "nearest"
    assert w.policy.name == "baseline" and w.policy.techniques == ()
    hw = e2sim.load_hw(write_yaml(HW))
    assert hw.buffers["global"].bandwidth_bytes_per_cycle == 8.0 and hw.pe_array.mac_bits == (8, 16)
    assert (hw.vector.lanes, hw.vector.bits, hw.vector.float) == (16, 32, True) and hw.energy_overrides == {}


def test_every_problem_is_reported_with_file_and_path(write_yaml):
    path = write_yaml(
        """
name: h
technology: 45nm
clock_mhz: -1
pe_array: {rows: 0, cols: 16, dataflow: diagonal, colz: 3}
buffers: {ifmap: {size_kb: 64}, filter: {size_kb: 0}}
dram: {type: ddr9, bandwidth_gbps: 12.8}
static_power_mw: 5
energy_overrides: {int_mult_8b_pj: -1, dram_ddr9_pj_per_bit: 3}
"""
    )
    with pytest.raises(SpecError) as exc:
        e2sim.load_hw(path)
    lines = problems(exc)
    expected = [
        "clock_mhz: must be a positive number, got -1",
        "pe_array.rows: must be a positive integer, got 0",
        "pe_array.dataflow: must be one of ws, os, is, rs",
        "pe_array.colz: unknown key; did you mean 'cols'?",
        "buffers.filter.size_kb: must be a positive number, got 0",
        "buffers.ofmap: missing required key",
        "dram.type: must be one of",
        "dram.bandwidth_gb_per_s: missing required key",
        "dram.bandwidth_gbps: unknown key; did you mean 'bandwidth_gb_per_s'?",
        "energy_overrides.int_mult_8b_pj: must be a positive number, got -1",
        "energy_overrides.dram_ddr9_pj_per_bit: unknown key; did you mean 'dram_ddr",
    ]
    for text in expected:
        assert any(line.startswith(f"{path}: {text}") for line in lines), (text, lines)
    assert len(lines) == len(expected)


def test_malformed_yaml_names_file_and_line(write_yaml):
    path = write_yaml("name: x\nmodel: {arch: lenet5\ntraining: 3\n")
    with pytest.raises(SpecError) as exc:
        e2sim.load_workload(path)
    (line,) = problems(exc)
    assert line.startswith(f"{path}: line ") and "invalid YAML" in line


def test_duplicate_keys_are_errors(write_yaml):
    with pytest.raises(SpecError, match="duplicate key 'lr'"):
        e2sim.load_workload(write_yaml(LENET.replace("lr: 0.05", "lr: 0.05, lr: 0.1")))


def test_exponent_floats_without_a_dot_are_numbers(write_yaml):
    w = e2sim.load_workload(write_yaml(LENET.replace("lr: 0.05", "lr: 5e-2, weight_decay: 1e-4")))
    assert w.training.lr == 0.05 and w.training.weight_decay == 1e-4


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("[1, 2]", "", "must be a mapping, got a list"),
        ("", "", "must be a mapping, got null"),
        (LENET.replace("{arch: lenet5}", "{arch: resnet, depth: 21}"), "model.depth", "must be 6n+2"),
        (LENET.replace("{arch: lenet5}", "{arch: lenet5, depth: 20}"), "model.depth",
         "unknown key (known keys for arch lenet5"),
        (LENET.replace("{arch: lenet5}", "{arch: vgg, depth: 12}"), "model.depth", "must be one of 11, 13, 16, 19"),
        (LENET.replace("{arch: lenet5}", "{arch: rezznet}"), "model.arch", "did you mean 'resnet'"),
        (LENET.replace("epochs: 10", "epochs: 10.0"), "training.epochs", "must be a positive integer, got 10.0"),
        (LENET.replace("epochs: 10", "epochs: true"), "training.epochs", "must be a positive integer, got true"),
        (LENET.replace("lr: 0.05", "lr: .nan"), "training.lr", "must be a positive number"),
        (LENET.replace("lr: 0.05", "lr: 0.05, momentum: 1.0"), "training.momentum", "must be a number in [0, 1)"),
        (LENET.replace("lr: 0.05", "lr: 0.05, schedule: step"), "training.lr_milestones_epochs",
         "missing required key"),
        (LENET.replace("lr: 0.05", "lr: 0.05, schedule: step, lr_milestones_epochs: [5, 3]"),
         "training.lr_milestones_epochs", "increasing"),
        (LENET.replace("lr: 0.05", "lr: 0.05, schedule: step, lr_milestones_epochs: [5, 12]"),
         "training.lr_milestones_epochs", "below epochs (10)"),
        (LENET.replace("lr: 0.05", "lr: 0.05, lr_gamma: 0.5"), "training.lr_gamma", "unknown key"),
        (LENET + "policy: magic\n", "policy", "must be one of baseline, smd, slu, psg, e2train, emp, eif, eif+emp"),
        (LENET + "policy: {smd: {drop_probability: 1.0}}\n", "policy.smd.drop_probability",
         "must be a number in [0, 1)"),
        (LENET + "policy: {smdd: {}}\n", "policy.smdd", "unknown key; did you mean 'smd'?"),
        (LENET + "policy: {}\n", "policy", "name at least one technique"),
        (LENET + "policy: {psg: {predictor_bits: 9}}\n", "policy.psg.predictor_bits", "must be one of 2, 3"),
        (LENET + "policy: {smd: {stretch: 0.5}}\n", "policy.smd.stretch", "must be a number >= 1"),
        (LENET + "precision: {weights: fp16, accumulator: int32}\n", "precision.accumulator",
         "floating-point operands need a floating accumulator"),
        (LENET + "precision: {weights: int8, activations: int8, errors: int8}\n", "precision.accumulator",
         "need an intN accumulator"),
        (LENET + "precision: {weights: int8, activations: int16, errors: int8, accumulator: int16}\n",
         "precision.accumulator", "must hold one product (24 bits)"),
        (LENET + "precision: {weights: int17}\n", "precision.weights", "int2 to int16"),
        (LENET + "precision: {weights: q0.8}\n", "precision.weights", "qM.N needs M >= 1"),
        (LENET + "precision: {weights: e9m3}\n", "precision.weights", "eXmY needs"),
        (LENET + "precision: {weights: float8}\n", "precision.weights", "must be a number format"),
        (LENET.replace("mnist5k", "imagenet"), "dataset.name", "must be one of mnist5k, mnist, cifar10, cifar100"),
    ],
)  # fmt: skip
def test_bad_workloads(write_yaml, text, path, message):
    file = write_yaml(text)
    with pytest.raises(SpecError) as exc:
        e2sim.load_workload(file)
    where = f"{file}: {path}: " if path else f"{file}: "
    assert any(line.startswith(where) and message in line for line in problems(exc)), problems(exc)


def test_policies(write_yaml):
    with pytest.raises(SpecError, match=r"policy\.slu: selective layer update gates residual blocks, and LeNet-5"):
        e2sim.load_workload(write_yaml(LENET + "policy: e2train\n"))
    resnet = LENET.replace("{arch: lenet5}", "{arch: resnet, depth: 8}")
    e2train = e2sim.load_workload(write_yaml(resnet + "policy: e2train\n")).policy
    assert e2train.techniques == ("smd", "slu", "psg") and e2train.get("smd").drop_probability == 0.5
    custom = e2sim.load_workload(write_yaml(LENET + "policy:\n  smd:\n  psg: {threshold: 1.0e-4, adaptive: true}\n"))
    assert custom.policy.name == "smd+psg" and custom.policy.get("smd").stretch == pytest.approx(4 / 3)
    assert custom.policy.get("psg").threshold == 1e-4 and custom.policy.get("psg").adaptive


def test_formats_parse_to_widths(write_yaml):
    text = LENET + "precision: {weights: q1.7, activations: fp8_e4m3, errors: e5m2, gradients: bf16}\n"
    p = e2sim.load_workload(write_yaml(text)).precision
    assert (p.weights.bits, p.weights.fraction_bits, p.weights.kind) == (8, 7, "fixed")
    assert (p.activations.bits, p.activations.exponent_bits, p.activations.mantissa_bits) == (8, 4, 3)
    assert (p.errors.bits, p.gradients.bits, p.accumulator.bits) == (8, 16, 32)


@pytest.mark.parametrize(
    ("layers", "path", "message"),
    [
        ("[{type: conv, out_channels: 6, kernel: 5}, {type: linear, out_features: 10}]", "model.layers[1]",
         "linear needs a flat input, got 6×24×24; add a flatten layer first"),
        ("[{type: conv, out_channels: 6, kernel: 40}]", "model.layers[0]", "kernel 40 is larger than the padded input"),
        ("[{type: flatten}, {type: linear, out_features: 12}]", "model.layers[1]", "the dataset has 10 classes"),
        ("[{type: flatten}, {type: conv, out_channels: 3, kernel: 1}]", "model.layers[1]", "conv needs a C×H×W input"),
        ("[{type: conv, out_channels: 6, kernel: 3, name: a}, {type: relu, name: a}]", "model.layers[1]",
         "layer name 'a' is used twice"),
        ("[{type: residual, body: [{type: conv, out_channels: 4, kernel: 3}]}]", "model.layers[0]",
         "residual body gives 4×26×26 but the shortcut gives 1×28×28"),
        ("[{type: pool, kernel: 2}]", "model.layers[0].type", "must be one of conv, linear"),
        ("[{type: relu, kernel: 2}]", "model.layers[0].kernel", "unknown key (known keys for type relu"),
        ("[{type: conv, out_channels: 6, kernel: [3, 0]}]", "model.layers[0].kernel[1]", "must be a positive integer"),
        ("[{type: conv, out_channels: 6, kernel: [3, 3, 3]}]", "model.layers[0].kernel", "must be a list of 2"),
        ("[{type: basic_block, out_channels: 8, shortcut: identity}]", "model.layers[0].shortcut",
         "must be one of zero_pad, projection"),
        ("[{type: residual, body: []}]", "model.layers[0].body", "must be a non-empty list"),
        ("[]", "model.layers", "must be a non-empty list"),
        ("[{type: conv, name: 'a.b', out_channels: 2, kernel: 1}]", "model.layers[0].name", "letters, digits"),
    ],
)  # fmt: skip
def test_bad_layer_lists(write_yaml, layers, path, message):
    file = write_yaml(LENET.replace("{arch: lenet5}", f"{{layers: {layers}}}"))
    with pytest.raises(SpecError) as exc:
        e2sim.load_workload(file)
    assert any(line.startswith(f"{file}: {path}: ") and message in line for line in problems(exc)), problems(exc)


def test_vgg_does_not_fit_mnist(write_yaml):
    with pytest.raises(SpecError, match=r"model: layer 'pool5': window 2 is larger than the padded input \(1"):
        e2sim.load_workload(write_yaml(LENET.replace("{arch: lenet5}", "{arch: vgg, depth: 11}")))


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (
            "pe_array: {rows: 4, cols: 4, dataflow: rs}",
            "pe_array.rf_bytes",
            "row-stationary (rs) needs scratchpads per PE",
        ),
        (
            "pe_array: {rows: 4, cols: 4, dataflow: ws, mac_bits: [8, 8]}",
            "pe_array.mac_bits",
            "must list distinct bit widths",
        ),
        ("pe_array: {rows: 4, cols: 4, dataflow: ws, mac_bits: [8, 64]}", "pe_array.mac_bits[1]", "from 2 to 32"),
        ("pe_array: {rows: 4, cols: 4, dataflow: ws, mac_bits: []}", "pe_array.mac_bits", "non-empty list"),
        ("buffers: {global: {size_kb: 0.001, banks: 4}}", "buffers.global.size_kb", "less than one 64-bit word"),
        ("buffers: {global: {size_kb: 8, word_bits: 12}}", "buffers.global.word_bits", "positive multiple of 8"),
        ("buffers: {global: {size_kb: 8}, ifmap: {size_kb: 8}}", "buffers.ifmap", "unknown key"),
        ("buffers: {}", "buffers.ifmap", "missing required key"),
        ("technology: 7nm", "technology", "must be one of 45nm, 65nm, fpga"),
    ],
)
def test_bad_hardware(write_yaml, change, path, message):
    doc = yaml.safe_load(HW)
    doc.update(yaml.safe_load(change))
    file = write_yaml(yaml.safe_dump(doc))
    with pytest.raises(SpecError) as exc:
        e2sim.load_hw(file)
    assert any(line.startswith(f"{file}: {path}: ") and message in line for line in problems(exc)), problems(exc)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        e2sim.load_workload(tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match="is a directory"):
        e2sim.load_hw(tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        e2sim.load_workload(bad)


def test_mappings_load_like_files():
    doc = yaml.safe_load(LENET)
    assert e2sim.load_workload(doc).source == "<workload mapping>"
    doc["training"]["batch_size"] = 0
    with pytest.raises(SpecError, match=r"^<workload mapping>: training.batch_size: must be a positive integer"):
        e2sim.load_workload(doc)


def test_specs_are_frozen():
    w = e2sim.load_workload("lenet5-mnist")
    with pytest.raises(AttributeError):
        w.training.lr = 1.0
