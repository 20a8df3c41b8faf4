"""GRPO rewards: hand-computed values, properties, TRL contract (kwargs, pickling, names)."""

from __future__ import annotations

import doctest
import itertools
import json
import math
import os
import pickle
import socket
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from scipy.stats import rankdata

from tooliqa.training import rewards
from tooliqa.training.rewards import (
    FORMAT_CHECKS,
    REWARD_WEIGHTS_PAPER,
    SHAPING_STRENGTH,
    BATEReward,
    FidelityReward,
    FormatReward,
    MissingColumnError,
    all_gather_rows,
    all_reduce_counts,
    bate_base,
    default_rewards,
    fidelity_scores,
    global_tool_rate,
    tool_rate,
    tool_rate_shaping,
)

EPS = 1e-6  # VisualQuality-R1 code's ε, the default (rewards.FIDELITY_EPS)
OK = dict.fromkeys(FORMAT_CHECKS, True)


def phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def fid_term(p: float, g: float, eps: float = EPS) -> float:
    return math.sqrt(p * g + eps) + math.sqrt((1.0 - p) * (1.0 - g) + eps)


FID_COLUMNS = ("pred_score", "mos", "group")
BATE_COLUMNS = (*FID_COLUMNS, "tool_calls", "tool_successes")


@dataclass
class OtherRank:
    """A gather that adds the counts of one other process (for ``global_tool_rate``)."""

    used: int
    total: int

    def __call__(self, used: int, total: int) -> tuple[int, int]:
        return used + self.used, total + self.total


@dataclass
class Processes:
    """A rows gather faking the processes of lower rank (``before``) and higher rank (``after``)."""

    before: list[tuple[Any, ...]] = field(default_factory=list)
    after: list[tuple[Any, ...]] = field(default_factory=list)
    calls: int = 0

    def __call__(self, rows):
        self.calls += 1
        return self.before + rows + self.after, len(self.before)


@dataclass
class GlobalCounts:
    """A rows gather padding with another process's trajectories so that the global counts
    (valid tool-invoked, valid) are (used, total). The filler images are distinct from this
    process's: meant for ``scope="local"``, where the other rows only set ρ."""

    used: int
    total: int

    def __call__(self, rows):
        valid = [r[0] is not None and math.isfinite(r[0]) for r in rows]
        used = sum(v and r[3] > 0 for v, r in zip(valid, rows, strict=True))
        extra_used, extra = self.used - used, self.total - sum(valid)
        assert 0 <= extra_used <= extra
        return rows + [(3.0, 3.0, ("filler", i), int(i < extra_used), 0) for i in range(extra)], 0


def split(cols, names, rank_slices, rank):
    """This rank's columns and a gather faking the other ranks, for a batch cut into slices."""
    mine = {k: (v[rank_slices[rank]] if isinstance(v, list) else v) for k, v in cols.items()}

    def rows(sl):
        return list(zip(*(cols[k][sl] for k in names), strict=True))

    before = [row for sl in rank_slices[:rank] for row in rows(sl)]
    after = [row for sl in rank_slices[rank + 1 :] for row in rows(sl)]
    return mine, Processes(before, after)


def cuts(*points: int, n: int = 8) -> list[slice]:
    bounds = [0, *points, n]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


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
        # all right: sqrt(1 + ε) + sqrt(ε) per partner
        np.testing.assert_allclose(got, [1.0 + math.sqrt(EPS)] * 3, atol=1e-5)

    def test_default_eps_is_visualquality_r1s(self):
        assert rewards.FIDELITY_EPS == 1e-6
        assert FidelityReward().eps == BATEReward().eps == 1e-6
        # one sample per image (σ² = 0): ε alone scales z = 0.001 / sqrt(ε) = 1
        got = fidelity_scores([2.001, 2.0], [2.0, 1.0], ["a", "b"])
        z = 0.001 / math.sqrt(1e-6 + 0.0 + 0.0)
        by_hand = math.sqrt(phi(z) * 1.0 + 1e-6) + math.sqrt((1.0 - phi(z)) * 0.0 + 1e-6)
        assert got[0] == pytest.approx(by_hand, rel=1e-12)
        assert got[0] == pytest.approx(0.9172 + 0.001, abs=1e-4)  # sqrt(Φ(1)) + sqrt(ε)
        assert fidelity_scores([2.001, 2.0], [2.0, 1.0], ["a", "b"], eps=1e-8)[0] > 1.0

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


TIE = math.sqrt(0.5)  # sqrt(Φ(0)), eq. 2's value of a duel between equal fidelities


MARGIN = 0.002  # rewards.BATE_MARGIN


