"""The embedded classic backend: a chat model made of hand-crafted image measures.

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

import numpy as np
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

from tooliqa.graph.parsing import message_text
from tooliqa.graph.prompts import (
    ATTRIBUTE_NAMES,
    FINAL_PROMPT,
    GATE_PROMPT,
    QUERY_PROMPT,
    RUBRIC_PROMPT,
)
from tooliqa.graph.query import QueryPlan, plan_query
from tooliqa.tools import DecodedImage, ImageError, decode_image_cached, image_digest
from tooliqa.tools.measures import Measurements, measure, most_detailed_region
from tooliqa.tools.piqe import distortion_boxes, piqe_maps

from .classic_calibration import ClassicCalibration, load_classic_calibration

__all__ = [
    "MAX_PIQE_REGIONS",
    "RUBRIC_CUTS",
    "ClassicChatModel",
    "attribute_scores",
    "rubric_levels",
]

#: PIQE boxes reported with ``<regions>``: the most severe merged boxes.
MAX_PIQE_REGIONS = 3

#: Cut points for the rubric levels, placed near percentiles of each measure on
#: the AGIQA-3K dev split (sharpness: 25th/75th; noise sigma: ~75th/95th;
#: blockiness: ~75th/95th; exposure: ~10th/95th of mean luma, ~90th of clipping).
RUBRIC_CUTS: dict[str, float] = {
    "sharpness_low": 2.4,
    "sharpness_high": 4.5,
    "borderline_low": 2.9,
    "borderline_high": 4.0,
    "noise_visible": 2.0,
    "noise_severe": 4.5,
    "block_minor": 1.4,
    "block_severe": 1.75,
    "ringing_minor": 8.5,
    "dark_luma": 0.2,
    "bright_luma": 0.7,
    "shadow_clip": 0.25,
    "highlight_clip": 0.08,
    "colour_dull": 10.0,
    "colour_garish": 120.0,
    "subject_contrast": 0.1,
}

_RUBRIC_MARK = RUBRIC_PROMPT.splitlines()[0]
_GATE_MARK = GATE_PROMPT.splitlines()[0]
_FINAL_MARK = FINAL_PROMPT.splitlines()[0]
_DATA_URL = re.compile(r"^data:[^;,]+;base64,(.*)$", re.S)
_QUERY_RE = re.compile(  # the question as QUERY_PROMPT writes it (on one line)
    re.escape(QUERY_PROMPT.split("{query}")[0])
    + r"(.*?)"
    + re.escape(QUERY_PROMPT.split("{query}")[1].splitlines()[0])
    + "$",
    re.M,
)
_TOOL_RESPONSE_RE = re.compile(r"<tool_response>\s*(.*?)\s*</tool_response>", re.S)

#: An attribute score below this answers a defect question "yes" (a virtue question "no").
YES_NO_CUT = 3.0


def _level(value: float, low: float, high: float, names: tuple[str, str, str]) -> str:
    return names[0] if value < low else names[2] if value > high else names[1]


def exposure_problem(m: Measurements, cuts: dict[str, float] = RUBRIC_CUTS) -> str | None:
    """``"dark"``, ``"bright"`` or None, from mean luma and clipped fractions."""
    if m.mean_luminance < cuts["dark_luma"] or m.shadow_clip > cuts["shadow_clip"]:
        return "dark"
    if m.mean_luminance > cuts["bright_luma"] or m.highlight_clip > cuts["highlight_clip"]:
        return "bright"
    return None


def rubric_levels(
    m: Measurements, cuts: dict[str, float] = RUBRIC_CUTS
) -> dict[str, tuple[str, str]]:
    """Attribute → (level, note) written from the measurements."""
    c = cuts
    sharp = _level(m.sharpness, c["sharpness_low"], c["sharpness_high"], ("Low", "Medium", "High"))
    noise = _level(
        m.noise_sigma, c["noise_visible"], c["noise_severe"], ("None", "Visible", "Severe")
    )
    artifacts = _level(
        m.blockiness, c["block_minor"], c["block_severe"], ("None", "Minor", "Severe")
    )
    if artifacts == "None" and m.ringing > c["ringing_minor"]:
        artifacts = "Minor"
    problem = exposure_problem(m, c)
    balanced = 0.3 <= m.mean_luminance <= 0.6 and m.dynamic_range > 0.7
    exposure = "Poor" if problem else "Excellent" if balanced else "Good"
    dull, garish = m.colourfulness < c["colour_dull"], m.colourfulness > c["colour_garish"]
    colour = "Poor" if dull or garish else "Excellent" if 30 <= m.colourfulness <= 90 else "Good"
    hidden = problem == "dark" or m.main_region_contrast < c["subject_contrast"]
    visibility = "Obscured" if hidden else "Subject Clear"
    return {
        "Sharpness": (
            sharp,
            f"sharpness index {m.sharpness:.2f} (edge fineness), edge density {m.edge_density:.2f}",
        ),
        "Noise": (noise, f"estimated noise sigma {m.noise_sigma:.2f} grey levels"),
        "Artifacts": (artifacts, f"8x8 blockiness {m.blockiness:.2f}, ringing {m.ringing:.2f}"),
        "Exposure": (
            exposure,
            f"mean luma {m.mean_luminance:.2f}, clipped shadows {m.shadow_clip:.1%}, "
            f"highlights {m.highlight_clip:.1%}",
        ),
        "Color": (
            colour,
            f"colourfulness {m.colourfulness:.1f}, mean saturation {m.mean_saturation:.2f}",
        ),
        "Saliency Visibility": (
            visibility,
            f"most detailed region has contrast {m.main_region_contrast:.2f}, "
            f"{m.main_region_detail_ratio:.1f}x the average detail",
        ),
    }


def _ramp(value: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    return float(np.interp(value, xs, ys))


def attribute_scores(m: Measurements, cuts: dict[str, float] = RUBRIC_CUTS) -> dict[str, float]:
    """Attribute key → 1-5 score: piecewise-linear, monotone maps of the measures that
    write the rubric, anchored at the same cut points (a cut between two levels maps
    to 2.5 or 4; values beyond the outer anchors clamp to 1 or 5):

    * sharpness: sharpness index 0.5 low / low / high / 1.5 high → 1 / 2.5 / 4 / 5;
    * noise: noise sigma 0 / visible / severe / 2 severe → 5 / 4 / 2 / 1;
    * artifacts: the lower of blockiness 1 / minor / severe / 2.5 → 5 / 4 / 2 / 1
      and ringing 0 / minor / 2 minor → 5 / 4 / 2;
    * exposure: the lower of mean luma 0 / dark / 0.3 / 0.6 / bright / 1 →
      1 / 2.5 / 5 / 5 / 2.5 / 1 and clipping (the larger clipped fraction over its
      cut) 0 / 1 / 2 → 5 / 2.5 / 1;
    * colour: colourfulness 0 / dull / 30 / 90 / garish / 2 garish → 1 / 2.5 / 5 / 5 / 2.5 / 1;
    * visibility: main-region contrast 0 / subject cut / 3 cut → 1 / 2.5 / 5, at most
      2.5 when the image is dark.

    Scores are rounded to 0.1.
    """
    c = cuts
    lo, hi = c["sharpness_low"], c["sharpness_high"]
    clip = max(m.shadow_clip / c["shadow_clip"], m.highlight_clip / c["highlight_clip"])
    luma = (0.0, c["dark_luma"], 0.3, 0.6, c["bright_luma"], 1.0)
    colour = (0.0, c["colour_dull"], 30.0, 90.0, c["colour_garish"], 2 * c["colour_garish"])
    scores = {
        "sharpness": _ramp(m.sharpness, (0.5 * lo, lo, hi, 1.5 * hi), (1, 2.5, 4, 5)),
        "noise": _ramp(
            m.noise_sigma,
            (0.0, c["noise_visible"], c["noise_severe"], 2 * c["noise_severe"]),
            (5, 4, 2, 1),
        ),
        "artifacts": min(
            _ramp(m.blockiness, (1.0, c["block_minor"], c["block_severe"], 2.5), (5, 4, 2, 1)),
            _ramp(m.ringing, (0.0, c["ringing_minor"], 2 * c["ringing_minor"]), (5, 4, 2)),
        ),
        "exposure": min(
            _ramp(m.mean_luminance, luma, (1, 2.5, 5, 5, 2.5, 1)),
            _ramp(clip, (0.0, 1.0, 2.0), (5, 2.5, 1)),
        ),
        "colour": _ramp(m.colourfulness, colour, (1, 2.5, 5, 5, 2.5, 1)),
        "visibility": _ramp(
            m.main_region_contrast,
            (0.0, c["subject_contrast"], 3 * c["subject_contrast"]),
            (1, 2.5, 5),
        ),
    }
    if exposure_problem(m, c) == "dark":
        scores["visibility"] = min(scores["visibility"], 2.5)
    return {k: round(v, 1) for k, v in scores.items()}


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


def _query_plan(messages: Sequence[BaseMessage], tools: Sequence[str]) -> QueryPlan | None:
    """The plan for the question the first user turn carries (the graph's own planner)."""
    for msg in messages:
        if isinstance(msg, HumanMessage):
            found = _QUERY_RE.search(message_text(msg))
            return plan_query(found.group(1), tools) if found else None
    return None


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
        last = message_text(messages[-1]) if messages else ""
        if _RUBRIC_MARK in last:
            reply = AIMessage(content=self._rubric(m))
        elif _GATE_MARK in last and _FINAL_MARK not in last:
            reply = self._decide(
                m, image, messages, _tool_names(kwargs, messages), native=bool(kwargs.get("tools"))
            )
        else:
            reply = AIMessage(content=self._answer(m, messages, image))
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _rubric(self, m: Measurements) -> str:
        lines = [
            f"{name}: [{level}] - {note}"
            for name, (level, note) in rubric_levels(m, self.cuts).items()
        ]
        thinking = (
            f"Measured a {m.width}x{m.height} image: sharpness {m.sharpness:.2f}, noise sigma "
            f"{m.noise_sigma:.2f}, blockiness {m.blockiness:.2f}, mean luma {m.mean_luminance:.2f}."
        )
        return f"<thinking>{thinking}</thinking>\n<answer>\n" + "\n".join(lines) + "\n</answer>"

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

    def _decide(
        self,
        m: Measurements,
        image: DecodedImage,
        messages: Sequence[BaseMessage],
        tools: list[str],
        *,
        native: bool,
    ) -> AIMessage:
        used = {name for name, _ in _calls_made(messages)}
        problem = exposure_problem(m, self.cuts)
        call: tuple[str, dict[str, Any], str] | None = None
        plan = _query_plan(messages, tools)
        planned = [t for t in plan.tools if t in tools and t not in used] if plan else []
        if plan is not None and planned:
            call = self._planned_call(planned[0], problem, image, plan)
        elif problem and "gamma_corrector" in tools and "gamma_corrector" not in used:
            mode = "brighten" if problem == "dark" else "darken"
            call = (
                "gamma_corrector",
                {"mode": mode},
                f"The image looks {problem}; re-expose it to check hidden detail.",
            )
        elif (
            self.cuts["borderline_low"] <= m.sharpness <= self.cuts["borderline_high"]
            and "magnifier" in tools
            and "magnifier" not in used
        ):
            call = (
                "magnifier",
                {"bbox": self._box(image)},
                "Sharpness is borderline; magnify the most detailed region.",
            )
        if call is None:
            return AIMessage(content=self._answer(m, messages, image))
        name, args, why = call
        if native:
            n = len(used) + 1
            return AIMessage(
                content=f"<thinking>{why}</thinking>",
                tool_calls=[
                    {"name": name, "args": args, "id": f"classic_{n}", "type": "tool_call"}
                ],
            )
        payload = json.dumps({"name": name, "arguments": args})
        return AIMessage(content=f"<thinking>{why}</thinking>\n<tool_call>{payload}</tool_call>")

    def _planned_call(
        self, name: str, problem: str | None, image: DecodedImage, plan: QueryPlan
    ) -> tuple[str, dict[str, Any], str]:
        """The call a query plan asks for, with arguments the measures suggest."""
        about = plan.query
        if name == "magnifier":
            return name, {"bbox": self._box(image)}, f"To answer {about!r}, magnify the detail."
        if name == "gamma_corrector":
            mode = "darken" if problem == "bright" else "brighten"
            return name, {"mode": mode}, f"To answer {about!r}, re-expose the image."
        return name, {}, f"To answer {about!r}, measure {name} on the whole image."

    def _query_answer(
        self, m: Measurements, plan: QueryPlan, overall: float, messages: Sequence[BaseMessage]
    ) -> str:
        """The ``<query_answer>`` text: verdict or scores, then the evidence."""
        scores = attribute_scores(m, self.cuts)
        levels = rubric_levels(m, self.cuts)
        focus = [a for a in plan.focus if a in scores]
        evidence = [
            f"{ATTRIBUTE_NAMES[a]} {scores[a]:.1f}/5 ({levels[ATTRIBUTE_NAMES[a]][1]})"
            for a in focus
        ]
        evidence += _tool_results(messages)
        if plan.kind == "yes_no":
            low = (scores[focus[0]] if focus else overall) < YES_NO_CUT
            yes = low if plan.polarity == "defect" else not low
            head = "Yes." if yes else "No."
        elif focus:
            head = "; ".join(f"{ATTRIBUTE_NAMES[a]}: {scores[a]:.1f}" for a in focus) + "."
        else:
            weakest = min(scores, key=lambda k: scores[k])
            head = (
                f"Overall quality {overall:.2f}/5; the weakest attribute is "
                f"{ATTRIBUTE_NAMES[weakest]} ({scores[weakest]:.1f}/5)."
            )
        evidence = [e.rstrip(" .") for e in evidence]
        return head + (" Evidence: " + "; ".join(evidence) + "." if evidence else "")

    def _evidence(self, m: Measurements, messages: Sequence[BaseMessage]) -> list[str]:
        """What the tool views showed, measured on the ORIGINAL image's pixels."""
        notes = []
        for name, args in _calls_made(messages):
            if name == "gamma_corrector":
                notes.append(
                    f"gamma view ({args.get('mode', 'custom')}): the image's luma is "
                    f"{m.mean_luminance:.2f} with {m.shadow_clip:.1%} crushed shadows, "
                    f"{m.highlight_clip:.1%} blown highlights"
                )
            elif name == "magnifier":
                notes.append(
                    f"magnified region: local sharpness {m.main_region_sharpness:.2f} vs "
                    f"{m.sharpness:.2f} overall, local contrast {m.main_region_contrast:.2f}"
                )
        return notes

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

    def _extras(self, m: Measurements, image: DecodedImage, request: str) -> str:
        """``<attributes>``/``<regions>`` lines when the turn asks for them."""
        lines = []
        if "<attributes>" in request:
            scores = attribute_scores(m, self.cuts)
            asked = request.split("<attributes>", 1)[1]
            entries = [
                f"{name}: {scores[key]:.1f}"
                for key, name in ATTRIBUTE_NAMES.items()
                if f"{name}:" in asked
            ]
            lines.append("<attributes>" + "; ".join(entries) + "</attributes>")
        if "<regions>" in request:
            lines.append("<regions>" + json.dumps(self._regions(image)) + "</regions>")
        return "".join("\n" + line for line in lines)

    def _answer(self, m: Measurements, messages: Sequence[BaseMessage], image: DecodedImage) -> str:
        cal = self.calibration
        score = cal.score(m)
        contrib = sorted(cal.contributions(m).items(), key=lambda kv: -abs(kv[1]))[:4]
        reasons = ", ".join(f"{name} {value:+.2f}" for name, value in contrib)
        evidence = self._evidence(m, messages)
        thinking = f"Classic measures calibrated on AGIQA-3K dev; largest contributions: {reasons}."
        if evidence:
            thinking += " Tool evidence: " + "; ".join(evidence) + "."
        request = message_text(messages[-1]) if messages else ""
        extras = self._extras(m, image, request)
        plan = _query_plan(messages, ())
        answered = score
        if plan is not None and not plan.overall and plan.focus:
            answered = attribute_scores(m, self.cuts).get(plan.focus[0], score)
            thinking += f" The question asks for {plan.score_of} only: {answered:.1f}."
        if plan is not None and "<query_answer>" in request:
            text = self._query_answer(m, plan, score, messages)
            extras += f"\n<query_answer>{text}</query_answer>"
        return f"<thinking>{thinking}</thinking>\n<answer>{answered:.2f}</answer>{extras}"
