"""Layer IR, model zoo, and the lowering of one training iteration to a dataflow graph."""

from e2sim.graph.invariants import GraphError, check_graph, verify
from e2sim.graph.ir import ConvShape, GemmShape, Op, Tensor, TrainingGraph
from e2sim.graph.lowering import lower
from e2sim.graph.models import Model, build_model

__all__ = [
    "ConvShape", "GemmShape", "GraphError", "Model", "Op", "Tensor", "TrainingGraph",
    "build_model", "check_graph", "lower", "verify",
]  # fmt: skip
