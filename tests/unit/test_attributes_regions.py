"""Per-attribute scores (``<attributes>``) and distortion regions (``<regions>``,
magnifier steps, PIQE boxes): prompts, parsing, graph, classic backend, CLI."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from tooliqa.api import assess, make_context
from tooliqa.cli import main
from tooliqa.graph import Assessment, Context, graph
from tooliqa.graph.parsing import Malformed, parse_answer, parse_attribute_scores, parse_regions
from tooliqa.graph.prompts import FINAL_PROMPT, GATE_PROMPT, REPAIR_PROMPT, answer_extras
from tooliqa.graph.regions import answer_regions, distortion_label, magnifier_regions
from tooliqa.graph.testing import ScriptedChatModel, tool_call_message

from _support import RUBRIC_REPLY, png_bytes

PAPER_ATTRIBUTES = (
    "<attributes>Sharpness: X.X; Noise: X.X; Artifacts: X.X; Exposure: X.X; "
    "Saliency Visibility: X.X</attributes>"
)


def run(model: ScriptedChatModel, image: bytes, **ctx) -> Assessment:
    out = asyncio.run(
        graph.ainvoke({"image": image, "image_name": "t.png"}, context=Context(model=model, **ctx))
    )
    return Assessment.model_validate(out["assessment"])


def last_text(call: dict) -> str:
    msg = call["messages"][-1]
    if isinstance(msg.content, str):
        return msg.content
    return "".join(b.get("text", "") for b in msg.content if isinstance(b, dict))


@pytest.fixture
def patch_image() -> np.ndarray:
    """A smooth gradient with a noisy 96x64 patch at x 128-224, y 96-160."""
    ys, xs = np.mgrid[0:256, 0:256]
    base = np.stack([xs * 0.6 + 40, ys * 0.6 + 40, (xs + ys) * 0.3 + 40], axis=2)
    base[96:160, 128:224] += np.random.default_rng(1).normal(0, 35, (64, 96, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


class TestPrompts:
    def test_options_off_leave_the_appendix_a_prompts_unchanged(self, image_bytes):
        m = ScriptedChatModel.from_replies(
            [
                RUBRIC_REPLY,
                tool_call_message("magnifier", {"bbox": [0, 0, 500, 500]}),
                "<answer>3</answer>",
            ]
        )
        run(m, image_bytes, max_tool_rounds=1)
        assert last_text(m.calls[1]) == GATE_PROMPT
        assert last_text(m.calls[2]).endswith("\n\n" + FINAL_PROMPT)
        assert Context().answer_extras() == ""
        assert answer_extras(attribute_scores=False, report_regions=False) == ""

    def test_options_on_ask_for_attributes_and_regions(self, image_bytes):
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, "not a score", "<answer>3</answer>"])
        run(m, image_bytes, attribute_scores=True, report_regions=True)
        gate, repair = last_text(m.calls[1]), last_text(m.calls[2])
        assert gate.startswith(GATE_PROMPT + "\n")
        assert PAPER_ATTRIBUTES in gate and "<regions>[{" in gate and "0 to 1000" in gate
        assert repair.startswith(REPAIR_PROMPT.split("{", 1)[0]) and PAPER_ATTRIBUTES in repair

    def test_final_prompt_and_extended_style(self, image_bytes):
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, "<answer>3</answer>"])
        run(m, image_bytes, max_tool_rounds=0, attribute_scores=True, prompt_style="extended")
        final = last_text(m.calls[1])
        assert final.startswith(FINAL_PROMPT + "\n") and "Color: X.X" in final
        assert "<regions>" not in final
        text = answer_extras(attribute_scores=False, report_regions=True, convention="pixel")
        assert "pixels of the original image" in text and "<attributes>" not in text


class TestParseAttributeScores:
    def test_complete(self):
        text = PAPER_ATTRIBUTES.replace("X.X", "3.5")
        scores, notes = parse_attribute_scores("<answer>3.1</answer>\n" + text)
        assert scores == dict.fromkeys(
            ["sharpness", "noise", "artifacts", "exposure", "visibility"], 3.5
        )
        assert notes == []

    def test_partial_any_order_and_case(self):
        scores, notes = parse_attribute_scores(
            "<ATTRIBUTES>\nexposure: 2\nCOLOR: 4.5/5\nsharpness & detail: 1</attributes>"
        )
        assert scores == {"exposure": 2.0, "colour": 4.5, "sharpness": 1.0} and notes == []

    def test_malformed_entries_are_dropped_with_notes(self):
        scores, notes = parse_attribute_scores(
            "<attributes>Noise: 7; Sharpness: high; Mood: 3; Artifacts: 0.5; Exposure: 4"
        )
        assert scores == {"exposure": 4.0}
        assert len(notes) == 4 and any("outside 1-5" in n for n in notes)

    def test_no_block(self):
        assert parse_attribute_scores("<answer>3</answer>") == ({}, [])

    def test_numbers_in_extras_are_not_the_score(self):
        reply = "<answer>Sharpness: 1.5; Noise: 2</answer>"
        unusable = parse_answer(reply)  # per-attribute numbers are never the overall score
        assert isinstance(unusable, Malformed) and "per-attribute" in unusable.reason
        a = parse_answer("<answer>3.2 <attributes>Sharpness: 1.5</attributes></answer>")
        assert a.score == 3.2
        a = parse_answer('<regions>[{"bbox": [1, 2, 3, 4]}]</regions> Score: 4.1')
        assert a.score == 4.1


class TestRegions:
    def test_parse_regions(self):
        regions, notes = parse_regions(
            '<regions>```json\n[{"bbox": [0, 0, 10, 10], "label": "Blur", "severity": 0.4},'
            ' {"box": [1, 1, 5, 5], "severity": "Severe", "source": "magnifier"},'
            ' {"label": "noise"}]\n```</regions>'
        )
        assert regions == [
            {"bbox": [0, 0, 10, 10], "label": "blur", "severity": 0.4, "source": "answer"},
            {"bbox": [1, 1, 5, 5], "label": "distortion", "severity": "severe", "source": "answer"},
        ]
        assert len(notes) == 1
        assert parse_regions("<regions>[{broken</regions>")[0] == []
        assert parse_regions("no block") == ([], [])

    def test_distortion_label(self):
        assert distortion_label("The patch is noticeably blurry.") == "blur"
        assert distortion_label("JPEG blocking, and noise") == "artifact"
        assert distortion_label("Looks fine.") is None

    @pytest.mark.parametrize(
        ("text", "label"),
        [
            ("No visible noise here, but the edges are soft.", "blur"),
            ("no blur", None),
            ("The region is free of noise and sharp.", None),
            ("Not blurry at all; heavy grain though.", "noise"),
            ("Clean: no artifacts, no noise, no blur.", None),
            ("There is no doubt: strong JPEG blocking.", "artifact"),
            ("without any compression artifacts, yet noisy", "noise"),
        ],
    )
    def test_negated_distortions_do_not_label(self, text, label):
        assert distortion_label(text) == label

    def test_module_doctests(self):
        import doctest

        from tooliqa.graph import parsing, regions

        assert doctest.testmod(regions).failed == 0
        assert doctest.testmod(parsing).failed == 0

    def test_magnifier_step_becomes_a_region_labelled_by_the_next_reply(self, image_bytes):
        m = ScriptedChatModel.from_replies(
            [
                RUBRIC_REPLY,
                tool_call_message("magnifier", {"bbox": [0, 0, 500, 500]}, "c1"),
                tool_call_message(
                    "magnifier",
                    {"bbox": [500, 500, 1000, 1000]},
                    "c2",
                    "<thinking>The zoomed region shows strong noise.</thinking>",
                ),
                "<thinking>Edges look clean.</thinking><answer>2.8</answer>",
            ]
        )
        a = run(m, image_bytes, max_tool_rounds=3)
        assert a.score == 2.8 and len(a.steps) == 2  # image 320x240
        assert a.regions == [
            {"box": [0, 0, 160, 120], "label": "noise", "severity": None, "source": "magnifier"},
            {
                "box": [160, 120, 320, 240],
                "label": "inspected",
                "severity": None,
                "source": "magnifier",
            },
        ]

    def test_failed_magnifier_steps_give_no_region(self):
        steps = [{"round": 1, "tool": "magnifier", "ok": False, "box": None}]
        assert magnifier_regions(steps, [{"round": 1, "text": "blur"}]) == []

    def test_answer_regions_are_converted_from_rel1000_to_pixels(self, image_bytes):
        reply = (
            "<answer>2.5</answer>\n<regions>"
            '[{"bbox": [250, 500, 750, 1000], "label": "blur", "severity": "moderate"},'
            ' {"bbox": [900, 900, 100, 100], "label": "noise"}]</regions>'
        )
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, reply])
        a = run(m, image_bytes, report_regions=True)
        assert a.regions == [
            {
                "box": [80, 120, 240, 240],
                "label": "blur",
                "severity": "moderate",
                "source": "answer",
            }
        ]
        assert any("answer region dropped" in e for e in a.errors)
        assert a.attribute_scores == {}

    def test_answer_regions_in_unit_convention(self):
        regions, notes = answer_regions(
            [{"bbox": [0.5, 0.5, 1.0, 1.0], "label": "blur"}], 200, 100, "unit"
        )
        assert regions[0]["box"] == [100, 50, 200, 100] and notes == []


class TestGraphAttributeScores:
    def test_scores_reach_the_assessment(self, image_bytes):
        reply = "<answer>3.0</answer><attributes>Noise: 4; Sharpness: 2.5; Exposure: 9</attributes>"
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, reply])
        a = run(m, image_bytes, attribute_scores=True)
        assert a.score == 3.0 and a.attribute_scores == {"noise": 4.0, "sharpness": 2.5}
        assert any("exposure (9) is outside 1-5" in e for e in a.errors)

    def test_missing_block_is_noted(self, image_bytes):
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, "<answer>3.0</answer>"])
        a = run(m, image_bytes, attribute_scores=True)
        assert a.attribute_scores == {} and "the answer gave no attribute scores" in a.errors

    def test_options_off_ignore_volunteered_extras(self, image_bytes):
        reply = '<answer>3.0</answer><attributes>Noise: 4</attributes><regions>[{"bbox": [0, 0, 9, 9]}]</regions>'
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, reply])
        a = run(m, image_bytes)
        assert a.score == 3.0 and a.attribute_scores == {} and a.regions == []


class TestClassicBackend:
    def test_both_options_on_a_noisy_patch(self, patch_image):
        ctx = make_context(attribute_scores=True, report_regions=True)
        a = assess(patch_image, context=ctx)
        assert a.ok and a.backend == "classic"
        assert set(a.attribute_scores) == {
            "sharpness", "noise", "artifacts", "exposure", "visibility"
        }  # fmt: skip
        assert all(1.0 <= v <= 5.0 for v in a.attribute_scores.values())
        piqe = [r for r in a.regions if r["source"] == "piqe"]
        assert piqe and len(piqe) <= 3
        x1, y1, x2, y2 = piqe[0]["box"]
        overlap = max(0, min(x2, 224) - max(x1, 128)) * max(0, min(y2, 160) - max(y1, 96))
        assert overlap >= 0.5 * 96 * 64
        assert piqe[0]["label"] in ("noise", "artifact") and 0 <= piqe[0]["severity"] <= 1

    def test_options_off_add_nothing(self, patch_image):
        a = assess(patch_image, context=make_context())
        assert a.attribute_scores == {} and all(r["source"] == "magnifier" for r in a.regions)

    def test_attribute_scores_are_monotone_in_noise(self):
        from tooliqa.backends.classic import attribute_scores
        from tooliqa.tools.measures import measure

        ys, xs = np.mgrid[0:128, 0:128]
        clean = np.stack([xs, ys, (xs + ys) // 2], axis=2).astype(np.float64) + 60
        rng = np.random.default_rng(0)
        noisy = clean + rng.normal(0, 25, clean.shape)
        s_clean = attribute_scores(measure(np.clip(clean, 0, 255).astype(np.uint8)))
        s_noisy = attribute_scores(measure(np.clip(noisy, 0, 255).astype(np.uint8)))
        assert s_noisy["noise"] < s_clean["noise"]


def test_cli_json_shows_attribute_scores_and_regions(capsys, tmp_path, patch_image):
    path = tmp_path / "patch.png"
    path.write_bytes(png_bytes(patch_image))
    code = main(["assess", str(path), "--attribute-scores", "--regions", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    record = json.loads(out.strip().splitlines()[-1])
    assert record["attribute_scores"] and record["regions"]
    assert {"box", "label", "severity", "source"} <= set(record["regions"][0])
    code = main(["assess", str(path), "--attribute-scores", "--regions"])
    out, _ = capsys.readouterr()
    assert code == 0 and "scores: sharpness=" in out and "regions: " in out


def test_old_assessment_json_without_the_fields_loads():
    old = {"schema_version": "1", "image": "a.png", "score": 3.2, "steps": [], "backend": "x"}
    a = Assessment.model_validate_json(json.dumps(old))
    assert a.attribute_scores == {} and a.regions == [] and a.score == 3.2


@pytest.mark.parametrize(
    "text",
    [
        "The patch isn't blurry.",
        "I don't see any noise.",
        "The sky is noise-free.",
        "Neither blur nor noise is visible.",
        "There is hardly any noise.",
    ],
)
def test_more_negations_leave_the_region_unlabelled(text):
    assert distortion_label(text) is None
