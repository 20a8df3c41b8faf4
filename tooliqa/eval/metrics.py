"""Correlation metrics for IQA predictions against mean opinion scores.

SRCC (Spearman), KRCC (Kendall tau-b), PLCC (Pearson) and RMSE, plus the VQEG
monotonic logistic mappings used before PLCC/RMSE:

* 4-parameter: ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``
* 5-parameter: ``f(x) = b1 * (0.5 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5``

Both fits are constrained to be non-decreasing (4PL: ``b1 >= b2``; 5PL:
``b1, b2, b4 >= 0``). Predictions are on the same orientation as MOS (higher is
better), so a decreasing mapping would silently turn anti-correlated
predictions into a positive PLCC; with the constraint the sign survives.
Correlations are never passed through ``abs()`` for the same reason. Fits use
``scipy.optimize.curve_fit`` (trust-region reflective, analytic Jacobian, at
most ``DEFAULT_MAX_NFEV`` evaluations per start) within bounds that keep the
curve from degenerating into a step or drifting to its linear limit (see
``_fit``); initial values are described in ``_starts``.

Degenerate inputs (too few points, constant values, NaNs) give ``None`` values
with a message from :func:`evaluate`; only mismatched lengths raise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, special, stats

__all__ = [
    "FIT_NAMES",
    "LogisticFit",
    "Metrics",
    "evaluate",
    "fit_logistic",
    "krcc",
    "logistic_4pl",
    "logistic_5pl",
    "plcc",
    "rmse",
    "srcc",
]

FIT_NAMES = ("5pl", "4pl", "none")
CI_LEVEL = 0.95
DEFAULT_MAX_NFEV = 4000
"""Bound on model evaluations per curve_fit start (trust-region reflective)."""
MAX_STEEPNESS = 20.0
"""Steepest logistic allowed: scale >= (prediction range) / MAX_STEEPNESS."""
MAX_SPAN = 3.0
"""Largest 4PL span (b1 - b2) or 5PL amplitude b1, in units of the MOS range."""

ArrayLike = Sequence[float] | np.ndarray


# -- plain metrics -------------------------------------------------------------


def _pair(pred: ArrayLike, mos: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=float).ravel()
    m = np.asarray(mos, dtype=float).ravel()
    if p.shape != m.shape:
        raise ValueError(f"pred and mos differ in length ({p.size} vs {m.size})")
    return p, m


def _undefined(p: np.ndarray, m: np.ndarray, min_n: int = 3) -> bool:
    """True where a correlation is not defined: too few points, non-finite or constant input."""
    return (
        p.size < min_n
        or not (np.all(np.isfinite(p)) and np.all(np.isfinite(m)))
        or np.ptp(p) == 0
        or np.ptp(m) == 0
    )


def _clip_corr(r: float) -> float | None:
    if not math.isfinite(r):
        return None
    return float(min(1.0, max(-1.0, r)))


def srcc(pred: ArrayLike, mos: ArrayLike) -> float | None:
    """Spearman rank-order correlation; ``None`` when undefined (n < 3, constant, NaN)."""
    p, m = _pair(pred, mos)
    if _undefined(p, m):
        return None
    return _clip_corr(stats.spearmanr(p, m).statistic)


def krcc(pred: ArrayLike, mos: ArrayLike) -> float | None:
    """Kendall rank correlation (tau-b, tie-corrected); ``None`` when undefined."""
    p, m = _pair(pred, mos)
    if _undefined(p, m):
        return None
    return _clip_corr(stats.kendalltau(p, m).statistic)


def plcc(pred: ArrayLike, mos: ArrayLike) -> float | None:
    """Pearson linear correlation of the values as given (no fit); ``None`` when undefined."""
    p, m = _pair(pred, mos)
    if _undefined(p, m):
        return None
    pc = p - p.mean()
    mc = m - m.mean()
    return _clip_corr(float(np.dot(pc, mc) / math.sqrt(np.dot(pc, pc) * np.dot(mc, mc))))


def rmse(pred: ArrayLike, mos: ArrayLike) -> float | None:
    """Root-mean-square error; ``None`` for empty or non-finite input."""
    p, m = _pair(pred, mos)
    if p.size == 0 or not (np.all(np.isfinite(p)) and np.all(np.isfinite(m))):
        return None
    return float(np.sqrt(np.mean((p - m) ** 2)))


# -- logistic mappings -----------------------------------------------------------


def logistic_4pl(x: ArrayLike, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` (overflow-safe)."""
    x = np.asarray(x, dtype=float)
    return (b1 - b2) * special.expit((x - b3) / abs(b4)) + b2


