"""Parse model replies: rubric notes, actions (tool call or final answer), scores.

Every function here is total: malformed text gives a typed outcome
(:class:`InvalidToolCall`, :class:`Malformed`) with a reason, never an exception.
Tool calls are read from OpenAI ``tool_calls`` (vLLM's hermes parser) and from
``<tool_call>{json}</tool_call>`` text alike.

The protocol (Tool-IQA Appendix A) is read as a model that writes what it likes would
write it: the thinking is set aside before deciding between a tool call and an answer
(:func:`split_thinking`), an answer's score is the number it gives rather than the scale
it echoes (:func:`parse_score`), and every action carries a :class:`ReplyForm` saying how
the reply was laid out, which the graph records per turn and the format reward reads.
``tests/data/replies.json`` holds the reply styles this is checked against.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage

from tooliqa.tools import load_json

from .prompts import RUBRIC_LEVELS

__all__ = [
    "Action",
    "AnswerAction",
    "InvalidToolCall",
    "Malformed",
    "ReplyForm",
    "ToolCallAction",
    "json_extras_as_tags",
    "message_text",
    "parse_action",
    "parse_answer",
    "parse_attribute_scores",
    "parse_query_answer",
    "parse_regions",
    "parse_rubric",
    "parse_score",
    "reasoning_text",
    "split_thinking",
    "strip_extras",
    "thought_first",
]

SCORE_MIN, SCORE_MAX = 1.0, 5.0

# A tag block, innermost when nested ("<answer><answer>3</answer></answer>" reads "3"): its
# body opens no block of its kind; an unclosed one ends at the next opening of its kind.
_TAG = r"<{0}>((?:(?!<{0}>).)*?)(?:</{0}>|(?=<{0}>)|$)"
_OPEN_THINK = re.compile(r"<(?:thinking|think)>", re.I)
_CLOSE_THINK = re.compile(r"</(?:thinking|think)>", re.I)
# A whole action block whose body does not open another block of its kind.
_COMPLETE_BLOCK = re.compile(r"<(answer|tool_call)>(?:(?!<\1>).)*?</\1>", re.S | re.I)
# Action blocks outside the thinking: an unclosed one ends at the next block or the end.
_BLOCK = re.compile(r"<(answer|tool_call)>(.*?)(</\1>|(?=<(?:answer|tool_call)>)|$)", re.S | re.I)
_ANSWER_RE = re.compile(_TAG.format("answer"), re.S | re.I)
_NUM = r"[-+]?\d+(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUM)
_ATTRIBUTES_RE = re.compile(_TAG.format("attributes"), re.S | re.I)
_REGIONS_RE = re.compile(_TAG.format("regions"), re.S | re.I)
_QUERY_ANSWER_RE = re.compile(_TAG.format("query_answer"), re.S | re.I)
_EXTRAS_RE = re.compile(r"<(attributes|regions|query_answer)>.*?(?:</\1>|$)", re.S | re.I)

# -- reading a score ---------------------------------------------------------------
# The scale a model echoes from the prompt ("Final answer (1.00 - 5.00)", "[1-5]", "on a
# scale of 1 to 5", "from 1.00 (bad) to 5.00 (excellent)") is not its score.
_SCALE_ECHO = re.compile(
    r"(?:\b(?:on |using )?(?:a |the )?(?:1 ?(?:-|–|—|to) ?5 )?scale\b ?(?:of |from )?)?"
    r"[(\[]? ?(?:(?:from|between) )?(?<![\w.])1(?:\.0+)? ?(?:\([^)\n]{0,20}\) ?)?"
    r"(?:-|–|—|~|to|and) ?5(?:\.0+)?(?![\w.]*\d) ?(?:\([^)\n]{0,20}\))? ?[)\]]?"
    r"(?: ?scale\b)?",
    re.I,
)
_BRACKETED_SCALE = re.compile(r"[(\[] ?[01](?:\.0+)? ?, ?(?:5|10|100)(?:\.0+)? ?[)\]]")
# A bracket right before the colon of a label qualifies the label ("Score (out of 5):",
# "Rating (1 = worst, 5 = best):"), it holds no score.
_LABEL_BRACKET = re.compile(r"[(\[][^()\[\]\n]{0,40}[)\]](?= ?[:=])")
_DECIMAL_COMMA = re.compile(r"(?<![\d.,])([1-5]),(\d{1,2})(?![\d,])")
_OUT_OF = re.compile(r"(\d) (?:out of|of) (\d)", re.I)
_CANDIDATE = re.compile(
    rf"(?<![A-Za-z0-9_.])({_NUM})(?: ?/ ?(\d+(?:\.\d+)?))?(?![A-Za-z0-9_]|\.\d)"
)
_CLAUSE_END = re.compile(r"[;!?\n]|\.(?!\d)")
_LABEL = re.compile(
    r"(?P<final>\b(?:final|answer)\b|最终)"
    r"|(?P<overall>\b(?:overall|total|global|aggregate)\b|总体|整体)"
    r"|(?P<generic>\b(?:scores?|scored|rating|rated?|rates|quality|mos|grade[sd]?|give[sn]?|"
    r"giving|assign(?:ed)?)\b|得分|评分|分数|打分)"
    r"|(?P<attribute>\b(?:sharp\w*|detail\w*|blur\w*|nois\w*|grain\w*|artifact\w*|artefact\w*|"
    r"exposure|colou?r\w*|visib\w*|salien\w*|subject|contrast|bright\w*|clarity|texture\w*|"
    r"lighting|composition|aesthetic\w*)\b|清晰|噪声|噪点|曝光|色彩)",
    re.I,
)
# Between a labelled number and the next: a range or hedge ("3-4", "3.5, maybe 4") leaves the
# score open; "= x" gives the result of a computation ("4 - 0.5 = 3.5").
_HEDGE = re.compile(
    r" ?,? ?(?:-|–|—|~|to|or|and|maybe|perhaps|possibly|or maybe|or perhaps|or even)"
    r" ?(?:a |an )?",
    re.I,
)
_EQUALS = re.compile(r".*= ?$")
_LIST_MARKER = re.compile(r"(?m)^ ?(\d{1,2})[.)] (?=[^\d\s])")
_EXPONENT = re.compile(r"\d[eE][-+]?\d")
_LEAD = re.compile(r"[\s*#>:\-–(\[]*")
#: How strongly a number's place marks it as THE score: a "final"/"answer" label beats an
#: "overall" one, which beats a plain "score"/"rating", which beats a number that opens the
#: answer, which beats any other number.
_LEVELS = ("final", "overall", "generic", "lead", "plain")
#: An answer with more numbers than this is not read (it is no score; a bound on the work).
MAX_ANSWER_NUMBERS = 1000
#: An answer longer than this (characters) is not read for a score (a bound on the work).
MAX_ANSWER_CHARS = 20_000
_JSON_SCORE_KEYS = ("score", "final_score", "overall_score", "quality_score", "rating")


@dataclass
class _Candidate:
    value: float | None  # None: a fraction on an unknown scale
    text: str
    level: str
    hedged: str = ""  # the range or hedge that leaves it open


def _normalise_score_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"[*`]+", "", text)
    text = re.sub(r"[^\S\n]+", " ", text)
    text = re.sub(r" ?\n[\s]*", "\n", text)
    text = _BRACKETED_SCALE.sub(" ", text)
    text = _SCALE_ECHO.sub(" ", text)
    text = _LABEL_BRACKET.sub(" ", text)
    text = _DECIMAL_COMMA.sub(r"\1.\2", text)
    return _OUT_OF.sub(r"\1/\2", text)


def _list_markers(text: str) -> set[int]:
    """Start offsets of numbered-list markers ("1. sharp edges", "2) low noise"): two or more
    lines numbered in sequence; their numbers are no scores."""
    marks = [(m.start(1), int(m.group(1))) for m in _LIST_MARKER.finditer(text)]
    numbers = {n for _, n in marks}
    return {pos for pos, n in marks if n + 1 in numbers or n - 1 in numbers}


def _value(m: re.Match[str]) -> float | None:
    num, den = float(m.group(1)), m.group(2)
    if den is None:
        return num
    return num * 5.0 / float(den) if float(den) in (5.0, 10.0, 100.0) else None


def _candidates(text: str) -> tuple[list[_Candidate], list[_Candidate]]:
    """Every number of ``text`` with its level, and the per-attribute numbers apart.

    A label ("final", "overall", "score", an attribute name) owns the first number after it
    in its clause; the nearest label before a number wins. Later unlabelled numbers of the
    clause follow the owner: after "=" they replace its value, after a range or hedge word
    they leave it open, otherwise they are plain numbers.
    """
    found: list[_Candidate] = []
    attributes: list[_Candidate] = []
    skip = _list_markers(text)
    owner: _Candidate | None = None
    prev_end = 0
    for count, m in enumerate(_CANDIDATE.finditer(text)):
        if count == MAX_ANSWER_NUMBERS:
            raise _TooManyNumbers
        if m.start() in skip:
            continue
        gap = text[prev_end : m.start()]
        prev_end = m.end()
        ends = list(_CLAUSE_END.finditer(gap))
        if ends or (not found and not attributes):
            owner = None
            gap = gap[ends[-1].end() :] if ends else gap
        labels = list(_LABEL.finditer(gap[-80:]))
        value = _value(m)
        if not labels and owner is not None:
            if _EQUALS.fullmatch(gap):
                owner.value, owner.text, owner.hedged = value, m.group(0), ""
                continue
            if _HEDGE.fullmatch(gap) and value != owner.value:
                owner.hedged = f"{owner.text}{gap}{m.group(0)}"
                continue
        kind = labels[-1].lastgroup if labels else None
        if kind is None:
            lead = not found and not attributes and _LEAD.fullmatch(text[: m.start()])
            kind = "lead" if lead else "plain"
        candidate = _Candidate(value, m.group(0), str(kind))
        if kind == "attribute":
            attributes.append(candidate)
            owner = None
            continue
        found.append(candidate)
        owner = candidate if kind != "plain" else owner
    return found, attributes


class _TooManyNumbers(Exception):
    pass


def _same(values: list[_Candidate]) -> bool:
    return len({None if c.value is None else round(c.value, 4) for c in values}) == 1


def _choose(text: str, *, labelled_only: bool = False) -> tuple[_Candidate | None, str]:
    """The number that is the score, or (None, reason)."""
    if len(text) > MAX_ANSWER_CHARS:
        return None, f"the answer is too long to read a score from ({len(text)} characters)"
    try:
        found, attributes = _candidates(_normalise_score_text(text))
    except _TooManyNumbers:
        return None, f"ambiguous: more than {MAX_ANSWER_NUMBERS} numbers in the answer"
    for level in _LEVELS:
        if labelled_only and level in ("lead", "plain"):
            break
        here = [c for c in found if c.level == level]
        if not here:
            continue
        hedged = [c.hedged for c in here if c.hedged]
        if hedged:
            return None, f"ambiguous: a range or hedge ({hedged[0].strip()})"
        if not _same(here):
            what = "several numbers" if level in ("lead", "plain") else "several overall scores"
            listed = ", ".join(dict.fromkeys(c.text for c in here))
            return None, f"ambiguous: {what} ({listed})"
        return here[-1], ""
    if attributes and not labelled_only and _same(attributes) and not attributes[0].hedged:
        return attributes[-1], ""  # the answer's only number, after an attribute word
    if attributes:
        listed = ", ".join(dict.fromkeys(c.text for c in attributes))
        return None, f"only per-attribute scores ({listed}), no overall score"
    if _EXPONENT.search(text):
        return None, "the score is not a plain number (exponent form)"
    return None, "no number in the answer"


def _checked(candidate: _Candidate) -> tuple[float | None, str]:
    if candidate.value is None:
        return None, f"score {candidate.text} is on an unknown scale"
    value = candidate.value
    if not SCORE_MIN <= value <= SCORE_MAX:
        return None, f"score {value:g} is outside {SCORE_MIN:.2f}-{SCORE_MAX:.2f}"
    return round(value, 4), ""


def _as_float(value: int | float) -> float:
    """``value`` as a float; an integer past the float range is infinite (out of range)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _json_score(obj: dict[str, Any]) -> tuple[float | None, str] | None:
    """The score of a JSON answer (None when it names none)."""
    for key in _JSON_SCORE_KEYS:
        if key in obj and not isinstance(obj[key], dict | list):
            value = obj[key]
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                return None, f"score {value!r} is not a number"
            if isinstance(value, str):
                found, _ = _choose(value)
                if found is None:
                    return None, f"score {value!r} is not a number"
                return _checked(found)
            return _checked(_Candidate(_as_float(value), str(value), "final"))
    return None


