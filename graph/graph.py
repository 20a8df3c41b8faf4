"""The assessment graph: [plan →] observe → decide ⇄ tool → quantify → finalize.

``plan`` runs only when the input has a query (:mod:`tooliqa.graph.query`).

``decide`` and ``tool`` route with ``Command[Literal[...]]`` so the drawn graph
(``graph.get_graph().draw_mermaid()``) shows the real shape.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from .context import Context
from .nodes import decide, finalize, observe, plan, quantify, route_start, tool
from .state import InputState, State

__all__ = ["build_graph", "compile_graph", "graph"]


def build_graph(context_schema: type[Context] = Context) -> StateGraph[Any, Any, Any, Any]:
    """The uncompiled graph (add it to a parent graph, or compile with a checkpointer)."""
    builder = StateGraph(State, context_schema=context_schema, input_schema=InputState)
    builder.add_node("plan", plan)
    builder.add_node("observe", observe)
    builder.add_node("decide", decide)
    builder.add_node("tool", tool)
    builder.add_node("quantify", quantify)
    builder.add_node("finalize", finalize)
    builder.add_conditional_edges(START, route_start, ["plan", "observe"])
    builder.add_edge("plan", "observe")
    builder.add_edge("quantify", "finalize")
    builder.add_edge("finalize", END)
    return builder


def compile_graph(
    *,
    checkpointer: Any = None,
    context_schema: type[Context] = Context,
    name: str = "tooliqa",
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the assessment graph, optionally with a checkpointer (e.g. SqliteSaver)."""
    return build_graph(context_schema).compile(checkpointer=checkpointer, name=name)


#: The compiled graph; pass ``context=Context(model=...)`` when invoking it.
graph = compile_graph()
