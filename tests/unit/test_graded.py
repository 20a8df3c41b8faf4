"""The graded-distortion benchmark itself (tooliqa.eval.graded): references, distortions,
metrics, reports. No scorer of the product is judged here."""

from __future__ import annotations

import itertools
import json
import math
import pickle

import numpy as np
import pytest
from scipy import ndimage

from tooliqa.eval import graded
from tooliqa.eval.graded import (
    HELD_OUT_REFERENCES,
    KINDS,
    LEVELS,
    REFERENCES,
    TUNING_REFERENCES,
    GradedReport,
    GradedSet,
    GroupResult,
    ReferenceUnavailable,
    evaluate,
    fully_monotone,
    group_scores,
    spearman,
)

# -- a small natural-looking image, no files needed ---------------------------------


def _scene(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients, edges and aperiodic texture: every kind has something to do
    (no stripes: a box-shaped motion blur as long as their period would erase them)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.2 + 0.6 * x, 0.3 + 0.5 * y, 0.6 - 0.4 * x * y], axis=-1)
    base[h // 4 : h // 2, w // 4 : w // 2] = (0.85, 0.2, 0.15)  # a red block with edges
    base[(x - 0.7) ** 2 + (y - 0.4) ** 2 < 0.02] = (0.1, 0.5, 0.2)  # a green disc
    base += ndimage.gaussian_filter(rng.normal(0, 0.05, (h, w, 3)), (1, 1, 0))
    return np.clip(base * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return _scene()


def _grey(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def gradient_energy(rgb: np.ndarray) -> float:
    g = _grey(rgb)
    return float(np.mean(ndimage.sobel(g, 0) ** 2 + ndimage.sobel(g, 1) ** 2))


def highpass_variance(rgb: np.ndarray) -> float:
    g = _grey(rgb)
    return float(np.var(g - ndimage.uniform_filter(g, 3)))


def rms_contrast(rgb: np.ndarray) -> float:
    return float(_grey(rgb).std())


def chroma(rgb: np.ndarray) -> float:
    f = rgb.astype(np.float64)
    return float(np.mean(np.abs(f - f.mean(axis=2, keepdims=True))))


def _ladder(scene: np.ndarray, kind: str, measure) -> list[float]:
    return [measure(scene)] + [measure(KINDS[kind](scene, level)) for level in LEVELS]


def _strictly(values: list[float], direction: str) -> bool:
    pairs = list(itertools.pairwise(values))
    return all(a > b for a, b in pairs) if direction == "down" else all(a < b for a, b in pairs)


# -- distortions ------------------------------------------------------------------


class TestDistortions:
    @pytest.mark.parametrize("kind", list(KINDS))
    def test_shape_dtype_and_input_untouched(self, scene: np.ndarray, kind: str) -> None:
        before = scene.copy()
        for level in LEVELS:
            out = KINDS[kind](scene, level)
            assert out.shape == scene.shape and out.dtype == np.uint8
            assert not np.array_equal(out, scene), f"{kind} level {level} changed nothing"
        np.testing.assert_array_equal(scene, before)

    @pytest.mark.parametrize("kind", list(KINDS))
    def test_deterministic(self, scene: np.ndarray, kind: str) -> None:
        for level in (1, 5):
            np.testing.assert_array_equal(KINDS[kind](scene, level), KINDS[kind](scene, level))

    @pytest.mark.parametrize("kind", list(KINDS))
    def test_five_level_ladder(self, kind: str) -> None:
        assert len(KINDS[kind].ladder) == len(LEVELS) == 5

    @pytest.mark.parametrize("kind", ["gaussian_blur", "motion_blur", "resample"])
    def test_blur_lowers_gradient_energy(self, scene: np.ndarray, kind: str) -> None:
        assert _strictly(_ladder(scene, kind, gradient_energy), "down")

    def test_noise_raises_highpass_variance(self, scene: np.ndarray) -> None:
        assert _strictly(_ladder(scene, "white_noise", highpass_variance), "up")

    def test_darken_lowers_and_brighten_raises_the_mean(self, scene: np.ndarray) -> None:
        assert _strictly(_ladder(scene, "darken", lambda a: float(a.mean())), "down")
        assert _strictly(_ladder(scene, "brighten", lambda a: float(a.mean())), "up")

    def test_brighten_clips_more_highlights(self, scene: np.ndarray) -> None:
        clipped = _ladder(scene, "brighten", lambda a: float((a == 255).mean()))
        assert _strictly(clipped[1:], "up")

    def test_contrast_and_saturation_fall(self, scene: np.ndarray) -> None:
        assert _strictly(_ladder(scene, "contrast", rms_contrast), "down")
        sat = _ladder(scene, "saturation", chroma)
        assert _strictly(sat, "down") and sat[-1] < 1.0  # level 5: grey

    @pytest.mark.parametrize("kind", ["jpeg", "webp"])
    def test_codecs_drift_further_from_the_reference(self, scene: np.ndarray, kind: str) -> None:
        err = _ladder(scene, kind, lambda a: float(np.mean((a.astype(float) - scene) ** 2)))
        assert err[0] == 0 and _strictly(err, "up")

    def test_noise_is_seeded_but_differs_by_level(self, scene: np.ndarray) -> None:
        a, b = KINDS["white_noise"](scene, 1), KINDS["white_noise"](scene, 2)
        assert not np.array_equal(a, b)

    def test_bad_level_or_image(self, scene: np.ndarray) -> None:
        with pytest.raises(ValueError, match="level"):
            KINDS["jpeg"](scene, 0)
        with pytest.raises(ValueError, match="level"):
            KINDS["jpeg"](scene, 6)
        with pytest.raises(ValueError, match="uint8"):
            KINDS["jpeg"](scene.astype(np.float32), 1)

    def test_motion_kernel_is_normalised_and_centred(self) -> None:
        for length in (3, 5, 9, 13, 21):
            k = graded.motion_kernel(length)
            assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
            assert k.sum() == pytest.approx(1.0)
            np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-12)  # point-symmetric


# -- metrics ----------------------------------------------------------------------


class TestMetrics:
    def test_strictly_falling(self) -> None:
        s = [4.5, 4.0, 3.1, 2.2, 1.9, 1.0]
        assert spearman(s) == pytest.approx(1.0)
        assert fully_monotone(s)

    def test_rising_is_minus_one(self) -> None:
        s = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        assert spearman(s) == pytest.approx(-1.0)
        assert not fully_monotone(s)

    def test_constant_is_zero_not_nan(self) -> None:
        assert spearman([3.0] * 6) == 0.0
        assert not fully_monotone([3.0] * 6)

    def test_ties_break_full_monotonicity_not_spearman_sign(self) -> None:
        s = [5.0, 4.0, 4.0, 3.0, 2.0, 1.0]
        assert 0.9 < spearman(s) < 1.0
        assert not fully_monotone(s)

    def test_one_swap(self) -> None:
        # ranks of -s: 1 3 2 4 5 6 -> d^2 sums to 2: rho = 1 - 6*2 / (6*35)
        assert spearman([6.0, 4.0, 5.0, 3.0, 2.0, 1.0]) == pytest.approx(1 - 12 / 210)

    def test_undefined_score_ranks_worst(self) -> None:
        assert spearman([3.0, 2.0, 1.0, math.nan]) == pytest.approx(1.0)
        assert fully_monotone([3.0, 2.0, 1.0, -math.inf])


# -- references -------------------------------------------------------------------


class TestReferences:
    def test_tuning_and_held_out_are_disjoint_and_known(self) -> None:
        assert not set(TUNING_REFERENCES) & set(HELD_OUT_REFERENCES)
        assert set(TUNING_REFERENCES) | set(HELD_OUT_REFERENCES) <= set(REFERENCES)
        assert len(set(HELD_OUT_REFERENCES)) == len(HELD_OUT_REFERENCES)

    def test_every_reference_has_source_and_licence(self) -> None:
        for ref in REFERENCES.values():
            assert ref.source and ref.licence, ref.name

    def test_missing_tid_folder_is_a_reason(self, tmp_path) -> None:
        with pytest.raises(ReferenceUnavailable, match="absent"):
            graded.load_reference("tid2013_I03", tid_dir=tmp_path)
        report = evaluate(
            lambda a: 0.0, ["tid2013_I03"], ["jpeg"], images=GradedSet(tid_dir=tmp_path)
        )
        assert "tid2013_I03" in report.skipped and not report.groups

    def test_unknown_names_say_what_exists(self) -> None:
        with pytest.raises(KeyError, match="known: "):
            graded.load_reference("lena")
        with pytest.raises(KeyError, match="gaussian_blur"):
            evaluate(lambda a: 0.0, [], ["gausian_blur"])

    def test_skimage_photo_loads_as_512_rgb(self) -> None:
        pytest.importorskip("skimage")
        for name in ("camera", "chelsea"):
            img = graded.load_reference(name)
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            assert max(img.shape[:2]) == graded.LONG_SIDE
        cam = graded.load_reference("camera")
        assert np.array_equal(cam[..., 0], cam[..., 2])  # grey, stacked


# -- evaluation on a fake image set -----------------------------------------------


class _FakeSet(GradedSet):
    """The synthetic scene as every reference: no files read."""

    def reference(self, name: str) -> np.ndarray:
        if name not in self._refs:
            self._refs[name] = _scene(seed=len(name))
        return self._refs[name]


def _mse_scorer(reference: np.ndarray):
    def score(rgb: np.ndarray) -> float:
        return -float(np.mean((rgb.astype(float) - reference) ** 2))

    return score


class TestEvaluate:
    def test_report_numbers_and_serialisation(self) -> None:
        images = _FakeSet()
        ref = images.reference("astronaut")
        report = evaluate(
            _mse_scorer(ref), ["astronaut"], ["gaussian_blur", "white_noise"], images=images
        )
        assert report.images == 12 and len(report.groups) == 2
        assert report.mean_spearman == pytest.approx(1.0) and report.monotone_share == 1.0
        data = json.loads(json.dumps(report.as_dict()))
        assert data["per_kind"]["white_noise"]["monotone_share"] == 1.0
        assert len(data["groups"][0]["scores"]) == 6
        table = report.as_table()
        assert "gaussian_blur" in table and "mean" in table and "+1.000 / 100%" in table

    def test_saturation_skipped_on_grey(self) -> None:
        report = evaluate(lambda a: 1.0, ["camera"], ["saturation", "jpeg"], images=_FakeSet())
        assert [g.kind for g in report.groups] == ["jpeg"]
        assert "camera/saturation" in report.skipped

    def test_images_are_cached_and_read_only(self) -> None:
        images = _FakeSet()
        a = images.image("astronaut", "jpeg", 3)
        assert a is images.image("astronaut", "jpeg", 3)
        assert not a.flags.writeable

    def test_group_scores_helper(self) -> None:
        images = _FakeSet()
        scores = group_scores(
            _mse_scorer(images.reference("coffee")), "coffee", "contrast", images=images
        )
        assert len(scores) == 6 and scores[0] == 0.0
        assert spearman(scores) == pytest.approx(1.0)

    def test_per_kind_mean_and_share(self) -> None:
        report = GradedReport("x", ("a", "b"), ("jpeg",))
        report.groups = [
            GroupResult("a", "jpeg", (6.0, 5.0, 4.0, 3.0, 2.0, 1.0)),
            GroupResult("b", "jpeg", (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)),
        ]
        s = report.per_kind["jpeg"]
        assert s.groups == 2 and s.mean_spearman == pytest.approx(0.0) and s.monotone_share == 0.5

    def test_comparison_table_has_one_column_per_scorer(self) -> None:
        a = GradedReport("ours", ("a",), ("jpeg",), [GroupResult("a", "jpeg", (2.0, 1.0))])
        b = GradedReport("niqe", ("a",), ("jpeg",), [GroupResult("a", "jpeg", (1.0, 2.0))])
        table = graded.comparison_table({"ours": a, "niqe": b})
        header, _, row, *_ = table.splitlines()
        assert "ours" in header and "niqe" in header
        assert "+1.000 / 100%" in row and "-1.000 /   0%" in row


class TestScorers:
    def test_metric_scorer_is_higher_is_better_and_pickles(self, scene: np.ndarray) -> None:
        niqe = graded.metric_scorer("piqe")
        assert niqe.__name__ == "piqe" and niqe.sign == -1.0
        assert pickle.loads(pickle.dumps(niqe))(scene) == niqe(scene)

    def test_undefined_metric_ranks_worst(self) -> None:
        flat = np.full((128, 128, 3), 128, np.uint8)
        assert graded.metric_scorer("niqe")(flat) == -math.inf

    def test_unknown_metric(self) -> None:
        with pytest.raises(KeyError, match="niqe"):
            graded.metric_scorer("nique")

    def test_default_scorer_is_named_and_pickles_without_its_context(self) -> None:
        s = graded.default_scorer()
        assert s.__name__ == "ours"
        assert pickle.loads(pickle.dumps(s)).max_rounds == 2


def test_module_doctests() -> None:
    import doctest

    assert doctest.testmod(graded).failed == 0
