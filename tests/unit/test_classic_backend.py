"""The embedded classic backend drives the same graph: rubric, tool decisions, calibrated score."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tooliqa.backends.classic import RUBRIC_CUTS, ClassicChatModel, exposure_problem, rubric_levels
from tooliqa.graph import Assessment, Context, graph
from tooliqa.tools import decode_image, read_image_bytes
from tooliqa.tools.measures import measure

from _support import REPO, png_bytes

EXAMPLES = REPO / "examples"


def run(image: bytes, **ctx) -> Assessment:
    model = ClassicChatModel(bbox_convention=ctx.get("bbox_convention", "rel1000"))
    out = asyncio.run(graph.ainvoke({"image": image}, context=Context(model=model, **ctx)))
    return Assessment.model_validate(out["assessment"])


def scene(seed: int = 1, size: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    base = 120 + 60 * np.sin(12 * xs) * np.cos(9 * ys)
    texture = rng.normal(0, 25, (size, size))
    grey = np.clip(base + texture, 0, 255)
    return np.stack([grey, grey * 0.9, grey * 0.7], axis=2).astype(np.uint8)


def test_dark_image_calls_gamma_brighten_then_answers():
    dark = (scene() * 0.12).astype(np.uint8)
    a = run(png_bytes(dark))
    assert a.backend == "classic" and a.score is not None and 1.0 <= a.score <= 5.0
    assert (
        a.steps[0].tool == "gamma_corrector"
        and a.steps[0].args == {"mode": "brighten"}
        and a.steps[0].ok
    )
    assert a.rubric["exposure"] == "poor" and a.rubric["visibility"] == "obscured"
    assert "gamma view (brighten)" in a.rationale


def test_bright_image_calls_gamma_darken():
    bright = np.clip(scene().astype(np.int32) + 150, 0, 255).astype(np.uint8)
    a = run(png_bytes(bright))
    assert a.steps[0].args == {"mode": "darken"}


def test_borderline_sharpness_calls_magnifier_on_the_most_detailed_region():
    data = read_image_bytes(EXAMPLES / "astronaut_pristine.jpg")
    m = measure(decode_image(data).rgb)
    assert RUBRIC_CUTS["borderline_low"] <= m.sharpness <= RUBRIC_CUTS["borderline_high"]
    a = run(data)
    assert [s.tool for s in a.steps] == ["magnifier"] and a.steps[0].ok
    assert "magnified region" in a.rationale
    pixel = run(data, bbox_convention="pixel")
    assert pixel.steps[0].box == a.steps[0].box  # same region whatever the convention


def test_scores_are_deterministic_and_ordered_by_distortion():
    clean = read_image_bytes(EXAMPLES / "astronaut_pristine.jpg")
    blocky = read_image_bytes(EXAMPLES / "rocket_jpeg_q6.jpg")
    first, second = run(clean), run(clean)
    assert first.score == second.score
    assert run(blocky).rubric["artifacts"] == "severe"
    assert run(blocky).score < first.score


def test_no_tools_when_disabled():
    dark = (scene() * 0.12).astype(np.uint8)
    a = run(png_bytes(dark), max_tool_rounds=0)
    assert a.steps == [] and a.score is not None


def test_text_protocol_emits_tool_call_tags():
    dark = (scene() * 0.12).astype(np.uint8)
    a = run(png_bytes(dark), tool_protocol="text")
    assert a.steps[0].source == "text" and a.steps[0].tool == "gamma_corrector" and a.steps[0].ok


def test_rubric_levels_follow_the_measures():
    dark = measure((scene() * 0.12).astype(np.uint8))
    assert exposure_problem(dark) == "dark"
    levels = rubric_levels(measure(scene()))
    assert set(levels) == {
        "Sharpness",
        "Noise",
        "Artifacts",
        "Exposure",
        "Color",
        "Saliency Visibility",
    }


def test_classic_backend_refuses_a_conversation_without_image():
    from langchain_core.messages import HumanMessage

    from tooliqa.tools import ImageError

    with pytest.raises(ImageError, match="no image"):
        ClassicChatModel().invoke([HumanMessage(content="hello")])
