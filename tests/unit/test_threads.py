"""Runs on one thread (a checkpointer and one ``thread_id``) each assess their own input:
nothing of an earlier run (score, rubric, steps, messages, plan, query) leaks into a
later one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver

from tooliqa.api import AppContext, make_context
from tooliqa.graph import compile_graph

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IMAGES = ["astronaut_pristine.jpg", "coffee_blurred.jpg", "chelsea_noisy.jpg"]


def _inputs(name: str, query: str | None = None) -> dict:
    out: dict = {"image": (EXAMPLES / name).read_bytes(), "image_name": name}
    if query:
        out["query"] = query
    return out


def test_each_run_on_a_thread_assesses_its_own_image():
    ctx = make_context(max_rounds=1)
    fresh_graph = compile_graph(context_schema=AppContext)
    threaded = compile_graph(context_schema=AppContext, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "one"}}

    async def run():
        fresh = [await fresh_graph.ainvoke(_inputs(n), context=ctx) for n in IMAGES]
        reused = [await threaded.ainvoke(_inputs(n), config=config, context=ctx) for n in IMAGES]
        return fresh, reused

    fresh, reused = asyncio.run(run())
    assert len({f["assessment"]["score"] for f in fresh}) == 3  # three different images
    for f, r in zip(fresh, reused, strict=True):
        assert r["assessment"]["image"] == f["assessment"]["image"]
        assert r["assessment"]["score"] == f["assessment"]["score"]
        assert r["assessment"]["rubric"] == f["assessment"]["rubric"]
        assert len(r["steps"]) == len(f["steps"]) and len(r["messages"]) == len(f["messages"])
        assert r["usage"] == f["usage"] and len(r["protocol"]) == len(f["protocol"])


def test_a_question_does_not_carry_over_to_the_next_run():
    ctx = make_context(max_rounds=1)
    threaded = compile_graph(context_schema=AppContext, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "q"}}

    async def run():
        asked = await threaded.ainvoke(
            _inputs(IMAGES[1], "Is the cup sharp?"), config=config, context=ctx
        )
        plain = await threaded.ainvoke(_inputs(IMAGES[1]), config=config, context=ctx)
        return asked, plain

    asked, plain = asyncio.run(run())
    assert asked["assessment"]["query"] == "Is the cup sharp?"
    assert asked["assessment"]["query_answer"] is not None
    assert plain["assessment"]["query"] is None and plain["assessment"]["query_answer"] is None
    assert plain.get("plan") is None
