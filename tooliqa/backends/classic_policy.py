"""The classic backend's policy, as pure functions of the measurements (no LangChain):
what the rubric note says, which tool to call, the score and the words around it.

:class:`~tooliqa.backends.classic.ClassicChatModel` is the thin chat-model adapter that
reads the conversation (the image, the turn's :class:`~tooliqa.graph.protocol.TurnSpec`,
the calls made so far) and writes these decisions as replies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tooliqa.graph.prompts import ATTRIBUTE_NAMES
from tooliqa.graph.query import QueryPlan
from tooliqa.tools.measures import Measurements

from .classic_calibration import ClassicCalibration

__all__ = [
    "RUBRIC_CUTS",
    "YES_NO_CUT",
    "Answer",
    "ToolChoice",
    "answer",
    "attribute_scores",
    "choose_tool",
    "exposure_problem",
    "hidden_detail",
    "rubric_levels",
    "rubric_note",
]

#: Cut points for the rubric levels, placed near percentiles of each measure on
#: the AGIQA-3K dev split (sharpness: 25th/75th; blockiness: ~75th/95th; exposure:
#: ~10th/95th of mean luma, ~90th of clipping). The noise cuts come from natural photos
#: instead (AI-generated images are nearly noise-free, and their percentiles called every
#: clean photo noisy): the graded benchmark's tuning references
#: (:data:`tooliqa.eval.graded.TUNING_REFERENCES`), where clean photos measure 0.8-4.1
#: (a grass texture 11.8), white noise of sigma 8 at least 5.4, sigma 14 at most 10.6 and
#: sigma 22 at least 13.7.
RUBRIC_CUTS: dict[str, float] = {
    "sharpness_low": 2.4,
    "sharpness_high": 4.5,
    "borderline_low": 2.9,
    "borderline_high": 4.0,
    "noise_visible": 5.0,
    "noise_severe": 12.0,
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


def rubric_note(m: Measurements, style: str = "paper", cuts: dict[str, float] = RUBRIC_CUTS) -> str:
    """The rubric turn's reply: a thinking line and one ``Name: [Level] - note`` line per
    attribute the prompt style asks about (``Color`` only for ``extended``)."""
    levels = rubric_levels(m, cuts)
    if style != "extended":
        levels.pop("Color", None)
    lines = [f"{name}: [{level}] - {note}" for name, (level, note) in levels.items()]
    thinking = (
        f"Measured a {m.width}x{m.height} image: sharpness {m.sharpness:.2f}, noise sigma "
        f"{m.noise_sigma:.2f}, blockiness {m.blockiness:.2f}, mean luma {m.mean_luminance:.2f}."
    )
    return f"<thinking>{thinking}</thinking>\n<answer>\n" + "\n".join(lines) + "\n</answer>"


@dataclass(frozen=True)
class ToolChoice:
    """One tool call: the tool, its arguments and the reason given in the thinking."""

    name: str
    args: dict[str, Any]
    why: str


def choose_tool(
    m: Measurements,
    *,
    available: Sequence[str],
    used: set[str],
    plan: QueryPlan | None = None,
    box: Callable[[], list[float]] = lambda: [0.0, 0.0, 1000.0, 1000.0],
    cuts: dict[str, float] = RUBRIC_CUTS,
) -> ToolChoice | None:
    """The gate's decision: the next tool a question's plan asks for; else the gamma
    corrector for a badly exposed image; else the magnifier (on ``box()``, the most
    detailed region) when sharpness is borderline; each at most once. None: answer."""
    problem = exposure_problem(m, cuts)
    planned = [t for t in plan.tools if t in available and t not in used] if plan else []
    if plan is not None and planned:
        name, about = planned[0], plan.query
        if name == "magnifier":
            return ToolChoice(name, {"bbox": box()}, f"To answer {about!r}, magnify the detail.")
        if name == "gamma_corrector":
            mode = "darken" if problem == "bright" else "brighten"
            return ToolChoice(name, {"mode": mode}, f"To answer {about!r}, re-expose the image.")
        return ToolChoice(name, {}, f"To answer {about!r}, measure {name} on the whole image.")
    if problem and "gamma_corrector" in available and "gamma_corrector" not in used:
        mode = "brighten" if problem == "dark" else "darken"
        why = f"The image looks {problem}; re-expose it to check hidden detail."
        return ToolChoice("gamma_corrector", {"mode": mode}, why)
    if (
        cuts["borderline_low"] <= m.sharpness <= cuts["borderline_high"]
        and "magnifier" in available
        and "magnifier" not in used
    ):
        why = "Sharpness is borderline; magnify the most detailed region."
        return ToolChoice("magnifier", {"bbox": box()}, why)
    return None


def tool_evidence(m: Measurements, calls: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """What the tool views showed, measured on the ORIGINAL image's pixels."""
    notes = []
    for name, args in calls:
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


