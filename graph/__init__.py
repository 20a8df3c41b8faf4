"""The Tool-IQA assessment graph (LangGraph): state, context, prompts, parsing,
nodes and the compiled graph, plus the :class:`Assessment` result type.

Embeddable on its own: imports ``tooliqa.tools`` and nothing above it.
"""

from .assessment import Assessment, ProtocolTurn, Step, Usage
from .context import DEFAULT_MAX_PIXELS, Context
from .graph import build_graph, compile_graph, graph
from .state import InputState, OutputState, State

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Assessment",
    "Context",
    "InputState",
    "OutputState",
    "ProtocolTurn",
    "State",
    "Step",
    "Usage",
    "build_graph",
    "compile_graph",
    "graph",
]
