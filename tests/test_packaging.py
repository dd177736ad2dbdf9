"""Every data file the package reads at run time is declared as package data, so that a
non-editable install (`pip install .`) carries it; the tests themselves run from the source tree."""

import configparser
import fnmatch
import os
from pathlib import Path

from conftest import ROOT


def test_every_package_data_file_is_declared():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["e2sim"].split(",")]
    package = ROOT / "e2sim"
    data = [
        (Path(folder) / name).relative_to(package).as_posix()
        for folder, dirs, files in os.walk(package, followlinks=True)  # specs/ holds links to the spec folders
        for name in files
        if not name.endswith((".py", ".pyc")) and "__pycache__" not in folder
    ]
    assert {"data/mnist_5k.csv.gz", "energy/tables/45nm.yaml", "specs/workloads/lenet5-mnist.yaml"} <= set(data)
    undeclared = [f for f in data if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert undeclared == []
