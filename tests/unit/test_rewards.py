"""GRPO rewards: hand-computed values, properties, TRL contract (kwargs, pickling, names)."""

from __future__ import annotations

import doctest
import math
import pickle
import statistics
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from tooliqa.training import rewards
from tooliqa.training.rewards import (
    REWARD_WEIGHTS_PAPER,
    BATEReward,
    FidelityReward,
    FormatReward,
    MissingColumnError,
    all_reduce_counts,
    bate_base,
    default_rewards,
    fidelity_scores,
    global_tool_rate,
    tool_rate_shaping,
)

EPS = 1e-8
OK = {"rubric_ok": True, "single_action": True, "answer_tagged": True, "score_in_range": True}


def phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def fid_term(p: float, g: float, eps: float = EPS) -> float:
    return math.sqrt(p * g + eps) + math.sqrt((1.0 - p) * (1.0 - g) + eps)


@dataclass
class FixedCounts:
    """A gather that reports fixed global counts whatever this process saw."""

    used: int
    total: int

    def __call__(self, used: int, total: int) -> tuple[int, int]:
        return self.used, self.total


@dataclass
class OtherRank:
    """A gather that adds the counts of one other process."""

    used: int
    total: int

    def __call__(self, used: int, total: int) -> tuple[int, int]:
        return used + self.used, total + self.total


def batch(**overrides):
    """Two images x 4 generations: image a (MOS 5) with two tool calls, image b (MOS 1)."""
    cols = {
        "prompts": ["p"] * 8,
        "completions": ["c"] * 8,
        "pred_score": [4.5, 2.0, 3.5, 3.0, 1.0, 4.0, 1.5, 2.0],
        "mos": [5.0] * 4 + [1.0] * 4,
        "group": ["a"] * 4 + ["b"] * 4,
        "tool_calls": [1, 2, 0, 0, 1, 0, 0, 0],
        "tool_successes": [1, 1, 0, 0, 1, 0, 0, 0],
        "protocol": [OK] * 8,
    }
    cols.update(overrides)
    return cols


class TestFidelity:
    def test_two_images_two_samples_by_hand(self):
        pred, mos, group = [0.7, 0.5, 0.4, 0.2], [3.0, 3.0, 1.0, 1.0], ["A", "A", "B", "B"]
        mu_a, mu_b = 0.6, 0.3
        var_a = ((0.7 - 0.6) ** 2 + (0.5 - 0.6) ** 2) / 1  # ddof = 1
        var_b = ((0.4 - 0.3) ** 2 + (0.2 - 0.3) ** 2) / 1
        den = math.sqrt(var_a + var_b + EPS)
        expected = [
            fid_term(phi((0.7 - mu_b) / den), 1.0),
            fid_term(phi((0.5 - mu_b) / den), 1.0),
            fid_term(phi((0.4 - mu_a) / den), 0.0),
            fid_term(phi((0.2 - mu_a) / den), 0.0),
        ]
        got = fidelity_scores(pred, mos, group)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        assert FidelityReward()(pred_score=pred, mos=mos, group=group) == pytest.approx(expected)

    def test_equal_mos_uses_half(self):
        got = fidelity_scores([0.6, 0.4, 0.5], [2.0, 2.0, 2.0], [1, 1, 2])
        var_1 = 0.02
        den = math.sqrt(var_1 + 0.0 + EPS)
        assert got[0] == pytest.approx(fid_term(phi((0.6 - 0.5) / den), 0.5))
        # image 2 has one sample: σ² = 0, partner image 1 has μ = 0.5
        assert got[2] == pytest.approx(fid_term(phi((0.5 - 0.5) / den), 0.5))

    def test_mean_over_other_images(self):
        # three images, one sample each: σ² = 0, so p is a near-step of s - μ_j
        got = fidelity_scores([0.9, 0.5, 0.1], [3.0, 2.0, 1.0], ["x", "y", "z"])
        den = math.sqrt(EPS)
        expected_y = 0.5 * (
            fid_term(phi((0.5 - 0.9) / den), 0.0) + fid_term(phi((0.5 - 0.1) / den), 1.0)
        )
        assert got[1] == pytest.approx(expected_y)
        np.testing.assert_allclose(got, [1.0, 1.0, 1.0], atol=1e-3)

    def test_rises_as_sample_moves_to_the_right_side(self):
        # image a (MOS 5) must score above image b (μ_b = 2): reward grows with s_a1
        values = []
        for s in [0.5, 1.5, 2.0, 2.5, 3.5]:
            out = fidelity_scores([s, 3.0, 2.0, 2.2, 1.8], [5, 5, 1, 1, 1], list("aabbb"))
            values.append(out[0])
        assert np.all(np.diff(values) > 0)
        # and for the low image, a lower score is better
        low = [
            fidelity_scores([4.0, 3.0, s, 2.0], [5, 5, 1, 1], list("aabb"))[2] for s in (4, 3, 1)
        ]
        assert low[0] < low[1] < low[2]

    def test_invalid_gets_penalty_and_is_excluded(self):
        pred = [0.8, None, 0.6, 0.3, float("nan"), 0.1]
        mos, group = [4, 4, 4, 1, 1, 1], list("aaabbb")
        got = fidelity_scores(pred, mos, group, invalid_value=-0.5)
        assert got[1] == got[4] == -0.5
        keep = [0, 2, 3, 5]
        alone = fidelity_scores([pred[i] for i in keep], [mos[i] for i in keep], list("aabb"))
        np.testing.assert_allclose(got[keep], alone)
        again = fidelity_scores(pred, mos, group, invalid_value=-0.5)
        np.testing.assert_array_equal(got, again)

    def test_all_invalid_image_is_no_partner(self):
        got = fidelity_scores([0.8, 0.2, None, None], [4, 1, 9, 9], ["a", "b", "c", "c"])
        without = fidelity_scores([0.8, 0.2], [4, 1], ["a", "b"])
        np.testing.assert_allclose(got[:2], without)
        assert list(got[2:]) == [0.0, 0.0]

    def test_no_partner_gives_none(self):
        out = FidelityReward()(pred_score=[0.5, 0.7, None], mos=[3, 3, 3], group=[7, 7, 7])
        assert out == [None, None, 0.0]
        assert np.isnan(fidelity_scores([0.5], [1.0], ["a"])[0])

    def test_mos_must_be_constant_per_group(self):
        with pytest.raises(ValueError, match="single MOS"):
            fidelity_scores([0.1, 0.2], [1.0, 2.0], ["a", "a"])

    def test_unknown_kwargs_ignored(self):
        cols = batch()
        plain = FidelityReward()(**cols)
        extra = FidelityReward()(
            **cols, completion_ids=[[1]] * 8, trainer_state=object(), image=["x"] * 8
        )
        assert plain == extra

    def test_pickles(self):
        r = FidelityReward(invalid_value=-1.0)
        back = pickle.loads(pickle.dumps(r))
        cols = batch(pred_score=[4.5, None, 3.5, 3.0, 1.0, 4.0, 1.5, 2.0])
        assert back(**cols) == r(**cols)
        assert back.__name__ == "fidelity"

    def test_missing_column_message(self):
        cols = batch()
        del cols["mos"]
        with pytest.raises(MissingColumnError) as info:
            FidelityReward()(**cols)
        assert isinstance(info.value, KeyError)
        assert "'mos'" in str(info.value)
        assert "dataset" in str(info.value)


