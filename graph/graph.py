"""The assessment graph: [plan →] observe → decide ⇄ tool → quantify → finalize.

``plan`` runs only when the input has a query (:mod:`tooliqa.graph.query`).

``decide`` and ``tool`` route with ``Command[Literal[...]]`` so the drawn graph
(``graph.get_graph().draw_mermaid()``) shows the real shape.
"""

from __future__ import annotations

import functools
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from .context import Context
from .nodes import decide, finalize, observe, plan, quantify, route_start, tool
from .state import InputState, OutputState, State

__all__ = ["OutputState", "build_graph", "compile_graph", "graph"]


def _context_default(node: Any, schema: type[Context], default: list[Context]) -> Any:
    """``node`` with a :class:`Context` whatever the run gives: its own; else (no context,
    or a parent graph's context of another class) the parent context's ``tooliqa`` field
    when that holds one; else ``schema()`` (one instance per graph, made on first use:
    e.g. the app graph's classic backend)."""

    @functools.wraps(node)
    async def run(state: Any, runtime: Any) -> Any:
        ctx = runtime.context
        if not isinstance(ctx, Context):  # none, or a parent graph's own context
            nested = ctx.get("tooliqa") if isinstance(ctx, dict) else getattr(ctx, "tooliqa", None)
            if isinstance(nested, Context):
                ctx = nested
            else:
                if not default:
                    default.append(schema())
                ctx = default[0]
            runtime = runtime.override(context=ctx)
        return await node(state, runtime)

    return run


def build_graph(
    context_schema: type[Context] = Context, *, output_schema: type[Any] | None = None
) -> StateGraph[Any, Any, Any, Any]:
    """The uncompiled graph (add it to a parent graph, or compile with a checkpointer).
    A run without a context uses ``context_schema()``: for :class:`Context` that names no
    model (the first node says so), for :class:`tooliqa.api.AppContext` the classic backend.
    ``output_schema=OutputState`` returns only the ``assessment`` (for parent graphs and
    remote clients); by default the whole state comes back."""
    builder = StateGraph(
        State, context_schema=context_schema, input_schema=InputState, output_schema=output_schema
    )
    default: list[Context] = []
    for name, node in (("plan", plan), ("observe", observe), ("decide", decide), ("tool", tool),
                       ("quantify", quantify), ("finalize", finalize)):  # fmt: skip
        builder.add_node(name, _context_default(node, context_schema, default))
    builder.add_conditional_edges(START, route_start, ["plan", "observe"])
    builder.add_edge("plan", "observe")
    builder.add_edge("quantify", "finalize")
    builder.add_edge("finalize", END)
    return builder


def compile_graph(
    *,
    checkpointer: Any = None,
    context_schema: type[Context] = Context,
    output_schema: type[Any] | None = None,
    name: str = "tooliqa",
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the assessment graph, optionally with a checkpointer (e.g. SqliteSaver)
    and an output schema (:class:`OutputState`: the assessment only)."""
    return build_graph(context_schema, output_schema=output_schema).compile(
        checkpointer=checkpointer, name=name
    )


#: The compiled graph; pass ``context=Context(model=...)`` when invoking it.
graph = compile_graph()
