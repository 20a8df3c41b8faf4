"""The demo page's per-image extras: regions drawn on the image, attribute scores,
score uncertainty and the answer to a question (pure helpers; no server, no browser)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gradio", reason="gradio is not installed (the 'ui' extra)")

from tooliqa.ui.app import (
    EXTRAS,
    SEVERITY_COLOURS,
    UNRATED_COLOUR,
    _context,
    extra_settings,
    query_markdown,
    regions_image,
    regions_summary,
    rubric_rows,
    severity_name,
    uncertainty_text,
)


def grey(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 128, dtype=np.uint8)


class TestRegionsImage:
    def test_boxes_are_drawn_in_their_severity_colour(self):
        regions = [
            {"box": [40, 60, 120, 160], "label": "blur", "severity": "severe", "source": "answer"},
            {"box": [200, 30, 260, 90], "label": "noise", "severity": "minor", "source": "piqe"},
        ]
        img = regions_image(grey(240, 320), regions)
        assert img is not None and img.size == (320, 240)
        px = img.load()
        assert px[40, 120] == SEVERITY_COLOURS["severe"]  # left edge
        assert px[119, 120] == SEVERITY_COLOURS["severe"]  # right edge (x2 exclusive)
        assert px[230, 89] == SEVERITY_COLOURS["minor"]  # bottom edge
        assert px[80, 110] == (128, 128, 128)  # inside stays the image
        assert px[300, 220] == (128, 128, 128)  # away from every box

    def test_large_images_are_downscaled_and_boxes_scaled(self):
        region = {"box": [1000, 1000, 2000, 2000], "label": "artifact", "severity": "moderate"}
        img = regions_image(grey(2000, 4000), [region], side=400)
        assert img is not None and img.size == (400, 200)
        px = img.load()
        assert px[100, 150] == SEVERITY_COLOURS["moderate"]  # left edge at 1000 / 10
        assert px[150, 150] == (128, 128, 128)

    def test_label_text_is_written_beside_the_box(self):
        region = {"box": [100, 100, 200, 200], "label": "blur", "severity": "severe"}
        img = regions_image(grey(300, 300), [region])
        assert img is not None
        label_strip = np.asarray(img)[80:100, 100:200]
        assert (label_strip == (255, 255, 255)).all(axis=-1).any()  # white text
        assert (label_strip == SEVERITY_COLOURS["severe"]).all(axis=-1).sum() > 100

    def test_labels_never_hide_a_neighbouring_box(self):
        regions = [
            {"box": [592, 15, 608, 33], "label": "artifact", "severity": "severe"},
            {"box": [560, 32, 576, 48], "label": "artifact", "severity": "minor"},
        ]
        img = regions_image(grey(427, 640), regions)
        assert img is not None
        px = img.load()
        assert px[592, 24] == SEVERITY_COLOURS["severe"]
        assert px[560, 40] == SEVERITY_COLOURS["minor"]

    def test_regions_without_severity_use_the_neutral_colour(self):
        region = {"box": [10, 50, 60, 90], "label": "inspected", "severity": None}
        img = regions_image(grey(100, 100), [region])
        assert img is not None and img.load()[10, 70] == UNRATED_COLOUR

    def test_unusable_boxes_are_skipped(self):
        bad = [
            {"box": [5, 5, 5, 40], "label": "empty"},
            {"box": [500, 500, 600, 600], "label": "outside"},
            {"box": [1, 2, 3], "label": "short"},
            {"label": "no box"},
            {"box": [float("nan"), 0, 50, 50], "label": "nan"},
            {"box": [0, 0, float("inf"), 50], "label": "inf"},
        ]
        assert regions_image(grey(100, 100), bad) is None
        assert regions_image(grey(100, 100), []) is None

    def test_severity_words_and_numbers(self):
        assert severity_name("Severe") == "severe"
        assert severity_name("minor") == "minor"
        assert severity_name("catastrophic") is None
        assert severity_name(0.9) == "severe"
        assert severity_name(0.5) == "moderate"
        assert severity_name(0.1) == "minor"
        assert severity_name(None) is None and severity_name(True) is None

    def test_summary_counts_sources(self):
        regions = [{"source": "magnifier"}, {"source": "piqe"}, {"source": "piqe"}]
        assert regions_summary(regions) == "3 distortion region(s): 1 magnifier, 2 piqe"
        assert regions_summary([]) == "no distortion regions"


class TestRubricRows:
    def test_levels_only(self):
        assert rubric_rows({"sharpness": {"level": "high"}, "saliency_visibility": None}) == [
            ["sharpness", "high", ""],
            ["saliency visibility", "—", ""],
        ]

    def test_scores_merge_into_the_levels(self):
        rows = rubric_rows(
            {"sharpness": "low", "colour": "good"},
            {"sharpness": 1.0, "noise": 4.75},
        )
        assert rows == [
            ["sharpness", "low", "1.00"],
            ["colour", "good", ""],
            ["noise", "—", "4.75"],
        ]


class TestUncertaintyText:
    def test_available_from_logprobs(self):
        text = uncertainty_text(
            {
                "mean": 3.4712,
                "std": 0.2104,
                "interval": [3.1261, 3.8173],
                "level": 0.9,
                "source": "logprobs",
                "n": 1,
                "note": "",
            }
        )
        assert text == "3.47 ± 0.21 (90 % interval 3.13–3.82, logprobs)"

    def test_available_from_samples_names_n(self):
        text = uncertainty_text(
            {"mean": 3.5, "std": 0.5, "interval": [2.0, 5.0], "source": "samples", "n": 3}
        )
        assert text == "3.50 ± 0.50 (90 % interval 2.00–5.00, samples, n=3)"

    def test_unavailable_shows_the_note(self):
        text = uncertainty_text(
            {
                "mean": None,
                "std": None,
                "interval": None,
                "source": "logprobs",
                "note": "the tokenizer merged digits <12>",
            }
        )
        assert text == "Uncertainty unavailable (logprobs): the tokenizer merged digits &lt;12&gt;"
        assert uncertainty_text({"note": "no logprobs", "source": "logprobs"}).endswith(
            "no logprobs"
        )

    def test_not_asked(self):
        assert uncertainty_text(None) == ""


QUERY_ANSWER = {
    "query": "Is the sky noisy?",
    "kind": "yes_no",
    "focus": ["noise"],
    "region": "sky",
    "tools": ["magnifier"],
    "answer": "Yes, fine grain is visible in the flat sky.",
    "verdict": "yes",
    "score": 2.5,
    "evidence": [
        {"source": "magnifier", "text": "grain in the zoomed sky", "round": 1},
        {"source": "rubric", "text": "Noise: [Visible]", "round": None},
    ],
}


class TestQueryMarkdown:
    def test_full_answer(self):
        md = query_markdown(QUERY_ANSWER)
        assert md.startswith("### Question")
        assert "**Q:** Is the sky noisy?" in md
        assert "**Verdict: Yes** — Yes, fine grain is visible in the flat sky." in md
        assert "**Score:** 2.50 / 5 (noise)" in md
        assert "**Region:** sky" in md
        assert "- *magnifier, round 1*: grain in the zoomed sky" in md
        assert "- *rubric*: Noise: [Visible]" in md

    def test_open_answer_without_verdict_score_or_evidence(self):
        md = query_markdown(
            {
                "query": "What <b>spoils</b> it?",
                "kind": "open",
                "focus": [],
                "region": None,
                "tools": [],
                "answer": "Blur on the left.",
                "verdict": None,
                "score": None,
                "evidence": [],
            }
        )
        assert "**Answer:** Blur on the left." in md
        assert "&lt;b&gt;spoils&lt;/b&gt;" in md and "<b>" not in md
        assert "Verdict" not in md and "Score" not in md and "Evidence" not in md

    def test_no_question(self):
        assert query_markdown(None) == ""


class TestOptions:
    def test_extra_settings(self):
        assert extra_settings(None) == {
            "attribute_scores": False,
            "report_regions": False,
            "score_logprobs": False,
        }
        on = extra_settings(["attribute scores", "distortion regions"])
        assert on["attribute_scores"] and on["report_regions"] and not on["score_logprobs"]
        assert set(EXTRAS.values()) == set(on)

    def test_the_context_carries_the_options(self):
        from tooliqa.ui.app import CLASSIC

        ctx = _context(CLASSIC, "", "", 1, ["magnifier"], list(EXTRAS))
        assert ctx.attribute_scores and ctx.report_regions and ctx.score_logprobs
        assert ctx.max_tool_rounds == 1 and ctx.enabled_tools == ("magnifier",)
        plain = _context(CLASSIC, "", "", 2, ["magnifier"])
        assert not (plain.attribute_scores or plain.report_regions or plain.score_logprobs)


def test_the_page_offers_every_tool_with_the_papers_two_on_by_default():
    from tooliqa.tools import DEFAULT_TOOLS as GRAPH_DEFAULT
    from tooliqa.tools import TOOLS as GRAPH_TOOLS
    from tooliqa.ui import app

    assert list(GRAPH_TOOLS) == app.TOOLS
    assert list(GRAPH_DEFAULT) == app.DEFAULT_TOOLS
    assert _context(app.CLASSIC, "", "", 1, ["noise", "niqe"]).enabled_tools == ("noise", "niqe")


def test_boxes_land_right_on_an_image_decoded_downscaled():
    """Boxes are in the image's own pixels; a huge image is decoded ``reduced`` times
    smaller, so they are drawn divided by it."""
    from tooliqa.ui.app import regions_image, step_items

    rgb = np.zeros((200, 200, 3), np.uint8)  # a 400 x 400 image decoded at half size
    step = {"ok": True, "tool": "magnifier", "round": 1, "box": [200, 200, 400, 400]}
    original, _ = step_items(step, rgb, reduced=2)[0]
    px = np.asarray(original)
    assert px[150, 100, 0] > 200 and px[150, 100, 1] < 80  # the left edge at x = 100
    assert px[150, 60].max() < 30  # nothing at x = 60
    drawn = np.asarray(
        regions_image(rgb, [{"box": [200, 200, 400, 400], "label": "blur"}], reduced=2)
    )
    side = drawn.shape[1] / 200  # the display scale of the reduced image
    column = drawn[:, round(101 * side)]  # just inside the left edge of the box
    assert column[round(160 * side)].max() > 100 and column[round(40 * side)].max() < 30
