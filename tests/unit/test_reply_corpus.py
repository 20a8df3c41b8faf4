"""The reply corpus (``tests/data/replies.json``): how models that were not trained on this
project's own replies write, and what each reply must be read as.

Each row names its style (the corpus's ``sources`` say where each style comes from), the
reply (text, and native ``tool_calls``/``invalid_tool_calls`` as vLLM's hermes parser returns
them), the turn (``gate`` by default, ``final`` when no tool may be called) and the expected
outcome, written by hand: the action, the score or the tool, and optionally the protocol form
(``thinking``, ``single_action``) and the Malformed ``code``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from tooliqa.graph.parsing import (
    AnswerAction,
    InvalidToolCall,
    Malformed,
    ToolCallAction,
    parse_action,
    parse_answer,
)
from tooliqa.tools.registry import canonical_tool_name

CORPUS = json.loads((Path(__file__).parents[1] / "data" / "replies.json").read_text())
ROWS = CORPUS["replies"]
KIND = {
    AnswerAction: "answer",
    ToolCallAction: "tool_call",
    InvalidToolCall: "invalid_tool_call",
    Malformed: "malformed",
}


def _message(row: dict) -> AIMessage | str:
    if "tool_calls" not in row and "invalid_tool_calls" not in row:
        return row["reply"]
    calls = [{**c, "type": "tool_call"} for c in row.get("tool_calls", [])]
    bad = [{**c, "type": "invalid_tool_call"} for c in row.get("invalid_tool_calls", [])]
    return AIMessage(content=row["reply"], tool_calls=calls, invalid_tool_calls=bad)


def _read(row: dict):
    if row.get("turn", "gate") == "final":
        return parse_answer(row["reply"])
    return parse_action(_message(row))


def _mismatches(row: dict) -> list[str]:
    got = _read(row)
    want = row["expect"]
    out = []
    kind = KIND[type(got)]
    if kind != want["action"]:
        detail = getattr(got, "reason", "") or getattr(got, "score", "")
        return [f"action {kind} ({detail}), expected {want['action']}"]
    if "score" in want and got.score != pytest.approx(want["score"], abs=1e-9):
        out.append(f"score {got.score}, expected {want['score']}")
    if (
        "tool" in want
        and canonical_tool_name(got.name, ["magnifier", "gamma_corrector"]) != want["tool"]
    ):
        out.append(f"tool {got.name!r}, expected {want['tool']!r}")
    if "code" in want and got.code != want["code"]:
        out.append(f"code {got.code!r} ({got.reason}), expected {want['code']!r}")
    if "lenient" in want and got.lenient != want["lenient"]:
        out.append(f"lenient {got.lenient}, expected {want['lenient']}")
    for key in ("thinking", "single_action"):
        if key in want and getattr(got.form, key) != want[key]:
            out.append(f"{key} {getattr(got.form, key)}, expected {want[key]}")
    return out


def test_the_corpus_is_large_and_every_style_is_sourced():
    assert len(ROWS) >= 200
    styles = {row["style"] for row in ROWS}
    assert styles <= set(CORPUS["sources"]), styles - set(CORPUS["sources"])
    assert set(CORPUS["sources"]) <= styles  # no source line without rows
    assert {"answer", "tool_call", "invalid_tool_call", "malformed"} == {
        row["expect"]["action"] for row in ROWS
    }


def test_every_reply_is_read_as_expected():
    failures = []
    for i, row in enumerate(ROWS):
        for problem in _mismatches(row):
            failures.append(f"row {i} [{row['style']}] {row['reply'][:70]!r}: {problem}")
    assert not failures, f"{len(failures)} of {len(ROWS)} rows:\n" + "\n".join(failures)


@pytest.mark.parametrize(
    "reply, score",
    [
        ("<answer>Final answer (1.00 - 5.00): 3.62</answer>", 3.62),
        ("<answer>Score (1-5): 3.62</answer>", 3.62),
        ("<answer>On a scale of 1-5: 3.62</answer>", 3.62),
        ("<answer>Quality score [1.00-5.00]: 3.62</answer>", 3.62),
        ("<answer>Sharpness 4/5, noise 3/5; overall score: 3.6</answer>", 3.6),
        ("<answer>3,45</answer>", 3.45),
    ],
)
def test_the_issue_rows(reply, score):
    action = parse_action("<thinking>seen</thinking> " + reply)
    assert isinstance(action, AnswerAction) and action.score == score
