"""Properties of the two readers of untrusted model output: replies and tool arguments.

Whatever a model (or a server relaying one) sends, the reply parser returns a typed
outcome and the tool layer a result or its documented error, never another exception:
arbitrary text with lone surrogates, control characters, deep nesting and numbers past
the float range, and arbitrary JSON-ish arguments. Runs are reproducible
(``derandomize``) and keep no example database.
"""

from __future__ import annotations

import json
import math
import tempfile
from typing import Any, get_args

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from langchain_core.messages import AIMessage
from pydantic import ValidationError

from tooliqa.graph.parsing import (
    SCORE_MAX,
    SCORE_MIN,
    AnswerAction,
    InvalidToolCall,
    Malformed,
    MalformedCode,
    ToolCallAction,
    json_extras_as_tags,
    parse_action,
    parse_answer,
    parse_attribute_scores,
    parse_query_answer,
    parse_regions,
    parse_rubric,
    parse_score,
    split_thinking,
    strip_extras,
)
from tooliqa.graph.prompts import RUBRIC_LEVELS
from tooliqa.tools.registry import (
    TOOLS,
    GammaArgs,
    MagnifierArgs,
    ViewSettings,
    canonical_tool_name,
    run_view_tool,
)
from tooliqa.tools.views import (
    GAMMA_PRESETS,
    GAMMA_RANGE,
    MAX_BOX_VALUE,
    ToolArgumentError,
    bbox_to_pixels,
    gamma_mode,
    resolve_gamma,
)

# Hypothesis caches constants it reads from the source in its home folder (``.hypothesis/``
# in the working directory), from test collection on and with or without an example
# database: a temporary folder instead, removed at exit.
_HOME = tempfile.TemporaryDirectory(prefix="hypothesis-")
set_hypothesis_home_dir(_HOME.name)

FAST = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SLOW = settings(FAST, max_examples=100)

BIG_INT = 10**400  # past the float range, within Python's int-to-text limit
HUGE_INT = 10**5000  # past Python's int-to-text limit too
HUGE_DIGITS = "1" + "0" * 5000  # past Python's int-to-text limit (4300 digits)
DEEP = "[" * 50_000  # nested past the recursion limit


# -- strategies ------------------------------------------------------------------------

