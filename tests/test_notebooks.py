"""Every notebook in notebooks/ executes top to bottom in a Jupyter kernel (nbclient), at the
small sizes it ships with, and gives the results it describes; notebooks are kept in git without
outputs."""

import json

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# per notebook: names whose values the last cell reports (expressions in its namespace)
PROBES = {
    "lowering": {"fwd_macs": 'summary["macs"]["fwd"]', "ratio": "backward_over_forward",
                 "top_elementwise": "max(elementwise_by_kind, key=elementwise_by_kind.get)",
                 "projection_extra": 'by_shortcut["projection"][0] - by_shortcut["zero_pad"][0]'},
    "validation": {"rows": 'len(report["rows"])', "static": "[static_sigma, static_mw]",
                   "energy": "[sigma_mj, energy_mj]"},
    "quickstart": {"accuracy": "accuracy", "energy_j": "energy_j", "estimate_j": 'totals["energy_j"]',
                   "iterations": 'report["iterations"]'},
    "policies": {"policies": "sorted(runs)", "savings": "savings",
                 "accuracy": '{name: r["accuracy"]["final"] for name, r in runs.items()}'},
    "sweep": {"points": "len(table)", "front": "len(front)", "done": "len(done)"},
    "onnx": {"macs": "lowered.macs('fwd') // lowered.batch_size", "utilisation": "utilisation",
             "iterations": "trained.iterations", "loss": "loss"},
}  # fmt: skip


def execute(path) -> dict:
    """Run the notebook in a fresh kernel (working directory: the repository) and return the
    values of its probes, read from a cell appended at the end."""
    notebook = nbformat.read(path, as_version=4)
    probes = PROBES[path.stem]
    code = "import json as _json\nprint(_json.dumps({" + ", ".join(f"{k!r}: {v}" for k, v in probes.items()) + "}))"
    notebook.cells.append(nbformat.v4.new_code_cell(code))
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "".join(out.get("text", "") for out in notebook.cells[-1].outputs if out.output_type == "stream")
    return json.loads(text.strip().splitlines()[-1])


def test_every_notebook_has_probes_and_no_outputs_in_git():
    assert {p.stem for p in NOTEBOOKS} == set(PROBES)
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip its outputs"


def test_lowering_notebook():
    found = execute(ROOT / "notebooks" / "lowering.ipynb")
    assert found["fwd_macs"] == 128 * 40_551_040
    assert 1.98 < found["ratio"] < 2.0
    assert found["top_elementwise"] == "batchnorm" and found["projection_extra"] == 2 * 131_072


def test_validation_notebook():
    found = execute(ROOT / "notebooks" / "validation.ipynb")
    assert found["rows"] >= 7
    assert 0 < found["static"][0] < found["static"][1] and 0 < found["energy"][0] < found["energy"][1]


def test_quickstart_notebook():
    found = execute(ROOT / "notebooks" / "quickstart.ipynb")
    assert found["accuracy"] > 0.8  # one epoch of LeNet-5 on the MNIST sample
    # the run prices the iterations that ran (with the zeros they had): close to iterations × the estimate
    assert 0.5 < found["energy_j"] / (found["iterations"] * found["estimate_j"]) < 1.2


def test_policies_notebook():
    found = execute(ROOT / "notebooks" / "policies.ipynb")
    assert found["policies"] == ["baseline", "eif+emp", "emp", "psg"]
    assert found["savings"]["baseline"] == 0
    assert all(found["savings"][p] > 0 for p in ("emp", "eif+emp"))  # pruning and filtering skip work
    assert all(a > 0.5 for a in found["accuracy"].values())


def test_sweep_notebook():
    found = execute(ROOT / "notebooks" / "sweep.ipynb")
    assert found["points"] == 54 and 0 < found["front"] <= found["done"] <= 54


def test_onnx_notebook():
    found = execute(ROOT / "notebooks" / "onnx.ipynb")
    # stem 32·3·32²·9; depthwise C·P²·9 and pointwise C·C'·P² per block; classifier 256·10
    blocks = [(32, 64, 32), (64, 128, 16), (128, 128, 16), (128, 256, 8)]
    assert found["macs"] == 32 * 3 * 1024 * 9 + sum(c * p * p * 9 + c * d * p * p for c, d, p in blocks) + 2560
    systolic = found["utilisation"]["systolic-32x32"]
    assert max(u for layer, u in systolic.items() if layer in ("conv2", "conv4")) < min(systolic["conv3"], 1)
    assert found["iterations"] == 2 and found["loss"] > 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_markdown_names_only_what_exists(path):
    """Every `e2sim ...` command a notebook's text shows is a real subcommand."""
    from e2sim.cli.main import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            for part in cell.source.split("`e2sim ")[1:]:
                assert part.split()[0].strip("`") in commands, f"{path.name}: e2sim {part[:40]}"