class TestBATEBase:
    def test_two_tool_two_free_by_hand(self):
        tau = 0.1
        s = [0.9, 0.55, 0.7, 0.5]
        got = bate_base(s, [1, 2, 0, 0], ["g"] * 4, tau=tau)

        def duel(t: float) -> float:
            return 0.5 * (math.sqrt(phi((t - 0.7) / tau)) + math.sqrt(phi((t - 0.5) / tau)))

        np.testing.assert_allclose(got, [duel(0.9), duel(0.55), 0.0, 0.0], rtol=1e-12)

    def test_only_within_group(self):
        got = bate_base([0.9, 0.1, 0.2, 0.95], [1, 0, 1, 0], ["a", "a", "b", "b"], tau=0.1)
        assert got[0] == pytest.approx(math.sqrt(phi(8.0)))
        assert got[2] == pytest.approx(math.sqrt(phi((0.2 - 0.95) / 0.1)), rel=1e-9)

    def test_rewarded_only_when_beating_tool_free(self):
        win = bate_base([0.8, 0.6], [1, 0], [0, 0], tau=0.01)[0]
        lose = bate_base([0.6, 0.8], [1, 0], [0, 0], tau=0.01)[0]
        assert win > lose
        assert win == pytest.approx(1.0)
        assert lose == pytest.approx(0.0, abs=1e-6)

    def test_no_cohort_value_and_invalid(self):
        got = bate_base([0.8, 0.6, np.nan], [1, 1, 1], ["a", "a", "a"], no_cohort_value=-0.1)
        assert list(got) == [-0.1, -0.1, 0.0]


