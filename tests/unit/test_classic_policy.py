"""The classic backend's policy as pure functions of measurements (no chat model, no
messages), and the adapter following each turn's structured spec rather than its wording."""

from __future__ import annotations

import dataclasses

import numpy as np
from langchain_core.messages import AIMessage, HumanMessage

from tooliqa.backends import classic_policy as policy
from tooliqa.backends.classic import ClassicChatModel
from tooliqa.backends.classic_calibration import load_classic_calibration
from tooliqa.graph.protocol import TurnSpec, mark, turn_of
from tooliqa.graph.query import plan_query
from tooliqa.tools import data_url
from tooliqa.tools.measures import measure

from _support import png_bytes


def _scene(seed: int = 3, size: int = 192) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    grey = np.clip(
        120 + 60 * np.sin(12 * xs) * np.cos(9 * ys) + rng.normal(0, 20, xs.shape), 0, 255
    )
    return np.stack([grey, grey * 0.9, grey * 0.7], axis=2).astype(np.uint8)


CLEAN = measure(_scene())
DARK = measure((_scene() * 0.12).astype(np.uint8))


def test_the_rubric_note_follows_the_prompt_style():
    paper = policy.rubric_note(CLEAN, "paper")
    extended = policy.rubric_note(CLEAN, "extended")
    assert "Color:" not in paper and "Color:" in extended
    for name in ("Sharpness:", "Noise:", "Artifacts:", "Exposure:", "Saliency Visibility:"):
        assert name in paper and name in extended


def test_the_gate_policy():
    tools = ("magnifier", "gamma_corrector", "niqe")
    choice = policy.choose_tool(DARK, available=tools, used=set())
    assert choice is not None and choice.name == "gamma_corrector"
    assert choice.args == {"mode": "brighten"}
    crisp_dark = dataclasses.replace(DARK, sharpness=6.0)
    assert policy.choose_tool(crisp_dark, available=tools, used={"gamma_corrector"}) is None
    assert policy.choose_tool(crisp_dark, available=("magnifier",), used=set()) is None
    # a question's plan comes first, with the tools it names
    plan = plan_query("Is it noisy? measure it", tools)
    asked = policy.choose_tool(CLEAN, available=tools, used=set(), plan=plan)
    assert asked is not None and asked.name in plan.tools
    # borderline sharpness: the magnifier, on the box the caller computes only then
    borderline = dataclasses.replace(CLEAN, sharpness=3.5, mean_luminance=0.45)
    boxes: list[int] = []

    def box() -> list[float]:
        boxes.append(1)
        return [1.0, 2.0, 3.0, 4.0]

    choice = policy.choose_tool(borderline, available=tools, used=set(), box=box)
    assert choice is not None and choice.name == "magnifier"
    assert choice.args == {"bbox": [1.0, 2.0, 3.0, 4.0]} and boxes == [1]
    sharp = dataclasses.replace(borderline, sharpness=6.0)
    assert policy.choose_tool(sharp, available=tools, used=set(), box=box) is None
    assert boxes == [1]


def test_the_answer_policy():
    cal = load_classic_calibration()
    plain = policy.answer(CLEAN, cal)
    assert 1.0 <= plain.score <= 5.0 and plain.answered == plain.score
    assert plain.query_answer is None and plain.attributes == {}
    assert "largest contributions" in plain.thinking
    with_tools = policy.answer(DARK, cal, calls=[("gamma_corrector", {"mode": "brighten"})])
    assert "gamma view (brighten)" in with_tools.thinking
    only = policy.answer(CLEAN, cal, plan=plan_query("rate only the sharpness", ()))
    assert only.answered == policy.attribute_scores(CLEAN)["sharpness"]
    assert only.score == plain.score and only.query_answer
    some = policy.answer(CLEAN, cal, attributes=("sharpness", "noise"))
    assert set(some.attributes) == {"sharpness", "noise"}


