"""The package's layering, read from the source (an AST walk over every module's imports):
cli → api → studies → {graph, train, policies, schedule, energy, report} → hw/config; policies never import
train; nothing under train (nor the executor's callers: api, report) names a policy; kernels import
only numpy, numba and the standard library; no package attribute shadows a submodule."""

import ast
import importlib
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import e2sim
import e2sim.policies  # registers the built-in techniques, as e2sim.api does
from e2sim.config.policy import technique_keys

ROOT = Path(e2sim.__file__).parent
# Names that would mean a module knows a specific built-in technique (the papers' names included).
POLICY_NAMES = re.compile(r"\b(smd|slu|psg|emp|eif|axtrain|e2-?train|early instance|error-map|selective layer|"
                          r"mini-batch dropping|sign gradient)\b", re.IGNORECASE)  # fmt: skip


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names; ``from x import y`` gives x and x.y)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def e2sim_imports(path: Path) -> set[str]:
    return {n for n in imports(path) if n == "e2sim" or n.startswith("e2sim.")}


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


MODULES = modules()


def test_policies_never_import_train():
    for name, path in MODULES.items():
        if under(name, "e2sim.policies"):
            bad = [n for n in e2sim_imports(path) if under(n, "e2sim.train")]
            assert not bad, f"{name} imports {bad}: policies must not depend on the training package"


@pytest.mark.parametrize("package", ["e2sim.train", "e2sim.api", "e2sim.studies", "e2sim.report", "e2sim.energy",
                                     "e2sim.graph", "e2sim.schedule", "e2sim.cli"])  # fmt: skip
def test_nothing_outside_the_policies_names_one(package):
    keys = set(technique_keys())
    assert {"smd", "slu", "psg", "emp", "eif", "axtrain"} <= keys  # the built-ins are registered
    for name, path in MODULES.items():
        if under(name, package):
            text = path.read_text()
            hits = [m.group(0) for m in POLICY_NAMES.finditer(text)]
            assert not hits, f"{name} names a policy: {sorted(set(hits))}"


def test_cli_goes_through_the_api():
    allowed = ("e2sim.api", "e2sim.report")
    for name, path in MODULES.items():
        if under(name, "e2sim.cli"):
            for n in e2sim_imports(path):
                assert n in ("e2sim", "e2sim.__version__", "e2sim.api") or under(n, "e2sim.cli") or any(
                    under(n, a) for a in allowed), (name, n)  # fmt: skip


def test_kernels_import_only_numpy_and_numba():
    stdlib = set(sys.stdlib_module_names)
    for name, path in MODULES.items():
        if under(name, "e2sim.kernels"):
            for n in imports(path):
                top = n.split(".")[0]
                assert top in ("numpy", "numba", "__future__") or top in stdlib, f"{name} imports {n}"


LAYERS = {  # a module may import from its own layer and the layers below it
    "e2sim.cli": 6, "e2sim.api": 5, "e2sim.studies": 4, "e2sim.report": 3, "e2sim.train": 2, "e2sim.policies": 2,
    "e2sim.energy": 2, "e2sim.schedule": 2, "e2sim.graph": 2, "e2sim.counting": 1, "e2sim.process": 1,
    "e2sim.functional": 2, "e2sim.functional_gemm": 2, "e2sim.functional_layers": 2, "e2sim.numerics": 1,
    "e2sim.hw": 0, "e2sim.config": 0, "e2sim.kernels": 0,
}  # fmt: skip


def layer_of(name: str) -> int | None:
    return next((level for package, level in LAYERS.items() if under(name, package)), None)


def test_dependencies_point_down():
    for name, path in MODULES.items():
        mine = layer_of(name)
        if mine is None:
            continue
        for n in e2sim_imports(path):
            theirs = layer_of(n)
            assert theirs is None or theirs <= mine, f"{name} (layer {mine}) imports {n} (layer {theirs})"


def test_no_package_attribute_shadows_a_module():
    import e2sim.train.loop

    assert e2sim.train.loop.train.__module__ == "e2sim.train.loop"
    for info in pkgutil.walk_packages(e2sim.__path__, "e2sim."):
        if info.name.endswith("__main__"):  # running it is the command line
            continue
        module = importlib.import_module(info.name)
        parent, _, child = info.name.rpartition(".")
        assert getattr(sys.modules[parent], child) is module, f"{parent}.{child} is not the module {info.name}"


def test_domain_objects_pickle_and_hash():
    import pickle

    workload, hw = e2sim.load_workload("resnet20-cifar10"), e2sim.load_hw("axtrain-65nm")
    graph = e2sim.lower("lenet5-mnist")
    for thing in (workload, hw, graph):
        again = pickle.loads(pickle.dumps(thing))
        assert again == thing and hash(again) == hash(thing)
    estimate = pickle.loads(pickle.dumps(e2sim.estimate("lenet5-mnist", "zedboard")))
    assert estimate.energy_j == e2sim.estimate("lenet5-mnist", "zedboard").energy_j
