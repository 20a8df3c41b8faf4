"""The real graph and OpenAI backend against a local HTTP server that replies the way other
models do (Tool-IQA-8B behind vLLM's hermes parser, a Qwen3 reasoning parser, Qwen2.5-VL
prose): what the graph reads, which tools it runs and what the protocol record says."""

from __future__ import annotations

import asyncio
import json

import pytest

from tooliqa.api import aassess, make_context
from tooliqa.graph import Assessment

from chat_stub import ChatStub, StubReply

pytestmark = pytest.mark.integration

RUBRIC = (
    "<thinking>Whole image seen.</thinking>\n<answer>\nSharpness: [Medium] - soft edges\n"
    "Noise: [None] - clean\nArtifacts: [None] - none\nExposure: [Good] - balanced\n"
    "Saliency Visibility: [Subject Clear] - clear\n</answer>"
)


def run(stub: ChatStub, image: bytes, **settings) -> Assessment:
    ctx = make_context(server=stub.base_url, model_name=stub.model, **settings)
    return asyncio.run(aassess(image, context=ctx))


def test_tool_iqa_8b_through_the_hermes_parser(image_bytes):
    replies = [
        RUBRIC,
        # the hermes parser took the call out; the thinking names the tag it decided against
        StubReply(
            "<thinking>Too early for an <answer>; zoom into the centre.</thinking>",
            [("magnifier", {"bbox_2d": [250, 250, 750, 750]})],
        ),
        "<thinking>The zoomed view is soft.</thinking> "
        "<answer>Final answer (1.00 - 5.00): 3.62</answer>",
    ]
    with ChatStub(replies) as stub:
        a = run(stub, image_bytes)
    assert a.score == 3.62 and a.errors == []
    assert [(s.tool, s.ok, s.source) for s in a.steps] == [("magnifier", True, "native")]
    third = stub.requests[2]["messages"]
    assert [m["role"] for m in third[-2:]] == ["tool", "user"]  # the view comes in a user turn
    assert any(p.get("type") == "image_url" for p in third[-1]["content"])
    assert [(t.turn, t.action, t.thinking, t.single_action) for t in a.protocol] == [
        ("rubric", "rubric", True, True),
        ("gate", "tool_call", True, True),
        ("gate", "answer", True, True),
    ]
    assert a.protocol[1].tool_call_valid is True


def test_thinking_split_off_by_a_reasoning_parser_counts_as_thinking(image_bytes):
    replies = [
        StubReply(RUBRIC.split("\n", 1)[1], reasoning_content="Looking at the whole image."),
        StubReply("<answer>4.20</answer>", reasoning_content="No need for a <tool_call>."),
    ]
    with ChatStub(replies) as stub:
        a = run(stub, image_bytes)
    assert a.score == 4.2 and a.steps == []
    assert [t.thinking for t in a.protocol] == [True, True]


def test_the_papers_gamma_words_in_a_text_tool_call(image_bytes):
    call = '<tool_call>{"name": "gamma_corrector", "arguments": {"mode": "darkening"}}</tool_call>'
    replies = [
        RUBRIC,
        "<thinking>Highlights?</thinking>\n" + call,
        "<think>ok</think><answer>2,80</answer>",
    ]
    with ChatStub(replies) as stub:
        a = run(stub, image_bytes, tool_protocol="text")
    assert [(s.tool, s.ok, s.gamma) for s in a.steps] == [("gamma_corrector", True, 2.0)]
    assert a.score == 2.8
    assert "tools" not in stub.requests[1]  # the text protocol lists the tools in the prompt


def test_prose_scores_and_per_attribute_numbers(image_bytes):
    replies = [
        RUBRIC,
        "**Sharpness**: 4/5\n**Noise**: 3/5\n\nThe overall quality score of this image is 3.5.",
    ]
    with ChatStub(replies) as stub:
        a = run(stub, image_bytes)
    assert a.score == 3.5  # not the 4 of "Sharpness 4/5"
    gate = a.protocol[-1]
    assert (gate.action, gate.answer_tagged, gate.thinking) == ("answer", False, False)


def test_a_tool_call_beside_an_answer_is_recorded_as_a_violation(image_bytes):
    replies = [
        RUBRIC,
        StubReply(
            "<thinking>zoom</thinking> <answer>4</answer>",
            [("magnifier", {"bbox_2d": [0, 0, 500, 500]})],
        ),
        "<thinking>seen</thinking> <answer>3.9</answer>",
    ]
    with ChatStub(replies) as stub:
        a = run(stub, image_bytes)
    assert [s.tool for s in a.steps] == ["magnifier"] and a.score == 3.9
    assert [t.single_action for t in a.protocol] == [True, False, True]


def test_an_ambiguous_answer_gets_the_repair_prompt(image_bytes):
    replies = [
        RUBRIC,
        "<thinking>between two</thinking> <answer>3.5 or 4.0</answer>",
        "<thinking>decided</thinking> <answer>3.75</answer>",
    ]
    with ChatStub(replies) as stub:
        a = run(stub, image_bytes)
    assert a.score == 3.75
    repair = stub.requests[2]["messages"][-1]["content"]
    assert "ambiguous" in str(repair)
    assert [t.turn for t in a.protocol] == ["rubric", "gate", "repair"]
    assert a.protocol[1].repair_needed and "ambiguous" in (a.protocol[1].reason or "")


def test_lone_surrogates_and_escape_codes_are_cleaned_at_the_boundary(image_bytes):
    replies = [
        RUBRIC.replace("clean", "clean\ud800"),  # a lone surrogate, as JSON carries it
        StubReply(
            "<thinking>zoom \x1b[31mred\x1b[0m</thinking>",
            [("magnifier\x1b[2J", {"bbox_2d": [0, 0, 500, 500]})],
        ),
        "<thinking>ok\udfff</thinking> <answer>3.5</answer>",
    ]
    with ChatStub(replies) as stub:
        a = run(stub, image_bytes)
    text = a.to_json()
    text.encode("utf-8")  # no lone surrogate left: printable, storable
    assert "\x1b" not in text and "\\u001b" not in text
    assert a.score == 3.5 and "\ufffd" in a.rubric_note
    assert a.steps[0].tool.startswith("magnifier") and "\x1b" not in a.steps[0].tool
    second = json.dumps(stub.requests[1], ensure_ascii=False)  # the note was sent back clean
    second.encode("utf-8")
