"""The assessment graph driven by a scripted chat model: every path."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from tooliqa.graph import Assessment, Context, build_graph, compile_graph, graph
from tooliqa.graph.prompts import FINAL_PROMPT, GATE_PROMPT, REPAIR_PROMPT
from tooliqa.graph.testing import ScriptedChatModel, tool_call_message
from tooliqa.tools import BLOBS, apply_gamma, decode_image

from _support import RUBRIC_REPLY


def run(model: ScriptedChatModel, image: bytes, **ctx) -> Assessment:
    out = asyncio.run(
        graph.ainvoke({"image": image, "image_name": "t.png"}, context=Context(model=model, **ctx))
    )
    return Assessment.model_validate(out["assessment"])


def images_in(message) -> list[bytes]:
    if isinstance(message.content, str):
        return []
    out = []
    for block in message.content:
        if isinstance(block, dict) and block.get("type") == "image_url":
            out.append(base64.b64decode(block["image_url"]["url"].split(",", 1)[1]))
    return out


def text_of(message) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(b.get("text", "") for b in message.content if isinstance(b, dict))


def test_direct_answer(image_bytes):
    m = ScriptedChatModel.from_replies(
        [RUBRIC_REPLY, "<thinking>fine</thinking><answer>3.20</answer>"]
    )
    a = run(m, image_bytes)
    assert a.score == 3.2 and a.steps == [] and a.error is None
    assert a.rubric == {
        "sharpness": "medium",
        "noise": "none",
        "artifacts": "minor",
        "exposure": "poor",
        "visibility": "obscured",
    }
    assert a.rationale == "fine" and a.backend == "scripted" and a.usage.model_calls == 2
    first, gate = m.calls
    assert images_in(first["messages"][1]) == [image_bytes]  # original sent unchanged (small PNG)
    assert "tools" not in first["kwargs"]
    assert [s["function"]["name"] for s in gate["kwargs"]["tools"]] == [
        "magnifier",
        "gamma_corrector",
    ]
    assert text_of(gate["messages"][-1]) == GATE_PROMPT


def test_magnifier_then_answer(image_bytes, image_array):
    m = ScriptedChatModel.from_replies(
        [
            RUBRIC_REPLY,
            tool_call_message("magnifier", {"bbox": [0, 0, 500, 500]}, "c1"),
            "<answer>2.80</answer>",
        ]
    )
    a = run(m, image_bytes)
    assert a.score == 2.8 and len(a.steps) == 1
    step = a.steps[0]
    assert (step.tool, step.ok, step.box, step.source, step.round) == (
        "magnifier",
        True,
        [0, 0, 160, 120],
        "native",
        1,
    )
    history = m.calls[2]["messages"]
    tool_msg, user_turn = history[-2], history[-1]
    assert isinstance(tool_msg, ToolMessage) and tool_msg.tool_call_id == "c1"
    assert isinstance(user_turn, HumanMessage)
    (view,) = images_in(user_turn)
    crop = decode_image(view).rgb
    assert crop.shape == (480, 640, 3)  # 160x120 crop enlarged 4x
    assert GATE_PROMPT in text_of(user_turn) and "Tool rounds left: 1" in text_of(user_turn)


def test_gamma_twice_then_forced_answer_at_limit(image_bytes, image_array):
    m = ScriptedChatModel.from_replies(
        [
            RUBRIC_REPLY,
            tool_call_message("gamma_corrector", {"mode": "brighten"}, "g1"),
            tool_call_message("gamma_corrector", {"gamma": 0.3}, "g2"),
            "<thinking>shadows hide detail</thinking><answer>2.10</answer>",
        ]
    )
    a = run(m, image_bytes)
    assert a.score == 2.1 and a.forced_answer
    assert [(s.tool, s.gamma) for s in a.steps] == [
        ("gamma_corrector", 0.5),
        ("gamma_corrector", 0.3),
    ]
    final_call = m.calls[3]
    assert "tools" not in final_call["kwargs"]  # no tools at the limit
    last = final_call["messages"][-1]
    assert FINAL_PROMPT in text_of(last) and GATE_PROMPT not in text_of(last)
    (view,) = images_in(last)
    np.testing.assert_array_equal(decode_image(view).rgb, apply_gamma(image_array, 0.3))


def test_invalid_bbox_becomes_failure_observation_then_recovers(image_bytes):
    m = ScriptedChatModel.from_replies(
        [
            RUBRIC_REPLY,
            tool_call_message("magnifier", {"bbox": [0, 0, 5, 5]}, "bad"),
            tool_call_message("magnifier", {"bbox": [100, 100, 600, 600]}, "good"),
            "<answer>3.00</answer>",
        ]
    )
    a = run(m, image_bytes, max_tool_rounds=3)
    assert a.score == 3.0 and [s.ok for s in a.steps] == [False, True]
    assert "too small" in a.steps[0].message
    failure_turn = m.calls[2]["messages"][-1]
    assert images_in(failure_turn) == []
    assert "Tool call failed" in text_of(failure_turn) and "used up a tool round" in text_of(
        failure_turn
    )
    assert any("too small" in e for e in a.errors)


def test_invalid_calls_count_as_rounds(image_bytes):
    bad = '<tool_call>{"name": "magnifier", "arguments": {bbox: [1,2</tool_call>'
    m = ScriptedChatModel.from_replies(
        [RUBRIC_REPLY, bad, tool_call_message("zoom", {"bbox": [1, 1, 2, 2]}), "<answer>4</answer>"]
    )
    a = run(m, image_bytes)
    assert a.score == 4.0 and a.forced_answer and [s.ok for s in a.steps] == [False, False]
    assert "not valid JSON" in a.steps[0].message
    assert FINAL_PROMPT in text_of(m.calls[3]["messages"][-1])


def test_text_protocol_tool_call(image_bytes):
    call = '<thinking>zoom</thinking><tool_call>{"name": "magnifier", "arguments": {"bbox": [0, 0, 1000, 1000]}}</tool_call>'
    m = ScriptedChatModel.from_replies([RUBRIC_REPLY, call, "<answer>3.5</answer>"])
    a = run(m, image_bytes, tool_protocol="text")
    assert a.score == 3.5 and a.steps[0].source == "text" and a.steps[0].box == [0, 0, 320, 240]
    system = text_of(m.calls[0]["messages"][0])
    assert "<tools>" in system and '"name": "magnifier"' in system
    assert "tools" not in m.calls[1]["kwargs"]
    turn = m.calls[2]["messages"][-1]
    assert not any(isinstance(x, ToolMessage) for x in m.calls[2]["messages"])
    assert text_of(turn).startswith("<tool_response>") and len(images_in(turn)) == 1


@pytest.mark.parametrize(
    "gate_reply, repaired, expected",
    [
        ("The photo looks fine to me.", "<answer>3.3</answer>", 3.3),  # no tags
        ("", "<answer>2.0</answer>", 2.0),  # empty
        ("<answer>7</answer>", "<answer>4.5/5</answer>", 4.5),  # out of range, then x/5
    ],
)
def test_malformed_gate_reply_is_repaired(image_bytes, gate_reply, repaired, expected):
    m = ScriptedChatModel.from_replies([RUBRIC_REPLY, gate_reply, repaired])
    a = run(m, image_bytes)
    assert a.score == expected and a.error is None
    repair_turn = m.calls[2]["messages"][-1]
    assert REPAIR_PROMPT.splitlines()[0].split("(")[0] in text_of(repair_turn)
    assert any("gate reply unusable" in e for e in a.errors)


def test_unrepairable_answer_gives_no_score_and_an_error(image_bytes):
    m = ScriptedChatModel.from_replies(
        [RUBRIC_REPLY, "<answer>7</answer>", "<answer>9</answer>", "<answer>nope</answer>"]
    )
    a = run(m, image_bytes, answer_retries=2)
    assert a.score is None and not a.ok
    assert a.error == "no valid score after the repair prompt(s)"
    assert len(m.calls) == 4  # rubric, gate, two repairs
    assert "final answer unusable: no number in the answer" in a.errors


def test_no_repair_when_retries_are_zero(image_bytes):
    m = ScriptedChatModel.from_replies([RUBRIC_REPLY, "no score here"])
    a = run(m, image_bytes, answer_retries=0)
    assert a.score is None and len(m.calls) == 2


def test_unparseable_rubric_is_recorded_not_fatal(image_bytes):
    m = ScriptedChatModel.from_replies(["asdf", "<answer>3</answer>"])
    a = run(m, image_bytes)
    assert a.score == 3.0 and a.rubric == {} and "rubric note could not be parsed" in a.errors


def test_extra_calls_in_one_turn_are_ignored_with_a_note(image_bytes):
    from langchain_core.messages import AIMessage

    two = AIMessage(
        content="",
        tool_calls=[
            {"name": "gamma_corrector", "args": {"mode": "darken"}, "id": "a"},
            {"name": "magnifier", "args": {"bbox": [0, 0, 500, 500]}, "id": "b"},
        ],
    )
    m = ScriptedChatModel.from_replies([RUBRIC_REPLY, two, "<answer>3</answer>"])
    a = run(m, image_bytes)
    assert [s.tool for s in a.steps] == ["gamma_corrector"]
    assert "1 more ignored" in a.steps[0].message


def test_no_tools_goes_straight_to_the_answer(image_bytes):
    m = ScriptedChatModel.from_replies([RUBRIC_REPLY, "<answer>3.9</answer>"])
    a = run(m, image_bytes, max_tool_rounds=0)
    assert a.score == 3.9 and a.forced_answer
    assert (
        FINAL_PROMPT in text_of(m.calls[1]["messages"][-1]) and "tools" not in m.calls[1]["kwargs"]
    )


def test_query_structured_output_and_sampling_reach_the_model(image_bytes):
    m = ScriptedChatModel.from_replies(
        ['{"sharpness": {"level": "high", "note": "ok"}}', '{"thinking": "t", "score": 4.1}']
    )
    out = asyncio.run(
        graph.ainvoke(
            {"image": image_bytes, "image_question": "Is the sky noisy?"},
            context=Context(
                model=m, structured_output=True, max_tool_rounds=0, sampling={"temperature": 0.7}
            ),
        )
    )
    a = Assessment.model_validate(out["assessment"])
    assert a.score == 4.1 and a.query == "Is the sky noisy?" and a.rubric == {"sharpness": "high"}
    assert "Is the sky noisy?" in text_of(m.calls[0]["messages"][1])
    fmt = m.calls[0]["kwargs"]["response_format"]
    assert (
        fmt["type"] == "json_schema" and "sharpness" in fmt["json_schema"]["schema"]["properties"]
    )
    assert m.calls[1]["kwargs"]["response_format"]["json_schema"]["name"] == "final_answer"
    assert m.calls[0]["kwargs"]["temperature"] == 0.7


def test_tool_choice_and_strict_are_bound(image_bytes):
    m = ScriptedChatModel.from_replies([RUBRIC_REPLY, "<answer>3</answer>"])
    run(m, image_bytes, tool_choice="required", strict_tools=True)
    kw = m.calls[1]["kwargs"]
    assert kw["tool_choice"] == "required" and kw["strict"] is True
    assert all(s["function"]["strict"] for s in kw["tools"])


def test_disabled_tools_are_not_offered_nor_run(image_bytes):
    m = ScriptedChatModel.from_replies(
        [
            RUBRIC_REPLY,
            tool_call_message("gamma_corrector", {"mode": "darken"}),
            "<answer>3</answer>",
        ]
    )
    a = run(m, image_bytes, enabled_tools=("magnifier",))
    assert [s["function"]["name"] for s in m.calls[1]["kwargs"]["tools"]] == ["magnifier"]
    assert not a.steps[0].ok and "unknown tool" in a.steps[0].message


def test_image_errors_raise_clearly():
    from tooliqa.tools import ImageError

    m = ScriptedChatModel.from_replies([])
    with pytest.raises(ImageError, match="not a recognised image format"):
        asyncio.run(graph.ainvoke({"image": b"not an image"}, context=Context(model=m)))
    assert m.calls == []


def test_missing_model_is_a_clear_error(image_bytes):
    with pytest.raises(ValueError, match=r"Context\.model is not set"):
        asyncio.run(graph.ainvoke({"image": image_bytes}, context=Context()))


def test_streaming_updates_and_custom_events(image_bytes):
    m = ScriptedChatModel.from_replies(
        [
            RUBRIC_REPLY,
            tool_call_message("magnifier", {"bbox": [0, 0, 900, 900]}),
            "<answer>3.6</answer>",
        ]
    )

    async def collect():
        seen = []
        async for mode, chunk in graph.astream(
            {"image": image_bytes}, context=Context(model=m), stream_mode=["updates", "custom"]
        ):
            seen.append((mode, chunk))
        return seen

    seen = asyncio.run(collect())
    nodes = [next(iter(c)) for mode, c in seen if mode == "updates"]
    assert nodes == ["observe", "decide", "tool", "decide", "quantify", "finalize"]
    events = [c["type"] for mode, c in seen if mode == "custom"]
    assert events == ["rubric", "decision", "tool", "decision", "final"]
    tool_event = next(c for mode, c in seen if mode == "custom" and c["type"] == "tool")
    assert BLOBS.get(tool_event["step"]["view"]).startswith(b"\x89PNG")  # a reference


def test_abatch_with_max_concurrency(image_bytes, image_array):
    from _support import png_bytes

    other = png_bytes(255 - image_array)
    m = ScriptedChatModel.from_replies([RUBRIC_REPLY, "<answer>3</answer>"] * 3)
    results = asyncio.run(
        graph.abatch(
            [{"image": image_bytes}, {"image": other}, {"image": image_bytes}],
            config={"max_concurrency": 1},
            context=Context(model=m),
        )
    )
    assert [r["assessment"]["score"] for r in results] == [3.0, 3.0, 3.0]


def test_usable_as_a_subgraph_node(image_bytes):
    class Parent(TypedDict, total=False):
        image: bytes
        assessment: dict
        verdict: str

    def judge(state: Parent) -> dict:
        return {"verdict": "keep" if state["assessment"]["score"] >= 3 else "drop"}

    parent = StateGraph(Parent, context_schema=Context)
    parent.add_node("assess", compile_graph())
    parent.add_node("judge", judge)
    parent.add_edge(START, "assess")
    parent.add_edge("assess", "judge")
    parent.add_edge("judge", END)
    m = ScriptedChatModel.from_replies([RUBRIC_REPLY, "<answer>3.5</answer>"])
    out = asyncio.run(parent.compile().ainvoke({"image": image_bytes}, context=Context(model=m)))
    assert out["verdict"] == "keep" and out["assessment"]["score"] == 3.5


def test_checkpointed_in_a_real_sqlite_database(image_bytes, tmp_path):
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    db = tmp_path / "checkpoints.sqlite"
    m = ScriptedChatModel.from_replies(
        [
            RUBRIC_REPLY,
            tool_call_message("magnifier", {"bbox": [0, 0, 800, 800]}),
            "<answer>3.7</answer>",
        ]
    )

    async def go():
        async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
            g = build_graph().compile(checkpointer=saver)
            cfg = {"configurable": {"thread_id": "img-1"}}
            await g.ainvoke({"image": image_bytes}, config=cfg, context=Context(model=m))
        async with AsyncSqliteSaver.from_conn_string(
            str(db)
        ) as saver:  # reopen: state was persisted
            g = build_graph().compile(checkpointer=saver)
            snap = await g.aget_state({"configurable": {"thread_id": "img-1"}})
            history = [
                s async for s in g.aget_state_history({"configurable": {"thread_id": "img-1"}})
            ]
        return snap, history

    snap, history = asyncio.run(go())
    # the state names its pixels; this process still holds them
    assert BLOBS.get(snap.values["image"]) == image_bytes
    assert snap.values["assessment"]["score"] == 3.7
    assert BLOBS.get(snap.values["steps"][0]["view"]).startswith(b"\x89PNG")
    assert len(history) >= 6


def test_mermaid_shows_the_real_routes():
    mermaid = graph.get_graph().draw_mermaid()
    for edge in (
        "__start__ -.-> plan",
        "__start__ -.-> observe",
        "plan --> observe",
        "observe -.-> decide",
        "decide -.-> tool",
        "tool -.-> decide",
        "tool -.-> quantify",
        "decide -.-> quantify",
    ):
        assert edge in mermaid


def test_transcript_records_the_whole_conversation(image_bytes):
    m = ScriptedChatModel.from_replies(
        [
            RUBRIC_REPLY,
            tool_call_message("magnifier", {"bbox": [0, 0, 500, 500]}, "c7"),
            "<answer>3</answer>",
        ]
    )
    a = run(m, image_bytes)
    roles = [t["role"] for t in a.transcript]
    assert roles == ["system", "human", "ai", "human", "ai", "tool", "human", "ai"]
    assert a.transcript[1]["images"] == 1 and a.transcript[6]["images"] == 1
    assert (
        a.transcript[4]["tool_calls"][0]["name"] == "magnifier"
        and a.transcript[5]["tool_call_id"] == "c7"
    )
    assert a.transcript[-1]["text"] == "<answer>3</answer>"
    assert "base64" not in json.dumps(a.transcript)