def parse_score(text: str) -> tuple[float | None, str]:
    """Read one score in [1, 5] from an answer. Returns (score, "") or (None, reason).

    The score is the number the answer GIVES, not the scale it echoes from the prompt
    (``(1.00 - 5.00)``, ``[1-5]``, "on a scale of 1 to 5"). A number labelled "final" or
    "answer" wins over one labelled "overall", which wins over a plain "score"/"rating",
    which wins over an unlabelled one; per-attribute numbers (``Sharpness 4/5``) are never
    the score. ``x/N`` and "x out of N" for N in {5, 10, 100} are rescaled to five, a
    decimal comma is read (``3,45``), JSON ``{"score": 3.75}`` is accepted. Two different
    numbers with the same label are ambiguous; a number outside [1, 5] is refused, not
    clipped.

    >>> parse_score("Final answer (1.00 - 5.00): 3.62")
    (3.62, '')
    >>> parse_score("Sharpness 4/5, noise 3/5; overall score: 3.6")
    (3.6, '')
    >>> parse_score("3,45")
    (3.45, '')
    >>> parse_score("3.5 or 4.0")
    (None, 'ambiguous: a range or hedge (3.5 or 4.0)')
    """
    text = (text or "").strip()
    if not text:
        return None, "empty answer"
    obj = _json_object(text) if "{" in text else None
    if obj is not None:
        scored = _json_score(obj)
        if scored is not None:
            return scored
    candidate, reason = _choose(text)
    if candidate is None:
        return None, reason
    return _checked(candidate)


