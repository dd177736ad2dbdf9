"""Every policy preset's `e2sim run` report, byte for byte, against reports recorded in
tests/data/policy_goldens (a short seeded run of a small ResNet on the embedded MNIST sample).

Set E2SIM_WRITE_GOLDENS=1 to record them again (only after a change that is meant to move them)."""

import json
import os
from pathlib import Path

import pytest

import e2sim

GOLDENS = Path(__file__).parent / "data" / "policy_goldens"
WORKLOAD = {
    "name": "golden-resnet8",
    "dataset": {"name": "mnist5k"},
    "model": {"arch": "resnet", "depth": 8, "base_channels": 4},
    "training": {"batch_size": 256, "epochs": 1, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                 "schedule": "cosine", "seed": 7},
    "precision": {"weights": "int8", "activations": "int8", "errors": "int8", "gradients": "int16",
                  "accumulator": "int32", "rounding": "stochastic"},
}  # fmt: skip


PRESETS = ("baseline", "smd", "slu", "psg", "e2train", "emp", "eif", "eif+emp", "eif+emp+q8", "axtrain-passive",
           "axtrain-active", "axtrain")  # fmt: skip
STRETCHED = ("smd", "e2train")


def report_text(preset: str) -> str:
    hw = "axtrain-65nm" if preset.startswith("axtrain") else "zedboard"
    epochs = 3 if preset in STRETCHED else 1  # 3 epochs stretched by 4/3: 4 whole epochs
    report = e2sim.run(WORKLOAD, hw, preset, epochs=epochs, progress=False).to_dict()
    return json.dumps(report, indent=1) + "\n"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E2SIM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("preset", PRESETS)
def test_run_report_is_byte_identical_to_the_recorded_one(preset):
    path = GOLDENS / f"{preset}.json"
    text = report_text(preset)
    if os.environ.get("E2SIM_WRITE_GOLDENS"):
        path.write_text(text)
    assert text == path.read_text(), f"{preset}: the run report differs from {path}"
