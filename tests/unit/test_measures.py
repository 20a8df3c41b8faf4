"""Hand-computed checks of the classic measures and the packaged calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from tooliqa.backends.classic_calibration import ClassicCalibration, load_classic_calibration
from tooliqa.tools.measures import (
    FEATURE_NAMES,
    NSS_NAMES,
    Measurements,
    feature_vector,
    measure,
    most_detailed_region,
)


def grey(values: np.ndarray) -> np.ndarray:
    """Stack a 2-D array into a uint8 grey RGB image."""
    v = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.repeat(v[:, :, None], 3, axis=2)


def checkerboard(n: int = 64, square: int = 8, lo: int = 30, hi: int = 220) -> np.ndarray:
    i, j = np.indices((n, n))
    return np.where(((i // square) + (j // square)) % 2 == 0, lo, hi).astype(np.float64)


# -- sharpness ---------------------------------------------------------------


def test_sharp_checkerboard_beats_blurred_copy() -> None:
    board = checkerboard()
    sharp = measure(grey(board))
    blurred = measure(grey(ndimage.gaussian_filter(board, 2.0, mode="reflect")))
    assert sharp.sharpness > blurred.sharpness
    assert sharp.laplacian_var > 4 * blurred.laplacian_var
    assert sharp.detail_l0 > blurred.detail_l0
    assert sharp.fine_detail_ratio > blurred.fine_detail_ratio


def test_gradient_energy_of_a_ramp_is_its_slope() -> None:
    # Y = 2 x: the Sobel / 8 gradient is exactly 2 grey levels/pixel away from
    # the left/right borders (mirror padding halves it there).
    x = np.tile(np.arange(0, 128, 2, dtype=np.float64), (64, 1))
    m = measure(grey(x))
    inner = 62 / 64  # columns 1..62 have slope 2, the two border columns slope 1
    assert m.gradient_energy == pytest.approx(2 * inner + 1 * (1 - inner), abs=1e-4)


# -- noise -------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [3.0, 10.0])
def test_noise_sigma_recovers_known_gaussian_noise(sigma: float) -> None:
    rng = np.random.default_rng(1)
    img = 128.0 + rng.normal(0.0, sigma, size=(256, 256))
    m = measure(grey(img))
    # Rounding to uint8 adds 1/12 grey level^2 of variance.
    expected = math.sqrt(sigma**2 + 1 / 12)
    assert m.noise_sigma == pytest.approx(expected, rel=0.06)


def test_noise_sigma_of_single_impulse_matches_formula() -> None:
    img = np.zeros((3, 3))
    img[1, 1] = 60
    # only interior pixel: |4 * 60| ; sigma = sqrt(pi/2) * 240 / (6 * 1 * 1)
    assert measure(grey(img)).noise_sigma == pytest.approx(math.sqrt(math.pi / 2) * 40, rel=1e-6)


def test_noise_sigma_zero_for_constant_and_linear_images() -> None:
    assert measure(grey(np.full((32, 32), 77.0))).noise_sigma == 0.0
    ramp = np.add.outer(np.arange(32.0), 2 * np.arange(32.0))
    assert measure(grey(ramp)).noise_sigma == pytest.approx(0.0, abs=1e-4)


# -- blockiness --------------------------------------------------------------


def test_two_flat_blocks_have_hand_computed_blockiness() -> None:
    img = np.zeros((16, 16))
    img[:, 8:] = 100
    # horizontal: boundary step 100, interior steps 0 -> (100 + 0.1) / 0.1 = 1001
    # vertical: no steps at all -> 1;  mean = 501
    assert measure(grey(img)).blockiness == pytest.approx(501.0, rel=1e-5)


def test_block_quantised_image_is_blockier_than_smooth() -> None:
    rng = np.random.default_rng(2)
    smooth = ndimage.gaussian_filter(rng.normal(128, 40, (128, 128)), 4.0)
    smooth = 128 + (smooth - smooth.mean()) * (60 / smooth.std())
    blocks = smooth.reshape(16, 8, 16, 8).mean(axis=(1, 3))
    quantised = np.kron(blocks, np.ones((8, 8)))
    b_smooth = measure(grey(smooth)).blockiness
    b_quant = measure(grey(quantised)).blockiness
    assert b_smooth == pytest.approx(1.0, abs=0.2)
    assert b_quant > 5 * b_smooth


def test_ringing_neutral_without_edges() -> None:
    assert measure(grey(np.full((32, 32), 90.0))).ringing == 1.0


# -- exposure, contrast, entropy ---------------------------------------------


def test_dark_image_exposure_and_clipping() -> None:
    img = np.zeros((40, 40))
    img[:10, :] = 40  # 25 % of pixels at 40, 75 % at 0
    m = measure(grey(img))
    assert m.mean_luminance == pytest.approx(10 / 255, abs=1e-6)
    assert m.shadow_clip == pytest.approx(0.75)
    assert m.highlight_clip == 0.0


def test_bright_clipping_contrast_and_entropy() -> None:
    img = np.zeros((20, 20))
    img[:, 10:] = 255
    m = measure(grey(img))
    assert m.highlight_clip == pytest.approx(0.5)
    assert m.shadow_clip == pytest.approx(0.5)
    assert m.rms_contrast == pytest.approx(0.5, abs=1e-6)  # std 127.5 / 255
    assert m.entropy == pytest.approx(1.0)
    assert m.dynamic_range == pytest.approx(1.0)


# -- colour ------------------------------------------------------------------


def test_colourfulness_of_grey_is_zero() -> None:
    rng = np.random.default_rng(3)
    m = measure(grey(rng.uniform(0, 255, (32, 32))))
    assert m.colourfulness == 0.0
    assert m.mean_saturation == 0.0


def test_colourfulness_of_flat_red_matches_formula() -> None:
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 255
    m = measure(img)
    # rg = 255, yb = 127.5, no spread: M = 0.3 * sqrt(255^2 + 127.5^2)
    assert m.colourfulness == pytest.approx(0.3 * math.hypot(255, 127.5), rel=1e-6)
    assert m.mean_saturation == pytest.approx(1.0)


# -- main region -------------------------------------------------------------


def test_most_detailed_region_finds_textured_patch() -> None:
    rng = np.random.default_rng(4)
    img = np.full((256, 256), 120.0)
    img[128:192, 64:128] = rng.uniform(0, 255, (64, 64))  # tile row 2, column 1
    box = most_detailed_region(grey(img), grid=4)
    assert box == (64, 128, 128, 192)
    m = measure(grey(img))
    assert m.main_region_detail_ratio > 3
    assert m.detail_spread > 1


def test_most_detailed_region_non_square_and_tiny() -> None:
    img = np.zeros((30, 50))
    img[20:, 40:] = np.indices((10, 10)).sum(0) % 2 * 255
    assert most_detailed_region(grey(img), grid=3) == (33, 20, 50, 30)
    x1, y1, x2, y2 = most_detailed_region(grey(np.zeros((2, 3))), grid=4)
    assert 0 <= x1 < x2 <= 3 and 0 <= y1 < y2 <= 2


# -- robustness --------------------------------------------------------------


@pytest.mark.parametrize(
    "img",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((8, 8, 3), np.uint8),
        np.full((8, 8, 3), 255, np.uint8),
        np.full((2, 5, 3), 37, np.uint8),
        np.random.default_rng(5).integers(0, 256, (8, 8, 3)).astype(np.uint8),
        np.random.default_rng(6).integers(0, 256, (7, 3)).astype(np.uint8),
        np.full((64, 48, 3), 128, np.uint8),
    ],
    ids=["1x1", "8x8-black", "8x8-white", "2x5", "8x8-random", "7x3-grey2d", "constant"],
)
def test_tiny_and_constant_images_are_finite(img: np.ndarray) -> None:
    m = measure(img)
    d = m.to_dict()
    assert all(math.isfinite(v) for v in d.values())
    v = feature_vector(m)
    assert v.shape == (len(FEATURE_NAMES),)
    assert np.isfinite(v).all()
    assert most_detailed_region(img)


def test_greyscale_2d_equals_grey_rgb() -> None:
    rng = np.random.default_rng(7)
    g = rng.integers(0, 256, (24, 24)).astype(np.uint8)
    a = measure(g).to_dict()
    b = measure(np.repeat(g[:, :, None], 3, axis=2)).to_dict()
    assert a == pytest.approx(b)


def test_measurements_dict_and_feature_order() -> None:
    m = measure(grey(checkerboard(32)))
    assert isinstance(m, Measurements)
    d = m.to_dict()
    assert set(NSS_NAMES) <= set(d)
    assert set(FEATURE_NAMES) <= set(d)
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    with pytest.raises(AttributeError):
        m.sharpness = 0.0  # type: ignore[misc]


def test_empty_image_is_rejected() -> None:
    with pytest.raises(ValueError):
        measure(np.zeros((0, 4, 3), np.uint8))


# -- calibration -------------------------------------------------------------


@pytest.fixture(scope="module")
def calib() -> ClassicCalibration:
    return load_classic_calibration()


def test_calibration_loads_with_dev_provenance(calib: ClassicCalibration) -> None:
    assert calib.feature_names == FEATURE_NAMES
    assert calib.provenance["split"] == "dev"
    assert calib.provenance["n_images"] > 1000
    assert calib.map_scale > 0


def test_score_in_range_and_monotone_in_index(calib: ClassicCalibration) -> None:
    idx = np.linspace(-50, 50, 2001)
    s = np.array([calib.score_from_index(i) for i in idx])
    assert (s >= 1).all() and (s <= 5).all()
    assert (np.diff(s) >= 0).all()
    mid = np.linspace(0, 4.5, 200)
    assert (np.diff([calib.score_from_index(i) for i in mid]) > 0).all()


def test_score_and_contributions_on_images(calib: ClassicCalibration) -> None:
    rng = np.random.default_rng(8)
    images = [
        grey(checkerboard()),
        np.full((32, 32, 3), 128, np.uint8),
        rng.integers(0, 256, (64, 64, 3)).astype(np.uint8),
        np.zeros((1, 1, 3), np.uint8),
    ]
    for img in images:
        m = measure(img)
        s = calib.score(m)
        assert 1.0 <= s <= 5.0
        # the map of the index, less what the distortion detectors take off (never below 1)
        lowered = calib.score_from_index(calib.index(m)) - sum(calib.penalties(m).values())
        assert s == pytest.approx(max(1.0, lowered))
        c = calib.contributions(m)
        assert list(c) == list(FEATURE_NAMES)
        assert sum(c.values()) + calib.intercept == pytest.approx(calib.index(m))