def _turn(kind: str, text: str, image: bool = False, **spec) -> HumanMessage:
    content: list = [{"type": "text", "text": text}]
    if image:
        content.insert(
            0,
            {"type": "image_url", "image_url": {"url": data_url(png_bytes(_scene()), "image/png")}},
        )
    return mark(HumanMessage(content=content), TurnSpec(kind=kind, **spec))


def test_the_adapter_follows_the_turn_spec_not_the_wording():
    model = ClassicChatModel()
    first = _turn("rubric", "Whatever words this turn has.", image=True, prompt_style="extended")
    note = model.invoke([first]).content
    assert "Sharpness: [" in note and "Color: [" in note
    answer = model.invoke([first, AIMessage(content=note), _turn("final", "Rubric:")]).content
    assert "<answer>" in answer and "Sharpness: [" not in answer
    extras = _turn("final", "answer", attribute_scores=True, report_regions=True)
    text = model.invoke([first, AIMessage(content=note), extras]).content
    assert "<attributes>Sharpness:" in text and "<regions>" in text
    assert turn_of([first, AIMessage(content=note), extras]).attribute_scores


def test_a_conversation_without_marks_gets_a_rubric_then_an_answer():
    model = ClassicChatModel()
    image = HumanMessage(
        content=[
            {"type": "image_url", "image_url": {"url": data_url(png_bytes(_scene()), "image/png")}}
        ]
    )
    note = model.invoke([image]).content
    assert "Sharpness: [" in note
    later = model.invoke([image, AIMessage(content=note), HumanMessage(content="score?")]).content
    assert "<answer>" in later


def test_a_re_exposed_view_can_only_lower_the_score():
    """The gamma corrector's view of an image whose shadows hide detail lowers its score,
    the more the darker; on a well exposed image it changes nothing."""
    cal = load_classic_calibration()
    brighten = [("gamma_corrector", {"mode": "brighten"})]
    assert policy.hidden_detail(CLEAN, "brighten") == 0.0
    assert policy.answer(CLEAN, cal, calls=brighten).score == policy.answer(CLEAN, cal).score
    darker = [measure((_scene() * f).astype(np.uint8)) for f in (0.3, 0.15, 0.06)]
    hidden = [policy.hidden_detail(m, "brighten") for m in darker]
    assert hidden == sorted(hidden) and hidden[-1] > 0.5
    for m in darker:
        seen, unseen = policy.answer(m, cal, calls=brighten), policy.answer(m, cal)
        assert seen.score <= unseen.score
    deep = policy.answer(darker[-1], cal, calls=brighten)
    assert deep.score < policy.answer(darker[-1], cal).score and "lowered to" in deep.thinking


def test_distortion_detectors_can_only_lower_the_score():
    import pytest

    from tooliqa.backends.classic_calibration import ClassicCalibration, Detector

    cal = load_classic_calibration()
    assert {d.label for d in cal.detectors} == {"noise", "colour loss", "blur"}
    bare = dataclasses.replace(cal, detectors=())
    rng = np.random.default_rng(0)
    noisy = np.clip(_scene().astype(float) + rng.normal(0, 40, _scene().shape), 0, 255)
    grey = np.repeat(_scene()[..., :1], 3, axis=2)
    for rgb in (_scene(), noisy.astype(np.uint8), grey):
        m = measure(rgb)
        assert cal.score(m) <= bare.score(m)
        assert all(v >= 0 for v in cal.penalties(m).values())
    assert cal.penalties(measure(noisy.astype(np.uint8)))["noise"] > 0
    assert cal.penalties(measure(grey))["colour loss"] > 0
    assert (
        "Distortion detectors: noise -"
        in policy.answer(measure(noisy.astype(np.uint8)), cal).thinking
    )
    with pytest.raises(ValueError, match="unknown feature"):
        Detector.from_dict({"feature": "nope", "side": "above", "knot": 0, "weight": 1, "cap": 1})
    with pytest.raises(ValueError, match="side"):
        Detector.from_dict(
            {"feature": "noise_sigma", "side": "up", "knot": 0, "weight": 1, "cap": 1}
        )
    assert isinstance(cal, ClassicCalibration)
