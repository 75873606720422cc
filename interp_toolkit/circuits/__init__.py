"""Circuit discovery on real tasks: tasks, the edge-level circuit graph, edge-scoring methods,
MIB-style faithfulness (CPR / CMD) and the ``CircuitResult`` report."""

from .discover import DEFAULT_METHODS, discover_circuit
from .evaluate import (SELECTIONS, SIZES, areas, circuits_for, faithfulness, faithfulness_curve,
                       faithfulness_curves)
from .graph import CircuitGraph
from .methods import ABLATIONS, METHODS, MethodError, Setting
from .result import CircuitResult
from .tasks import TASKS, PromptBatch, TaskData, TaskError, build_task

__all__ = ["discover_circuit", "DEFAULT_METHODS", "CircuitGraph", "CircuitResult", "METHODS", "ABLATIONS",
           "MethodError", "Setting", "SIZES", "SELECTIONS", "areas", "circuits_for", "faithfulness",
           "faithfulness_curve", "faithfulness_curves", "TASKS", "TaskData", "TaskError", "PromptBatch", "build_task"]
