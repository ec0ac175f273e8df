"""Graph → graph transforms on aten FX graphs, the op classes and the fusion planner."""

from ait_dynamo.passes.decompositions import decomposition_table
from ait_dynamo.passes.pipeline import PASSES, run_passes

__all__ = ["PASSES", "decomposition_table", "run_passes"]
