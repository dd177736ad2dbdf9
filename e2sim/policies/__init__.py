"""Computation-skipping training policies as plug-ins. A policy changes what the kernels execute
and adds the ops of its own work to the lowered iteration; the counts that come out are what the
accelerator model prices. ``base`` is the contract; this module is the one place that registers
the built-in techniques (their order is the order in which their hooks run), the presets, and
the rules on which techniques do not compose. A user's policy registers the same way:
``e2sim.policies.register(MyPolicy)`` (see the README, "Writing a policy")."""

from __future__ import annotations

from e2sim.config.policy import Conflict, register_conflict, register_preset, register_technique, unregister_technique
from e2sim.policies.axtrain import ACTIVE_RADIUS, AxTrain
from e2sim.policies.base import Policy
from e2sim.policies.eif import Eif
from e2sim.policies.emp import Emp
from e2sim.policies.psg import Psg
from e2sim.policies.slu import Slu
from e2sim.policies.smd import Smd


def register(plugin: type[Policy]) -> type[Policy]:
    """Make ``plugin`` usable as ``policy: {<plugin.key>: {...}}``; its hooks run after those of
    the techniques registered before it. Returns the class (usable as a decorator)."""
    if not (isinstance(plugin, type) and issubclass(plugin, Policy)):
        raise TypeError(f"a policy plug-in must be a subclass of e2sim.policies.base.Policy, got {plugin!r}")
    register_technique(plugin)
    return plugin


def unregister(key: str) -> None:
    """Remove the plug-in registered under ``key`` (the presets' techniques stay)."""
    unregister_technique(key)


for _plugin in (Smd, Slu, Psg, Emp, Eif, AxTrain):
    register(_plugin)

register_conflict(Conflict(
    "axtrain.sensitivity_radius",
    lambda p: p.get("axtrain") is not None and p.get("axtrain").sensitivity_radius > 0 and p.get("slu") is not None,
    "AxTrain's active method does not compose with slu yet (its second pass would re-run the gates)",
))  # fmt: skip

_Q8 = {"weights": "int8", "activations": "int8", "errors": "int8", "gradients": "int16", "accumulator": "int32",
       "rounding": "stochastic"}  # fmt: skip
for _name, _block, _precision in (
    ("baseline", None, None),
    ("smd", {"smd": {}}, None),
    ("slu", {"slu": {}}, None),
    ("psg", {"psg": {}}, None),
    ("e2train", {"smd": {}, "slu": {}, "psg": {}}, None),
    ("emp", {"emp": {}}, None),
    ("eif", {"eif": {}}, None),
    ("eif+emp", {"emp": {}, "eif": {}}, None),
    ("eif+emp+q8", {"emp": {}, "eif": {}}, _Q8),  # int8 operands, int16 gradients, exact int32 sums
    ("axtrain-passive", {"axtrain": {"passive": True}}, None),
    ("axtrain-active", {"axtrain": {"passive": False, "sensitivity_radius": ACTIVE_RADIUS}}, None),
    ("axtrain", {"axtrain": {"passive": True, "sensitivity_radius": ACTIVE_RADIUS}}, None),
):
    register_preset(_name, _block, _precision)

__all__ = ["Policy", "register", "unregister"]