# -- the protocol: thinking, then exactly one action ---------------------------------


@dataclass(frozen=True)
class ReplyForm:
    """How a reply is laid out, whatever it asks for: what the protocol checks read.

    ``thinking``: a thinking block (``<thinking>``/``<think>``) with something in it was
    opened and closed (or the server returned the thinking apart, or a JSON answer has it);
    ``thinking_closed``: False when one was opened and never closed; ``answers`` and
    ``tool_calls``: the action blocks OUTSIDE the thinking (native tool calls count as tool
    calls, a structured JSON answer as an answer); ``tagged``: the action sat in its tag
    (``<answer>``, ``<tool_call>``, a native call or the structured JSON), not in prose.
    """

    thinking: bool = False
    thinking_closed: bool = True
    answers: int = 0
    tool_calls: int = 0
    tagged: bool = True

    @property
    def single_action(self) -> bool:
        """Appendix A's gate: EXACTLY ONE of a final answer or a tool call."""
        return self.answers + self.tool_calls <= 1


@dataclass
class ToolCallAction:
    """The model asked for a tool."""

    name: str
    args: Any
    call_id: str | None
    source: Literal["native", "text"]
    thinking: str = ""
    extra_calls: int = 0
    form: ReplyForm = field(default_factory=ReplyForm)


