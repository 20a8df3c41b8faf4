"""PIQE (tools/piqe.py): golden values, a per-block reference, masks and boxes."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from tooliqa.tools import piqe as piqe_module
from tooliqa.tools.piqe import DistortionBox, distortion_boxes, piqe, piqe_maps

from _support import CALIBRATION, calibration_rgb, official_scores

# The official values are printed with two decimals: 0.005 is their rounding.
CALIBRATION_TOL = 0.006


def _blocky_in_noise(seed: int = 0) -> np.ndarray:
    """Noisy grey background with 8 x 8 constant tiles on blocks (2..3, 4..5)."""
    rng = np.random.default_rng(seed)
    img = np.clip(128 + rng.normal(0, 20, (96, 128)), 0, 255)
    img[32:64, 64:96] = np.kron(rng.integers(40, 220, (4, 4)), np.ones((8, 8)))
    return np.round(img).astype(np.uint8)


@pytest.fixture
def natural() -> np.ndarray:
    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:80, 0:112]
    base = 120 + 60 * np.sin(xs / 7.0) * np.cos(ys / 11.0)
    rgb = np.stack([base, base * 0.8 + 30, 255 - base], axis=2) + rng.normal(0, 6, (80, 112, 3))
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


@pytest.mark.calibration
@pytest.mark.data
@pytest.mark.skipif(
    not (CALIBRATION / "official_scores.csv").exists(),
    reason="calibration images not found at ../shared/data/calibration (relative to the repository root)",
)
def test_matches_official_matlab_scores() -> None:
    for name, official in official_scores("piqe").items():
        assert piqe(calibration_rgb(name)) == pytest.approx(official, abs=CALIBRATION_TOL), name


class TestScore:
    def test_vectorised_blocks_match_a_per_block_loop(self, natural: np.ndarray) -> None:
        weights = np.array(piqe_module._RGB2GRAY)
        grey = np.round(natural.astype(np.float64) @ weights).astype(np.uint8)
        assert piqe(grey) == pytest.approx(piqe_module.piqe_blockwise(grey), abs=1e-9)
        blocky = _blocky_in_noise()
        assert piqe(blocky) == pytest.approx(piqe_module.piqe_blockwise(blocky), abs=1e-9)
        odd = natural[:53, :71]  # padded to whole blocks, RGB input
        assert piqe(odd) == pytest.approx(piqe_module.piqe_blockwise(odd), abs=1e-9)

    def test_grey_equals_rgb_with_equal_channels(self, natural: np.ndarray) -> None:
        grey = natural[:, :, 0]
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        assert piqe(rgb) == pytest.approx(piqe(grey), abs=1e-12)
        assert piqe(grey[:, :, None]) == piqe(grey)

    def test_alpha_is_ignored(self, natural: np.ndarray) -> None:
        alpha = np.full((*natural.shape[:2], 1), 7, dtype=np.uint8)
        assert piqe(np.concatenate([natural, alpha], axis=2)) == piqe(natural)

    def test_float_input_on_either_scale_matches_uint8(self, natural: np.ndarray) -> None:
        grey = natural[:, :, 1].copy()
        grey[0, 0] = 255  # the stretch to max 255 is then the identity for uint8
        assert piqe(grey.astype(np.float64) / 255.0) == pytest.approx(piqe(grey), abs=1e-9)
        assert piqe(grey.astype(np.float32)) == pytest.approx(piqe(grey), abs=1e-9)

    def test_flat_image_has_no_active_block_and_scores_100(self) -> None:
        res = piqe_maps(np.full((48, 64, 3), 90, dtype=np.uint8))
        assert res.score == 100.0
        assert res.n_active == 0
        assert not res.artifact.any() and not res.noise.any()
        assert res.boxes() == []
        assert piqe(np.zeros((32, 32), dtype=np.uint8)) == 100.0

    def test_noise_raises_the_score(self, natural: np.ndarray) -> None:
        rng = np.random.default_rng(5)
        noisy = np.clip(natural + rng.normal(0, 25, natural.shape), 0, 255).astype(np.uint8)
        assert piqe(noisy) > piqe(natural)

    def test_deterministic_and_leaves_input_alone(self, natural: np.ndarray) -> None:
        before = natural.copy()
        assert piqe(natural) == piqe(natural)
        np.testing.assert_array_equal(natural, before)
        a, b = piqe_maps(natural), piqe_maps(natural)
        np.testing.assert_array_equal(a.distortion, b.distortion)

    @pytest.mark.parametrize("shape", [(8, 8), (15, 300), (300, 15), (8, 8, 3)])
    def test_tiny_image_is_refused(self, shape: tuple[int, ...]) -> None:
        with pytest.raises(ValueError, match="at least 16 x 16"):
            piqe(np.zeros(shape, dtype=np.uint8))

    @pytest.mark.parametrize(
        ("image", "fragment"),
        [
            (np.zeros((32, 32, 2), dtype=np.uint8), "grey or H x W x 3"),
            (np.zeros((2, 32, 32, 3), dtype=np.uint8), "grey or H x W x 3"),
            (np.full((32, 32), np.nan), "NaN or infinite"),
            (np.zeros((32, 32), dtype=bool), "numeric"),
        ],
    )
    def test_bad_input_is_refused(self, image: np.ndarray, fragment: str) -> None:
        with pytest.raises(ValueError, match=fragment):
            piqe(image)


class TestMapsAndBoxes:
    def test_noisy_block_is_found_and_boxed(self) -> None:
        rng = np.random.default_rng(0)
        img = np.full((96, 128), 128.0)
        img[32:48, 48:64] += rng.normal(0, 25, (16, 16))
        res = piqe_maps(np.clip(np.round(img), 0, 255).astype(np.uint8))
        expected = np.zeros((6, 8), dtype=bool)
        expected[2, 3] = True
        np.testing.assert_array_equal(res.active, expected)
        np.testing.assert_array_equal(res.noise, expected)
        (box,) = res.boxes()
        assert (box.x1, box.y1, box.x2, box.y2, box.kind) == (48, 32, 64, 48, "noise")
        assert 0.0 < box.severity <= 1.0

    def test_blocky_patch_is_found_and_boxed(self) -> None:
        res = piqe_maps(_blocky_in_noise())
        patch = np.zeros((6, 8), dtype=bool)
        patch[2:4, 4:6] = True
        near = np.zeros((6, 8), dtype=bool)
        near[1:5, 3:7] = True  # the patch and its neighbours, which the 7 x 7 window reaches
        assert res.artifact[patch].all()
        assert not res.artifact[~near].any()
        assert not res.noise[patch].any() and res.noise[~near].all()
        boxes = {(b.x1, b.y1, b.x2, b.y2) for b in distortion_boxes(res, kinds=("artifact",))}
        assert {(64, 32, 80, 48), (80, 32, 96, 48), (64, 48, 80, 64), (80, 48, 96, 64)} <= boxes
        assert all(x1 >= 48 and y1 >= 16 and x2 <= 112 and y2 <= 80 for x1, y1, x2, y2 in boxes)
        (merged,) = res.boxes(kinds=("artifact",), merge=True)
        assert merged.kind == "artifact"
        assert merged.x1 <= 64 and merged.y1 <= 32 and merged.x2 >= 96 and merged.y2 >= 64
        assert merged.severity == pytest.approx(
            float(np.clip(1 - res.variance[res.artifact], 0, 1).mean())
        )

    def test_boxes_sorted_filtered_and_tuples(self) -> None:
        res = piqe_maps(_blocky_in_noise())
        boxes = res.boxes()
        assert all(isinstance(b, DistortionBox) and len(b) == 6 for b in boxes)
        sev = [b.severity for b in boxes]
        assert sev == sorted(sev, reverse=True)
        cut = float(np.median(sev))
        strong = res.boxes(min_severity=cut)
        assert strong and all(b.severity >= cut for b in strong) and len(strong) < len(boxes)
        with pytest.raises(ValueError, match="unknown distortion kind"):
            res.boxes(kinds=("blur",))

    def test_partial_blocks_are_padded_and_clipped(self, natural: np.ndarray) -> None:
        img = natural[:70, :100]  # not multiples of 16
        res = piqe_maps(img)
        assert res.shape == (70, 100)
        assert res.active.shape == (5, 7)
        assert res.pixel_mask("active").shape == (70, 100)
        for b in res.boxes():
            assert 0 <= b.x1 < b.x2 <= 100 and 0 <= b.y1 < b.y2 <= 70
        np.testing.assert_array_equal(
            res.pixel_mask("noise")[::16, ::16], res.noise[: len(range(0, 70, 16))]
        )

    def test_score_is_the_pooled_block_distortion(self, natural: np.ndarray) -> None:
        res = piqe_maps(natural)
        d = res.distortion
        assert (d[~res.active] == 0).all()
        assert res.score == pytest.approx(100 * (d.sum() + 1) / (res.n_active + 1))
        both = res.artifact & res.noise
        np.testing.assert_allclose(d[both], 1.0)


def test_module_doctest() -> None:
    assert doctest.testmod(piqe_module).failed == 0