def logistic_5pl(x: ArrayLike, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    """``b1 * (0.5 - 1 / (1 + exp(b2 (x - b3)))) + b4 x + b5`` (overflow-safe)."""
    x = np.asarray(x, dtype=float)
    # 0.5 - 1 / (1 + exp(t)) == expit(t) - 0.5
    return b1 * (special.expit(b2 * (x - b3)) - 0.5) + b4 * x + b5


def _model_4pl(x: np.ndarray, lo: float, span: float, b3: float, b4: float) -> np.ndarray:
    # Internal parametrisation: b2 = lo, b1 = lo + span with span >= 0 (monotone).
    return span * special.expit((x - b3) / b4) + lo


def _jac_4pl(x: np.ndarray, lo: float, span: float, b3: float, b4: float) -> np.ndarray:
    sig = special.expit((x - b3) / b4)
    d = span * sig * (1.0 - sig)
    return np.column_stack([np.ones_like(x), sig, -d / b4, -d * (x - b3) / b4**2])


def _jac_5pl(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    sig = special.expit(b2 * (x - b3))
    d = b1 * sig * (1.0 - sig)
    return np.column_stack([sig - 0.5, d * (x - b3), -d * b2, x, np.ones_like(x)])


@dataclass(frozen=True)
class LogisticFit:
    """A fitted monotone logistic mapping from predictions to the MOS scale.

    ``params`` are ``(b1, b2, b3, b4)`` or ``(b1, b2, b3, b4, b5)`` in the
    formulas of the module docstring. When ``ok`` is false the fit failed,
    ``params`` is ``None`` and :meth:`predict` returns its input unchanged
    (identity), so callers fall back to raw values.
    """

    kind: str
    params: tuple[float, ...] | None
    ok: bool
    message: str = ""

    def predict(self, x: ArrayLike) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if not self.ok or self.params is None:
            return x.copy()
        if self.kind == "4pl":
            return logistic_4pl(x, *self.params)
        if self.kind == "5pl":
            return logistic_5pl(x, *self.params)
        raise ValueError(f"unknown logistic kind {self.kind!r}")


def _starts(p: np.ndarray, m: np.ndarray, k: int) -> list[list[float]]:
    """Initial values for the fits (the first is the primary one).

    * Asymptotes / amplitude from the MOS range: 4PL ``b2 = min(mos)``,
      ``b1 = max(mos)``; 5PL ``b1 = max(mos) - min(mos)``.
    * Centre ``b3`` at the median prediction.
    * Scale from the spread of predictions: 4PL ``b4 = std(pred)``; 5PL slope
      ``b2 = 1 / std(pred)``. A unit of std keeps the start close to linear over
      the data, so the first iterate is about as good as a straight line.
    * 5PL linear term ``b4 = 0`` and offset ``b5 = mean(mos)`` (the curve value
      at the centre).

    Two alternative starts (steeper, and centred on the mean) are tried too and
    the lowest residual wins; this rescues fits where the primary start sits on
    a flat region.
    """
    lo, hi = float(m.min()), float(m.max())
    span = hi - lo
    sd = float(p.std()) or 1.0
    med, mean = float(np.median(p)), float(p.mean())
    scales = [(med, sd), (med, sd / 4.0), (mean, sd / 2.0)]
    if k == 4:
        return [[lo, span, c, s] for c, s in scales]
    return [[span, 1.0 / s, c, 0.0, float(m.mean())] for c, s in scales]


def _fit(
    p: np.ndarray,
    m: np.ndarray,
    k: int,
    starts: list[list[float]],
    max_nfev: int,
) -> LogisticFit:
    kind = f"{k}pl"
    # Bounds keep the problem compact (and cheap to solve):
    # * the logistic's scale is >= 1/MAX_STEEPNESS of the prediction range --
    #   clusters of tied scores (e.g. many 5.0s) otherwise pull the fit towards a
    #   step whose slope runs off to infinity;
    # * asymptotes / amplitude stay within MAX_SPAN MOS ranges and the centre
    #   within one prediction range of the data -- on nearly linear data the
    #   4PL otherwise drifts towards its linear limit (span and scale -> inf).
    xr = float(np.ptp(p)) or 1.0
    yr = float(np.ptp(m)) or 1.0
    x_min, x_max, y_min, y_max = float(p.min()), float(p.max()), float(m.min()), float(m.max())
    centre = (x_min - xr, x_max + xr)
    model: Callable[..., np.ndarray]
    jac: Callable[..., np.ndarray]
    if k == 4:
        model, jac = _model_4pl, _jac_4pl
        lower = [y_min - MAX_SPAN * yr, 0.0, centre[0], xr / MAX_STEEPNESS]
        upper = [y_max, MAX_SPAN * yr, centre[1], np.inf]
    else:
        model, jac = logistic_5pl, _jac_5pl
        lower = [0.0, 0.0, centre[0], 0.0, -np.inf]
        upper = [MAX_SPAN * yr, MAX_STEEPNESS / xr, centre[1], np.inf, np.inf]
    best: tuple[float, np.ndarray] | None = None
    errors: list[str] = []
    for start in starts:
        x0 = np.clip(np.asarray(start, dtype=float), lower, upper)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                popt, _ = optimize.curve_fit(
                    model,
                    p,
                    m,
                    p0=x0,
                    jac=jac,
                    bounds=(lower, upper),
                    method="trf",
                    max_nfev=max_nfev,
                    x_scale=1.0,
                )
        except (RuntimeError, ValueError, FloatingPointError, optimize.OptimizeWarning) as exc:
            errors.append(
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            )
            continue
        if not np.all(np.isfinite(popt)):
            errors.append("non-finite parameters")
            continue
        sse = float(np.sum((model(p, *popt) - m) ** 2))
        if not math.isfinite(sse):
            errors.append("non-finite residuals")
            continue
        if best is None or sse < best[0]:
            best = (sse, popt)
    if best is None:
        reason = errors[-1] if errors else "no start converged"
        return LogisticFit(kind, None, False, f"{k}-parameter logistic fit failed: {reason}")
    popt = best[1]
    if k == 4:
        lo, span, b3, b4 = (float(v) for v in popt)
        params: tuple[float, ...] = (lo + span, lo, b3, b4)
    else:
        params = tuple(float(v) for v in popt)
    fitted = LogisticFit(kind, params, True, "")
    if np.ptp(fitted.predict(p)) <= 1e-12 * max(1.0, float(np.abs(m).max())):
        return LogisticFit(
            kind,
            None,
            False,
            f"{k}-parameter logistic fit collapsed to a constant "
            "(predictions do not increase with MOS)",
        )
    return fitted


def fit_logistic(
    pred: ArrayLike, mos: ArrayLike, params: int = 5, *, max_nfev: int = DEFAULT_MAX_NFEV
) -> LogisticFit:
    """Fit the monotone 4- or 5-parameter logistic mapping ``pred -> mos``.

    Never raises for bad data (only for mismatched lengths or ``params`` not in
    {4, 5}); a failed fit has ``ok=False`` and a ``message``.
    """
    if params not in (4, 5):
        raise ValueError(f"params must be 4 or 5, not {params!r}")
    p, m = _pair(pred, mos)
    kind = f"{params}pl"
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(m))):
        return LogisticFit(kind, None, False, "input contains NaN or infinite values")
    if p.size < params:
        return LogisticFit(
            kind, None, False, f"too few points for a {params}-parameter fit (n={p.size})"
        )
    if np.ptp(p) == 0:
        return LogisticFit(kind, None, False, "predictions are constant")
    if np.ptp(m) == 0:
        return LogisticFit(kind, None, False, "MOS values are constant")
    return _fit(p, m, params, _starts(p, m, params), max_nfev)


