"""Parse model replies: rubric notes, actions (tool call or final answer), scores.

Every function here is total: malformed text gives a typed outcome
(:class:`InvalidToolCall`, :class:`Malformed`) with a reason, never an exception.
Tool calls are read from OpenAI ``tool_calls`` (vLLM's hermes parser) and from
``<tool_call>{json}</tool_call>`` text alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage

from .prompts import RUBRIC_LEVELS

__all__ = [
    "Action",
    "AnswerAction",
    "InvalidToolCall",
    "Malformed",
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
    "strip_extras",
]

SCORE_MIN, SCORE_MAX = 1.0, 5.0

_TAG = r"<{0}>(.*?)(?:</{0}>|$)"
_THINK_RE = re.compile(r"<(?:thinking|think)>(.*?)(?:</(?:thinking|think)>|$)", re.S | re.I)
_ANSWER_RE = re.compile(_TAG.format("answer"), re.S | re.I)
_TOOL_RE = re.compile(_TAG.format("tool_call"), re.S | re.I)
_NUM = r"[-+]?\d+(?:\.\d+)?"
_FRACTION_RE = re.compile(rf"({_NUM})\s*/\s*({_NUM})")
_KEYWORD_RE = re.compile(
    rf"(?:score|rating|final answer|quality)\s*(?:is|of|=|:)?\s*\**\s*({_NUM})", re.I
)
_NUMBER_RE = re.compile(_NUM)
_ATTRIBUTES_RE = re.compile(_TAG.format("attributes"), re.S | re.I)
_REGIONS_RE = re.compile(_TAG.format("regions"), re.S | re.I)
_QUERY_ANSWER_RE = re.compile(_TAG.format("query_answer"), re.S | re.I)
_EXTRAS_RE = re.compile(r"<(attributes|regions|query_answer)>.*?(?:</\1>|$)", re.S | re.I)


@dataclass
class ToolCallAction:
    """The model asked for a tool."""

    name: str
    args: Any
    call_id: str | None
    source: Literal["native", "text"]
    thinking: str = ""
    extra_calls: int = 0


@dataclass
class InvalidToolCall:
    """The model tried to call a tool but the call cannot be read (e.g. broken JSON)."""

    reason: str
    name: str | None
    raw: str
    source: Literal["native", "text"]
    call_id: str | None = None


@dataclass
class AnswerAction:
    """A final answer with a score in [1, 5]."""

    score: float
    rationale: str
    thinking: str = ""
    answer_text: str = ""
    lenient: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class Malformed:
    """Neither a readable tool call nor a usable final answer."""

    reason: str
    raw: str


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


def _thinking(text: str) -> str:
    return " ".join(m.strip() for m in _THINK_RE.findall(text)).strip()


def _json_object(text: str) -> dict[str, Any] | None:
    text = text.strip()
    if text.startswith("```"):
        text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start : end + 1])
    except (json.JSONDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def parse_score(text: str) -> tuple[float | None, str]:
    """Read one score in [1, 5] from an answer. Returns (score, "") or (None, reason).

    Accepts ``3.75``, ``Score: 3.75``, ``4.5/5`` and other ``x/N`` forms for
    N in {5, 10, 100} (rescaled to five), and JSON ``{"score": 3.75}``. A number
    outside [1, 5] is refused, not clipped.
    """
    text = (text or "").strip()
    if not text:
        return None, "empty answer"
    obj = _json_object(text) if "{" in text else None
    value: float | None = None
    if obj is not None and "score" in obj:
        try:
            value = float(obj["score"])
        except (TypeError, ValueError):
            return None, f"score {obj['score']!r} is not a number"
    if value is None:
        frac = _FRACTION_RE.search(text)
        if frac is not None:
            num, den = float(frac.group(1)), float(frac.group(2))
            if den not in (5.0, 10.0, 100.0):
                return None, f"score {frac.group(0)} is on an unknown scale"
            value = num * 5.0 / den
    if value is None:
        kw = _KEYWORD_RE.search(text)
        match = kw.group(1) if kw else None
        if match is None:
            first = _NUMBER_RE.search(text)
            match = first.group(0) if first else None
        if match is None:
            return None, "no number in the answer"
        value = float(match)
    if not SCORE_MIN <= value <= SCORE_MAX:
        return None, f"score {value:g} is outside {SCORE_MIN:.2f}-{SCORE_MAX:.2f}"
    return round(value, 4), ""


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


def parse_answer(text: str) -> AnswerAction | Malformed:
    """A final answer from reply text: ``<answer>`` content, JSON, or a lenient ``score: x``.

    ``<attributes>``/``<regions>`` blocks are ignored here (see
    :func:`parse_attribute_scores`, :func:`parse_regions`).
    """
    whole = _json_object(text) if text and "<answer>" not in text.lower() else None
    if whole is not None and "score" in whole:  # a JSON answer: its strings may name tags
        score, reason = parse_score(json.dumps({"score": whole["score"]}))
        if score is None:
            return Malformed(reason, text)
        thought = str(whole.get("thinking") or whole.get("rationale") or "").strip()
        return AnswerAction(score, thought, thought, json.dumps(whole))
    raw = strip_extras(text or "")
    if not raw.strip():
        return Malformed("empty reply", raw)
    thinking = _thinking(raw)
    answers = _ANSWER_RE.findall(raw)
    if answers:
        answer = answers[-1].strip()
        score, reason = parse_score(answer)
        if score is None:
            return Malformed(reason, raw)
        rationale = _rationale(answer, thinking)
        return AnswerAction(score, rationale, thinking, answer)
    obj = _json_object(raw)
    if obj is not None and "score" in obj:
        score, reason = parse_score(json.dumps({"score": obj["score"]}))
        if score is None:
            return Malformed(reason, raw)
        thought = str(obj.get("thinking") or obj.get("rationale") or "")
        return AnswerAction(score, thought.strip(), thought.strip(), json.dumps(obj))
    outside = _THINK_RE.sub(" ", raw)
    kw = _KEYWORD_RE.search(outside) or _FRACTION_RE.search(outside)
    if kw is None:
        return Malformed("no <answer> tag and no score", raw)
    score, reason = parse_score(kw.group(0))
    if score is None:
        return Malformed(reason, raw)
    return AnswerAction(score, _rationale(outside, thinking), thinking, kw.group(0), lenient=True)


def _rationale(answer: str, thinking: str) -> str:
    """The reasons given: answer text beyond the bare number, else the thinking."""
    without_number = _NUMBER_RE.sub("", answer)
    if len(re.sub(r"[\W_]+", "", without_number)) > 12:
        return answer.strip()
    return thinking


def _text_tool_call(block: str) -> ToolCallAction | InvalidToolCall:
    raw = block.strip()
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        obj = _json_object(raw)
        if obj is None:
            return InvalidToolCall(f"tool call is not valid JSON ({exc.msg})", None, raw, "text")
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return InvalidToolCall(
            'tool call must be {"name": ..., "arguments": {...}}', None, raw, "text"
        )
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as exc:
            return InvalidToolCall(
                f"tool arguments are not valid JSON ({exc.msg})", obj["name"], raw, "text"
            )
    return ToolCallAction(obj["name"], args, None, "text")


def parse_action(message: AIMessage | str) -> Action:
    """Decide what a gate reply asks for: a tool call (native or text) or a final answer."""
    text = message_text(message)
    thinking = _thinking(text)
    if isinstance(message, AIMessage) and message.tool_calls:
        first = message.tool_calls[0]
        return ToolCallAction(
            first["name"],
            first.get("args", {}),
            first.get("id"),
            "native",
            thinking,
            extra_calls=len(message.tool_calls) - 1,
        )
    if isinstance(message, AIMessage) and message.invalid_tool_calls:
        bad = message.invalid_tool_calls[0]
        reason = bad.get("error") or "tool call arguments are not valid JSON"
        return InvalidToolCall(
            str(reason), bad.get("name"), str(bad.get("args") or ""), "native", bad.get("id")
        )
    tool_blocks = _TOOL_RE.findall(text)
    answer_pos = text.lower().find("<answer>")
    tool_pos = text.lower().find("<tool_call>")
    if tool_blocks and (answer_pos < 0 or tool_pos < answer_pos):
        action = _text_tool_call(tool_blocks[0])
        if isinstance(action, ToolCallAction):
            action.thinking = thinking
            action.extra_calls = len(tool_blocks) - 1
        return action
    return parse_answer(text)


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
    answers = _ANSWER_RE.findall(text or "")
    body = answers[-1] if answers else _THINK_RE.sub(" ", text or "")
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
        items = json.loads(body) if body else []
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
