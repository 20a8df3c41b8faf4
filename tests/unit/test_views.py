"""View tools: exact pixel results on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tooliqa.tools import (
    GAMMA_PRESETS,
    ToolArgumentError,
    ViewSettings,
    apply_gamma,
    bbox_to_pixels,
    crop,
    decode_image,
    gamma_lut,
    magnify,
    resolve_gamma,
    run_view_tool,
    tool_specs,
)


def ramp(h: int = 100, w: int = 200) -> np.ndarray:
    """Each pixel encodes its coordinates: R = x, G = y, B = 7."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs % 256, ys % 256, np.full_like(xs, 7)], axis=2).astype(np.uint8)


class TestBBoxConventions:
    def test_rel1000_maps_to_pixels(self):
        assert bbox_to_pixels([250, 100, 750, 900], 200, 100, "rel1000") == (50, 10, 150, 90)

    def test_unit_maps_to_pixels(self):
        assert bbox_to_pixels([0.25, 0.1, 0.75, 0.9], 200, 100, "unit") == (50, 10, 150, 90)

    def test_pixel_is_identity(self):
        assert bbox_to_pixels([50, 10, 150, 90], 200, 100, "pixel") == (50, 10, 150, 90)

    def test_fractional_bounds_widen_outwards(self):
        assert bbox_to_pixels([10.2, 20.7, 80.1, 70.5], 200, 100, "pixel") == (10, 20, 81, 71)

    def test_out_of_range_is_clamped(self):
        assert bbox_to_pixels([-100, -5, 1200, 2000], 200, 100, "rel1000") == (0, 0, 200, 100)

    @pytest.mark.parametrize(
        "bbox, fragment",
        [
            ([10, 10, 5, 50], "inverted"),
            ([10, 10, 10, 50], "inverted"),
            ([0, 0, 10, 10], "too small"),
            ([0, 0, float("nan"), 50], "finite"),
            ([0, 0, float("inf"), 50], "finite"),
            ([1, 2, 3], "four numbers"),
            ("0,0,10,10", "four numbers"),
            ([0, 0, "a", 10], "numbers"),
            ([True, 0, 10, 10], "numbers"),
            ([1500, 1500, 1800, 1800], "outside"),
        ],
    )
    def test_bad_boxes_are_rejected_with_a_reason(self, bbox, fragment):
        with pytest.raises(ToolArgumentError, match=fragment):
            bbox_to_pixels(bbox, 200, 100, "rel1000")

    def test_min_side_is_28_pixels(self):
        assert bbox_to_pixels([0, 0, 28, 28], 200, 100, "pixel") == (0, 0, 28, 28)
        with pytest.raises(ToolArgumentError, match="too small"):
            bbox_to_pixels([0, 0, 27, 28], 200, 100, "pixel")

    def test_images_smaller_than_min_side_allow_their_full_side(self):
        assert bbox_to_pixels([0, 0, 1000, 1000], 20, 16, "rel1000") == (0, 0, 20, 16)


class TestMagnifier:
    def test_crop_boundaries_exact(self):
        img = ramp()
        view, box = magnify(img, [50, 10, 150, 90], "pixel")
        assert box == (50, 10, 150, 90)
        assert view.shape == (80, 100, 3)
        assert view[0, 0].tolist() == [50, 10, 7]
        assert view[-1, -1].tolist() == [149, 89, 7]
        np.testing.assert_array_equal(view, crop(img, box))

    def test_crop_is_a_copy(self):
        img = ramp()
        view = crop(img, (0, 0, 30, 30))
        view[:] = 0
        assert img[0, 1, 0] == 1

    def test_enlarges_to_budget_with_zoom_cap(self):
        img = ramp()
        view, _ = magnify(img, [0, 0, 50, 40], "pixel", max_pixels=50 * 40 * 9, max_zoom=4)
        assert view.shape[:2] == (120, 150)  # 3x fills the budget
        view, _ = magnify(img, [0, 0, 50, 40], "pixel", max_pixels=10**7, max_zoom=4)
        assert view.shape[:2] == (160, 200)  # capped at 4x

    def test_never_exceeds_pixel_budget(self):
        img = ramp()
        view, _ = magnify(img, [0, 0, 199, 97], "pixel", max_pixels=30_001)
        assert view.shape[0] * view.shape[1] <= 30_001


