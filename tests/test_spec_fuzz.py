"""Mutated specs never crash the loader: each gives a SpecError naming the file and the key.

Starting from every shipped spec, hypothesis replaces a value with a wrong one, adds an unknown
key, deletes a key, or corrupts the YAML text; the loader must answer with SpecError lines that
name the mutated key (or, for broken YAML, the file and line), and never raise anything else.
"""

import copy
import os

import pytest
import yaml
from conftest import HW_SPECS, WORKLOADS
from hypothesis import given, settings
from hypothesis import strategies as st

import e2sim
from e2sim import SpecError
from e2sim.config.reader import join_path
from e2sim.config.sweep import read_sweep_spec

DOCS = {
    "workload": [yaml.safe_load(p.read_text()) for p in WORKLOADS],
    "hardware": [yaml.safe_load(p.read_text()) for p in HW_SPECS],
}
TEXTS = [p.read_text() for p in WORKLOADS + HW_SPECS]
FUZZ_EXAMPLES = int(os.environ.get("E2SIM_FUZZ_EXAMPLES", "250"))  # per test; raise it to search harder
ALWAYS_INVALID = [-3, None, {"zz_bogus": 1}]  # wrong at every position of every spec
MAYBE_INVALID = [0, 2.5, True, "%%bad%%", [], [1, 2], "", 1e9]