@dataclass
class InvalidToolCall:
    """The model tried to call a tool but the call cannot be read (e.g. broken JSON)."""

    reason: str
    name: str | None
    raw: str
    source: Literal["native", "text"]
    call_id: str | None = None
    form: ReplyForm = field(default_factory=ReplyForm)


@dataclass
class AnswerAction:
    """A final answer with a score in [1, 5]."""

    score: float
    rationale: str
    thinking: str = ""
    answer_text: str = ""
    lenient: bool = False
    notes: list[str] = field(default_factory=list)
    form: ReplyForm = field(default_factory=ReplyForm)


MalformedCode = Literal[
    "empty", "no_score", "out_of_range", "ambiguous", "truncated", "tool_call", "other"
]


@dataclass
class Malformed:
    """Neither a readable tool call nor a usable final answer. ``code`` is the kind of
    fault (``out_of_range``: a score outside [1, 5]; ``tool_call``: a tool call where
    the final answer was due; ``truncated``: the reply ended inside its thinking)."""

    reason: str
    raw: str
    code: MalformedCode = "other"
    form: ReplyForm = field(default_factory=ReplyForm)


Action = ToolCallAction | InvalidToolCall | AnswerAction | Malformed


def message_text(message: BaseMessage | str) -> str:
    """The text of a message, joining text blocks of list content."""
    if isinstance(message, str):
        return message
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def split_thinking(text: str) -> tuple[str, str, bool, bool]:
    """Set the thinking aside: ``(thinking, outside, had_thinking, closed)``.

    Tags the thinking MENTIONS ("too early for an <answer>") are not actions. A reply that
    starts inside a thinking block the chat template opened (it closes one it never
    opened) has that text as thinking. A block that is never closed runs to the LAST
    complete ``<answer>``/``<tool_call>`` block after it (earlier ones are what
    it was thinking about), or to the end (a cut-off reply).

    >>> split_thinking("<thinking>no <tool_call> needed</thinking><answer>4</answer>")
    ('no <tool_call> needed', '<answer>4</answer>', True, True)
    """
    thinking: list[str] = []
    outside: list[str] = []
    had, closed, pos = False, True, 0
    first_open, first_close = _OPEN_THINK.search(text), _CLOSE_THINK.search(text)
    if first_close and (first_open is None or first_close.start() < first_open.start()):
        thinking.append(text[: first_close.start()])
        had, pos = True, first_close.end()
    while True:
        opened = _OPEN_THINK.search(text, pos)
        if opened is None:
            outside.append(text[pos:])
            break
        outside.append(text[pos : opened.start()])
        had = True
        shut = _CLOSE_THINK.search(text, opened.end())
        if shut is None:
            closed = False
            rest = text[opened.end() :]
            blocks = list(_COMPLETE_BLOCK.finditer(rest))
            cut = _openers_before(rest, blocks[-1]) if blocks else len(rest)
            thinking.append(rest[:cut])
            outside.append(rest[cut:])
            break
        thinking.append(text[opened.end() : shut.start()])
        pos = shut.end()
    joined = " ".join(t.strip() for t in thinking if t.strip())
    return joined, "".join(outside), had, closed


def _openers_before(text: str, block: re.Match[str]) -> int:
    """Where ``block`` starts with the openings of its kind right before it (a nested
    ``<answer><answer>3</answer></answer>`` is one answer, none of it thinking)."""
    opener = f"<{block.group(1).lower()}>"
    cut = end = block.start()
    while True:  # back over "<answer> <answer>": linear, however many there are
        while end > 0 and text[end - 1].isspace():
            end -= 1
        if text[max(0, end - len(opener)) : end].lower() != opener:
            return cut
        cut = end = end - len(opener)


