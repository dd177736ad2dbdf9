"""Every data file the package reads at run time is declared as package data, so that a
non-editable install (`pip install .`) carries it; the tests themselves run from the source tree."""

import configparser
import fnmatch

from conftest import ROOT


def test_every_package_data_file_is_declared():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["e2sim"].split(",")]
    package = ROOT / "e2sim"
    data = [p.relative_to(package).as_posix() for p in package.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]  # fmt: skip
    assert {"data/mnist_5k.csv.gz", "energy/tables/45nm.yaml", "specs/workloads/lenet5-mnist.yaml"} <= set(data)
    undeclared = [f for f in data if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert undeclared == []