def duel_by_hand(t: float, free: list[float], tau: float, base: str) -> float:
    """Eq. 2 for one tool-invoked fidelity t against the tool-free ones, written out."""
    shift = TIE if base == "centred" else 0.0
    return sum(math.sqrt(phi((t - n) / tau)) - shift for n in free) / len(free)


def payoff(d: float, tau: float = 0.1) -> float:
    """The duel payoff v(d) = (sqrt(Φ(d/τ)) − sqrt(Φ(−d/τ))) / 2 of ``base="duel"``."""
    return 0.5 * (math.sqrt(phi(d / tau)) - math.sqrt(phi(-d / tau)))


def two_sided_by_hand(tool: list[float], free: list[float], tau=0.1, margin=MARGIN):
    """``base="duel"`` for one group, written out: (rewards of T, rewards of N)."""
    as_tool = [statistics.fmean(payoff(t - n - margin, tau) for n in free) for t in tool]
    as_free = [-statistics.fmean(payoff(t - n - margin, tau) for t in tool) for n in free]
    return as_tool, as_free


class TestBATEBase:
    def test_duel_both_cohorts_by_hand(self):
        s = [0.9, 0.55, 0.7, 0.5, 0.65]
        got = bate_base(s, [1, 2, 0, 0, 0], ["g"] * 5, tool_successes=[1, 1, 0, 0, 0])
        # v(d) for d = 0.9 − 0.7 − 0.002 = 0.198: (sqrt(Φ(1.98)) − sqrt(Φ(−1.98))) / 2
        v = 0.5 * (
            math.sqrt(0.5 * math.erfc(-1.98 / math.sqrt(2)))
            - math.sqrt(0.5 * math.erfc(1.98 / math.sqrt(2)))
        )
        assert payoff(0.9 - 0.7 - MARGIN) == pytest.approx(v, rel=1e-12)
        as_tool, as_free = two_sided_by_hand([0.9, 0.55], [0.7, 0.5, 0.65])
        np.testing.assert_allclose(got, as_tool + as_free, rtol=1e-12)
        assert got[0] > 0 > got[1]  # the better call wins, the worse one pays
        # every duel is zero-sum: Σ_T r·|N| + Σ_N r·|T| = Σ v − Σ v = 0
        assert 3 * (got[0] + got[1]) + 2 * sum(got[2:]) == pytest.approx(0.0, abs=1e-12)

    def test_duel_margin(self):
        s, calls = [0.6, 0.6], [1, 0]
        tie = bate_base(s, calls, "gg")  # default margin 0.002: a tie costs the call
        assert tie[0] == pytest.approx(payoff(-MARGIN)) and tie[1] == pytest.approx(payoff(MARGIN))
        assert tie[0] < 0 < tie[1] and tie[0] == -tie[1]
        assert list(bate_base(s, calls, "gg", margin=0.0)) == [0.0, 0.0]
        wide = bate_base(s, calls, "gg", margin=0.05)
        # m = 0.05 = τ/2: v(−0.05) = (sqrt(Φ(−0.5)) − sqrt(Φ(0.5))) / 2
        by_hand = 0.5 * (math.sqrt(phi(-0.5)) - math.sqrt(phi(0.5)))
        assert wide[0] == pytest.approx(by_hand, rel=1e-12) and wide[1] == -wide[0]
        assert wide[0] < tie[0]
        # a call must beat the tool-free fidelity by more than m to gain
        assert bate_base([0.61, 0.6], calls, "gg", margin=0.02)[0] < 0
        assert bate_base([0.63, 0.6], calls, "gg", margin=0.02)[0] > 0
        for bad in (-0.01, math.nan, math.inf):
            with pytest.raises(ValueError, match="margin"):
                bate_base(s, calls, "gg", margin=bad)
            with pytest.raises(ValueError, match="margin"):
                BATEReward(margin=bad)

    def test_duel_failed_call_earns_nothing_and_duels_no_one(self):
        s, calls, group = [0.9, 0.3, 0.7, 0.5], [1, 2, 0, 0], ["a"] * 4
        got = bate_base(s, calls, group, tool_successes=[1, 0, 0, 0])  # 2nd: every call failed
        as_tool, as_free = two_sided_by_hand([0.9], [0.7, 0.5])
        np.testing.assert_allclose(got, [as_tool[0], 0.0, *as_free], rtol=1e-12)
        alone = bate_base([0.3, 0.7, 0.5], [2, 0, 0], ["a"] * 3, tool_successes=[0, 0, 0])
        assert list(alone) == [0.0, 0.0, 0.0]  # no successful call: no duel at all

    def test_duel_is_symmetric_in_the_labels(self):
        rng = np.random.default_rng(7)
        s = rng.uniform(0.5, 1.0, 8)
        group = ["a"] * 4 + ["b"] * 4
        calls = np.array([1, 0, 0, 0, 1, 1, 0, 3])  # |T| ≠ |N| in a, |T| = |N| in b
        swapped = np.where(calls > 0, 0, 1)
        got = bate_base(s, calls, group, margin=0.0)
        np.testing.assert_allclose(bate_base(s, swapped, group, margin=0.0), got, rtol=1e-12)
        # mirrored: swapping the cohorts' fidelities negates the rewards
        pair = bate_base([0.8, 0.7], [1, 0], "gg", margin=0.0)
        assert list(bate_base([0.7, 0.8], [1, 0], "gg", margin=0.0)) == list(-pair)
        assert list(bate_base([0.8, 0.7], [0, 1], "gg", margin=0.0)) == list(pair)
        assert pair[0] == pytest.approx(payoff(0.1), rel=1e-12) and pair[1] == -pair[0]
        # the margin handicaps the tool side only
        with_margin = bate_base(s, calls, group)
        assert np.all(with_margin[calls > 0] < got[calls > 0])
        assert np.all(with_margin[calls == 0] > got[calls == 0])

    @pytest.mark.parametrize("base", ["centred", "literal"])
    def test_two_tool_two_free_by_hand(self, base):
        tau = 0.1
        s = [0.9, 0.55, 0.7, 0.5]
        got = bate_base(s, [1, 2, 0, 0], ["g"] * 4, tau=tau, base=base, tool_successes=[1, 1, 0, 0])
        expected = [duel_by_hand(t, [0.7, 0.5], tau, base) for t in (0.9, 0.55)] + [0.0, 0.0]
        np.testing.assert_allclose(got, expected, rtol=1e-12)

    def test_only_within_group(self):
        s, calls, group = [0.9, 0.1, 0.2, 0.95], [1, 0, 1, 0], ["a", "a", "b", "b"]
        duel = bate_base(s, calls, group)
        expected = [payoff(0.8 - MARGIN), -payoff(0.8 - MARGIN)]
        expected += [payoff(-0.75 - MARGIN), -payoff(-0.75 - MARGIN)]
        np.testing.assert_allclose(duel, expected, rtol=1e-12)
        got = bate_base(s, calls, group, tau=0.1, base="centred")
        assert got[0] == pytest.approx(math.sqrt(phi(8.0)) - TIE)
        assert got[2] == pytest.approx(math.sqrt(phi((0.2 - 0.95) / 0.1)) - TIE, rel=1e-9)
        literal = bate_base([0.9, 0.1, 0.2, 0.95], [1, 0, 1, 0], list("aabb"), base="literal")
        np.testing.assert_allclose(literal, got + np.array([TIE, 0, TIE, 0]), rtol=0, atol=1e-12)

    def test_equal_fidelity_loses_the_margin_duel_0_centred_0707_literal(self):
        s, calls = [0.6, 0.6, 0.6], [1, 0, 0]
        duel = bate_base(s, calls, ["a"] * 3)
        np.testing.assert_allclose(duel, [-payoff(MARGIN), payoff(MARGIN), payoff(MARGIN)])
        assert bate_base(s, calls, ["a"] * 3, base="centred")[0] == 0.0
        assert bate_base(s, calls, ["a"] * 3, base="literal")[0] == pytest.approx(0.7071, abs=1e-4)

    def test_failed_call_earns_nothing_centred(self):
        s, calls, group = [0.9, 0.9, 0.2, 0.5], [1, 2, 1, 0], ["a"] * 4
        successes = [1, 0, 0, 0]  # trajectories 1 and 2: every call failed
        got = bate_base(s, calls, group, tool_successes=successes, base="centred")
        assert got[0] == pytest.approx(math.sqrt(phi(4.0)) - TIE)
        assert list(got[1:]) == [0.0, 0.0, 0.0]
        literal = bate_base(s, calls, group, tool_successes=successes, base="literal")
        assert literal[1] == literal[0] > 0.99  # a failed call earns as much as a good one
        assert literal[2] == pytest.approx(math.sqrt(phi(-3.0)))
        # a failed trajectory is not tool-free either: the successful one duels index 3 only
        assert bate_base(s, calls, group, tool_successes=[1, 0, 1, 0], base="centred")[2] < 0

    def test_signs_centred(self):
        win = bate_base([0.8, 0.6], [1, 0], [0, 0], tau=0.01, base="centred")[0]
        lose = bate_base([0.6, 0.8], [1, 0], [0, 0], tau=0.01, base="centred")[0]
        assert win == pytest.approx(1.0 - TIE) and lose == pytest.approx(-TIE, abs=1e-6)

    def test_literal_rewards_any_call(self):
        win = bate_base([0.8, 0.6], [1, 0], [0, 0], tau=0.01, base="literal")[0]
        lose = bate_base([0.6, 0.8], [1, 0], [0, 0], tau=0.01, base="literal")[0]
        assert win > lose
        assert win == pytest.approx(1.0)
        assert lose == pytest.approx(0.0, abs=1e-6)

    def test_no_cohort_value_and_invalid(self):
        for base in ("duel", "centred", "literal"):
            got = bate_base(
                [0.8, 0.6, np.nan], [1, 1, 1], list("aaa"), no_cohort_value=-0.1, base=base
            )
            assert list(got) == [-0.1, -0.1, 0.0]
            free = bate_base([0.8, 0.6, np.nan], [0, 0, 1], list("aaa"), no_cohort_value=-0.1)
            assert list(free) == [0.0, 0.0, 0.0]  # tool-free without an opponent: nothing

    def test_rejects_unknown_base(self):
        with pytest.raises(ValueError, match="duel"):
            bate_base([0.5], [1], ["a"], base="zero-sum")
        with pytest.raises(ValueError, match="centred"):
            bate_base([0.5], [1], ["a"], base="centered")
        with pytest.raises(ValueError, match="literal"):
            BATEReward(base="raw")


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
        assert 0 < float(tool_rate_shaping(0.499, 1.0)) < 0.02 * SHAPING_STRENGTH

    def test_default_strength_lets_the_duels_decide(self):
        assert SHAPING_STRENGTH == 0.02
        assert BATEReward().strength == SHAPING_STRENGTH
        in_band = float(tool_rate_shaping(0.36, 1.0))
        assert in_band == pytest.approx(0.02 * (2 / (1 + math.exp(-4 * 0.14 / 0.15)) - 1))

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
        rows = [(0.5, 3.0, "a"), (None, 3.0, "a")]
        gathered, offset = all_gather_rows(rows)
        assert gathered is rows and offset == 0

    def test_tool_rate(self):
        assert tool_rate([3.0, None, float("nan"), 2.0], [1, 1, 1, 0]) == 0.5
        assert tool_rate([None], [1]) is None

    def test_import_does_not_load_torch(self):
        code = "import sys, tooliqa.training.rewards; assert 'torch' not in sys.modules"
        subprocess.run([sys.executable, "-c", code], check=True)