# Any code point, lone surrogates ("\ud800") and control characters included.
any_char = st.characters(exclude_categories=())
any_text = st.text(any_char, max_size=40)
long_text = st.integers(1_000, 30_000).map(lambda n: "a3 " * (n // 3))

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([BIG_INT, -BIG_INT, 2**63, -(2**63)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([1e308, -1e308, 5e-324, MAX_BOX_VALUE, MAX_BOX_VALUE + 1])
    | any_text
    | st.sampled_from(["brighten", "DARKENING", "3", "nan", "inf", "1e999", "\ud800", "\x00"])
)
json_ish = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def _key(name: str) -> str:
    return f'"{name}": '


def _score(value: str) -> str:
    """A JSON answer with ``value`` written as is (it may be no valid JSON)."""
    return "{" + _key("score") + value + "}"


def _call(arguments: str) -> str:
    """A JSON magnifier call with ``arguments`` written as is."""
    return "{" + _key("name") + '"magnifier", ' + _key("arguments") + arguments + "}"


_TAGS = [
    f"<{slash}{tag}>"
    for tag in (
        *("answer", "thinking", "think", "tool_call", "attributes", "regions"),
        *("query_answer", "ANSWER", "Think"),
    )
    for slash in ("", "/")
]
_WORDS = [
    "score", "Score:", "final answer", "overall", "rating", "Sharpness:", "noise: 4",
    "or", "maybe", "-", "=", ":", ",", ".", "/5", "/10", " out of ", "(1.00 - 5.00)",
    "[1-5]", "scale of 1 to 5", "1.", "2)", "\n", " ", "```json", "```", "{", "}", "[", "]",
    '"', "e5", "最终得分", "３.５",
]  # fmt: skip
_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10, 1000).map(str),
    st.sampled_from(["3,5", "4/5", "8/10", "80/100", "3.75", "1e5", str(BIG_INT)]),
)
_JSON_SNIPPETS = st.one_of(
    st.builds(lambda v: _dumps({"score": v}), json_ish),
    st.builds(lambda v: _dumps({"name": "magnifier", "arguments": v}), json_ish),
    st.builds(lambda v: _dumps({"name": "gamma_corrector", "arguments": _dumps(v)}), json_ish),
    st.builds(lambda v: _dumps({"score": 3, "attributes": v, "regions": v}), json_ish),
    st.builds(lambda v: _dumps([{"bbox": v, "severity": v, "label": v}]), json_ish),
    st.sampled_from(
        [
            _score(str(BIG_INT)),
            _score(HUGE_DIGITS),
            _score("3, " + _key("x") + DEEP),
            _call(DEEP),
            _call('{"bbox": [' + HUGE_DIGITS + ", 0, 1, 1]}"),
            _call('"[' + HUGE_DIGITS + ']"'),
            "[" + HUGE_DIGITS + "]",
            DEEP,
        ]
    ),
)
fragment = st.one_of(
    st.sampled_from(_TAGS), st.sampled_from(_WORDS), _NUMBERS, _JSON_SNIPPETS, any_text
)
replies = st.one_of(
    st.lists(fragment, max_size=12).map("".join),
    any_text,
    long_text,
)


def _message(text: str, finish: str | None) -> AIMessage | str:
    if finish is None:
        return text
    return AIMessage(
        content=text,
        response_metadata={"finish_reason": finish},
        additional_kwargs={"reasoning_content": text[:20]} if finish == "stop" else {},
    )


messages = st.builds(_message, replies, st.sampled_from([None, "stop", "length"]))


def _check_score(score: float) -> None:
    assert isinstance(score, float) and math.isfinite(score)
    assert SCORE_MIN <= score <= SCORE_MAX


def _check_outcome(parsed: object) -> None:
    if isinstance(parsed, AnswerAction):
        _check_score(parsed.score)
        assert isinstance(parsed.rationale, str) and isinstance(parsed.answer_text, str)
    elif isinstance(parsed, Malformed):
        assert parsed.reason and parsed.code in get_args(MalformedCode)
    elif isinstance(parsed, ToolCallAction):
        assert isinstance(parsed.name, str) and parsed.extra_calls >= 0
    else:
        assert isinstance(parsed, InvalidToolCall) and parsed.reason
    form = parsed.form
    assert form.answers >= 0 and form.tool_calls >= 0


# -- the reply parser ------------------------------------------------------------------


class TestReplyParser:
    @FAST
    @given(replies)
    @example(_score(str(BIG_INT)))
    @example("<answer>" + _score(str(BIG_INT)) + "</answer>")
    def test_parse_score_is_total_and_in_range(self, text):
        score, reason = parse_score(text)
        if score is None:
            assert isinstance(reason, str) and reason
        else:
            _check_score(score)
            assert reason == ""

    @FAST
    @given(replies)
    def test_split_thinking_is_total(self, text):
        thinking, outside, had, closed = split_thinking(text)
        assert isinstance(thinking, str) and isinstance(outside, str)
        assert had or closed  # only an opened block can be left open
        if not had:
            assert (thinking, outside) == ("", text)

    @FAST
    @given(messages)
    @example("<tool_call>" + _call(DEEP) + "</tool_call>")
    @example("<tool_call>" + _call('"[' + HUGE_DIGITS + ']"') + "</tool_call>")
    @example(_score("3, " + _key("x") + DEEP))
    def test_parse_action_and_parse_answer_are_total(self, message):
        _check_outcome(parse_action(message))
        answer = parse_answer(message)
        assert isinstance(answer, AnswerAction | Malformed)
        _check_outcome(answer)

    @FAST
    @given(replies)
    @example("<regions>[" + HUGE_DIGITS + "]</regions>")
    @example("<regions>" + DEEP + "</regions>")
    @example("<answer>{" + _key("a") + DEEP + "}</answer>")
    def test_extras_and_rubric_are_total(self, text):
        for key, entry in parse_rubric(text).items():
            assert key in RUBRIC_LEVELS
            assert entry["level"] is None or entry["level"] in RUBRIC_LEVELS[key]
        scores, notes = parse_attribute_scores(text)
        assert set(scores) <= set(RUBRIC_LEVELS) and all(isinstance(n, str) for n in notes)
        for score in scores.values():
            _check_score(score)
        regions, notes = parse_regions(text)
        for region in regions:
            assert isinstance(region["bbox"], list) and len(region["bbox"]) == 4
            severity = region["severity"]
            assert severity is None or isinstance(severity, str) or 0.0 <= severity <= 1.0
        answer = parse_query_answer(text)
        assert answer is None or (isinstance(answer, str) and answer.strip())
        assert isinstance(json_extras_as_tags(text), str)
        assert isinstance(strip_extras(text), str)

    @FAST
    @given(json_ish)
    def test_any_json_answer_is_an_outcome(self, value):
        for text in (_dumps(value), _dumps({"score": value}), f"<answer>{_dumps(value)}</answer>"):
            _check_outcome(parse_action(text))
            _check_outcome(parse_answer(text))


# -- tool arguments --------------------------------------------------------------------

IMAGE = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
conventions = st.sampled_from(["rel1000", "pixel", "unit"])
coordinates = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-10, 1100),
    st.integers(-100, 2000),
    st.sampled_from([BIG_INT, MAX_BOX_VALUE, -MAX_BOX_VALUE, MAX_BOX_VALUE * 2]),
    scalars,
)
_axis = st.lists(st.floats(-50, 1100) | st.integers(-50, 1100), min_size=2, max_size=2).map(sorted)
# Mostly usable boxes (x1 <= x2, y1 <= y2, around the image), then anything at all.
plausible_boxes = st.builds(lambda xs, ys: [xs[0], ys[0], xs[1], ys[1]], _axis, _axis)
boxes = st.one_of(plausible_boxes, st.lists(coordinates, min_size=3, max_size=5), json_ish)
arguments = st.one_of(
    st.fixed_dictionaries({"bbox": plausible_boxes}),
    st.fixed_dictionaries(
        {"mode": st.sampled_from(["brighten", "darken", "Darkening", "bright"])},
        optional={"gamma": st.floats(0.0, 6.0) | st.integers(0, 6)},
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "bbox": boxes,
            "box": boxes,
            "bbox_2d": boxes,
            "mode": scalars,
            "gamma": coordinates,
        },
    ),
    st.dictionaries(any_text, json_ish, max_size=4),
    json_ish,
)
view_tools = st.sampled_from(["magnifier", "gamma_corrector"])
tool_names = st.one_of(
    st.sampled_from([*sorted(TOOLS), "zoom", "Gamma", "gamma-correction", "unknown"]), any_text
)