def _json_object(text: str) -> dict[str, Any] | None:
    text = text.strip()
    if text.startswith("```"):
        text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = load_json(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _whole_json(text: str) -> dict[str, Any] | None:
    """The reply as one JSON object (structured output), else None."""
    stripped = (text or "").strip()
    if not stripped.startswith(("{", "```")):
        return None
    return _json_object(stripped)


def json_extras_as_tags(text: str) -> str:
    """A structured (JSON) answer's ``attributes``, ``regions`` and ``query_answer``
    written as the tag blocks the parsers read (``""`` when there are none), so JSON and
    free-text answers go through the same parsing.

    >>> json_extras_as_tags('{"score": 3, "attributes": {"noise": 4}, "query_answer": "No."}')
    '<attributes>noise: 4</attributes>\\n<query_answer>No.</query_answer>'
    """
    obj = _json_object(text) if "{" in (text or "") else None
    if obj is None:
        return ""
    parts = []
    attrs = obj.get("attributes")
    if isinstance(attrs, dict):
        parts.append(
            "<attributes>" + "; ".join(f"{k}: {v}" for k, v in attrs.items()) + "</attributes>"
        )
    if isinstance(obj.get("regions"), list):
        parts.append("<regions>" + json.dumps(obj["regions"]) + "</regions>")
    if isinstance(obj.get("query_answer"), str):
        parts.append("<query_answer>" + obj["query_answer"] + "</query_answer>")
    return "\n".join(parts)


def strip_extras(text: str) -> str:
    """The reply without its ``<attributes>``, ``<regions>`` and ``<query_answer>``
    blocks (their numbers are not the score)."""
    return _EXTRAS_RE.sub(" ", text or "")


@dataclass(frozen=True)
class _Reply:
    """One reply taken apart: thinking, the action blocks outside it, their form."""

    text: str
    thinking: str
    outside: str
    blocks: list[tuple[str, str]]  # (kind, body) in order of appearance
    had_thinking: bool
    closed: bool
    cut_off: bool  # the server stopped at max tokens inside an unclosed <answer>
    native_calls: list[Any]  # langchain ToolCall dicts
    invalid_calls: list[Any]  # langchain InvalidToolCall dicts
    cut_from: int = 0  # the reply was this many characters and was cut (see graph.nodes)

    @property
    def thought(self) -> bool:
        """A thinking block with something in it, closed (or returned apart by the server)."""
        return self.had_thinking and self.closed and bool(self.thinking.strip())

    def form(self, *, answers: int | None = None, tool_calls: int | None = None, tagged=True):
        kinds = [k for k, _ in self.blocks]
        n_tools = len(self.native_calls) + len(self.invalid_calls) + kinds.count("tool_call")
        return ReplyForm(
            thinking=self.thought,
            thinking_closed=self.closed,
            answers=kinds.count("answer") if answers is None else answers,
            tool_calls=n_tools if tool_calls is None else tool_calls,
            tagged=tagged,
        )


def reasoning_text(message: AIMessage | str) -> str:
    """The thinking a server returned apart from the content: vLLM's reasoning parsers
    (Qwen3, DeepSeek-R1 style models) send it as ``reasoning_content`` (or ``reasoning``),
    kept by the OpenAI backend in ``additional_kwargs``; ``""`` when there is none."""
    if not isinstance(message, AIMessage):
        return ""
    for key in ("reasoning_content", "reasoning"):
        value = message.additional_kwargs.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def thought_first(message: AIMessage | str) -> bool:
    """The reply had a thinking block with something in it, closed (or the server returned
    its thinking apart): the protocol's "think first" for any turn, the rubric note too."""
    return _take_apart(message).thought


def _take_apart(message: AIMessage | str) -> _Reply:
    text = message_text(message)
    thinking, outside, had, closed = split_thinking(text)
    separate = reasoning_text(message)
    if separate and not had:  # the server split the thinking off the content
        thinking, had = separate, True
    found = list(_BLOCK.finditer(strip_extras(outside)))
    # An unclosed tag beside complete blocks is a mention ("I'll give the <answer> after the
    # zoom"), not a block; alone it is a block cut off at the end of the reply.
    complete = any(m.group(3) for m in found)
    blocks = [(m.group(1).lower(), m.group(2)) for m in found if m.group(3) or not complete]
    native = list(message.tool_calls) if isinstance(message, AIMessage) else []
    invalid = list(message.invalid_tool_calls) if isinstance(message, AIMessage) else []
    stopped = (
        message.response_metadata.get("finish_reason") if isinstance(message, AIMessage) else None
    )
    last_open = bool(found) and found[-1].group(1).lower() == "answer" and not found[-1].group(3)
    cut_off = stopped == "length" and last_open
    cut_from = (
        message.response_metadata.get("cut_from_chars") if isinstance(message, AIMessage) else 0
    )
    return _Reply(
        text, thinking, outside, blocks, had, closed, cut_off, native, invalid,
        cut_from if isinstance(cut_from, int) else 0,
    )  # fmt: skip


def _too_long(reply: _Reply) -> Malformed:
    return Malformed(
        f"the reply was {reply.cut_from} characters long, over the limit, and was cut; "
        "answer briefly",
        reply.text,
        "truncated",
        reply.form(),
    )


def _json_answer(reply: _Reply, obj: dict[str, Any]) -> AnswerAction | Malformed | None:
    """A structured JSON answer (its strings may name tags); None when it has no score."""
    scored = _json_score(obj)
    if scored is None:
        return None
    thought = str(obj.get("thinking") or obj.get("rationale") or "").strip()
    form = ReplyForm(thinking=bool(thought) or reply.thought, answers=1)
    score, reason = scored
    if score is None:
        return Malformed(reason, reply.text, _code(reason), form)
    return AnswerAction(score, thought, thought, json.dumps(obj), form=form)


def _answer_from(reply: _Reply, body: str, form: ReplyForm) -> AnswerAction | Malformed:
    answer = body.strip()
    score, reason = parse_score(answer)  # a JSON body ({"score": ...}) included
    if score is None:
        return Malformed(reason, reply.text, _code(reason), form)
    return AnswerAction(
        score, _rationale(answer, reply.thinking), reply.thinking, answer, form=form
    )


def _cut_off(reply: _Reply) -> Malformed:
    return Malformed(
        "the reply was cut off (max tokens) inside its answer; the score may be incomplete",
        reply.text,
        "truncated",
        reply.form(),
    )


def _code(reason: str) -> MalformedCode:
    if "outside" in reason:
        return "out_of_range"
    if reason.startswith("ambiguous") or reason.startswith("only per-attribute"):
        return "ambiguous"
    if reason.startswith("empty"):
        return "empty"
    return "no_score"


def _untagged(reply: _Reply) -> Action:
    """No action tag outside the thinking: a bare JSON call or answer, or a score in prose."""
    outside = strip_extras(reply.outside)
    if not reply.closed and not outside.strip():
        return Malformed(
            "the reply ended inside its thinking block (cut off?)",
            reply.text,
            "truncated",
            reply.form(),
        )
    if not outside.strip() and not reply.had_thinking:
        return Malformed("empty reply", reply.text, "empty", reply.form())
    obj = _json_object(outside) if "{" in outside else None
    if obj is not None and _call_name(obj) is not None:
        action = _text_tool_call(json.dumps(obj))
        action.form = reply.form(tool_calls=1, tagged=False)
        if isinstance(action, ToolCallAction):
            action.thinking = reply.thinking
        return action
    if obj is not None:
        answered = _json_answer(reply, obj)
        if answered is not None:
            return answered
    form = reply.form(answers=0, tagged=False)
    bare = outside.strip().strip(".")
    if re.fullmatch(_NUM, bare):  # the whole reply is one number
        score, reason = _checked(_Candidate(float(bare), bare, "plain"))
        if score is None:
            return Malformed(reason, reply.text, _code(reason), form)
        return AnswerAction(score, reply.thinking, reply.thinking, bare, lenient=True, form=form)
    candidate, reason = _choose(outside, labelled_only=True)
    if candidate is None:
        if reason.startswith("no number"):
            reason = "no <answer> tag and no score"
        return Malformed(reason, reply.text, _code(reason), form)
    score, reason = _checked(candidate)
    if score is None:
        return Malformed(reason, reply.text, _code(reason), form)
    rationale = _rationale(outside, reply.thinking)
    return AnswerAction(score, rationale, reply.thinking, candidate.text, lenient=True, form=form)


def parse_answer(message: AIMessage | str) -> AnswerAction | Malformed:
    """A final answer from a reply: ``<answer>`` content, JSON, or a lenient ``score: x``.

    The thinking is set aside first (see :func:`split_thinking`). ``<attributes>``/
    ``<regions>``/``<query_answer>`` blocks are ignored here (see
    :func:`parse_attribute_scores`, :func:`parse_regions`). A reply with a tool call and
    no answer is Malformed (``code="tool_call"``): no tool may be called at this turn.
    """
    reply = _take_apart(message if isinstance(message, AIMessage) else message or "")
    if reply.cut_from:
        return _too_long(reply)
    whole = _whole_json(reply.text)
    if whole is not None:
        answered = _json_answer(reply, whole)
        if answered is not None:
            return answered
    answers = [body for kind, body in reply.blocks if kind == "answer"]
    if answers and reply.cut_off:
        return _cut_off(reply)
    if answers:
        return _answer_from(reply, answers[-1], reply.form())
    if reply.native_calls or reply.invalid_calls or any(k == "tool_call" for k, _ in reply.blocks):
        return Malformed(
            "a tool call where the final answer was due (no tool may be called now)",
            reply.text,
            "tool_call",
            reply.form(),
        )
    action = _untagged(reply)
    if isinstance(action, ToolCallAction | InvalidToolCall):
        return Malformed(
            "a tool call where the final answer was due (no tool may be called now)",
            reply.text,
            "tool_call",
            action.form,
        )
    return action


def _rationale(answer: str, thinking: str) -> str:
    """The reasons given: answer text beyond the bare number, else the thinking."""
    without_number = _NUMBER_RE.sub("", answer)
    if len(re.sub(r"[\W_]+", "", without_number)) > 12:
        return answer.strip()
    return thinking


def _call_name(obj: dict[str, Any]) -> str | None:
    """The tool a JSON call names: hermes ``{"name", "arguments"}``, OpenAI
    ``{"type": "function", "function": {...}}`` or ``{"tool": ...}``."""
    inner = obj.get("function")
    if isinstance(inner, dict) and isinstance(inner.get("name"), str):
        return str(inner["name"])
    for key in ("name", "tool", "tool_name"):
        if isinstance(obj.get(key), str) and (
            key != "name" or any(k in obj for k in ("arguments", "parameters", "args"))
        ):
            return str(obj[key])
    return None


def _text_tool_call(block: str) -> ToolCallAction | InvalidToolCall:
    raw = block.strip()
    if raw.startswith("```"):
        raw = re.sub(r"^```(?:json)?\s*|\s*```$", "", raw)
    try:
        obj = load_json(raw)
    except json.JSONDecodeError as exc:
        obj = _json_object(raw)
        if obj is None:
            return InvalidToolCall(f"tool call is not valid JSON ({exc.msg})", None, raw, "text")
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        obj = obj[0]
    malformed = 'tool call must be {"name": ..., "arguments": {...}}'
    if not isinstance(obj, dict):
        return InvalidToolCall(malformed, None, raw, "text")
    inner: dict[str, Any] = obj["function"] if isinstance(obj.get("function"), dict) else obj
    names = (inner.get("name"), obj.get("tool"), obj.get("tool_name"))
    name = next((n for n in names if isinstance(n, str)), None)
    if name is None:
        return InvalidToolCall(malformed, None, raw, "text")
    args = inner.get("arguments", inner.get("parameters", inner.get("args", {})))
    if isinstance(args, str):
        try:
            args = load_json(args)
        except json.JSONDecodeError as exc:
            return InvalidToolCall(
                f"tool arguments are not valid JSON ({exc.msg})", name, raw, "text"
            )
    return ToolCallAction(name, args, None, "text")


def parse_action(message: AIMessage | str) -> Action:
    """Decide what a gate reply asks for: a tool call (native or text) or a final answer.

    The thinking is set aside first, so tags it only mentions are not actions. Of the
    action blocks outside it, the FIRST decides; a reply with both a tool call and an
    answer (or several of either) keeps that action but its :class:`ReplyForm` says it
    broke the single-action rule.
    """
    reply = _take_apart(message)
    if reply.cut_from:
        return _too_long(reply)
    whole = _whole_json(reply.text) if not reply.native_calls else None
    if whole is not None and _call_name(whole) is None:
        answered = _json_answer(reply, whole)
        if answered is not None:
            return answered
    if reply.native_calls:
        first = reply.native_calls[0]
        return ToolCallAction(
            first["name"],
            first.get("args", {}),
            first.get("id"),
            "native",
            reply.thinking,
            extra_calls=len(reply.native_calls) - 1,
            form=reply.form(),
        )
    if reply.invalid_calls:
        bad = reply.invalid_calls[0]
        reason = bad.get("error") or "tool call arguments are not valid JSON"
        return InvalidToolCall(
            str(reason),
            bad.get("name"),
            str(bad.get("args") or ""),
            "native",
            bad.get("id"),
            form=reply.form(),
        )
    if not reply.blocks:
        return _untagged(reply)
    kind, body = reply.blocks[0]
    if kind == "answer" and reply.cut_off:
        return _cut_off(reply)
    if kind == "answer":
        answers = [b for k, b in reply.blocks if k == "answer"]
        return _answer_from(
            reply, answers[-1] if len(reply.blocks) == len(answers) else body, reply.form()
        )
    action = _text_tool_call(body)
    action.form = reply.form()
    if isinstance(action, ToolCallAction):
        action.thinking = reply.thinking
        action.extra_calls = sum(1 for k, _ in reply.blocks if k == "tool_call") - 1
    return action


_ATTRIBUTE_KEYS = (
    ("sharp", "sharpness"),
    ("detail", "sharpness"),
    ("noise", "noise"),
    ("grain", "noise"),
    ("artifact", "artifacts"),
    ("artefact", "artifacts"),
    ("exposure", "exposure"),
    ("colour", "colour"),
    ("color", "colour"),
    ("visib", "visibility"),
    ("salien", "visibility"),
    ("subject", "visibility"),
)
_RUBRIC_LINE = re.compile(
    r"^[\s*#>\-\d.)]*([A-Za-z][A-Za-z &/]*?)\**\s*:\s*\**\s*\[?([^\]\-–—:\n]*?)\]?\s*(?:[-–—:]\s*(.*))?$"
)


def _attribute(name: str) -> str | None:
    low = name.lower()
    for needle, key in _ATTRIBUTE_KEYS:
        if needle in low:
            return key
    return None


def _level(attribute: str, raw: str) -> str | None:
    low = raw.strip().lower().strip("*[] .")
    allowed = RUBRIC_LEVELS[attribute]
    if low in allowed:
        return low
    if attribute == "visibility":
        if "obscur" in low or "hidden" in low:
            return "obscured"
        if "clear" in low or "visible" in low:
            return "clear"
    for level in allowed:
        if low.startswith(level) or re.search(rf"\b{level}\b", low):
            return level
    return None


def parse_rubric(text: str) -> dict[str, dict[str, Any]]:
    """Attribute → {level, note, raw_level} from a rubric note (tagged text or JSON).

    ``level`` is one of :data:`~tooliqa.graph.prompts.RUBRIC_LEVELS` or None when the
    model wrote something else (kept in ``raw_level``). Attributes the note does
    not mention are absent.
    """
    rubric: dict[str, dict[str, Any]] = {}
    _, outside, _, _ = split_thinking(text or "")
    answers = _ANSWER_RE.findall(outside)
    body = answers[-1] if answers else outside
    obj = _json_object(body) if "{" in body else None
    if obj is not None:
        for name, value in obj.items():
            key = _attribute(str(name))
            if key is None or key in rubric:
                continue
            raw_level = value.get("level", "") if isinstance(value, dict) else value
            note = value.get("note", "") if isinstance(value, dict) else ""
            rubric[key] = {
                "level": _level(key, str(raw_level)),
                "note": str(note),
                "raw_level": str(raw_level),
            }
        return rubric
    for line in body.splitlines():
        m = _RUBRIC_LINE.match(line.strip())
        if not m:
            continue
        key = _attribute(m.group(1))
        if key is None or key in rubric:
            continue
        raw_level = m.group(2).strip()
        rubric[key] = {
            "level": _level(key, raw_level),
            "note": (m.group(3) or "").strip(),
            "raw_level": raw_level,
        }
    return rubric


def parse_attribute_scores(text: str) -> tuple[dict[str, float], list[str]]:
    """Attribute key → 1-5 score from an ``<attributes>Name: x; ...</attributes>`` block,
    and notes on what was dropped.

    Entries may come in any order and case, separated by ``;``, ``,`` or new lines,
    as ``x`` or ``x/5``; names map to the rubric keys of
    :data:`~tooliqa.graph.prompts.RUBRIC_LEVELS` (``Color`` → ``colour``, ``Saliency
    Visibility`` → ``visibility``). Missing attributes are absent; unknown names,
    non-numbers and values outside [1, 5] are dropped with a note. No block: ``({}, [])``.

    >>> parse_attribute_scores("<attributes>noise: 4; Sharpness: 3.5</attributes>")
    ({'noise': 4.0, 'sharpness': 3.5}, [])
    """
    blocks = _ATTRIBUTES_RE.findall(text or "")
    if not blocks:
        return {}, []
    scores: dict[str, float] = {}
    notes: list[str] = []
    for entry in re.split(r"[;,\n]+", blocks[-1]):
        if not entry.strip():
            continue
        name, sep, value = entry.partition(":")
        key = _attribute(name) if sep else None
        if key is None:
            notes.append(f"attribute score {entry.strip()!r} names no rubric attribute")
            continue
        number = _NUMBER_RE.search(value)
        if number is None:
            notes.append(f"attribute score for {key} is not a number: {value.strip()!r}")
            continue
        score = float(number.group(0))  # "3.5/5" reads as 3.5
        if not SCORE_MIN <= score <= SCORE_MAX:
            notes.append(f"attribute score for {key} ({score:g}) is outside 1-5; dropped")
            continue
        scores.setdefault(key, round(score, 4))
    return scores, notes


def _severity(value: Any) -> float | str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if 0.0 <= value <= 1.0 else None
    text = str(value).strip().lower()
    return text or None


def parse_query_answer(text: str) -> str | None:
    """The text of the last ``<query_answer>`` block, whitespace collapsed, or None when
    there is none (see :mod:`tooliqa.graph.query`)."""
    blocks = _QUERY_ANSWER_RE.findall(text or "")
    if not blocks:
        return None
    return " ".join(blocks[-1].split()) or None


def parse_regions(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Regions from a ``<regions>[{"bbox": [...], "label": ..., "severity": ...}]</regions>``
    block, boxes still in the model's convention, and notes on what was dropped.

    ``box`` is accepted for ``bbox``; ``severity`` is a number in [0, 1] or a level word
    (kept lower-case), None when absent or out of range; ``label`` is lower-case text
    ("distortion" when missing). ``source`` is ``"answer"`` unless the entry says
    ``"piqe"`` (the classic backend's measured boxes). No block: ``([], [])``.
    """
    blocks = _REGIONS_RE.findall(text or "")
    if not blocks:
        return [], []
    body = blocks[-1].strip()
    if body.startswith("```"):
        body = re.sub(r"^```(?:json)?\s*|\s*```$", "", body)
    try:
        items = load_json(body) if body else []
    except json.JSONDecodeError as exc:
        return [], [f"regions are not valid JSON ({exc.msg})"]
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        return [], ["regions must be a JSON list"]
    regions: list[dict[str, Any]] = []
    notes: list[str] = []
    for item in items:
        bbox = item.get("bbox", item.get("box")) if isinstance(item, dict) else None
        if not isinstance(bbox, list) or len(bbox) != 4:
            notes.append(f"region {item!r} has no [x1, y1, x2, y2] bbox; dropped")
            continue
        assert isinstance(item, dict)
        regions.append(
            {
                "bbox": bbox,
                "label": str(item.get("label") or "distortion").strip().lower(),
                "severity": _severity(item.get("severity")),
                "source": "piqe" if item.get("source") == "piqe" else "answer",
            }
        )
    return regions, notes
