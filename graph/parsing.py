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
    "message_text",
    "parse_action",
    "parse_answer",
    "parse_rubric",
    "parse_score",
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


def parse_answer(text: str) -> AnswerAction | Malformed:
    """A final answer from reply text: ``<answer>`` content, JSON, or a lenient ``score: x``."""
    raw = text or ""
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