class TestShaping:
    def test_signs_and_strengths(self):
        s = {rho: float(tool_rate_shaping(rho, 0.5)) for rho in (0.30, 0.45, 0.55, 0.70)}
        assert s[0.30] > 0 and s[0.45] > 0 and s[0.55] < 0 and s[0.70] < 0
        assert abs(s[0.30]) > 3 * abs(s[0.45])
        assert abs(s[0.70]) > abs(s[0.55])
        assert abs(s[0.70]) > 3 * abs(s[0.55])

    def test_threefold_outside_the_band(self):
        inside, outside = tool_rate_shaping(0.3501, 1.0), tool_rate_shaping(0.3499, 1.0)
        assert float(outside / inside) == pytest.approx(3.0, rel=1e-3)
        inside, outside = tool_rate_shaping(0.6499, 0.0), tool_rate_shaping(0.6501, 0.0)
        assert float(outside / inside) == pytest.approx(3.0, rel=1e-3)

    def test_zero_at_target_and_smooth_near_it(self):
        assert np.all(tool_rate_shaping(0.5, [0.0, 0.5, 1.0]) == 0.0)
        assert 0 < float(tool_rate_shaping(0.499, 1.0)) < 0.02 * 0.1  # strength 0.1

    def test_rank_modulation(self):
        inc = tool_rate_shaping(0.4, [0.0, 0.5, 1.0])
        pen = tool_rate_shaping(0.6, [0.0, 0.5, 1.0])
        assert inc[0] == 0.0 and 0 < inc[1] < inc[2]
        assert pen[0] < pen[1] < 0 and pen[2] == 0.0

    def test_formula(self):
        got = float(tool_rate_shaping(0.30, 1.0, strength=0.2, sharpness=3.0))
        expected = 0.2 * 3.0 * (2.0 / (1.0 + math.exp(-3.0 * 0.2 / 0.15)) - 1.0)
        assert got == pytest.approx(expected)

    def test_rejects_bad_input(self):
        with pytest.raises(ValueError):
            tool_rate_shaping(1.2, 0.5)
        with pytest.raises(ValueError):
            tool_rate_shaping(0.4, 1.5)


class TestToolRate:
    def test_local_and_gathered(self):
        assert global_tool_rate(2, 8) == 0.25
        assert global_tool_rate(2, 8, gather=OtherRank(6, 8)) == 0.5
        assert global_tool_rate(0, 0) is None

    def test_default_gather_without_process_group(self):
        assert all_reduce_counts(3, 7) == (3, 7)

    def test_import_does_not_load_torch(self):
        code = "import sys, tooliqa.training.rewards; assert 'torch' not in sys.modules"
        subprocess.run([sys.executable, "-c", code], check=True)


class TestBATEReward:
    def test_tool_free_get_zero(self):
        cols = batch()
        out = BATEReward(gather=FixedCounts(1, 10))(**cols)
        free = [i for i, c in enumerate(cols["tool_calls"]) if c == 0]
        assert all(out[i] == 0.0 for i in free)

    def test_base_matches_duels_at_target_rate(self):
        cols = batch()
        out = BATEReward(gather=FixedCounts(5, 10))(**cols)  # ρ = ρ̂: no shaping
        s = fidelity_scores(cols["pred_score"], cols["mos"], cols["group"])
        expected = bate_base(s, cols["tool_calls"], cols["group"])
        np.testing.assert_allclose(out, expected)

    def test_shaping_only_for_successful_calls(self):
        cols = batch(tool_successes=[1, 0, 0, 0, 1, 0, 0, 0])  # trajectory 1's call failed
        s = fidelity_scores(cols["pred_score"], cols["mos"], cols["group"])
        base = bate_base(s, cols["tool_calls"], cols["group"])
        out = np.array(BATEReward(gather=FixedCounts(1, 10))(**cols))  # ρ = 0.1: incentive
        assert out[1] == pytest.approx(base[1])
        shaped = out - base
        assert shaped[0] > 0 or shaped[4] > 0
        assert np.all(shaped[[1, 2, 3, 5, 6, 7]] == 0.0)

    def test_penalty_spares_the_best_call(self):
        cols = batch()
        s = fidelity_scores(cols["pred_score"], cols["mos"], cols["group"])
        base = bate_base(s, cols["tool_calls"], cols["group"])
        out = np.array(BATEReward(gather=FixedCounts(9, 10))(**cols))  # ρ = 0.9: penalty
        calls = [0, 1, 4]
        best = calls[int(np.argmax(s[calls]))]
        assert out[best] == pytest.approx(base[best])
        assert all(out[i] < base[i] for i in calls if i != best)

    def test_gather_changes_rho(self):
        cols = batch()
        logged_local: dict[str, float] = {}
        logged_global: dict[str, float] = {}
        local = BATEReward(gather=OtherRank(0, 0))(**cols, log_metric=logged_local.__setitem__)
        glob = BATEReward(gather=OtherRank(8, 8))(**cols, log_metric=logged_global.__setitem__)
        assert logged_local["tools/rate"] == pytest.approx(3 / 8)
        assert logged_global["tools/rate"] == pytest.approx(11 / 16)
        assert logged_local["bate/shaping"] > 0 > logged_global["bate/shaping"]
        assert local != glob

    def test_invalid_trajectories_deterministic_zero(self):
        cols = batch(pred_score=[None, 2.0, 3.5, float("nan"), 1.0, 4.0, 1.5, 2.0])
        r = BATEReward(gather=FixedCounts(1, 10))
        first, second = r(**cols), r(**cols)
        assert first == second
        assert first[0] == 0.0 and first[3] == 0.0

    def test_no_partner_gives_none(self):
        cols = batch(pred_score=[4.5, 2.0, 3.5, 3.0, None, None, None, None])
        out = BATEReward(gather=FixedCounts(5, 10))(**cols)
        assert out[:4] == [None] * 4 and out[4:] == [0.0] * 4

    def test_unknown_kwargs_ignored(self):
        cols = batch()
        r = BATEReward(gather=FixedCounts(2, 10))
        assert r(**cols) == r(**cols, completion_ids=[[0]] * 8, log_extra=print, foo=[1] * 8)

    def test_pickles(self):
        r = BATEReward(gather=OtherRank(3, 4), tau=0.2)
        back = pickle.loads(pickle.dumps(r))
        assert back(**batch()) == r(**batch())
        assert back.__name__ == "bate"
        plain = BATEReward()
        assert pickle.loads(pickle.dumps(plain))(**batch()) == plain(**batch())

    def test_missing_column_message(self):
        cols = batch()
        del cols["tool_successes"]
        with pytest.raises(KeyError, match=r"tool_successes.*rollout"):
            BATEReward()(**cols)


