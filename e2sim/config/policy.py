"""Training policies (what a run skips or approximates) as a spec: a preset name, or a block per
technique. The techniques themselves are plug-ins (``e2sim.policies``) that register here how their
block is read; this module knows none of them by name.

The registry is the one place that holds, in registration order (which is also the order in which
their hooks run): each technique's reader, the presets, and the rules on which techniques do not
compose."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from e2sim.config.errors import SpecError
from e2sim.config.precision import PrecisionSpec, read_precision
from e2sim.config.reader import ProblemLog, Section, one_of, string


class TechniqueReader(Protocol):
    """What the spec reader needs of a policy plug-in: its key under ``policy:`` and a reader."""

    key: str

    @classmethod
    def read_spec(cls, s: Section) -> Any:
        """The technique's frozen spec from its block ``s``; every problem goes to ``s.log``
        (unknown keys too: call ``s.finish``)."""


@dataclass(frozen=True)
class PolicySpec:
    """What a training run skips or approximates; ``name`` is the preset (or the techniques joined
    by '+'); ``specs``: (technique key, its spec) pairs. ``precision``: a preset's number formats,
    replacing the workload's (``eif+emp+q8``)."""

    name: str = "baseline"
    specs: tuple[tuple[str, Any], ...] = ()
    precision: PrecisionSpec | None = None

    @property
    def techniques(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.specs)

    @classmethod
    def of(cls, name: str, **specs: Any) -> PolicySpec:
        """A policy built in Python: ``PolicySpec.of("smd+psg", smd=SmdSpec(), psg=PsgSpec())``."""
        return cls(name, tuple(specs.items()))

    def get(self, key: str) -> Any:
        """The spec of technique ``key``, or None when the policy does not use it."""
        return next((spec for k, spec in self.specs if k == key), None)


@dataclass(frozen=True)
class Conflict:
    """Techniques that do not compose: ``applies(policy)`` true is a spec error at ``policy.{key}``."""

    key: str
    applies: Callable[[PolicySpec], bool]
    message: str


_TECHNIQUES: dict[str, TechniqueReader] = {}
_PRESETS: dict[str, tuple[Mapping | None, Mapping | None]] = {}
_READ_PRESETS: dict[str, PolicySpec] = {}
_CONFLICTS: list[Conflict] = []


def register_technique(plugin: TechniqueReader) -> None:
    """Add a technique; its key must be new (a user's plug-in may not replace a built-in)."""
    key = getattr(plugin, "key", None)
    if not isinstance(key, str) or not key.isidentifier():
        raise ValueError(f"a policy plug-in needs a key that is an identifier, got {key!r}")
    if key in _TECHNIQUES or key in ("name", "precision"):
        raise ValueError(f"a policy technique named {key!r} is already registered")
    _TECHNIQUES[key] = plugin


def unregister_technique(key: str) -> None:
    """Remove a technique (a plug-in registered for a while, e.g. by a test); presets keep theirs."""
    if any(key in (dict(block or {})) for block, _ in _PRESETS.values()):
        raise ValueError(f"technique {key!r} is used by a preset and stays registered")
    del _TECHNIQUES[key]


def technique(key: str) -> TechniqueReader:
    return _TECHNIQUES[key]


def technique_keys() -> tuple[str, ...]:
    """Every registered technique, in registration (and hook) order."""
    return tuple(_TECHNIQUES)


def register_preset(name: str, block: Mapping | None, precision: Mapping | None = None) -> None:
    """A named policy: ``block`` as under ``policy:`` (None: no technique); ``precision`` a
    precision block that replaces the workload's."""
    if name in _PRESETS:
        raise ValueError(f"a policy preset named {name!r} is already registered")
    _PRESETS[name] = (block, precision)


def preset_block(name: str) -> tuple[Mapping | None, Mapping | None]:
    """(policy block, precision block) of the preset ``name``, as registered."""
    return _PRESETS[name]


def preset_names() -> tuple[str, ...]:
    return tuple(_PRESETS)


def preset(name: str) -> PolicySpec:
    """The preset ``name``, read (and checked) once."""
    if name not in _READ_PRESETS:
        block, precision = _PRESETS[name]
        log = ProblemLog(f"preset {name}")
        spec = PolicySpec(name) if block is None else read_policy(Section({"policy": dict(block)}, "", log), "policy")
        formats = read_precision(Section(dict(precision), "precision", log)) if precision is not None else None
        log.raise_if_any()
        _READ_PRESETS[name] = PolicySpec(name, spec.specs, formats)
    return _READ_PRESETS[name]


def register_conflict(conflict: Conflict) -> None:
    _CONFLICTS.append(conflict)


def policy_conflict(policy: PolicySpec) -> tuple[str, str] | None:
    """(key under ``policy``, message) for techniques that do not compose, or None."""
    unknown = [key for key in policy.techniques if key not in _TECHNIQUES]
    if unknown:
        return unknown[0], f"no such technique (known: {', '.join(_TECHNIQUES)})"
    for conflict in _CONFLICTS:
        if conflict.applies(policy):
            return conflict.key, conflict.message
    return None


def check_policy_spec(policy: PolicySpec, source: str) -> None:
    """A policy built in Python skips the reader: the same composition rules, as a SpecError."""
    conflict = policy_conflict(policy)
    if conflict is not None:
        raise SpecError.single(source, f"policy.{conflict[0]}", conflict[1])


def read_policy(s: Section, key: str) -> PolicySpec | None:
    """``key`` holds a preset name or a block per technique: ``{smd: {drop_probability: 0.5}, psg: {}}``."""
    if not s.has(key):
        s.read(key, string, default=None)
        return preset("baseline")
    if isinstance(s.data[key], str):
        name = s.read(key, one_of(*_PRESETS))
        return preset(name) if name else None
    block = s.section(key)
    if block is None:
        return None
    # a bare ``smd:`` (null) asks for the technique with its defaults
    block = Section({k: ({} if v is None and k in _TECHNIQUES else v) for k, v in block.data.items()},
                    block.path, block.log)  # fmt: skip
    specs = []
    for name, plugin in _TECHNIQUES.items():
        section = block.section(name, default=None)
        if section is not None:
            specs.append((name, plugin.read_spec(section)))
    block.finish(f" (techniques: {', '.join(_TECHNIQUES)})")
    if not specs and not block.log.problems:
        block.log.add(block.path, f"name at least one technique ({', '.join(_TECHNIQUES)}) or use a preset")
    policy = PolicySpec("+".join(name for name, _ in specs) or "baseline", tuple(specs))
    conflict = policy_conflict(policy)
    if conflict is not None:
        block.log.add(f"{block.path}.{conflict[0]}", conflict[1])
    return policy

