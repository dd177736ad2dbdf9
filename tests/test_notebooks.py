"""Notebooks run top to bottom (their code cells, executed in order in one namespace)."""

import json

import pytest
from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def run_notebook(path, monkeypatch) -> dict:
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    namespace = run_notebook(path, monkeypatch)
    assert namespace, f"{path.name} has no code"


def test_lowering_notebook_results(monkeypatch):
    namespace = run_notebook(ROOT / "notebooks" / "lowering.ipynb", monkeypatch)
    assert namespace["summary"]["macs"]["fwd"] == 128 * 40_551_040
    assert 1.98 < namespace["backward_over_forward"] < 2.0
    assert max(namespace["elementwise_by_kind"], key=namespace["elementwise_by_kind"].get) == "batchnorm"
    assert namespace["by_shortcut"]["projection"][0] - namespace["by_shortcut"]["zero_pad"][0] == 2 * 131_072


def test_validation_notebook_results(monkeypatch):
    namespace = run_notebook(ROOT / "notebooks" / "validation.ipynb", monkeypatch)
    assert len(namespace["report"]["rows"]) >= 7
    assert 0 < namespace["static_sigma"] < namespace["static_mw"]
    assert 0 < namespace["sigma_mj"] < namespace["energy_mj"]