class TestFormat:
    def test_by_hand(self):
        protocol = [
            OK,
            {**OK, "rubric_ok": False},
            {**OK, "repaired": True},
            {**OK, "single_action": False, "answer_tagged": False, "repaired": True},
            dict.fromkeys(OK, False),
            {**OK, "repaired": False},
        ]
        pred = [3.0, 3.0, 3.0, 3.0, 3.0, None]
        out = FormatReward()(pred_score=pred, protocol=protocol)
        assert out == [1.0, 0.75, 0.75, 0.25, 0.0, 0.75]

    def test_missing_check_and_column(self):
        with pytest.raises(KeyError, match="answer_tagged"):
            FormatReward()(pred_score=[1.0], protocol=[{"rubric_ok": True}])
        with pytest.raises(KeyError, match="protocol"):
            FormatReward()(pred_score=[1.0])

    def test_pickles_and_ignores_kwargs(self):
        r = FormatReward(repair_penalty=0.5)
        cols = batch(protocol=[{**OK, "repaired": True}] * 8)
        back = pickle.loads(pickle.dumps(r))
        assert back(**cols) == r(**cols, trainer_state=None) == [0.5] * 8
        assert back.__name__ == "format"


class TestDefaults:
    def test_names_and_weights(self):
        funcs = default_rewards()
        assert [f.__name__ for f in funcs] == ["fidelity", "bate", "format"]
        assert len(REWARD_WEIGHTS_PAPER) == len(funcs)

    def test_doctests(self):
        result = doctest.testmod(rewards, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 10
        assert result.failed == 0


def fidelity_reference(pred, mos, group, eps=EPS, invalid_value=0.0):
    """The fidelity formula written out with loops and the statistics module."""
    images = {}
    for p, m, g in zip(pred, mos, group, strict=True):
        entry = images.setdefault(g, {"mos": m, "scores": []})
        if p is not None and math.isfinite(p):
            entry["scores"].append(p)
    stats_ = {
        g: (
            statistics.fmean(e["scores"]) if e["scores"] else None,
            statistics.variance(e["scores"]) if len(e["scores"]) >= 2 else 0.0,
        )
        for g, e in images.items()
    }
    out = []
    for p, m, g in zip(pred, mos, group, strict=True):
        if p is None or not math.isfinite(p):
            out.append(invalid_value)
            continue
        terms = []
        for h, e in images.items():
            if h == g or not e["scores"]:
                continue
            mu_j, var_j = stats_[h]
            prob = phi((p - mu_j) / math.sqrt(stats_[g][1] + var_j + eps))
            gt = 1.0 if m > e["mos"] else 0.0 if m < e["mos"] else 0.5
            terms.append(fid_term(prob, gt, eps))
        out.append(statistics.fmean(terms) if terms else math.nan)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_fidelity_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    images, k = 7, 4
    mos = np.repeat(rng.integers(1, 4, images).astype(float), k)  # integer MOS: ties happen
    pred = [None if rng.random() < 0.15 else float(x) for x in rng.normal(2.5, 1.0, images * k)]
    pred[k : 2 * k] = [None] * k  # one image with no valid score
    group = np.repeat(np.arange(images), k).tolist()
    got = fidelity_scores(pred, mos, group, invalid_value=-0.25)
    np.testing.assert_allclose(got, fidelity_reference(pred, mos, group, invalid_value=-0.25))
