"""Every prompt the assessment graph sends, as named constants with ``{slots}``.

The rubric, action-gate and tool-format texts follow Appendix A of Tool-IQA
(arXiv 2606.16082), the protocol the released Tool-IQA-8B was trained with; the
observation, final-answer and repair texts are this project's own.
"""

from __future__ import annotations

import json
from typing import Any

SYSTEM_PROMPT = "You are a helpful assistant."

#: Appendix A, "Rubric Observation" (the five dimensions of the released model).
RUBRIC_PROMPT = """You are doing the image quality assessment task. Instead of giving a score immediately, first analyze the image based on the following key dimensions:
1. **Sharpness & Detail**: Is the image blurry or sharp? Are textures well-defined?
2. **Noise & Grain**: Is there visible noise (luminance/color)? Is it distracting?
3. **Artifacts**: Are there compression artifacts (JPEG blocks), ringing, or ghosting?
4. **Exposure & Color**: Is it over/underexposed? Are colors natural?
5. **Saliency Visibility**: Is the MAIN SUBJECT clearly visible? Or is it obscured by shadows/highlights? Focus primarily on the subjects clarity, treating background visibility as secondary.
Output Format:
<thinking> ... </thinking>
<answer>
Sharpness: [Low/Medium/High] - Brief note
Noise: [None/Visible/Severe] - Brief note
Artifacts: [None/Minor/Severe] - Brief note
Exposure: [Poor/Good/Excellent] - Brief note
Saliency Visibility: [Subject Clear/Obscured] - Brief Note
</answer>"""

#: Added to the rubric prompt in the "extended" prompt style: colour as its own line.
RUBRIC_COLOUR_LINE = "Color: [Poor/Good/Excellent] - Brief note"

#: Appended to the first user turn when the user asks a question about the image.
QUERY_PROMPT = """The user also asks about this image: "{query}"
Keep the question in mind while inspecting; answer it in your final answer."""

#: Appendix A, "Action Gated - Tool or Answer".
GATE_PROMPT = """Single-Action per Turn: choose EXACTLY ONE
- A) Final answer (1.00 - 5.00)
- B) Tool call
Output one of:
A) Final Answer: <thinking>...</thinking> <answer>...</answer>
B) Tool call: <thinking>...</thinking> <tool_call>...</tool_call>"""

#: The gate when no tool may be called any more (round limit reached or no tools enabled).
FINAL_PROMPT = """No more tool calls are available. Give the final answer now, without calling any tool.
Combine the rubric note with the evidence gathered so far and rate the quality of the ORIGINAL image from 1.00 (bad) to 5.00 (excellent).
Output: <thinking>...</thinking> <answer>score</answer>"""

#: Observation prompt (P_obs): shown with a tool's view, before the gate.
OBSERVATION_PROMPT = """{result}
This view is supplementary evidence: inspect it closely, then judge the quality of the ORIGINAL image.
Tool rounds left: {rounds_left}."""

#: After a measurement tool (NIQE, BRISQUE, PIQE): numbers, no view.
MEASUREMENT_PROMPT = """{result}
This measurement is supplementary evidence: weigh it against what you see, then judge the quality of the ORIGINAL image.
Tool rounds left: {rounds_left}."""

#: Shown instead of a view when a tool call could not be carried out.
FAILURE_PROMPT = """{result}
The call was not carried out and it used up a tool round. Tool rounds left: {rounds_left}."""

#: Asked once when a final answer had no usable score.
REPAIR_PROMPT = """Your last reply did not contain a valid final score ({reason}).
Reply with <thinking>...</thinking> <answer>X.XX</answer>, where X.XX is one number from 1.00 to 5.00."""

#: Text-protocol tool listing (Qwen3 function format), for models that get no native tools.
TOOLS_SYSTEM_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""

#: Structured-output hint added when the server constrains replies to JSON.
JSON_RUBRIC_HINT = "Reply as a JSON object with a level and a brief note for each dimension."
JSON_ANSWER_HINT = (
    'Reply as a JSON object: {"thinking": "...", "score": X.XX}, score from 1.00 to 5.00.'
)

#: Appended to the gate/final/repair turns when ``Context.attribute_scores`` is on
#: (this project's own wording, not Appendix A): one 1-5 score per rubric attribute.
ATTRIBUTES_PROMPT = """With the final answer, also rate each quality attribute of the ORIGINAL image from 1.0 (bad) to 5.0 (excellent), on one line after </answer>:
<attributes>{attributes}</attributes>"""

#: Appended to the gate/final/repair turns when ``Context.report_regions`` is on
#: (this project's own wording): distorted regions as a JSON list.
REGIONS_PROMPT = """With the final answer, also list the regions of the ORIGINAL image that show a distortion, after </answer>, as a JSON list with boxes in {convention}:
<regions>[{{"bbox": [x1, y1, x2, y2], "label": "blur|noise|artifact|exposure|colour", "severity": "minor|moderate|severe"}}]</regions>
Write <regions>[]</regions> when no region is distorted."""

#: How :data:`REGIONS_PROMPT` names each box convention.
BBOX_CONVENTION_TEXT: dict[str, str] = {
    "rel1000": "coordinates from 0 to 1000 relative to the image width and height",
    "unit": "coordinates from 0 to 1 relative to the image width and height",
    "pixel": "pixels of the original image",
}

#: Display names of the rubric attributes, as the rubric prompt writes them.
ATTRIBUTE_NAMES: dict[str, str] = {
    "sharpness": "Sharpness",
    "noise": "Noise",
    "artifacts": "Artifacts",
    "exposure": "Exposure",
    "colour": "Color",
    "visibility": "Saliency Visibility",
}