class TestGamma:
    def test_lut_matches_float_formula(self):
        x = np.arange(256) / 255.0
        for g in (0.2, 0.5, 1.0, 2.0, 2.2, 5.0):
            expected = np.clip(np.rint(255 * x**g), 0, 255)
            np.testing.assert_array_equal(gamma_lut(g), expected.astype(np.uint8))

    def test_apply_matches_float_pow_on_an_image(self):
        img = ramp()
        for g in (0.5, 2.0):
            expected = np.rint(255 * (img / 255.0) ** g).astype(np.uint8)
            np.testing.assert_array_equal(apply_gamma(img, g), expected)

    def test_known_values(self):
        assert gamma_lut(0.5)[64] == round(255 * math.sqrt(64 / 255))  # 128
        assert gamma_lut(2.0)[128] == round(255 * (128 / 255) ** 2)  # 64
        assert gamma_lut(2.0)[0] == 0 and gamma_lut(0.5)[255] == 255

    def test_presets_and_validation(self):
        assert resolve_gamma("brighten") == GAMMA_PRESETS["brighten"] < 1
        assert resolve_gamma("darken") == GAMMA_PRESETS["darken"] > 1
        assert resolve_gamma(None, 1.8) == 1.8
        assert resolve_gamma("darken", 3.0) == 3.0
        for mode, gamma, fragment in [
            (None, None, "give a mode"),
            ("sideways", None, "mode must be"),
            (None, 9.0, "outside"),
            (None, 0.01, "outside"),
            ("brighten", 2.0, "brighten needs"),
            ("darken", 0.5, "darken needs"),
            (None, float("nan"), "finite"),
        ]:
            with pytest.raises(ToolArgumentError, match=fragment):
                resolve_gamma(mode, gamma)

    def test_rejects_non_uint8(self):
        with pytest.raises(TypeError):
            apply_gamma(ramp().astype(np.float32), 2.0)


class TestRunner:
    def test_magnifier_view_is_encoded_within_budget(self):
        img = ramp(300, 400)
        settings = ViewSettings(max_pixels=40_000)
        r = run_view_tool("magnifier", {"bbox": [0, 0, 500, 500]}, img, settings)
        assert r.ok and r.box == [0, 0, 200, 150] and r.mime == "image/png"
        view = decode_image(r.view).rgb
        assert view.shape[0] * view.shape[1] <= 40_000

    def test_gamma_view_is_the_lut_of_the_original(self):
        img = ramp(60, 80)
        r = run_view_tool("gamma_corrector", {"mode": "brighten"}, img)
        assert r.ok and r.gamma == 0.5
        np.testing.assert_array_equal(decode_image(r.view).rgb, apply_gamma(img, 0.5))

    def test_aliases_for_names_and_arguments(self):
        r = run_view_tool("zoom_in", {"bbox_2d": [0, 0, 500, 500]}, ramp())
        assert r.ok and r.tool == "magnifier"

    @pytest.mark.parametrize(
        "name, args, fragment",
        [
            ("magnifier", {"bbox": [0, 0, 1, 1]}, "too small"),
            ("magnifier", {}, "bbox"),
            ("magnifier", "not a dict", "JSON object"),
            ("gamma_corrector", {"gamma": 50}, "outside"),
            ("sharpen", {}, "unknown tool"),
            ("gamma_corector", {"mode": "darken"}, "Did you mean 'gamma_corrector'"),
        ],
    )
    def test_bad_calls_fail_without_raising(self, name, args, fragment):
        r = run_view_tool(name, args, ramp())
        assert not r.ok and r.view is None
        assert r.message.startswith("Tool call failed") and fragment in r.message

    def test_disabled_tool_is_refused(self):
        r = run_view_tool("gamma_corrector", {"mode": "darken"}, ramp(), enabled=["magnifier"])
        assert not r.ok and "unknown tool" in r.message

    def test_specs_are_strict_when_asked(self):
        specs = {s["function"]["name"]: s["function"] for s in tool_specs(strict=True)}
        assert specs["magnifier"]["strict"] is True
        assert specs["magnifier"]["parameters"]["additionalProperties"] is False
        assert specs["magnifier"]["parameters"]["properties"]["bbox"]["items"]["maximum"] == 1000
        pixel = tool_specs(["magnifier"], "pixel")[0]["function"]
        assert "maximum" not in pixel["parameters"]["properties"]["bbox"]["items"]
        assert "pixel coordinates" in pixel["description"]


@pytest.mark.parametrize("box", [[0, 0, 1e308, 1e308], [-1e308, 0, 5, 5], [0, 0, 2e6, 10]])
def test_absurd_boxes_are_refused_not_raised(box):
    rgb = np.zeros((64, 64, 3), np.uint8)
    result = run_view_tool("magnifier", {"bbox": box}, rgb)
    assert not result.ok and "within" in result.message
