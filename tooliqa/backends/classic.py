"""The embedded classic backend: a chat model made of hand-crafted image measures.

This module is the thin chat-model adapter; what to say and do is the pure policy in
:mod:`tooliqa.backends.classic_policy`. Each turn's kind, the question's plan and the
extras asked for come from the turn's :class:`~tooliqa.graph.protocol.TurnSpec` (the
graph marks every user turn), not from the prompt's wording.

It needs no GPU and no network, and drives the SAME graph as a VLM does, through
the same prompts and the same reply protocol:

* rubric turn: measures the image (:func:`tooliqa.tools.measures.measure`) and
  writes the rubric note from the measurements;
* gate turn: calls the gamma corrector when the image is badly exposed, the
  magnifier on the most detailed region when sharpness is borderline (each at
  most once), otherwise answers;
* answer turn: maps the measurements to a 1–5 score through the monotone
  calibration fitted on the AGIQA-3K ``dev`` split
  (:mod:`tooliqa.backends.classic_calibration`), and explains the score with
  the largest feature contributions and what the tool views showed. When the
  turn asks for them (``Context.attribute_scores`` / ``report_regions``), the
  answer adds ``<attributes>`` from :func:`attribute_scores` and ``<regions>``
  with PIQE's merged distortion boxes (top :data:`MAX_PIQE_REGIONS` by severity).
* with a query (:mod:`tooliqa.graph.query`): the gate calls the plan's tools
  first (measurement tools on the whole image, the magnifier on the most
  detailed region, the gamma corrector towards the exposure problem), and the
  answer adds ``<query_answer>`` from the focus attributes' scores (a yes/no
  verdict: a defect question is answered *yes* below 3.0, a virtue question at
  3.0 and above) and the tool results; a "rate only ..." question is answered with
  that attribute's score in ``<answer>``.

Every Assessment it produces is labelled ``backend="classic"``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from threading import Lock
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

from tooliqa.graph.parsing import message_text
from tooliqa.graph.prompts import ATTRIBUTE_NAMES, rubric_attributes
from tooliqa.graph.protocol import TurnSpec, turn_of
from tooliqa.graph.query import QueryPlan
from tooliqa.tools import DecodedImage, ImageError, decode_image_cached, image_digest
from tooliqa.tools.measures import Measurements, measure, most_detailed_region
from tooliqa.tools.piqe import distortion_boxes, piqe_maps

from . import classic_policy as policy
from .classic_calibration import ClassicCalibration, load_classic_calibration
from .classic_policy import RUBRIC_CUTS, attribute_scores, exposure_problem, rubric_levels

__all__ = [
    "MAX_PIQE_REGIONS",
    "RUBRIC_CUTS",
    "ClassicChatModel",
    "attribute_scores",
    "exposure_problem",
    "rubric_levels",
]

#: PIQE boxes reported with ``<regions>``: the most severe merged boxes.
MAX_PIQE_REGIONS = 3

_DATA_URL = re.compile(r"^data:[^;,]+;base64,(.*)$", re.S)
_TOOL_RESPONSE_RE = re.compile(r"<tool_response>\s*(.*?)\s*</tool_response>", re.S)


def _image_parts(message: BaseMessage) -> list[bytes]:
    out: list[bytes] = []
    if isinstance(message.content, str):
        return out
    for block in message.content:
        if not isinstance(block, dict):
            continue
        url = None
        if block.get("type") == "image_url":
            image_url = block.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
        elif block.get("type") == "image" and block.get("base64"):
            url = "data:;base64," + str(block["base64"])
        match = _DATA_URL.match(url or "")
        if match:
            try:
                out.append(base64.b64decode(match.group(1), validate=False))
            except (binascii.Error, ValueError):
                continue
    return out


def _tool_names(kwargs: dict[str, Any], messages: Sequence[BaseMessage]) -> list[str]:
    names = []
    for spec in kwargs.get("tools") or []:
        fn = spec.get("function", spec) if isinstance(spec, dict) else {}
        if isinstance(fn, dict) and fn.get("name"):
            names.append(str(fn["name"]))
    if names or not messages:
        return names
    system = message_text(messages[0])
    for line in re.findall(r"^\{.*\}$", system, re.M):  # text protocol: Qwen3 <tools> listing
        try:
            spec = json.loads(line)
        except json.JSONDecodeError:
            continue
        fn = spec.get("function", spec)
        if isinstance(fn, dict) and fn.get("name"):
            names.append(str(fn["name"]))
    return names


def _tool_results(messages: Sequence[BaseMessage]) -> list[str]:
    """The tool results the conversation reported (tool messages or ``<tool_response>``)."""
    out = []
    for msg in messages:
        if isinstance(msg, ToolMessage):
            out.append(message_text(msg).strip())
        elif isinstance(msg, HumanMessage):
            out += _TOOL_RESPONSE_RE.findall(message_text(msg))
    return [t for t in out if t and not t.startswith("Tool call failed")]


def _calls_made(messages: Sequence[BaseMessage]) -> list[tuple[str, dict[str, Any]]]:
    calls = []
    for msg in messages:
        if not isinstance(msg, AIMessage):
            continue
        calls += [(c["name"], dict(c.get("args") or {})) for c in msg.tool_calls]
        for block in re.findall(r"<tool_call>(.*?)</tool_call>", message_text(msg), re.S):
            try:
                obj = json.loads(block)
                calls.append((str(obj.get("name")), dict(obj.get("arguments") or {})))
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
                continue
    return calls


class ClassicChatModel(BaseChatModel):
    """A chat model that assesses with classic measures (see the module docstring)."""

    backend_name: str = "classic"
    bbox_convention: str = "rel1000"
    cuts: dict[str, float] = Field(default_factory=lambda: dict(RUBRIC_CUTS))
    disable_streaming: bool = True
    _calibration: ClassicCalibration | None = PrivateAttr(default=None)
    _cache: OrderedDict[str, Measurements] = PrivateAttr(default_factory=OrderedDict)
    _lock: Lock = PrivateAttr(default_factory=Lock)

    @property
    def _llm_type(self) -> str:
        return "tooliqa-classic"

    @property
    def calibration(self) -> ClassicCalibration:
        if self._calibration is None:
            self._calibration = load_classic_calibration()
        return self._calibration

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        return self.bind(tools=list(tools), tool_choice=tool_choice, **kwargs)

    def _measure(self, data: bytes) -> tuple[Measurements, DecodedImage]:
        key = image_digest(data)
        image = decode_image_cached(data)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit, image
        m = measure(image.rgb)
        with self._lock:
            self._cache[key] = m
            while len(self._cache) > 16:
                self._cache.popitem(last=False)
        return m, image

    def _original(self, messages: Sequence[BaseMessage]) -> bytes:
        for msg in messages:
            if isinstance(msg, HumanMessage):
                parts = _image_parts(msg)
                if parts:
                    return parts[0]
        raise ImageError("the classic backend found no image in the conversation")

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        m, image = self._measure(self._original(messages))
        spec = turn_of(messages) or _unmarked_turn(messages)
        plan = QueryPlan.from_dict(spec.plan) if spec.plan else None
        if spec.kind == "rubric":
            reply = AIMessage(content=policy.rubric_note(m, spec.prompt_style, self.cuts))
        elif spec.kind == "gate":
            choice = policy.choose_tool(
                m,
                available=_tool_names(kwargs, messages),
                used={name for name, _ in _calls_made(messages)},
                plan=plan,
                box=lambda: self._box(image),
                cuts=self.cuts,
            )
            if choice is None:
                reply = AIMessage(content=self._answer(m, messages, image, spec, plan))
            else:
                reply = _call_reply(
                    choice, len(_calls_made(messages)) + 1, bool(kwargs.get("tools"))
                )
        else:
            reply = AIMessage(content=self._answer(m, messages, image, spec, plan))
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _box(self, image: DecodedImage) -> list[float]:
        return self._to_convention(most_detailed_region(image.rgb, grid=4), image)

    def _to_convention(self, box: Sequence[int], image: DecodedImage) -> list[float]:
        """A box in the decoded pixels as the image's own pixels, then in the convention."""
        w, h, k = image.width, image.height, image.scale
        x1, y1, x2, y2 = box[0] * k, box[1] * k, min(w, box[2] * k), min(h, box[3] * k)
        if self.bbox_convention == "pixel":
            return [float(x1), float(y1), float(x2), float(y2)]
        scale = 1000.0 if self.bbox_convention == "rel1000" else 1.0
        digits = 0 if scale == 1000.0 else 4
        return [
            round(x1 * scale / w, digits),
            round(y1 * scale / h, digits),
            round(x2 * scale / w, digits),
            round(y2 * scale / h, digits),
        ]

    def _regions(self, image: DecodedImage) -> list[dict[str, Any]]:
        """PIQE's merged distortion boxes, most severe first, in the box convention."""
        boxes = distortion_boxes(piqe_maps(image.rgb), merge=True)[:MAX_PIQE_REGIONS]
        return [
            {
                "bbox": self._to_convention((b.x1, b.y1, b.x2, b.y2), image),
                "label": b.kind,
                "severity": round(b.severity, 3),
                "source": "piqe",
            }
            for b in boxes
        ]

    def _answer(
        self,
        m: Measurements,
        messages: Sequence[BaseMessage],
        image: DecodedImage,
        spec: TurnSpec,
        plan: QueryPlan | None,
    ) -> str:
        wanted = rubric_attributes(spec.prompt_style) if spec.attribute_scores else ()
        result = policy.answer(
            m,
            self.calibration,
            calls=_calls_made(messages),
            plan=plan,
            tool_results=_tool_results(messages),
            attributes=wanted,
            cuts=self.cuts,
        )
        extras = ""
        if wanted:
            entries = [f"{ATTRIBUTE_NAMES[k]}: {v:.1f}" for k, v in result.attributes.items()]
            extras += "\n<attributes>" + "; ".join(entries) + "</attributes>"
        if spec.report_regions:
            extras += "\n<regions>" + json.dumps(self._regions(image)) + "</regions>"
        if result.query_answer is not None:
            extras += f"\n<query_answer>{result.query_answer}</query_answer>"
        return f"<thinking>{result.thinking}</thinking>\n<answer>{result.answered:.2f}</answer>{extras}"


def _unmarked_turn(messages: Sequence[BaseMessage]) -> TurnSpec:
    """A conversation from outside the graph (no turn marks): the rubric first, then the
    answer."""
    answered_before = any(isinstance(m, AIMessage) for m in messages)
    return TurnSpec(kind="final" if answered_before else "rubric")


def _call_reply(choice: policy.ToolChoice, n: int, native: bool) -> AIMessage:
    """The gate's tool call, as a native tool call or in Qwen3's ``<tool_call>`` text."""
    if native:
        call = {"name": choice.name, "args": choice.args, "id": f"classic_{n}", "type": "tool_call"}
        return AIMessage(content=f"<thinking>{choice.why}</thinking>", tool_calls=[call])
    payload = json.dumps({"name": choice.name, "arguments": choice.args})
    return AIMessage(content=f"<thinking>{choice.why}</thinking>\n<tool_call>{payload}</tool_call>")