RUBRIC_LEVELS: dict[str, tuple[str, ...]] = {
    "sharpness": ("low", "medium", "high"),
    "noise": ("none", "visible", "severe"),
    "artifacts": ("none", "minor", "severe"),
    "exposure": ("poor", "good", "excellent"),
    "colour": ("poor", "good", "excellent"),
    "visibility": ("clear", "obscured"),
}


def rubric_prompt(style: str = "paper", query: str | None = None) -> str:
    """The first user turn's text: the rubric prompt, optionally with colour and a question."""
    text = RUBRIC_PROMPT
    if style == "extended":
        text = text.replace(
            "Saliency Visibility: [Subject Clear",
            RUBRIC_COLOUR_LINE + "\nSaliency Visibility: [Subject Clear",
        )
    if query and query.strip():
        text = text + "\n\n" + QUERY_PROMPT.format(query=" ".join(query.split()))
    return text


def tools_system_prompt(specs: list[dict[str, Any]]) -> str:
    """The Qwen3 tool listing for a system prompt, one JSON function per line."""
    lines = "\n".join(json.dumps(s, ensure_ascii=False) for s in specs)
    return TOOLS_SYSTEM_PROMPT.format(tools=lines)


def _level_schema(levels: tuple[str, ...], note_chars: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "level": {"type": "string", "enum": list(levels)},
            "note": {"type": "string", "maxLength": note_chars},
        },
        "required": ["level", "note"],
        "additionalProperties": False,
    }


def rubric_json_schema(note_chars: int = 80) -> dict[str, Any]:
    """JSON schema for a rubric note under structured outputs."""
    props = {k: _level_schema(v, note_chars) for k, v in RUBRIC_LEVELS.items()}
    return {
        "type": "object",
        "properties": props,
        "required": list(RUBRIC_LEVELS),
        "additionalProperties": False,
    }


#: Region labels and severities the answer may use (as in :data:`REGIONS_PROMPT`).
REGION_LABELS: tuple[str, ...] = ("blur", "noise", "artifact", "exposure", "colour")
REGION_SEVERITIES: tuple[str, ...] = ("minor", "moderate", "severe")


def answer_json_schema(
    thinking_chars: int = 200,
    *,
    attributes: tuple[str, ...] = (),
    regions: bool = False,
    query_answer: bool = False,
    max_regions: int = 8,
) -> dict[str, Any]:
    """JSON schema for a final answer under structured outputs.

    With the options it also has ``attributes`` (one 1-5 number per rubric attribute
    key), ``regions`` (a list of ``{bbox, label, severity}``) and ``query_answer``
    (text); every property is required, as strict schemas demand.
    """
    props: dict[str, Any] = {
        "thinking": {"type": "string", "maxLength": thinking_chars},
        "score": {"type": "number", "minimum": 1, "maximum": 5},
    }
    if attributes:
        props["attributes"] = {
            "type": "object",
            "properties": {k: {"type": "number", "minimum": 1, "maximum": 5} for k in attributes},
            "required": list(attributes),
            "additionalProperties": False,
        }
    if regions:
        props["regions"] = {
            "type": "array",
            "maxItems": max_regions,
            "items": {
                "type": "object",
                "properties": {
                    "bbox": {
                        "type": "array",
                        "items": {"type": "number"},
                        "minItems": 4,
                        "maxItems": 4,
                    },
                    "label": {"type": "string", "enum": list(REGION_LABELS)},
                    "severity": {"type": "string", "enum": list(REGION_SEVERITIES)},
                },
                "required": ["bbox", "label", "severity"],
                "additionalProperties": False,
            },
        }
    if query_answer:
        props["query_answer"] = {"type": "string", "maxLength": 2 * thinking_chars}
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def json_answer_hint(
    *,
    attributes: tuple[str, ...] = (),
    regions: bool = False,
    query_answer: bool = False,
    convention: str = "rel1000",
) -> str:
    """:data:`JSON_ANSWER_HINT`, naming the extra keys :func:`answer_json_schema` asks for."""
    extra = []
    if attributes:
        extra.append(
            '"attributes": {' + ", ".join(f'"{k}": X.X' for k in attributes) + "} (1.0-5.0 each)"
        )
    if regions:
        extra.append(
            '"regions": [{"bbox": [x1, y1, x2, y2], "label": "...", "severity": "..."}] '
            f"(distorted regions, boxes in {BBOX_CONVENTION_TEXT[convention]}; [] if none)"
        )
    if query_answer:
        extra.append('"query_answer": "..." (your answer to the user\'s question, with evidence)')
    if not extra:
        return JSON_ANSWER_HINT
    return JSON_ANSWER_HINT + " Also include " + "; ".join(extra) + "."


def rubric_attributes(style: str = "paper") -> tuple[str, ...]:
    """The rubric attribute keys a prompt style asks about (``colour`` only when extended)."""
    return tuple(k for k in RUBRIC_LEVELS if k != "colour" or style == "extended")


def answer_extras(
    *,
    attribute_scores: bool,
    report_regions: bool,
    style: str = "paper",
    convention: str = "rel1000",
) -> str:
    """Text appended to the answer-asking turns; empty (prompts unchanged) with both off."""
    parts = []
    if attribute_scores:
        example = "; ".join(f"{ATTRIBUTE_NAMES[k]}: X.X" for k in rubric_attributes(style))
        parts.append(ATTRIBUTES_PROMPT.format(attributes=example))
    if report_regions:
        parts.append(REGIONS_PROMPT.format(convention=BBOX_CONVENTION_TEXT[convention]))
    return "\n".join(parts)
