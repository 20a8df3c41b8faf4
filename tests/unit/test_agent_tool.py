"""``tooliqa.as_tool()`` inside a real tool-calling agent loop (LangGraph's prebuilt
ReAct agent), driven by a scripted model."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from langchain_core.messages import ToolMessage
from langgraph.prebuilt import create_react_agent

import tooliqa
from tooliqa.graph.testing import ScriptedChatModel, tool_call_message

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# LangGraph 1.x points to langchain.agents.create_agent (the langchain package, not a
# dependency here); its prebuilt ReAct agent is the same tool-calling loop.
pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")


def _agent(calls, tool):
    replies = [
        tool_call_message("assess_image_quality", args, f"c{i}") for i, args in enumerate(calls)
    ]
    model = ScriptedChatModel.from_replies([*replies, "Done."])
    return create_react_agent(model, [tool])


def _results(state) -> list[dict]:
    return [json.loads(m.content) for m in state["messages"] if isinstance(m, ToolMessage)]


def test_an_agent_assesses_an_image_and_asks_a_question():
    tool = tooliqa.as_tool(root=EXAMPLES)
    agent = _agent(
        [{"image": "coffee_blurred.jpg"},
         {"image": str(EXAMPLES / "coffee_underexposed.jpg"), "question": "Is it too dark?"}],
        tool,
    )  # fmt: skip
    state = asyncio.run(agent.ainvoke({"messages": [("user", "How good are my photos?")]}))
    first, second = _results(state)
    assert first["image"] == "coffee_blurred.jpg" and 1 <= first["score"] <= 5
    assert first["rubric"] and len(first["rationale"]) <= 400 and "error" not in first
    assert second["answer"] and second["verdict"] in ("yes", "no", None)
    assert state["messages"][-1].content == "Done."


def test_failures_come_back_as_results_the_agent_can_read(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    tool = tooliqa.as_tool(root=tmp_path)
    agent = _agent(
        [{"image": "bad.jpg"}, {"image": "/etc/passwd"}, {"image": "../outside.png"}], tool
    )
    results = _results(asyncio.run(agent.ainvoke({"messages": [("user", "check")]})))
    assert [r["error_kind"] for r in results] == ["image", "image", "image"]
    assert "outside the folder" in results[1]["error"] and "outside" in results[2]["error"]
    assert all(r["score"] is None for r in results)


def test_base64_images_and_regions():
    data = base64.b64encode((EXAMPLES / "rocket_jpeg_q6.jpg").read_bytes()).decode()
    tool = tooliqa.as_tool(regions=True)
    out = asyncio.run(tool.ainvoke({"image": data}))
    assert 1 <= out["score"] <= 5 and isinstance(out["regions"], list)
    assert (
        asyncio.run(tool.ainvoke({"image": f"data:image/jpeg;base64,{data}"}))["score"]
        == out["score"]
    )
