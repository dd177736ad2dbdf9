"""Whether a policy applies to a model (a spec error otherwise, naming the policy key)."""

from __future__ import annotations

from e2sim.config.errors import SpecError
from e2sim.config.workload import Workload
from e2sim.graph.models import Model


def check_policy(workload: Workload, model: Model) -> None:
    if workload.policy.slu is not None and not any(layer.kind == "add" for layer in model.layers):
        raise SpecError.single(
            workload.source, "policy.slu",
            f"selective layer update gates residual blocks, and {model.name} has none (use a residual model)",
        )  # fmt: skip