def nodes(doc, path=()):
    """Every (key path, parent container, key) below ``doc``."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield (*path, key), doc, key
        yield from nodes(value, (*path, key))


def dotted(path) -> str:
    text = ""
    for key in path:
        text = join_path(text, key)
    return text


def load(kind, doc):
    return e2sim.load_workload(doc) if kind == "workload" else e2sim.load_hw(doc)


def error_lines(kind, doc):
    """The SpecError lines for ``doc`` ([] if it loads); any other exception fails the test."""
    try:
        load(kind, doc)
    except SpecError as exc:
        assert exc.problems, "a SpecError must carry its problems"
        return [str(p) for p in exc.problems]
    return []


def names(line: str, kind: str, path: str) -> bool:
    """Does the error line point at ``path`` (or a key inside it) of the right document?"""
    prefix = f"<{kind} mapping>: {path}"
    return line.startswith(prefix) and line[len(prefix) : len(prefix) + 1] in (":", ".", "[")


@st.composite
def mutated(draw, kind):
    doc = copy.deepcopy(draw(st.sampled_from(DOCS[kind])))
    where = list(nodes(doc))
    action = draw(st.sampled_from(["replace", "replace_maybe", "add_key", "delete"]))
    if action == "add_key":
        mappings = [((), doc)] + [(p, parent[k]) for p, parent, k in where if isinstance(parent[k], dict)]
        path, target = draw(st.sampled_from(mappings))
        target["zz_unknown_key"] = 1
        return action, doc, (*path, "zz_unknown_key")
    if action == "delete":
        path, parent, key = draw(st.sampled_from([w for w in where if isinstance(w[1], dict)]))
        del parent[key]
        return action, doc, path
    path, parent, key = draw(st.sampled_from(where))
    parent[key] = copy.deepcopy(draw(st.sampled_from(ALWAYS_INVALID if action == "replace" else MAYBE_INVALID)))
    return action, doc, path


def check_mutation(kind, mutation):
    action, doc, path = mutation
    lines = error_lines(kind, doc)
    key = dotted(path)
    if action in ("replace", "add_key"):
        assert lines, f"{action} at {key} was accepted"
        assert any(names(line, kind, key) for line in lines), (key, lines)
    else:  # "replace_maybe" may be valid, a deleted key may have been optional: if they fail, the error
        # is at the key, or at the section or layer it belongs to (shape changes show up downstream)
        ancestors = [dotted(path[:i]) for i in range(1, len(path) + 1)]
        if path[:2] == ("model", "layers"):
            ancestors.append("model.layers")
        assert not lines or any(names(line, kind, a) for line in lines for a in ancestors), (key, lines)
        if action == "delete" and len(path) > 1:
            assert all(names(line, kind, ancestors[0]) for line in lines), (key, lines)


@settings(max_examples=FUZZ_EXAMPLES)
@given(mutated("workload"))
def test_mutated_workloads_give_clean_errors(mutation):
    check_mutation("workload", mutation)


@settings(max_examples=FUZZ_EXAMPLES)
@given(mutated("hardware"))
def test_mutated_hardware_specs_give_clean_errors(mutation):
    check_mutation("hardware", mutation)


JUNK = ["\t", ": :", "[", "{", "}", "- ", "'", '"', "&a ", "*b ", "!!python/object:os.system ", "\n  x", "%", "\x00"]


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.sampled_from(TEXTS), st.data())
def test_corrupted_yaml_text_gives_clean_errors(tmp_path_factory, text, data):
    position = data.draw(st.integers(0, len(text)))
    how = data.draw(st.sampled_from(["insert", "truncate", "duplicate_line"]))
    if how == "insert":
        text = text[:position] + data.draw(st.sampled_from(JUNK)) + text[position:]
    elif how == "truncate":
        text = text[:position]
    else:
        lines = text.splitlines(keepends=True)
        i = data.draw(st.integers(0, len(lines) - 1))
        text = "".join(lines[: i + 1] + lines[i:])
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    loader = e2sim.load_workload if "dataset" in text or "model" in text else e2sim.load_hw
    try:
        loader(path)
    except SpecError as exc:
        assert all(str(p).startswith(f"{path}: ") for p in exc.problems), exc
        assert all("\n" not in str(p) for p in exc.problems)


EXTREMES = [float("inf"), float("-inf"), float("nan"), 1e308, 2**63, -0.0]


def numeric_leaves(doc):
    return [(path, parent, key) for path, parent, key in nodes(doc)
            if isinstance(parent[key], int | float) and not isinstance(parent[key], bool)]  # fmt: skip


@pytest.mark.parametrize("kind", ["workload", "hardware"])
def test_extreme_numbers_at_every_numeric_key_give_clean_errors(kind):
    """inf, -inf, nan, 1e308, 2**63 and -0.0 in place of every number of every shipped spec: a
    SpecError at that key, or a spec that lowers (workloads) and prices (hardware) — no traceback,
    no runaway memory (every numeric key is bounded)."""
    tried = accepted = 0
    for doc in DOCS[kind]:
        for index in range(len(numeric_leaves(doc))):
            for value in EXTREMES:
                mutated = copy.deepcopy(doc)
                path, parent, key = numeric_leaves(mutated)[index]
                parent[key] = value
                tried += 1
                try:
                    loaded = load(kind, mutated)
                except SpecError as exc:
                    assert any(names(str(p), kind, dotted(path)) or names(str(p), kind, dotted(path[:-1]))
                               for p in exc.problems), (dotted(path), value, exc)  # fmt: skip
                    continue
                accepted += 1
                try:
                    if kind == "workload":
                        e2sim.lower(loaded, batch_size=1)
                    else:
                        e2sim.estimate("lenet5-mnist", loaded)
                except SpecError:
                    pass
    assert tried > 200 and accepted < tried


SWEEP = """
workload: lenet5-mnist
hardware: systolic-16x16
batch: 8
axes:
  hw.pe_array.rows: [8, 16]
  hw.buffers.ifmap.size_kb: {log_range: [16, 64], steps: 2}
sampler: {random: {points: 2, seed: 1}}
"""


def test_extreme_numbers_in_sweep_specs_give_clean_errors(tmp_path):
    base = yaml.safe_load(SWEEP)
    for index in range(len(numeric_leaves(base))):
        for value in EXTREMES:
            doc = copy.deepcopy(base)
            path, parent, key = numeric_leaves(doc)[index]
            parent[key] = value
            spec = tmp_path / "sweep.yaml"
            spec.write_text(yaml.safe_dump(doc))
            try:
                read_sweep_spec(spec)
            except SpecError as exc:
                assert all(str(p).startswith(f"{spec}: ") and "\n" not in str(p) for p in exc.problems), exc
