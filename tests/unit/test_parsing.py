"""Reply parsing: scores, actions and rubric notes, including malformed output."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage

from tooliqa.graph.parsing import (
    AnswerAction,
    InvalidToolCall,
    Malformed,
    ToolCallAction,
    parse_action,
    parse_answer,
    parse_attribute_scores,
    parse_query_answer,
    parse_regions,
    parse_rubric,
    parse_score,
    split_thinking,
)

PAPER_RUBRIC = """<thinking>Looking at the whole picture.</thinking>
<answer>
Sharpness: [High] - crisp edges on the face
Noise: [Visible] - light grain in the sky
Artifacts: [None] - no blocking
Exposure: [Good] - balanced, natural colours
Saliency Visibility: [Subject Clear] - the subject stands out
</answer>"""


class TestScore:
    @pytest.mark.parametrize(
        "text, expected",
        [
            ("3.75", 3.75),
            ("Score: 2.5", 2.5),
            ("4.5/5", 4.5),
            ("8/10", 4.0),
            ("80/100", 4.0),
            ('{"score": 1.25}', 1.25),
            ("1", 1.0),
            ("5.00", 5.0),
            ("The final score is **3.10** given the blur", 3.1),
        ],
    )
    def test_accepted(self, text, expected):
        assert parse_score(text) == (expected, "")

    @pytest.mark.parametrize(
        "text, fragment",
        [
            ("7", "outside"),
            ("0.5", "outside"),
            ("-2", "outside"),
            ("3/7", "unknown scale"),
            ("", "empty"),
            ("excellent", "no number"),
            ('{"score": "high"}', "not a number"),
        ],
    )
    def test_refused_with_reason(self, text, fragment):
        score, reason = parse_score(text)
        assert score is None and fragment in reason


class TestAction:
    def test_native_tool_call(self):
        msg = AIMessage(
            content="<thinking>dark</thinking>",
            tool_calls=[{"name": "gamma_corrector", "args": {"mode": "brighten"}, "id": "c9"}],
        )
        action = parse_action(msg)
        assert isinstance(action, ToolCallAction)
        assert (action.name, action.args, action.call_id, action.source) == (
            "gamma_corrector",
            {"mode": "brighten"},
            "c9",
            "native",
        )
        assert action.thinking == "dark"

    def test_text_tool_call(self):
        text = '<thinking>zoom</thinking>\n<tool_call>\n{"name": "magnifier", "arguments": {"bbox": [1, 2, 300, 400]}}\n</tool_call>'
        action = parse_action(AIMessage(content=text))
        assert isinstance(action, ToolCallAction)
        assert action.source == "text" and action.call_id is None
        assert action.args == {"bbox": [1, 2, 300, 400]}

    def test_text_tool_call_with_string_arguments_and_parameters_key(self):
        a = parse_action(
            '<tool_call>{"name": "magnifier", "arguments": "{\\"bbox\\": [0,0,9,9]}"}</tool_call>'
        )
        assert isinstance(a, ToolCallAction) and a.args == {"bbox": [0, 0, 9, 9]}
        b = parse_action(
            '<tool_call>{"name": "gamma", "parameters": {"mode": "darken"}}</tool_call>'
        )
        assert isinstance(b, ToolCallAction) and b.args == {"mode": "darken"}

    def test_unterminated_tool_call_tag_still_reads(self):
        a = parse_action('<tool_call>{"name": "gamma_corrector", "arguments": {"mode": "darken"}}')
        assert isinstance(a, ToolCallAction) and a.name == "gamma_corrector"

    def test_broken_json_is_an_invalid_call(self):
        a = parse_action('<tool_call>{"name": "magnifier", "arguments": {bbox: [1,2</tool_call>')
        assert isinstance(a, InvalidToolCall) and "not valid JSON" in a.reason

    def test_native_invalid_tool_call(self):
        msg = AIMessage(
            content="",
            invalid_tool_calls=[
                {"name": "magnifier", "args": "{bad", "id": "c1", "error": "bad json"}
            ],
        )
        a = parse_action(msg)
        assert isinstance(a, InvalidToolCall) and a.source == "native" and a.call_id == "c1"

    def test_several_calls_keep_the_first(self):
        msg = AIMessage(
            content="",
            tool_calls=[
                {"name": "magnifier", "args": {"bbox": [0, 0, 500, 500]}, "id": "a"},
                {"name": "gamma_corrector", "args": {"mode": "darken"}, "id": "b"},
            ],
        )
        a = parse_action(msg)
        assert isinstance(a, ToolCallAction) and a.name == "magnifier" and a.extra_calls == 1

    def test_answer(self):
        a = parse_action("<thinking>sharp and clean</thinking> <answer>4.25</answer>")
        assert isinstance(a, AnswerAction) and a.score == 4.25
        assert a.rationale == "sharp and clean" and not a.lenient

    def test_answer_first_wins_over_later_tool_call(self):
        a = parse_action(
            '<answer>3.0</answer><tool_call>{"name": "magnifier", "arguments": {}}</tool_call>'
        )
        assert isinstance(a, AnswerAction) and a.score == 3.0

    @pytest.mark.parametrize(
        "text, fragment",
        [
            ("", "empty"),
            ("   ", "empty"),
            ("I think it is a nice photo.", "no <answer>"),
            ("<answer>7</answer>", "outside"),
            ("<answer>great</answer>", "no number"),
        ],
    )
    def test_malformed(self, text, fragment):
        a = parse_action(text)
        assert isinstance(a, Malformed) and fragment in a.reason

    def test_lenient_answer_without_tags(self):
        a = parse_answer("Overall the quality is fair. Score: 3.4")
        assert isinstance(a, AnswerAction) and a.score == 3.4 and a.lenient

    def test_json_answer(self):
        a = parse_answer('{"thinking": "soft focus", "score": 2.75}')
        assert isinstance(a, AnswerAction) and a.score == 2.75 and a.rationale == "soft focus"

    def test_score_inside_thinking_is_not_taken_leniently(self):
        assert isinstance(parse_answer("<thinking>score: 4</thinking> no answer"), Malformed)


class TestRubric:
    def test_paper_format(self):
        r = parse_rubric(PAPER_RUBRIC)
        assert {k: v["level"] for k, v in r.items()} == {
            "sharpness": "high",
            "noise": "visible",
            "artifacts": "none",
            "exposure": "good",
            "visibility": "clear",
        }
        assert r["noise"]["note"] == "light grain in the sky"

    def test_variants_without_brackets_and_with_markdown(self):
        r = parse_rubric(
            "**Sharpness & Detail**: Medium - soft\n- Noise & Grain: severe — grainy\nColor: [Excellent]"
        )
        assert r["sharpness"]["level"] == "medium"
        assert r["noise"]["level"] == "severe" and r["noise"]["note"] == "grainy"
        assert r["colour"]["level"] == "excellent"

    def test_unknown_level_is_kept_raw(self):
        r = parse_rubric("Sharpness: [Razor] - wow")
        assert r["sharpness"]["level"] is None and r["sharpness"]["raw_level"] == "Razor"

    def test_json_rubric(self):
        r = parse_rubric(
            '{"sharpness": {"level": "low", "note": "blurred"}, "visibility": {"level": "obscured", "note": ""}}'
        )
        assert r["sharpness"] == {"level": "low", "note": "blurred", "raw_level": "low"}
        assert r["visibility"]["level"] == "obscured"

    def test_garbage_gives_empty(self):
        assert parse_rubric("") == {}
        assert parse_rubric("lorem ipsum dolor") == {}


class TestHostileReplies:
    """Huge or pathological replies give a defined outcome without unbounded work."""

    @pytest.mark.parametrize(
        "text, kind",
        [
            ("<answer>" + "3.5 " * 250_000 + "</answer>", Malformed),  # 1 MB of numbers
            ("<thinking>" + "a <answer> b " * 200_000, Malformed),  # cut off inside thinking
            ("<tool_call>" * 100_000, InvalidToolCall),
            ("<tool_call>" + "{" * 100_000 + "</tool_call>", InvalidToolCall),
            ("<answer>3</answer>" * 50_000, AnswerAction),
        ],
    )
    def test_defined_outcome(self, text, kind):
        assert isinstance(parse_action(text), kind)
        assert isinstance(parse_answer(text), AnswerAction | Malformed)

    def test_too_many_numbers_is_ambiguous(self):
        a = parse_answer("<answer>" + "1 " * 1500 + "</answer>")
        assert isinstance(a, Malformed) and "more than 1000 numbers" in a.reason


class TestStrictScores:
    def test_a_reply_cut_at_max_tokens_inside_its_answer_is_malformed(self):
        cut = AIMessage(
            content="<thinking>ok</thinking><answer>3.",
            response_metadata={"finish_reason": "length"},
        )
        for parsed in (parse_action(cut), parse_answer(cut)):
            assert isinstance(parsed, Malformed) and parsed.code == "truncated"
        whole = AIMessage(
            content="<thinking>ok</thinking><answer>3.5</answer>",
            response_metadata={"finish_reason": "length"},
        )
        assert parse_action(whole).score == 3.5  # closed before the limit: complete

    @pytest.mark.parametrize(
        "text, fragment",
        [
            ("<answer>1e5</answer>", "exponent"),
            ("<answer>3.5e0</answer>", "exponent"),
            ('{"score": true}', "not a number"),
            ('{"score": NaN}', "outside"),
            ("<answer>3-4</answer>", "range"),
        ],
    )
    def test_refused(self, text, fragment):
        parsed = parse_answer(text)
        assert isinstance(parsed, Malformed) and fragment in parsed.reason


class TestNestedTags:
    """A tag opened twice is one block: the innermost body is read."""

    @pytest.mark.parametrize(
        "text",
        [
            "<answer><answer>3</answer></answer>",
            "<answer> <answer>3</answer>",
            "<answer>\n<answer>3</answer>\n</answer>",
            "<ANSWER><answer>3</answer></ANSWER>",
            "<answer>3</answer></answer>",
            "<thinking>fine</thinking><answer><answer>3</answer></answer>",
            "<answer>Score: <answer>3</answer></answer>",
        ],
    )
    def test_nested_answer_reads_the_inner_score(self, text):
        for parsed in (parse_action(text), parse_answer(text)):
            assert isinstance(parsed, AnswerAction) and parsed.score == 3.0
            assert parsed.form.answers == 1 and parsed.form.single_action

    def test_nested_answer_after_an_unclosed_thinking_is_not_thinking(self):
        text = "<thinking>looks fine <answer> <answer>3</answer></answer>"
        thinking, outside, had, closed = split_thinking(text)
        assert thinking == "looks fine" and (had, closed) == (True, False)
        assert outside.startswith("<answer> <answer>3")
        parsed = parse_action(text)
        assert isinstance(parsed, AnswerAction) and parsed.thinking == "looks fine"

    def test_nested_rubric_keeps_its_first_line(self):
        inner = PAPER_RUBRIC.split("<answer>")[1].split("</answer>")[0]
        nested = f"<thinking>ok</thinking><answer><answer>{inner.strip()}</answer></answer>"
        assert parse_rubric(nested) == parse_rubric(PAPER_RUBRIC)
        assert "sharpness" in parse_rubric(nested)

    def test_nested_extras_read_their_inner_block(self):
        assert (
            parse_query_answer("<query_answer><query_answer>No.</query_answer></query_answer>")
            == "No."
        )
        regions, notes = parse_regions(
            '<regions> <regions>[{"bbox": [1, 2, 3, 4]}]</regions></regions>'
        )
        assert [r["bbox"] for r in regions] == [[1, 2, 3, 4]] and notes == []
        scores, notes = parse_attribute_scores(
            "<attributes><attributes>Sharpness: 4; noise: 3</attributes></attributes>"
        )
        assert scores == {"sharpness": 4.0, "noise": 3.0} and notes == []
