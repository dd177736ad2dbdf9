"""Reading YAML spec files strictly: duplicate keys are errors, ``5e-4`` is a float, problems name the file."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml

from e2sim.config.errors import SpecError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys and reads exponent floats without a dot (1e-4)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in mapping
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable mapping key {key!r}", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document; a syntax error becomes a SpecError naming ``source`` and the line.
    Parsed once per (text, source): a sweep resolves the same base specs for every point."""
    return copy.deepcopy(_parsed(text, source))


@functools.lru_cache(maxsize=256)
def _parsed(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(str(exc.problem or exc.context or "cannot parse").split())
        raise SpecError.single(source, where, f"invalid YAML: {what}") from None
    except yaml.YAMLError as exc:  # e.g. a character YAML does not allow
        raise SpecError.single(source, "", f"invalid YAML: {' '.join(str(exc).split())}") from None


def read_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file; a missing, unreadable or non-UTF-8 file is a SpecError naming it."""
    source = str(path)
    file = Path(path)
    if not file.exists():
        raise SpecError.single(source, "", "no such file")
    if file.is_dir():
        raise SpecError.single(source, "", "is a directory, expected a YAML file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError.single(source, "", "is not UTF-8 text") from None
    except OSError as exc:
        raise SpecError.single(source, "", f"cannot be read ({exc.strerror})") from None
    return parse_yaml(text, source)