def _inside(box: tuple[int, int, int, int] | list[int], width: int, height: int) -> None:
    x1, y1, x2, y2 = box
    assert all(isinstance(v, int) for v in box)
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


class TestToolArguments:
    @FAST
    @given(boxes, st.integers(1, 3000), st.integers(1, 3000), conventions, st.integers(0, 64))
    @example([0, 0, BIG_INT, 10], 100, 100, "pixel", 28)
    @example([0, 0, HUGE_INT, 10], 100, 100, "pixel", 28)
    @example([859.4563331405436, 0, 859.4563331405437, 1000], 1729, 10, "rel1000", 0)
    def test_bbox_to_pixels_gives_a_box_in_the_image_or_a_tool_error(
        self, bbox, width, height, convention, min_side
    ):
        try:
            box = bbox_to_pixels(bbox, width, height, convention, min_side=min_side)
        except ToolArgumentError as exc:
            assert str(exc)
            return
        _inside(box, width, height)
        assert box[2] - box[0] >= min(min_side, width)
        assert box[3] - box[1] >= min(min_side, height)

    @FAST
    @given(scalars, coordinates)
    @example(None, BIG_INT)
    @example("darken", HUGE_INT)
    def test_resolve_gamma_is_in_range_or_a_tool_error(self, mode, gamma):
        try:
            value = resolve_gamma(mode, gamma)
        except ToolArgumentError as exc:
            assert str(exc)
            return
        assert isinstance(value, float) and GAMMA_RANGE[0] <= value <= GAMMA_RANGE[1]

    @FAST
    @given(scalars)
    def test_gamma_mode_names_a_preset_or_raises_a_tool_error(self, mode):
        try:
            key = gamma_mode(mode)
        except ToolArgumentError:
            return
        assert key is None or key in GAMMA_PRESETS

    @FAST
    @given(arguments)
    def test_argument_models_validate_or_raise_validation_error(self, args):
        try:
            gamma = GammaArgs.model_validate(args)
        except ValidationError:
            pass
        else:
            value = resolve_gamma(gamma.mode, gamma.gamma)
            assert GAMMA_RANGE[0] <= value <= GAMMA_RANGE[1]
        try:
            magnifier = MagnifierArgs.model_validate(args)
        except ValidationError:
            pass
        else:
            assert len(magnifier.bbox) == 4 and all(isinstance(v, float) for v in magnifier.bbox)

    @SLOW
    @given(view_tools | tool_names, arguments, conventions, st.sampled_from([0, 1, 28]))
    @example("magnifier", {"bbox": [0, 0, BIG_INT, 10]}, "pixel", 28)
    @example("gamma_corrector", {"gamma": BIG_INT}, "rel1000", 28)
    @example("magnifier", {"bbox": [196.42857142857142, 0, 196.42857142857144, 1000]}, "rel1000", 0)
    def test_run_view_tool_never_raises(self, name, args, convention, min_side):
        settings_ = ViewSettings(convention=convention, min_side=min_side, max_pixels=4096)
        result = run_view_tool(name, args, IMAGE, settings_, enabled=list(TOOLS))
        height, width = IMAGE.shape[:2]
        if not result.ok:
            assert result.message.startswith("Tool call failed: ") and result.view is None
            return
        assert result.valid_call and canonical_tool_name(name, list(TOOLS)) == result.tool
        if result.tool == "gamma_corrector":
            assert result.gamma is not None and GAMMA_RANGE[0] <= result.gamma <= GAMMA_RANGE[1]
            assert result.view
        elif result.box is not None:
            _inside(result.box, width, height)
        if result.tool == "magnifier":
            assert result.box is not None and result.view

    @FAST
    @given(any_text)
    def test_canonical_tool_name_is_a_tool_or_none(self, name):
        found = canonical_tool_name(name, list(TOOLS))
        assert found is None or found in TOOLS


def test_the_parser_limits_are_outcomes():
    """JSON past the parser's limits reads like any other unreadable or out-of-range reply."""
    deep = parse_action("<tool_call>" + _call(DEEP) + "</tool_call>")
    assert isinstance(deep, InvalidToolCall) and "nested too deeply" in deep.reason
    long = parse_action("<tool_call>" + _call('"[' + HUGE_DIGITS + ']"') + "</tool_call>")
    assert isinstance(long, InvalidToolCall) and "a number too long" in long.reason
    big = parse_answer(_score(str(BIG_INT)))
    assert isinstance(big, Malformed) and big.code == "out_of_range"
    assert parse_regions("<regions>" + DEEP + "</regions>") == (
        [],
        ["regions are not valid JSON (nested too deeply)"],
    )
