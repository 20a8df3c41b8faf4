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
  the largest feature contributions and what the tool views showed.

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
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

from tooliqa.graph.parsing import message_text
from tooliqa.graph.prompts import FINAL_PROMPT, GATE_PROMPT, RUBRIC_PROMPT
from tooliqa.tools import ImageError, decode_image_cached, image_digest
from tooliqa.tools.measures import Measurements, measure, most_detailed_region

from .classic_calibration import ClassicCalibration, load_classic_calibration

__all__ = ["RUBRIC_CUTS", "ClassicChatModel", "rubric_levels"]

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

    def _measure(self, data: bytes) -> tuple[Measurements, np.ndarray]:
        key = image_digest(data)
        rgb = decode_image_cached(data).rgb
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit, rgb
        m = measure(rgb)
        with self._lock:
            self._cache[key] = m
            while len(self._cache) > 16:
                self._cache.popitem(last=False)
        return m, rgb

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
        m, rgb = self._measure(self._original(messages))
        last = message_text(messages[-1]) if messages else ""
        if _RUBRIC_MARK in last:
            reply = AIMessage(content=self._rubric(m))
        elif _GATE_MARK in last and _FINAL_MARK not in last:
            reply = self._decide(
                m, rgb, messages, _tool_names(kwargs, messages), native=bool(kwargs.get("tools"))
            )
        else:
            reply = AIMessage(content=self._answer(m, messages))
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

    def _box(self, rgb: np.ndarray) -> list[float]:
        h, w = rgb.shape[:2]
        x1, y1, x2, y2 = most_detailed_region(rgb, grid=4)
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
        rgb: np.ndarray,
        messages: Sequence[BaseMessage],
        tools: list[str],
        *,
        native: bool,
    ) -> AIMessage:
        used = {name for name, _ in _calls_made(messages)}
        problem = exposure_problem(m, self.cuts)
        call: tuple[str, dict[str, Any], str] | None = None
        if problem and "gamma_corrector" in tools and "gamma_corrector" not in used:
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
                {"bbox": self._box(rgb)},
                "Sharpness is borderline; magnify the most detailed region.",
            )
        if call is None:
            return AIMessage(content=self._answer(m, messages))
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

    def _answer(self, m: Measurements, messages: Sequence[BaseMessage]) -> str:
        cal = self.calibration
        score = cal.score(m)
        contrib = sorted(cal.contributions(m).items(), key=lambda kv: -abs(kv[1]))[:4]
        reasons = ", ".join(f"{name} {value:+.2f}" for name, value in contrib)
        evidence = self._evidence(m, messages)
        thinking = f"Classic measures calibrated on AGIQA-3K dev; largest contributions: {reasons}."
        if evidence:
            thinking += " Tool evidence: " + "; ".join(evidence) + "."
        return f"<thinking>{thinking}</thinking>\n<answer>{score:.2f}</answer>"