# -- evaluate ------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """Metrics of one prediction set against MOS.

    ``plcc`` and ``rmse`` are computed after the logistic mapping named by
    ``fit`` (``"none"``: on raw values); ``plcc_basis`` says so in words.
    ``fit_requested`` is what the caller asked for: when a fit fails,
    ``fit == "none"`` and the raw PLCC/RMSE are reported with a ``message``.
    ``ci`` maps ``"srcc"``/``"plcc"`` to 95% percentile-bootstrap intervals.
    """

    n: int
    srcc: float | None
    krcc: float | None
    plcc: float | None
    rmse: float | None
    fit: str
    fit_params: tuple[float, ...] | None = None
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    message: str = ""
    fit_requested: str = "none"
    plcc_raw: float | None = None
    plcc_basis: str = ""

    @property
    def ok(self) -> bool:
        return self.srcc is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "srcc": self.srcc,
            "krcc": self.krcc,
            "plcc": self.plcc,
            "rmse": self.rmse,
            "fit": self.fit,
            "fit_requested": self.fit_requested,
            "fit_params": list(self.fit_params) if self.fit_params is not None else None,
            "plcc_basis": self.plcc_basis,
            "plcc_raw": self.plcc_raw,
            "ci": {k: [v[0], v[1]] for k, v in self.ci.items()},
            "message": self.message,
        }


FIT_DESCRIPTIONS = {
    "5pl": "after a 5-parameter logistic fit",
    "4pl": "after a 4-parameter logistic fit",
    "none": "on raw predictions (no fit)",
}


def _fit_k(fit: str) -> int:
    return {"5pl": 5, "4pl": 4, "none": 0}[fit]


def evaluate(
    pred: ArrayLike,
    mos: ArrayLike,
    *,
    fit: str = "5pl",
    bootstrap: int = 0,
    seed: int = 0,
) -> Metrics:
    """SRCC, KRCC, PLCC and RMSE of ``pred`` against ``mos``.

    ``fit``: ``"5pl"``, ``"4pl"`` or ``"none"`` -- the mapping applied before
    PLCC/RMSE. ``bootstrap``: number of resamples for 95% percentile CIs of
    SRCC and PLCC (0: none); each resample re-fits the mapping, started from the
    full-data parameters. Raises ``ValueError`` only for mismatched lengths or an
    unknown ``fit``.
    """
    if fit not in FIT_NAMES:
        raise ValueError(f"fit must be one of {FIT_NAMES}, not {fit!r}")
    p, m = _pair(pred, mos)
    n = int(p.size)

    def empty(message: str) -> Metrics:
        return Metrics(
            n, None, None, None, None, "none", message=message, fit_requested=fit, plcc_basis=""
        )

    bad = int(np.sum(~np.isfinite(p)) + np.sum(~np.isfinite(m)))
    if bad:
        return empty(f"input contains {bad} NaN or infinite value(s); nothing computed")
    if n < 3:
        return empty(f"too few points (n={n}; at least 3 needed)")
    if np.ptp(p) == 0:
        return empty(f"predictions are constant (all {p[0]:g}); correlations undefined")
    if np.ptp(m) == 0:
        return empty(f"MOS values are constant (all {m[0]:g}); correlations undefined")

    s = srcc(p, m)
    kr = krcc(p, m)
    raw = plcc(p, m)
    notes: list[str] = []
    k = _fit_k(fit)
    lf: LogisticFit | None = None
    used = "none"
    if k == 0:
        pl, rm = raw, rmse(p, m)
    elif n < k:
        pl = rm = None
        notes.append(f"too few points for a {k}-parameter logistic fit (n={n}); PLCC/RMSE omitted")
    else:
        lf = fit_logistic(p, m, k)
        if lf.ok:
            fitted = lf.predict(p)
            pl, rm, used = plcc(fitted, m), rmse(fitted, m), fit
            if pl is None:
                notes.append("fitted values are constant; PLCC undefined")
        else:
            pl, rm = raw, rmse(p, m)
            notes.append(f"{lf.message}; raw PLCC/RMSE reported instead")
            lf = None
    basis = FIT_DESCRIPTIONS[used] if pl is not None else ""

    ci: dict[str, tuple[float, float]] = {}
    if bootstrap > 0:
        ci, note = _bootstrap(p, m, used, lf, bootstrap, seed)
        if note:
            notes.append(note)

    return Metrics(
        n=n,
        srcc=s,
        krcc=kr,
        plcc=pl,
        rmse=rm,
        fit=used,
        fit_params=lf.params if lf is not None else None,
        ci=ci,
        message="; ".join(notes),
        fit_requested=fit,
        plcc_raw=raw,
        plcc_basis=basis,
    )


def _bootstrap(
    p: np.ndarray,
    m: np.ndarray,
    used: str,
    lf: LogisticFit | None,
    b: int,
    seed: int,
) -> tuple[dict[str, tuple[float, float]], str]:
    rng = np.random.default_rng(seed)
    n = p.size
    k = _fit_k(used)
    s_vals: list[float] = []
    p_vals: list[float] = []
    skipped_fit = 0
    skipped = 0
    for _ in range(b):
        idx = rng.integers(0, n, n)
        bp, bm = p[idx], m[idx]
        if _undefined(bp, bm):
            skipped += 1
            continue
        s_vals.append(float(stats.spearmanr(bp, bm).statistic))
        if k == 0:
            r = plcc(bp, bm)
        else:
            assert lf is not None and lf.params is not None
            params = list(lf.params)
            if k == 4:  # back to the internal (lo, span, b3, b4) parametrisation
                params = [params[1], params[0] - params[1], params[2], params[3]]
            bf = _fit(bp, bm, k, [params], max_nfev=DEFAULT_MAX_NFEV // 4)
            if not bf.ok:  # retry from the data-driven starts before giving up
                bf = _fit(bp, bm, k, _starts(bp, bm, k), max_nfev=DEFAULT_MAX_NFEV // 4)
            r = plcc(bf.predict(bp), bm) if bf.ok else None
            if r is None:
                skipped_fit += 1
        if r is not None:
            p_vals.append(r)
    alpha = (1.0 - CI_LEVEL) / 2.0 * 100.0
    ci: dict[str, tuple[float, float]] = {}
    for name, vals in (("srcc", s_vals), ("plcc", p_vals)):
        if len(vals) >= 2:
            lo, hi = np.percentile(vals, [alpha, 100.0 - alpha])
            ci[name] = (float(lo), float(hi))
    notes = []
    if skipped:
        notes.append(f"{skipped} degenerate resample(s) skipped")
    if skipped_fit:
        notes.append(f"{skipped_fit} resample fit(s) failed (left out of the PLCC CI)")
    if len(ci) < 2:
        notes.append("too few usable resamples for some CIs")
    note = f"bootstrap ({b} resamples): " + ", ".join(notes) if notes else ""
    return ci, note
