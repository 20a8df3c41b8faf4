"""Correlation metrics and logistic fits checked against hand-computed values."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import optimize

from tooliqa.eval import metrics
from tooliqa.eval.metrics import (
    LogisticFit,
    evaluate,
    fit_logistic,
    krcc,
    logistic_4pl,
    logistic_5pl,
    plcc,
    rmse,
    srcc,
)

# -- plain metrics ---------------------------------------------------------------


def test_srcc_monotone_and_reversed() -> None:
    x = [1, 2, 3, 4, 5]
    assert srcc(x, [2, 4, 8, 16, 32]) == pytest.approx(1.0)
    assert srcc(x, [32, 16, 8, 4, 2]) == pytest.approx(-1.0)


def test_srcc_hand_computed() -> None:
    # ranks differ by d = (-1, 1, -1, 1, 0): rho = 1 - 6 * 4 / (5 * 24) = 0.8
    assert srcc([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)


def test_krcc_hand_computed() -> None:
    # 6 pairs, one discordant: (5 - 1) / 6
    assert krcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # tau-b with one tie in x: 5 concordant, 0 discordant -> 5 / sqrt(5 * 6)
    assert krcc([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    assert krcc([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_plcc_hand_computed() -> None:
    assert plcc([1, 2, 3, 4], [3, 5, 7, 9]) == pytest.approx(1.0)
    # centred (-1, 0, 1) and (-1, 1, 0): cov 1, variances 2 and 2
    assert plcc([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert plcc([1, 2, 3, 4], [9, 7, 5, 3]) == pytest.approx(-1.0)


def test_rmse_hand_computed() -> None:
    assert rmse([1, 2, 3], [2, 2, 5]) == pytest.approx(math.sqrt(5 / 3))
    assert rmse([1.5], [1.5]) == 0.0


def test_plain_metrics_undefined_give_none() -> None:
    for fn in (srcc, krcc, plcc):
        assert fn([1, 2], [1, 2]) is None
        assert fn([1, 1, 1], [1, 2, 3]) is None
        assert fn([1, 2, 3], [2, 2, 2]) is None
        assert fn([1, 2, float("nan")], [1, 2, 3]) is None
    assert rmse([], []) is None
    assert rmse([1, float("nan")], [1, 2]) is None


def test_mismatched_lengths_raise() -> None:
    for fn in (srcc, krcc, plcc, rmse):
        with pytest.raises(ValueError, match="length"):
            fn([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="length"):
        evaluate([1, 2, 3, 4], [1, 2, 3])


# -- logistic fits -------------------------------------------------------------------


def test_logistic_formulas() -> None:
    # 4PL: midpoint at b3, asymptotes b2 (left) and b1 (right); |b4| is used
    assert logistic_4pl(3.0, 5.0, 1.0, 3.0, 0.5) == pytest.approx(3.0)
    assert logistic_4pl(3.0, 5.0, 1.0, 3.0, -0.5) == pytest.approx(3.0)
    assert logistic_4pl(1e6, 5.0, 1.0, 3.0, 0.5) == pytest.approx(5.0)
    assert logistic_4pl(-1e6, 5.0, 1.0, 3.0, 0.5) == pytest.approx(1.0)
    x = 2.2
    expected = (5.0 - 1.0) / (1 + math.exp(-(x - 3.0) / 0.5)) + 1.0
    assert logistic_4pl(x, 5.0, 1.0, 3.0, 0.5) == pytest.approx(expected)
    # 5PL: b1 (0.5 - 1 / (1 + exp(b2 (x - b3)))) + b4 x + b5
    expected = 2.0 * (0.5 - 1 / (1 + math.exp(1.5 * (x - 3.0)))) + 0.1 * x + 2.0
    assert logistic_5pl(x, 2.0, 1.5, 3.0, 0.1, 2.0) == pytest.approx(expected)
    assert logistic_5pl(3.0, 2.0, 1.5, 3.0, 0.1, 2.0) == pytest.approx(0.3 + 2.0)


TRUE_4PL = (4.8, 1.2, 3.0, 0.5)
TRUE_5PL = (2.5, 1.8, 3.0, 0.25, 2.2)


@pytest.fixture
def xs() -> np.ndarray:
    return np.random.default_rng(1).uniform(0.0, 6.0, 300)


def test_4pl_recovers_parameters_noise_free(xs: np.ndarray) -> None:
    fit = fit_logistic(xs, logistic_4pl(xs, *TRUE_4PL), 4)
    assert fit.ok and fit.kind == "4pl" and fit.message == ""
    assert fit.params == pytest.approx(TRUE_4PL, abs=1e-4)


def test_5pl_recovers_parameters_noise_free(xs: np.ndarray) -> None:
    fit = fit_logistic(xs, logistic_5pl(xs, *TRUE_5PL), 5)
    assert fit.ok and fit.kind == "5pl"
    assert fit.params == pytest.approx(TRUE_5PL, abs=1e-4)
    grid = np.linspace(0, 6, 50)
    assert np.allclose(fit.predict(grid), logistic_5pl(grid, *TRUE_5PL), atol=1e-5)


def test_fits_recover_parameters_with_light_noise(xs: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    y4 = logistic_4pl(xs, *TRUE_4PL) + rng.normal(0, 0.05, xs.size)
    fit4 = fit_logistic(xs, y4, 4)
    assert fit4.ok
    assert fit4.params == pytest.approx(TRUE_4PL, abs=0.06)
    y5 = logistic_5pl(xs, *TRUE_5PL) + rng.normal(0, 0.05, xs.size)
    fit5 = fit_logistic(xs, y5, 5)
    assert fit5.ok
    assert fit5.params == pytest.approx(TRUE_5PL, abs=0.1)
    grid = np.linspace(0.2, 5.8, 50)
    assert np.max(np.abs(fit5.predict(grid) - logistic_5pl(grid, *TRUE_5PL))) < 0.05


def test_fit_is_monotone_and_does_not_flip_anticorrelated_data(xs: np.ndarray) -> None:
    y = logistic_4pl(xs, *TRUE_4PL)
    for k in (4, 5):
        fit = fit_logistic(xs, -y, k)
        assert not fit.ok
        assert "collapsed" in fit.message
        assert fit.params is None
        assert np.array_equal(fit.predict([1.0, 2.0]), [1.0, 2.0])  # identity fallback


TRUE_INV_S = (-3.0, 1.5, 3.0, 1.3, 3.0)
"""Inverse S: b1 * b2 < 0, and b4 = 1.3 > |b1| b2 / 4 = 1.125 keeps it rising (slope 0.175
at the centre, 1.3 at the tails)."""


def _restricted_5pl_plcc(x: np.ndarray, y: np.ndarray) -> float:
    """Best PLCC of a 5PL fitted with b1, b2, b4 >= 0 (the old, S-only family)."""
    best = -1.0
    for c, s in ((np.median(x), x.std()), (np.median(x), x.std() / 4), (x.mean(), x.std() / 2)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, _ = optimize.curve_fit(
                logistic_5pl,
                x,
                y,
                p0=[np.ptp(y), 1 / s, c, 0.1, y.mean()],
                bounds=([0, 0, -np.inf, 0, -np.inf], [np.inf] * 5),
                maxfev=20000,
            )
        best = max(best, plcc(logistic_5pl(x, *popt), y) or -1.0)
    return best


@pytest.mark.parametrize(
    "x",
    [
        np.random.default_rng(1).uniform(0.0, 6.0, 300),
        3.0 + np.random.default_rng(2).standard_t(3, 300),  # heavy-tailed predictions
    ],
    ids=["uniform", "heavy-tailed"],
)
def test_5pl_fits_inverse_s_data(x: np.ndarray) -> None:
    y = logistic_5pl(x, *TRUE_INV_S) + np.random.default_rng(7).normal(0, 0.05, x.size)
    fit = fit_logistic(x, y, 5)
    assert fit.ok and fit.direction == "increasing"
    assert fit.params is not None and fit.params[0] * fit.params[1] < 0  # inverse S
    grid = np.linspace(x.min(), x.max(), 400)
    assert np.all(np.diff(fit.predict(grid)) >= 0)
    got = plcc(fit.predict(x), y)
    truth = plcc(logistic_5pl(x, *TRUE_INV_S), y)
    assert got is not None and truth is not None
    assert got >= truth - 1e-6
    assert got > _restricted_5pl_plcc(x, y) + 0.01  # the S-only family falls short


@pytest.mark.parametrize("k", [4, 5])
def test_fit_follows_a_decreasing_relation(xs: np.ndarray, k: int) -> None:
    y = 6.0 - logistic_4pl(xs, *TRUE_4PL)  # falls from 4.8 to 1.2
    grid = np.linspace(xs.min(), xs.max(), 200)
    for direction in ("decreasing", "auto"):
        fit = fit_logistic(xs, y, k, direction=direction)
        assert fit.ok and fit.direction == "decreasing"
        assert np.all(np.diff(fit.predict(grid)) <= 0)
        assert plcc(fit.predict(xs), y) == pytest.approx(1.0, abs=1e-6)  # fitted values track MOS
    if k == 4:
        assert fit.params == pytest.approx((1.2, 4.8, 3.0, 0.5), abs=1e-4)
    assert not fit_logistic(xs, y, k).ok  # the default stays increasing
    assert fit_logistic(xs, -y, k, direction="auto").direction == "increasing"


def test_5pl_fits_decreasing_inverse_s(xs: np.ndarray) -> None:
    y = -logistic_5pl(xs, *TRUE_INV_S) + np.random.default_rng(3).normal(0, 0.05, xs.size)
    fit = fit_logistic(xs, y, 5, direction="decreasing")
    assert fit.ok and fit.direction == "decreasing"
    assert np.all(np.diff(fit.predict(np.linspace(xs.min(), xs.max(), 400))) <= 0)
    got, truth = plcc(fit.predict(xs), y), plcc(-logistic_5pl(xs, *TRUE_INV_S), y)
    assert got is not None and truth is not None and got >= truth - 1e-6


def test_5pl_on_exactly_linear_data_is_the_line(xs: np.ndarray) -> None:
    y = 0.7 * xs + 1.1
    fit = fit_logistic(xs, y, 5)
    assert fit.ok and fit.params is not None and fit.params[0] == 0.0  # closed form, no search
    assert np.allclose(fit.predict(xs), y, atol=1e-9)


def test_fit_rejects_unknown_direction() -> None:
    with pytest.raises(ValueError, match="direction"):
        fit_logistic([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], 5, direction="up")


def test_fit_rejects_degenerate_input() -> None:
    assert not fit_logistic([1, 2, 3], [1, 2, 3], 5).ok
    assert "too few" in fit_logistic([1, 2, 3], [1, 2, 3], 5).message
    assert "constant" in fit_logistic([2, 2, 2, 2], [1, 2, 3, 4], 4).message
    assert "NaN" in fit_logistic([1, 2, np.nan, 4], [1, 2, 3, 4], 4).message
    with pytest.raises(ValueError):
        fit_logistic([1, 2, 3, 4], [1, 2, 3, 4], 3)


# -- evaluate ------------------------------------------------------------------------


def test_evaluate_after_fit_beats_raw_on_logistic_data(xs: np.ndarray) -> None:
    y = logistic_4pl(xs, *TRUE_4PL)
    m = evaluate(xs, y, fit="4pl")
    assert m.fit == "4pl" and m.fit_requested == "4pl"
    assert m.srcc == pytest.approx(1.0)
    assert m.krcc == pytest.approx(1.0)
    assert m.plcc == pytest.approx(1.0, abs=1e-8)
    assert m.rmse == pytest.approx(0.0, abs=1e-6)
    assert m.plcc_raw is not None and m.plcc_raw < 0.99
    assert m.plcc_basis == "after a 4-parameter logistic fit"
    assert m.fit_params == pytest.approx(TRUE_4PL, abs=1e-4)
    assert m.message == ""
    m5 = evaluate(xs, y)  # default 5PL
    assert m5.fit == "5pl" and len(m5.fit_params or ()) == 5
    assert m5.plcc == pytest.approx(1.0, abs=1e-3)


def test_evaluate_without_fit_uses_raw_values() -> None:
    m = evaluate([1, 2, 3], [1, 3, 2], fit="none")
    assert (m.n, m.fit, m.plcc, m.plcc_raw) == (3, "none", pytest.approx(0.5), pytest.approx(0.5))
    assert m.rmse == pytest.approx(math.sqrt(2 / 3))
    assert m.plcc_basis == "on raw predictions (no fit)"


def test_evaluate_keeps_negative_signs(xs: np.ndarray) -> None:
    y = logistic_4pl(xs, *TRUE_4PL)
    m = evaluate(xs, -y, fit="5pl")
    assert m.srcc == pytest.approx(-1.0)
    assert m.krcc == pytest.approx(-1.0)
    assert m.plcc is not None and m.plcc < -0.9
    assert m.fit == "none" and "raw PLCC" in m.message


def test_evaluate_falls_back_to_raw_plcc_when_fit_fails(monkeypatch) -> None:
    def failing(pred, mos, params=5, **kw):
        return LogisticFit(f"{params}pl", None, False, "5-parameter logistic fit failed: boom")

    monkeypatch.setattr(metrics, "fit_logistic", failing)
    pred = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    mos = [1.2, 1.9, 3.5, 3.6, 4.4, 4.9]
    m = evaluate(pred, mos, fit="5pl")
    assert m.fit == "none" and m.fit_requested == "5pl"
    assert m.plcc == pytest.approx(plcc(pred, mos))
    assert m.fit_params is None
    assert "boom" in m.message and "raw PLCC/RMSE reported" in m.message


@pytest.mark.parametrize(
    ("pred", "mos", "needle"),
    [
        ([1.0, 2.0], [1.0, 2.0], "too few points"),
        ([], [], "too few points"),
        ([1.0, 2.0, float("nan"), 4.0], [1.0, 2.0, 3.0, 4.0], "NaN"),
        ([1.0, 2.0, 3.0, 4.0], [1.0, float("inf"), 3.0, 4.0], "NaN or infinite"),
        ([3.0, 3.0, 3.0, 3.0], [1.0, 2.0, 3.0, 4.0], "predictions are constant"),
        ([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0], "MOS values are constant"),
    ],
)
def test_evaluate_degenerate_gives_none_and_message(pred, mos, needle) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning / ConstantInputWarning leaks
        m = evaluate(pred, mos, fit="5pl", bootstrap=20)
    assert (m.srcc, m.krcc, m.plcc, m.rmse) == (None, None, None, None)
    assert not m.ok
    assert needle in m.message
    assert m.n == len(pred)
    assert m.ci == {}


def test_evaluate_too_few_points_for_the_fit() -> None:
    m = evaluate([1, 2, 3, 4], [1, 3, 2, 4], fit="5pl")
    assert m.srcc == pytest.approx(0.8)
    assert m.krcc == pytest.approx(2 / 3)
    assert m.plcc is None and m.rmse is None
    assert "too few points for a 5-parameter" in m.message
    m4 = evaluate([1, 2, 3], [1, 3, 2], fit="4pl")
    assert m4.srcc == pytest.approx(0.5) and m4.plcc is None


def test_evaluate_rejects_unknown_fit() -> None:
    with pytest.raises(ValueError, match="fit"):
        evaluate([1, 2, 3], [1, 2, 3], fit="3pl")


@pytest.fixture
def noisy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    mos = rng.uniform(1, 5, 80)
    pred = np.clip(mos + rng.normal(0, 0.7, mos.size), 1, 5)
    return pred, mos


@pytest.mark.parametrize("fit", ["5pl", "4pl", "none"])
def test_bootstrap_ci_contains_estimate_and_is_seeded(noisy, fit: str) -> None:
    pred, mos = noisy
    a = evaluate(pred, mos, fit=fit, bootstrap=100, seed=3)
    b = evaluate(pred, mos, fit=fit, bootstrap=100, seed=3)
    c = evaluate(pred, mos, fit=fit, bootstrap=100, seed=4)
    assert set(a.ci) == {"srcc", "plcc"}
    for name in ("srcc", "plcc"):
        lo, hi = a.ci[name]
        assert lo <= getattr(a, name) <= hi
        assert hi - lo < 0.3
    assert a.ci == b.ci
    assert a.ci != c.ci
    assert evaluate(pred, mos, fit=fit).ci == {}


def test_metrics_to_dict_is_json(noisy) -> None:
    pred, mos = noisy
    d = evaluate(pred, mos, bootstrap=50).to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["fit"] == "5pl" and len(back["fit_params"]) == 5
    assert len(back["ci"]["srcc"]) == 2
    empty = evaluate([1, 1, 1], [1, 2, 3]).to_dict()
    assert json.loads(json.dumps(empty, allow_nan=False))["srcc"] is None