def query_answer_text(
    m: Measurements,
    plan: QueryPlan,
    overall: float,
    tool_results: Sequence[str],
    cuts: dict[str, float] = RUBRIC_CUTS,
) -> str:
    """The ``<query_answer>`` text: verdict or scores, then the evidence."""
    scores = attribute_scores(m, cuts)
    levels = rubric_levels(m, cuts)
    focus = [a for a in plan.focus if a in scores]
    evidence = [
        f"{ATTRIBUTE_NAMES[a]} {scores[a]:.1f}/5 ({levels[ATTRIBUTE_NAMES[a]][1]})" for a in focus
    ]
    evidence += list(tool_results)
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


#: Score points a re-exposed view takes off at most when it shows that the image's shadows
#: (or highlights) hide detail: the view can lower the score, never raise it.
EXPOSURE_VIEW_PENALTY = 0.3


def hidden_detail(m: Measurements, mode: str, cuts: dict[str, float] = RUBRIC_CUTS) -> float:
    """How much detail a ``brighten`` (``darken``) view finds hidden in the shadows
    (highlights), 0 (none) to 1: from how far the mean luma is past the dark (bright) cut
    and the share of crushed (blown) pixels past half its cut."""
    if mode == "brighten":
        luma = (cuts["dark_luma"] - m.mean_luminance) / cuts["dark_luma"]
        clipped = m.shadow_clip / cuts["shadow_clip"]
    elif mode == "darken":
        luma = (m.mean_luminance - cuts["bright_luma"]) / (1.0 - cuts["bright_luma"])
        clipped = m.highlight_clip / cuts["highlight_clip"]
    else:
        return 0.0
    # clipping counts from half its cut on: a few crushed pixels hide nothing
    return float(min(1.0, max(0.0, luma) + 0.5 * min(2.0, max(0.0, clipped - 0.5))))


@dataclass(frozen=True)
class Answer:
    """The answer turn: the overall ``score``, the number written in ``<answer>``
    (``answered``: a "rate only ..." question's attribute score), the thinking, the
    attribute scores asked for and the ``<query_answer>`` text (None when not asked)."""

    score: float
    answered: float
    thinking: str
    attributes: dict[str, float] = field(default_factory=dict)
    query_answer: str | None = None


def answer(
    m: Measurements,
    calibration: ClassicCalibration,
    *,
    calls: Sequence[tuple[str, dict[str, Any]]] = (),
    plan: QueryPlan | None = None,
    tool_results: Sequence[str] = (),
    attributes: Sequence[str] = (),
    cuts: dict[str, float] = RUBRIC_CUTS,
) -> Answer:
    """The score from the calibration, explained by its largest contributions and what
    the tool views showed; ``attributes``: the attribute keys whose scores are asked for."""
    score = calibration.score(m)
    contrib = sorted(calibration.contributions(m).items(), key=lambda kv: -abs(kv[1]))[:4]
    reasons = ", ".join(f"{name} {value:+.2f}" for name, value in contrib)
    thinking = f"Classic measures calibrated on AGIQA-3K dev; largest contributions: {reasons}."
    penalties = {k: v for k, v in calibration.penalties(m).items() if v > 0.005}
    if penalties:
        thinking += (
            " Distortion detectors: "
            + ", ".join(f"{k} -{v:.2f}" for k, v in penalties.items())
            + "."
        )
    evidence = tool_evidence(m, calls)
    if evidence:
        thinking += " Tool evidence: " + "; ".join(evidence) + "."
    modes = {str(args.get("mode")) for name, args in calls if name == "gamma_corrector"}
    hidden = max((hidden_detail(m, mode, cuts) for mode in modes), default=0.0)
    if hidden > 0:
        lowered = max(1.0, score - EXPOSURE_VIEW_PENALTY * hidden)
        thinking += (
            f" The re-exposed view shows detail lost to the exposure ({hidden:.2f} of the "
            f"most): {score:.2f} lowered to {lowered:.2f}."
        )
        score = lowered
    scores = attribute_scores(m, cuts)
    answered = score
    if plan is not None and not plan.overall and plan.focus:
        answered = scores.get(plan.focus[0], score)
        thinking += f" The question asks for {plan.score_of} only: {answered:.1f}."
    text = query_answer_text(m, plan, score, tool_results, cuts) if plan is not None else None
    return Answer(
        score=score,
        answered=answered,
        thinking=thinking,
        attributes={k: scores[k] for k in attributes if k in scores},
        query_answer=text,
    )