def hand_batch(**overrides):
    """Two images x 3: A (MOS 4) and B (MOS 2); A's third trajectory's tool call failed."""
    cols = {
        "pred_score": [3.8, 3.0, 2.5, 2.2, 3.0, 2.0],
        "mos": [4.0] * 3 + [2.0] * 3,
        "group": ["A"] * 3 + ["B"] * 3,
        "tool_calls": [1, 0, 2, 0, 1, 0],
        "tool_successes": [1, 0, 0, 0, 1, 0],
    }
    cols.update(overrides)
    return cols


def hand_fidelity(pred):
    """VisualQuality-R1's fidelity of ``hand_batch`` at ε = 1e-6, one partner image each."""
    eps = 1e-6
    a, b = pred[:3], pred[3:]
    mu_a, mu_b = statistics.fmean(a), statistics.fmean(b)
    den = math.sqrt(statistics.variance(a) + statistics.variance(b) + eps)
    up = [fid_term(phi((x - mu_b) / den), 1.0, eps) for x in a]  # MOS_A > MOS_B: g = 1
    down = [fid_term(phi((x - mu_a) / den), 0.0, eps) for x in b]  # g = 0
    return up + down


class TestBATEReward:
    def test_duel_by_hand_at_the_target_rate(self):
        cols = hand_batch()  # ρ = 3 tool-invoked / 6 valid = ρ̂: no shaping, the duels alone
        s = hand_fidelity(cols["pred_score"])
        (a_tool,), (a_free,) = two_sided_by_hand([s[0]], [s[1]])  # A's 3rd call failed
        (b_tool,), b_free = two_sided_by_hand([s[4]], [s[3], s[5]])
        expected = [a_tool, a_free, 0.0, b_free[0], b_tool, b_free[1]]
        out = BATEReward()(**cols)
        assert out == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert out[0] > 0 > out[1] and out[2] == 0.0  # A's call beat tool-free; failed: 0
        assert out[4] < 0 < out[3]  # B's call lost: its tool-free peers gain
        m = 0.03
        (wide,), _ = two_sided_by_hand([s[0]], [s[1]], margin=m)
        assert BATEReward(margin=m)(**cols)[0] == pytest.approx(wide, rel=1e-9)

    @pytest.mark.parametrize("base", ["centred", "literal"])
    def test_by_hand_at_the_target_rate(self, base):
        cols = hand_batch()  # ρ = 3 tool-invoked / 6 valid = ρ̂: no shaping, eq. 2 alone
        s = hand_fidelity(cols["pred_score"])
        failed = duel_by_hand(s[2], [s[1]], 0.1, base) if base == "literal" else 0.0
        expected = [
            duel_by_hand(s[0], [s[1]], 0.1, base),
            0.0,
            failed,
            0.0,
            duel_by_hand(s[4], [s[3], s[5]], 0.1, base),
            0.0,
        ]
        out = BATEReward(base=base)(**cols)
        assert out == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert fidelity_scores(cols["pred_score"], cols["mos"], cols["group"]) == pytest.approx(s)
        if base == "centred":
            assert out[2] == 0.0 and out[0] > 0 > out[4]  # A's call beat tool-free, B's lost
        else:
            assert min(out[0], out[2], out[4]) > 0  # every call earns, even the failed one

    @pytest.mark.parametrize("base", ["centred", "literal"])
    def test_by_hand_with_threefold_penalty(self, base):
        cols = hand_batch(tool_calls=[1, 0, 2, 0, 1, 1], tool_successes=[1, 0, 0, 0, 1, 1])
        s = hand_fidelity(cols["pred_score"])
        rho = 4 / 6  # > 0.65: penalty, threefold
        magnitude = 0.02 * 3.0 * (2.0 / (1.0 + math.exp(-4.0 * (rho - 0.5) / 0.15)) - 1.0)
        shaped = [0, 4, 5]  # trajectories with a successful call
        order = sorted(shaped, key=lambda i: s[i])
        rank = {i: order.index(i) / (len(shaped) - 1) for i in shaped}
        expected = [0.0] * 6
        expected[0] = duel_by_hand(s[0], [s[1]], 0.1, base)
        expected[2] = duel_by_hand(s[2], [s[1]], 0.1, base) if base == "literal" else 0.0
        expected[4] = duel_by_hand(s[4], [s[3]], 0.1, base)
        expected[5] = duel_by_hand(s[5], [s[3]], 0.1, base)
        for i in shaped:
            expected[i] -= magnitude * (1.0 - rank[i])
        logged: dict[str, float] = {}
        out = BATEReward(base=base)(**cols, log_metric=logged.__setitem__)
        assert out == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert logged["tools/rate"] == pytest.approx(rho)

    def test_tool_free_get_their_duels_only(self):
        cols = batch()
        free = [i for i, c in enumerate(cols["tool_calls"]) if c == 0]
        for kind in ("centred", "literal"):
            out = BATEReward(gather=GlobalCounts(3, 30), scope="local", base=kind)(**cols)
            assert all(out[i] == 0.0 for i in free)
        out = BATEReward(gather=GlobalCounts(3, 30), scope="local")(**cols)  # ρ = 0.1: incentive
        s = fidelity_scores(cols["pred_score"], cols["mos"], cols["group"])
        base = bate_base(s, cols["tool_calls"], cols["group"])
        assert all(out[i] == base[i] != 0.0 for i in free)  # the duels' other side, no shaping

    def test_base_matches_duels_at_target_rate(self):
        cols = batch()
        out = BATEReward(gather=GlobalCounts(5, 10), scope="local")(**cols)  # ρ = ρ̂: no shaping
        s = fidelity_scores(cols["pred_score"], cols["mos"], cols["group"])
        expected = bate_base(s, cols["tool_calls"], cols["group"])
        np.testing.assert_allclose(out, expected)

    def test_shaping_only_for_successful_calls(self):
        cols = batch(tool_successes=[1, 0, 0, 0, 1, 0, 0, 0])  # trajectory 1's call failed
        s = fidelity_scores(cols["pred_score"], cols["mos"], cols["group"])
        for kind in ("duel", "centred", "literal"):
            base = bate_base(
                s,
                cols["tool_calls"],
                cols["group"],
                base=kind,
                tool_successes=cols["tool_successes"],
            )
            r = BATEReward(gather=GlobalCounts(3, 30), scope="local", base=kind)  # ρ = 0.1
            out = np.array(r(**cols))
            assert out[1] == pytest.approx(base[1])
            assert (out[1] == 0.0) == (kind != "literal")  # a failed call earns nothing
            shaped = out - base
            assert shaped[0] > 0 or shaped[4] > 0
            assert np.all(shaped[[1, 2, 3, 5, 6, 7]] == 0.0)

    def test_penalty_spares_the_best_call(self):
        cols = batch()
        s = fidelity_scores(cols["pred_score"], cols["mos"], cols["group"])
        base = bate_base(s, cols["tool_calls"], cols["group"])
        out = np.array(BATEReward(gather=GlobalCounts(45, 50), scope="local")(**cols))  # ρ = 0.9
        calls = [0, 1, 4]
        best = calls[int(np.argmax(s[calls]))]
        assert out[best] == pytest.approx(base[best])
        assert all(out[i] < base[i] for i in calls if i != best)

    def test_gather_changes_rho(self):
        cols = batch()
        logged_local: dict[str, float] = {}
        logged_global: dict[str, float] = {}
        other = [(3.0, 3.0, ("other", i), 1, 1) for i in range(8)]  # 8 of 8 tool-invoked
        local = BATEReward(gather=Processes(), scope="local")(
            **cols, log_metric=logged_local.__setitem__
        )
        glob = BATEReward(gather=Processes(after=other), scope="local")(
            **cols, log_metric=logged_global.__setitem__
        )
        assert logged_local["tools/rate"] == pytest.approx(3 / 8)
        assert logged_global["tools/rate"] == pytest.approx(11 / 16)
        assert logged_local["bate/shaping"] > 0 > logged_global["bate/shaping"]
        assert local != glob

    def test_invalid_trajectories_deterministic_zero(self):
        cols = batch(pred_score=[None, 2.0, 3.5, float("nan"), 1.0, 4.0, 1.5, 2.0])
        r = BATEReward(gather=GlobalCounts(2, 20), scope="local")
        first, second = r(**cols), r(**cols)
        assert first == second
        assert first[0] == 0.0 and first[3] == 0.0

    def test_no_partner_gives_none(self):
        cols = batch(pred_score=[4.5, 2.0, 3.5, 3.0, None, None, None, None])
        out = BATEReward(gather=GlobalCounts(5, 10), scope="local")(**cols)
        assert out[:4] == [None] * 4 and out[4:] == [0.0] * 4

    def test_unknown_kwargs_ignored(self):
        cols = batch()
        r = BATEReward(gather=GlobalCounts(3, 10))
        assert r(**cols) == r(**cols, completion_ids=[[0]] * 8, log_extra=print, foo=[1] * 8)

    def test_pickles(self):
        other = [(3.0, 3.0, "c", 1, 1)] * 3 + [(2.0, 3.0, "c", 0, 0)]
        r = BATEReward(gather=Processes(after=other), tau=0.2)
        back = pickle.loads(pickle.dumps(r))
        assert back(**batch()) == r(**batch())
        assert back.__name__ == "bate"
        literal = BATEReward(base="literal")
        back = pickle.loads(pickle.dumps(literal))
        assert back.base == "literal" and back(**batch()) == literal(**batch())
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
            {**OK, "thinking": False},  # a reply without a thinking block
            {**OK, "single_action": False},  # a tool call and an answer in one turn
            {**OK, "tool_calls_valid": False},  # an unreadable tool call
        ]
        pred = [3.0, 3.0, 3.0, 3.0, 3.0, None, 3.0, 3.0, 3.0]
        out = FormatReward()(pred_score=pred, protocol=protocol)
        five = 5 / 6
        assert out == pytest.approx([1.0, five, 0.75, 4 / 6 - 0.25, 0.0, five, five, five, five])

    def test_every_check_counts(self):
        assert set(FORMAT_CHECKS) == {
            "rubric_ok",
            "thinking",
            "single_action",
            "tool_calls_valid",
            "answer_tagged",
            "score_in_range",
        }
        for check in FORMAT_CHECKS:
            assert FormatReward()(pred_score=[3.0], protocol=[{**OK, check: False}]) == [
                pytest.approx(5 / 6)
            ]

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

    def test_bate_base_is_duel_unless_asked(self):
        assert BATEReward().base == default_rewards()[1].base == "duel"
        assert BATEReward().margin == default_rewards()[1].margin == rewards.BATE_MARGIN == 0.002
        assert default_rewards(base="literal")[1].base == "literal"
        assert default_rewards(margin=0.01)[1].margin == 0.01

    def test_doctests(self):
        result = doctest.testmod(rewards, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 10
        assert result.failed == 0


def fidelity_reference(pred, mos, group, eps=EPS, invalid_value=0.0):
    """The fidelity formula written out with loops and the statistics module."""
    images: dict[Any, dict[str, Any]] = {}
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


@pytest.mark.parametrize("seed", range(3))
def test_fidelity_subset_is_a_slice_of_the_whole(seed):
    rng = np.random.default_rng(seed)
    images, k = 6, 4
    mos = np.repeat(rng.integers(1, 4, images).astype(float), k)
    pred = [None if rng.random() < 0.2 else float(x) for x in rng.normal(2.5, 1.0, images * k)]
    group = np.repeat(np.arange(images), k).tolist()
    whole = fidelity_scores(pred, mos, group)
    for sl in (slice(0, 4), slice(3, 17), slice(20, 24), slice(5, 5), slice(None)):
        np.testing.assert_allclose(fidelity_scores(pred, mos, group, subset=sl), whole[sl])
    with pytest.raises(ValueError, match="contiguous"):
        fidelity_scores(pred, mos, group, subset=slice(0, 8, 2))


class TestAcrossProcesses:
    """The global scope: rows of the other processes faked by an injected gather."""

    def test_single_image_process_gets_finite_fidelity(self):
        full = batch()
        whole = FidelityReward()(**full)  # one process holding the whole batch
        for rank, sl in enumerate(cuts(4)):  # one image per process
            mine, gather = split(full, FID_COLUMNS, cuts(4), rank)
            out = FidelityReward(gather=gather)(**mine)
            assert all(x is not None and math.isfinite(x) for x in out)
            assert out == pytest.approx(whole[sl], rel=1e-12)
            assert gather.calls == 1
            # per process there is no partner image
            assert FidelityReward(scope="local", gather=gather)(**mine) == [None] * 4
            assert gather.calls == 1  # local scope makes no collective

    @pytest.mark.parametrize("points", [(4,), (1,), (3,), (6,), (2, 5), (4, 4), (1, 2, 7)])
    def test_fidelity_is_the_slice_of_the_global_computation(self, points):
        full = batch(pred_score=[4.5, None, 3.5, 3.0, 1.0, 4.0, float("nan"), 2.0])
        whole = fidelity_scores(full["pred_score"], full["mos"], full["group"])
        slices = cuts(*points)
        for rank, sl in enumerate(slices):
            mine, gather = split(full, FID_COLUMNS, slices, rank)
            out = FidelityReward(gather=gather)(**mine)
            expected = [None if np.isnan(x) else x for x in whole[sl]]
            assert out == pytest.approx(expected, rel=1e-12)

    @pytest.mark.parametrize("points", [(4,), (1,), (3,), (6,), (2, 5), (1, 2, 7)])
    @pytest.mark.parametrize("rho", ["incentive", "penalty"])
    def test_bate_is_the_slice_of_the_global_computation(self, points, rho):
        calls = [1, 2, 0, 0, 1, 0, 0, 0] if rho == "incentive" else [1, 2, 1, 0, 1, 1, 2, 0]
        full = batch(tool_calls=calls, tool_successes=[min(c, 1) for c in calls])
        logged_whole: dict[str, float] = {}
        whole = BATEReward()(**full, log_metric=logged_whole.__setitem__)
        assert (logged_whole["bate/shaping"] > 0) == (rho == "incentive")
        slices = cuts(*points)
        for rank, sl in enumerate(slices):
            mine, gather = split(full, BATE_COLUMNS, slices, rank)
            logged: dict[str, float] = {}
            out = BATEReward(gather=gather)(**mine, log_metric=logged.__setitem__)
            assert out == pytest.approx(whole[sl], rel=1e-12)
            assert logged == pytest.approx(logged_whole, rel=1e-12)  # global ρ and shaping
            assert gather.calls == 1

    def test_bate_single_image_per_process(self):
        full = batch()
        whole = BATEReward()(**full)
        for rank, sl in enumerate(cuts(4)):
            mine, gather = split(full, BATE_COLUMNS, cuts(4), rank)
            out = BATEReward(gather=gather)(**mine)
            assert all(x is not None for x in out)
            assert out == pytest.approx(whole[sl], rel=1e-12)
            local = BATEReward(gather=gather, scope="local")(**mine)
            assert [x is None for x in local] == [p is not None for p in mine["pred_score"]]

    def test_local_scope_is_the_per_process_computation(self):
        full = batch()
        mine, gather = split(full, BATE_COLUMNS, cuts(6), 0)  # image a and half of b
        fid = FidelityReward(scope="local", gather=gather)(**mine)
        assert gather.calls == 0
        local_s = fidelity_scores(mine["pred_score"], mine["mos"], mine["group"])
        assert fid == pytest.approx(list(local_s), rel=1e-12)

        out = np.array(BATEReward(scope="local", gather=gather)(**mine))
        assert gather.calls == 1  # for ρ only
        rho = tool_rate(full["pred_score"], full["tool_calls"])  # global: 3 of 8
        assert rho == pytest.approx(3 / 8)
        base = bate_base(local_s, mine["tool_calls"], mine["group"])
        shaped = [i for i, n in enumerate(mine["tool_successes"]) if n > 0]
        ranks = (rankdata(local_s[shaped]) - 1) / (len(shaped) - 1)
        expected = base.copy()
        expected[shaped] += tool_rate_shaping(rho, ranks)
        np.testing.assert_allclose(out, expected, rtol=1e-12)
        # and not the global slice
        assert not np.allclose(out, BATEReward()(**full)[:6])

    def test_middle_rank_of_three(self):
        full = batch()
        whole_f, whole_b = FidelityReward()(**full), BATEReward()(**full)
        slices = cuts(2, 5)
        mine_f, gather_f = split(full, FID_COLUMNS, slices, 1)
        mine_b, gather_b = split(full, BATE_COLUMNS, slices, 1)
        assert FidelityReward(gather=gather_f)(**mine_f) == pytest.approx(whole_f[2:5])
        assert BATEReward(gather=gather_b)(**mine_b) == pytest.approx(whole_b[2:5])

    def test_default_rewards_pass_gather_and_scope(self):
        full = batch()
        mine, _ = split(full, BATE_COLUMNS, cuts(4), 0)
        gather = Processes(after=[(1.0, 1.0, "b")] * 2)  # fidelity rows only
        fid, bate, _fmt = default_rewards(gather=gather, scope="local")
        assert fid.scope == bate.scope == "local" and fid.gather is bate.gather is gather
        fid(**mine)
        assert gather.calls == 0
        assert all(r.scope == "global" for r in default_rewards()[:2])

    def test_bad_gather_output_and_scope(self):
        cols = batch()
        with pytest.raises(ValueError, match="offset"):
            FidelityReward(gather=lambda rows: (rows, 3))(**cols)
        with pytest.raises(ValueError, match="offset"):
            FidelityReward(gather=lambda rows: (rows[:4], 0))(**cols)
        with pytest.raises(ValueError, match="columns"):
            BATEReward(gather=lambda rows: ([r[:3] for r in rows], 0))(**cols)
        with pytest.raises(ValueError, match="scope"):
            FidelityReward(scope="world")
        with pytest.raises(ValueError, match="scope"):
            BATEReward(scope="all")

    def test_colliding_group_ids_with_different_mos_are_caught(self):
        full = batch(group=[0] * 4 + [1] * 4)
        mine, _ = split(full, FID_COLUMNS, cuts(4), 0)
        other = [(2.0, 2.5, 0)] * 4  # another process's image also numbered 0
        with pytest.raises(ValueError, match="single MOS"):
            FidelityReward(gather=Processes(after=other))(**mine)

    def test_pickles_with_scope(self):
        r = FidelityReward(scope="local", gather=Processes())
        back = pickle.loads(pickle.dumps(r))
        assert back.scope == "local" and back(**batch()) == r(**batch())


def _gloo_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """One process of the real two-process run: computes the rewards on its slice."""
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        full = batch()
        results = {}
        for points in ((4,), (3,)):  # one image each; then group a split over both ranks
            sl = cuts(*points)[rank]
            mine = {k: (v[sl] if isinstance(v, list) else v) for k, v in full.items()}
            logged: dict[str, float] = {}
            fid, bate, fmt = default_rewards()
            results[str(points)] = {
                "fidelity": fid(**mine),
                "bate": bate(**mine, log_metric=logged.__setitem__),
                "format": fmt(**mine),
                "local": FidelityReward(scope="local")(**mine),
                "logged": logged,
            }
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(results, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_real_processes_with_gloo(tmp_path):
    pytest.importorskip("torch")
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is unavailable")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gloo_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    assert not dist.is_initialized()  # the parent never joined a group

    full = batch()
    logged_whole: dict[str, float] = {}
    whole = {
        "fidelity": FidelityReward()(**full),
        "bate": BATEReward()(**full, log_metric=logged_whole.__setitem__),
    }
    for rank in range(2):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for points in ((4,), (3,)):
            got = results[str(points)]
            sl = cuts(*points)[rank]
            assert got["fidelity"] == pytest.approx(whole["fidelity"][sl], rel=1e-12)
            assert got["bate"] == pytest.approx(whole["bate"][sl], rel=1e-12)
            assert got["logged"] == pytest.approx(logged_whole, rel=1e-12)
            assert got["format"] == [1.0] * (sl.stop - sl.start)
        # per process, rank 0's single image has no partner
        assert results["(4,)"]["local"] == [None] * 4
